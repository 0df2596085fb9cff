//! liburing's `io_uring_setup.c` and `cq-size.c` through keel's driver: ring sizes the
//! kernel refuses or rounds (`IORING_MAX_ENTRIES` 32768 SQEs, `IORING_MAX_CQ_ENTRIES`
//! 65536 CQEs, sizes that are not powers of two). Each bad size is a typed error
//! (`InvalidInput`), the same on io_uring and on the epoll engine (config rule in
//! `ring/config.rs`: a caller's mistake gets the same error on either backend), never a
//! panic or an abort; each accepted size gives a driver that runs operations.

#[path = "net_util/mod.rs"]
mod util;

use keel_linux::{BackendChoice, RingConfig, RingDriver};

fn backends() -> Vec<BackendChoice> {
    if util::on_epoll() { vec![BackendChoice::Epoll] } else { vec![BackendChoice::Auto, BackendChoice::Epoll] }
}

fn try_new(entries: u32, cq_entries: u32, backend: BackendChoice) -> std::io::Result<RingDriver> {
    RingDriver::new(RingConfig { entries, cq_entries, backend, ..RingConfig::default() })
}

#[test]
fn sizes_past_the_kernels_maximum_are_invalid_input_on_either_backend() {
    for backend in backends() {
        for (entries, cq) in [(32768 * 2, 0), (u32::MAX, 0), (1 << 31, 0), (64, 65536 * 2), (64, u32::MAX)] {
            match try_new(entries, cq, backend) {
                Ok(d) => panic!("{backend:?} entries {entries} cq {cq}: accepted on {:?}", d.backend()),
                Err(e) => {
                    assert_eq!(
                        e.kind(),
                        std::io::ErrorKind::InvalidInput,
                        "{backend:?} entries {entries} cq {cq}: {e}"
                    );
                    assert!(e.to_string().contains("at most 32768"), "{backend:?} entries {entries} cq {cq}: {e}");
                }
            }
        }
    }
}

#[test]
fn sizes_up_to_the_maximum_are_rounded_to_a_power_of_two_as_the_kernel_does() {
    for backend in backends() {
        for entries in [1, 3, 5, 100, 32767, 32768] {
            let d = try_new(entries, 0, backend).unwrap_or_else(|e| panic!("{backend:?} entries {entries}: {e}"));
            assert_eq!(
                d.sq_entries(),
                entries.next_power_of_two(),
                "{backend:?} entries {entries} on {:?}",
                d.backend()
            );
        }
        let d = try_new(64, 65536, backend).unwrap_or_else(|e| panic!("{backend:?} cq 65536: {e}"));
        assert_eq!(d.sq_entries(), 64, "{backend:?}");
    }
}

/// liburing's `nop-all-sizes.c` and `cq-overflow.c`: batches of every size from 1 to
/// three times the SQ's, each operation a task of its own (fibers and futures in turn),
/// on rings whose CQ is as small as their SQ, so every batch past it overflows the CQ:
/// every nop completes with 0, once, and the run ends.
#[test]
fn nop_batches_of_every_size_complete_through_small_rings() {
    use keel_core::Fiber;
    use keel_linux::fs::{self, FiberFs};
    use std::cell::RefCell;
    use std::rc::Rc;
    for entries in [1u32, 2, 3, 5, 8, 16] {
        for batch in 1..=3 * entries as usize + 1 {
            let ex = util::executor(RingConfig { entries, cq_entries: entries, ..RingConfig::default() });
            let ex = ex.as_ref();
            let done: Rc<RefCell<Vec<Result<u32, keel_core::Errno>>>> = Rc::default();
            for k in 0..batch {
                let d = done.clone();
                if k % 2 == 0 {
                    ex.attach_fiber(util::task(), util::fattrs(), move |f: &mut Fiber| {
                        let r = f.nop();
                        d.borrow_mut().push(r);
                        0u64
                    })
                    .unwrap();
                } else {
                    ex.attach(util::task(), async move {
                        let r = fs::nop().await;
                        d.borrow_mut().push(r);
                        0u64
                    })
                    .unwrap();
                }
            }
            util::run_all(ex);
            assert_eq!(*done.borrow(), vec![Ok(0); batch], "entries {entries} batch {batch}");
        }
    }
}
