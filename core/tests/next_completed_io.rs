//! Waiting for one completed status block with a timeout (`Fiber::next_completed_io`,
//! `io_status::next_completed_io`): the completed block named, the timeout, idle, cancel,
//! and the timer left behind (none for a fiber; a shared one for futures).

mod common;
use common::*;
use core::pin::pin;
use core::time::Duration;
use keel_core::io_status::next_completed_io;
use keel_core::sim::{SimDriver, SimOp};
use keel_core::{
    CancelOutcome, Config, Errno, Executor, Fiber, FiberAttrs, IoStatus, NextIo, Priority, RegionStacks, TaskError,
    initiate, rt,
};

const STACK: usize = 32 * 1024;
const ATTRS: FiberAttrs = FiberAttrs { stack_size: STACK, ..FiberAttrs::DEFAULT };

fn region(stacks: usize) -> RegionStacks {
    let mem: &'static mut [u8] = Vec::leak(vec![0u8; stacks * (STACK + 4096) + 64]);
    RegionStacks::new(mem, STACK, 4096).unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn op(label: u32, after: u64, result: Result<u32, Errno>) -> SimOp {
    SimOp::new(label).after(ms(after)).with_result(result)
}

/// A fiber: each call names the block that completed (oldest completion first) with its
/// result; a timeout that passes first says `TimedOut` at the deadline, leaving the
/// operation in flight; with nothing in flight, `Idle` at once; a zero timeout only looks.
#[test]
fn a_fiber_gets_each_completed_block_by_name_or_a_timeout() {
    let ex = pin!(Executor::with_stacks(SimDriver::new(), region(2), Config::default()).unwrap());
    let ex = ex.into_ref();
    let log = Log::default();
    let l = log.clone();
    let t = ex
        .attach_fiber(task(Priority::Normal, "fiber"), ATTRS, move |f: &mut Fiber| {
            let (a, b) = (pin!(IoStatus::new()), pin!(IoStatus::new()));
            f.initiate::<SimDriver>(a.as_ref(), op(1, 30, Ok(4096))).unwrap();
            f.initiate::<SimDriver>(b.as_ref(), op(2, 10, Err(Errno::EIO))).unwrap();
            let name = |n: NextIo| match n {
                NextIo::Completed(c) if c.is(&a) => format!("a {:?}", c.result),
                NextIo::Completed(c) if c.is(&b) => format!("b {:?}", c.result),
                other => format!("{other:?}"),
            };
            l.push(format!("{} @{}", name(f.next_completed_io(Some(Duration::ZERO))?), f.now().as_nanos() / 1_000_000));
            l.push(format!("{} @{}", name(f.next_completed_io(Some(ms(25)))?), f.now().as_nanos() / 1_000_000));
            l.push(format!("{} @{}", name(f.next_completed_io(Some(ms(5)))?), f.now().as_nanos() / 1_000_000));
            l.push(format!("{} @{}", name(f.next_completed_io(None)?), f.now().as_nanos() / 1_000_000));
            l.push(format!("{} @{}", name(f.next_completed_io(Some(ms(100)))?), f.now().as_nanos() / 1_000_000));
            assert_eq!(a.result(), Some(Ok(4096)));
            // No timer of the waits is left: a plain wait now ends only by a wake.
            f.sleep(ms(50))?;
            Ok(f.now().as_nanos() / 1_000_000)
        })
        .unwrap();
    run_all!(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(80))));
    assert_eq!(log.take(), ["TimedOut @0", "b Err(Errno(5)) @10", "TimedOut @15", "a Ok(4096) @30", "Idle @30"]);
    // Every timer the waits armed was fired or disarmed: only the final sleep's fired.
    assert_eq!(ex.stats().timers_fired, 2, "a wait left its timer armed, or a timeout did not fire");
}

/// A fiber cancelled while it waits with a timeout returns `Cancelled` at once, its
/// operation cancelled; no timer is left to wake anything later.
#[test]
fn a_fiber_waiting_with_a_timeout_is_cancelled() {
    let ex = pin!(Executor::with_stacks(SimDriver::new(), region(2), Config::default()).unwrap());
    let ex = ex.into_ref();
    let t = ex
        .attach_fiber(task(Priority::Normal, "cancelled"), ATTRS, |f: &mut Fiber| -> keel_core::TaskResult {
            let a = pin!(IoStatus::new());
            f.initiate::<SimDriver>(a.as_ref(), op(1, 1_000, Ok(1))).unwrap();
            match f.next_completed_io(Some(ms(500))) {
                Err(_) => Err(TaskError::Failed(-125)),
                Ok(other) => panic!("the wait ended with {other:?}, not Cancelled"),
            }
        })
        .unwrap();
    ex.run(1, None).unwrap();
    assert_eq!(ex.cancel(t), Ok(CancelOutcome::CancellingIo));
    run_all!(ex);
    assert_eq!(ex.result(t), Ok(Some(Err(TaskError::Failed(-125)))));
    assert!(ex.now().as_nanos() < 500_000_000, "the cancelled wait ran until its timeout");
}

