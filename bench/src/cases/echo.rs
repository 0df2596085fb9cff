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
//! - keel-direct: the fiber handlers with `--direct`: each connection accepted into the
//!   ring's fixed-file table and named by its slot, as the hand-written io-uring servers do.
//! - keel-epoll: the fiber handlers on the epoll backend (`--backend epoll`), against tokio
//!   (epoll), with its goals: at least 1.0x tokio's msgs/s, a p99 no worse.
//! - monoio-legacy: monoio's legacy (epoll, through mio) driver, the other epoll peer.
//! - monoio, tokio (current-thread), io-uring and io-uring-mshot (hand-written on the
//!   tuned ring with registered files, the limit: a receive with its send linked to the
//!   next receive, and a multishot receive with provided buffers): in-process server
//!   threads.
//!
//! The scaling curve: `echo_cpu_c{1,64,512,2048,4096}` (ns: the server's whole CPU time,
//! user and system, per message) and `echo_p99_c{1,64,512,2048,4096}` (ns) with 1 to 4,096
//! connections, one message in flight on each, for keel, monoio, tokio and io-uring: one
//! measurement per size (9 rounds of 0.3 s slices; 7 of 1 s from 2,048 on, see below;
//! `--quick`: one of 0.2 s). The bench raises its soft descriptor limit to what the
//! connections take in this process: up to 2,048 connections every server is up at once
//! (four servers fit in a hard limit of 20,000, the limit here); at 4,096 they do not, so
//! that size runs the servers one at a time, each started and stopped around each of its
//! slices in the same rotated order (`Params::alone`, bench/src/echo/alone.rs). From 2,048
//! connections on the windows are 1 s long (`Params::LONG`): one message in flight on each
//! of thousands of connections takes a loaded server 0.2-0.5 s to go round, and a batching
//! server's echoes come in bursts, so a 0.3 s window could miss them all and fail the case.
//!
//! The cases of one size share one measurement, made when the first of them runs: each
//! impl hands the harness its median as a time that the case's unit turns back into it,
//! so `--iters` changes nothing here. `--only IMPL[,IMPL...]` measures only those servers.

#[path = "../echo/mod.rs"]
pub(super) mod servers;

use crate::goals::{Curve, Goal, Op};
use crate::harness::{Case, Impl, Timed, Unit};
use servers::{Figures, Params, SERVERS};
use std::sync::OnceLock;
use std::time::Duration;

const MSGS: usize = 0;
const P50: usize = 1;
const P99: usize = 2;
const CPU: usize = 3;
const ALL_CPU: usize = 4;

/// The key of the main measurement (64 connections, `--quick`: 8; `Params::FULL`) in
/// [`results`], apart from the curve's sizes, which include 64 too.
const MAIN: usize = 0;
/// The scaling curve's sizes (connections).
const SIZES: [usize; 5] = [1, 64, 512, 2048, 4096];
/// The sizes above this run one server at a time (`Params::alone`).
const ALL_UP_MAX: usize = 2048;
/// The sizes from this on get 1 s windows (`Params::LONG`).
const LONG_FROM: usize = 2048;
/// The servers on the scaling curve (indices into [`SERVERS`]).
const CURVE_SERVERS: [usize; 4] = [0, 2, 3, 4];

macro_rules! impls {
    ($m:expr) => {
        &[
            Impl { name: SERVERS[0], run: report::<$m, 0, MAIN> },
            Impl { name: SERVERS[1], run: report::<$m, 1, MAIN> },
            Impl { name: SERVERS[2], run: report::<$m, 2, MAIN> },
            Impl { name: SERVERS[3], run: report::<$m, 3, MAIN> },
            Impl { name: SERVERS[4], run: report::<$m, 4, MAIN> },
            Impl { name: SERVERS[5], run: report::<$m, 5, MAIN> },
            Impl { name: SERVERS[6], run: report::<$m, 6, MAIN> },
            Impl { name: SERVERS[7], run: report::<$m, 7, MAIN> },
            Impl { name: SERVERS[8], run: report::<$m, 8, MAIN> },
        ]
    };
}

