//! Several receivers of one key (transfer rule 6): they are served oldest first, each
//! arrival goes to exactly one of them (fibers and futures), a receive that leaves with an
//! arrival handed to it passes it to the next waiter, a new receive does not take an
//! arrival handed to an older one, and a timed-out waiter leaves the next arrival to the
//! others. Pipes holding known bytes tell the arrivals apart; a sender on a fresh executor
//! of the same thread stands in for another ring.

#[path = "transfer_util/mod.rs"]
mod util;

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;
use keel_core::Fiber;
use keel_linux::transfer::{self, FiberTransfer, FixedFd, Mailbox, TransferError};
use std::cell::RefCell;
use std::rc::Rc;
use util::*;

type Got = Rc<RefCell<Vec<(usize, Vec<u8>)>>>;

/// The bytes of the pipe an arrival carries (`None`: this kernel cannot install).
fn fiber_bytes(f: &mut Fiber, fixed: FixedFd) -> Option<Vec<u8>> {
    match f.install_fd(&fixed, true) {
        Ok(fd) => {
            f.close_fd(fixed).unwrap();
            Some(read_all(fd))
        }
        Err(TransferError::Unsupported { .. }) => None,
        Err(e) => panic!("install: {e}"),
    }
}

async fn future_bytes(fixed: FixedFd) -> Option<Vec<u8>> {
    match transfer::install(&fixed, true).await {
        Ok(fd) => {
            transfer::close(fixed).await.unwrap();
            Some(read_all(fd))
        }
        Err(TransferError::Unsupported { .. }) => None,
        Err(e) => panic!("install: {e}"),
    }
}

fn receiver_ex() -> (Pin<Box<Ex>>, Mailbox) {
    let mut d = ring(cfg(8));
    let mb = d.mailbox().unwrap();
    (executor_with(d), mb)
}

/// Runs `ex` a little: every task gets to wait.
fn settle(ex: Pin<&Ex>) {
    for _ in 0..4 {
        let _ = ex.run(64, Some(Duration::from_millis(2)));
    }
}

#[test]
fn three_receivers_of_one_key_get_three_arrivals_oldest_first() {
    if ring_only("a fixed-file table (descriptor transfer)") {
        return;
    }
    for fiber in [true, false] {
        let before = open_fds();
        let (owned, mb) = receiver_ex();
        let ex = owned.as_ref();
        let got: Got = Rc::default();
        for who in 0..3 {
            let g = got.clone();
            if fiber {
                ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
                    let fixed = f.receive_fd(7, None).expect("receive");
                    if let Some(b) = fiber_bytes(f, fixed) {
                        g.borrow_mut().push((who, b));
                    }
                    1u64
                })
                .unwrap();
            } else {
                ex.attach(task(), async move {
                    let fixed = transfer::receive(7, None).await.expect("receive");
                    if let Some(b) = future_bytes(fixed).await {
                        g.borrow_mut().push((who, b));
                    }
                    1u64
                })
                .unwrap();
            }
            settle(ex); // queued in this order
        }
        for i in 0..3u8 {
            send_pipe(&mb, 7, &[b'a' + i]);
            settle(ex);
        }
        run_all(ex);
        let got = got.borrow().clone();
        if got.is_empty() {
            eprintln!("SKIP: no IORING_OP_FIXED_FD_INSTALL (6.8) here");
            return;
        }
        assert_eq!(got, [(0, b"a".to_vec()), (1, b"b".to_vec()), (2, b"c".to_vec())], "fiber {fiber}");
        assert_eq!(ex.with_driver(|d| d.arrivals_pending()).unwrap(), 0);
        drop((owned, mb));
        assert_eq!(open_fds(), before, "fiber {fiber}: descriptors at baseline");
    }
}

/// Arrivals sent in a burst, before any receiver runs again, still go one to each.
#[test]
fn a_burst_of_arrivals_reaches_each_waiting_receiver_once() {
    if ring_only("a fixed-file table (descriptor transfer)") {
        return;
    }
    let (ex, mb) = receiver_ex();
    let ex = ex.as_ref();
    let got: Got = Rc::default();
    for who in 0..4 {
        let g = got.clone();
        ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            let fixed = f.receive_fd(3, None).expect("receive");
            if let Some(b) = fiber_bytes(f, fixed) {
                g.borrow_mut().push((who, b));
            }
            1u64
        })
        .unwrap();
    }
    settle(ex);
    for i in 0..4u8 {
        send_pipe(&mb, 3, &[b'0' + i]);
    }
    run_all(ex);
    let mut got = got.borrow().clone();
    if got.is_empty() {
        eprintln!("SKIP: no IORING_OP_FIXED_FD_INSTALL (6.8) here");
        return;
    }
    got.sort();
    let bytes: Vec<_> = got.iter().map(|(_, b)| b.clone()).collect();
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [0, 1, 2, 3], "each receiver once");
    let mut sorted = bytes.clone();
    sorted.sort();
    assert_eq!(sorted, [b"0".to_vec(), b"1".to_vec(), b"2".to_vec(), b"3".to_vec()], "each arrival once");
}

