//! Multishot read from a task's function (keel-linux's `fs::read_multi`,
//! `IORING_OP_READ_MULTISHOT`, kernel 6.7+): one operation on a pollable descriptor (a
//! pipe, a FIFO, an eventfd, a socket, a character device) that the kernel re-fills a
//! provided buffer from each time data arrives. The executor needs
//! `keel_executor_attr::provided_buffers`.
//!
//! Stream rules (cited as "stream rule N"):
//! 1. **Copy out.** The kernel picks buffers from the executor's provided-buffer ring;
//!    `keel_read_multi_next` copies from the oldest one into the caller's memory and gives
//!    it back to the ring once it is read out (a buffer larger than the caller's room
//!    stays in the stream for the next call). So C never holds a ring buffer: nothing to
//!    release twice or to use after its release.
//! 2. **The descriptor stays the program's.** keel never closes it. The program keeps it
//!    open until `keel_read_multi_close` has returned 0: that call cancels the operation
//!    and waits for its end (keel-linux's `end_read`), so afterwards neither the kernel
//!    nor keel uses it and it may be closed.
//! 3. **One thread.** A stream belongs to the thread it was opened on (its executor's):
//!    every call checks (`-KEEL_EWRONGTHREAD`, the stream left as it is). Its calls run in
//!    a task function of that thread; one of another executor there gets `-EXDEV` from
//!    `next` (the stream is armed on the first one's ring), and `close` then frees the
//!    stream while the first executor ends its operation when it next runs.
//! 5. **One call at a time.** While a call of a stream is suspended (its task waits in
//!    `next`, or `close` waits for the end), another task's call of it gets `-EBUSY` and
//!    changes nothing (so `close` never frees a stream a suspended `next` uses).
//! 4. **Ends.** `next` returns the bytes copied, 0 at end of file, or a negated errno that
//!    ended the stream (`-EBADFD` for a regular file, which cannot be polled; `-EINVAL` on
//!    a kernel without the opcode; `-ECANCELED` for a cancelled task, after the data read
//!    before the cancel took); every later `next` returns the same.
//!
//! Errors: `-ESTALE`, `-KEEL_ENOTINTASK`, `-EFAULT` (a NULL pointer), `-EBADF` (a
//! negative descriptor), `-EINVAL` (`len` 0), `-ENOBUFS` (the executor has no provided
//! buffers, or no ring), `-KEEL_EWRONGTHREAD`, `-EXDEV`, `-EBUSY`.

use crate::body::{running, suspend};
use crate::result::{KEEL_EWRONGTHREAD, err, guard, keel_result};
use crate::task::keel_task;
use crate::thread;
use core::cell::{Cell, UnsafeCell};
use core::ffi::{c_int, c_void};
use keel_core::Errno;
use keel_linux::File;
use keel_linux::fs::FiberReadMulti;
use keel_linux::net::{Multishot, ProvidedBuf};

/// A multishot read stream (opaque): from `keel_read_multi_open`, ended and freed by
/// `keel_read_multi_close`.
pub struct keel_read_multi {
    /// The thread that opened it (stream rule 3); never written after.
    thread: u64,
    /// A call of it is running (stream rule 5).
    busy: Cell<bool>,
    inner: UnsafeCell<Stream>,
}

struct Stream {
    /// Taken by `close` (which frees the stream after).
    m: Option<Multishot>,
    /// The program's descriptor, never closed by keel (stream rule 2).
    file: core::mem::ManuallyDrop<File>,
    /// A buffer not read out yet, and how far it was (stream rule 1).
    left: Option<(ProvidedBuf, usize)>,
}

/// The stream behind `s`, on its own thread (stream rule 3).
///
/// # Safety
/// `s` is NULL or a live stream from `keel_read_multi_open`.
unsafe fn stream<'a>(s: *const keel_read_multi) -> Result<&'a keel_read_multi, i64> {
    // SAFETY: NULL or live (the caller's contract); `thread` is never written after the
    // stream is made, so reading it from any thread races with nothing.
    let s = unsafe { s.as_ref() }.ok_or(err(libc::EFAULT))?;
    if s.thread != thread::current() {
        return Err(-KEEL_EWRONGTHREAD);
    }
    Ok(s)
}

/// Runs `f` on the stream as its one running call (stream rule 5): `-EBUSY` while another
/// call of it is suspended.
fn with_stream<R>(s: &keel_read_multi, f: impl FnOnce(&mut Stream) -> Result<R, i64>) -> Result<R, i64> {
    if s.busy.replace(true) {
        return Err(err(libc::EBUSY));
    }
    // SAFETY: `busy` was clear and is set until `f` returns, and only this thread gets
    // here (stream rule 3): no other reference to the inside exists meanwhile.
    let r = f(unsafe { &mut *s.inner.get() });
    s.busy.set(false);
    r
}

fn neg(e: Errno) -> i64 {
    err(e.0)
}

