//! Descriptor transfer: every caller mistake with its typed error (MISUSE.md rows), and
//! the handle handed back where the rules say so. Two executors on one thread stand in
//! for two rings.

#[path = "transfer_util/mod.rs"]
mod util;

use keel_core::Fiber;
use keel_linux::net::FixedSocket;
use keel_linux::transfer::{self, FiberTransfer, FixedFd, TransferError};
use keel_linux::{BackendChoice, RingConfig, RingDriver};
use std::cell::RefCell;
use std::os::fd::AsFd;
use std::rc::Rc;
use util::*;

#[test]
fn misuse_no_table_full_table_and_bad_slot_are_typed() {
    let null = std::fs::File::open("/dev/null").unwrap();
    let n = null.try_clone().unwrap();
    fiber_on(executor(cfg(0)).as_ref(), move |f| {
        assert_eq!(f.register_fd(n.as_fd()).err(), Some(TransferError::NoTable));
    });
    if ring_only("a fixed-file table (descriptor transfer)") {
        return;
    }
    fiber_on(executor(cfg(2)).as_ref(), move |f| {
        let a = f.register_fd(null.as_fd()).unwrap();
        let b = f.register_fd(null.as_fd()).unwrap();
        assert_eq!(f.register_fd(null.as_fd()).err(), Some(TransferError::TableFull));
        f.close_fd(b).unwrap();
        let empty = f.adopt_socket(FixedSocket::from_index_for_tests(a.index() ^ 1)).unwrap();
        assert_eq!(f.install_fd(&empty, true).err(), Some(TransferError::BadSlot));
        assert_eq!(f.close_fd(empty), Err(TransferError::BadSlot));
        drop(a);
    });
}

/// A ring without a fixed-file table is `NoTable` for register on either backend (the
/// epoll engine never has one), from the fiber call and the future.
#[test]
fn register_without_a_table_is_no_table_on_both_backends() {
    for backend in [BackendChoice::Auto, BackendChoice::Epoll] {
        let ex = executor_with(RingDriver::new(RingConfig { backend, ..cfg(0) }).unwrap());
        let null = std::fs::File::open("/dev/null").unwrap();
        let n = null.try_clone().unwrap();
        fiber_on(ex.as_ref(), move |f| {
            assert_eq!(f.register_fd(n.as_fd()).err(), Some(TransferError::NoTable), "{backend:?}");
        });
        future_on(ex.as_ref(), async move {
            assert_eq!(transfer::register(null.as_fd()).await.err(), Some(TransferError::NoTable), "{backend:?}");
        });
    }
}

#[test]
fn misuse_wrong_executor_same_executor_and_gone_target_are_typed_and_hand_the_handle_back() {
    if ring_only("a fixed-file table (descriptor transfer)") {
        return;
    }
    let one = executor(cfg(2));
    let mut d = ring(cfg(2));
    let two_mb = d.mailbox().unwrap();
    let two = executor_with(d);
    let kept: Rc<RefCell<Option<FixedFd>>> = Rc::default();
    let (k, null) = (kept.clone(), std::fs::File::open("/dev/null").unwrap());
    let n = null.try_clone().unwrap();
    fiber_on(one.as_ref(), move |f| {
        let own = f.mailbox().unwrap();
        let fixed = f.register_fd(n.as_fd()).unwrap();
        let e = f.send_fd(fixed, &own, 1).unwrap_err();
        assert_eq!(e.error, TransferError::SameExecutor);
        *k.borrow_mut() = e.fixed;
    });
    let (k, mb) = (kept.clone(), two_mb.clone());
    fiber_on(two.as_ref(), move |f| {
        let fixed = k.borrow_mut().take().expect("handed back");
        assert_eq!(f.install_fd(&fixed, true).err(), Some(TransferError::WrongExecutor));
        let e = f.send_fd(fixed, &mb, 1).unwrap_err();
        assert_eq!(e.error, TransferError::WrongExecutor);
        // Closed on its own ring when it drops here (rule 6).
        assert_eq!(f.close_fd(e.fixed.expect("handed back")), Err(TransferError::WrongExecutor));
    });
    let busy = Rc::new(RefCell::new(Vec::new()));
    for _ in 0..2 {
        let b = busy.clone();
        two.as_ref()
            .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
                let r = f.receive_fd(5, None).err();
                b.borrow_mut().push(r);
                1u64
            })
            .unwrap();
    }
    let _ = two.as_ref().run(64, Some(core::time::Duration::from_millis(10)));
    assert!(busy.borrow().is_empty(), "both receivers of key 5 wait (transfer rule 6)");
    drop(two); // cancels both receivers
    assert_eq!(*busy.borrow(), vec![Some(TransferError::Cancelled); 2]);
    assert!(!two_mb.is_alive());
    fiber_on(one.as_ref(), move |f| {
        // Both indices are free: the one dropped on the other executor was closed here.
        let a = f.register_fd(null.as_fd()).unwrap();
        let b = f.register_fd(null.as_fd()).unwrap();
        drop(a);
        let e = f.send_fd(b, &two_mb, 1).unwrap_err();
        assert_eq!(e.error, TransferError::TargetGone);
        f.close_fd(e.fixed.expect("handed back")).unwrap();
    });
}

