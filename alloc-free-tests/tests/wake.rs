//! Wakes of a suspended future task, three ways, 1,000,000 each in its own window:
//!
//! 1. by the `Waker` from its `Context`: the future keeps a clone of it (as any
//!    hand-written future does) and the test takes it and calls `wake()` (by value,
//!    so each cycle clones, wakes and drops a waker); it goes through the executor's
//!    inbox (wake rules 3-5);
//! 2. by `TaskHandle::wake`, the any-thread wake, also through the inbox;
//! 3. by `Executor::wake`, the same-thread wake (wake rule 7: no atomics).
//!
//! Each cycle: the task is suspended; the test wakes it and runs the executor, which
//! takes the wake and resumes the task, which suspends again. All on the test's
//! thread (a wake from another thread is the cross-thread issue's window).

use core::future::poll_fn;
use core::pin::pin;
use core::task::{Poll, Waker};
use keel_alloc_free_tests::{CYCLES, WARM_UP, Window, assert_alloc_free, run_to_end, task};
use keel_core::{Config, Executor, SuspendReason, TaskError, TaskHandle, TaskState, rt, sim::SimDriver};
use std::cell::{Cell, RefCell};

std::thread_local! {
    /// Set by the test before it wakes the task: the event the task waits for.
    static FIRED: Cell<bool> = const { Cell::new(false) };
    /// The waker the task left for the test.
    static WAKER: RefCell<Option<Waker>> = const { RefCell::new(None) };
}

/// Waits for `FIRED`, leaving a clone of its waker in `WAKER`.
async fn event() {
    poll_fn(|cx| {
        if FIRED.with(|f| f.replace(false)) {
            return Poll::Ready(());
        }
        WAKER.with(|w| *w.borrow_mut() = Some(cx.waker().clone()));
        Poll::Pending
    })
    .await
}

fn suspended<D: keel_core::Driver>(ex: core::pin::Pin<&Executor<D>>, h: TaskHandle) {
    assert_eq!(ex.state(h), Ok(TaskState::Suspended(SuspendReason::Wait)));
}

#[test]
fn wakes_by_waker_by_handle_and_by_executor_allocate_nothing() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let n = WARM_UP + CYCLES;

    // 1. The future's own waker.
    let h = ex
        .attach(task::<256>("waker"), async move {
            for _ in 0..n {
                event().await;
            }
            Ok::<u64, TaskError>(1)
        })
        .unwrap_or_else(|e| panic!("attach: {e}"));
    assert_eq!(ex.run(usize::MAX, None), Ok(1));
    let cycle = || {
        FIRED.with(|f| f.set(true));
        let w = WAKER.with(|w| w.borrow_mut().take()).expect("the task left its waker");
        w.wake();
        assert_eq!(ex.run(usize::MAX, None), Ok(1));
    };
    for _ in 0..WARM_UP {
        cycle();
    }
    suspended(ex, h);
    let taken = ex.stats().inbox_taken;
    let w = Window::open();
    for _ in 0..CYCLES {
        cycle();
    }
    let counts = w.close();
    assert_eq!(ex.result(h), Ok(Some(Ok(1))));
    assert_eq!(ex.stats().inbox_taken - taken, CYCLES, "each wake went through the inbox");
    assert_alloc_free("wake by the Context's waker", CYCLES, &counts);

    // 2 and 3: `rt::wait`, woken by handle, then by the executor.
    for by_handle in [true, false] {
        let h = ex
            .attach(task::<256>("wait"), async move {
                for _ in 0..n {
                    rt::wait().await?;
                }
                Ok::<u64, TaskError>(2)
            })
            .unwrap_or_else(|e| panic!("attach: {e}"));
        let cycle = || {
            if by_handle {
                h.wake()
            } else {
                ex.wake(h)
            }
            assert_eq!(ex.run(usize::MAX, None), Ok(1));
        };
        assert_eq!(ex.run(usize::MAX, None), Ok(1));
        for _ in 0..WARM_UP {
            cycle();
        }
        suspended(ex, h);
        let taken = ex.stats().inbox_taken;
        let w = Window::open();
        for _ in 0..CYCLES {
            cycle();
        }
        let counts = w.close();
        run_to_end(ex);
        assert_eq!(ex.result(h), Ok(Some(Ok(2))));
        let (what, through_inbox) =
            if by_handle { ("wake by TaskHandle::wake", CYCLES) } else { ("wake by Executor::wake", 0) };
        assert_eq!(ex.stats().inbox_taken - taken, through_inbox);
        assert_alloc_free(what, CYCLES, &counts);
    }
}
