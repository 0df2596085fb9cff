//! Registered buffers for C task functions: claim one of the ring's registered buffers
//! (`keel_executor_attr::registered_buffers`), read or write through it with the fixed
//! opcodes, release it.
//!
//! Buffer rules (cited as "buffer rule N"):
//! 1. A `keel_buffer` holds keel-linux's `FixedBuf` (the claim) behind a magic word.
//!    `release` drops it in place, which hands the buffer to the oldest waiting task, and
//!    clears the magic; a second release gets `-EINVAL`. A block copied with `memcpy`
//!    would release one claim twice: copying one is not allowed (not detected).
//! 2. A block never released leaks its claim (the buffer stays claimed), which is safe:
//!    keel never reuses a claimed buffer. The claim belongs to the executor's thread.
//! 3. Every call is made from inside the running task's function (body rule 1).

use crate::body::{running, suspend};
use crate::fs::run;
use crate::result::{err, guard, keel_result};
use crate::task::keel_task;
use core::ffi::{c_int, c_void};
use io_uring::{opcode, types};
use keel_core::Fiber;
use keel_linux::FiberFs;
use keel_linux::fs::{BufferError, FixedBuf};

/// A claimed registered buffer: opaque, 48 bytes; `keel_buffer_claim` fills it.
#[repr(C)]
pub struct keel_buffer {
    /// Opaque.
    pub opaque: [u64; 6],
}

#[repr(C)]
struct Block {
    magic: u64,
    buf: FixedBuf,
}

static_assertions::const_assert!(core::mem::size_of::<Block>() <= core::mem::size_of::<keel_buffer>());
static_assertions::const_assert!(core::mem::align_of::<Block>() <= core::mem::align_of::<keel_buffer>());

const MAGIC: u64 = 0x6b65_656c_5f62_7566; // "keel_buf"

/// The claim in a block (buffer rule 1).
///
/// # Safety
/// `p` is NULL or a valid, aligned `keel_buffer` not used by anything else now.
unsafe fn claim<'a>(p: *mut keel_buffer) -> Result<&'a mut FixedBuf, i64> {
    let b = p.cast::<Block>();
    if b.is_null() || !b.is_aligned() {
        return Err(err(libc::EFAULT));
    }
    // SAFETY: valid (caller); the magic word is plain data, and with it the claim is live.
    unsafe {
        if (*b).magic != MAGIC {
            return Err(err(libc::EINVAL));
        }
        Ok(&mut (*b).buf)
    }
}

fn buffer_error(e: BufferError) -> i64 {
    match e {
        BufferError::NoneRegistered => err(libc::ENOBUFS),
        BufferError::AllClaimed | BufferError::WaitQueueFull => err(libc::EAGAIN),
        BufferError::NotOnRing => err(libc::EOPNOTSUPP),
        BufferError::Cancelled => err(libc::ECANCELED),
        _ => err(libc::EINVAL),
    }
}

/// Claims a registered buffer into `*out`, suspending the task (FIFO behind other
/// claimers) until one is free; returns its index. Release it with `keel_buffer_release`.
///
/// Thread safety: from inside the running task's function. Errors: `-ESTALE`,
/// `-KEEL_ENOTINTASK`, `-EFAULT`, `-EOPNOTSUPP` (no ring), `-ENOBUFS` (the executor
/// registered none), `-EAGAIN` (too many waiters), `-ECANCELED`.
///
/// # Safety
/// `out` is NULL or a writable `keel_buffer` holding no claim.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_buffer_claim(task: keel_task, out: *mut keel_buffer) -> keel_result {
    guard(|| {
        let (t, fib) = running(task)?;
        let b = out.cast::<Block>();
        if b.is_null() || !b.is_aligned() {
            return Err(err(libc::EFAULT));
        }
        let buf = suspend(t, fib, |f: &mut Fiber| f.claim_buffer()).map_err(buffer_error)?;
        let index = buf.index();
        // SAFETY: writable (caller); holds no claim, so nothing is overwritten.
        unsafe { b.write(Block { magic: MAGIC, buf }) };
        Ok(index as i64)
    })
}

/// The claimed buffer's bytes: stores its address in `*data` and returns its length.
/// Errors: `-EFAULT`, `-EINVAL` (no claim in it).
///
/// # Safety
/// `buf` is NULL or a valid `keel_buffer`; `data` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_buffer_data(buf: *mut keel_buffer, data: *mut *mut c_void) -> keel_result {
    guard(|| {
        // SAFETY: the caller's block.
        let b = unsafe { claim(buf) }?;
        if data.is_null() {
            return Err(err(libc::EFAULT));
        }
        // SAFETY: valid for a write (caller).
        unsafe { data.write(b.as_mut_ptr().cast()) };
        Ok(b.len() as i64)
    })
}

/// Releases the claim (to the oldest waiting task, if any); the block holds none after.
///
/// Thread safety: from inside a running task's function on the claim's executor.
/// Errors: `-ESTALE`, `-KEEL_ENOTINTASK`, `-EFAULT`, `-EINVAL` (no claim: released
/// already, or never claimed).
///
/// # Safety
/// `buf` is NULL or a valid `keel_buffer`, not a copy of another.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_buffer_release(task: keel_task, buf: *mut keel_buffer) -> keel_result {
    guard(|| {
        running(task)?;
        // SAFETY: the caller's block.
        let b = unsafe { claim(buf) }?;
        let block = buf.cast::<Block>();
        // SAFETY: buffer rule 1: the claim is live (magic checked); it is read out once
        // and the magic cleared, so it is dropped exactly once.
        let owned = unsafe {
            (*block).magic = 0;
            core::ptr::read(b)
        };
        drop(owned);
        Ok(0)
    })
}

/// `READ_FIXED` of `len` bytes at `offset` of `fd` into the claimed buffer; returns the
/// bytes read. Errors: as `keel_file_read`, plus `-EINVAL` (no claim, or `len` larger
/// than the buffer).
///
/// # Safety
/// `buf` is NULL or a valid `keel_buffer`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_file_read_fixed(
    task: keel_task,
    fd: c_int,
    buf: *mut keel_buffer,
    len: u32,
    offset: u64,
) -> keel_result {
    guard(|| {
        // SAFETY: the caller's block.
        let b = unsafe { claim(buf) }?;
        if len as usize > b.len() {
            return Err(err(libc::EINVAL));
        }
        let e = opcode::ReadFixed::new(types::Fd(fd), b.as_mut_ptr(), len, b.index()).offset(offset).build();
        // SAFETY: the claimed buffer is registered and held by the block until `run`
        // returns after the completion (buffer rule 1: only `release` gives it up).
        unsafe { run(task, e, true) }
    })
}

/// `WRITE_FIXED` of `len` bytes from the claimed buffer to `fd` at `offset`; as
/// `keel_file_read_fixed`.
///
/// # Safety
/// `buf` is NULL or a valid `keel_buffer`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_file_write_fixed(
    task: keel_task,
    fd: c_int,
    buf: *mut keel_buffer,
    len: u32,
    offset: u64,
) -> keel_result {
    guard(|| {
        // SAFETY: the caller's block.
        let b = unsafe { claim(buf) }?;
        if len as usize > b.len() {
            return Err(err(libc::EINVAL));
        }
        let e = opcode::WriteFixed::new(types::Fd(fd), b.as_ptr(), len, b.index()).offset(offset).build();
        // SAFETY: as in `keel_file_read_fixed`; the kernel only reads the buffer.
        unsafe { run(task, e, true) }
    })
}
