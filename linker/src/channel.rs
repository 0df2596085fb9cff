//! Bounded channels of 64-bit values for C tasks: keel-core's cross-thread
//! `wait::Channel` in type-stable storage. Task functions send and receive, waiting for
//! a slot or a value (`keel_channel_send`, `keel_channel_recv`); any thread may
//! `try_send`, `try_recv` and `close`.
//!
//! Channel rules (cited as "channel rule N"):
//! 1. Storage is allocated once and type-stable, as for semaphores (semaphore rule 1).
//!    A channel's slot buffer is allocated by `create` and never freed: `destroy` keeps it
//!    in the storage, and the next `create` there reuses it if it is large enough (else
//!    it allocates a larger one and keeps that).
//! 2. `destroy` refuses (`-EBUSY`) while a task waits to send or receive (semaphore rule
//!    2's caveat holds); values still in the channel are discarded.

use crate::body::{running, suspend};
use crate::result::{KEEL_ENOTINTASK, err, guard, keel_result};
use crate::stable::FreeList;
use crate::task::keel_task;
use core::ffi::c_void;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU64, Ordering};
use keel_core::wait::{Channel, TryRecvError, TrySendError, WaitError};
use std::alloc::Layout;

/// A handle to a channel; all zeros is the null handle.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct keel_channel {
    /// The storage (opaque).
    pub storage: *mut c_void,
    /// The channel's generation.
    pub generation: u64,
}

struct ChanStorage {
    live_gen: AtomicU64,
    next_free: usize,
    /// The slot buffer kept in this storage (channel rule 1): start and length.
    buf: *mut MaybeUninit<u64>,
    buf_len: usize,
    chan: Channel<'static, u64>,
}

static FREE: FreeList = FreeList::new(
    match Layout::from_size_align(core::mem::size_of::<ChanStorage>(), core::mem::align_of::<ChanStorage>()) {
        Ok(l) => l,
        Err(_) => panic!("keel bug: the channel storage layout is invalid"),
    },
);

fn next_of(p: *mut u8) -> *mut usize {
    // SAFETY: `p` is a `ChanStorage` (channel rule 1); a place projection, no reference.
    unsafe { &raw mut (*p.cast::<ChanStorage>()).next_free }
}

fn chan_of(h: keel_channel) -> Result<&'static Channel<'static, u64>, i64> {
    let p = h.storage.cast::<ChanStorage>();
    if p.is_null() || h.generation == 0 || !p.is_aligned() {
        return Err(err(libc::ESTALE));
    }
    // SAFETY: channel storage is type-stable and never freed (channel rule 1).
    let c = unsafe { &*p };
    // Acquire: pairs with create's Release store.
    if c.live_gen.load(Ordering::Acquire) != h.generation {
        return Err(err(libc::ESTALE));
    }
    Ok(&c.chan)
}

fn wait_error(e: WaitError) -> i64 {
    match e {
        WaitError::Cancelled => err(libc::ECANCELED),
        WaitError::Closed => err(libc::EPIPE),
        _ => -KEEL_ENOTINTASK,
    }
}

/// Makes a channel of `capacity` slots (at least 1).
///
/// Thread safety: any thread. Errors: `-EINVAL` (`out` is NULL, or `capacity` is 0),
/// `-ENOMEM`.
///
/// # Safety
/// `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_channel_create(capacity: usize, out: *mut keel_channel) -> keel_result {
    guard(|| {
        if out.is_null() || capacity == 0 {
            return Err(err(libc::EINVAL));
        }
        let (p, fresh) = FREE.take(next_of).ok_or(err(libc::ENOMEM))?;
        let p = p.cast::<ChanStorage>();
        let g = crate::thread::next_generation();
        // SAFETY: a channel storage from the free list (or new), ours now, with no waiter
        // (channel rule 2); its old channel (if any) is retired and its buffer ours to
        // reuse (channel rule 1). Fields are written by place, the generation last
        // (Release: pairs with `chan_of`).
        unsafe {
            if fresh {
                (&raw mut (*p).live_gen).write(AtomicU64::new(0));
                (&raw mut (*p).next_free).write(0);
                (&raw mut (*p).buf).write(core::ptr::null_mut());
                (&raw mut (*p).buf_len).write(0);
            }
            if (*p).buf_len < capacity {
                let buf: &'static mut [MaybeUninit<u64>] = Vec::leak(vec![MaybeUninit::uninit(); capacity]);
                (*p).buf = buf.as_mut_ptr();
                (*p).buf_len = capacity;
            }
            let slots = core::slice::from_raw_parts_mut((*p).buf, capacity);
            (&raw mut (*p).chan).write(Channel::new(slots));
            (*p).live_gen.store(g, Ordering::Release);
            out.write(keel_channel { storage: p.cast(), generation: g });
        }
        Ok(0)
    })
}

