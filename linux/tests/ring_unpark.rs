//! Unparking a parked ring executor from other threads, through each mechanism (the
//! `ring` module's unpark.rs): MsgRing (`IORING_REGISTER_SEND_MSG_RING`, kernel 6.13)
//! where the kernel has it, and the eventfd fallback, forced with `UnparkMode::Eventfd`.
//!
//! A MsgRing test on a kernel without it is skipped with a message on stderr (the
//! driver's probe says why); `KEEL_REQUIRE_MSG_RING=1` makes it fail instead.

use core::pin::pin;
use core::time::Duration;
use keel_core::{Config, Driver, Executor, ExecutorHandle, HandleSlot, Park, TaskAttrs, TaskHandle, TaskSlot};
use keel_linux::{RingConfig, RingDriver, UnparkKind, UnparkMode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Instant;

fn slot() -> &'static TaskSlot {
    Box::leak(Box::new(TaskSlot::new()))
}

fn handle_slot() -> &'static HandleSlot {
    Box::leak(Box::new(HandleSlot::new()))
}

/// How long any one step may take before the test fails (a lost unpark hangs).
const STEP: Duration = Duration::from_secs(10);

/// Whether ring drivers here unpark through MsgRing. If not, says the test is skipped
/// (or fails, with `KEEL_REQUIRE_MSG_RING` set): never a silent pass.
fn msg_ring_or_skip(test: &str) -> bool {
    let kind = RingDriver::new(RingConfig::default()).unwrap().unpark_kind();
    if kind == UnparkKind::MsgRing {
        return true;
    }
    assert!(
        std::env::var_os("KEEL_REQUIRE_MSG_RING").is_none(),
        "{test}: KEEL_REQUIRE_MSG_RING is set but ring drivers unpark through {kind:?}"
    );
    eprintln!(
        "SKIPPED {test}: this kernel cannot unpark a ring through IORING_REGISTER_SEND_MSG_RING (the probe's reason is above); the eventfd tests cover the fallback"
    );
    false
}

fn config(mode: UnparkMode) -> RingConfig {
    RingConfig { unpark: mode, ..RingConfig::default() }
}

fn want_kind(mode: UnparkMode) -> UnparkKind {
    match mode {
        UnparkMode::Auto => UnparkKind::MsgRing, // callers checked `msg_ring_or_skip`
        UnparkMode::Eventfd => UnparkKind::Eventfd,
    }
}

/// Whether thread `tid` of this process is asleep (state S: an interruptible wait, which
/// is where a parked ring executor sits, in `io_uring_enter`).
fn asleep(tid: i32) -> bool {
    let Ok(s) = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")) else { return false };
    // "tid (comm) S ...": the state follows the last ')'.
    s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('S'))
}

/// Waits (bounded) until thread `tid` sleeps.
fn wait_asleep(tid: i32, what: &str) {
    let t0 = Instant::now();
    while !asleep(tid) {
        assert!(t0.elapsed() < STEP, "{what}: the executor's thread never went to sleep");
        std::thread::yield_now();
    }
}

