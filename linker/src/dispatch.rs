//! The work dispatcher for C: tasks submitted from any thread run on whichever serving
//! executor is idle, highest CPU priority first; a thread pool helper starts worker
//! threads that serve it.
//!
//! Dispatch rules (cited as "dispatch rule N"; keel-core's dispatcher has its own):
//! 1. Only an unowned task (never attached, or released by its executor's destroy, or
//!    done with a previous dispatched run) is submitted. It runs as a fiber on the worker
//!    that takes it, with a stack from that worker's pool (handover rules in
//!    `task/handover.rs`), so it may yield and sleep (and do i/o on a worker that has a
//!    ring); the pool's workers have none, so their i/o calls fail as on a ring-less
//!    executor.
//! 2. A submitted task is `REMOTE_QUEUED` until the worker's body stores its result and
//!    `REMOTE_DONE` (Release; `keel_task_result` Acquires), or until a body dropped unrun
//!    stores `-ECANCELED` and `REMOTE_DONE` (handover rule 2). Until then `attach`, `destroy`
//!    and another `submit` of it get `-EBUSY`; the body touches nothing else of it. After
//!    it, reusing or destroying the task waits (bounded) for keel's release of it (settle
//!    rules in `task/settle.rs`).
//! 3. A dispatcher's storage is allocated once and type-stable (stable rules), so it is
//!    `'static` as keel-core's dispatcher and workers need. `destroy` refuses while tasks
//!    remain, and joins the workers its own pool started; executors the program made serve
//!    it (`keel_executor_serve`) must be destroyed first.

use crate::body::keel_task_fn;
use crate::result::{err, guard, keel_result};
use crate::stable::FreeList;
use crate::task::handover::hand_over;
use crate::task::settle::settle;
use crate::task::{REMOTE_DONE, REMOTE_QUEUED, keel_task, task_here};
use core::ffi::c_void;
use core::sync::atomic::{AtomicU64, Ordering};
use keel_core::{AttachError, Dispatcher};
use keel_linux::pool::ThreadPool;
use std::alloc::Layout;
use std::sync::Mutex;
use std::time::Duration;

/// A handle to a dispatcher; all zeros is the null handle.
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct keel_dispatcher {
    /// The storage (opaque).
    pub storage: *mut c_void,
    /// The dispatcher's generation.
    pub generation: u64,
}

struct DispStorage {
    live_gen: AtomicU64,
    next_free: usize,
    disp: Dispatcher,
    pool: Mutex<Option<ThreadPool>>,
}

static FREE: FreeList = FreeList::new(
    match Layout::from_size_align(core::mem::size_of::<DispStorage>(), core::mem::align_of::<DispStorage>()) {
        Ok(l) => l,
        Err(_) => panic!("keel bug: the dispatcher storage layout is invalid"),
    },
);

fn next_of(p: *mut u8) -> *mut usize {
    // SAFETY: `p` is a `DispStorage` (stable rule 1); a place projection, no reference.
    unsafe { &raw mut (*p.cast::<DispStorage>()).next_free }
}

fn disp_of(h: keel_dispatcher) -> Result<&'static DispStorage, i64> {
    let p = h.storage.cast::<DispStorage>();
    if p.is_null() || h.generation == 0 || !p.is_aligned() {
        return Err(err(libc::ESTALE));
    }
    // SAFETY: dispatcher storage is type-stable and never freed (dispatch rule 3).
    let d = unsafe { &*p };
    // Acquire: pairs with create's Release store.
    if d.live_gen.load(Ordering::Acquire) != h.generation {
        return Err(err(libc::ESTALE));
    }
    Ok(d)
}

