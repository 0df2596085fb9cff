//! Tasks for C: storage (the caller's, or allocated once), `init`/`create`, `attach`,
//! `cancel`, `result`, `destroy`.
//!
//! Task rules (cited as "task rule N"):
//! 1. A task lives in its storage from `init` to `destroy`; keel's `TaskSlot` is the
//!    storage's first field and is treated as `'static` for that span (the documented
//!    contract: the storage outlives every use of the task). The storage holds the
//!    generation its handles carry; `destroy` sets it to 0, so a second `destroy` or any
//!    later call gets `-ESTALE`.
//! 2. Once attached, a task belongs to that executor's thread (`owner_thread`): calls
//!    from another thread get `-KEEL_EWRONGTHREAD`. An unowned task (never attached, or
//!    its executor destroyed) may be used from any one thread at a time.
//! 3. An owned task is linked in its executor's list (executor rule 3); attaching it to
//!    another executor of the same thread releases it from the first.
//! 4. A task's result survives its executor: `keel_executor_destroy` records each owned
//!    task's last result (completed: its result; cancelled by the teardown: the value its
//!    function returned, or `-ECANCELED` if it never returned).

use crate::body::{body_for, keel_task_fn, task_result_code};
use crate::executor::{ExecStorage, exec_of, keel_executor, with_ex};
use crate::result::{KEEL_EWRONGTHREAD, err, guard, keel_result};
use crate::stable::FreeList;
use crate::thread;
use core::cell::Cell;
use core::ffi::c_void;
use core::ptr::null;
use core::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
use keel_core::{
    AttachError, CancelError, DestroyError, FiberAttrs, Priorities, Priority, TaskAttrs, TaskHandle, TaskSlot,
};
use std::alloc::Layout;

/// Bytes of storage a task needs (`sizeof` for `keel_task_init`).
pub const KEEL_TASK_STORAGE_SIZE: usize = 1536;
/// Alignment of a task's storage.
pub const KEEL_TASK_STORAGE_ALIGN: usize = 64;
/// Body bytes in the task slot: a fiber's core and saved registers plus the trampoline's
/// captures (function, argument, task).
const BODY: usize = 256;

static_assertions::const_assert!(core::mem::size_of::<TaskStorage>() <= KEEL_TASK_STORAGE_SIZE);
static_assertions::const_assert_eq!(core::mem::align_of::<TaskStorage>(), KEEL_TASK_STORAGE_ALIGN);

/// The highest CPU or I/O priority.
pub const KEEL_PRIORITY_HIGH: u8 = 1;
/// The default priority (zero).
pub const KEEL_PRIORITY_NORMAL: u8 = 0;
/// The lowest priority.
pub const KEEL_PRIORITY_LOW: u8 = 2;
/// keel's own fiber switch (the default, zero): a few ns per switch.
pub const KEEL_SWITCHER_FIBER: u8 = 0;
/// glibc's `swapcontext`: portable, a signal-mask syscall per switch.
pub const KEEL_SWITCHER_UCONTEXT: u8 = 1;

/// A handle to a task: its storage and the generation of the task in it. All zeros is
/// the null handle.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct keel_task {
    /// The storage (opaque).
    pub storage: *mut c_void,
    /// The task's generation (task rule 1).
    pub generation: u64,
}

/// How a task is made. All zeros: normal priorities, keel's fiber switch, 64 KiB stack.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default)]
pub struct keel_task_attr {
    /// `KEEL_PRIORITY_*`: the run queue order.
    pub cpu_priority: u8,
    /// `KEEL_PRIORITY_*`: the order of waits for ring room, and the SQE's I/O priority
    /// for reads and writes.
    pub io_priority: u8,
    /// `KEEL_SWITCHER_*`.
    pub switcher: u8,
    /// Usable fiber stack bytes (0: 64 KiB; at least 4096; rounded up to pages).
    pub stack_size: usize,
}

