//! What the executor counts and reports: `ExecStats`, task and executor times, and the
//! owner-local cells it counts in.

use crate::acct::Accounting;
use crate::clock::Instant;
use crate::driver::Driver;
use crate::error::StaleHandle;
use crate::exec::Executor;
use crate::stack::{StackProvider, StackStats};
use crate::task::TaskHandle;
use crate::task::header::SlotPtr;
use core::cell::Cell;
use core::pin::Pin;

/// A snapshot of an executor's counters.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecStats {
    /// Task resumptions (items of work that ran a body).
    pub resumed: u64,
    /// Runs completed.
    pub completed: u64,
    /// Resumptions per CPU priority, high first.
    pub per_priority: [u64; 3],
    /// Timers that fired.
    pub timers_fired: u64,
    /// Wakes taken from other threads (or from wakers).
    pub inbox_taken: u64,
    /// Operations submitted to the driver.
    pub io_submitted: u64,
    /// Completions reaped.
    pub io_completed: u64,
    /// Times the executor parked.
    pub parks: u64,
    /// Times a fiber switched back to the executor with MXCSR or the x87 control word
    /// changed and the executor loaded its own again (fiber rule 6; counted where the
    /// check is built: debug builds, or the `fp-check` feature).
    pub fp_control_restored: u64,
    /// Tasks attached right now.
    pub attached: usize,
    /// Ready tasks per CPU priority right now.
    pub ready: [usize; 3],
    /// Timers armed right now.
    pub timers_armed: usize,
}

/// Executor counters (owner-local).
#[derive(Default)]
pub(crate) struct StatsCells {
    pub(crate) resumed: Cell<u64>,
    pub(crate) completed: Cell<u64>,
    pub(crate) per_priority: [Cell<u64>; 3],
    pub(crate) timers_fired: Cell<u64>,
    pub(crate) inbox_taken: Cell<u64>,
    pub(crate) io_submitted: Cell<u64>,
    pub(crate) io_completed: Cell<u64>,
    pub(crate) parks: Cell<u64>,
    pub(crate) fp_control_restored: Cell<u64>,
}

impl<D: Driver, S: StackProvider, A: Accounting> Executor<D, S, A> {
    /// Per-task accounting of run `task` (times zero without accounting).
    pub fn task_times(self: Pin<&Self>, task: TaskHandle) -> Result<crate::acct::TaskTimesSnapshot, StaleHandle> {
        self.owned_header(task).map_err(|_| StaleHandle)?;
        let scale = self.sched().times.scale.get().unwrap_or(crate::acct::TickScale::IDENTITY);
        let tr = task.header().trailer();
        let (tt, st) = (&tr.times, &tr.stats);
        Ok(crate::acct::TaskTimesSnapshot {
            running_ns: scale.to_ns(tt.running.get()),
            suspended_ns: scale.to_ns(tt.suspended.get()),
            ready_wait_ns: scale.to_ns(tt.ready_wait.get()),
            longest_run_ns: scale.to_ns(tt.longest_run.get()),
            resumptions: st.resumptions.get(),
            io_initiated: st.io_initiated.get(),
            io_completed: st.io_completed.get(),
        })
    }

    /// The executor's accounting (times zero without accounting).
    pub fn exec_times(self: Pin<&Self>) -> crate::acct::ExecTimesSnapshot {
        let s = self.sched();
        let scale = s.times.scale.get().unwrap_or(crate::acct::TickScale::IDENTITY);
        let (task, parked, in_run) = (s.times.task.get(), s.times.parked.get(), s.times.in_run.get());
        crate::acct::ExecTimesSnapshot {
            task_ns: scale.to_ns(task),
            loop_ns: scale.to_ns(in_run.saturating_sub(task).saturating_sub(parked)),
            parked_ns: scale.to_ns(parked),
            per_priority: [s.stats.per_priority[0].get(), s.stats.per_priority[1].get(), s.stats.per_priority[2].get()],
            submissions: s.stats.io_submitted.get(),
            completions: s.stats.io_completed.get(),
        }
    }

    /// How to turn clock ticks into nanoseconds (keel-linux's TSC calibration gives it).
    pub fn set_tick_scale(self: Pin<&Self>, scale: crate::acct::TickScale) {
        self.sched().times.scale.set(Some(scale));
    }

    /// A snapshot of the counters.
    pub fn stats(self: Pin<&Self>) -> ExecStats {
        let s = self.sched();
        let c = &s.stats;
        ExecStats {
            resumed: c.resumed.get(),
            completed: c.completed.get(),
            per_priority: [c.per_priority[0].get(), c.per_priority[1].get(), c.per_priority[2].get()],
            timers_fired: c.timers_fired.get(),
            inbox_taken: c.inbox_taken.get(),
            io_submitted: c.io_submitted.get(),
            io_completed: c.io_completed.get(),
            parks: c.parks.get(),
            fp_control_restored: c.fp_control_restored.get(),
            attached: s.attached.get(),
            ready: s.ready.lens(),
            timers_armed: s.timers.len(),
        }
    }

    /// The stack pool's counters.
    pub fn stack_stats(self: Pin<&Self>) -> StackStats {
        self.sched().stacks.stats()
    }

    /// Decommits spare stacks pooled for longer than `age` (also done when parking, if
    /// `Config::trim_spare_stacks_after` is set).
    pub fn trim_stacks(self: Pin<&Self>, age: core::time::Duration) {
        let s = self.sched();
        let now = s.now().as_nanos();
        let age = u64::try_from(age.as_nanos()).unwrap_or(u64::MAX);
        s.stacks.trim(Instant::from_nanos(now.saturating_sub(age)));
    }
}
