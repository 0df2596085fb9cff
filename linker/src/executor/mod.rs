//! Executors for C: storage (the caller's, or allocated once), `init`/`create`, `run`,
//! `destroy`, statistics.
//!
//! Executor rules (cited as "executor rule N"):
//! 1. An executor lives in its storage from `init` to `destroy` and never moves (keel's
//!    `Executor` is pinned there). The storage holds the generation its handles carry;
//!    `destroy` sets it to 0 first, so every later call with a handle of it, including
//!    from a task that its teardown resumes, gets `-ESTALE`.
//! 2. Every call checks the calling thread against the one that made the executor
//!    (`-KEEL_EWRONGTHREAD`): keel's executor is single-threaded.
//! 3. The executor keeps an intrusive list of the tasks it owns (their storage links), so
//!    that `destroy` can tell each one it is unowned once keel's teardown released it.

mod attr;
mod remote;
mod stats;

pub use attr::keel_executor_attr;
use attr::make_inner;
pub use remote::keel_executor_post;

use crate::result::{KEEL_ESTALLED, KEEL_EWRONGTHREAD, err, guard, keel_result};
use crate::stable::FreeList;
use crate::task::TaskStorage;
use crate::thread;
pub use attr::{KEEL_BACKEND_AUTO, KEEL_BACKEND_EPOLL, KEEL_BACKEND_RING};
use core::cell::Cell;
use core::ffi::c_void;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use keel_core::{Executor, ExecutorHandle, HandleSlot, RunError, TscAccounting};
use keel_linux::{MmapStacks, RingDriver, SleepDriver};
pub use stats::{
    keel_executor_attached, keel_executor_backend, keel_executor_get_stats, keel_executor_get_times,
    keel_executor_stats, keel_executor_storage_size, keel_executor_times, keel_task_get_times, keel_task_times,
};
use std::alloc::Layout;

/// Bytes of storage an executor needs (`sizeof` for `keel_executor_init`).
pub const KEEL_EXECUTOR_STORAGE_SIZE: usize = 4096;
/// Alignment of an executor's storage.
pub const KEEL_EXECUTOR_STORAGE_ALIGN: usize = 64;

static_assertions::const_assert!(core::mem::size_of::<ExecStorage>() <= KEEL_EXECUTOR_STORAGE_SIZE);
static_assertions::const_assert_eq!(core::mem::align_of::<ExecStorage>(), KEEL_EXECUTOR_STORAGE_ALIGN);

/// A handle to an executor: its storage and the generation of the executor in it.
/// All zeros is the null handle.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct keel_executor {
    /// The storage (opaque).
    pub storage: *mut c_void,
    /// The executor's generation (executor rule 1).
    pub generation: u64,
}

impl Default for keel_executor {
    /// The null handle.
    fn default() -> Self {
        keel_executor { storage: core::ptr::null_mut(), generation: 0 }
    }
}

impl keel_executor {
    fn is_null(&self) -> bool {
        self.storage.is_null() && self.generation == 0
    }
}

// Not boxed: the executor lives in its (caller's) storage, which is sized for the larger.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Inner {
    Sleep(Executor<SleepDriver, MmapStacks>),
    Ring(Executor<RingDriver, MmapStacks>),
    SleepAcct(Executor<SleepDriver, MmapStacks, TscAccounting>),
    RingAcct(Executor<RingDriver, MmapStacks, TscAccounting>),
}

/// Runs `$body` with `$e` bound to the pinned executor inside `$inner` (either driver).
macro_rules! with_ex {
    ($inner:expr, $e:ident => $body:expr) => {
        match $inner {
            $crate::executor::Inner::Sleep(x) => {
                // SAFETY: executor rule 1: the executor never moves out of its storage.
                let $e = unsafe { core::pin::Pin::new_unchecked(x) };
                $body
            }
            $crate::executor::Inner::Ring(x) => {
                // SAFETY: as above.
                let $e = unsafe { core::pin::Pin::new_unchecked(x) };
                $body
            }
            $crate::executor::Inner::SleepAcct(x) => {
                // SAFETY: as above.
                let $e = unsafe { core::pin::Pin::new_unchecked(x) };
                $body
            }
            $crate::executor::Inner::RingAcct(x) => {
                // SAFETY: as above.
                let $e = unsafe { core::pin::Pin::new_unchecked(x) };
                $body
            }
        }
    };
}
pub(crate) use with_ex;

