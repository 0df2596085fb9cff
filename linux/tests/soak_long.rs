//! The long soak (`make soak`; ignored, so not part of `make test`): for
//! `KEEL_SOAK_LONG_SECS` seconds (default 60) at once
//!
//! - echo traffic: `CLIENTS` std client threads make echo exchanges of random sizes on
//!   127.0.0.1 with one keel executor (`soak_long/echo.rs`: fibers and futures, plain
//!   receives and multishot receives into provided buffers), reconnecting now and then;
//! - timers: tasks on the echo executor sleep random lengths, each checked to last at
//!   least its duration;
//! - file i/o: tasks on a second executor thread write, fsync, read back and compare temp
//!   files (`soak_long/files.rs`);
//! - cross-thread attaches: a thread attaches futures to both executors through their
//!   `ExecutorHandle`s, each reporting a value computed from its inputs;
//! - cancels: every 100 ms each executor cancels one of its timer or file tasks.
//!
//! Every second it prints operations by kind, errors by kind, resident memory and
//! descriptors. At the end it checks: every exchange echoed exactly, every file read back
//! matched, no timer returned early, every attached task reported its expected value,
//! every error is an expected kind (`ECANCELED`/`Cancelled` seen by a task after it was
//! cancelled), nothing is left attached, in flight or armed, descriptors are back to
//! their baseline, and resident memory at the end is within `RSS_DRIFT_MAX` of what it
//! was after the warm-up (the first `WARMUP`, or a third of a shorter run). Seeded:
//! `KEEL_SOAK_SEED` repeats a run's random choices (not its thread interleaving).
//!
//! An ignored test rather than an example: it shares the other soaks' helper modules
//! (`net_util`, `soak_util`) and is built and linted with them.

#[path = "soak_long/echo.rs"]
mod echo;
#[path = "soak_long/files.rs"]
mod files;
#[path = "net_util/mod.rs"]
mod net_util;
#[path = "soak_util/mod.rs"]
mod soak_util;
#[path = "soak_long/stats.rs"]
mod stats;

use core::pin::Pin;
use core::time::Duration;
use keel_core::{AttachError, ExecutorHandle, TaskAttrs, TaskError, TaskHandle, TaskResult, TaskSlot, rt};
use soak_util::{Rng, fd_count, rss_bytes, seed};
use stats::{AFTER_CANCEL, ATTACH_RESULTS, ATTACHES, ECHO_BYTES, EXCHANGES, Stats, mib};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Instant;

/// Client threads making echo exchanges.
const CLIENTS: usize = 4;
/// Task slots the attacher thread cycles through.
const ATTACH_SLOTS: usize = 32;
/// How long the soak warms up before its resident-memory reference is taken.
const WARMUP: Duration = Duration::from_secs(10);
/// How far resident memory at the end may be from the reference taken after warm-up.
const RSS_DRIFT_MAX: u64 = 4 << 20;

/// What every thread of the soak shares.
pub struct Shared {
    /// Operations and errors by kind.
    pub stats: Arc<Stats>,
    /// Clients and the attacher stop.
    pub stop: AtomicBool,
    /// The executors cancel their tasks, run down and return.
    pub shutdown: AtomicBool,
}

/// Checks a local task's result: a value, or `Cancelled` if it was cancelled.
pub fn check_result(st: &Stats, what: &str, r: Result<Option<TaskResult>, keel_core::StaleHandle>, cancelled: bool) {
    match r {
        Ok(Some(Ok(_))) => {}
        Ok(Some(Err(TaskError::Cancelled))) if cancelled => st.error(format!("{what} Cancelled {AFTER_CANCEL}")),
        other => st.error(format!("UNEXPECTED {what} result {other:?}")),
    }
}

/// After the shutdown's cancels: runs until nothing is attached (10 s bound), then checks
/// that nothing is in flight and no timer is armed.
pub fn run_down(ex: Pin<&net_util::Ex>, st: &Stats, what: &str) {
    let t = Instant::now();
    while ex.attached() > 0 && t.elapsed() < Duration::from_secs(10) {
        let _ = ex.run(1024, Some(Duration::from_millis(5)));
    }
    let in_flight = ex.with_driver(|d| keel_core::Driver::in_flight(&**d)).unwrap();
    let s = ex.stats();
    eprintln!(
        "{what}: {} tasks completed, {} parks; after shutdown {} attached, {in_flight} in flight, {} timers armed",
        s.completed,
        s.parks,
        ex.attached(),
        s.timers_armed
    );
    if ex.attached() != 0 || in_flight != 0 || s.timers_armed != 0 {
        st.error(format!(
            "UNEXPECTED {what} not run down: {} attached, {in_flight} in flight, {} timers armed",
            ex.attached(),
            s.timers_armed
        ));
    }
}