/// The driver's own `park`: with nothing in flight, no deadline and no unparker handed
/// out it is a stall; once an unparker is out, an unpark sent (from another thread)
/// before the park ends it (its CQE waits in the ring), and the next park takes that CQE
/// (one CQE per unpark, not stale) and waits again.
fn driver_park_protocol(mode: UnparkMode) {
    let mut d = RingDriver::new(config(mode)).unwrap();
    assert_eq!(d.unpark_kind(), want_kind(mode));
    assert_eq!(d.park(None), Ok(Park::Stalled), "nothing can wake it yet");
    let word = 0u32;
    let u = d.unparker(&word).expect("a ring driver can be unparked");
    let unpark_from_another_thread = || std::thread::scope(|s| drop(s.spawn(|| (u.unpark)(u.ctx))));
    let short = |d: &RingDriver| Some(d.now().saturating_add(Duration::from_millis(20)));
    // Bounded first (a lost unpark shows as a missing CQE below, not as a hang).
    let before = d.stats();
    unpark_from_another_thread();
    assert_eq!(d.park(Some(d.now().saturating_add(STEP))), Ok(Park::Woke));
    // The unpark's CQE sits in the CQ (nothing of the executor's was in flight, so nobody
    // reaped it): this park takes it, then waits for its deadline.
    assert_eq!(d.park(short(&d)), Ok(Park::Woke));
    let after = d.stats();
    assert_eq!(after.completed - before.completed, 1, "one unpark, one CQE: {before:?} -> {after:?}");
    // The mechanism works: now with no deadline, where only the unparker can end it.
    unpark_from_another_thread();
    assert_eq!(d.park(None), Ok(Park::Woke), "an unparker is out: not a stall");
    assert_eq!(d.park(short(&d)), Ok(Park::Woke));
    let last = d.stats();
    assert_eq!(last.completed - after.completed, 1, "one unpark, one CQE: {after:?} -> {last:?}");
    assert_eq!(last.stale, 0, "the unpark CQE is the driver's own, not stale: {last:?}");
}

#[test]
fn msg_ring_driver_park_protocol() {
    if msg_ring_or_skip("msg_ring_driver_park_protocol") {
        driver_park_protocol(UnparkMode::Auto);
    }
}

#[test]
fn eventfd_driver_park_protocol() {
    driver_park_protocol(UnparkMode::Eventfd);
}

/// An executor parked with no timer and nothing attached or in flight, asleep in
/// `io_uring_enter` (checked in /proc), is woken by a foreign attach.
fn parked_executor_woken_by_foreign_attach(mode: UnparkMode) {
    let (tx, rx) = mpsc::channel();
    let done = Arc::new(AtomicU64::new(0));
    let d2 = done.clone();
    let exec_thread = std::thread::spawn(move || {
        let ex = pin!(Executor::new(RingDriver::new(config(mode)).unwrap(), Config::default()).unwrap());
        let ex = ex.into_ref();
        let (kind, flags) = ex.with_driver(|d| (d.unpark_kind(), d.flags())).unwrap();
        assert_eq!(kind, want_kind(mode));
        if kind == UnparkKind::MsgRing {
            // What the MsgRing path must wake through (the kernels that have MsgRing have both).
            assert!(flags.single_issuer && flags.defer_taskrun, "{flags:?}");
        }
        tx.send((ex.handle(handle_slot()).unwrap(), libc_gettid())).unwrap();
        // Nothing attached, no timer, no timeout: this parks until the attach arrives.
        let n = ex.run(1, None).unwrap();
        assert_eq!(n, 1);
        assert!(ex.stats().parks >= 1, "it never parked");
        ex.with_driver(|d| assert_eq!(d.stats().stale, 0, "{:?}", d.stats())).unwrap();
        d2.load(Ordering::SeqCst)
    });
    let (h, tid) = rx.recv().unwrap();
    wait_asleep(tid, "before the attach");
    let t = slot().create(TaskAttrs::default()).unwrap();
    let d3 = done.clone();
    h.attach(t, async move {
        d3.store(7, Ordering::SeqCst);
    })
    .unwrap();
    let t0 = Instant::now();
    while done.load(Ordering::SeqCst) == 0 {
        assert!(t0.elapsed() < STEP, "the attach never ran: its unpark was lost");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(exec_thread.join().unwrap(), 7);
}

fn libc_gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

#[test]
fn a_parked_executor_is_woken_by_a_foreign_attach_through_msg_ring() {
    if msg_ring_or_skip("a_parked_executor_is_woken_by_a_foreign_attach_through_msg_ring") {
        parked_executor_woken_by_foreign_attach(UnparkMode::Auto);
    }
}

#[test]
fn a_parked_executor_is_woken_by_a_foreign_attach_through_the_eventfd() {
    parked_executor_woken_by_foreign_attach(UnparkMode::Eventfd);
}

/// The executor's thread: runs until `stop`, parking (no timer) whenever it has nothing
/// to do; returns (parks, tasks completed).
fn spawn_executor(
    mode: UnparkMode,
    stop: Arc<AtomicBool>,
) -> (std::thread::JoinHandle<(u64, u64)>, ExecutorHandle, i32) {
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        let ex = pin!(Executor::new(RingDriver::new(config(mode)).unwrap(), Config::default()).unwrap());
        let ex = ex.into_ref();
        assert_eq!(ex.with_driver(|d| d.unpark_kind()).unwrap(), want_kind(mode));
        tx.send((ex.handle(handle_slot()).unwrap(), libc_gettid())).unwrap();
        while !stop.load(Ordering::SeqCst) || ex.attached() > 0 {
            ex.run(usize::MAX, None).unwrap();
        }
        ex.with_driver(|d| assert_eq!(d.stats().stale, 0, "{:?}", d.stats())).unwrap();
        (ex.stats().parks, ex.stats().completed)
    });
    let (h, tid) = rx.recv().unwrap();
    (t, h, tid)
}