/// What an executor handle points at.
#[repr(C, align(64))]
pub(crate) struct ExecStorage {
    /// 0: no executor here (never made, or destroyed). Executor rule 1.
    live_gen: AtomicU64,
    /// The thread that made it (executor rule 2).
    thread: AtomicU64,
    /// Free-list link (stable rule 2).
    next_free: usize,
    allocated: Cell<bool>,
    /// Inside `keel_executor_run` now (destroy refuses with `-EDEADLK`).
    running: Cell<bool>,
    /// Head of the list of owned tasks (executor rule 3).
    pub(crate) tasks: Cell<*const TaskStorage>,
    /// Names the executor to other threads (`keel_executor_post`): bound at init, unbound
    /// by keel's teardown; kept across reuse of an allocated storage (keel rebinds a slot,
    /// and a handle of the earlier binding gets `ExecutorGone`).
    slot: HandleSlot,
    /// The handle through `slot`, written before the generation is published.
    pub(crate) remote: Option<ExecutorHandle>,
    /// The ring's descriptor number, -1 without one (executor rule 4); written before the
    /// generation is published.
    ring_fd: AtomicI32,
    inner: MaybeUninit<Inner>,
}

static FREE: FreeList = FreeList::new(
    match Layout::from_size_align(core::mem::size_of::<ExecStorage>(), core::mem::align_of::<ExecStorage>()) {
        Ok(l) => l,
        Err(_) => panic!("keel bug: the executor storage layout is invalid"),
    },
);

fn next_of(p: *mut u8) -> *mut usize {
    // SAFETY: `p` is an `ExecStorage` (stable rule 1); a place projection, no reference.
    unsafe { &raw mut (*p.cast::<ExecStorage>()).next_free }
}

impl ExecStorage {
    pub(crate) fn inner(&self) -> &Inner {
        // SAFETY: initialised while `gen` is nonzero, which the handle check saw.
        unsafe { self.inner.assume_init_ref() }
    }

    pub(crate) fn thread(&self) -> u64 {
        // Relaxed: written before the Release of `gen` that the handle check acquired.
        self.thread.load(Ordering::Relaxed)
    }
}

/// The executor a handle names, from any thread (executor rule 1 only): for
/// `keel_executor_post`, which touches nothing but the remote handle.
pub(crate) fn exec_anywhere(h: keel_executor) -> Result<&'static ExecStorage, i64> {
    let p = h.storage.cast::<ExecStorage>();
    if p.is_null() || h.generation == 0 || !p.is_aligned() {
        return Err(err(libc::ESTALE));
    }
    // SAFETY: as in `exec_of`.
    let s = unsafe { &*p };
    // Acquire: pairs with init's Release store, publishing `remote`.
    if s.live_gen.load(Ordering::Acquire) != h.generation {
        return Err(err(libc::ESTALE));
    }
    Ok(s)
}

/// The executor a handle names, on its own thread (executor rules 1-2).
pub(crate) fn exec_of(h: keel_executor) -> Result<&'static ExecStorage, i64> {
    let p = h.storage.cast::<ExecStorage>();
    if p.is_null() || h.generation == 0 || !p.is_aligned() {
        return Err(err(libc::ESTALE));
    }
    // SAFETY: a handle's storage holds an `ExecStorage` while the caller keeps it (the
    // documented contract: storage freed under a handle is undefined); allocated ones are
    // type-stable (stable rule 1).
    let s = unsafe { &*p };
    // Acquire: pairs with init's Release store, publishing the fields.
    if s.live_gen.load(Ordering::Acquire) != h.generation {
        return Err(err(libc::ESTALE));
    }
    if s.thread() != thread::current() {
        return Err(-KEEL_EWRONGTHREAD);
    }
    Ok(s)
}

