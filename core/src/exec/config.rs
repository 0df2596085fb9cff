//! The executor's configuration: the batch sizes that bound each pass of the run loop
//! (sched rule 4), the in-flight limit, spare stacks, the fiber panic catcher.

use crate::error::ConfigError;

/// Executor settings: bounds on the run loop's inner loops (sched rule 4, each at least
/// 1), and the fiber stack pool.
#[derive(Copy, Clone, Debug)]
pub struct Config {
    /// Wakes taken off the inbox per run-loop pass.
    pub inbox_batch: usize,
    /// Timers fired per pass.
    pub timer_batch: usize,
    /// Completions reaped per pass.
    pub reap_batch: usize,
    /// Tasks resumed per pass while i/o is in flight: between two reaps (for the ring, two
    /// `io_uring_enter`s). Larger batches more submissions into one enter; smaller lets
    /// completions in sooner (16: an echo server's p99 improved over one pass per ready
    /// set, its throughput did not move).
    pub resume_batch: usize,
    /// Spare fiber stacks kept for reuse; more go back to the provider (0: keep none).
    pub max_spare_stacks: usize,
    /// Spares unused for this long are decommitted (`madvise`d away) when the executor
    /// parks. `None`: never (and no clock read when a stack is pooled).
    pub trim_spare_stacks_after: Option<core::time::Duration>,
    /// At most this many operations in flight on the executor; initiators beyond it
    /// wait, in I/O-priority order, for completions to make room. `None`: no limit.
    pub max_io_in_flight: Option<usize>,
    /// Catches a panic in a fiber body at its first frame (keel-linux provides one).
    /// `None`: a panic there aborts the process (it must not unwind across a switch).
    pub fiber_panics: Option<crate::fiber::PanicCatcher>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            inbox_batch: 64,
            timer_batch: 64,
            reap_batch: 256,
            resume_batch: 16,
            max_spare_stacks: 64,
            trim_spare_stacks_after: None,
            max_io_in_flight: None,
            fiber_panics: None,
        }
    }
}

impl Config {
    pub(super) fn validate(self) -> Result<Self, ConfigError> {
        let limit = self.max_io_in_flight.unwrap_or(1);
        for (name, value) in [
            ("inbox_batch", self.inbox_batch),
            ("timer_batch", self.timer_batch),
            ("reap_batch", self.reap_batch),
            ("resume_batch", self.resume_batch),
            ("max_io_in_flight", limit),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        Ok(self)
    }
}
