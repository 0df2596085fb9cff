//! A task body may poll any number of keel futures at once: every pair of suspension
//! points, joined (both polled on every poll until both are ready) and selected (the
//! first ready wins, the other is dropped), while there is no room to submit, (a)
//! because `max_io_in_flight` is reached or (b) because the driver's SQ is full, with a
//! second task waiting for room too. Every task completes, every operation is submitted
//! and completed exactly once, and no task is left in two lists (debug builds check every
//! list push) or waiting for room with nothing to give it room.

mod common;
use core::cell::Cell;
use core::future::Future;
use core::pin::{Pin, pin};
use core::task::{Context, Poll};
use core::time::Duration;
use keel_core::rt::{sleep, wait, yield_now};
use keel_core::sim::{SimDriverN, SimEvent, SimOp};
use keel_core::{
    Config, Executor, Fiber, FiberAttrs, IoStatus, Priorities, Priority, RegionStacks, SubmitRefused, TaskAttrs,
    TaskHandle, TaskResult, initiate, suspend_until_completed_io, try_submit_from,
};
use std::rc::Rc;

type Sim = SimDriverN<64, 4096>;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Kind {
    Initiate,
    Sleep,
    Yield,
    Wait,
    Initiate2,
    TrySubmit,
}

const KINDS: [Kind; 6] = [Kind::Initiate, Kind::Sleep, Kind::Yield, Kind::Wait, Kind::Initiate2, Kind::TrySubmit];

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Combine {
    Join,
    Select,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Full {
    InFlightLimit,
    Sq,
}

/// What the second waiter for room is.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Waiter {
    FutureInitiate,
    FiberInitiate,
    FiberTrySubmit,
}

/// Labels of the operations a task submitted (each must be submitted and completed once).
#[derive(Clone, Default)]
struct Submitted(Rc<std::cell::RefCell<Vec<u32>>>);

impl Submitted {
    fn add(&self, l: u32) {
        self.0.borrow_mut().push(l);
    }
}

type Branch<'a> = Pin<Box<dyn Future<Output = Option<u32>> + 'a>>;

/// One suspension point of kind `k`; ready with the label of the operation it submitted.
fn branch<'a>(k: Kind, st: Pin<&'a IoStatus>, label: u32) -> Branch<'a> {
    let op = SimOp::new(label).after(Duration::from_micros(200));
    match k {
        Kind::Initiate | Kind::Initiate2 => Box::pin(async move {
            initiate::<Sim>(st, op).await.unwrap_or_else(|e| panic!("initiate {label}: {e:?}"));
            Some(label)
        }),
        Kind::Sleep => Box::pin(async {
            sleep(Duration::from_micros(50)).await.unwrap();
            None
        }),
        Kind::Yield => Box::pin(async {
            yield_now().await.unwrap();
            None
        }),
        Kind::Wait => Box::pin(async {
            wait().await.unwrap();
            None
        }),
        Kind::TrySubmit => {
            let mut op = Some(op);
            Box::pin(core::future::poll_fn(move |cx| match try_submit_from::<Sim>(cx, &mut op, true) {
                Ok(_) => Poll::Ready(Some(label)),
                Err(SubmitRefused::Wait) => Poll::Pending,
                Err(e) => panic!("try_submit {label}: {e:?}"),
            }))
        }
    }
}

