//! Counting semaphores for C tasks: keel-core's cross-thread `wait::Semaphore` in
//! type-stable storage. A task function waits with `keel_semaphore_acquire` (its fiber
//! suspends; waiters are served by CPU priority, then FIFO); any thread releases.
//!
//! Semaphore rules (cited as "semaphore rule N"):
//! 1. A semaphore's storage is allocated once and type-stable (stable rules): a handle
//!    that outlived its semaphore reads a newer generation (or 0) and gets `-ESTALE`.
//! 2. `destroy` refuses (`-EBUSY`) while a task waits on it. A call that passed its
//!    generation check on another thread while `destroy` runs is not detected (as for
//!    any object the program destroys while it still uses it).
//! 3. A cancelled waiter gets `-ECANCELED` and a permit handed to it goes on (wait rule
//!    6); a closed semaphore's waiters and later acquires get `-EPIPE`.

use crate::body::{running, suspend};
use crate::result::{KEEL_ENOTINTASK, err, guard, keel_result};
use crate::stable::FreeList;
use crate::task::keel_task;
use core::ffi::c_void;
use core::sync::atomic::{AtomicU64, Ordering};
use keel_core::wait::{Semaphore, TryAcquireError, WaitError};
use std::alloc::Layout;

/// A handle to a semaphore; all zeros is the null handle.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct keel_semaphore {
    /// The storage (opaque).
    pub storage: *mut c_void,
    /// The semaphore's generation.
    pub generation: u64,
}

struct SemStorage {
    live_gen: AtomicU64,
    next_free: usize,
    sem: Semaphore,
}

static FREE: FreeList = FreeList::new(
    match Layout::from_size_align(core::mem::size_of::<SemStorage>(), core::mem::align_of::<SemStorage>()) {
        Ok(l) => l,
        Err(_) => panic!("keel bug: the semaphore storage layout is invalid"),
    },
);

fn next_of(p: *mut u8) -> *mut usize {
    // SAFETY: `p` is a `SemStorage` (stable rule 1); a place projection, no reference.
    unsafe { &raw mut (*p.cast::<SemStorage>()).next_free }
}

fn sem_of(h: keel_semaphore) -> Result<&'static SemStorage, i64> {
    let p = h.storage.cast::<SemStorage>();
    if p.is_null() || h.generation == 0 || !p.is_aligned() {
        return Err(err(libc::ESTALE));
    }
    // SAFETY: semaphore storage is type-stable and never freed (semaphore rule 1).
    let s = unsafe { &*p };
    // Acquire: pairs with create's Release store.
    if s.live_gen.load(Ordering::Acquire) != h.generation {
        return Err(err(libc::ESTALE));
    }
    Ok(s)
}

fn wait_error(e: WaitError) -> i64 {
    match e {
        WaitError::Cancelled => err(libc::ECANCELED),
        WaitError::Closed => err(libc::EPIPE),
        _ => -KEEL_ENOTINTASK,
    }
}

/// Makes a semaphore with `permits` free permits (allocated once, kept for the next
/// `create` after `destroy`).
///
/// Thread safety: any thread. Errors: `-EINVAL` (`out` is NULL), `-ENOMEM`.
///
/// # Safety
/// `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_semaphore_create(permits: u64, out: *mut keel_semaphore) -> keel_result {
    guard(|| {
        if out.is_null() {
            return Err(err(libc::EINVAL));
        }
        let (p, fresh) = FREE.take(next_of).ok_or(err(libc::ENOMEM))?;
        let p = p.cast::<SemStorage>();
        let g = crate::thread::next_generation();
        // SAFETY: a semaphore storage from the free list (or new), ours now: a destroyed
        // one has no waiter (semaphore rule 2). Fields are written by place, the
        // generation last (Release: pairs with `sem_of`).
        unsafe {
            if fresh {
                (&raw mut (*p).live_gen).write(AtomicU64::new(0));
                (&raw mut (*p).next_free).write(0);
            }
            (&raw mut (*p).sem).write(Semaphore::new(usize::try_from(permits).unwrap_or(usize::MAX)));
            (*p).live_gen.store(g, Ordering::Release);
            out.write(keel_semaphore { storage: p.cast(), generation: g });
        }
        Ok(0)
    })
}

