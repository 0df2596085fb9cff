//! The FIFO of tasks waiting for a buffer: registered buffers (`regbuf.rs`) and the
//! provided-buffer ring (`pbuf.rs`) each keep one. A wake names a task's *run*, not one
//! wait of it (keel-core wake rule 2), so a handle left in a queue after its wait ended
//! would take a release's wake and waste it on a task that no longer waits (a stale
//! handle: a no-op; a live one: a spurious wake). So every wait is named by a ticket.
//!
//! Rules (cited as "waitq rule N"):
//! 1. **One entry per wait.** A waiter enters with [`WaitQueue::push`] and keeps the
//!    [`Ticket`] it gets; tickets grow, so the queue is sorted by ticket (found by binary
//!    search). A ticket is in the queue at most once, and only while its wait lasts.
//! 2. **A release hands the turn to the oldest waiter**: [`WaitQueue::pop`] takes it off
//!    the queue and the releaser wakes it. A waiter's ticket is off the queue only once it
//!    has been handed the turn (rule 3 removes it otherwise), so a woken waiter finds out
//!    whether it has the turn by asking whether its ticket is still queued: queued is a
//!    spurious wake (it keeps its place and waits on); not queued is the turn.
//! 3. **Every wait ends through the queue.** A waiter that stops waiting for any reason
//!    other than taking its turn (its fiber cancelled, its future dropped or cancelled,
//!    the body dropped with the executor) calls [`WaitQueue::leave`]: a queued ticket is
//!    removed; a ticket already handed the turn (woken, not yet run, then cancelled or
//!    dropped) passes the turn on, so the owner of the queue gives it to the next waiter
//!    (`regbuf.rs`, `pbuf.rs`: the turn is passed, never dropped). So no release is lost to
//!    a waiter that is gone, and no waiter stays queued after its wait.
//! 4. Bounded: the capacity is fixed at creation (a full queue is the caller's typed
//!    error); push, pop and leave allocate nothing. Waiting is not a hot path: `leave` and
//!    the turn check are a binary search plus, for a removal, a shift of the queue.
//! 5. Single-threaded: only the executor's thread touches it (the driver is `!Send`).
//! 6. **A wait moves with its future.** A waiter polled and still queued names the task
//!    polling it now ([`WaitQueue::is_queued_for`]): a waiting future moved to another
//!    task, or kept for a later run of its own, is the one its turn's wake reaches (the
//!    task it was queued by may be done: a wake for an ended run is a no-op, and the turn
//!    would sit with a waiter nobody polls).
//!
//! The alternative, waking every waiter on each release and letting them race, needs no
//! tickets but wakes N tasks per release (a thundering herd on exactly the exhausted
//! path); passing one turn costs one wake per release.

use keel_core::TaskHandle;
use std::collections::VecDeque;

/// Names one wait (rule 1).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Ticket(u64);

/// What a leaving waiter held (rule 3).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Left {
    /// It was still queued: removed, nothing to pass on.
    Queued,
    /// It had been handed the turn: the owner of the queue passes it on.
    HadTurn,
}

pub(crate) struct WaitQueue {
    q: VecDeque<(Ticket, TaskHandle)>,
    cap: usize,
    next: u64,
}

impl WaitQueue {
    pub(crate) fn with_capacity(cap: usize) -> Self {
        WaitQueue { q: VecDeque::with_capacity(cap), cap, next: 0 }
    }

    /// Queues a wait of `task` at the back (rule 1); `None` if the queue is full.
    pub(crate) fn push(&mut self, task: TaskHandle) -> Option<Ticket> {
        if self.q.len() >= self.cap {
            return None;
        }
        let t = Ticket(self.next);
        self.next += 1;
        self.q.push_back((t, task));
        Some(t)
    }

    /// Takes the oldest wait off the queue: it has the turn (rule 2); wake its task.
    pub(crate) fn pop(&mut self) -> Option<(Ticket, TaskHandle)> {
        self.q.pop_front()
    }

    fn find(&self, t: Ticket) -> Result<usize, usize> {
        self.q.binary_search_by(|e| e.0.cmp(&t))
    }

    /// Whether `t` is still queued: a woken waiter whose ticket is queued was woken
    /// spuriously and keeps its place (rule 2). If it is, its wake goes to `task` from now
    /// on (rule 6).
    pub(crate) fn is_queued_for(&mut self, t: Ticket, task: Option<TaskHandle>) -> bool {
        match self.find(t) {
            Ok(i) => {
                if let Some(task) = task {
                    self.q[i].1 = task;
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Ends wait `t` without taking its turn (rule 3).
    pub(crate) fn leave(&mut self, t: Ticket) -> Left {
        match self.find(t) {
            Ok(i) => {
                self.q.remove(i);
                Left::Queued
            }
            Err(_) => Left::HadTurn,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_core::{TaskAttrs, TaskSlot};

    fn handle() -> TaskHandle {
        let s: &'static TaskSlot<64> = Box::leak(Box::new(TaskSlot::new()));
        s.create(TaskAttrs::default()).unwrap()
    }

    #[test]
    fn waitq_rule_2_a_wait_leaves_or_passes_its_turn_and_the_queue_stays_fifo() {
        let (a, b, c) = (handle(), handle(), handle());
        let mut q = WaitQueue::with_capacity(3);
        let (ta, tb, tc) = (q.push(a).unwrap(), q.push(b).unwrap(), q.push(c).unwrap());
        assert_eq!(q.push(a), None, "bounded (rule 4)");
        assert!(q.is_queued_for(tb, None));
        assert_eq!(q.leave(tb), Left::Queued, "a queued wait is removed (rule 3)");
        assert!(!q.is_queued_for(tb, None));
        assert_eq!(q.pop(), Some((ta, a)), "oldest first (rule 2)");
        assert!(!q.is_queued_for(ta, None), "popped: it has the turn");
        assert_eq!(q.leave(ta), Left::HadTurn, "leaving after the turn passes it on (rule 3)");
        assert!(q.is_queued_for(tc, None));
        let td = q.push(b).unwrap();
        assert!(td > tc, "tickets grow (rule 1)");
        assert!(q.is_queued_for(tc, Some(a)), "still queued");
        assert_eq!(q.pop(), Some((tc, a)), "its wake goes to the task polling it now (rule 6)");
        assert!(!q.is_queued_for(tc, Some(b)));
        assert_eq!(q.pop(), Some((td, b)));
        assert_eq!(q.pop(), None);
    }
}