/// Both polled on every poll until both are ready.
async fn join2(mut a: Branch<'_>, mut b: Branch<'_>) -> [Option<u32>; 2] {
    let (mut ra, mut rb) = (None, None);
    core::future::poll_fn(|cx: &mut Context<'_>| {
        if ra.is_none()
            && let Poll::Ready(v) = a.as_mut().poll(cx)
        {
            ra = Some(v);
        }
        if rb.is_none()
            && let Poll::Ready(v) = b.as_mut().poll(cx)
        {
            rb = Some(v);
        }
        if ra.is_some() && rb.is_some() { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
    [ra.unwrap(), rb.unwrap()]
}

/// The first ready wins; the other is dropped at once.
async fn select2(a: Branch<'_>, b: Branch<'_>) -> [Option<u32>; 2] {
    let (mut a, mut b) = (Some(a), Some(b));
    let r = core::future::poll_fn(|cx: &mut Context<'_>| {
        if let Poll::Ready(v) = a.as_mut().unwrap().as_mut().poll(cx) {
            return Poll::Ready([v, None]);
        }
        if let Poll::Ready(v) = b.as_mut().unwrap().as_mut().poll(cx) {
            return Poll::Ready([None, v]);
        }
        Poll::Pending
    })
    .await;
    drop((a, b));
    r
}

/// Takes completions until nothing is in flight or completed.
async fn drain() -> Result<(), keel_core::Cancelled> {
    while suspend_until_completed_io(8).await? > 0 {}
    Ok(())
}

fn task() -> TaskHandle {
    let slot: &'static keel_core::TaskSlot<2048> = Box::leak(Box::new(keel_core::TaskSlot::new()));
    slot.create(TaskAttrs { priority: Priorities { cpu: Priority::Normal, io: Priority::Normal }, name: "pair" })
        .unwrap()
}

fn region() -> RegionStacks {
    RegionStacks::new(Vec::leak(vec![0u8; 2 * 20 * 1024 + 64]), 16 * 1024, 4096).unwrap()
}

/// One scenario; panics (with the scenario in the message) on any failure.
fn scenario(a: Kind, b: Kind, how: Combine, full: Full, waiter: Waiter) {
    let what = format!("{a:?} {how:?} {b:?} under a full {full:?}, waiter {waiter:?}");
    let cfg = match full {
        Full::InFlightLimit => Config { max_io_in_flight: Some(1), ..Config::default() },
        Full::Sq => Config::default(),
    };
    let mut driver = Sim::new();
    if full == Full::Sq {
        driver.limit_capacity(1);
    }
    let ex = pin!(Executor::with_stacks(driver, region(), cfg).unwrap());
    let ex = ex.into_ref();
    let submitted = Submitted::default();
    let done = Rc::new(Cell::new(false));
    let tested: Rc<Cell<Option<TaskHandle>>> = Rc::default();

    // The holder takes the room first (one op in flight, or the SQ's one entry).
    let s = submitted.clone();
    let holder = ex
        .attach(task(), async move {
            let st = pin!(IoStatus::new());
            initiate::<Sim>(st.as_ref(), SimOp::new(1).after(Duration::from_millis(1))).await.unwrap();
            s.add(1);
            drain().await?;
            assert!(st.result().is_some());
            Ok::<u64, keel_core::TaskError>(0)
        })
        .unwrap();

    let (s, d) = (submitted.clone(), done.clone());
    let t = ex
        .attach(task(), async move {
            let (st1, st2) = (pin!(IoStatus::new()), pin!(IoStatus::new()));
            let (fa, fb) = (branch(a, st1.as_ref(), 10), branch(b, st2.as_ref(), 20));
            let got = match how {
                Combine::Join => join2(fa, fb).await,
                Combine::Select => select2(fa, fb).await,
            };
            for l in got.into_iter().flatten() {
                s.add(l);
            }
            // Suspend once more after the pair (a select may have dropped a waiter).
            sleep(Duration::from_micros(10)).await.unwrap();
            drain().await.unwrap();
            for (k, st, l) in [(a, &st1, 10), (b, &st2, 20)] {
                if matches!(k, Kind::Initiate | Kind::Initiate2) && got.contains(&Some(l)) {
                    assert!(st.result().is_some(), "status {l} never completed");
                }
            }
            d.set(true);
            Ok::<u64, keel_core::TaskError>(1)
        })
        .unwrap();
    tested.set(Some(t));

    // A second task waiting for room.
    let w = match waiter {
        Waiter::FutureInitiate => {
            let s = submitted.clone();
            ex.attach(task(), async move {
                let st = pin!(IoStatus::new());
                initiate::<Sim>(st.as_ref(), SimOp::new(900).after(Duration::from_micros(100))).await.unwrap();
                s.add(900);
                drain().await?;
                Ok::<u64, keel_core::TaskError>(2)
            })
            .unwrap()
        }
        Waiter::FiberInitiate | Waiter::FiberTrySubmit => {
            let s = submitted.clone();
            ex.attach_fiber(
                task(),
                FiberAttrs { stack_size: 16 * 1024, ..FiberAttrs::default() },
                move |f: &mut Fiber| -> TaskResult {
                    let st = pin!(IoStatus::new());
                    let op = SimOp::new(900).after(Duration::from_micros(100));
                    if waiter == Waiter::FiberInitiate {
                        f.initiate::<Sim>(st.as_ref(), op).unwrap();
                        s.add(900);
                        while f.suspend_until_completed_io(1)? == 0 {}
                    } else {
                        f.try_submit::<Sim>(op).unwrap();
                        s.add(900);
                    }
                    Ok(2)
                },
            )
            .map_err(|e| e.split().0)
            .unwrap()
        }
    };

    // Wakes the tested task now and then (its `wait`), until it is done.
    let (d, th) = (done.clone(), tested.clone());
    ex.attach(task(), async move {
        for _ in 0..100_000 {
            if d.get() {
                return Ok(0);
            }
            sleep(Duration::from_micros(100)).await?;
            th.get().unwrap().wake();
        }
        Err(keel_core::TaskError::Failed(-1))
    })
    .unwrap();

    let mut rounds = 0;
    while ex.attached() > 0 {
        rounds += 1;
        assert!(
            rounds < 10_000,
            "{what}: tasks stranded: holder {:?}, tested {:?}, waiter {:?}",
            ex.state(holder),
            ex.state(t),
            ex.state(w)
        );
        match ex.run(100_000, Some(Duration::from_secs(1))) {
            Ok(_) => {}
            Err(e) => panic!(
                "{what}: run: {e:?}; holder {:?}, tested {:?}, waiter {:?}",
                ex.state(holder),
                ex.state(t),
                ex.state(w)
            ),
        }
    }
    assert_eq!(ex.result(holder), Ok(Some(Ok(0))), "{what}");
    assert_eq!(ex.result(t), Ok(Some(Ok(1))), "{what}");
    assert_eq!(ex.result(w), Ok(Some(Ok(2))), "{what}");
    // Wake-token operations are not the task's to drain: let them finish.
    for _ in 0..100 {
        if ex.with_driver(|d| keel_core::Driver::in_flight(&**d)).unwrap() == 0 {
            break;
        }
        let _ = ex.run(10, Some(Duration::from_millis(1)));
    }
    let mut mine = submitted.0.borrow().clone();
    mine.sort();
    let (mut subs, mut comps, waiter_at, refused) = ex
        .with_driver(|d| {
            let (mut s, mut c, mut at, mut r) = (Vec::new(), Vec::new(), None, 0);
            for e in d.trace() {
                match *e {
                    SimEvent::Submit { label, at: when } => {
                        s.push(label);
                        if label == 900 {
                            at = Some(when);
                        }
                    }
                    SimEvent::Complete { label, .. } => c.push(label),
                    SimEvent::Refuse { .. } => r += 1,
                    _ => {}
                }
            }
            (s, c, at, r)
        })
        .unwrap();
    // The room really was full: the waiter got in only after the holder's operation
    // completed; with a full SQ, the driver refused the tested task's initiate.
    assert!(waiter_at.unwrap().as_nanos() >= 1_000_000, "{what}: the waiter never waited");
    if full == Full::Sq && a == Kind::Initiate {
        assert!(refused > 0, "{what}: the driver never refused");
    }
    subs.sort();
    comps.sort();
    assert_eq!(subs, mine, "{what}: every operation the tasks submitted, submitted once");
    assert_eq!(comps, mine, "{what}: every submitted operation completed once");
    assert!(mine.contains(&1) && mine.contains(&900), "{what}: {mine:?}");
    for (k, l) in [(a, 10), (b, 20)] {
        if how == Combine::Join && matches!(k, Kind::Initiate | Kind::Initiate2 | Kind::TrySubmit) {
            assert!(mine.contains(&l), "{what}: joined op {l} was not submitted");
        }
    }
}

/// Runs the scenarios of every pair of kinds combined `how`, under both kinds of full
/// (the waiter kind rotating), for which `pick(a, b)` holds; returns how many ran.
fn pairs(how: Combine, pick: impl Fn(Kind, Kind) -> bool) -> usize {
    let mut n = 0;
    for full in [Full::InFlightLimit, Full::Sq] {
        for a in KINDS {
            for b in KINDS {
                if pick(a, b) {
                    let waiter = [Waiter::FutureInitiate, Waiter::FiberInitiate, Waiter::FiberTrySubmit][n % 3];
                    scenario(a, b, how, full, waiter);
                    n += 1;
                }
            }
        }
    }
    n
}

fn asks_for_room(k: Kind) -> bool {
    matches!(k, Kind::Initiate | Kind::Initiate2 | Kind::TrySubmit)
}

/// Waiting for room is a membership kept apart from the task's state: a task joins a
/// suspension that asks for room with one that does not (a sleep, a wait, a yield, or
/// nothing), so it waits for room while suspended for another reason, ready, or
/// running; every task completes and every operation goes in once.
#[test]
fn room_rule_1_a_task_waits_for_room_while_suspended_or_ready_for_another_reason() {
    assert_eq!(pairs(Combine::Join, |a, b| asks_for_room(a) != asks_for_room(b)), 2 * 18);
}

/// Two suspension points of one poll that both ask for room (two initiates, an initiate
/// and a `try_submit`, joined) queue the task once (debug builds check every list push)
/// and keep its place.
#[test]
fn room_rule_2_two_joined_suspension_points_asking_for_room_queue_the_task_once() {
    assert_eq!(pairs(Combine::Join, |a, b| asks_for_room(a) == asks_for_room(b)), 2 * 18);
}

/// A select that drops the branch that asked for room (the other branch won) takes the
/// task off the waiters when the poll returns `Pending`; an unused grant lapses. The
/// waiter for room still gets it and every task completes.
#[test]
fn room_rule_3_a_dropped_asking_future_leaves_the_waiters_for_room() {
    assert_eq!(pairs(Combine::Select, |_, _| true), 2 * 36);
}

/// One suspension point of kind `k` that gives up quietly when the task is cancelled
/// (`Err(())`); `Ok` with the label of the operation it submitted, if any.
fn cancellable<'a>(
    k: Kind,
    st: Pin<&'a IoStatus>,
    label: u32,
) -> Pin<Box<dyn Future<Output = Result<Option<u32>, ()>> + 'a>> {
    let op = SimOp::new(label).after(Duration::from_micros(200));
    match k {
        Kind::Initiate | Kind::Initiate2 => Box::pin(async move {
            match initiate::<Sim>(st, op).await {
                Ok(()) => Ok(Some(label)),
                Err(keel_core::InitiateError::Cancelled(_)) => Err(()),
                Err(e) => panic!("initiate {label}: {e:?}"),
            }
        }),
        Kind::Sleep => Box::pin(async { sleep(Duration::from_millis(5)).await.map(|_| None).map_err(drop) }),
        Kind::Yield => Box::pin(async { yield_now().await.map(|_| None).map_err(drop) }),
        Kind::Wait => Box::pin(async { wait().await.map(|_| None).map_err(drop) }),
        Kind::TrySubmit => {
            let mut op = Some(op);
            Box::pin(core::future::poll_fn(move |cx| match try_submit_from::<Sim>(cx, &mut op, true) {
                Ok(_) => Poll::Ready(Ok(Some(label))),
                Err(SubmitRefused::Wait) => Poll::Pending,
                Err(SubmitRefused::Failed(keel_core::Errno::ECANCELED)) => Poll::Ready(Err(())),
                Err(e) => panic!("try_submit {label}: {e:?}"),
            }))
        }
    }
}