/// Makes the executor's loop end: sets `stop`, then attaches an empty task to end a park
/// the loop may be in. The executor may also see `stop` first and go (then the attach
/// finds it gone, or its task is never run): so the task count is N or N + 1.
fn stop_executor(h: &ExecutorHandle, stop: &AtomicBool) {
    stop.store(true, Ordering::SeqCst);
    match h.attach(slot().create(TaskAttrs::default()).unwrap(), async {}) {
        Ok(_) | Err(keel_core::AttachError::ExecutorGone(_)) => {}
        Err(e) => panic!("attach: {e}"),
    }
}

/// Attaches `body` to `tasks[k]` through `h`, retrying while the executor still owns it.
fn attach(h: &ExecutorHandle, tasks: &mut [TaskHandle], k: usize, body: impl Future<Output = ()> + Send + 'static) {
    let t0 = Instant::now();
    let mut body = body;
    loop {
        match h.attach(tasks[k], body) {
            Ok(run) => {
                tasks[k] = run;
                return;
            }
            Err(keel_core::AttachError::OwnedElsewhere(b)) => {
                assert!(t0.elapsed() < STEP, "task {k} was never released");
                body = b;
                std::hint::spin_loop();
            }
            Err(e) => panic!("attach: {e}"),
        }
    }
}

/// 10,000 foreign attaches, each made only once the executor's thread is asleep in its
/// park, so each needs a real unpark: every task runs exactly once, and the executor
/// parks once per attach (at least: each found it asleep; at most about twice: it does not
/// spin on a leftover unpark CQE).
fn every_attach_unparks(mode: UnparkMode) {
    // 1,000 under valgrind (`make test-valgrind`): there each park is poll(2) slices of up
    // to 10 ms with an enter after each (`ring/enter.rs`, `wait_in_poll`), all at
    // valgrind's speed, and 10,000 attaches that each find the executor asleep did not
    // end within the binary's 10 minutes.
    const N: usize = if cfg!(keel_valgrind) { 1_000 } else { 10_000 };
    const POOL: usize = 8;
    let stop = Arc::new(AtomicBool::new(false));
    let (exec_thread, h, tid) = spawn_executor(mode, stop.clone());
    let hits: Arc<Vec<AtomicU8>> = Arc::new((0..N).map(|_| AtomicU8::new(0)).collect());
    let mut tasks: Vec<TaskHandle> = (0..POOL).map(|_| slot().create(TaskAttrs::default()).unwrap()).collect();
    for i in 0..N {
        wait_asleep(tid, &format!("before attach {i}"));
        let hits2 = hits.clone();
        attach(&h, &mut tasks, i % POOL, async move {
            hits2[i].fetch_add(1, Ordering::SeqCst);
        });
        let t0 = Instant::now();
        while hits[i].load(Ordering::SeqCst) == 0 {
            assert!(t0.elapsed() < STEP, "attach {i} never ran: its unpark was lost");
            std::hint::spin_loop();
        }
    }
    stop_executor(&h, &stop);
    let (parks, completed) = exec_thread.join().unwrap();
    for (i, n) in hits.iter().enumerate() {
        assert_eq!(n.load(Ordering::SeqCst), 1, "task {i}");
    }
    assert!(completed == N as u64 || completed == N as u64 + 1, "{completed} tasks completed");
    assert!(parks >= N as u64, "{parks} parks for {N} attaches that each found the executor asleep");
    assert!(parks <= 2 * N as u64 + 16, "{parks} parks for {N} attaches: the executor spins");
    eprintln!("{mode:?}: {N} attaches, each unparking: {parks} parks");
}

