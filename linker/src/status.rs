//! NT-style i/o status blocks for C task functions: initiate several operations, each with
//! its own `keel_io_status`, then `keel_task_suspend_until_completed_io` until they have
//! completed, and read each block's result.
//!
//! Status rules (cited as "status rule N"):
//! 1. A `keel_io_status` holds keel's `IoStatus` behind a magic word that `init` writes.
//!    Once initiated it is linked in its task's lists: it must not move, be copied or be
//!    freed until its operation has completed and been taken
//!    (`keel_task_suspend_until_completed_io`), or, for a block outside the function's
//!    own stack (static or heap memory), until the task's run has completed (a run whose
//!    function returns with i/o in flight drains it first). A block on the task
//!    function's stack is a C stack object like any other: its frame goes at the
//!    return, so every operation started with it is reaped before the function returns.
//!    keel cannot see a block's memory go away: a block freed while linked is undefined
//!    behaviour, as for any pointer.
//! 2. `init` of a block that already holds a status (magic present) drops that status
//!    first, as Rust would: in flight, its operation is cancelled and orphaned to the task
//!    (io_status rule 4); completed and not taken, it leaves the completed list.
//! 3. Every call is made from inside the running task's function (body rule 1); the
//!    buffers an operation names stay valid until its status completes (rule 1's span).

use crate::body::{running, suspend};
use crate::result::{buf_len, err, guard, keel_result};
use crate::task::keel_task;
use core::ffi::{c_int, c_void};
use core::pin::Pin;
use io_uring::{opcode, types};
use keel_core::{Fiber, InitiateError, IoStatus, NextIo};
use keel_linux::{RingDriver, RingOp};

/// Bytes of a `keel_io_status`.
pub const KEEL_IO_STATUS_SIZE: usize = 64;
/// Alignment of a `keel_io_status`.
pub const KEEL_IO_STATUS_ALIGN: usize = 8;

static_assertions::const_assert!(core::mem::size_of::<Block>() <= KEEL_IO_STATUS_SIZE);
static_assertions::const_assert!(core::mem::align_of::<Block>() <= KEEL_IO_STATUS_ALIGN);

/// A status block: opaque, 64 bytes, 8-aligned; `keel_io_status_init` makes it one.
#[repr(C)]
pub struct keel_io_status {
    /// Opaque.
    pub opaque: [u64; 8],
}

static_assertions::const_assert_eq!(core::mem::size_of::<keel_io_status>(), KEEL_IO_STATUS_SIZE);
static_assertions::const_assert_eq!(core::mem::align_of::<keel_io_status>(), KEEL_IO_STATUS_ALIGN);

const MAGIC: u64 = 0x6b65_656c_5f69_6f73; // "keel_ios"

#[repr(C)]
struct Block {
    magic: u64,
    st: IoStatus,
}

/// Status rule 1: the block behind a C pointer, if it holds a status.
///
/// # Safety
/// `p` is NULL or a valid, aligned `KEEL_IO_STATUS_SIZE`-byte block.
unsafe fn block<'a>(p: *mut keel_io_status) -> Result<Pin<&'a IoStatus>, i64> {
    let b = p.cast::<Block>();
    if b.is_null() || !b.is_aligned() {
        return Err(err(libc::EFAULT));
    }
    // SAFETY: valid (caller); the magic word is plain data.
    if unsafe { (*b).magic } != MAGIC {
        return Err(err(libc::EINVAL));
    }
    // SAFETY: initialised (magic present) and never moved (status rule 1).
    Ok(unsafe { Pin::new_unchecked(&(*b).st) })
}

/// Makes `status` an idle status block (status rule 2: a block that held one drops it
/// first). Call it once before the block's first use; a block whose operation was taken
/// may be initiated again without it.
///
/// Thread safety: from inside the running task's function. Errors: `-ESTALE`,
/// `-KEEL_ENOTINTASK`, `-EFAULT` (NULL or misaligned).
///
/// # Safety
/// `status` is NULL or `KEEL_IO_STATUS_SIZE` writable bytes aligned to
/// `KEEL_IO_STATUS_ALIGN`, not copied from another block.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_io_status_init(task: keel_task, status: *mut keel_io_status) -> keel_result {
    guard(|| {
        running(task)?;
        let b = status.cast::<Block>();
        if b.is_null() || !b.is_aligned() {
            return Err(err(libc::EFAULT));
        }
        // SAFETY: valid (caller). Status rule 2: a status there is dropped in place (its
        // `Drop` unlinks or orphans it) before the new one is written.
        unsafe {
            if (*b).magic == MAGIC {
                core::ptr::drop_in_place(&raw mut (*b).st);
            }
            b.write(Block { magic: MAGIC, st: IoStatus::new() });
        }
        Ok(0)
    })
}