/// Cancel edge 9/10 and room rule 5: a task waiting for room inside a join (with every
/// other kind of suspension) is cancelled; it winds down, leaves the waiters for room, and
/// the holder and a second waiter still complete, with every submitted operation
/// completed once.
#[test]
fn room_rule_5_a_task_waiting_for_room_inside_a_join_can_be_cancelled() {
    for full in [Full::InFlightLimit, Full::Sq] {
        for k in KINDS {
            let what = format!("initiate joined with {k:?} under a full {full:?}, cancelled");
            let cfg = Config { max_io_in_flight: (full == Full::InFlightLimit).then_some(1), ..Config::default() };
            let mut driver = Sim::new();
            if full == Full::Sq {
                driver.limit_capacity(1);
            }
            let ex = pin!(Executor::new(driver, cfg).unwrap());
            let ex = ex.into_ref();
            let submitted = Submitted::default();
            let mut runs = Vec::new();
            for (i, label) in [(0u32, 1u32), (2, 900)] {
                let s = submitted.clone();
                let r = ex
                    .attach(task(), async move {
                        let st = pin!(IoStatus::new());
                        initiate::<Sim>(st.as_ref(), SimOp::new(label).after(Duration::from_millis(1))).await.unwrap();
                        s.add(label);
                        drain().await?;
                        Ok::<u64, keel_core::TaskError>(i as u64)
                    })
                    .unwrap();
                runs.push(r);
                if i == 0 {
                    let s = submitted.clone();
                    let t = ex
                        .attach(task(), async move {
                            let (st1, st2) = (pin!(IoStatus::new()), pin!(IoStatus::new()));
                            let (mut fa, mut fb) =
                                (cancellable(Kind::Initiate, st1.as_ref(), 10), cancellable(k, st2.as_ref(), 20));
                            let (mut ra, mut rb) = (None, None);
                            core::future::poll_fn(|cx: &mut Context<'_>| {
                                if ra.is_none()
                                    && let Poll::Ready(v) = fa.as_mut().poll(cx)
                                {
                                    ra = Some(v);
                                }
                                if rb.is_none()
                                    && let Poll::Ready(v) = fb.as_mut().poll(cx)
                                {
                                    rb = Some(v);
                                }
                                if ra.is_some() && rb.is_some() { Poll::Ready(()) } else { Poll::Pending }
                            })
                            .await;
                            for l in [ra.unwrap(), rb.unwrap()].into_iter().flatten().flatten() {
                                s.add(l);
                            }
                            // Cancelled: the statuses in flight are drained by the executor.
                            Err::<u64, _>(keel_core::TaskError::Cancelled)
                        })
                        .unwrap();
                    runs.push(t);
                }
            }
            // Holder and tested task run; the tested one waits for room.
            ex.run(2, None).unwrap();
            let t = runs[1];
            assert!(
                matches!(ex.state(t), Ok(keel_core::TaskState::Suspended(_) | keel_core::TaskState::Ready)),
                "{what}: {:?}",
                ex.state(t)
            );
            ex.cancel(t).unwrap();
            let mut rounds = 0;
            while ex.attached() > 0 {
                rounds += 1;
                assert!(
                    rounds < 10_000,
                    "{what}: stranded: {:?}",
                    runs.iter().map(|r| ex.state(*r)).collect::<Vec<_>>()
                );
                ex.run(100_000, Some(Duration::from_secs(1))).unwrap_or_else(|e| panic!("{what}: {e:?}"));
            }
            assert_eq!(ex.result(runs[0]), Ok(Some(Ok(0))), "{what}");
            assert_eq!(ex.result(t), Ok(Some(Err(keel_core::TaskError::Cancelled))), "{what}");
            assert_eq!(ex.result(runs[2]), Ok(Some(Ok(2))), "{what}");
            for _ in 0..100 {
                if ex.with_driver(|d| keel_core::Driver::in_flight(&**d)).unwrap() == 0 {
                    break;
                }
                let _ = ex.run(10, Some(Duration::from_millis(1)));
            }
            let mut mine = submitted.0.borrow().clone();
            mine.sort();
            let (mut subs, mut comps): (Vec<u32>, Vec<u32>) = ex
                .with_driver(|d| {
                    (
                        d.trace()
                            .filter_map(|e| if let SimEvent::Submit { label, .. } = *e { Some(label) } else { None })
                            .collect(),
                        d.trace()
                            .filter_map(|e| if let SimEvent::Complete { label, .. } = *e { Some(label) } else { None })
                            .collect(),
                    )
                })
                .unwrap();
            subs.sort();
            comps.sort();
            assert_eq!(comps, subs, "{what}: every submitted operation completed once");
            assert!(mine.iter().all(|l| subs.contains(l)), "{what}: {mine:?} vs {subs:?}");
        }
    }
}
