//! Cancellation soak: for each operation kind (yield, sleep, open/close, read, write,
//! recv, accept, registered buffers, provided buffers) eight tasks, fibers and futures
//! picked at random, run the operation in a loop while the test cancels tasks at random
//! points (and, for futures of kinds whose result may be given up, drops the operation
//! future mid-flight), re-attaching each task once it ends; half the time on a ring with
//! room to spare, half on one with fewer operation slots than tasks (so tasks also wait
//! for room to submit, and are cancelled there). Seeded: the seed is printed
//! and `KEEL_SOAK_SEED` repeats it; `KEEL_SOAK_SECS` sets the time per kind (the default
//! is short, for `make test`; the full soak is 3 s each).
//!
//! Afterwards, with every task cancelled: every task completed within a bound (no
//! stranded waiter) and has a result; nothing is in flight and the executor's operations
//! submitted equal those completed (a multishot's extra results aside); no timer is left
//! armed; registered buffers claimed equal released and every one can be claimed again;
//! every provided buffer is back in the ring; the bytes (or connections) the peers fed
//! equal those the tasks reported plus those left unread (a cancel never loses a
//! completion); the process's descriptors are back to their baseline.

#[path = "soak/bodies.rs"]
mod bodies;
#[path = "soak/fixture.rs"]
mod fixture;
#[path = "net_util/mod.rs"]
mod net_util;
#[path = "soak_util/mod.rs"]
mod soak_util;

use bodies::{Ctx, fiber_body, future_body};
use core::time::Duration;
use fixture::Fix;
use keel_core::{Fiber, TaskAttrs, TaskHandle, TaskSlot};
use keel_linux::RingConfig;
use keel_linux::fs::FiberFs;
use net_util::{executor_with, fattrs, ring};
use soak_util::{Rng, fd_count, seed, soak_time};
use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

/// Tasks at once.
const W: usize = 8;
/// Registered buffers (fewer than tasks: claims wait) and provided buffers.
const REG_BUFS: u16 = 2;
const PBUFS: u16 = 4;

#[derive(Copy, Clone, Debug, PartialEq)]
enum Kind {
    Yield,
    Sleep,
    OpenClose,
    Read,
    Write,
    Recv,
    Accept,
    Registered,
    Provided,
}

/// Soaks `kind` for the soak time: half on a ring with room to spare, half on one with
/// fewer operation slots than tasks and a 4-entry SQ, so that tasks also wait for room to
/// submit and are cancelled there (the waiter leaves the queue or passes its turn on).
fn soak(kind: Kind) {
    // One soak at a time in this process: the descriptor count is the whole process's
    // (libtest runs tests on threads; nextest gives each its own process anyway).
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    if matches!(kind, Kind::Registered | Kind::Provided) && net_util::ring_only("registered and provided buffers") {
        return;
    }
    let time = soak_time(Duration::from_millis(500)) / 2;
    let roomy = RingConfig { registered_buffers: REG_BUFS, ..RingConfig::default() };
    soak_on(kind, roomy, time, "room to spare");
    soak_on(kind, RingConfig { entries: 4, slots: 6, ..roomy }, time, "6 slots, 4 SQ entries");
}

