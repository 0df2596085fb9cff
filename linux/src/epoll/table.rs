//! The epoll driver's operation table: a fixed number of slots, allocated once, and for
//! each descriptor with waiting operations the list of their slots.
//!
//! Table rules (cited as "table rule N"):
//! 1. An operation holds one slot from `submit` until its completion is reaped. Its
//!    [`OpId`] is the slot's index and a generation bumped every time the slot is freed,
//!    so a `cancel` or `retarget` of an operation already reaped finds a newer generation
//!    and does nothing (Driver contract item 4).
//! 2. A slot is `Waiting` (its descriptor's list names it), `Done` (its result is queued
//!    in `done`, in completion order) or `Free`. Each accepted operation reaches `Done`
//!    exactly once (a readiness event, a cancel, or the driver's `cancel_all`), and only
//!    `reap` frees it (Driver contract item 1).
//! 3. `done` has room for every slot, so queuing a completion never allocates. A
//!    descriptor's first wait allocates its waiter list (a map entry), which is kept
//!    with its capacity for later waits: the steady state allocates nothing.

use keel_core::driver::IoToken;
use keel_core::{Errno, IoResult, OpId};
use std::collections::{HashMap, VecDeque};
use std::os::fd::RawFd;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum State {
    Free,
    Waiting { fd: RawFd, events: u16 },
    Done,
}

#[derive(Debug)]
struct Slot {
    generation: u32,
    token: Option<IoToken>,
    state: State,
}

/// The table (module doc).
#[derive(Debug)]
pub(crate) struct Table {
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Completed operations, oldest first: slot index and result (table rule 3).
    done: VecDeque<(u32, IoResult)>,
    /// Slots waiting on each descriptor (table rule 2).
    pub(crate) waiters: HashMap<RawFd, Vec<u32>>,
}

