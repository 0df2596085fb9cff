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
        let trailer = task.header().trailer();
        let (times, stats) = (&trailer.times, &trailer.stats);
        Ok(crate::acct::TaskTimesSnapshot {
            running_ns: scale.to_ns(times.running.get()),
            suspended_ns: scale.to_ns(times.suspended.get()),
            ready_wait_ns: scale.to_ns(times.ready_wait.get()),
            longest_run_ns: scale.to_ns(times.longest_run.get()),
            resumptions: stats.resumptions.get(),
            io_initiated: stats.io_initiated.get(),
            io_completed: stats.io_completed.get(),
        })
    }

    /// The executor's accounting (times zero without accounting).
    pub fn exec_times(self: Pin<&Self>) -> crate::acct::ExecTimesSnapshot {
        let sched = self.sched();
        let scale = sched.times.scale.get().unwrap_or(crate::acct::TickScale::IDENTITY);
        let (task, parked, in_run) = (sched.times.task.get(), sched.times.parked.get(), sched.times.in_run.get());
        crate::acct::ExecTimesSnapshot {
            task_ns: scale.to_ns(task),
            loop_ns: scale.to_ns(in_run.saturating_sub(task).saturating_sub(parked)),
            parked_ns: scale.to_ns(parked),
            per_priority: [
                sched.stats.per_priority[0].get(),
                sched.stats.per_priority[1].get(),
                sched.stats.per_priority[2].get(),
            ],
            submissions: sched.stats.io_submitted.get(),
            completions: sched.stats.io_completed.get(),
        }
    }

    /// How to turn clock ticks into nanoseconds (keel-linux's TSC calibration gives it).
    pub fn set_tick_scale(self: Pin<&Self>, scale: crate::acct::TickScale) {
        self.sched().times.scale.set(Some(scale));
    }

    /// A snapshot of the counters.
    pub fn stats(self: Pin<&Self>) -> ExecStats {
        let sched = self.sched();
        let counters = &sched.stats;
        ExecStats {
            resumed: counters.resumed.get(),
            completed: counters.completed.get(),
            per_priority: [
                counters.per_priority[0].get(),
                counters.per_priority[1].get(),
                counters.per_priority[2].get(),
            ],
            timers_fired: counters.timers_fired.get(),
            inbox_taken: counters.inbox_taken.get(),
            io_submitted: counters.io_submitted.get(),
            io_completed: counters.io_completed.get(),
            parks: counters.parks.get(),
            fp_control_restored: counters.fp_control_restored.get(),
            attached: sched.attached.get(),
            ready: sched.ready.lens(),
            timers_armed: sched.timers.len(),
        }
    }

    /// The stack pool's counters.
    pub fn stack_stats(self: Pin<&Self>) -> StackStats {
        self.sched().stacks.stats()
    }

    /// Decommits spare stacks pooled for longer than `age` (also done when parking, if
    /// `Config::trim_spare_stacks_after` is set).
    pub fn trim_stacks(self: Pin<&Self>, age: core::time::Duration) {
        let sched = self.sched();
        let now = sched.now().as_nanos();
        let age = u64::try_from(age.as_nanos()).unwrap_or(u64::MAX);
        sched.stacks.trim(Instant::from_nanos(now.saturating_sub(age)));
    }
}
