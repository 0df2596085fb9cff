//! Time as keel sees it: nanoseconds on a monotonic clock that the driver reads.
//!
//! `Instant` is a plain `u64` of nanoseconds since the driver's epoch. Arithmetic
//! saturates: a huge `Duration` becomes "never" (`Instant::MAX`), never an overflow.

use core::time::Duration;

/// A point on the driver's monotonic clock, in nanoseconds.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The epoch of the clock.
    pub const ZERO: Instant = Instant(0);
    /// The far end of time: a deadline that never comes.
    pub const MAX: Instant = Instant(u64::MAX);

    /// An instant `nanos` after the epoch.
    pub const fn from_nanos(nanos: u64) -> Self {
        Instant(nanos)
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// `self + duration`, saturating at `Instant::MAX`.
    pub const fn saturating_add(self, duration: Duration) -> Self {
        let nanos = duration.as_nanos();
        let nanos = if nanos > u64::MAX as u128 { u64::MAX } else { nanos as u64 };
        Instant(self.0.saturating_add(nanos))
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub const fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}
