//! Descriptor transfer on one thread (transfer rules 1-7): register and install round
//! trips, the handle's drop and abandoned operations giving back what they hold, cancels
//! and timeouts of a waiting receive, a cancel at every point of a send. Fibers and
//! futures; two executors on one thread stand in for two rings. The caller mistakes are in
//! `transfer_misuse.rs`.

#[path = "transfer_util/mod.rs"]
mod util;

use core::future::Future;
use core::pin::{Pin, pin};
use core::task::Poll;
use keel_core::Fiber;
use keel_linux::fs::{self, FiberFs};
use keel_linux::transfer::{self, FiberTransfer, FixedFd, TransferError};
use std::cell::RefCell;
use std::os::fd::AsFd;
use std::rc::Rc;
use util::*;

#[test]
fn fiber_register_then_install_gives_the_same_open_file_and_the_index_outlives_the_original() {
    if ring_only("a fixed-file table (descriptor transfer)") {
        return;
    }
    let before = open_fds();
    let ex = executor(cfg(2));
    let r = pipe_with(b"through the table");
    fiber_on(ex.as_ref(), move |f| {
        let fixed = f.register_fd(r.as_fd()).expect("register");
        drop(r); // transfer rule 1: the index holds the file
        let a = f.install_fd(&fixed, true).expect("install");
        let b = f.install_fd(&fixed, false).expect("install without close-on-exec");
        assert!(cloexec(&a) && !cloexec(&b), "close-on-exec as asked");
        drop(b);
        f.close_fd(fixed).expect("close");
        assert_eq!(read_all(a), b"through the table", "the installed descriptor reads the pipe");
        // A file by index: the direct file operations take it.
        let path = std::env::temp_dir().join(format!("keel-transfer-{}", std::process::id()));
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        let fixed = f.register_fd(file.as_fd()).expect("register a file");
        drop(file);
        let direct = fixed.into_file();
        assert_eq!(f.write_direct(&direct, b"indexed", 0), Ok(7));
        let mut back = [0u8; 7];
        assert_eq!(f.read_direct(&direct, &mut back, 0), Ok(7));
        assert_eq!(&back, b"indexed");
        f.close_direct(direct).unwrap();
        std::fs::remove_file(path).unwrap();
    });
    drop(ex);
    assert_eq!(open_fds(), before, "descriptors at baseline");
}

#[test]
fn future_register_then_install_gives_the_same_open_file_and_the_index_outlives_the_original() {
    if ring_only("a fixed-file table (descriptor transfer)") {
        return;
    }
    let before = open_fds();
    let ex = executor(cfg(2));
    let r = pipe_with(b"through the table");
    future_on(ex.as_ref(), async move {
        let fixed = transfer::register(r.as_fd()).await.expect("register");
        drop(r);
        let a = transfer::install(&fixed, true).await.expect("install");
        let b = transfer::install(&fixed, false).await.expect("install without close-on-exec");
        assert!(cloexec(&a) && !cloexec(&b), "close-on-exec as asked");
        drop(b);
        transfer::close(fixed).await.expect("close");
        assert_eq!(read_all(a), b"through the table");
    });
    drop(ex);
    assert_eq!(open_fds(), before, "descriptors at baseline");
}

/// Transfer rule 6 and completion rule 3: a dropped handle's index, an abandoned
/// registration's index and an abandoned install's descriptor are all given back.
#[test]
fn dropped_handles_and_abandoned_register_or_install_give_their_index_and_descriptor_back() {
    if ring_only("a fixed-file table (descriptor transfer)") {
        return;
    }
    let before = open_fds();
    let ex = executor(cfg(1));
    let null = std::fs::File::open("/dev/null").unwrap();
    let base = open_fds();
    future_on(ex.as_ref(), async move {
        for _ in 0..3 {
            drop(transfer::register(null.as_fd()).await.expect("the only index is free again"));
        }
        // Polled once (its SQE queued), then dropped: abandoned.
        {
            let mut reg = pin!(transfer::register(null.as_fd()));
            core::future::poll_fn(|cx| {
                assert!(reg.as_mut().poll(cx).is_pending(), "submitted, not yet run");
                Poll::Ready(())
            })
            .await;
        }
        for _ in 0..4 {
            let _ = fs::nop().await; // enters: the registration runs, its index is closed
        }
        let fixed = transfer::register(null.as_fd()).await.expect("the abandoned registration's index is free");
        {
            let mut inst = pin!(transfer::install(&fixed, true));
            core::future::poll_fn(|cx| {
                assert!(inst.as_mut().poll(cx).is_pending());
                Poll::Ready(())
            })
            .await;
        }
        for _ in 0..4 {
            let _ = fs::nop().await;
        }
        assert_eq!(open_fds(), base, "the abandoned install's descriptor was closed");
        drop(fixed);
    });
    drop(ex);
    assert_eq!(open_fds(), before);
}

