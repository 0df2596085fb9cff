//! A C task with the smallest stack `keel_task_attr` accepts (`KEEL_TASK_MIN_STACK`) can
//! make each of keel's suspending calls, on both switchers, in a debug build (keel's own
//! frames under a call are deepest there): `the_minimum_stack_fits_every_suspending_call`
//! runs each call once in a child process of its own (an overflow aborts the process:
//! keel reports "stack overflow in task N" and aborts), at that size. A smaller size is
//! refused with `-EINVAL` (at 4 KiB, `keel_task_suspend_for` and the i/o calls overflowed).

use core::ffi::c_void;
use keel::*;
use std::process::Command;

/// A descriptor no file uses.
const NO_FD: i32 = 1 << 29;

/// What the child runs: (call, switcher) from `W` and `SW`, on a `STACK`-byte stack.
const CALLS: [&str; 7] =
    ["yield", "suspend_for", "file_read", "socket_recv", "fsync", "suspend_until_completed_io", "within_file_read"];

/// `keel_within`'s callback: a read of no file under the scope's deadline.
unsafe extern "C-unwind" fn read_no_fd(task: keel_task, _: *mut c_void) -> i64 {
    let mut buf = [0u8; 16];
    // SAFETY: `buf` is a valid local buffer; the descriptor names no file.
    unsafe { keel_file_read(task, NO_FD, buf.as_mut_ptr().cast(), buf.len(), 0) }
}

unsafe extern "C-unwind" fn body(task: keel_task, user: *mut c_void) -> i64 {
    let mut buf = [0u8; 16];
    // SAFETY: `buf` is a valid local buffer; the descriptor names no file.
    unsafe {
        match user as usize {
            0 => keel_task_yield(task),
            1 => keel_task_suspend_for(task, 1000),
            2 => keel_file_read(task, NO_FD, buf.as_mut_ptr().cast(), buf.len(), 0),
            3 => keel_socket_recv(task, NO_FD, buf.as_mut_ptr().cast(), buf.len(), 0),
            4 => keel_file_fsync(task, NO_FD),
            5 => keel_task_suspend_until_completed_io(task, 1),
            _ => keel_within(task, 1_000_000, Some(read_no_fd), core::ptr::null_mut()),
        }
    }
}

#[test]
#[ignore = "a child of the_minimum_stack_fits_every_suspending_call (an overflow aborts its process)"]
fn child_makes_one_suspending_call() {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<usize>().ok());
    let (which, switcher) = (env("W").unwrap_or(0), env("SW").unwrap_or(0) as u8);
    let stack = env("STACK").unwrap_or(KEEL_TASK_MIN_STACK);
    let mut ex = keel_executor { storage: core::ptr::null_mut(), generation: 0 };
    let mut t = keel_task { storage: core::ptr::null_mut(), generation: 0 };
    let ea = keel_executor_attr { ring_entries: 8, ..Default::default() };
    let ta = keel_task_attr { stack_size: stack, switcher, ..Default::default() };
    // SAFETY: valid attributes and out-pointers.
    unsafe {
        assert_eq!(keel_executor_create(&ea, &mut ex), 0);
        assert_eq!(keel_task_create(&ta, &mut t), 0);
    }
    assert_eq!(keel_task_attach(ex, t, Some(body), which as *mut c_void), 0);
    while keel_executor_attached(ex) > 0 {
        assert!(keel_executor_run(ex, 16, 1_000_000_000) >= 0);
    }
    // Reached only if the call fitted: its result is a typed code.
    assert!(keel_task_result(t) > -KEEL_ERRNO_MAX);
    assert_eq!(keel_task_destroy(t), 0);
    assert_eq!(keel_executor_destroy(ex), 0);
}

#[test]
fn the_minimum_stack_fits_every_suspending_call() {
    let exe = std::env::current_exe().unwrap();
    let mut failed = Vec::new();
    for (w, call) in CALLS.iter().enumerate() {
        for sw in [KEEL_SWITCHER_FIBER, KEEL_SWITCHER_UCONTEXT] {
            let out = Command::new(&exe)
                .args(["--ignored", "--exact", "child_makes_one_suspending_call", "--nocapture"])
                .env("W", w.to_string())
                .env("SW", sw.to_string())
                .env("STACK", KEEL_TASK_MIN_STACK.to_string())
                .output()
                .unwrap();
            if !out.status.success() {
                failed.push(format!("{call} (switcher {sw}): {}", String::from_utf8_lossy(&out.stderr).trim()));
            }
        }
    }
    assert!(failed.is_empty(), "at KEEL_TASK_MIN_STACK ({KEEL_TASK_MIN_STACK} bytes):\n{}", failed.join("\n"));
}

#[test]
fn a_stack_below_the_minimum_is_refused() {
    let mut t = keel_task { storage: core::ptr::null_mut(), generation: 0 };
    for stack_size in [4096, KEEL_TASK_MIN_STACK - 1] {
        let ta = keel_task_attr { stack_size, ..Default::default() };
        // SAFETY: valid attributes and out-pointer.
        assert_eq!(unsafe { keel_task_create(&ta, &mut t) }, -(libc::EINVAL as i64), "{stack_size}");
    }
    let ta = keel_task_attr { stack_size: KEEL_TASK_MIN_STACK, ..Default::default() };
    // SAFETY: as above.
    assert_eq!(unsafe { keel_task_create(&ta, &mut t) }, 0);
    assert_eq!(keel_task_destroy(t), 0);
}