/// The result of `status`'s operation: bytes or a value (`>= 0`) or its negated errno;
/// `-EINPROGRESS` while in flight, `-ENODATA` if nothing was initiated with it.
///
/// Thread safety: from inside the running task's function. Errors: `-ESTALE`,
/// `-KEEL_ENOTINTASK`, `-EFAULT`, `-EINVAL` (never initialised).
///
/// # Safety
/// As for `keel_io_status_init`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_io_status_result(task: keel_task, status: *mut keel_io_status) -> keel_result {
    guard(|| {
        running(task)?;
        // SAFETY: the caller's block (contract above).
        let st = unsafe { block(status) }?;
        match st.result() {
            Some(Ok(n)) => Ok(n as i64),
            Some(Err(e)) => Err(-(e.0 as i64)),
            None if st.is_in_flight() => Err(err(libc::EINPROGRESS)),
            None => Err(err(libc::ENODATA)),
        }
    })
}

/// Initiates `entry` with `status` for the running task; may suspend while the ring has
/// no room (in I/O-priority order).
///
/// # Safety
/// What `entry` names stays valid until the status completes (status rule 3).
unsafe fn initiate(task: keel_task, status: *mut keel_io_status, entry: io_uring::squeue::Entry) -> Result<i64, i64> {
    let (t, fib) = running(task)?;
    // SAFETY: the caller's block (contract of the exported calls).
    let st = unsafe { block(status) }?;
    let rt = fib.with_driver::<RingDriver, _>(|d| d.realtime_ioprio()).ok_or(err(libc::EOPNOTSUPP))?;
    // SAFETY: the caller keeps what the entry names valid until completion.
    let op = unsafe { RingOp::from_entry(entry) };
    let op = op.with_priority(fib.priorities().io, rt).unwrap_or_else(|op| op);
    suspend(t, fib, |f: &mut Fiber| f.initiate::<RingDriver>(st, op)).map(|()| 0).map_err(|e| match e {
        InitiateError::StatusBusy(_) => err(libc::EBUSY),
        InitiateError::Cancelled(_) => err(libc::ECANCELED),
        InitiateError::Refused(_, e) => -(e.0 as i64),
        InitiateError::WrongDriver(_) => err(libc::EOPNOTSUPP),
        _ => err(libc::EINVAL),
    })
}

/// Starts `pread(fd, buf, len, offset)` with `status` and returns at once (0); the
/// result arrives in the block. Thread safety and errors: as `keel_io_status_result`,
/// plus `-EBUSY` (the block's last operation is in flight or not yet taken),
/// `-EOPNOTSUPP` (no ring), `-ECANCELED`.
///
/// # Safety
/// `status` as for `keel_io_status_init`; `buf` holds `len` writable bytes that nothing
/// else uses until the status completes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_file_read_async(
    task: keel_task,
    status: *mut keel_io_status,
    fd: c_int,
    buf: *mut c_void,
    len: usize,
    offset: u64,
) -> keel_result {
    guard(|| {
        let len = buf_len(buf, len)?;
        let e = opcode::Read::new(types::Fd(fd), buf.cast(), len).offset(offset).build();
        // SAFETY: the buffer's span is the caller's duty (contract above).
        unsafe { initiate(task, status, e) }
    })
}

/// Starts `pwrite(fd, buf, len, offset)` with `status`; as `keel_file_read_async`.
///
/// # Safety
/// `status` as for `keel_io_status_init`; `buf` holds `len` readable bytes valid until
/// the status completes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_file_write_async(
    task: keel_task,
    status: *mut keel_io_status,
    fd: c_int,
    buf: *const c_void,
    len: usize,
    offset: u64,
) -> keel_result {
    guard(|| {
        let len = buf_len(buf, len)?;
        let e = opcode::Write::new(types::Fd(fd), buf.cast(), len).offset(offset).build();
        // SAFETY: as in `keel_file_read_async`.
        unsafe { initiate(task, status, e) }
    })
}