/// Transfer rule 6: a receive cancelled while it waits returns `Cancelled`, and the key is
/// free for the next receiver, which gets the arrival.
#[test]
fn fiber_receive_cancelled_while_waiting_leaves_and_the_arrival_goes_to_the_next_receive() {
    if ring_only("a fixed-file table (descriptor transfer)") {
        return;
    }
    let mut d = ring(cfg(2));
    let mb = d.mailbox().unwrap();
    let b = executor_with(d);
    let b = b.as_ref();
    let out = Rc::new(RefCell::new(None));
    let o = out.clone();
    let waiter = b
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            *o.borrow_mut() = Some(f.receive_fd(9, None).err());
            1u64
        })
        .unwrap();
    let _ = b.run(64, Some(core::time::Duration::from_millis(10)));
    b.cancel(waiter).unwrap();
    run_all(b);
    assert_eq!(*out.borrow(), Some(Some(TransferError::Cancelled)));
    send_pipe(&mb, 9, b"second receiver");
    fiber_on(b, |f| {
        let fixed = f.receive_fd(9, None).expect("the key is free and the arrival waits");
        assert_eq!(read_all(f.install_fd(&fixed, true).unwrap()), b"second receiver");
    });
    assert_eq!(b.with_driver(|d| d.arrivals_pending()).unwrap(), 0);
}

/// As above for a future: dropped while it waits (rule 6), or its task cancelled.
#[test]
fn future_receive_dropped_or_cancelled_while_waiting_leaves_the_key_free() {
    if ring_only("a fixed-file table (descriptor transfer)") {
        return;
    }
    let mut d = ring(cfg(2));
    let mb = d.mailbox().unwrap();
    let b = executor_with(d);
    let b = b.as_ref();
    future_on(b, async {
        let mut r = pin!(transfer::receive(4, None));
        core::future::poll_fn(|cx| {
            assert!(r.as_mut().poll(cx).is_pending());
            Poll::Ready(())
        })
        .await;
    });
    let out = Rc::new(RefCell::new(None));
    let o = out.clone();
    let t =
        b.attach(task(), async move { *o.borrow_mut() = Some(transfer::receive(4, None).await.err()) }).ok().unwrap();
    let _ = b.run(64, Some(core::time::Duration::from_millis(10)));
    b.cancel(t).unwrap();
    run_all(b);
    assert_eq!(*out.borrow(), Some(Some(TransferError::Cancelled)), "not KeyBusy: the dropped wait left");
    send_pipe(&mb, 4, b"kept");
    future_on(b, async {
        let fixed = transfer::receive(4, None).await.expect("arrival");
        assert_eq!(read_all(transfer::install(&fixed, true).await.unwrap()), b"kept");
    });
}