/// One client thread: connections of 1..200 exchanges each, every exchange a random
/// 1..16 KiB block checked byte by byte.
fn client(sh: Arc<Shared>, addr: SocketAddr, seed: u64) {
    let st = &sh.stats;
    let mut rng = Rng::new(seed);
    let (mut out, mut back) = (Vec::new(), Vec::new());
    // Relaxed: a stop flag; the join orders the rest.
    'conns: while !sh.stop.load(Ordering::Relaxed) {
        let mut s = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => {
                st.error(format!("UNEXPECTED client connect {:?}", e.kind()));
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        for _ in 0..1 + rng.below(200) {
            if sh.stop.load(Ordering::Relaxed) {
                break 'conns;
            }
            let len = 1 + rng.below(16 * 1024) as usize;
            let salt = rng.next();
            out.clear();
            out.extend((0..len).map(|i| (salt >> (i % 8 * 8)) as u8 ^ (i >> 3) as u8));
            back.resize(len, 0);
            if let Err(e) = s.write_all(&out).and_then(|_| s.read_exact(&mut back)) {
                st.error(format!("UNEXPECTED client exchange {:?}", e.kind()));
                continue 'conns;
            }
            if back != out {
                // Relaxed: a counter read after the joins.
                st.mismatches.fetch_add(1, Ordering::Relaxed);
                st.error("UNEXPECTED echo differs".to_owned());
            }
            st.op(EXCHANGES, 1);
            st.op(ECHO_BYTES, len as u64);
        }
    }
}