impl Table {
    pub(crate) fn new(n: u32) -> Self {
        Table {
            slots: (0..n).map(|_| Slot { generation: 0, token: None, state: State::Free }).collect(),
            free: (0..n).rev().collect(),
            done: VecDeque::with_capacity(n as usize),
            waiters: HashMap::new(),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn free_count(&self) -> usize {
        self.free.len()
    }

    /// Operations accepted and not yet reaped.
    pub(crate) fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    pub(crate) fn has_done(&self) -> bool {
        !self.done.is_empty()
    }

    fn id(&self, i: u32) -> OpId {
        OpId(u64::from(self.slots[i as usize].generation) << 32 | u64::from(i))
    }

    /// The slot `id` names if it is that operation's and not reaped yet (table rule 1).
    fn index(&self, id: OpId) -> Option<u32> {
        let i = (id.0 & 0xffff_ffff) as u32;
        let slot = self.slots.get(i as usize)?;
        (slot.generation == (id.0 >> 32) as u32 && slot.state != State::Free).then_some(i)
    }

    /// Takes a slot for an operation that completes at once with `result`.
    pub(crate) fn start_done(&mut self, token: IoToken, result: IoResult) -> Option<OpId> {
        let i = self.free.pop()?;
        self.slots[i as usize].token = Some(token);
        self.slots[i as usize].state = State::Done;
        self.done.push_back((i, result));
        Some(self.id(i))
    }

    /// Takes a slot for an operation waiting for `events` on `fd`.
    pub(crate) fn start_waiting(&mut self, token: IoToken, fd: RawFd, events: u16) -> Option<OpId> {
        let i = self.free.pop()?;
        self.slots[i as usize].token = Some(token);
        self.slots[i as usize].state = State::Waiting { fd, events };
        self.waiters.entry(fd).or_default().push(i);
        Some(self.id(i))
    }

    /// The union of what `fd`'s waiters wait for (0: none waits).
    pub(crate) fn interest(&self, fd: RawFd) -> u16 {
        self.waiters.get(&fd).map_or(0, |list| {
            list.iter().fold(0, |acc, &i| match self.slots[i as usize].state {
                State::Waiting { events, .. } => acc | events,
                _ => acc,
            })
        })
    }

    /// `fd` reported `revents`: completes every waiter it satisfies (with the ready
    /// bits it asked for, plus the error bits), oldest first; the rest keep waiting.
    pub(crate) fn ready(&mut self, fd: RawFd, revents: u16, always: u16) {
        let Some(list) = self.waiters.get_mut(&fd) else { return };
        let slots = &mut self.slots;
        let done = &mut self.done;
        list.retain(|&i| {
            let State::Waiting { events, .. } = slots[i as usize].state else { return false };
            let got = revents & (events | always);
            if got == 0 {
                return true;
            }
            slots[i as usize].state = State::Done;
            done.push_back((i, Ok(u32::from(got))));
            false
        });
    }

    /// Ends every waiter of `fd` with `errno` (its registration failed: epoll rule 2).
    pub(crate) fn fail(&mut self, fd: RawFd, errno: Errno) {
        let Some(list) = self.waiters.get_mut(&fd) else { return };
        for i in list.drain(..) {
            self.slots[i as usize].state = State::Done;
            self.done.push_back((i, Err(errno)));
        }
    }

    /// Table rule 2: ends a waiting operation with `ECANCELED`; `Some(fd)` if it was
    /// waiting on `fd` (the caller re-arms what is left there). Nothing for an id that
    /// is done, reaped or never was.
    pub(crate) fn cancel(&mut self, id: OpId) -> Option<RawFd> {
        let i = self.index(id)?;
        let State::Waiting { fd, .. } = self.slots[i as usize].state else { return None };
        if let Some(list) = self.waiters.get_mut(&fd) {
            list.retain(|&w| w != i);
        }
        self.slots[i as usize].state = State::Done;
        self.done.push_back((i, Err(Errno::ECANCELED)));
        Some(fd)
    }

    /// Ends every waiting operation with `ECANCELED`.
    pub(crate) fn cancel_all(&mut self) {
        for list in self.waiters.values_mut() {
            for i in list.drain(..) {
                self.slots[i as usize].state = State::Done;
                self.done.push_back((i, Err(Errno::ECANCELED)));
            }
        }
    }

    pub(crate) fn retarget(&mut self, id: OpId, token: IoToken) {
        if let Some(i) = self.index(id) {
            self.slots[i as usize].token = Some(token);
        }
    }

    /// Table rule 1: the oldest completion, its slot freed.
    pub(crate) fn pop_done(&mut self) -> Option<(IoToken, IoResult)> {
        let (i, result) = self.done.pop_front()?;
        let slot = &mut self.slots[i as usize];
        let token = slot.token.take().expect("keel bug: a completed epoll slot without a token");
        slot.state = State::Free;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(i);
        Some((token, result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(n: u64) -> IoToken {
        // SAFETY: the table hands tokens back and never dereferences them.
        unsafe { IoToken::unpack(n << 4) }
    }

    #[test]
    fn table_rule_1_an_id_of_a_reaped_operation_touches_nothing() {
        let mut t = Table::new(1);
        let old = t.start_waiting(token(1), 5, 1).unwrap();
        assert_eq!(t.cancel(old), Some(5));
        assert_eq!(t.pop_done(), Some((token(1), Err(Errno::ECANCELED))));
        let new = t.start_waiting(token(2), 5, 1).unwrap();
        assert_ne!(old, new, "the reused slot has a new generation");
        assert_eq!(t.cancel(old), None, "a stale id cancelled the slot's next operation");
        t.retarget(old, token(9));
        t.ready(5, 1, 0);
        assert_eq!(t.pop_done(), Some((token(2), Ok(1))));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn table_rule_2_each_waiter_completes_once_with_what_it_asked_for() {
        let mut t = Table::new(4);
        let _in = t.start_waiting(token(1), 7, 0x1).unwrap();
        let out = t.start_waiting(token(2), 7, 0x4).unwrap();
        let _other = t.start_waiting(token(3), 8, 0x1).unwrap();
        assert_eq!(t.interest(7), 0x5);
        t.ready(7, 0x4 | 0x10, 0x18); // OUT and HUP: both waiters of 7 end
        assert_eq!(t.pop_done(), Some((token(1), Ok(0x10))));
        assert_eq!(t.pop_done(), Some((token(2), Ok(0x14))));
        assert_eq!(t.cancel(out), None, "done and reaped");
        assert_eq!(t.interest(7), 0);
        t.fail(8, Errno::EBADF);
        assert_eq!(t.pop_done(), Some((token(3), Err(Errno::EBADF))));
        assert_eq!(t.pop_done(), None);
        assert_eq!((t.in_flight(), t.free_count()), (0, 4));
    }
}