/// Opens a multishot read of `fd` into the executor's provided buffers and writes the
/// stream to `*out`. Nothing is submitted until the first `keel_read_multi_next`.
///
/// Thread safety: from inside the running task's function. Errors: the module doc.
///
/// # Safety
/// `out` is NULL or valid for a write; `fd` stays open until `keel_read_multi_close`
/// returns 0 (stream rule 2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_read_multi_open(
    task: keel_task,
    fd: c_int,
    out: *mut *mut keel_read_multi,
) -> keel_result {
    guard(|| {
        let (t, fib) = running(task)?;
        if out.is_null() {
            return Err(err(libc::EFAULT));
        }
        if fd < 0 {
            return Err(err(libc::EBADF));
        }
        // SAFETY: the program keeps `fd` open while the stream lives (the contract above);
        // the `File` is never dropped, so keel never closes it (stream rule 2).
        let file = core::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
        let m = match suspend(t, fib, |f| f.read_multi(&file)) {
            Ok(m) => m,
            Err(e) => {
                give_up(file);
                return Err(neg(e));
            }
        };
        let s = Box::new(keel_read_multi {
            thread: thread::current(),
            busy: Cell::new(false),
            inner: UnsafeCell::new(Stream { m: Some(m), file, left: None }),
        });
        // SAFETY: valid for a write (checked non-NULL; the caller's duty).
        unsafe { out.write(Box::into_raw(s)) };
        Ok(0)
    })
}

/// The descriptor back to the program without closing it: the `File`'s number given up,
/// or, if something still holds it (an operation another executor keeps), the `File` never
/// dropped (stream rule 2).
fn give_up(file: core::mem::ManuallyDrop<File>) {
    if let Err(f) = core::mem::ManuallyDrop::into_inner(file).into_raw_fd() {
        core::mem::forget(f);
    }
}

/// Copies the next bytes the stream read into `buf` (at most `len`) and returns how many;
/// 0 at end of file; a negated errno that ended the stream (stream rule 4). Suspends the
/// task until data arrives.
///
/// Thread safety: from inside a running task's function on the stream's thread.
///
/// # Safety
/// `s` is NULL or a live stream; `buf` is NULL or `len` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_read_multi_next(
    task: keel_task,
    s: *mut keel_read_multi,
    buf: *mut c_void,
    len: usize,
) -> keel_result {
    guard(|| {
        let (t, fib) = running(task)?;
        // SAFETY: the caller's stream.
        let s = unsafe { stream(s) }?;
        if buf.is_null() {
            return Err(err(libc::EFAULT));
        }
        if len == 0 {
            return Err(err(libc::EINVAL));
        }
        with_stream(s, |s| {
            let (b, at) = match s.left.take() {
                Some(l) => l,
                None => match s.m.as_mut().map(|m| suspend(t, fib, |f| f.next_read(m))) {
                    None => return Err(err(libc::EIO)), // taken by close, which runs (not reached: busy)
                    Some(Ok(Some(b))) => (b, 0),
                    Some(Ok(None)) => return Ok(0),
                    Some(Err(e)) => return Err(neg(e)),
                },
            };
            let n = (b.len() - at).min(len);
            // SAFETY: `buf` has `len >= n` writable bytes (the caller's); the buffer's bytes
            // `at..at + n` were written by the kernel and are ours until it is given back.
            unsafe { core::ptr::copy_nonoverlapping(b[at..].as_ptr(), buf.cast::<u8>(), n) };
            if at + n < b.len() {
                s.left = Some((b, at + n));
            } // else dropped: given back to the ring (stream rule 1)
            Ok(n as i64)
        })
    })
}

/// Ends the stream: cancels its operation, waits for its end (bytes not read yet are
/// dropped), gives every buffer back, and frees the stream; 0 when the descriptor is free
/// for the program to close (stream rule 2). `-EXDEV`: called from a task of another
/// executor than the one that armed it; the stream is freed all the same and that executor
/// ends the operation when it next runs. `-KEEL_EWRONGTHREAD`, `-EBUSY` (a call of another
/// task is suspended in it, stream rule 5): nothing is done.
///
/// Thread safety: from inside a running task's function on the stream's thread.
///
/// # Safety
/// `s` is NULL or a live stream, not used again after this returns anything but
/// `-KEEL_EWRONGTHREAD`, `-EBUSY`, `-EFAULT`, `-ESTALE` or `-KEEL_ENOTINTASK`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_read_multi_close(task: keel_task, s: *mut keel_read_multi) -> keel_result {
    guard(|| {
        let (t, fib) = running(task)?;
        // SAFETY: the caller's stream.
        let sref = unsafe { stream(s) }?;
        // The end is waited for as the stream's running call (rule 5): a call of another
        // task meanwhile gets -EBUSY, and the stream is freed only after, with no call in it.
        let r = with_stream(sref, |st| {
            drop(st.left.take()); // given back
            let m = st.m.take().ok_or(err(libc::EIO))?;
            Ok(suspend(t, fib, |f| f.end_read(m)))
        })?;
        // SAFETY: from `Box::into_raw` in `keel_read_multi_open`, freed once (the caller's
        // duty); no call of it runs (`with_stream` returned), so no reference into it remains.
        let s = unsafe { Box::from_raw(s) };
        give_up(s.inner.into_inner().file);
        r.map(|()| 0).map_err(neg)
    })
}