/// Sends `value`, suspending the calling task while the channel is full.
///
/// Thread safety: only from inside the task's own function. Errors: `-ESTALE`,
/// `-KEEL_ENOTINTASK`, `-ECANCELED` (the task is cancelled: return), `-EPIPE` (closed).
#[unsafe(no_mangle)]
pub extern "C" fn keel_channel_send(task: keel_task, ch: keel_channel, value: u64) -> keel_result {
    guard(|| {
        let c = chan_of(ch)?;
        let (t, fib) = running(task)?;
        suspend(t, fib, |f| c.send_blocking(f, value)).map(|()| 0).map_err(|e| wait_error(e.reason))
    })
}

/// Receives the oldest value into `*out`, suspending the calling task while the channel
/// is empty.
///
/// Thread safety: only from inside the task's own function. Errors: `-EINVAL` (`out` is
/// NULL), `-ESTALE`, `-KEEL_ENOTINTASK`, `-ECANCELED`, `-EPIPE` (closed and empty).
///
/// # Safety
/// `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_channel_recv(task: keel_task, ch: keel_channel, out: *mut u64) -> keel_result {
    guard(|| {
        if out.is_null() {
            return Err(err(libc::EINVAL));
        }
        let c = chan_of(ch)?;
        let (t, fib) = running(task)?;
        let v = suspend(t, fib, |f| c.recv_blocking(f)).map_err(wait_error)?;
        // SAFETY: the caller's duty.
        unsafe { out.write(v) };
        Ok(0)
    })
}

/// Sends `value` if a slot is free and no task waits to send; never waits.
///
/// Thread safety: any thread. Errors: `-ESTALE`, `-EAGAIN` (full), `-EPIPE` (closed).
#[unsafe(no_mangle)]
pub extern "C" fn keel_channel_try_send(ch: keel_channel, value: u64) -> keel_result {
    guard(|| match chan_of(ch)?.try_send(value) {
        Ok(()) => Ok(0),
        Err(TrySendError::Full(_)) => Err(err(libc::EAGAIN)),
        Err(TrySendError::Closed(_)) => Err(err(libc::EPIPE)),
    })
}

/// Receives the oldest value into `*out` if there is one and no task waits to receive;
/// never waits.
///
/// Thread safety: any thread. Errors: `-EINVAL` (`out` is NULL), `-ESTALE`, `-EAGAIN`
/// (empty), `-EPIPE` (closed and empty).
///
/// # Safety
/// `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_channel_try_recv(ch: keel_channel, out: *mut u64) -> keel_result {
    guard(|| {
        if out.is_null() {
            return Err(err(libc::EINVAL));
        }
        match chan_of(ch)?.try_recv() {
            Ok(v) => {
                // SAFETY: the caller's duty.
                unsafe { out.write(v) };
                Ok(0)
            }
            Err(TryRecvError::Empty) => Err(err(libc::EAGAIN)),
            Err(_) => Err(err(libc::EPIPE)),
        }
    })
}

/// Closes the channel: waiting senders get `-EPIPE`, receivers get the values sent before
/// and then `-EPIPE`. Thread safety: any thread. Errors: `-ESTALE`.
#[unsafe(no_mangle)]
pub extern "C" fn keel_channel_close(ch: keel_channel) -> keel_result {
    guard(|| {
        chan_of(ch)?.close();
        Ok(0)
    })
}

/// Values in the channel now. Thread safety: any thread. Errors: `-ESTALE`.
#[unsafe(no_mangle)]
pub extern "C" fn keel_channel_len(ch: keel_channel) -> keel_result {
    guard(|| Ok(i64::try_from(chan_of(ch)?.len()).unwrap_or(i64::MAX)))
}

/// Destroys the channel (values still in it are discarded); its handles become stale.
///
/// Thread safety: any thread. Errors: `-ESTALE` (also a second destroy), `-EBUSY` (a task
/// waits to send or receive: close it and let the waiters return first).
#[unsafe(no_mangle)]
pub extern "C" fn keel_channel_destroy(ch: keel_channel) -> keel_result {
    guard(|| {
        let c = chan_of(ch)?;
        if c.waiters() > 0 {
            return Err(err(libc::EBUSY));
        }
        let p = ch.storage.cast::<ChanStorage>();
        // SAFETY: checked by `chan_of`: a live channel storage (type-stable).
        let live = unsafe { &(*p).live_gen };
        // AcqRel: the winner of two racing destroys retires it once (a loser sees 0).
        if live.compare_exchange(ch.generation, 0, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return Err(err(libc::ESTALE));
        }
        // SAFETY: from `take`; retired above, with no waiter (channel rule 2). Its `u64`
        // values need no drop; the buffer stays with the storage (channel rule 1).
        unsafe { FREE.put(p.cast(), next_of) };
        Ok(0)
    })
}
