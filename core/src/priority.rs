//! Three levels of priority, used separately for CPU and for I/O.

/// A priority level. `High` runs (or is submitted) before `Normal`, `Normal` before `Low`;
/// within one level order is FIFO.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(u8)]
pub enum Priority {
    /// Served first.
    High = 0,
    /// The default.
    #[default]
    Normal = 1,
    /// Served when nothing of higher priority waits.
    Low = 2,
}

impl Priority {
    /// Every level, highest first.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];
    /// How many levels there are.
    pub const LEVELS: usize = 3;

    /// The level's index, 0 for `High`.
    #[inline(always)]
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// A task's two independent priorities.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct Priorities {
    /// Order among ready tasks on the executor's CPU.
    pub cpu: Priority,
    /// Order among the task's i/o waiting for submission slots (and, where the kernel
    /// reads it, the SQE's ioprio).
    pub io: Priority,
}
