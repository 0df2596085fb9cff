//! Descriptors closed behind keel's back: a C program that closes with `close(2)` a
//! number keel operations used tells keel so (keel-linux's `epoll::note_closed`,
//! close-log rule 4), or closes it through `keel_fd_close`. Needed on the epoll backend
//! only (on io_uring each operation holds its file; there these calls cost a
//! thread-local store): without it the epoll engine finds a wait on the number's next
//! file only by revalidation, up to 2 s later. `keel_file_close`/`keel_socket_close`
//! (from a task) need neither: keel makes those closes itself.
//!
//! Thread safety: the thread whose executor used the number (from its tasks or between
//! its runs), before that executor runs again; on another thread the record reaches
//! only that thread's executors. Neither call allocates or takes a lock.

use crate::result::{guard, keel_result};
use core::ffi::c_int;

/// Records that `fd` was closed (or is about to be) with `close(2)` outside keel: the
/// executors of this thread trust nothing they knew of the number (the epoll engine
/// renews it at its next run: an operation waiting on it then ends with `-EBADF`, or,
/// if the number names a new file, waits on that one). Call it right before or after
/// the close, on the thread whose executor used the number. Any number is accepted (a
/// negative one or one no executor used costs nothing). Returns 0.
#[unsafe(no_mangle)]
pub extern "C" fn keel_fd_closed(fd: c_int) -> keel_result {
    guard(|| {
        keel_linux::epoll::note_closed(fd);
        Ok(0)
    })
}

/// `keel_fd_closed(fd)`, then `close(fd)`: a close outside a task (or instead of
/// `keel_file_close`/`keel_socket_close`, which go through the ring) that the epoll
/// engine hears of. Returns 0 or close(2)'s negated errno (`-EBADF`; after `-EINTR` or
/// `-EIO` the number is closed anyway, as on Linux: do not close it again).
#[unsafe(no_mangle)]
pub extern "C" fn keel_fd_close(fd: c_int) -> keel_result {
    guard(|| {
        keel_linux::epoll::note_closed(fd);
        // SAFETY: closing a number touches no memory; the caller gives the descriptor up.
        match unsafe { libc::close(fd) } {
            0 => Ok(0),
            _ => Err(-i64::from(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))),
        }
    })
}