/// A receive the arrival was handed to, dropped before it looked again, passes it to the
/// next waiter; meanwhile a new receive does not take it.
#[test]
fn a_handed_arrival_goes_on_when_its_receive_is_dropped_and_a_newcomer_cannot_take_it() {
    if ring_only("a fixed-file table (descriptor transfer)") {
        return;
    }
    let (ex, mb) = receiver_ex();
    let ex = ex.as_ref();
    let first = Rc::new(RefCell::new(None::<transfer::Receive>));
    let f1 = first.clone();
    // Task 1 queues a receive by polling it once, then keeps it unpolled.
    ex.attach(task(), async move {
        let mut r = transfer::receive(9, None);
        let p = core::future::poll_fn(|cx: &mut Context<'_>| Poll::Ready(Pin::new(&mut r).poll(cx).is_pending())).await;
        assert!(p, "nothing arrived yet: it waits");
        *f1.borrow_mut() = Some(r);
        1u64
    })
    .unwrap();
    settle(ex);
    let got: Got = Rc::default();
    let g = got.clone();
    ex.attach(task(), async move {
        let fixed = transfer::receive(9, None).await.expect("the second receiver");
        if let Some(b) = future_bytes(fixed).await {
            g.borrow_mut().push((2, b));
        }
        1u64
    })
    .unwrap();
    settle(ex);
    send_pipe(&mb, 9, b"handed");
    settle(ex); // reaped: handed to the first receive, whose task has ended
    assert!(got.borrow().is_empty(), "the second waiter was not served first");
    let newcomer = Rc::new(RefCell::new(None));
    let n = newcomer.clone();
    ex.attach(task(), async move {
        *n.borrow_mut() = Some(transfer::try_receive(9).await.map(|f| f.is_some()));
        1u64
    })
    .unwrap();
    settle(ex);
    assert_eq!(*newcomer.borrow(), Some(Ok(false)), "the arrival is the first receive's");
    drop(first.borrow_mut().take()); // leaves: the arrival goes to the second waiter
    run_all(ex);
    let got = got.borrow().clone();
    if !got.is_empty() {
        assert_eq!(got, [(2, b"handed".to_vec())]);
    }
    assert_eq!(ex.with_driver(|d| d.arrivals_pending()).unwrap(), 0);
}

/// Two receivers, the older with a short timeout: it times out, and the arrival that
/// comes later goes to the other.
#[test]
fn a_timed_out_receiver_leaves_the_next_arrival_to_the_others() {
    if ring_only("a fixed-file table (descriptor transfer)") {
        return;
    }
    let (ex, mb) = receiver_ex();
    let ex = ex.as_ref();
    let out = Rc::new(RefCell::new(Vec::new()));
    let o = out.clone();
    ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
        o.borrow_mut().push(("fiber", f.receive_fd(4, Some(Duration::from_millis(5))).err()));
        1u64
    })
    .unwrap();
    let o = out.clone();
    ex.attach(task(), async move {
        let r = transfer::receive(4, None).await;
        o.borrow_mut().push(("future", r.err()));
        1u64
    })
    .unwrap();
    for _ in 0..20 {
        let _ = ex.run(64, Some(Duration::from_millis(2)));
    }
    assert_eq!(*out.borrow(), [("fiber", Some(TransferError::TimedOut))]);
    send_pipe(&mb, 4, b"late");
    run_all(ex);
    assert_eq!(*out.borrow(), [("fiber", Some(TransferError::TimedOut)), ("future", None)]);
}

/// Two receivers; the older is cancelled while the arrival's CQE waits unreaped in the
/// ring, so the reap hands it to a receive whose task is cancelled: that receive takes it
/// or passes it on, and either way exactly one receiver gets it, with the descriptors of
/// the table at baseline after (fibers and futures).
#[test]
fn an_arrival_handed_to_a_cancelled_receiver_is_taken_by_it_or_passed_on_never_lost() {
    if ring_only("a fixed-file table (descriptor transfer)") {
        return;
    }
    for fiber in [true, false] {
        let before = open_fds();
        let (owned, mb) = receiver_ex();
        let ex = owned.as_ref();
        let out = Rc::new(RefCell::new(Vec::new()));
        let mut tasks = Vec::new();
        for who in 0..2 {
            let o = out.clone();
            let t = if fiber {
                ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
                    let r = f.receive_fd(11, None).map(drop); // dropped: its index closes on the ring
                    o.borrow_mut().push((who, r));
                    1u64
                })
                .unwrap()
            } else {
                ex.attach(task(), async move {
                    let r = transfer::receive(11, None).await.map(drop);
                    o.borrow_mut().push((who, r));
                    1u64
                })
                .unwrap()
            };
            tasks.push(t);
            settle(ex);
        }
        send_pipe(&mb, 11, b"once"); // its CQE waits in this ring until the next run
        let _ = ex.cancel(tasks[0]);
        settle(ex);
        let _ = ex.cancel(tasks[1]); // ends the other receiver if the first took it
        run_all(ex);
        let out = out.borrow().clone();
        let got: Vec<_> = out.iter().filter(|(_, r)| r.is_ok()).collect();
        assert_eq!(got.len(), 1, "fiber {fiber}: exactly one receiver got it: {out:?}");
        eprintln!("fiber {fiber}: receiver {} got it", got[0].0);
        for (who, r) in &out {
            assert!(r.is_ok() || *r == Err(TransferError::Cancelled), "fiber {fiber}: receiver {who}: {r:?}");
        }
        assert_eq!(ex.with_driver(|d| d.arrivals_pending()).unwrap(), 0, "fiber {fiber}: none left behind");
        drop((owned, mb));
        assert_eq!(open_fds(), before, "fiber {fiber}: descriptors at baseline");
    }
}
