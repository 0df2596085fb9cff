//! The long soak's shared counters: operations by kind (atomics any thread bumps),
//! errors by kind (a map behind a lock, touched only when an error happens), the early
//! timers, and the one-line report printed every second.
#![allow(dead_code)]

use super::soak_util::{fd_count, rss_bytes};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Operation kinds counted.
pub const EXCHANGES: usize = 0;
pub const ECHO_BYTES: usize = 1;
pub const CONNECTIONS: usize = 2;
pub const FILE_ROUNDS: usize = 3;
pub const FILE_BYTES: usize = 4;
pub const TIMERS: usize = 5;
pub const ATTACHES: usize = 6;
pub const ATTACH_RESULTS: usize = 7;
pub const CANCELS: usize = 8;
const NAMES: [&str; 9] = [
    "exchanges",
    "echo_bytes",
    "connections",
    "file_rounds",
    "file_bytes",
    "timers",
    "attaches",
    "attach_ok",
    "cancels",
];

/// The suffix of every expected error kind: an error seen by a task after it was cancelled.
pub const AFTER_CANCEL: &str = "after cancel";

#[derive(Default)]
pub struct Stats {
    ops: [AtomicU64; NAMES.len()],
    errors: Mutex<BTreeMap<String, u64>>,
    /// Timers that returned before their duration had passed, and the worst shortfall (ns).
    pub early: AtomicU64,
    pub early_worst_ns: AtomicU64,
    /// Echo exchanges or file read-backs whose bytes differed.
    pub mismatches: AtomicU64,
}

impl Stats {
    pub fn op(&self, kind: usize, n: u64) {
        // Relaxed: counters; the joins at the end order the final reads.
        self.ops[kind].fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self, kind: usize) -> u64 {
        self.ops[kind].load(Ordering::Relaxed)
    }
    /// Records an error of kind `what` (ends in `AFTER_CANCEL` when it is an expected one).
    pub fn error(&self, what: String) {
        *self.errors.lock().unwrap_or_else(|e| e.into_inner()).entry(what).or_insert(0) += 1;
    }
    /// Records `what` as expected if `cancelled`, else as unexpected.
    pub fn error_if(&self, cancelled: bool, what: &str) {
        if cancelled {
            self.error(format!("{what} {AFTER_CANCEL}"));
        } else {
            self.error(format!("UNEXPECTED {what}"));
        }
    }
    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    pub fn early(&self, short: Duration) {
        // Relaxed: counters read after the joins.
        self.early.fetch_add(1, Ordering::Relaxed);
        self.early_worst_ns.fetch_max(short.as_nanos() as u64, Ordering::Relaxed);
    }
    pub fn ops_line(&self) -> String {
        NAMES.iter().enumerate().map(|(i, n)| format!("{n}={}", self.get(i))).collect::<Vec<_>>().join(" ")
    }
    pub fn errors_line(&self) -> String {
        let e = self.errors();
        if e.is_empty() {
            return "none".to_owned();
        }
        e.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ")
    }
    /// The line printed every second.
    pub fn report(&self, secs: u64) -> String {
        format!(
            "soak t={secs:>3}s {} | errors: {} | early timers {} | rss {:.1} MiB fds {}",
            self.ops_line(),
            self.errors_line(),
            self.early.load(Ordering::Relaxed),
            mib(rss_bytes(None)),
            fd_count(None)
        )
    }
}

pub fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

/// `ECANCELED` by name, other errnos by number.
pub fn errno_name(e: keel_core::Errno) -> String {
    if e == keel_core::Errno::ECANCELED { "ECANCELED".to_owned() } else { format!("errno {}", e.0) }
}