/// What a task handle points at.
#[repr(C, align(64))]
pub(crate) struct TaskStorage {
    slot: TaskSlot<BODY>,
    /// 0: no task here (task rule 1).
    live_gen: AtomicU64,
    /// The owning executor's thread, 0 if unowned (task rule 2).
    owner_thread: AtomicU64,
    /// Free-list link (stable rule 2).
    next_free: usize,
    allocated: Cell<bool>,
    exec: Cell<*const ExecStorage>,
    prev: Cell<*const TaskStorage>,
    next: Cell<*const TaskStorage>,
    /// keel's handle of the latest run (or of the creation, before any attach).
    run: Cell<Option<TaskHandle>>,
    attached_once: Cell<bool>,
    /// The result kept when the executor went away (task rule 4).
    kept: Cell<Option<i64>>,
    /// The function's mapped return value of the current run, once it returned.
    pub(crate) returned: Cell<Option<i64>>,
    pub(crate) fiber: Cell<*mut keel_core::Fiber>,
    attrs: Cell<keel_task_attr>,
    /// A dispatched run (dispatch rule 2): `REMOTE_*`, and its result once done.
    pub(crate) remote: AtomicU8,
    pub(crate) remote_ret: AtomicI64,
}

/// No dispatched run.
pub(crate) const REMOTE_NONE: u8 = 0;
/// Submitted to a dispatcher, not completed.
pub(crate) const REMOTE_QUEUED: u8 = 1;
/// Completed on a worker: `remote_ret` holds the result.
pub(crate) const REMOTE_DONE: u8 = 2;

static FREE: FreeList = FreeList::new(
    match Layout::from_size_align(core::mem::size_of::<TaskStorage>(), core::mem::align_of::<TaskStorage>()) {
        Ok(l) => l,
        Err(_) => panic!("keel bug: the task storage layout is invalid"),
    },
);

fn next_of(p: *mut u8) -> *mut usize {
    // SAFETY: `p` is a `TaskStorage` (stable rule 1); a place projection, no reference.
    unsafe { &raw mut (*p.cast::<TaskStorage>()).next_free }
}

/// The task a handle names (generation checked; task rule 1), without the thread check.
pub(crate) fn task_of(h: keel_task) -> Result<&'static TaskStorage, i64> {
    let p = h.storage.cast::<TaskStorage>();
    if p.is_null() || h.generation == 0 || !p.is_aligned() {
        return Err(err(libc::ESTALE));
    }
    // SAFETY: the handle's storage holds a `TaskStorage` while the caller keeps it (the
    // documented contract); allocated ones are type-stable (stable rule 1).
    let t = unsafe { &*p };
    // Acquire: pairs with init's Release store, publishing the fields.
    if t.live_gen.load(Ordering::Acquire) != h.generation {
        return Err(err(libc::ESTALE));
    }
    Ok(t)
}

/// The task, checked to be usable from this thread (task rule 2).
pub(crate) fn task_here(h: keel_task) -> Result<&'static TaskStorage, i64> {
    let t = task_of(h)?;
    // Relaxed: written on the owner's thread; a thread compares with its own token, which
    // only that thread ever stores.
    let owner = t.owner_thread.load(Ordering::Relaxed);
    if owner != 0 && owner != thread::current() {
        return Err(-KEEL_EWRONGTHREAD);
    }
    Ok(t)
}

fn priority(p: u8) -> Result<Priority, i64> {
    Ok(match p {
        KEEL_PRIORITY_HIGH => Priority::High,
        KEEL_PRIORITY_NORMAL => Priority::Normal,
        KEEL_PRIORITY_LOW => Priority::Low,
        _ => return Err(err(libc::EINVAL)),
    })
}