/// The attacher thread: futures attached to both executors through their handles, each
/// sleeping a little and then sending back a value computed from its inputs; every value
/// is checked, and every attached task must report before the thread returns.
fn attacher(sh: Arc<Shared>, handles: [ExecutorHandle; 2], seed: u64) {
    let st = &sh.stats;
    let mut rng = Rng::new(seed);
    let mut slots: Vec<TaskHandle> = (0..ATTACH_SLOTS)
        .map(|_| {
            let s: &'static TaskSlot<512> = Box::leak(Box::new(TaskSlot::new()));
            s.create(TaskAttrs::default()).unwrap()
        })
        .collect();
    let (tx, rx) = mpsc::channel::<(u64, u64)>();
    let mut waiting: HashMap<u64, u64> = HashMap::new();
    let mut next = 0u64;
    let mut k = 0usize;
    let take = |waiting: &mut HashMap<u64, u64>, (id, v): (u64, u64)| match waiting.remove(&id) {
        Some(want) if want == v => st.op(ATTACH_RESULTS, 1),
        Some(want) => st.error(format!("UNEXPECTED attached task {id} reported {v}, not {want}")),
        None => st.error(format!("UNEXPECTED attached task {id} reported twice or unknown")),
    };
    // Relaxed: a stop flag.
    while !sh.stop.load(Ordering::Relaxed) {
        while let Ok(r) = rx.try_recv() {
            take(&mut waiting, r);
        }
        k = (k + 1) % ATTACH_SLOTS;
        let (id, x, pause) = (next, rng.next(), Duration::from_micros(rng.below(3000)));
        let want = x.rotate_left(7) ^ id;
        let tx = tx.clone();
        let body = async move {
            if rt::sleep(pause).await.is_err() {
                return 1u64; // cancelled by its executor's shutdown: reports nothing
            }
            let _ = tx.send((id, x.rotate_left(7) ^ id));
            0
        };
        match handles[(id % 2) as usize].attach(slots[k], body) {
            Ok(run) => {
                slots[k] = run;
                waiting.insert(id, want);
                next += 1;
                st.op(ATTACHES, 1);
            }
            // Its previous run has not completed (and released the task) yet.
            Err(AttachError::OwnedElsewhere(_)) => std::thread::sleep(Duration::from_micros(200)),
            Err(e) => {
                st.error(format!("UNEXPECTED attach {e}"));
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        if next.is_multiple_of(16) {
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    let t = Instant::now();
    while !waiting.is_empty() && t.elapsed() < Duration::from_secs(10) {
        if let Ok(r) = rx.recv_timeout(Duration::from_millis(100)) {
            take(&mut waiting, r);
        }
    }
    if !waiting.is_empty() {
        st.error(format!("UNEXPECTED {} attached tasks never reported", waiting.len()));
    }
}

#[test]
#[ignore = "the long soak: `make soak`"]
fn soak_long() {
    let secs: f64 = std::env::var("KEEL_SOAK_LONG_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60.0);
    let time = Duration::from_secs_f64(secs);
    let warmup = WARMUP.min(time / 3);
    let seed = seed("long soak");
    let mut rng = Rng::new(seed);
    let dir = std::env::temp_dir().join(format!("keel-{}-soak-long", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fd_base = fd_count(None);
    let rss_start = rss_bytes(None);
    let st = Arc::new(Stats::default());
    let sh = Arc::new(Shared { stats: st.clone(), stop: AtomicBool::new(false), shutdown: AtomicBool::new(false) });

    let (etx, erx) = mpsc::channel();
    let (s, es) = (sh.clone(), rng.next());
    let echo_thread = std::thread::spawn(move || echo::run(s, es, etx));
    let (ftx, frx) = mpsc::channel();
    let (s, fs_seed, d) = (sh.clone(), rng.next(), dir.clone());
    let file_thread = std::thread::spawn(move || files::run(s, fs_seed, d, ftx));
    let (addr, echo_handle) = erx.recv().expect("the echo executor started");
    let file_handle = frx.recv().expect("the file executor started");
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (s, cs) = (sh.clone(), rng.next());
            std::thread::spawn(move || client(s, addr, cs))
        })
        .collect();
    let (s, a_seed) = (sh.clone(), rng.next());
    let attach_thread = std::thread::spawn(move || attacher(s, [echo_handle, file_handle], a_seed));
    eprintln!(
        "long soak: {secs} s, {CLIENTS} clients on {addr}, warm-up {warmup:?}; rss {:.1} MiB, {fd_base} fds at start",
        mib(rss_start)
    );

    let t0 = Instant::now();
    let mut rss_warm = None;
    let mut tick = 1;
    while t0.elapsed() < time {
        std::thread::sleep(Duration::from_secs(tick).saturating_sub(t0.elapsed()).min(time - t0.elapsed().min(time)));
        if t0.elapsed() >= Duration::from_secs(tick) {
            eprintln!("{}", st.report(tick));
            tick += 1;
        }
        if rss_warm.is_none() && t0.elapsed() >= warmup {
            rss_warm = Some(rss_bytes(None));
        }
    }
    let rss_end = rss_bytes(None);
    // Stop the clients and the attacher first, then the executors they talk to.
    // Relaxed: a stop flag; the joins order the rest.
    sh.stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("a client thread panicked");
    }
    attach_thread.join().expect("the attacher panicked");
    // Release: pairs with the executors' Acquire loads of `shutdown`.
    sh.shutdown.store(true, Ordering::Release);
    echo_thread.join().expect("the echo executor panicked");
    file_thread.join().expect("the file executor panicked");
    let _ = std::fs::remove_dir_all(&dir);
    let fd_end = fd_count(None);
    let rss_warm = rss_warm.unwrap_or(rss_end);

    let errors = st.errors();
    let early = st.early.load(Ordering::Relaxed);
    eprintln!(
        "long soak summary: {:?}, seed {seed} | {} | errors: {} | early timers {early} (worst {} ns) | mismatches {} | \
         rss start {:.1} MiB, after warm-up {:.1} MiB, end {:.1} MiB ({:+.2} MiB) | fds {fd_base} -> {fd_end}",
        t0.elapsed(),
        st.ops_line(),
        st.errors_line(),
        st.early_worst_ns.load(Ordering::Relaxed),
        st.mismatches.load(Ordering::Relaxed),
        mib(rss_start),
        mib(rss_warm),
        mib(rss_end),
        (rss_end as f64 - rss_warm as f64) / (1u64 << 20) as f64,
    );
    let unexpected: Vec<_> = errors.iter().filter(|(k, _)| !k.ends_with(AFTER_CANCEL)).collect();
    assert!(unexpected.is_empty(), "seed {seed}: unexpected errors: {unexpected:?}");
    assert_eq!(st.mismatches.load(Ordering::Relaxed), 0, "seed {seed}: every exchange and read-back matched");
    assert_eq!(early, 0, "seed {seed}: no timer returned early");
    assert_eq!(st.get(ATTACHES), st.get(ATTACH_RESULTS), "seed {seed}: every attached task reported its value");
    assert_eq!(fd_end, fd_base, "seed {seed}: descriptors back to their baseline");
    assert!(
        rss_end <= rss_warm + RSS_DRIFT_MAX && rss_warm <= rss_end + RSS_DRIFT_MAX,
        "seed {seed}: resident memory after warm-up {:.1} MiB, at the end {:.1} MiB (at most {} MiB apart)",
        mib(rss_warm),
        mib(rss_end),
        RSS_DRIFT_MAX >> 20
    );
    for k in [EXCHANGES, stats::FILE_ROUNDS, stats::TIMERS, ATTACHES, stats::CANCELS] {
        assert!(st.get(k) > 0, "seed {seed}: the soak did some of everything: {}", st.ops_line());
    }
}