/// The future form, joined with a `sleep` of the same task: the wait's completion does
/// not strand the sleep (one timer per task, never disarmed by the wait), and its timeout
/// still ends it when nothing completes.
#[test]
fn the_future_form_joined_with_a_sleep_strands_neither() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let t = ex
        .attach(big_task(), async {
            let a = pin!(IoStatus::new());
            initiate::<SimDriver>(a.as_ref(), op(1, 10, Ok(7))).await.unwrap();
            let wait = async {
                match next_completed_io(Some(ms(100))).await? {
                    NextIo::Completed(c) if c.is(&a) => Ok::<_, keel_core::Cancelled>(c.result.unwrap() as u64),
                    other => panic!("expected a's completion, got {other:?}"),
                }
            };
            let sleep = async {
                rt::sleep(ms(40)).await?;
                Ok::<_, keel_core::Cancelled>(rt::clock().await.unwrap().as_nanos() / 1_000_000)
            };
            // The sleep first: at the completion's wake it re-arms, then the wait is ready.
            let (slept_until, got) = join(sleep, wait).await;
            let (got, slept_until) = (got?, slept_until?);
            // Then one in flight that never completes in time.
            let b = pin!(IoStatus::new());
            initiate::<SimDriver>(b.as_ref(), op(2, 1_000, Ok(1))).await.unwrap();
            assert_eq!(next_completed_io(Some(ms(20))).await?, NextIo::TimedOut);
            let timed_out_at = rt::clock().await.unwrap().as_nanos() / 1_000_000;
            assert!(matches!(next_completed_io(None).await?, NextIo::Completed(c) if c.is(&b)));
            assert_eq!(next_completed_io(None).await?, NextIo::Idle);
            Ok(got * 1_000_000 + slept_until * 1_000 + timed_out_at)
        })
        .unwrap();
    run_all!(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(7 * 1_000_000 + 40 * 1_000 + 60))));
}

/// A task on a slot with room for the joined futures' state.
fn big_task() -> keel_core::TaskHandle {
    let slot: &'static keel_core::TaskSlot<1024> = Box::leak(Box::new(keel_core::TaskSlot::new()));
    slot.create(keel_core::TaskAttrs::default()).unwrap()
}

/// The future form cancelled while it waits with a timeout: `Cancelled` at once, long
/// before the timeout; the operation is cancelled at the driver and its block detached.
#[test]
fn the_future_form_waiting_with_a_timeout_is_cancelled() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let t = ex
        .attach(big_task(), async {
            let a = pin!(IoStatus::new());
            initiate::<SimDriver>(a.as_ref(), op(1, 1_000, Ok(1))).await.unwrap();
            match next_completed_io(Some(ms(500))).await {
                Err(keel_core::Cancelled) => Err::<u64, _>(TaskError::Failed(-125)),
                Ok(other) => panic!("the wait ended with {other:?}, not Cancelled"),
            }
        })
        .unwrap();
    ex.run(1, None).unwrap();
    assert_eq!(ex.cancel(t), Ok(CancelOutcome::CancellingIo));
    run_all!(ex);
    assert_eq!(ex.result(t), Ok(Some(Err(TaskError::Failed(-125)))));
    assert!(ex.now().as_nanos() < 500_000_000, "the cancelled wait ran until its timeout");
}

/// Outside a task (polled by hand), the future says `Idle` at once (rt rule 2).
#[test]
fn the_future_form_outside_a_task_is_idle() {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut f = pin!(next_completed_io(Some(ms(10))));
    assert_eq!(f.as_mut().poll(&mut cx), std::task::Poll::Ready(Ok(NextIo::Idle)));
}

/// Joins two futures (keel-core has no combinators; a small one for the test).
async fn join<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let (mut a, mut b) = (pin!(a), pin!(b));
    let (mut ra, mut rb) = (None, None);
    core::future::poll_fn(|cx| {
        if ra.is_none()
            && let std::task::Poll::Ready(v) = a.as_mut().poll(cx)
        {
            ra = Some(v);
        }
        if rb.is_none()
            && let std::task::Poll::Ready(v) = b.as_mut().poll(cx)
        {
            rb = Some(v);
        }
        if ra.is_some() && rb.is_some() { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
    })
    .await;
    (ra.unwrap(), rb.unwrap())
}
