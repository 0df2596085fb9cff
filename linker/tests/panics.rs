//! Boundary rule 1 and body rule 3: a panic during a task's run (here a task function
//! written in Rust, `C-unwind`) ends the run as `-KEEL_EPANICKED`; nothing unwinds out of
//! the C API, and the executor and the task stay usable.

use core::ffi::c_void;
use keel::*;

unsafe extern "C-unwind" fn panics(_task: keel_task, _user: *mut c_void) -> i64 {
    panic!("a task function panicked")
}

unsafe extern "C-unwind" fn yields_then_panics(task: keel_task, _user: *mut c_void) -> i64 {
    assert_eq!(keel_task_yield(task), 0);
    panic!("after a yield")
}

unsafe extern "C-unwind" fn returns_three(_task: keel_task, _user: *mut c_void) -> i64 {
    3
}

fn drain(ex: keel_executor) {
    while keel_executor_attached(ex) > 0 {
        assert!(keel_executor_run(ex, 16, 5_000_000_000) >= 0);
    }
}

#[test]
fn a_panicking_task_ends_panicked_and_the_task_is_reusable() {
    let mut ex = keel_executor { storage: core::ptr::null_mut(), generation: 0 };
    let mut task = keel_task { storage: core::ptr::null_mut(), generation: 0 };
    // SAFETY: valid out-pointers, NULL attributes.
    unsafe {
        assert_eq!(keel_executor_create(core::ptr::null(), &mut ex), 0);
        assert_eq!(keel_task_create(core::ptr::null(), &mut task), 0);
    }
    for f in [panics as unsafe extern "C-unwind" fn(keel_task, *mut c_void) -> i64, yields_then_panics] {
        assert_eq!(keel_task_attach(ex, task, Some(f), core::ptr::null_mut()), 0);
        drain(ex);
        assert_eq!(keel_task_result(task), -KEEL_EPANICKED);
    }
    assert_eq!(keel_task_attach(ex, task, Some(returns_three), core::ptr::null_mut()), 0);
    drain(ex);
    assert_eq!(keel_task_result(task), 3);
    assert_eq!(keel_task_destroy(task), 0);
    assert_eq!(keel_executor_destroy(ex), 0);
}
