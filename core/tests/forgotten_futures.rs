//! The forgotten-future class (audit): a keel future polled once so that it registers
//! its task somewhere, then leaked with `mem::forget` (safe: its memory stays valid), its
//! run ended, its slot released and attached again (on the same executor, or on another
//! executor of this thread). Whatever later fires the registration must not wake the
//! later run, and must not run another executor's task from this one's ready list. The
//! wait primitives keep this by wait rule 7 (owner and generation checked; the shared
//! flavour through `TaskHandle::wake`'s generation), `rt::sleep` by its timer being the
//! task's own (disarmed when the body goes), a join by join rule 7.

mod common;
use common::*;
use core::future::Future;
use core::pin::{Pin, pin};
use core::task::Poll;
use core::time::Duration;
use keel_core::join::{join, join_send};
use keel_core::sim::{SimDriver, SimOp};
use keel_core::wait::{Channel, Event, LocalChannel, LocalEvent, LocalMutex, LocalSemaphore, Mutex, Semaphore};
use keel_core::{Config, Executor, IoStatus, Priority, TaskError, TaskHandle, initiate, rt};
use std::cell::Cell;
use std::mem::MaybeUninit;
use std::rc::Rc;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Polls `f` once (inside the task), asserts it is pending (registered), and forgets it.
async fn poll_once_and_forget<F: Future>(f: F) {
    let mut f = Box::pin(f);
    let first = core::future::poll_fn(|cx| Poll::Ready(f.as_mut().poll(cx).is_pending())).await;
    assert!(first, "registered (pending) at its first poll");
    core::mem::forget(f);
}

/// A body pending until polled a second time: a forged wake shows as a second poll.
fn counted_pending(polls: Rc<Cell<u32>>) -> impl Future<Output = u64> {
    let mut once = false;
    core::future::poll_fn(move |_| {
        polls.set(polls.get() + 1);
        if core::mem::replace(&mut once, true) { Poll::Ready(6) } else { Poll::Pending }
    })
}

/// The scenario. `register` runs in a task of `a` and leaves a forgotten registration;
/// the task's slot is then released and attached on `b` (`elsewhere`) or on `a` with a
/// body that only a forged wake would poll twice; `trigger` then fires the registration
/// (from outside any task) and `a` runs it. The later run must have been polled once.
fn forgotten_then_reused(register: impl Future<Output = ()> + 'static, trigger: impl FnOnce(), elsewhere: bool) {
    forgotten_then_reused_with(|_| register, trigger, elsewhere);
}

/// [`forgotten_then_reused`], `register` given a run of `a` (a sleeper of 10 ms) that
/// ends while the later run waits.
fn forgotten_then_reused_with<R: Future<Output = ()> + 'static>(
    register: impl FnOnce(TaskHandle) -> R,
    trigger: impl FnOnce(),
    elsewhere: bool,
) {
    let a = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let a = a.into_ref();
    let b = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let b = b.into_ref();
    let awaited = a
        .attach(task(Priority::Low, "awaited"), async {
            rt::sleep(ms(10)).await?;
            Ok::<u64, TaskError>(3)
        })
        .unwrap();
    let waiter = a.attach(task(Priority::Normal, "waiter"), register(awaited)).unwrap();
    while a.result(waiter) == Ok(None) {
        a.run(8, None).unwrap();
    }
    assert!(matches!(a.result(waiter), Ok(Some(Ok(_)))));
    let moved = a.release(waiter).unwrap();
    let polls = Rc::new(Cell::new(0u32));
    let on = if elsewhere { b } else { a };
    let later = on.attach(moved, counted_pending(polls.clone())).unwrap();
    let _ = on.run(8, None);
    assert_eq!(polls.get(), 1);
    trigger();
    // Something for `a` to do (its clock moves past any timer the body armed).
    a.attach(task(Priority::Low, "ticker"), async { rt::sleep(ms(100)).await.map(|_| ()) }).unwrap();
    for _ in 0..4 {
        let _ = a.run(64, None);
        let _ = b.run(64, None);
    }
    assert_eq!(polls.get(), 1, "the later run was not woken by the forgotten registration");
    assert_eq!(on.result(later), Ok(None), "still waiting");
    on.cancel(later).unwrap();
    run_all!(on);
    run_all!(a);
    assert_eq!(on.attached(), 0);
    assert_eq!(a.result(awaited), Ok(Some(Ok(3))));
}

macro_rules! both_ways {
    ($name:ident, |$elsewhere:ident| $body:block) => {
        mod $name {
            use super::*;
            #[test]
            fn later_run_on_the_same_executor() {
                let $elsewhere = false;
                $body
            }
            #[test]
            fn once_attached_on_another_executor() {
                let $elsewhere = true;
                $body
            }
        }
    };
}