fn check_attr(attr: *const keel_task_attr) -> Result<(keel_task_attr, Priorities), i64> {
    // SAFETY: NULL or valid (the callers' contract).
    let a = unsafe { attr.as_ref() }.copied().unwrap_or_default();
    let prio = Priorities { cpu: priority(a.cpu_priority)?, io: priority(a.io_priority)? };
    if a.switcher > KEEL_SWITCHER_UCONTEXT || (a.stack_size != 0 && a.stack_size < keel_core::fiber::MIN_STACK) {
        return Err(err(libc::EINVAL));
    }
    Ok((a, prio))
}

/// Makes a task in `p`.
///
/// # Safety
/// `p` is valid, aligned storage of `TaskStorage`'s size that nothing else uses; `fresh`
/// says it holds no `TaskStorage` yet.
unsafe fn init_at(p: *mut TaskStorage, fresh: bool, allocated: bool, a: keel_task_attr, prio: Priorities) -> keel_task {
    let g = thread::next_generation();
    // SAFETY: the caller gives us the storage; fields are written by place. A storage
    // from the free list keeps its generation word live (stale handles may read it).
    unsafe {
        if fresh {
            (&raw mut (*p).live_gen).write(AtomicU64::new(0));
            (&raw mut (*p).next_free).write(0);
        }
        (&raw mut (*p).slot).write(TaskSlot::new());
        (&raw mut (*p).owner_thread).write(AtomicU64::new(0));
        (&raw mut (*p).allocated).write(Cell::new(allocated));
        (&raw mut (*p).exec).write(Cell::new(null()));
        (&raw mut (*p).prev).write(Cell::new(null()));
        (&raw mut (*p).next).write(Cell::new(null()));
        (&raw mut (*p).attached_once).write(Cell::new(false));
        (&raw mut (*p).kept).write(Cell::new(None));
        (&raw mut (*p).returned).write(Cell::new(None));
        (&raw mut (*p).fiber).write(Cell::new(core::ptr::null_mut()));
        (&raw mut (*p).attrs).write(Cell::new(a));
        (&raw mut (*p).remote).write(AtomicU8::new(REMOTE_NONE));
        (&raw mut (*p).remote_ret).write(AtomicI64::new(0));
        // Task rule 1: the slot is `'static` for the task's life.
        let slot: &'static TaskSlot<BODY> = &(*p).slot;
        let run = slot.create(TaskAttrs { priority: prio, name: "c" }).ok();
        (&raw mut (*p).run).write(Cell::new(run));
        // Release: pairs with `task_of`'s Acquire, publishing the fields above.
        (*p).live_gen.store(g, Ordering::Release);
    }
    keel_task { storage: p.cast(), generation: g }
}

/// Makes a task in caller storage: `size` bytes at `storage`, aligned to
/// `KEEL_TASK_STORAGE_ALIGN`, at least `KEEL_TASK_STORAGE_SIZE`. Allocates nothing.
/// `attr` may be NULL (all zeros). Creating is the expensive step; a task is then reused
/// for any number of runs (`keel_task_attach` after each completes).
///
/// Ownership: the storage stays the caller's and must stay valid and unmoved until
/// `keel_task_destroy` returns; using a handle after freeing its storage is undefined
/// behaviour (not detected). Thread safety: any thread. Errors: `-EINVAL` (null, small
/// or misaligned storage, a bad priority, switcher or stack size).
///
/// # Safety
/// `storage` is NULL or `size` writable bytes unused by anything else; `attr` is NULL
/// or valid; `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_task_init(
    storage: *mut c_void,
    size: usize,
    attr: *const keel_task_attr,
    out: *mut keel_task,
) -> keel_result {
    guard(|| {
        let p = storage.cast::<TaskStorage>();
        if p.is_null() || out.is_null() || size < KEEL_TASK_STORAGE_SIZE || !p.is_aligned() {
            return Err(err(libc::EINVAL));
        }
        let (a, prio) = check_attr(attr)?;
        // SAFETY: the caller's storage, checked for size and alignment.
        let h = unsafe { init_at(p, true, false, a, prio) };
        // SAFETY: valid for a write (caller).
        unsafe { out.write(h) };
        Ok(0)
    })
}