/// Makes a dispatcher (allocated once, kept for the next `create` after `destroy`).
///
/// Thread safety: any thread. Errors: `-ENOMEM`, `-EOPNOTSUPP` (the CPU lacks
/// `cmpxchg16b`, which keel's dispatcher needs).
///
/// # Safety
/// `out` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_dispatcher_create(out: *mut keel_dispatcher) -> keel_result {
    guard(|| {
        if out.is_null() {
            return Err(err(libc::EINVAL));
        }
        if !Dispatcher::supported() {
            return Err(err(libc::EOPNOTSUPP));
        }
        let (p, fresh) = FREE.take(next_of).ok_or(err(libc::ENOMEM))?;
        let p = p.cast::<DispStorage>();
        let g = crate::thread::next_generation();
        // SAFETY: a dispatcher storage from the free list (or new), ours now; fields are
        // written by place, the generation last (Release: pairs with `disp_of`).
        unsafe {
            if fresh {
                (&raw mut (*p).live_gen).write(AtomicU64::new(0));
                (&raw mut (*p).next_free).write(0);
            }
            (&raw mut (*p).disp).write(Dispatcher::new());
            (&raw mut (*p).pool).write(Mutex::new(None));
            (*p).live_gen.store(g, Ordering::Release);
            out.write(keel_dispatcher { storage: p.cast(), generation: g });
        }
        Ok(0)
    })
}

/// Starts `workers` threads, each a ring-less executor serving the dispatcher (pinned
/// one per CPU if `pin`). Thread safety: any thread. Errors: `-ESTALE`, `-EBUSY` (this
/// dispatcher's pool is started already), an errno from thread creation.
#[unsafe(no_mangle)]
pub extern "C" fn keel_dispatcher_start(d: keel_dispatcher, workers: u32, pin: bool) -> keel_result {
    guard(|| {
        let s = disp_of(d)?;
        let mut pool = s.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.is_some() {
            return Err(err(libc::EBUSY));
        }
        let p = ThreadPool::start(&s.disp, workers as usize, pin)
            .map_err(|e| -(e.raw_os_error().unwrap_or(libc::EAGAIN) as i64))?;
        *pool = Some(p);
        Ok(workers as i64)
    })
}

/// Submits `n` tasks, each to run `fn(tasks[i], users ? users[i] : NULL)` once on a worker,
/// highest CPU priority first. Returns how many were submitted (it stops at the first
/// that fails; if that is the first, its error).
///
/// Ownership: `users[i]` stays the caller's and valid until that task's run completes.
/// Thread safety: any thread; `fn` runs on a worker thread. Errors: `-ESTALE` (the
/// dispatcher or a task), `-EINVAL` (`fn` NULL, `tasks` NULL), `-EBUSY` (a task is owned
/// by an executor or dispatched already), `-KEEL_EWRONGTHREAD`.
///
/// # Safety
/// `tasks` holds `n` handles; `users` is NULL or holds `n` pointers.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_dispatcher_submit(
    d: keel_dispatcher,
    tasks: *const keel_task,
    n: usize,
    f: keel_task_fn,
    users: *const *mut c_void,
) -> keel_result {
    guard(|| {
        let s = disp_of(d)?;
        let f = f.ok_or(err(libc::EINVAL))?;
        if tasks.is_null() && n != 0 {
            return Err(err(libc::EINVAL));
        }
        for i in 0..n {
            // SAFETY: `n` handles (and users) per the contract.
            let (task, user) =
                unsafe { (*tasks.add(i), if users.is_null() { core::ptr::null_mut() } else { *users.add(i) }) };
            if let Err(e) = submit_one(s, task, f, user) {
                return if i == 0 { Err(e) } else { Ok(i as i64) };
            }
        }
        Ok(n as i64)
    })
}

fn submit_one(
    s: &'static DispStorage,
    task: keel_task,
    f: unsafe extern "C-unwind" fn(keel_task, *mut c_void) -> i64,
    user: *mut c_void,
) -> Result<(), i64> {
    let t = task_here(task)?;
    t.not_dispatched()?;
    let run = t.unowned_run().ok_or(err(libc::EBUSY))?;
    // Settle rule 2: a task whose last run was remote may not be released yet.
    let was = t.remote.load(Ordering::Acquire);
    // Relaxed: the submit's own Release publishes the task (and this) to the worker;
    // stored before, as a worker may run the body (and store `REMOTE_DONE`) at once.
    t.remote.store(REMOTE_QUEUED, Ordering::Relaxed);
    let submitted = settle(was == REMOTE_DONE, || {
        hand_over(&&s.disp, t, run, task, f, user, |e| match e {
            AttachError::Stale(()) => err(libc::ESTALE),
            AttachError::Unsupported(()) => err(libc::EOPNOTSUPP),
            _ => err(libc::EBUSY),
        })
    });
    match submitted {
        Ok(run) => {
            t.set_run(run);
            Ok(())
        }
        Err(e) => {
            // Relaxed: as above; nothing was handed over.
            t.remote.store(was, Ordering::Relaxed);
            Err(e)
        }
    }
}