/// Makes an executor in `p` (fresh: the memory holds no `ExecStorage` yet).
///
/// # Safety
/// `p` is valid, aligned storage of `ExecStorage`'s size that nothing else uses.
unsafe fn init_at(p: *mut ExecStorage, fresh: bool, allocated: bool, (inner, ring_fd): (Inner, i32)) -> keel_executor {
    let g = thread::next_generation();
    // SAFETY: the caller gives us the storage; fields are written by place, so no
    // reference to uninitialised memory is made. A storage from the free list keeps
    // its generation word (0) live for stale handles, and gets an atomic store.
    unsafe {
        if fresh {
            (&raw mut (*p).live_gen).write(AtomicU64::new(0));
            (&raw mut (*p).next_free).write(0);
            (&raw mut (*p).slot).write(HandleSlot::new());
            (&raw mut (*p).ring_fd).write(AtomicI32::new(-1));
        }
        // Relaxed: published by the Release store of the generation below (rule 4).
        (*p).ring_fd.store(ring_fd, Ordering::Relaxed);
        (&raw mut (*p).thread).write(AtomicU64::new(thread::current()));
        (&raw mut (*p).allocated).write(Cell::new(allocated));
        (&raw mut (*p).running).write(Cell::new(false));
        (&raw mut (*p).tasks).write(Cell::new(core::ptr::null()));
        (&raw mut (*p).inner).write(MaybeUninit::new(inner));
    }
    // SAFETY: initialised just above; the executor is pinned in its storage (rule 1).
    let inner = unsafe { (*p).inner.assume_init_ref() };
    if matches!(inner, Inner::SleepAcct(_) | Inner::RingAcct(_)) {
        with_ex!(inner, e => e.set_tick_scale(tick_scale()));
    }
    // SAFETY: executor rule 1: the storage outlives the executor's use (the documented
    // contract), so its slot is `'static` for keel's purposes.
    let slot: &'static HandleSlot = unsafe { &(*p).slot };
    let remote = with_ex!(inner, e => e.handle(slot));
    // SAFETY: our storage (caller); `remote` is written before the generation publishes it.
    unsafe {
        (&raw mut (*p).remote).write(remote);
        // Release: pairs with `exec_of`'s and `exec_anywhere`'s Acquire, publishing the
        // fields above.
        (*p).live_gen.store(g, Ordering::Release);
    }
    keel_executor { storage: p.cast(), generation: g }
}

/// The TSC's tick scale, calibrated once per process (at most about 10 ms, the first
/// time an executor is made).
fn tick_scale() -> keel_core::TickScale {
    static SCALE: std::sync::OnceLock<keel_core::TickScale> = std::sync::OnceLock::new();
    *SCALE.get_or_init(|| keel_linux::tsc::Calibration::new().scale())
}

/// Makes an executor in caller storage: `size` bytes at `storage`, aligned to
/// `KEEL_EXECUTOR_STORAGE_ALIGN`, at least `KEEL_EXECUTOR_STORAGE_SIZE`. keel allocates
/// nothing for the executor itself (the ring and fiber stacks are mapped by the kernel;
/// the ring driver allocates its slot table once). `attr` may be NULL (all zeros).
///
/// Ownership: the storage stays the caller's; it must stay valid and unmoved until
/// `keel_executor_destroy` returns. Using a handle after freeing its storage is
/// undefined behaviour (not detected). Thread safety: the calling thread becomes the
/// executor's thread. Errors: `-EINVAL` (null or too small or misaligned storage, a
/// ring size that is not a power of two), `-ENOMEM`, an errno from io_uring setup.
///
/// # Safety
/// `storage` is NULL or `size` writable bytes unused by anything else; `attr` is NULL
/// or valid; `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_executor_init(
    storage: *mut c_void,
    size: usize,
    attr: *const keel_executor_attr,
    out: *mut keel_executor,
) -> keel_result {
    crate::gdb::keep();
    guard(|| {
        let p = storage.cast::<ExecStorage>();
        if p.is_null() || out.is_null() || size < KEEL_EXECUTOR_STORAGE_SIZE || !p.is_aligned() {
            return Err(err(libc::EINVAL));
        }
        // SAFETY: NULL or valid (caller).
        let attr = unsafe { attr.as_ref() }.copied().unwrap_or_default();
        let inner = make_inner(&attr)?;
        // SAFETY: the caller's storage, checked for size and alignment above.
        let h = unsafe { init_at(p, true, false, inner) };
        // SAFETY: valid for a write (caller).
        unsafe { out.write(h) };
        Ok(0)
    })
}