/// Makes a task in storage keel allocates once (kept for the next `create` after
/// `keel_task_destroy`, so a stale handle is always detected). Otherwise as
/// `keel_task_init`; errors also `-ENOMEM`.
///
/// # Safety
/// `attr` is NULL or valid; `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_task_create(attr: *const keel_task_attr, out: *mut keel_task) -> keel_result {
    guard(|| {
        if out.is_null() {
            return Err(err(libc::EINVAL));
        }
        let (a, prio) = check_attr(attr)?;
        let (p, fresh) = FREE.take(next_of).ok_or(err(libc::ENOMEM))?;
        // SAFETY: a task storage from the free list (or new), ours now.
        let h = unsafe { init_at(p.cast(), fresh, true, a, prio) };
        // SAFETY: valid for a write (caller).
        unsafe { out.write(h) };
        Ok(0)
    })
}

fn link(s: &ExecStorage, t: &'static TaskStorage) {
    let head = s.tasks.get();
    t.prev.set(null());
    t.next.set(head);
    if !head.is_null() {
        // SAFETY: listed tasks are live (destroy unlinks them first).
        unsafe { (*head).prev.set(t) };
    }
    s.tasks.set(t);
    t.exec.set(s);
    // Relaxed: see `task_here`.
    t.owner_thread.store(s.thread(), Ordering::Relaxed);
}

fn unlink(t: &TaskStorage) {
    let s = t.exec.replace(null());
    let (prev, next) = (t.prev.replace(null()), t.next.replace(null()));
    // SAFETY: a listed task's executor and neighbours are live (executor rule 3).
    unsafe {
        if prev.is_null() {
            (*s).tasks.set(next);
        } else {
            (*prev).next.set(next);
        }
        if !next.is_null() {
            (*next).prev.set(prev);
        }
    }
    // Relaxed: see `task_here`.
    t.owner_thread.store(0, Ordering::Relaxed);
}

/// Attaches the task to the executor as its next run: `fn(task, user)` runs on a fiber
/// (the task's stack), may call `keel_task_yield`, `keel_task_suspend_for` and the i/o
/// calls with this task, and returns the run's result (`>= 0`, or a negated errno).
/// Cheap: no allocation (the stack comes from the executor's spare pool once warm).
///
/// Ownership: `user` stays the caller's; it must stay valid until the run completes.
/// `fn` must not unwind (C++ exceptions) or `longjmp` out. Thread safety: the executor's
/// thread (keel-core has no cross-thread attach of a fiber yet). Errors: `-ESTALE` (either
/// handle), `-KEEL_EWRONGTHREAD`, `-EINVAL` (`fn` NULL), `-EBUSY` (attached already),
/// an errno if no stack could be mapped.
#[unsafe(no_mangle)]
pub extern "C" fn keel_task_attach(
    ex: keel_executor,
    task: keel_task,
    f: keel_task_fn,
    user: *mut c_void,
) -> keel_result {
    guard(|| {
        let s = exec_of(ex)?;
        let t = task_here(task)?;
        let f = f.ok_or(err(libc::EINVAL))?;
        t.not_dispatched()?;
        let run = t.run.get().ok_or(err(libc::ESTALE))?;
        if !t.exec.get().is_null() && !core::ptr::eq(t.exec.get(), s) {
            // Task rule 3: give it up where it is (fails while attached there).
            // SAFETY: a task's executor is live while the task is listed (executor rule 3).
            let old = unsafe { &*t.exec.get() };
            with_ex!(old.inner(), e => e.release(run)).map_err(destroy_error)?;
            unlink(t);
        }
        let a = t.attrs.get();
        let fattrs =
            FiberAttrs { stack_size: if a.stack_size == 0 { 64 * 1024 } else { a.stack_size }, ..FiberAttrs::DEFAULT };
        let body = body_for(t, task, f, user);
        t.returned.set(None);
        let r = if a.switcher == KEEL_SWITCHER_UCONTEXT {
            with_ex!(s.inner(), e => e.attach_fiber_with::<keel_linux::ucontext::UcontextSwitch, _, _>(run, fattrs, body).map_err(attach_error))
        } else {
            with_ex!(s.inner(), e => e.attach_fiber(run, fattrs, body).map_err(attach_error))
        };
        let run = r?;
        t.run.set(Some(run));
        t.attached_once.set(true);
        t.kept.set(None);
        // Relaxed: this thread's own state from here on (the dispatched run is over).
        t.remote.store(REMOTE_NONE, Ordering::Relaxed);
        if t.exec.get().is_null() {
            link(s, t);
        }
        Ok(0)
    })
}