/// Blocks until at most `max_remaining` submitted tasks have not completed: 0, or
/// `-ETIME` once `timeout_ns` passed. Thread safety: any thread. Errors: `-ESTALE`.
#[unsafe(no_mangle)]
pub extern "C" fn keel_dispatcher_wait(d: keel_dispatcher, max_remaining: u64, timeout_ns: u64) -> keel_result {
    guard(|| {
        let s = disp_of(d)?;
        if keel_linux::pool::wait(&s.disp, max_remaining, Duration::from_nanos(timeout_ns)) {
            Ok(0)
        } else {
            Err(err(libc::ETIME))
        }
    })
}

/// Asks `n` serving executors to quit once idle (after every task submitted before this
/// call has run) and waits up to `timeout_ns` for them; returns how many quit.
/// Thread safety: any thread. Errors: `-ESTALE`.
#[unsafe(no_mangle)]
pub extern "C" fn keel_dispatcher_quit(d: keel_dispatcher, n: u32, timeout_ns: u64) -> keel_result {
    guard(|| {
        let s = disp_of(d)?;
        Ok(keel_linux::pool::quit(&s.disp, n, Duration::from_nanos(timeout_ns)) as i64)
    })
}

/// Submitted tasks not yet completed. Thread safety: any thread. Errors: `-ESTALE`.
#[unsafe(no_mangle)]
pub extern "C" fn keel_dispatcher_remaining(d: keel_dispatcher) -> keel_result {
    guard(|| Ok(disp_of(d)?.disp.remaining().min(i64::MAX as u64) as i64))
}

/// Destroys the dispatcher: quits and joins the workers `keel_dispatcher_start` made.
/// Executors the program made that serve it must be destroyed before (not detected).
/// Thread safety: any thread. Errors: `-ESTALE` (also destroyed twice), `-EBUSY` (tasks
/// remain: wait first).
#[unsafe(no_mangle)]
pub extern "C" fn keel_dispatcher_destroy(d: keel_dispatcher) -> keel_result {
    guard(|| {
        let s = disp_of(d)?;
        if s.disp.remaining() > 0 {
            return Err(err(libc::EBUSY));
        }
        // Release: later handle checks see a dead dispatcher.
        s.live_gen.store(0, Ordering::Release);
        let pool = s.pool.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(pool) = pool {
            pool.quit_and_join().map_err(|_| err(libc::EIO))?;
        }
        // SAFETY: a storage of this list, holding no live dispatcher (no workers, no tasks).
        unsafe { FREE.put(d.storage.cast(), next_of) };
        Ok(0)
    })
}

/// Makes the executor serve the dispatcher: when it has no work of its own, its run
/// takes the highest-priority dispatched task; after `keel_dispatcher_quit` reaches it,
/// its `keel_executor_run` returns `-ESHUTDOWN`. Thread safety: the executor's thread.
/// Errors: `-ESTALE`, `-KEEL_EWRONGTHREAD`, `-EBUSY` (it serves one already, or every
/// worker slot is taken).
#[unsafe(no_mangle)]
pub extern "C" fn keel_executor_serve(ex: crate::executor::keel_executor, d: keel_dispatcher) -> keel_result {
    guard(|| {
        let e = crate::executor::exec_of(ex)?;
        let s = disp_of(d)?;
        let ok = crate::executor::with_ex!(e.inner(), x => x.serve(&s.disp));
        if ok { Ok(0) } else { Err(err(libc::EBUSY)) }
    })
}
