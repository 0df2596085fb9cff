//! The wait primitives' hand-offs (core/src/wait/), 1,000,000 resumptions each in its
//! own window: two future tasks pass a semaphore permit back and forth (same-thread and
//! cross-thread flavours), two pass a mutex lock, a producer and a consumer pass values
//! through a one-slot channel, and a task waits on an event the test sets and resets.
//! Every waiter's node lives in its future; nothing is allocated.

use core::mem::MaybeUninit;
use core::pin::pin;
use keel_alloc_free_tests::{CYCLES, WARM_UP, Window, assert_alloc_free, run_items, run_to_end, task};
use keel_core::wait::{Channel, Event, Flavour, Local, Mutex, Semaphore, Shared};
use keel_core::{Config, Executor, TaskError, sim::SimDriver};

/// Runs `WARM_UP` items, then `CYCLES` items in a window, then to the end.
fn measure(what: &str, ex: core::pin::Pin<&Executor<SimDriver>>) {
    run_items(ex, WARM_UP);
    let w = Window::open();
    run_items(ex, CYCLES);
    let counts = w.close();
    assert_alloc_free(what, CYCLES, &counts);
    run_to_end(ex);
}

fn semaphore_handoff<F: Flavour>(what: &str) {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let sem: &'static Semaphore<F> = Box::leak(Box::new(Semaphore::new(0)));
    let n = WARM_UP + CYCLES;
    for _ in 0..2 {
        ex.attach(task::<256>("handoff"), async move {
            for _ in 0..n {
                drop(sem.acquire().await?);
            }
            Ok::<u64, TaskError>(0)
        })
        .unwrap_or_else(|e| panic!("attach: {e}"));
    }
    // Both queue, then the one permit goes back and forth: one resumption per hand-off.
    run_items(ex, 2);
    sem.add_permits(1);
    measure(what, ex);
    assert_eq!((sem.available_permits(), sem.waiters()), (1, 0));
}

#[test]
fn semaphore_handoffs_allocate_nothing() {
    // `Box::leak` of a `!Sync` value is fine: the test's thread is the only one.
    semaphore_handoff::<Local>("LocalSemaphore hand-off");
    semaphore_handoff::<Shared>("Semaphore (cross-thread) hand-off");
}

#[test]
fn mutex_handoffs_allocate_nothing() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let m: &'static Mutex<u64, Local> = Box::leak(Box::new(Mutex::new(0)));
    let n = WARM_UP + CYCLES;
    for _ in 0..2 {
        ex.attach(task::<256>("lock"), async move {
            for _ in 0..n {
                *m.lock().await? += 1;
            }
            Ok::<u64, TaskError>(0)
        })
        .unwrap_or_else(|e| panic!("attach: {e}"));
    }
    let held = m.try_lock().unwrap();
    run_items(ex, 2);
    drop(held);
    measure("LocalMutex hand-off", ex);
    assert_eq!(*m.try_lock().unwrap(), 2 * n);
}

#[test]
fn channel_and_event_handoffs_allocate_nothing() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let buf: &'static mut [MaybeUninit<u64>] = Box::leak(Box::new([MaybeUninit::uninit()]));
    let ch: &'static Channel<'static, u64, Local> = Box::leak(Box::new(Channel::new(buf)));
    let n = WARM_UP + CYCLES;
    ex.attach(task::<256>("producer"), async move {
        for i in 0..n {
            ch.send(i).await.map_err(|e| e.reason)?;
        }
        Ok::<u64, TaskError>(0)
    })
    .unwrap_or_else(|e| panic!("attach: {e}"));
    ex.attach(task::<256>("consumer"), async move {
        for i in 0..n {
            assert_eq!(ch.recv().await?, i);
        }
        Ok::<u64, TaskError>(0)
    })
    .unwrap_or_else(|e| panic!("attach: {e}"));
    measure("LocalChannel send/recv (one slot)", ex);

    let ev: &'static Event<Local> = Box::leak(Box::new(Event::new(false)));
    ex.attach(task::<256>("event"), async move {
        for _ in 0..n {
            ev.wait().await?;
            ev.reset();
        }
        Ok::<u64, TaskError>(0)
    })
    .unwrap_or_else(|e| panic!("attach: {e}"));
    let cycle = || {
        ev.set();
        run_items(ex, 1);
    };
    run_items(ex, 1);
    for _ in 0..WARM_UP {
        cycle();
    }
    let w = Window::open();
    for _ in 0..CYCLES {
        cycle();
    }
    let counts = w.close();
    assert_alloc_free("LocalEvent set, wait, reset", CYCLES, &counts);
    run_to_end(ex);
}
