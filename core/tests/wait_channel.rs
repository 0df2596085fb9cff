//! The wait primitives' bounded channel over caller storage (wait rules in
//! core/src/wait/mod.rs), for future and fiber tasks, in both flavours.

mod common;
use common::*;
use core::mem::MaybeUninit;
use core::pin::pin;
use keel_core::sim::SimDriver;
use keel_core::wait::{
    Channel, Flavour, Local, LocalChannel, SendError, Shared, TryRecvError, TrySendError, WaitError,
};
use keel_core::{Config, Executor, Fiber, FiberAttrs, Priority, RegionStacks, TaskError, rt};
use std::cell::RefCell;
use std::rc::Rc;

const STACK: usize = 32 * 1024;
const ATTRS: FiberAttrs = FiberAttrs { stack_size: STACK, ..FiberAttrs::DEFAULT };

fn executor() -> Executor<SimDriver, RegionStacks> {
    let mem: &'static mut [u8] = Vec::leak(vec![0u8; 8 * (STACK + 4096) + 64]);
    Executor::with_stacks(SimDriver::new(), RegionStacks::new(mem, STACK, 4096).unwrap(), Config::default()).unwrap()
}

fn storage<T>(n: usize) -> &'static mut [MaybeUninit<T>] {
    Vec::leak((0..n).map(|_| MaybeUninit::uninit()).collect())
}

/// Three senders (two futures, one fiber) and one fiber receiver through 2 slots: every
/// value arrives once, each sender's in its order.
fn mpsc<F: Flavour>() {
    let ex = pin!(executor());
    let ex = ex.into_ref();
    let ch: Rc<Channel<'static, u32, F>> = Rc::new(Channel::new(storage(2)));
    for sender in 0..3u32 {
        let c = ch.clone();
        if sender == 1 {
            ex.attach_fiber(task(Priority::Normal, "fiber sender"), ATTRS, move |f: &mut Fiber| {
                for i in 0..20 {
                    c.send_blocking(f, sender * 100 + i).map_err(|e| e.reason)?;
                }
                Ok::<_, TaskError>(())
            })
            .unwrap();
        } else {
            ex.attach(task(Priority::Normal, "sender"), async move {
                for i in 0..20 {
                    c.send(sender * 100 + i).await.map_err(|e| e.reason)?;
                    if i % 3 == 0 {
                        rt::yield_now().await?;
                    }
                }
                Ok::<_, TaskError>(())
            })
            .unwrap();
        }
    }
    let got = Rc::new(RefCell::new(Vec::new()));
    let (c, g) = (ch.clone(), got.clone());
    ex.attach_fiber(task(Priority::Normal, "receiver"), ATTRS, move |f: &mut Fiber| {
        for _ in 0..60 {
            g.borrow_mut().push(c.recv_blocking(f)?);
        }
        Ok::<_, TaskError>(())
    })
    .unwrap();
    run_all!(ex);
    let got = got.borrow();
    assert_eq!(got.len(), 60);
    for sender in 0..3 {
        let mine: Vec<u32> = got.iter().copied().filter(|v| v / 100 == sender).collect();
        assert_eq!(mine, (0..20).map(|i| sender * 100 + i).collect::<Vec<_>>());
    }
    assert!(ch.is_empty());
}

#[test]
fn local_channel_carries_every_value_once_in_each_senders_order() {
    mpsc::<Local>();
}

#[test]
fn shared_channel_carries_every_value_once_in_each_senders_order() {
    mpsc::<Shared>();
}

