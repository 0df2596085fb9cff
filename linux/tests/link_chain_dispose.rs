//! A result nobody took, given back while a task's link chain is open, must not join the
//! chain. Here a future's `open_direct` completes and is dropped untaken (its fixed-file
//! index is the driver's to close), and in the same pass a fiber submits a linked pair
//! whose second operation takes a slot: the driver's CLOSE of that index would otherwise
//! be pushed between the pair's two SQEs, taking the second operation's place in the
//! chain (so a failed first operation would cancel the CLOSE, leaking the index, and the
//! second would run unlinked).

#[path = "net_util/mod.rs"]
mod net_util;

use core::future::Future;
use core::pin::pin;
use core::task::Poll;
use core::time::Duration;
use io_uring::{opcode, types};
use keel_core::{Executor, Fiber, FiberAttrs, IoStatus, Priorities, Priority, TaskAttrs, TaskSlot, rt};
use keel_linux::fs::{Mode, OFlags};
use keel_linux::{MmapStacks, RingConfig, RingDriver, RingOp};
use std::cell::Cell;
use std::rc::Rc;

fn task(cpu: Priority, name: &'static str) -> keel_core::TaskHandle {
    let slot: &'static TaskSlot<1024> = Box::leak(Box::new(TaskSlot::new()));
    slot.create(TaskAttrs { priority: Priorities { cpu, io: Priority::Normal }, name }).unwrap()
}

#[test]
fn a_dropped_untaken_fixed_index_is_closed_outside_an_open_link_chain() {
    if net_util::ring_only("direct descriptors (a fixed-file table)") {
        return;
    }
    let ring = RingDriver::new(RingConfig { registered_files: 8, ..RingConfig::default() }).expect("io_uring");
    let ex = pin!(Executor::with_stacks(ring, MmapStacks::new().unwrap(), Default::default()).unwrap());
    let ex = ex.into_ref();
    let go = Rc::new(Cell::new(false));
    let go_a = go.clone();
    ex.attach(task(Priority::High, "dropper"), async move {
        let mut open = Box::pin(keel_linux::fs::open_direct("/dev/null", OFlags::RDONLY, Mode::empty()));
        // One poll submits it; the passes below reap its completion into its slot.
        core::future::poll_fn(|cx| {
            let _ = open.as_mut().poll(cx);
            Poll::Ready(())
        })
        .await;
        for _ in 0..3 {
            rt::yield_now().await?;
        }
        go_a.set(true);
        drop(open); // untaken: the driver closes the index it holds
        Ok::<(), keel_core::Cancelled>(())
    })
    .unwrap();
    let pair = ex
        .attach_fiber(task(Priority::Normal, "pair"), FiberAttrs::default(), move |f: &mut Fiber| {
            while !go.get() {
                f.yield_now()?;
            }
            // In the pass the dropper let go: a read of no descriptor (EBADF), linked to
            // an openat that takes a slot (its result is a fixed-file index).
            let path = c"/dev/null";
            let read = opcode::Read::new(types::Fd(-1), core::ptr::null_mut(), 0).build();
            let open = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr())
                .flags(libc::O_RDONLY)
                .file_index(Some(types::DestinationSlot::auto_target()))
                .build();
            let (s1, s2) = (pin!(IoStatus::new()), pin!(IoStatus::new()));
            // SAFETY: the read names no memory; `path` lives until both complete below.
            let ops = unsafe { (RingOp::from_entry(read).linked(), RingOp::from_entry(open)) };
            if f.initiate_pair::<RingDriver>((s1.as_ref(), ops.0), (s2.as_ref(), ops.1)).is_err() {
                return Ok(u64::MAX);
            }
            while s1.is_in_flight() || s2.is_in_flight() {
                f.wait_io();
            }
            let code = |s: &IoStatus| match s.result() {
                Some(Err(e)) => e.raw() as u64,
                _ => 0,
            };
            Ok::<u64, keel_core::TaskError>(code(&s1) << 32 | code(&s2))
        })
        .unwrap();
    for _ in 0..1000 {
        if ex.attached() == 0 {
            break;
        }
        ex.run(64, Some(Duration::from_secs(2))).unwrap();
    }
    let got = ex.result(pair).unwrap().unwrap().unwrap();
    assert_ne!(got, u64::MAX, "the pair was refused");
    assert_eq!(
        ((got >> 32) as i32, got as u32 as i32),
        (libc::EBADF, libc::ECANCELED),
        "the openat must be the read's linked successor (cancelled by its failure)"
    );
}