#[test]
fn misuse_target_table_full_no_table_for_a_mailbox_and_unsupported_kernels_are_typed() {
    if ring_only("a fixed-file table (descriptor transfer)") {
        return;
    }
    let null = std::fs::File::open("/dev/null").unwrap();
    let mut full = ring(cfg(1));
    let full_mb = full.mailbox().unwrap();
    let full = executor_with(full);
    let n = null.try_clone().unwrap();
    // The only index stays taken (a FixedSocket is closed explicitly, never on drop).
    fiber_on(full.as_ref(), move |f| {
        let _kept: FixedSocket = f.register_fd(n.as_fd()).unwrap().into_socket();
    });
    let mut none = ring(cfg(0));
    let e = none.mailbox().unwrap_err();
    assert!(e.to_string().contains("registered_files"), "{e}");
    fiber_on(executor_with(none).as_ref(), |f| assert_eq!(f.mailbox().err(), Some(TransferError::NoTable)));
    let one = executor(cfg(2));
    let (m, mb) = (null.try_clone().unwrap(), full_mb.clone());
    fiber_on(one.as_ref(), move |f| {
        let fixed = f.register_fd(m.as_fd()).unwrap();
        let e = f.send_fd(fixed, &mb, 1).unwrap_err();
        assert_eq!(e.error, TransferError::TargetTableFull);
        f.close_fd(e.fixed.unwrap()).unwrap();
    });
    let mut d = ring(cfg(2));
    d.pretend_transfer_unsupported();
    let old = executor_with(d);
    fiber_on(old.as_ref(), move |f| {
        let fixed = f.register_fd(null.as_fd()).unwrap();
        assert!(matches!(f.install_fd(&fixed, true), Err(TransferError::Unsupported { .. })));
        let e = f.send_fd(fixed, &full_mb, 1).unwrap_err();
        assert!(matches!(e.error, TransferError::Unsupported { .. }));
        assert!(e.error.to_string().contains("needs Linux"), "{}", e.error);
        f.close_fd(e.fixed.unwrap()).unwrap();
    });
}

#[test]
fn future_misuse_wrong_executor_and_cancelled_send_hand_the_handle_back() {
    if ring_only("a fixed-file table (descriptor transfer)") {
        return;
    }
    let one = executor(cfg(2));
    let mut d = ring(cfg(2));
    let two_mb = d.mailbox().unwrap();
    let two = executor_with(d);
    let kept: Rc<RefCell<Option<FixedFd>>> = Rc::default();
    let (k, null) = (kept.clone(), std::fs::File::open("/dev/null").unwrap());
    future_on(one.as_ref(), async move {
        *k.borrow_mut() = Some(transfer::register(null.as_fd()).await.unwrap());
    });
    let (k, mb) = (kept.clone(), two_mb.clone());
    future_on(two.as_ref(), async move {
        let fixed = k.borrow_mut().take().unwrap();
        assert_eq!(transfer::install(&fixed, true).await.err(), Some(TransferError::WrongExecutor));
        let e = transfer::send(fixed, &mb, 1).await.unwrap_err();
        assert_eq!(e.error, TransferError::WrongExecutor);
        *k.borrow_mut() = e.fixed;
    });
    // A send whose task is cancelled before its message starts: handed back.
    let (k, out) = (kept.clone(), Rc::new(RefCell::new(None)));
    let o = out.clone();
    let t = one
        .as_ref()
        .attach(task(), async move {
            let fixed = k.borrow_mut().take().unwrap();
            let _ = keel_core::rt::yield_now().await;
            let e = transfer::send(fixed, &two_mb, 1).await.unwrap_err();
            *o.borrow_mut() = Some(e.error);
            drop(e.fixed.expect("handed back"));
        })
        .ok()
        .unwrap();
    let _ = one.as_ref().run(1, None); // it took the handle and yielded
    one.as_ref().cancel(t).unwrap();
    run_all(one.as_ref());
    assert_eq!(*out.borrow(), Some(TransferError::Cancelled));
    assert_eq!(two.as_ref().with_driver(|d| d.arrivals_pending()).unwrap(), 0, "nothing was delivered");
}
