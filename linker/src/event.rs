//! Manual-reset events for C tasks: keel-core's cross-thread `wait::Event` in
//! type-stable storage. A task function waits with `keel_event_wait` (its fiber
//! suspends) until any thread calls `keel_event_set`, which wakes every waiter.
//!
//! Event rules (cited as "event rule N"):
//! 1. Storage is allocated once and type-stable, as for semaphores (semaphore rule 1).
//! 2. `destroy` refuses (`-EBUSY`) while a task waits (semaphore rule 2's caveat holds).

use crate::body::{running, suspend};
use crate::result::{KEEL_ENOTINTASK, err, guard, keel_result};
use crate::stable::FreeList;
use crate::task::keel_task;
use core::ffi::c_void;
use core::sync::atomic::{AtomicU64, Ordering};
use keel_core::wait::{Event, WaitError};
use std::alloc::Layout;

/// A handle to an event; all zeros is the null handle.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct keel_event {
    /// The storage (opaque).
    pub storage: *mut c_void,
    /// The event's generation.
    pub generation: u64,
}

struct EventStorage {
    live_gen: AtomicU64,
    next_free: usize,
    event: Event,
}

static FREE: FreeList = FreeList::new(
    match Layout::from_size_align(core::mem::size_of::<EventStorage>(), core::mem::align_of::<EventStorage>()) {
        Ok(l) => l,
        Err(_) => panic!("keel bug: the event storage layout is invalid"),
    },
);

fn next_of(p: *mut u8) -> *mut usize {
    // SAFETY: `p` is an `EventStorage` (event rule 1); a place projection, no reference.
    unsafe { &raw mut (*p.cast::<EventStorage>()).next_free }
}

fn event_of(h: keel_event) -> Result<&'static EventStorage, i64> {
    let p = h.storage.cast::<EventStorage>();
    if p.is_null() || h.generation == 0 || !p.is_aligned() {
        return Err(err(libc::ESTALE));
    }
    // SAFETY: event storage is type-stable and never freed (event rule 1).
    let e = unsafe { &*p };
    // Acquire: pairs with create's Release store.
    if e.live_gen.load(Ordering::Acquire) != h.generation {
        return Err(err(libc::ESTALE));
    }
    Ok(e)
}

/// Makes an event, set or not (allocated once, kept for the next `create`).
///
/// Thread safety: any thread. Errors: `-EINVAL` (`out` is NULL), `-ENOMEM`.
///
/// # Safety
/// `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_event_create(set: bool, out: *mut keel_event) -> keel_result {
    guard(|| {
        if out.is_null() {
            return Err(err(libc::EINVAL));
        }
        let (p, fresh) = FREE.take(next_of).ok_or(err(libc::ENOMEM))?;
        let p = p.cast::<EventStorage>();
        let g = crate::thread::next_generation();
        // SAFETY: an event storage from the free list (or new), ours now, with no waiter
        // (event rule 2). Fields are written by place, the generation last (Release:
        // pairs with `event_of`).
        unsafe {
            if fresh {
                (&raw mut (*p).live_gen).write(AtomicU64::new(0));
                (&raw mut (*p).next_free).write(0);
            }
            (&raw mut (*p).event).write(Event::new(set));
            (*p).live_gen.store(g, Ordering::Release);
            out.write(keel_event { storage: p.cast(), generation: g });
        }
        Ok(0)
    })
}

/// Suspends the calling task until the event is set (at once if it is).
///
/// Thread safety: only from inside the task's own function. Errors: `-ESTALE`,
/// `-KEEL_ENOTINTASK`, `-ECANCELED` (the task is cancelled: return).
#[unsafe(no_mangle)]
pub extern "C" fn keel_event_wait(task: keel_task, event: keel_event) -> keel_result {
    guard(|| {
        let e = event_of(event)?;
        let (t, fib) = running(task)?;
        suspend(t, fib, |f| e.event.wait_blocking(f)).map(|()| 0).map_err(|w| match w {
            WaitError::Cancelled => err(libc::ECANCELED),
            _ => -KEEL_ENOTINTASK,
        })
    })
}

/// Sets the event and wakes every waiting task. Thread safety: any thread. Errors:
/// `-ESTALE`.
#[unsafe(no_mangle)]
pub extern "C" fn keel_event_set(event: keel_event) -> keel_result {
    guard(|| {
        event_of(event)?.event.set();
        Ok(0)
    })
}

/// Clears the event. Thread safety: any thread. Errors: `-ESTALE`.
#[unsafe(no_mangle)]
pub extern "C" fn keel_event_reset(event: keel_event) -> keel_result {
    guard(|| {
        event_of(event)?.event.reset();
        Ok(0)
    })
}

/// 1 if the event is set, 0 if not. Thread safety: any thread. Errors: `-ESTALE`.
#[unsafe(no_mangle)]
pub extern "C" fn keel_event_is_set(event: keel_event) -> keel_result {
    guard(|| Ok(i64::from(event_of(event)?.event.is_set())))
}

/// Destroys the event; its handles become stale.
///
/// Thread safety: any thread. Errors: `-ESTALE` (also a second destroy), `-EBUSY` (a task
/// waits on it: set it and let the waiters return first).
#[unsafe(no_mangle)]
pub extern "C" fn keel_event_destroy(event: keel_event) -> keel_result {
    guard(|| {
        let e = event_of(event)?;
        if e.event.waiters() > 0 {
            return Err(err(libc::EBUSY));
        }
        // AcqRel: the winner of two racing destroys retires it once (a loser sees 0).
        if e.live_gen.compare_exchange(event.generation, 0, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return Err(err(libc::ESTALE));
        }
        // SAFETY: from `take`; retired above, with no waiter (event rule 2).
        unsafe { FREE.put((e as *const EventStorage).cast_mut().cast(), next_of) };
        Ok(0)
    })
}