macro_rules! sized {
    ($name:literal, $m:expr, $n:expr) => {
        Case {
            name: $name,
            unit: Unit::NsPerOp,
            impls: &[
                Impl { name: SERVERS[CURVE_SERVERS[0]], run: report::<$m, { CURVE_SERVERS[0] }, $n> },
                Impl { name: SERVERS[CURVE_SERVERS[1]], run: report::<$m, { CURVE_SERVERS[1] }, $n> },
                Impl { name: SERVERS[CURVE_SERVERS[2]], run: report::<$m, { CURVE_SERVERS[2] }, $n> },
                Impl { name: SERVERS[CURVE_SERVERS[3]], run: report::<$m, { CURVE_SERVERS[3] }, $n> },
            ],
        }
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

/// `echo_cpu_c1`.
pub const ECHO_CPU_C1: Case = sized!("echo_cpu_c1", ALL_CPU, 1);
/// `echo_cpu_c64`.
pub const ECHO_CPU_C64: Case = sized!("echo_cpu_c64", ALL_CPU, 64);
/// `echo_cpu_c512`.
pub const ECHO_CPU_C512: Case = sized!("echo_cpu_c512", ALL_CPU, 512);
/// `echo_cpu_c2048`.
pub const ECHO_CPU_C2048: Case = sized!("echo_cpu_c2048", ALL_CPU, 2048);
/// `echo_cpu_c4096`.
pub const ECHO_CPU_C4096: Case = sized!("echo_cpu_c4096", ALL_CPU, 4096);
/// `echo_p99_c1`.
pub const ECHO_P99_C1: Case = sized!("echo_p99_c1", P99, 1);
/// `echo_p99_c64`.
pub const ECHO_P99_C64: Case = sized!("echo_p99_c64", P99, 64);
/// `echo_p99_c512`.
pub const ECHO_P99_C512: Case = sized!("echo_p99_c512", P99, 512);
/// `echo_p99_c2048`.
pub const ECHO_P99_C2048: Case = sized!("echo_p99_c2048", P99, 2048);
/// `echo_p99_c4096`.
pub const ECHO_P99_C4096: Case = sized!("echo_p99_c4096", P99, 4096);

/// The goals of this module's cases (see `crate::goals`).
pub const GOALS: &[Goal] = &[
    Goal::vs("echo_msgs", "keel", "monoio", Op::AtLeast, 1.0),
    Goal::vs("echo_p99", "keel", "monoio", Op::AtMost, 1.0),
    Goal::vs("echo_cpu", "keel", "monoio", Op::AtMost, 0.6),
    Goal::vs("echo_msgs", "keel", "io-uring", Op::AtLeast, 1.0),
    Goal::vs("echo_msgs", "keel", "io-uring-mshot", Op::AtLeast, 1.0),
    Goal::vs("echo_msgs", "keel-epoll", "tokio", Op::AtLeast, 1.0),
    Goal::vs("echo_p99", "keel-epoll", "tokio", Op::AtMost, 1.0),
];

macro_rules! curves {
    ($($imp:literal),*) => {
        &[
            $(Curve {
                name: "echo_cpu",
                size: "connections",
                imp: $imp,
                points: &[
                    (1, "echo_cpu_c1"),
                    (64, "echo_cpu_c64"),
                    (512, "echo_cpu_c512"),
                    (2048, "echo_cpu_c2048"),
                    (4096, "echo_cpu_c4096"),
                ],
            },)*
            $(Curve {
                name: "echo_p99",
                size: "connections",
                imp: $imp,
                points: &[
                    (1, "echo_p99_c1"),
                    (64, "echo_p99_c64"),
                    (512, "echo_p99_c512"),
                    (2048, "echo_p99_c2048"),
                    (4096, "echo_p99_c4096"),
                ],
            },)*
        ]
    };
}

/// The scaling curves of these cases.
pub const CURVES: &[Curve] = curves!("keel", "monoio", "tokio", "io-uring");

/// Every server's medians (`None`: not selected) with `conns` connections ([`MAIN`]:
/// the main measurement, else a point of the curve), measured once per process.
fn results(conns: usize) -> Result<&'static [Option<Figures>], String> {
    static R: [OnceLock<Result<Vec<Option<Figures>>, String>>; 1 + SIZES.len()] =
        [const { OnceLock::new() }; 1 + SIZES.len()];
    let at = slot(conns);
    R[at]
        .get_or_init(|| {
            // The impls get only an iteration count, so the case reads the flags itself.
            let args: Vec<String> = std::env::args().collect();
            let quick = args.iter().any(|a| a == "--quick");
            let only = args.iter().enumerate().find_map(|(i, a)| match a.strip_prefix("--only") {
                Some("") => args.get(i + 1).cloned(),
                Some(v) => v.strip_prefix('=').map(str::to_owned),
                None => None,
            });
            let candidates: Vec<&'static str> =
                if at == 0 { SERVERS.to_vec() } else { CURVE_SERVERS.iter().map(|&i| SERVERS[i]).collect() };
            let chosen: Vec<&'static str> = candidates
                .into_iter()
                .filter(|s| crate::features::left_out(s).is_none())
                .filter(|s| only.as_deref().is_none_or(|o| o.split(',').any(|o| o == *s)))
                .collect();
            let p = match (at, quick) {
                (0, true) => Params::QUICK,
                (0, false) => Params::FULL,
                (_, true) => Params { conns, alone: conns > ALL_UP_MAX, ..Params::QUICK },
                (_, false) if conns >= LONG_FROM => Params { conns, alone: conns > ALL_UP_MAX, ..Params::LONG },
                (_, false) => Params { conns, ..Params::CURVE },
            };
            let figs = servers::measure(&chosen, p)?;
            Ok(SERVERS.iter().map(|s| chosen.iter().position(|c| c == s).map(|i| figs[i])).collect())
        })
        .as_deref()
        .map_err(Clone::clone)
}

/// Where [`results`] keeps the measurement for `conns`: 0 for [`MAIN`], 1 + the size's
/// index for a point of the curve.
fn slot(conns: usize) -> usize {
    if conns == MAIN { 0 } else { SIZES.iter().position(|&n| n == conns).map_or(0, |i| i + 1) }
}

/// Metric `M` of server `S` with `N` connections as a time for `iters` operations in
/// the case's unit.
fn report<const M: usize, const S: usize, const N: usize>(iters: u64) -> Timed {
    Ok(as_time(M, &results(N)?[S].ok_or("not measured")?, iters))
}

/// Metric `m` of `f` as the time of `iters` operations that its case's unit turns back
/// into it (ops/s for [`MSGS`], ns per op for the others).
fn as_time(m: usize, f: &Figures, iters: u64) -> Duration {
    let n = iters as f64;
    match m {
        MSGS => Duration::from_secs_f64(n / f.msgs_per_sec),
        P50 => Duration::from_secs_f64(f.p50_ns * n * 1e-9),
        P99 => Duration::from_secs_f64(f.p99_ns * n * 1e-9),
        ALL_CPU => Duration::from_secs_f64(f.all_cpu_ns * n * 1e-9),
        _ => Duration::from_secs_f64(f.cpu_ns * n * 1e-9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_curves_64_connections_are_not_the_main_measurement() {
        // The curve has a 64-connection point, as the main measurement has 64 connections:
        // each keeps its own servers and windows.
        let at = SIZES.iter().position(|&n| n == 64).expect("the curve has 64 connections");
        assert_eq!(slot(MAIN), 0);
        assert_eq!(slot(64), at + 1);
        assert!(SIZES.iter().enumerate().all(|(i, &n)| slot(n) == i + 1));
    }

    #[test]
    fn medians_come_back_through_the_units() {
        let f = Figures {
            msgs_per_sec: 312_345.6,
            p50_ns: 18_250.0,
            p99_ns: 2_500_000.0,
            cpu_ns: 612.5,
            all_cpu_ns: 4321.0,
        };
        let want = [
            (ECHO_MSGS, f.msgs_per_sec),
            (ECHO_P50, f.p50_ns),
            (ECHO_P99, f.p99_ns),
            (ECHO_CPU, f.cpu_ns),
            (ECHO_CPU_C64, f.all_cpu_ns),
        ];
        for (m, (case, v)) in want.into_iter().enumerate() {
            for iters in [1u64, 16, 600, 1 << 20] {
                let got = case.unit.value(as_time(m, &f, iters), iters);
                assert!((got - v).abs() / v < 1e-3, "{} with {iters} iters: {got}, not {v}", case.name);
            }
        }
    }
}