#[test]
fn ten_thousand_attaches_each_unpark_a_msg_ring_executor() {
    if msg_ring_or_skip("ten_thousand_attaches_each_unpark_a_msg_ring_executor") {
        every_attach_unparks(UnparkMode::Auto);
    }
}

#[test]
fn ten_thousand_attaches_each_unpark_an_eventfd_executor() {
    every_attach_unparks(UnparkMode::Eventfd);
}

/// Two threads attach 5,000 tasks each with no pause, so attaches race the executor's
/// decision to park (announce, fence, re-check) and its wake-ups: every task runs exactly
/// once, and the executor never parks more than about twice per attach (no spin).
fn attaches_racing_parks(mode: UnparkMode) {
    const PER_THREAD: usize = 5_000;
    const POOL: usize = 8;
    let stop = Arc::new(AtomicBool::new(false));
    let (exec_thread, h, _) = spawn_executor(mode, stop.clone());
    let hits: Arc<Vec<AtomicU8>> = Arc::new((0..2 * PER_THREAD).map(|_| AtomicU8::new(0)).collect());
    std::thread::scope(|s| {
        for who in 0..2 {
            let hits = hits.clone();
            s.spawn(move || {
                let mut tasks: Vec<TaskHandle> =
                    (0..POOL).map(|_| slot().create(TaskAttrs::default()).unwrap()).collect();
                for j in 0..PER_THREAD {
                    let i = who * PER_THREAD + j;
                    let hits2 = hits.clone();
                    attach(&h, &mut tasks, j % POOL, async move {
                        hits2[i].fetch_add(1, Ordering::SeqCst);
                    });
                    // Every few attaches, let the executor run dry and park.
                    if j % 4 == 3 {
                        let t0 = Instant::now();
                        while hits[i].load(Ordering::SeqCst) == 0 {
                            assert!(t0.elapsed() < STEP, "attach {i} never ran: its unpark was lost");
                            std::hint::spin_loop();
                        }
                    }
                }
            });
        }
    });
    let t0 = Instant::now();
    while hits.iter().any(|n| n.load(Ordering::SeqCst) == 0) {
        assert!(t0.elapsed() < STEP, "attaches were lost");
        std::thread::sleep(Duration::from_millis(1));
    }
    stop_executor(&h, &stop);
    let (parks, completed) = exec_thread.join().unwrap();
    for (i, n) in hits.iter().enumerate() {
        assert_eq!(n.load(Ordering::SeqCst), 1, "task {i}");
    }
    let n = 2 * PER_THREAD as u64;
    assert!(completed == n || completed == n + 1, "{completed} tasks completed");
    assert!(
        parks <= 2 * (2 * PER_THREAD as u64) + 16,
        "{parks} parks for {} attaches: the executor spins",
        2 * PER_THREAD
    );
    eprintln!("{mode:?}: {} racing attaches: {parks} parks", 2 * PER_THREAD);
}

#[test]
fn attaches_racing_parks_of_a_msg_ring_executor() {
    if msg_ring_or_skip("attaches_racing_parks_of_a_msg_ring_executor") {
        attaches_racing_parks(UnparkMode::Auto);
    }
}

#[test]
fn attaches_racing_parks_of_an_eventfd_executor() {
    attaches_racing_parks(UnparkMode::Eventfd);
}