both_ways!(local_semaphore_acquire, |elsewhere| {
    let sem: &'static LocalSemaphore = Box::leak(Box::new(LocalSemaphore::new(0)));
    forgotten_then_reused(poll_once_and_forget(sem.acquire()), || sem.add_permits(1), elsewhere);
    // Wait rule 2: the forgotten waiter keeps the permit it was granted (a leak).
    assert_eq!(sem.available_permits(), 0);
});

both_ways!(shared_semaphore_acquire, |elsewhere| {
    let sem: &'static Semaphore = Box::leak(Box::new(Semaphore::new(0)));
    forgotten_then_reused(poll_once_and_forget(sem.acquire()), || sem.add_permits(1), elsewhere);
});

both_ways!(local_event_wait, |elsewhere| {
    let ev: &'static LocalEvent = Box::leak(Box::new(LocalEvent::new(false)));
    forgotten_then_reused(poll_once_and_forget(ev.wait()), || ev.set(), elsewhere);
    assert_eq!(ev.waiters(), 0, "set woke (dequeued) the forgotten waiter");
});

both_ways!(shared_event_wait, |elsewhere| {
    let ev: &'static Event = Box::leak(Box::new(Event::new(false)));
    forgotten_then_reused(poll_once_and_forget(ev.wait()), || ev.set(), elsewhere);
});

both_ways!(local_mutex_lock, |elsewhere| {
    let m: &'static LocalMutex<u32> = Box::leak(Box::new(LocalMutex::new(0)));
    let guard: &'static Cell<Option<keel_core::wait::MutexGuard<'static, u32, keel_core::wait::Local>>> =
        Box::leak(Box::new(Cell::new(m.try_lock())));
    forgotten_then_reused(poll_once_and_forget(m.lock()), || drop(guard.take()), elsewhere);
});

both_ways!(shared_mutex_lock, |elsewhere| {
    let m: &'static Mutex<u32> = Box::leak(Box::new(Mutex::new(0)));
    let guard: &'static Cell<Option<keel_core::wait::MutexGuard<'static, u32, keel_core::wait::Shared>>> =
        Box::leak(Box::new(Cell::new(m.try_lock())));
    forgotten_then_reused(poll_once_and_forget(m.lock()), || drop(guard.take()), elsewhere);
});

both_ways!(local_channel_recv, |elsewhere| {
    let storage: &'static mut [MaybeUninit<u32>] = Box::leak(Box::new([MaybeUninit::uninit(); 2]));
    let ch: &'static LocalChannel<'static, u32> = Box::leak(Box::new(LocalChannel::new(storage)));
    forgotten_then_reused(poll_once_and_forget(ch.recv()), || ch.try_send(7).unwrap(), elsewhere);
});

both_ways!(shared_channel_send, |elsewhere| {
    let storage: &'static mut [MaybeUninit<u32>] = Box::leak(Box::new([MaybeUninit::uninit(); 1]));
    let ch: &'static Channel<'static, u32> = Box::leak(Box::new(Channel::new(storage)));
    ch.try_send(1).unwrap();
    forgotten_then_reused(poll_once_and_forget(ch.send(2)), || assert_eq!(ch.try_recv().ok(), Some(1)), elsewhere);
});

both_ways!(join_send, |elsewhere| {
    // Join rule 5: a cross entry names the waiter's run (its wake checks the generation).
    forgotten_then_reused_with(|awaited| poll_once_and_forget(join_send(awaited, None)), || {}, elsewhere);
});

both_ways!(join, |elsewhere| {
    forgotten_then_reused_with(|awaited| poll_once_and_forget(join(awaited)), || {}, elsewhere);
});

both_ways!(io_status_in_flight, |elsewhere| {
    // io_status rules 2 and 4: a status block leaked in flight keeps the run draining
    // (its operation cancelled) until its completion; the run's end takes it off the
    // completed list, so the later run neither sees it nor is woken by it.
    forgotten_then_reused(
        async {
            let st = Box::pin(IoStatus::new());
            initiate::<SimDriver>(st.as_ref(), SimOp::new(1).after(ms(30))).await.unwrap();
            core::mem::forget(st);
        },
        || {},
        elsewhere,
    );
});

both_ways!(sleep, |elsewhere| {
    forgotten_then_reused(poll_once_and_forget(rt::sleep(ms(10))), || {}, elsewhere);
});