fn attach_error<B>(e: AttachError<B>) -> i64 {
    match e {
        AttachError::Stale(_) | AttachError::ExecutorGone(_) => err(libc::ESTALE),
        AttachError::AlreadyAttached(_) | AttachError::OwnedElsewhere(_) => err(libc::EBUSY),
        AttachError::NoStack { errno, .. } => -(errno.0 as i64),
        _ => err(libc::EINVAL),
    }
}

fn destroy_error(e: DestroyError) -> i64 {
    match e {
        DestroyError::Stale => err(libc::ESTALE),
        DestroyError::Attached | DestroyError::OwnedElsewhere => err(libc::EBUSY),
        _ => err(libc::EAGAIN),
    }
}

/// The task's executor and latest run, on this thread; `-EINVAL` if it has never been
/// attached to a live executor.
fn owned(task: keel_task) -> Result<(&'static TaskStorage, &'static ExecStorage, TaskHandle), i64> {
    let t = task_here(task)?;
    let s = t.exec.get();
    if s.is_null() {
        return Err(err(libc::EINVAL));
    }
    let run = t.run.get().ok_or(err(libc::ESTALE))?;
    // SAFETY: a listed task's executor is live (executor rule 3).
    Ok((t, unsafe { &*s }, run))
}

/// Cancels the task's current run, whatever its state: one that never started completes
/// at once as cancelled; a started one is resumed and every keel call it makes returns
/// `-ECANCELED` (its i/o is cancelled; a completion that won the race is still reported).
///
/// Thread safety: the executor's thread. Errors: `-ESTALE`, `-KEEL_EWRONGTHREAD`,
/// `-EINVAL` (not attached), `-EALREADY` (completed already).
#[unsafe(no_mangle)]
pub extern "C" fn keel_task_cancel(task: keel_task) -> keel_result {
    guard(|| {
        let (_, s, run) = owned(task)?;
        with_ex!(s.inner(), e => e.cancel(run)).map(|_| 0).map_err(|e| match e {
            CancelError::Stale => err(libc::ESTALE),
            CancelError::TooLate => err(libc::EALREADY),
            _ => err(libc::EINVAL),
        })
    })
}

/// The result of the task's latest run: the value its function returned (`>= 0`), or its
/// error: the negated errno it returned, `-ECANCELED`, `-KEEL_EPANICKED` (a panic inside
/// keel during the run), `-KEEL_EBADRESULT` (it returned a value below
/// `-KEEL_ERRNO_MAX`). `-EINPROGRESS` while it runs, `-ENODATA` if never attached.
///
/// Thread safety: the executor's thread (any thread if unowned). Errors: `-ESTALE`,
/// `-KEEL_EWRONGTHREAD`.
#[unsafe(no_mangle)]
pub extern "C" fn keel_task_result(task: keel_task) -> keel_result {
    guard(|| {
        let t = task_here(task)?;
        // Acquire: pairs with the worker's Release of `REMOTE_DONE`, publishing the result.
        match t.remote.load(Ordering::Acquire) {
            REMOTE_QUEUED => return Err(err(libc::EINPROGRESS)),
            REMOTE_DONE => {
                // Relaxed: published by the Acquire above.
                let r = t.remote_ret.load(Ordering::Relaxed);
                return if r < 0 { Err(r) } else { Ok(r) };
            }
            _ => {}
        }
        if let Some(kept) = t.kept.get() {
            return Ok(kept);
        }
        let (_, s, run) = match owned(task) {
            Ok(o) => o,
            Err(_) => return Err(err(libc::ENODATA)),
        };
        match with_ex!(s.inner(), e => e.result(run)) {
            Ok(Some(r)) => task_result_code(r),
            Ok(None) => Err(err(libc::EINPROGRESS)),
            Err(_) => Err(err(libc::ESTALE)),
        }
    })
}

