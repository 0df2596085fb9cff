//! `keel_result`, the error codes, `keel_strerror`, and the boundary guard every exported
//! function runs its body under.
//!
//! Boundary rules (cited as "boundary rule N"):
//! 1. Every `extern "C"` function that does more than return a constant or a static
//!    string (`keel_version`, `keel_strerror`, the `*_storage_size` calls) runs its body
//!    inside [`guard`]: a Rust panic in keel is caught there and becomes
//!    [`KEEL_EPANICKED`], never an unwind into C. (Were one to escape, Rust aborts the
//!    process at an `extern "C"` boundary rather than unwind.)
//! 2. A result is a value (`>= 0`) or a negative error code: a Linux errno (`1..=4095`,
//!    negated) or one of keel's own codes, which sit above the errnos Linux uses
//!    (`KEEL_ERRNO_FIRST..`) and below `KEEL_ERRNO_MAX`, so one range test tells an error.
//! 3. Misuse keel can detect gets a code, never a crash: a null or stale handle
//!    (`-ESTALE`), the wrong thread (`-KEEL_EWRONGTHREAD`), an attached task destroyed
//!    (`-EBUSY`), bad sizes or attributes (`-EINVAL`).

use core::ffi::{c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// A value (`>= 0`) or a negated error code (`-ESTALE`, `-KEEL_EPANICKED`, ...).
#[allow(non_camel_case_types)]
pub type keel_result = i64;

/// The largest error code: results in `-KEEL_ERRNO_MAX..=-1` are errors.
pub const KEEL_ERRNO_MAX: i64 = 4095;
/// keel's own codes start here (above every errno Linux defines).
pub const KEEL_ERRNO_FIRST: i64 = 4000;
/// A Rust panic inside keel was caught at the boundary, or a task's run ended in one.
pub const KEEL_EPANICKED: i64 = 4000;
/// The call came from a thread other than the executor's (executors are single-threaded).
pub const KEEL_EWRONGTHREAD: i64 = 4001;
/// A task function returned a value that is neither `>= 0` nor `-1..=-KEEL_ERRNO_MAX`.
pub const KEEL_EBADRESULT: i64 = 4002;
/// The call needs the running task: it was made outside that task's own function.
pub const KEEL_ENOTINTASK: i64 = 4003;
/// A fiber left the floating-point control state changed (see keel's fiber rule 6).
pub const KEEL_EFPCONTROL: i64 = 4004;
/// Nothing could ever wake a task: the executor would wait forever.
pub const KEEL_ESTALLED: i64 = 4005;

/// The negated code of `errno`.
pub(crate) const fn err(errno: c_int) -> keel_result {
    -(errno as i64)
}

/// A C buffer argument's length for an SQE: `-EFAULT` for a null buffer of nonzero
/// length; a length over `u32::MAX` is cut to it (the kernel's field; the operation then
/// moves fewer bytes, as a short read or write may).
pub(crate) fn buf_len(buf: *const core::ffi::c_void, len: usize) -> Result<u32, i64> {
    if buf.is_null() && len != 0 {
        return Err(err(libc::EFAULT));
    }
    Ok(len.min(u32::MAX as usize) as u32)
}

/// Boundary rule 1: runs `body`; a panic becomes `-KEEL_EPANICKED`.
#[inline(always)]
pub(crate) fn guard(body: impl FnOnce() -> Result<i64, i64>) -> keel_result {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => e,
        Err(payload) => {
            // Dropping a payload may panic again: keep that inside too.
            let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
            -KEEL_EPANICKED
        }
    }
}

/// A static, NUL-terminated description of `code` (a result, negative or not).
///
/// Thread safety: any thread. Ownership: the string is static; do not free it.
/// Errors: an unknown code gets "unknown error".
#[unsafe(no_mangle)]
pub extern "C" fn keel_strerror(code: keel_result) -> *const c_char {
    let msg: &'static core::ffi::CStr = match code.unsigned_abs() as i64 {
        0 => c"success",
        KEEL_EPANICKED => c"a Rust panic inside keel or in the task's run (caught: nothing unwound into C)",
        KEEL_EWRONGTHREAD => c"wrong thread: an executor and its tasks are used from the thread that made the executor",
        KEEL_EBADRESULT => c"the task function returned a value that is neither >= 0 nor a negated error code",
        KEEL_ENOTINTASK => c"not in the task: this call must be made from inside the running task's own function",
        KEEL_EFPCONTROL => c"a fiber left the rounding mode or FP exception masks changed at a switch",
        KEEL_ESTALLED => c"nothing can ever wake a task: the executor would wait forever",
        e => errno_text(e as c_int),
    };
    msg.as_ptr()
}

/// The errnos keel returns itself, and the common ones i/o brings back.
fn errno_text(e: c_int) -> &'static core::ffi::CStr {
    match e {
        libc::EPERM => c"operation not permitted",
        libc::ENOENT => c"no such file or directory",
        libc::EINTR => c"interrupted",
        libc::EIO => c"input/output error",
        libc::EBADF => c"bad file descriptor",
        libc::EAGAIN => c"try again",
        libc::ENOMEM => c"out of memory",
        libc::EACCES => c"permission denied",
        libc::EFAULT => c"bad address",
        libc::EBUSY => c"busy: the task is attached (wait for it or cancel it first)",
        libc::EEXIST => c"file exists",
        libc::EINVAL => c"invalid argument",
        libc::ENOSPC => c"no space left on device",
        libc::EPIPE => c"broken pipe",
        libc::ERANGE => c"out of range",
        libc::EDEADLK => c"the call would deadlock (made from inside the executor's own run)",
        libc::ENOSYS => c"not implemented",
        libc::ENODATA => c"no result: the task has not run yet",
        libc::ETIME => c"timed out with no work done",
        libc::EOPNOTSUPP => c"not supported by this executor (it has no ring)",
        libc::EADDRINUSE => c"address in use",
        libc::ECONNRESET => c"connection reset",
        libc::ECONNREFUSED => c"connection refused",
        libc::ESTALE => c"stale or null handle: the object was destroyed, or never made",
        libc::EALREADY => c"too late: the task has completed already",
        libc::EINPROGRESS => c"in progress: the task has not completed",
        libc::ECANCELED => c"cancelled",
        _ => c"unknown error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_a_code() {
        assert_eq!(guard(|| panic!("inside")), -KEEL_EPANICKED);
        assert_eq!(guard(|| Ok(5)), 5);
        assert_eq!(guard(|| Err(err(libc::EINVAL))), -22);
    }

    #[test]
    fn codes_have_texts() {
        // SAFETY: keel_strerror returns static NUL-terminated strings.
        let text = |c| unsafe { core::ffi::CStr::from_ptr(keel_strerror(c)) }.to_str().unwrap();
        assert!(text(-KEEL_EWRONGTHREAD).starts_with("wrong thread"));
        assert!(text(err(libc::ESTALE)).starts_with("stale"));
        assert_eq!(text(-3999), "unknown error");
        assert_eq!(text(0), "success");
    }
}