/// Transfer rule 4 under a cancel at every point of a future send (before the checks,
/// during the quiesce, with the message submitted, completed but not reaped, during the
/// close): the file is either delivered (and the sender's index closed) or handed back,
/// never both, never neither; both tables end at baseline.
#[test]
fn future_send_cancelled_at_every_point_is_delivered_xor_handed_back() {
    if ring_only("a fixed-file table (descriptor transfer)") {
        return;
    }
    let null = std::fs::File::open("/dev/null").unwrap();
    for k in 0..24 {
        let one = executor(cfg(2));
        let mut d = ring(cfg(2));
        let mb = d.mailbox().unwrap();
        let two = executor_with(d);
        let outcome: Rc<RefCell<Option<(bool, bool)>>> = Rc::default();
        let (o, n) = (outcome.clone(), null.try_clone().unwrap());
        let t = one
            .as_ref()
            .attach(task(), async move {
                let fixed = transfer::register(n.as_fd()).await.expect("register");
                let r = transfer::send(fixed, &mb, 1).await;
                *o.borrow_mut() = Some(match r {
                    Ok(()) => (true, false),
                    Err(e) => (false, e.fixed.is_some()),
                });
            })
            .ok()
            .unwrap();
        for _ in 0..k {
            let _ = one.as_ref().run(1, Some(core::time::Duration::ZERO));
        }
        let _ = one.as_ref().cancel(t);
        run_all(one.as_ref());
        // A no-op in flight makes the run loop reap what sits in the CQ (the arrival).
        future_on(two.as_ref(), async {
            let _ = fs::nop().await;
        });
        let arrived = two.as_ref().with_driver(|d| d.arrivals_pending()).unwrap();
        match *outcome.borrow() {
            None => assert_eq!(arrived, 0, "step {k}: cancelled before registering, nothing sent"),
            Some((delivered, back)) => {
                assert!(delivered != back, "step {k}: delivered {delivered}, handed back {back}");
                assert_eq!(arrived, delivered as usize, "step {k}: the target holds it exactly when delivered");
            }
        }
        let n = null.try_clone().unwrap();
        fiber_on(one.as_ref(), move |f| {
            let a = f.register_fd(n.as_fd()).expect("index 0 free again");
            let b = f.register_fd(n.as_fd()).expect("index 1 free again");
            drop((a, b));
        });
        fiber_on(two.as_ref(), move |f| {
            if arrived == 1 {
                let fixed = f.try_receive_fd(1).unwrap().expect("the arrival");
                f.close_fd(fixed).unwrap();
            }
        });
    }
}

/// Shared rule 4 for transfer values: a handle and a waiting receive that outlive their
/// executor drop without touching it (the table went with the ring).
#[test]
fn a_fixed_fd_and_a_waiting_receive_outliving_their_executor_drop_quietly() {
    if ring_only("a fixed-file table (descriptor transfer)") {
        return;
    }
    let kept: Rc<RefCell<Option<FixedFd>>> = Rc::default();
    let wait: Rc<RefCell<Option<Pin<Box<transfer::Receive>>>>> = Rc::default();
    let ex = executor(cfg(2));
    let (k, w, null) = (kept.clone(), wait.clone(), std::fs::File::open("/dev/null").unwrap());
    future_on(ex.as_ref(), async move {
        *k.borrow_mut() = Some(transfer::register(null.as_fd()).await.unwrap());
        let mut r = Box::pin(transfer::receive(2, None));
        core::future::poll_fn(|cx| {
            assert!(r.as_mut().poll(cx).is_pending());
            Poll::Ready(())
        })
        .await;
        *w.borrow_mut() = Some(r); // moved out of the task, still waiting
    });
    drop(ex);
    drop(wait.take());
    drop(kept.take());
}

/// Transfer rule 6's timeout: nothing arrived: `TimedOut` (zero only looks), the key is
/// free again and the timer is not left in flight; an arrival before the timeout wins.
#[test]
fn fiber_receive_with_a_timeout_times_out_leaves_the_key_free_and_an_arrival_wins() {
    if ring_only("a fixed-file table (descriptor transfer)") {
        return;
    }
    use core::time::Duration;
    let mut d = ring(cfg(2));
    let mb = d.mailbox().unwrap();
    let b = executor_with(d);
    fiber_on(b.as_ref(), |f| {
        assert_eq!(f.receive_fd(6, Some(Duration::ZERO)).err(), Some(TransferError::TimedOut));
        assert_eq!(f.receive_fd(6, Some(Duration::from_millis(5))).err(), Some(TransferError::TimedOut));
        assert_eq!(f.receive_fd(6, Some(Duration::from_millis(1))).err(), Some(TransferError::TimedOut), "not KeyBusy");
    });
    assert_eq!(b.as_ref().with_driver(|d| keel_core::Driver::in_flight(&**d)).unwrap(), 0, "no timer or waiter left");
    send_pipe(&mb, 6, b"in time");
    fiber_on(b.as_ref(), |f| {
        let fixed = f.receive_fd(6, Some(Duration::from_secs(10))).expect("arrived before the timeout");
        assert_eq!(read_all(f.install_fd(&fixed, true).unwrap()), b"in time");
    });
    assert_eq!(b.as_ref().with_driver(|d| keel_core::Driver::in_flight(&**d)).unwrap(), 0, "the timer was cancelled");
}

