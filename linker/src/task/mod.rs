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

pub(crate) mod handover;
mod run;
pub(crate) mod settle;

use crate::body::task_result_code;
use crate::executor::{ExecStorage, with_ex};
use crate::result::{KEEL_EWRONGTHREAD, err, guard, keel_result};
use crate::stable::FreeList;
use crate::thread;
use core::cell::Cell;
use core::ffi::c_void;
use core::ptr::null;
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicPtr, AtomicU8, AtomicU64, Ordering};
use keel_core::{Priorities, Priority, TaskAttrs, TaskHandle, TaskSlot};
pub(crate) use run::owned;
pub use run::{
    keel_task_attach, keel_task_cancel, keel_task_destroy, keel_task_result, keel_task_spawn, keel_task_storage_size,
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
/// The smallest `keel_task_attr::stack_size` (0 aside): keel's own frames under the
/// suspending calls (the boundary guard, the fiber call, the i/o wait) need 12 KiB in a
/// debug build (`tests/min_stack_c_calls.rs`); this leaves room for the task function's.
pub const KEEL_TASK_MIN_STACK: usize = 16 * 1024;

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
    /// Usable fiber stack bytes (0: 64 KiB; at least `KEEL_TASK_MIN_STACK`; rounded up
    /// to pages).
    pub stack_size: usize,
}

/// What a task handle points at.
#[repr(C, align(64))]
pub(crate) struct TaskStorage {
    slot: TaskSlot<BODY>,
    /// 0: no task here (task rule 1).
    pub(crate) live_gen: AtomicU64,
    /// The owning executor's thread, 0 if unowned (task rule 2).
    owner_thread: AtomicU64,
    /// Free-list link (stable rule 2).
    next_free: usize,
    allocated: Cell<bool>,
    exec: Cell<*const ExecStorage>,
    prev: Cell<*const TaskStorage>,
    next: Cell<*const TaskStorage>,
    /// keel's handle of the latest run (or of the creation, before any attach).
    pub(crate) run: Cell<Option<TaskHandle>>,
    attached_once: Cell<bool>,
    /// The result kept when the executor went away (task rule 4).
    kept: Cell<Option<i64>>,
    /// The function's mapped return value of the current run, once it returned.
    pub(crate) returned: Cell<Option<i64>>,
    /// The running function's fiber (body rule 1). Atomic because a posted or dispatched
    /// run sets it on the executor's thread; every access is Relaxed: it is read only by
    /// the task's own function, on the thread that set it (body rule 1).
    pub(crate) fiber: AtomicPtr<keel_core::Fiber>,
    attrs: Cell<keel_task_attr>,
    /// A dispatched run (dispatch rule 2): `REMOTE_*`, and its result once done.
    pub(crate) remote: AtomicU8,
    pub(crate) remote_ret: AtomicI64,
    /// A posted or dispatched body is in keel's hands and has not published its result:
    /// dropped unrun (cancelled, its executor destroyed, or no stack for it), it
    /// publishes `-ECANCELED` (dispatch rule 2).
    pub(crate) remote_armed: AtomicBool,
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
    if a.switcher > KEEL_SWITCHER_UCONTEXT || (a.stack_size != 0 && a.stack_size < KEEL_TASK_MIN_STACK) {
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
        (&raw mut (*p).fiber).write(AtomicPtr::new(core::ptr::null_mut()));
        (&raw mut (*p).remote_armed).write(AtomicBool::new(false));
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

impl TaskStorage {
    /// `-EBUSY` while a dispatcher holds a run of it.
    pub(crate) fn not_dispatched(&self) -> Result<(), i64> {
        // Acquire: pairs with the worker's Release of `REMOTE_DONE`.
        if self.remote.load(Ordering::Acquire) == REMOTE_QUEUED { Err(err(libc::EBUSY)) } else { Ok(()) }
    }

    /// Whether an executor owns the task (any thread may ask: task rule 2's atomic).
    pub(crate) fn owned_anywhere(&self) -> bool {
        // Relaxed: a snapshot; keel's own claim in the attach is what decides.
        self.owner_thread.load(Ordering::Relaxed) != 0
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
