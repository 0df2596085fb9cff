//! `echo_msgs` (ops/s: echoed messages per second), `echo_p50`, `echo_p99` (ns: round
//! trip of one 64-byte message) and `echo_cpu` (ns: the server's user-space CPU time
//! per message): TCP echo servers on loopback, the servers on one CPU (all up at once,
//! loaded one at a time) and the load generator on another, 64 connections per server
//! with one message in flight each, 25 rounds (`--quick`: 1) of one 0.4 s slice per
//! server (`--quick`: 8 connections, 0.2 s) with the servers' order rotated each round,
//! medians over the slices reported (`echo_cpu`: the server's user time over the whole
//! run over every message it echoed, the kernel's accounting being too coarse for one
//! slice). See `bench/src/echo/`.
//!
//! - keel: keel's echo example with fiber handlers, a child process: it must be built
//!   first, in the bench's profile (`cargo build --release -p keel-linux --example echo`).
//! - keel-future: the same with future handlers.
//! - monoio, tokio (current-thread), io-uring (hand-written, the limit): in-process
//!   server threads.
//!
//! The four cases share one measurement, made when the first of them runs: each impl
//! hands the harness its median as a time that the case's unit turns back into it, so
//! `--iters` changes nothing here. `--only IMPL[,IMPL...]` measures only those servers.

#[path = "../echo/mod.rs"]
mod servers;

use crate::goals::{Goal, Op};
use crate::harness::{Case, Impl, Timed, Unit};
use servers::{Figures, Params, SERVERS};
use std::sync::OnceLock;
use std::time::Duration;

const MSGS: usize = 0;
const P50: usize = 1;
const P99: usize = 2;
const CPU: usize = 3;

macro_rules! impls {
    ($m:expr) => {
        &[
            Impl { name: SERVERS[0], run: report::<$m, 0> },
            Impl { name: SERVERS[1], run: report::<$m, 1> },
            Impl { name: SERVERS[2], run: report::<$m, 2> },
            Impl { name: SERVERS[3], run: report::<$m, 3> },
            Impl { name: SERVERS[4], run: report::<$m, 4> },
        ]
    };
}

/// Echoed messages per second.
pub const ECHO_MSGS: Case = Case { name: "echo_msgs", unit: Unit::OpsPerSec, impls: impls!(MSGS) };
/// Median round trip, ns.
pub const ECHO_P50: Case = Case { name: "echo_p50", unit: Unit::NsPerOp, impls: impls!(P50) };
/// 99th-percentile round trip, ns.
pub const ECHO_P99: Case = Case { name: "echo_p99", unit: Unit::NsPerOp, impls: impls!(P99) };
/// Server user CPU time per message, ns.
pub const ECHO_CPU: Case = Case { name: "echo_cpu", unit: Unit::NsPerOp, impls: impls!(CPU) };

/// The goals of this module's cases (see `crate::goals`).
pub const GOALS: &[Goal] = &[
    Goal::vs("echo_msgs", "keel", "monoio", Op::AtLeast, 1.0),
    Goal::vs("echo_p99", "keel", "monoio", Op::AtMost, 1.0),
    Goal::vs("echo_cpu", "keel", "monoio", Op::AtMost, 0.6),
    Goal::vs("echo_msgs", "keel", "io-uring", Op::AtLeast, 1.0),
];

/// Every server's medians (`None`: not selected), measured once per process.
fn results() -> Result<&'static [Option<Figures>], String> {
    static R: OnceLock<Result<Vec<Option<Figures>>, String>> = OnceLock::new();
    R.get_or_init(|| {
        // The impls get only an iteration count, so the case reads the flags itself.
        let args: Vec<String> = std::env::args().collect();
        let quick = args.iter().any(|a| a == "--quick");
        let only = args.iter().enumerate().find_map(|(i, a)| match a.strip_prefix("--only") {
            Some("") => args.get(i + 1).cloned(),
            Some(v) => v.strip_prefix('=').map(str::to_owned),
            None => None,
        });
        let chosen: Vec<&'static str> =
            SERVERS.iter().copied().filter(|s| only.as_deref().is_none_or(|o| o.split(',').any(|o| o == *s))).collect();
        let figs = servers::measure(&chosen, if quick { Params::QUICK } else { Params::FULL })?;
        Ok(SERVERS.iter().map(|s| chosen.iter().position(|c| c == s).map(|i| figs[i])).collect())
    })
    .as_deref()
    .map_err(Clone::clone)
}

/// Metric `M` of server `S` as a time for `iters` operations in the case's unit.
fn report<const M: usize, const S: usize>(iters: u64) -> Timed {
    Ok(as_time(M, &results()?[S].ok_or("not measured")?, iters))
}

/// Metric `m` of `f` as the time of `iters` operations that its case's unit turns back
/// into it (ops/s for [`MSGS`], ns per op for the others).
fn as_time(m: usize, f: &Figures, iters: u64) -> Duration {
    let n = iters as f64;
    match m {
        MSGS => Duration::from_secs_f64(n / f.msgs_per_sec),
        P50 => Duration::from_secs_f64(f.p50_ns * n * 1e-9),
        P99 => Duration::from_secs_f64(f.p99_ns * n * 1e-9),
        _ => Duration::from_secs_f64(f.cpu_ns * n * 1e-9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_come_back_through_the_units() {
        let f = Figures { msgs_per_sec: 312_345.6, p50_ns: 18_250.0, p99_ns: 2_500_000.0, cpu_ns: 612.5 };
        let want = [(ECHO_MSGS, f.msgs_per_sec), (ECHO_P50, f.p50_ns), (ECHO_P99, f.p99_ns), (ECHO_CPU, f.cpu_ns)];
        for (m, (case, v)) in want.into_iter().enumerate() {
            for iters in [1u64, 16, 600, 1 << 20] {
                let got = case.unit.value(as_time(m, &f, iters), iters);
                assert!((got - v).abs() / v < 1e-3, "{} with {iters} iters: {got}, not {v}", case.name);
            }
        }
    }
}
