//! The wait primitives' mutex and event (wait rules in core/src/wait/mod.rs), for future
//! and fiber tasks, in both flavours.

mod common;
use common::*;
use core::pin::pin;
use keel_core::sim::SimDriver;
use keel_core::wait::{Event, Flavour, Local, LocalMutex, Mutex, MutexGuard, Shared, WaitError};
use keel_core::{Config, Executor, Fiber, FiberAttrs, Priority, RegionStacks, TaskError, TaskState, rt};
use std::cell::RefCell;
use std::rc::Rc;

const STACK: usize = 32 * 1024;
const ATTRS: FiberAttrs = FiberAttrs { stack_size: STACK, ..FiberAttrs::DEFAULT };

fn executor() -> Executor<SimDriver, RegionStacks> {
    let mem: &'static mut [u8] = Vec::leak(vec![0u8; 8 * (STACK + 4096) + 64]);
    Executor::with_stacks(SimDriver::new(), RegionStacks::new(mem, STACK, 4096).unwrap(), Config::default()).unwrap()
}

/// Futures and fibers increment a counter under the lock with a yield in the middle:
/// no increment is lost, and the lock is free at the end.
fn mutual_exclusion<F: Flavour>() {
    let ex = pin!(executor());
    let ex = ex.into_ref();
    let m: Rc<Mutex<u64, F>> = Rc::new(Mutex::new(0));
    for i in 0..4 {
        let m = m.clone();
        if i % 2 == 0 {
            ex.attach(task(Priority::Normal, "future"), async move {
                for _ in 0..50 {
                    let mut g = m.lock().await?;
                    let v = *g;
                    rt::yield_now().await?;
                    *g = v + 1;
                }
                Ok::<_, TaskError>(())
            })
            .unwrap();
        } else {
            ex.attach_fiber(task(Priority::Normal, "fiber"), ATTRS, move |f: &mut Fiber| {
                for _ in 0..50 {
                    let mut g = m.lock_blocking(f)?;
                    let v = *g;
                    f.yield_now()?;
                    *g = v + 1;
                }
                Ok::<_, TaskError>(())
            })
            .unwrap();
        }
    }
    run_all!(ex);
    assert_eq!(*m.try_lock().expect("unlocked at the end"), 200);
    assert_eq!(m.waiters(), 0);
}

#[test]
fn local_mutex_excludes_futures_and_fibers() {
    mutual_exclusion::<Local>();
}

#[test]
fn shared_mutex_excludes_futures_and_fibers() {
    mutual_exclusion::<Shared>();
}

/// A guard moved from the task that locked to another task (through shared state) and
/// dropped there unlocks, and the waiter gets the lock.
#[test]
fn wait_rule_6_a_guard_moved_to_another_task_unlocks_where_it_is_dropped() {
    type Slot = Rc<RefCell<Option<MutexGuard<'static, u32, Local>>>>;
    let ex = pin!(executor());
    let ex = ex.into_ref();
    let m: &'static LocalMutex<u32> = Box::leak(Box::new(LocalMutex::new(1)));
    let slot: Slot = Rc::default();
    let s = slot.clone();
    ex.attach(task(Priority::Normal, "locker"), async move {
        let g = m.lock().await?;
        *s.borrow_mut() = Some(g);
        Ok::<_, TaskError>(())
    })
    .unwrap();
    let waiter = ex
        .attach(task(Priority::Normal, "waiter"), async move {
            let mut g = m.lock().await?;
            *g += 10;
            Ok::<_, TaskError>(u64::from(*g))
        })
        .unwrap();
    let s = slot.clone();
    ex.attach(task(Priority::Low, "dropper"), async move {
        drop(s.borrow_mut().take());
        Ok::<_, TaskError>(())
    })
    .unwrap();
    run_all!(ex);
    assert_eq!(ex.result(waiter), Ok(Some(Ok(11))));
}

/// A cross-thread guard moved to another thread and dropped there wakes the waiter.
#[test]
fn wait_rule_7_a_shared_guard_dropped_on_another_thread_wakes_the_waiter() {
    static M: Mutex<u32> = Mutex::new(0);
    let ex = pin!(executor());
    let ex = ex.into_ref();
    let g = M.try_lock().unwrap();
    let waiter = ex
        .attach(task(Priority::Normal, "waiter"), async {
            let g = M.lock().await?;
            Ok::<_, TaskError>(u64::from(*g))
        })
        .unwrap();
    ex.run(4, None).unwrap();
    assert_eq!(M.waiters(), 1);
    std::thread::spawn(move || {
        let mut g = g;
        *g = 42;
    })
    .join()
    .unwrap();
    run_all!(ex);
    assert_eq!(ex.result(waiter), Ok(Some(Ok(42))));
}

/// `set` wakes every waiter (futures and fibers) once; while set, waits return at
/// once; after `reset` they wait again.
fn event_wakes_all<F: Flavour>() {
    let ex = pin!(executor());
    let ex = ex.into_ref();
    let ev: Rc<Event<F>> = Rc::new(Event::new(false));
    let mut runs = Vec::new();
    for i in 0..4 {
        let e = ev.clone();
        runs.push(if i % 2 == 0 {
            ex.attach(task(Priority::Normal, "future"), async move {
                e.wait().await?;
                Ok::<_, TaskError>(i)
            })
            .unwrap()
        } else {
            ex.attach_fiber(task(Priority::Normal, "fiber"), ATTRS, move |f: &mut Fiber| {
                e.wait_blocking(f)?;
                Ok::<_, TaskError>(i)
            })
            .unwrap()
        });
    }
    ex.run(16, None).unwrap();
    assert_eq!(ev.waiters(), 4);
    ev.set();
    assert_eq!(ev.waiters(), 0);
    run_all!(ex);
    for (i, run) in runs.into_iter().enumerate() {
        assert_eq!(ex.result(run), Ok(Some(Ok(i as u64))));
    }
    ev.reset();
    let e = ev.clone();
    let late = ex
        .attach(task(Priority::Normal, "late"), async move {
            e.wait().await?;
            Ok::<_, TaskError>(9)
        })
        .unwrap();
    ex.run(4, None).unwrap();
    assert_eq!(ex.state(late), Ok(TaskState::Suspended(keel_core::SuspendReason::Wait)));
    ev.set();
    run_all!(ex);
    assert_eq!(ex.result(late), Ok(Some(Ok(9))));
}

#[test]
fn local_event_set_wakes_every_waiter() {
    event_wakes_all::<Local>();
}

#[test]
fn shared_event_set_wakes_every_waiter() {
    event_wakes_all::<Shared>();
}

#[test]
fn a_cancelled_event_waiter_leaves_the_queue() {
    let ex = pin!(executor());
    let ex = ex.into_ref();
    let ev: Rc<Event<Local>> = Rc::new(Event::new(false));
    let e = ev.clone();
    let run = ex
        .attach(task(Priority::Normal, "waiter"), async move {
            Ok::<_, TaskError>(u64::from(e.wait().await == Err(WaitError::Cancelled)))
        })
        .unwrap();
    ex.run(4, None).unwrap();
    assert_eq!(ev.waiters(), 1);
    ex.cancel(run).unwrap();
    run_all!(ex);
    assert_eq!(ex.result(run), Ok(Some(Ok(1))));
    assert_eq!(ev.waiters(), 0);
}