/// An executor dropped with a forgotten waiter of a primitive outstanding (its task's
/// run ended; the slot still the executor's) does not hang, and a later fire of the
/// primitive touches no freed executor (wait rule 7: the owner was cleared at the drop).
#[test]
fn executor_dropped_with_a_forgotten_waiter_then_the_primitive_fires() {
    let sem: &'static LocalSemaphore = Box::leak(Box::new(LocalSemaphore::new(0)));
    let ev: &'static LocalEvent = Box::leak(Box::new(LocalEvent::new(false)));
    {
        let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
        let ex = ex.into_ref();
        ex.attach(task(Priority::Normal, "w1"), poll_once_and_forget(sem.acquire())).unwrap();
        // This one is still waiting (registered, not forgotten) when the executor goes.
        ex.attach(task(Priority::Normal, "w2"), async move {
            poll_once_and_forget(ev.wait()).await;
            let _ = ev.wait().await;
            Ok::<u64, TaskError>(0)
        })
        .unwrap();
        let _ = ex.run(16, None);
    }
    sem.add_permits(1);
    ev.set();
    assert_eq!(ev.waiters(), 0);
}

/// A `join_send` (it is `Send`) that registered from one task and is then awaited by
/// another (the first one's run over) must wake the one awaiting it when the run ends,
/// as a moved `Join` or wait does (join rule 7, wait rule 5): not leave it waiting for a
/// wake sent to the ended run.
#[test]
fn a_join_send_registered_by_one_task_then_awaited_by_another_gets_its_result() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let awaited = ex
        .attach(task(Priority::Low, "awaited"), async {
            rt::sleep(ms(10)).await?;
            Ok::<u64, TaskError>(7)
        })
        .unwrap();
    let stash: Rc<Cell<Option<Pin<Box<keel_core::join::JoinSend>>>>> = Rc::default();
    let s = stash.clone();
    let first = ex
        .attach(task(Priority::Normal, "registers"), async move {
            let mut j = Box::pin(join_send(awaited, None));
            let pending = core::future::poll_fn(|cx| Poll::Ready(j.as_mut().poll(cx).is_pending())).await;
            assert!(pending, "registered");
            s.set(Some(j));
        })
        .unwrap();
    while ex.result(first) == Ok(None) {
        ex.run(8, None).unwrap();
    }
    let got = Rc::new(Cell::new(None));
    let g = got.clone();
    let s = stash.clone();
    let second = ex
        .attach(task(Priority::Normal, "awaits"), async move {
            let j = s.take().expect("stashed");
            g.set(Some(j.await));
        })
        .unwrap();
    // Bounded: the sim clock jumps to the awaited run's timer; a waiter never woken stalls.
    for _ in 0..64 {
        if ex.result(second) != Ok(None) {
            break;
        }
        let _ = ex.run(8, None);
    }
    assert_eq!(got.get(), Some(Ok(Ok(7))), "the task awaiting it was woken with the result");
}

/// Join rule 8 for a `Join` that waits with an entry (its run is on another executor of
/// this thread: it waits as a join from another thread), moved to another task of its
/// executor: the run's end wakes the task awaiting it now.
#[test]
fn a_cross_join_registered_by_one_task_then_awaited_by_another_gets_its_result() {
    let a = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let a = a.into_ref();
    let b = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let b = b.into_ref();
    let awaited = b
        .attach(task(Priority::Low, "awaited"), async {
            rt::sleep(ms(10)).await?;
            Ok::<u64, TaskError>(8)
        })
        .unwrap();
    let _ = b.run(8, None);
    let stash: Rc<Cell<Option<Pin<Box<keel_core::join::Join>>>>> = Rc::default();
    let s = stash.clone();
    let first = a
        .attach(task(Priority::Normal, "registers"), async move {
            let mut j = Box::pin(join(awaited));
            let pending = core::future::poll_fn(|cx| Poll::Ready(j.as_mut().poll(cx).is_pending())).await;
            assert!(pending, "registered");
            s.set(Some(j));
        })
        .unwrap();
    while a.result(first) == Ok(None) {
        a.run(8, None).unwrap();
    }
    let got = Rc::new(Cell::new(None));
    let g = got.clone();
    let s = stash.clone();
    let second = a
        .attach(task(Priority::Normal, "awaits"), async move {
            let j = s.take().expect("stashed");
            g.set(Some(j.await));
        })
        .unwrap();
    let _ = a.run(8, None);
    run_all!(b);
    for _ in 0..64 {
        if a.result(second) != Ok(None) {
            break;
        }
        let _ = a.run(8, None);
    }
    assert_eq!(got.get(), Some(Ok(Ok(8))), "the task awaiting it was woken with the result");
}

