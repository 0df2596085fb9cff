//! Signals as events (`signal.rs`): a task waits for a thread-directed signal read from a
//! signalfd through the ring, fibers and futures; a cancelled wait leaves the signal
//! pending; a future dropped after the kernel dequeued a signal puts it back (signal rule
//! 3). Each test blocks its signals in its own thread (the executor's) and sends them to
//! that thread only (tgkill), so no other thread of the test process is involved.

#[path = "net_util/mod.rs"]
mod util;

use core::future::Future;
use core::task::{Context, Poll};
use keel_core::{Errno, Fiber};
use keel_linux::RingConfig;
use keel_linux::signal::{self, FiberSignal, Signal, SignalFd, SignalSet};
use std::cell::RefCell;
use std::rc::Rc;
use util::*;

fn tid() -> i32 {
    rustix::thread::gettid().as_raw_nonzero().get()
}

fn pid() -> i32 {
    rustix::process::getpid().as_raw_nonzero().get()
}

/// tgkill(2) to thread `tid` of this process.
fn tgkill(tid: i32, sig: i32) {
    // SAFETY: sends a signal the receiving thread blocks (each test blocks it first).
    assert_eq!(unsafe { libc::syscall(libc::SYS_tgkill, pid(), tid, sig) }, 0);
}

/// A real-time signal with value `v` queued to thread `tid` (rt_tgsigqueueinfo(2)).
fn queue_rt(tid: i32, sig: i32, v: i32) {
    // SAFETY: `siginfo_t` is plain old data; the union's `_rt` member (pid, uid, value) is
    // written at its kernel offset 16 on 64-bit.
    unsafe {
        let mut si: libc::siginfo_t = core::mem::zeroed();
        si.si_signo = sig;
        si.si_code = libc::SI_QUEUE;
        let base = (&raw mut si).cast::<u8>().add(16);
        base.cast::<i32>().write_unaligned(pid());
        base.add(8).cast::<i64>().write_unaligned(i64::from(v));
        assert_eq!(libc::syscall(libc::SYS_rt_tgsigqueueinfo, pid(), tid, sig, &si), 0);
    }
}

fn pending(sig: i32) -> bool {
    // SAFETY: `sigpending` fills the set it is given; `sigismember` reads it.
    unsafe {
        let mut s = core::mem::zeroed();
        libc::sigpending(&mut s);
        libc::sigismember(&s, sig) == 1
    }
}

fn rt(n: i32) -> i32 {
    libc::SIGRTMIN() + n
}

/// Signal rules 1-2: a fiber waits for SIGUSR1 and another thread sends it to the
/// executor's thread; a future sends itself SIGUSR2 and reads it.
#[test]
fn signal_a_thread_directed_signal_wakes_a_fiber_and_a_future() {
    let set = SignalSet::of(&[Signal::USR1, Signal::USR2]);
    signal::block(&set).unwrap();
    let sfd = Rc::new(SignalFd::new(&set).unwrap());
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let me = tid();
    let s1 = sfd.clone();
    let t = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            let i = f.next_signal(&s1).unwrap();
            assert_eq!((i.signal(), i.code, i.pid as i32), (Some(Signal::USR1), libc::SI_TKILL, pid()));
            1u64
        })
        .unwrap();
    for _ in 0..5 {
        let _ = ex.run(16, Some(core::time::Duration::from_millis(5)));
    }
    assert_eq!(ex.result(t), Ok(None), "it waits");
    std::thread::spawn(move || tgkill(me, libc::SIGUSR1)).join().unwrap();
    run_all(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(1))));
    let s2 = sfd.clone();
    let u = ex
        .attach(task(), async move {
            tgkill(tid(), libc::SIGUSR2);
            let i = signal::next_signal(&s2).await.unwrap();
            assert_eq!(i.signal(), Some(Signal::USR2));
            1u64
        })
        .unwrap();
    run_all(ex);
    assert_eq!(ex.result(u), Ok(Some(Ok(1))));
}

/// Signal rule 3: a wait cancelled before any signal came returns `ECANCELED` (fiber and
/// future), and a signal sent afterwards stays pending for the next read.
#[test]
fn signal_a_cancelled_wait_consumes_nothing() {
    let set = SignalSet::of(&[Signal::USR1]);
    signal::block(&set).unwrap();
    let sfd = Rc::new(SignalFd::new(&set).unwrap());
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let (s1, o1) = (sfd.clone(), seen.clone());
    let t = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            let r = f.next_signal(&s1).err();
            o1.borrow_mut().push(r);
            0u64
        })
        .unwrap();
    let (s2, o2) = (sfd.clone(), seen.clone());
    let u = ex
        .attach(task(), async move {
            let r = signal::next_signal(&s2).await.err();
            o2.borrow_mut().push(r);
            0u64
        })
        .unwrap();
    for _ in 0..5 {
        let _ = ex.run(16, Some(core::time::Duration::from_millis(5)));
    }
    ex.cancel(t).unwrap();
    ex.cancel(u).unwrap();
    run_all(ex);
    assert_eq!(*seen.borrow(), [Some(Errno::ECANCELED), Some(Errno::ECANCELED)]);
    tgkill(tid(), libc::SIGUSR1);
    assert!(pending(libc::SIGUSR1), "nothing read it");
    let s3 = sfd.clone();
    let v = ex.attach(task(), async move { signal::next_signal(&s3).await.map(|i| i.signo as u64).unwrap() }).unwrap();
    run_all(ex);
    assert_eq!(ex.result(v), Ok(Some(Ok(libc::SIGUSR1 as u64))));
}

/// Signal rule 3: a future polled until its read is in the kernel, then dropped after
/// the kernel dequeued a queued real-time signal (no longer pending) but before taking
/// it: the signal is pending again, value and code kept, and the next read returns it.
#[test]
fn signal_a_future_dropped_after_the_kernel_read_puts_the_signal_back() {
    let sig = rt(3);
    let mut set = SignalSet::empty();
    set.add(Signal::from_named_raw(sig).unwrap_or_else(|| {
        // SAFETY: a real-time signal number in the kernel's range (SIGRTMIN..=SIGRTMAX).
        unsafe { rustix::process::Signal::from_raw_unchecked(sig) }
    }));
    signal::block(&set).unwrap();
    let sfd = Rc::new(SignalFd::new(&set).unwrap());
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let out = Rc::new(RefCell::new(Vec::new()));
    let (s, o) = (sfd.clone(), out.clone());
    ex.attach(task(), async move {
        let mut f = Box::pin(signal::next_signal(&s));
        core::future::poll_fn(|cx: &mut Context<'_>| {
            assert!(f.as_mut().poll(cx).is_pending());
            Poll::Ready(())
        })
        .await;
        keel_linux::fs::nop().await.unwrap(); // the read is in the kernel, waiting
        queue_rt(tid(), sig, 42);
        for _ in 0..1000 {
            if !pending(sig) {
                break; // the kernel's read dequeued it
            }
            keel_linux::fs::nop().await.unwrap();
        }
        o.borrow_mut().push(pending(sig));
        drop(f);
        for _ in 0..1000 {
            if pending(sig) {
                break;
            }
            keel_linux::fs::nop().await.unwrap(); // the driver lets the slot go (shared rule 2)
        }
        o.borrow_mut().push(pending(sig));
        let i = signal::next_signal(&s).await.unwrap();
        o.borrow_mut().push(i.signo == sig && i.int == 42 && i.code == libc::SI_QUEUE && i.pid as i32 == pid());
        0u64
    })
    .unwrap();
    run_all(ex);
    assert_eq!(*out.borrow(), [false, true, true]);
}
