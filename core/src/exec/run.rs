//! The run loop.
//!
//! One pass: reap completions if any operation is in flight (at most `reap_batch`; for
//! the ring this is the pass's one `io_uring_enter`, which also submits what the tasks
//! queued), fire expired timers if any is armed (at most `timer_batch`), then resume as
//! many tasks as were ready at that point, each time the oldest of the highest ready
//! priority, taking wakes off the inbox (at most `inbox_batch`) before each. So tasks
//! that stay busy (yielding) still let completions in once per pass, and a pass over
//! many ready tasks batches all their submissions into one enter (one enter per resumed
//! task cost the echo server two thirds of its throughput: 1.6 SQEs per enter).
//! A pass that finds nothing ready parks the driver until the next timer's deadline
//! (or the run's timeout) — unless work was done already, in which case `run` returns.
//!
//! The clock is read only when a timer is armed or when the loop is about to park or
//! time out: a yield-only workload never reads it.

use super::Executor;
use crate::driver::{Driver, Park};
use crate::error::RunError;
use core::pin::Pin;
use core::time::Duration;

impl<D: Driver, S: crate::stack::StackProvider, A: crate::acct::Accounting> Executor<D, S, A> {
    /// Does at most `max_items` items of work (a task resumed, or completed, is one),
    /// highest CPU priority first, FIFO within a priority. Waits for work when there is
    /// none, up to `timeout` (`None`: no limit). Returns how many items it did;
    /// `Err(TimedOut)` if the timeout passed with none done, `Err(Stalled)` if nothing
    /// could ever wake a task.
    pub fn run(self: Pin<&Self>, max_items: usize, timeout: Option<Duration>) -> Result<usize, RunError> {
        if max_items == 0 {
            return Err(RunError::ZeroMaxItems);
        }
        let s = self.sched();
        if s.running.replace(true) {
            return Err(RunError::Reentrant);
        }
        // Resets `running` even if a task body panics through `run`.
        struct Running<'a>(&'a super::sched::Sched);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                self.0.running.set(false);
            }
        }
        let _running = Running(s);
        if !A::ON {
            return self.run_loop(s, max_items, timeout);
        }
        let entry = A::read();
        s.times.last.set(entry);
        let r = self.run_loop(s, max_items, timeout);
        crate::acct::ExecTimes::add(&s.times.in_run, A::read().saturating_sub(entry));
        r
    }

    fn run_loop(self: Pin<&Self>, s: &super::sched::Sched, max_items: usize, timeout: Option<Duration>) -> Result<usize, RunError> {
        let cfg = s.cfg;
        let mut deadline = None;
        let mut done = 0usize;
        // Tasks this pass still resumes before the next reap (bounded by the ready count
        // at the pass's start).
        let mut pass_left = 0usize;
        loop {
            s.drain_inbox(cfg.inbox_batch);
            if pass_left > 0
                && let Some(h) = s.ready.pop()
            {
                pass_left -= 1;
                s.resume::<A>(h);
                done += 1;
                if done == max_items {
                    return Ok(done);
                }
                continue;
            }
            // SAFETY: sched rule 3: no borrow of the driver is live between resumes.
            let driver = unsafe { &mut *self.driver_ptr() };
            if driver.in_flight() > 0 {
                // A completion can complete a draining task (one item each): reap no more
                // than the items left, so `done` never passes `max_items`.
                let before = s.stats.completed.get();
                driver.reap(cfg.reap_batch.min(max_items - done), &mut |tok, res| s.complete_io(tok, res));
                done += (s.stats.completed.get() - before) as usize;
                if done == max_items {
                    return Ok(done);
                }
            }
            if s.submit_queue_busy() {
                let mut room = driver.submit_capacity();
                if let Some(limit) = cfg.max_io_in_flight {
                    room = room.min(limit.saturating_sub(driver.in_flight()));
                }
                s.grant_submit(room);
            }
            if !s.timers.is_empty() {
                s.fire_timers(s.now(), cfg.timer_batch);
            }
            if let Some(h) = s.ready.pop() {
                pass_left = s.ready.len();
                s.resume::<A>(h);
                done += 1;
                if done == max_items {
                    return Ok(done);
                }
                continue;
            }
            // No work of our own: take the dispatcher's highest-priority waiting task.
            if s.take_dispatched() {
                continue;
            }
            if done > 0 {
                return Ok(done);
            }
            if let Some((d, _)) = s.dispatcher.get()
                && s.attached.get() == 0
                && d.take_quit()
            {
                return Err(RunError::Quit);
            }
            let now = s.now();
            let until = *deadline.get_or_insert_with(|| timeout.map(|t| now.saturating_add(t)));
            if until.is_some_and(|u| now >= u) {
                return Err(RunError::TimedOut);
            }
            let wake_at = match (s.timers.next_deadline(), until) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Some(age) = cfg.trim_spare_stacks_after {
                let age = u64::try_from(age.as_nanos()).unwrap_or(u64::MAX);
                s.stacks.trim(crate::Instant::from_nanos(now.as_nanos().saturating_sub(age)));
            }
            // Park rule 2: announce, then re-check the inbox before sleeping.
            s.remote.announce();
            let dispatched = s.dispatcher.get().is_some_and(|(d, _)| d.has_work() || d.quit_pending());
            if !s.inbox.is_empty_for_park() || dispatched {
                s.remote.running();
                continue;
            }
            s.stats.parks.set(s.stats.parks.get() + 1);
            let before = A::read();
            // SAFETY: as above.
            let parked = unsafe { &mut *self.driver_ptr() }.park(wake_at);
            s.remote.running();
            if A::ON {
                let after = A::read();
                crate::acct::ExecTimes::add(&s.times.parked, after.saturating_sub(before));
                s.times.last.set(after);
            }
            match parked {
                Ok(Park::Woke) => {}
                Ok(Park::Stalled) => return Err(RunError::Stalled),
                Err(e) => return Err(RunError::Driver(e)),
            }
        }
    }
}