/// Join rule 8 across threads: a `join_send` registered by a task of one thread's
/// executor, then sent to a task of another thread's, is woken there by the run's end.
#[test]
fn a_join_send_registered_on_one_thread_then_awaited_on_another_gets_its_result() {
    use std::sync::{Arc, Mutex as StdMutex};
    type Stash = Arc<StdMutex<Option<Pin<Box<keel_core::join::JoinSend>>>>>;
    let stash: Stash = Arc::default();
    let (tx, rx) = std::sync::mpsc::channel::<TaskHandle>();
    let (registered_tx, registered_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    // The owner's thread: a run that ends when told.
    let owner = std::thread::spawn(move || {
        let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
        let ex = ex.into_ref();
        let go = Rc::new(Cell::new(false));
        let g = go.clone();
        let awaited = ex
            .attach(task(Priority::Normal, "awaited"), async move {
                while !g.get() {
                    rt::yield_now().await?;
                }
                Ok::<u64, TaskError>(9)
            })
            .unwrap();
        tx.send(awaited).unwrap();
        let _ = ex.run(4, None);
        release_rx.recv().unwrap();
        go.set(true);
        run_all!(ex);
    });
    let awaited = rx.recv().unwrap();
    let s = stash.clone();
    // The registering thread: a task polls the join once and hands it over.
    std::thread::spawn(move || {
        let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
        let ex = ex.into_ref();
        ex.attach(task(Priority::Normal, "registers"), async move {
            let mut j = Box::pin(join_send(awaited, None));
            let pending = core::future::poll_fn(|cx| Poll::Ready(j.as_mut().poll(cx).is_pending())).await;
            assert!(pending, "registered");
            *s.lock().unwrap() = Some(j);
        })
        .unwrap();
        run_all!(ex);
        registered_tx.send(()).unwrap();
    })
    .join()
    .unwrap();
    registered_rx.recv().unwrap();
    // This thread: a task awaits the handed-over join (no limit: woken only by the run's end).
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let got = Rc::new(Cell::new(None));
    let g = got.clone();
    let s = stash.clone();
    let waiter = ex
        .attach(task(Priority::Normal, "awaits"), async move {
            let j = s.lock().unwrap().take().expect("stashed");
            g.set(Some(j.await));
        })
        .unwrap();
    let _ = ex.run(4, None);
    release_tx.send(()).unwrap();
    owner.join().unwrap();
    // Bounded: the run's end sent its wake (or it never will); a few runs take it.
    let t0 = std::time::Instant::now();
    while ex.result(waiter) == Ok(None) && t0.elapsed() < Duration::from_secs(5) {
        let _ = ex.run(8, Some(ms(10)));
    }
    assert_eq!(got.get(), Some(Ok(Ok(9))), "woken on this thread with the result");
}

/// io_status rule 1 across runs: a status block leaked in flight by one run is not
/// handed to the slot's next run (its completed list starts empty).
#[test]
fn a_leaked_status_block_is_not_the_next_runs_completion() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let t = ex
        .attach(task(Priority::Normal, "leaks"), async {
            let st = Box::pin(IoStatus::new());
            initiate::<SimDriver>(st.as_ref(), SimOp::new(1).after(ms(30))).await.unwrap();
            core::mem::forget(st);
        })
        .unwrap();
    run_all!(ex);
    let later = ex
        .attach(t, async {
            let next = keel_core::io_status::next_completed_io(None).await.unwrap();
            assert!(matches!(next, keel_core::NextIo::Idle), "nothing of the earlier run: {next:?}");
            Ok::<u64, TaskError>(4)
        })
        .unwrap();
    run_all!(ex);
    assert_eq!(ex.result(later), Ok(Some(Ok(4))));
}

/// Join rules 5 and 8: a forgotten `join_send` keeps its entry of the awaited slot (only
/// its waiter frees an entry), so `CROSS_WAITERS` of them leave none: a later join from
/// another thread gets `TooManyWaiters` at once (typed, no hang, no wake of another run),
/// and a join on the slot's own executor still gets the result.
#[test]
fn forgotten_join_sends_use_up_the_slots_entries_then_a_typed_error() {
    use keel_core::JoinError;
    use keel_core::join::CROSS_WAITERS;
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let awaited = ex
        .attach(task(Priority::Low, "awaited"), async {
            rt::sleep(ms(10)).await?;
            Ok::<u64, TaskError>(2)
        })
        .unwrap();
    for _ in 0..CROSS_WAITERS {
        ex.attach(task(Priority::Normal, "forgets"), poll_once_and_forget(join_send(awaited, None))).unwrap();
    }
    let _ = ex.run(64, None);
    let cross = Rc::new(Cell::new(None));
    let local = Rc::new(Cell::new(None));
    let (c, l) = (cross.clone(), local.clone());
    ex.attach(task(Priority::Normal, "joins"), async move {
        c.set(Some(join_send(awaited, None).await));
        l.set(Some(join(awaited).await));
    })
    .unwrap();
    run_all!(ex);
    assert_eq!(cross.get(), Some(Err(JoinError::TooManyWaiters)));
    assert_eq!(local.get(), Some(Ok(Ok(2))));
}
