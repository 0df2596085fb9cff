//! `Fiber::initiate_pair` is whole or nothing even when the task left a chain open
//! before it (its previous operation was `.linked()`) and the pair's second operation
//! carries a deadline (two SQEs) on a nearly full SQ: every linked operation keeps room
//! for its successor and the successor's timer, so the pair is refused whole instead of
//! its second half being refused after its first went in (which keel-core treats as its
//! own bug and panics on).

use core::pin::pin;
use core::time::Duration;
use keel_core::{Executor, Fiber, FiberAttrs, InitiateError, IoStatus, Priorities, Priority, TaskAttrs, TaskSlot};
use keel_linux::deadline::Deadline;
use keel_linux::{MmapStacks, RingConfig, RingDriver, RingOp};

#[test]
fn a_pair_after_an_open_chain_on_a_nearly_full_sq_is_refused_whole() {
    let ring = RingDriver::new(RingConfig { entries: 8, ..RingConfig::default() }).expect("io_uring");
    let ex = pin!(Executor::with_stacks(ring, MmapStacks::new().unwrap(), Default::default()).unwrap());
    let ex = ex.into_ref();
    // One pass first: the driver's own unpark read (an eventfd read on the epoll backend,
    // or where MSG_RING is missing) leaves the SQ, so the SQ is empty when the task starts.
    let _ = ex.run(1, Some(Duration::from_millis(1))); // TimedOut: nothing attached
    let slot: &'static TaskSlot = Box::leak(Box::new(TaskSlot::new()));
    let attrs = TaskAttrs { priority: Priorities { cpu: Priority::Normal, io: Priority::Normal }, name: "pair" };
    let t = ex
        .attach_fiber(slot.create(attrs).unwrap(), FiberAttrs::default(), |f: &mut Fiber| {
            // Five plain NOPs and one linked NOP in this pass: six of the SQ's eight
            // entries taken, the chain left open.
            let sts: [_; 8] = core::array::from_fn(|_| IoStatus::new());
            let sts = pin!(sts);
            // SAFETY: a projection to an element of the pinned array, itself never moved.
            let st = |i: usize| unsafe { sts.as_ref().map_unchecked(|a| &a[i]) };
            for i in 0..5 {
                f.initiate::<RingDriver>(st(i), RingOp::nop()).map_err(|_| keel_core::TaskError::Failed(1))?;
            }
            f.initiate::<RingDriver>(st(5), RingOp::nop().linked()).map_err(|_| keel_core::TaskError::Failed(2))?;
            // A pair whose second carries a deadline: three SQEs, two free.
            let second = RingOp::nop().with_deadline(Deadline::after(Duration::from_secs(5))).unwrap();
            let outcome = match f.initiate_pair::<RingDriver>((st(6), RingOp::nop().linked()), (st(7), second)) {
                Ok(()) => 0,
                Err(refused) if matches!(refused.reason, InitiateError::Refused((), keel_core::Errno::EBUSY)) => 1,
                Err(_) => 2,
            };
            while (0..8).any(|i| st(i).is_in_flight()) {
                f.wait_io();
            }
            Ok::<u64, keel_core::TaskError>(outcome)
        })
        .unwrap();
    while ex.attached() > 0 {
        ex.run(64, Some(Duration::from_secs(5))).unwrap();
    }
    assert_eq!(ex.result(t), Ok(Some(Ok(1))), "the pair is refused whole (EBUSY), with nothing of it submitted");
}