fn soak_on(kind: Kind, cfg: RingConfig, time: Duration, what: &str) {
    let seed = seed(&format!("cancel soak {kind:?}, {what}"));
    let mut rng = Rng::new(seed);
    let dir = std::env::temp_dir().join(format!("keel-{}-soak-{kind:?}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut d = ring(cfg);
    net_util::provided_buffers(&mut d, PBUFS, 64);
    let ex = executor_with(d);
    let ex = ex.as_ref();
    let mut fix = Fix::new(kind, &dir);
    let fd_base = fd_count(None);
    let slots: Vec<&'static TaskSlot<8192>> = (0..W).map(|_| &*Box::leak(Box::new(TaskSlot::new()))).collect();
    let mut handles: Vec<TaskHandle> = slots.iter().map(|s| s.create(TaskAttrs::default()).unwrap()).collect();
    let mut live = [false; W];
    let (mut runs, mut cancels, mut ended) = (0u64, 0u64, 0u64);
    let t0 = Instant::now();
    loop {
        // The soak time, and past it until the soak has done what it is for (more runs
        // than tasks, a cancel): a slow first pass (valgrind translating the code, a
        // loaded machine) can take the whole default time. At most 60 s in all.
        let busy_enough = runs > W as u64 && cancels > 0;
        let over = t0.elapsed() >= time && (busy_enough || t0.elapsed() >= Duration::from_secs(60));
        for i in 0..W {
            if live[i] && matches!(ex.result(handles[i]), Ok(Some(_))) {
                live[i] = false;
                ended += 1;
            }
            if !live[i] && !over {
                let c = Ctx {
                    kind,
                    file: fix.files.get(i).cloned(),
                    sock: fix.socks.get(i).cloned().or_else(|| fix.listener.clone()),
                    path: fix.path.clone(),
                    got: fix.got.clone(),
                    claims: fix.claims.clone(),
                    releases: fix.releases.clone(),
                    given_up: fix.given_up.clone(),
                    iters: 1 + rng.below(200),
                    seed: rng.next(),
                };
                handles[i] = if rng.one_in(2) {
                    ex.attach_fiber(handles[i], fattrs(), move |f: &mut Fiber| fiber_body(f, c))
                        .map_err(|_| "attach fiber")
                        .unwrap()
                } else {
                    ex.attach(handles[i], future_body(c)).map_err(|_| "attach future").unwrap()
                };
                live[i] = true;
                runs += 1;
            }
        }
        if over {
            break;
        }
        let _ = ex.run(1 + rng.below(8) as usize, Some(Duration::from_micros(200)));
        for _ in 0..rng.below(3) {
            fix.feed(&mut rng);
        }
        if rng.one_in(3) {
            let i = rng.below(W as u64) as usize;
            if live[i] && ex.cancel(handles[i]).is_ok() {
                cancels += 1;
            }
        }
    }
    // The end: every task cancelled must complete, with nothing left waiting.
    for i in 0..W {
        if live[i] {
            let _ = ex.cancel(handles[i]);
        }
    }
    let t1 = Instant::now();
    while ex.attached() > 0 && t1.elapsed() < Duration::from_secs(5) {
        let _ = ex.run(1024, Some(Duration::from_millis(5)));
    }
    let stranded: Vec<_> = (0..W).filter(|&i| live[i] && !matches!(ex.result(handles[i]), Ok(Some(_)))).collect();
    let states: Vec<_> = stranded.iter().map(|&i| ex.state(handles[i])).collect();
    assert!(
        stranded.is_empty(),
        "{kind:?} (seed {seed}): tasks {stranded:?} never completed once cancelled: {states:?}"
    );
    let st = ex.stats();
    let in_flight = ex.with_driver(|d| keel_core::Driver::in_flight(&**d)).unwrap();
    let rs = ex.with_driver(|d| d.stats()).unwrap();
    let pb = ex
        .with_driver(|d| {
            // SAFETY: reads statistics only: nothing replaced, no executor-owned driver
            // method called (keel-core driver rule 2).
            unsafe { d.get_mut() }.provided_buffer_stats()
        })
        .unwrap();
    let ring = !net_util::on_epoll();
    let left = fix.leftover();
    eprintln!(
        "cancel soak {kind:?} ({what}): {:?}, {runs} runs, {cancels} cancels, {ended} ended; ops submitted {} completed {} \
         (ring: {} SQEs, {} CQEs), {} futures given up; fed {} = reported {} + left {left}; claims {} releases {}; pbuf {pb:?}",
        t0.elapsed(),
        st.io_submitted,
        st.io_completed,
        rs.submitted,
        rs.completed,
        fix.given_up.get(),
        fix.fed.get(),
        fix.got.get(),
        fix.claims.get(),
        fix.releases.get(),
    );
    assert_eq!(in_flight, 0, "{kind:?} (seed {seed}): nothing in flight");
    if kind == Kind::Provided {
        // A multishot posts several completions for one submission.
        assert!(st.io_completed >= st.io_submitted, "{kind:?} (seed {seed}): every operation completed");
    } else {
        // An operation whose future was dropped first completes in the driver only.
        let given_up = fix.given_up.get();
        assert!(
            st.io_completed <= st.io_submitted && st.io_submitted <= st.io_completed + given_up,
            "{kind:?} (seed {seed}): operations submitted ({}) equal completed ({}) and given up (at most {given_up})",
            st.io_submitted,
            st.io_completed
        );
    }
    assert_eq!(st.timers_armed, 0, "{kind:?} (seed {seed}): no timer left armed");
    assert_eq!(fix.claims.get(), fix.releases.get(), "{kind:?} (seed {seed}): registered buffers claimed = released");
    if let Some(pb) = pb {
        assert_eq!((pb.in_use, pb.available), (0, PBUFS), "{kind:?} (seed {seed}): every provided buffer is back");
    }
    assert_eq!(
        fix.fed.get(),
        fix.got.get() + left,
        "{kind:?} (seed {seed}): fed = reported + unread (no lost completion)"
    );
    // Every registered buffer can be claimed again (io_uring only: the epoll backend has none).
    let all = Rc::new(Cell::new(0));
    let a = all.clone();
    ex.attach_fiber(handles[0], fattrs(), move |f: &mut Fiber| {
        if ring {
            let bufs: Vec<_> = (0..REG_BUFS).map_while(|_| f.try_claim_buffer().ok()).collect();
            a.set(bufs.len());
        }
        0u64
    })
    .map_err(|_| "attach")
    .unwrap();
    net_util::run_all(ex);
    if ring {
        assert_eq!(all.get(), REG_BUFS as usize, "{kind:?} (seed {seed}): every registered buffer is free");
    }
    drop(std::mem::take(&mut fix.clients));
    assert_eq!(fd_count(None), fd_base, "{kind:?} (seed {seed}): descriptors back to their baseline");
    drop(fix);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(runs > W as u64 && cancels > 0, "{kind:?}: the soak cancelled something");
}

#[test]
fn soak_yield() {
    soak(Kind::Yield);
}

#[test]
fn soak_sleep() {
    soak(Kind::Sleep);
}

#[test]
fn soak_open_close() {
    soak(Kind::OpenClose);
}

#[test]
fn soak_read() {
    soak(Kind::Read);
}

#[test]
fn soak_write() {
    soak(Kind::Write);
}

#[test]
fn soak_recv() {
    soak(Kind::Recv);
}

#[test]
fn soak_accept() {
    soak(Kind::Accept);
}

#[test]
fn soak_registered_buffers() {
    soak(Kind::Registered);
}

#[test]
fn soak_provided_buffers() {
    soak(Kind::Provided);
}