#[test]
fn future_receive_with_a_timeout_times_out_leaves_the_key_free_and_an_arrival_wins() {
    if ring_only("a fixed-file table (descriptor transfer)") {
        return;
    }
    use core::time::Duration;
    let mut d = ring(cfg(2));
    let mb = d.mailbox().unwrap();
    let b = executor_with(d);
    future_on(b.as_ref(), async {
        assert_eq!(transfer::receive(6, Some(Duration::ZERO)).await.err(), Some(TransferError::TimedOut));
        assert_eq!(transfer::receive(6, Some(Duration::from_millis(5))).await.err(), Some(TransferError::TimedOut));
    });
    send_pipe(&mb, 6, b"in time");
    future_on(b.as_ref(), async {
        let fixed = transfer::receive(6, Some(Duration::from_secs(10))).await.expect("arrived before the timeout");
        assert_eq!(read_all(transfer::install(&fixed, true).await.unwrap()), b"in time");
    });
    for _ in 0..3 {
        let _ = b.as_ref().run(16, Some(Duration::from_millis(1))); // the abandoned timer's cancel completes
    }
    assert_eq!(b.as_ref().with_driver(|d| keel_core::Driver::in_flight(&**d)).unwrap(), 0, "no timer or waiter left");
}

/// Transfer rule 7: a mailbox outliving its executor keeps the kernel's ring, not the
/// files in its table: they are closed when the driver goes (a pipe's writer held there
/// is seen closed at once).
#[test]
fn a_mailbox_outliving_its_executor_does_not_keep_the_files_of_its_table_open() {
    if ring_only("a fixed-file table (descriptor transfer)") {
        return;
    }
    let mut d = ring(cfg(2));
    let mb = d.mailbox().unwrap();
    let ex = executor_with(d);
    let (r, w) = std::io::pipe().unwrap();
    fiber_on(ex.as_ref(), move |f| {
        let _kept = f.register_fd(w.as_fd()).unwrap().into_socket(); // stays in the table
    });
    let flags = rustix::fs::fcntl_getfl(&r).unwrap();
    rustix::fs::fcntl_setfl(&r, flags | rustix::fs::OFlags::NONBLOCK).unwrap();
    let mut b = [0u8; 1];
    assert!(std::io::Read::read(&mut &r, &mut b).is_err(), "the writer is open while the table holds it");
    drop(ex);
    assert!(!mb.is_alive());
    assert_eq!(std::io::Read::read(&mut &r, &mut b).unwrap(), 0, "end of file: the table's writer was closed");
    drop(mb);
}

/// The futures' `try_receive` and `adopt_index`, twins of the fiber calls: nothing has
/// arrived for a key, and an index the task owns becomes a handle that installs and
/// closes like any other.
#[test]
fn future_try_receive_finds_nothing_and_adopt_index_takes_an_owned_index() {
    if ring_only("a fixed-file table (descriptor transfer)") {
        return;
    }
    let before = open_fds();
    let ex = executor(cfg(2));
    let r = pipe_with(b"adopted");
    future_on(ex.as_ref(), async move {
        assert!(matches!(transfer::try_receive(7).await, Ok(None)), "nothing was sent with key 7");
        let fixed = transfer::register(r.as_fd()).await.expect("register");
        drop(r);
        // Give the index up as an integer (a `FixedFile` does not close on drop), as the
        // C API keeps it, then take it back.
        let index = fixed.into_file().index();
        // SAFETY: this task owns the index: it was given up just above, and nothing else
        // holds it.
        let back = unsafe { transfer::adopt_index(index) }.await.expect("adopt");
        let fd = transfer::install(&back, true).await.expect("install");
        transfer::close(back).await.expect("close");
        assert_eq!(read_all(fd), b"adopted");
    });
    drop(ex);
    assert_eq!(open_fds(), before, "descriptors at baseline");
}