/// Suspends the task until one of its operations completes, then takes up to `max`
/// completed status blocks (their results are set) and returns how many; 0 at once if
/// nothing is in flight.
///
/// Thread safety: from inside the running task's function. Errors: `-ESTALE`,
/// `-KEEL_ENOTINTASK`, `-ECANCELED` (cancelled: its operations still complete; return).
#[unsafe(no_mangle)]
pub extern "C" fn keel_task_suspend_until_completed_io(task: keel_task, max: usize) -> keel_result {
    guard(|| {
        let (t, fib) = running(task)?;
        suspend(t, fib, |f: &mut Fiber| f.suspend_until_completed_io(max))
            .map(|n| n as i64)
            .map_err(|_| err(libc::ECANCELED))
    })
}

/// Suspends the task until one of its status blocks completes, or `timeout_ns` passes
/// (`KEEL_NO_TIMEOUT`: no limit; 0: only look), takes that block (oldest completion
/// first) and stores its address in `*completed`; read its result with
/// `keel_io_status_result`. Returns 0, `-ETIME` (the timeout passed first; the operations
/// stay in flight) or `-ENODATA` (nothing in flight and nothing completed).
///
/// Thread safety: from inside the running task's function. Errors: `-ESTALE`,
/// `-KEEL_ENOTINTASK`, `-EFAULT` (`completed` NULL), `-ECANCELED` (cancelled: return).
///
/// # Safety
/// `completed` is NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_task_next_completed_io(
    task: keel_task,
    timeout_ns: u64,
    completed: *mut *mut keel_io_status,
) -> keel_result {
    guard(|| {
        if completed.is_null() {
            return Err(err(libc::EFAULT));
        }
        let (t, fib) = running(task)?;
        let timeout =
            (timeout_ns != crate::executor::KEEL_NO_TIMEOUT).then(|| core::time::Duration::from_nanos(timeout_ns));
        match suspend(t, fib, |f: &mut Fiber| f.next_completed_io(timeout)) {
            Err(_) => Err(err(libc::ECANCELED)),
            Ok(NextIo::TimedOut) => Err(err(libc::ETIME)),
            Ok(NextIo::Idle) => Err(err(libc::ENODATA)),
            Ok(NextIo::Completed(done)) => {
                // Status rule 1: every block this task initiated is a `Block`, its status
                // at a fixed offset, so the block starts that far before the status.
                let block = done.status_ptr().cast::<u8>().wrapping_sub(core::mem::offset_of!(Block, st));
                // SAFETY: as above, a live `Block` (its status was just completed).
                debug_assert_eq!(unsafe { (*block.cast::<Block>()).magic }, MAGIC);
                // SAFETY: the caller's pointer, checked non-null.
                unsafe { completed.write(block.cast_mut().cast()) };
                Ok(0)
            }
        }
    })
}

/// Starts `fsync(fd)` with `status`; as `keel_file_read_async`.
///
/// # Safety
/// `status` as for `keel_io_status_init`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_file_fsync_async(task: keel_task, status: *mut keel_io_status, fd: c_int) -> keel_result {
    // SAFETY: the entry points at no memory; the block is the caller's (contract above).
    guard(|| unsafe { initiate(task, status, opcode::Fsync::new(types::Fd(fd)).build()) })
}

/// Starts `send(fd, buf, len, flags)` with `status`; as `keel_file_write_async`.
///
/// # Safety
/// `status` as for `keel_io_status_init`; `buf` holds `len` readable bytes valid until
/// the status completes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_socket_send_async(
    task: keel_task,
    status: *mut keel_io_status,
    fd: c_int,
    buf: *const c_void,
    len: usize,
    flags: c_int,
) -> keel_result {
    guard(|| {
        let len = buf_len(buf, len)?;
        let e = opcode::Send::new(types::Fd(fd), buf.cast(), len).flags(flags).build();
        // SAFETY: the buffer's span is the caller's duty (contract above).
        unsafe { initiate(task, status, e) }
    })
}

/// Starts `recv(fd, buf, len, flags)` with `status`; as `keel_file_read_async`.
///
/// # Safety
/// `status` as for `keel_io_status_init`; `buf` holds `len` writable bytes that nothing
/// else uses until the status completes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_socket_recv_async(
    task: keel_task,
    status: *mut keel_io_status,
    fd: c_int,
    buf: *mut c_void,
    len: usize,
    flags: c_int,
) -> keel_result {
    guard(|| {
        let len = buf_len(buf, len)?;
        let e = opcode::Recv::new(types::Fd(fd), buf.cast(), len).flags(flags).build();
        // SAFETY: the buffer's span is the caller's duty (contract above).
        unsafe { initiate(task, status, e) }
    })
}