/// Destroys the task: every handle to it is stale from now on; caller storage is the
/// caller's again.
///
/// Thread safety: the executor's thread (any thread if unowned). Errors: `-ESTALE`
/// (null, stale, destroyed already), `-KEEL_EWRONGTHREAD`, `-EBUSY` (attached: wait for
/// it, or cancel it and run the executor, first).
#[unsafe(no_mangle)]
pub extern "C" fn keel_task_destroy(task: keel_task) -> keel_result {
    guard(|| {
        let t = task_here(task)?;
        t.not_dispatched()?;
        if let Ok((_, s, run)) = owned(task) {
            with_ex!(s.inner(), e => e.destroy(run)).map_err(destroy_error)?;
            unlink(t);
        }
        // Release: pairs with `task_of`'s Acquire; later calls see a dead task.
        t.live_gen.store(0, Ordering::Release);
        if t.allocated.get() {
            // SAFETY: allocated by `create` from this list; nothing lives in it now.
            unsafe { FREE.put((t as *const TaskStorage).cast_mut().cast(), next_of) };
        }
        Ok(0)
    })
}

/// `sizeof` keel's task storage as this library was built.
#[unsafe(no_mangle)]
pub extern "C" fn keel_task_storage_size() -> usize {
    core::mem::size_of::<TaskStorage>()
}

impl TaskStorage {
    /// `-EBUSY` while a dispatcher holds a run of it.
    pub(crate) fn not_dispatched(&self) -> Result<(), i64> {
        // Acquire: pairs with the worker's Release of `REMOTE_DONE`.
        if self.remote.load(Ordering::Acquire) == REMOTE_QUEUED { Err(err(libc::EBUSY)) } else { Ok(()) }
    }

    /// The latest run's handle, and whether the task is unowned (dispatch rule 1).
    pub(crate) fn unowned_run(&self) -> Option<TaskHandle> {
        if self.exec.get().is_null() { self.run.get() } else { None }
    }

    pub(crate) fn set_run(&self, run: TaskHandle) {
        self.run.set(Some(run));
        self.kept.set(None);
        self.attached_once.set(true);
    }
}

/// Task rule 4, first half: the results of completed runs, before the teardown.
pub(crate) fn results_before_teardown(s: &ExecStorage) {
    let mut p = s.tasks.get();
    while !p.is_null() {
        // SAFETY: listed tasks are live (executor rule 3).
        let t = unsafe { &*p };
        if let Some(run) = t.run.get()
            && let Ok(Some(r)) = with_ex!(s.inner(), e => e.result(run))
        {
            t.kept.set(Some(task_result_code(r).unwrap_or_else(|e| e)));
        }
        p = t.next.get();
    }
}

/// Task rule 4, second half, and executor rule 3: after the teardown every listed task is
/// unowned, and keeps its result.
pub(crate) fn orphan_all(s: &ExecStorage) {
    let mut p = s.tasks.replace(null());
    while !p.is_null() {
        // SAFETY: listed tasks are live (executor rule 3).
        let t = unsafe { &*p };
        if t.kept.get().is_none() && t.attached_once.get() {
            t.kept.set(Some(t.returned.get().unwrap_or(err(libc::ECANCELED))));
        }
        p = t.next.replace(null());
        t.prev.set(null());
        t.exec.set(null());
        // Relaxed: see `task_here`.
        t.owner_thread.store(0, Ordering::Relaxed);
    }
}