/// Closing with senders waiting hands their values back; the receiver drains what was
/// sent, then sees `Closed`.
#[test]
fn closing_with_senders_waiting_hands_their_values_back_and_receivers_drain_then_close() {
    let ex = pin!(executor());
    let ex = ex.into_ref();
    let ch: Rc<LocalChannel<'static, String>> = Rc::new(Channel::new(storage(1)));
    ch.try_send("first".to_string()).unwrap();
    let mut runs = Vec::new();
    for i in 0..2 {
        let c = ch.clone();
        runs.push(if i == 0 {
            ex.attach(task(Priority::Normal, "sender"), async move {
                match c.send(format!("waiting {i}")).await {
                    Err(SendError { reason: WaitError::Closed, value }) => Ok::<_, TaskError>(value.len() as u64),
                    other => panic!("expected Closed with the value back: {other:?}"),
                }
            })
            .unwrap()
        } else {
            ex.attach_fiber(task(Priority::Normal, "fiber sender"), ATTRS, move |f: &mut Fiber| {
                match c.send_blocking(f, format!("waiting {i}")) {
                    Err(SendError { reason: WaitError::Closed, value }) => Ok::<_, TaskError>(value.len() as u64),
                    other => panic!("expected Closed with the value back: {other:?}"),
                }
            })
            .unwrap()
        });
    }
    ex.run(8, None).unwrap();
    ch.close();
    run_all!(ex);
    for run in runs {
        assert_eq!(ex.result(run), Ok(Some(Ok(9))));
    }
    assert!(matches!(ch.try_send("late".into()), Err(TrySendError::Closed(v)) if v == "late"));
    assert_eq!(ch.try_recv().as_deref(), Ok("first"));
    assert_eq!(ch.try_recv(), Err(TryRecvError::Closed));
}

/// Wait rules 5-6: receivers cancelled while they wait, before (and after) a value was
/// handed to them, pass it on; the last receiver gets one and the other stays in the
/// channel. A dropped channel drops the values still in it.
#[test]
fn wait_rule_5_cancelled_receivers_and_a_dropped_channel_lose_no_value() {
    let ex = pin!(executor());
    let ex = ex.into_ref();
    let ch: Rc<LocalChannel<'static, Rc<()>>> = Rc::new(Channel::new(storage(4)));
    let counted = Rc::new(());
    let mut runs = Vec::new();
    for _ in 0..3 {
        let c = ch.clone();
        runs.push(
            ex.attach(task(Priority::Normal, "receiver"), async move {
                let v = c.recv().await?;
                Ok::<_, TaskError>(u64::from(Rc::strong_count(&v) > 1))
            })
            .unwrap(),
        );
    }
    ex.run(8, None).unwrap();
    ex.cancel(runs[0]).unwrap();
    ch.try_send(counted.clone()).unwrap(); // handed to runs[1]
    ex.cancel(runs[1]).unwrap();
    ch.try_send(counted.clone()).unwrap(); // handed to runs[2]
    run_all!(ex);
    assert_eq!(ex.result(runs[0]), Ok(Some(Err(TaskError::Cancelled))));
    assert_eq!(ex.result(runs[1]), Ok(Some(Err(TaskError::Cancelled))));
    assert_eq!(ex.result(runs[2]), Ok(Some(Ok(1))), "a value passed on reached the last receiver");
    assert_eq!((ch.len(), Rc::strong_count(&counted)), (1, 2), "the other value stays in the channel");
    ch.try_send(counted.clone()).unwrap();
    ch.try_send(counted.clone()).unwrap();
    assert_eq!(Rc::strong_count(&counted), 4);
    drop(Rc::try_unwrap(ch).expect("the last reference"));
    assert_eq!(Rc::strong_count(&counted), 1, "the channel's drop dropped its values");
}

/// Wait rule 6, dropped future: a receive future handed an item and dropped before its
/// next poll passes the item on.
#[test]
fn wait_rule_6_a_dropped_receive_future_handed_an_item_passes_it_on() {
    use core::future::{Future, poll_fn};
    use core::task::Poll;
    let ex = pin!(executor());
    let ex = ex.into_ref();
    let ch: Rc<LocalChannel<'static, u32>> = Rc::new(Channel::new(storage(2)));
    let go = Rc::new(std::cell::Cell::new(false));
    let (c, g) = (ch.clone(), go.clone());
    ex.attach(task(Priority::Normal, "dropper"), async move {
        let mut recv = pin!(c.recv());
        assert!(poll_fn(|cx| Poll::Ready(recv.as_mut().poll(cx).is_pending())).await);
        while !g.get() {
            rt::yield_now().await?;
        }
        Ok::<_, TaskError>(())
    })
    .unwrap();
    let c = ch.clone();
    let next = ex
        .attach(task(Priority::Normal, "receiver"), async move { Ok::<_, TaskError>(u64::from(c.recv().await?)) })
        .unwrap();
    ex.run(8, None).unwrap();
    ch.try_send(77).unwrap();
    go.set(true);
    run_all!(ex);
    assert_eq!(ex.result(next), Ok(Some(Ok(77))));
}