/// Takes a permit, suspending the calling task until one is handed to it.
///
/// Thread safety: only from inside the task's own function. Errors: `-ESTALE`,
/// `-KEEL_ENOTINTASK` (not the running task), `-ECANCELED` (the task is cancelled:
/// return), `-EPIPE` (the semaphore is closed).
#[unsafe(no_mangle)]
pub extern "C" fn keel_semaphore_acquire(task: keel_task, sem: keel_semaphore) -> keel_result {
    guard(|| {
        let s = sem_of(sem)?;
        let (t, fib) = running(task)?;
        let permit = suspend(t, fib, |f| s.sem.acquire_blocking(f)).map_err(wait_error)?;
        // The caller holds it until `keel_semaphore_release`.
        permit.forget();
        Ok(0)
    })
}

/// Takes a permit if one is free and no task waits for one; never waits.
///
/// Thread safety: any thread. Errors: `-ESTALE`, `-EAGAIN` (none free), `-EPIPE` (closed).
#[unsafe(no_mangle)]
pub extern "C" fn keel_semaphore_try_acquire(sem: keel_semaphore) -> keel_result {
    guard(|| match sem_of(sem)?.sem.try_acquire() {
        Ok(permit) => {
            permit.forget();
            Ok(0)
        }
        Err(TryAcquireError::NoPermits) => Err(err(libc::EAGAIN)),
        Err(_) => Err(err(libc::EPIPE)),
    })
}

/// Gives `n` permits back (or adds them): each goes to the next waiting task (by
/// priority, then FIFO), the rest to the free count.
///
/// Thread safety: any thread. Errors: `-ESTALE`.
#[unsafe(no_mangle)]
pub extern "C" fn keel_semaphore_release(sem: keel_semaphore, n: u64) -> keel_result {
    guard(|| {
        sem_of(sem)?.sem.add_permits(usize::try_from(n).unwrap_or(usize::MAX));
        Ok(0)
    })
}

/// Closes the semaphore: every waiting task's acquire returns `-EPIPE`, and so does
/// every later one. Thread safety: any thread. Errors: `-ESTALE`.
#[unsafe(no_mangle)]
pub extern "C" fn keel_semaphore_close(sem: keel_semaphore) -> keel_result {
    guard(|| {
        sem_of(sem)?.sem.close();
        Ok(0)
    })
}

/// The permits free now. Thread safety: any thread. Errors: `-ESTALE`.
#[unsafe(no_mangle)]
pub extern "C" fn keel_semaphore_available(sem: keel_semaphore) -> keel_result {
    guard(|| Ok(i64::try_from(sem_of(sem)?.sem.available_permits()).unwrap_or(i64::MAX)))
}

/// Destroys the semaphore; its handles become stale.
///
/// Thread safety: any thread. Errors: `-ESTALE` (also a second destroy), `-EBUSY` (a task
/// waits on it: release or close it, let the waiters return, then destroy).
#[unsafe(no_mangle)]
pub extern "C" fn keel_semaphore_destroy(sem: keel_semaphore) -> keel_result {
    guard(|| {
        let s = sem_of(sem)?;
        if s.sem.waiters() > 0 {
            return Err(err(libc::EBUSY));
        }
        // AcqRel: the winner of two racing destroys retires it once (a loser sees 0).
        if s.live_gen.compare_exchange(sem.generation, 0, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return Err(err(libc::ESTALE));
        }
        // SAFETY: from `take`; retired above (generation 0), with no waiter (semaphore
        // rule 2).
        unsafe { FREE.put((s as *const SemStorage).cast_mut().cast(), next_of) };
        Ok(0)
    })
}