/// Makes an executor in storage keel allocates once (`keel_executor_destroy` keeps it for
/// the next `create`, so a stale handle reads a dead generation, never freed memory).
/// Otherwise as `keel_executor_init`.
///
/// # Safety
/// `attr` is NULL or valid; `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_executor_create(attr: *const keel_executor_attr, out: *mut keel_executor) -> keel_result {
    guard(|| {
        if out.is_null() {
            return Err(err(libc::EINVAL));
        }
        // SAFETY: NULL or valid (caller).
        let attr = unsafe { attr.as_ref() }.copied().unwrap_or_default();
        let inner = make_inner(&attr)?;
        let (p, fresh) = FREE.take(next_of).ok_or(err(libc::ENOMEM))?;
        let p = p.cast::<ExecStorage>();
        // SAFETY: a storage of this type from the free list (or new), ours now.
        let h = unsafe { init_at(p, fresh, true, inner) };
        // SAFETY: valid for a write (caller).
        unsafe { out.write(h) };
        Ok(0)
    })
}

/// Runs at most `max_items` items of work (a task resumed or completed is one), highest
/// CPU priority first; waits up to `timeout_ns` for work when there is none
/// (`KEEL_NO_TIMEOUT`: no limit, 0: do not wait). Returns the items done, `-ETIME` if
/// the timeout passed with none done.
///
/// Thread safety: the executor's thread only. Errors: `-ESTALE`, `-KEEL_EWRONGTHREAD`,
/// `-EINVAL` (`max_items` 0), `-EBUSY` (called from inside this executor's run),
/// `-KEEL_ESTALLED` (no limit, and nothing could ever wake a task), a ring errno.
#[unsafe(no_mangle)]
pub extern "C" fn keel_executor_run(ex: keel_executor, max_items: usize, timeout_ns: u64) -> keel_result {
    guard(|| {
        let s = exec_of(ex)?;
        let timeout = (timeout_ns != KEEL_NO_TIMEOUT).then(|| core::time::Duration::from_nanos(timeout_ns));
        let was = s.running.replace(true);
        let saved = crate::body::save_current();
        let r = with_ex!(s.inner(), e => e.run(max_items, timeout));
        crate::body::restore_current(saved);
        s.running.set(was);
        r.map(|n| n as i64).map_err(run_error)
    })
}

/// `keel_executor_run`'s "no timeout".
pub const KEEL_NO_TIMEOUT: u64 = u64::MAX;

fn run_error(e: RunError) -> i64 {
    match e {
        RunError::ZeroMaxItems => err(libc::EINVAL),
        RunError::TimedOut => err(libc::ETIME),
        RunError::Stalled => -KEEL_ESTALLED,
        RunError::Driver(e) => -(e.0 as i64),
        RunError::Reentrant | RunError::DriverBusy => err(libc::EBUSY),
        RunError::Quit => err(libc::ESHUTDOWN),
        _ => err(libc::EIO),
    }
}

/// Destroys the executor: cancels every attached task (a task blocked in a keel call gets
/// `-ECANCELED` from it and should return; its i/o is cancelled and drained), releases
/// every task it owned (they can be attached elsewhere or destroyed), then frees what it
/// holds. Caller storage is the caller's again when this returns.
///
/// Thread safety: the executor's thread only. Errors: `-ESTALE` (null, stale, destroyed
/// already), `-KEEL_EWRONGTHREAD`, `-EDEADLK` (called from inside its own run).
#[unsafe(no_mangle)]
pub extern "C" fn keel_executor_destroy(ex: keel_executor) -> keel_result {
    guard(|| {
        let s = exec_of(ex)?;
        if s.running.get() {
            return Err(err(libc::EDEADLK));
        }
        // Executor rule 1: stale from here on, also for tasks the teardown resumes.
        // Release: orders nothing new (the fields stay as they were); other threads only
        // compare generations.
        s.live_gen.store(0, Ordering::Release);
        crate::task::results_before_teardown(s);
        let p = ex.storage.cast::<ExecStorage>();
        // Body rule 2: the teardown resumes task bodies, which set and clear `CURRENT`.
        let saved = crate::body::save_current();
        // SAFETY: the executor is live (checked) and dropped once, in place (rule 1).
        unsafe { (*p).inner.assume_init_drop() };
        crate::body::restore_current(saved);
        crate::task::orphan_all(s);
        if s.allocated.get() {
            // SAFETY: allocated by `create` from this list; nothing lives in it now.
            unsafe { FREE.put(p.cast(), next_of) };
        }
        Ok(0)
    })
}
