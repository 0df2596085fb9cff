//! Shared pieces of the models.

use core::convert::Infallible;
use keel_core::driver::IoToken;
use keel_core::loom_api::Unparker;
use keel_core::{Driver, Errno, Instant, IoResult, OpId, Park};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Explores every execution of `f` with at most `preemptions` preemptions per
/// execution (the models pass 3, `LOOM_MAX_PREEMPTIONS=3`, or say why less; set here
/// rather than read from the environment so that `make loom` does not depend on it).
pub fn check(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(preemptions);
    // Executions through whole executors are longer than loom's default of 1,000
    // branches; a real spin still ends here, a few times later.
    b.max_branches = 100_000;
    let executions = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = executions.clone();
    let start = std::time::Instant::now();
    b.check(move || {
        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f()
    });
    println!(
        "loom: {} executions in {:.2?} (preemption bound {preemptions})",
        executions.load(std::sync::atomic::Ordering::Relaxed),
        start.elapsed()
    );
}

/// `'static` storage for one execution (task slots, handle slots, dispatchers): keel
/// wants `'static` where users write `static`, but loom's atomics must be created
/// inside the execution that uses them.
pub struct Leaked<T: 'static>(&'static T);

impl<T: 'static> Leaked<T> {
    /// Moves `value` to the heap for the rest of the execution.
    pub fn new(value: T) -> Self {
        Leaked(Box::leak(Box::new(value)))
    }

    /// The `'static` reference.
    pub fn get(&self) -> &'static T {
        self.0
    }

    /// Frees the storage.
    ///
    /// # Safety
    /// Nothing uses the reference any more: threads joined, executors dropped.
    pub unsafe fn free(self) {
        // SAFETY: made by `Box::leak` in `new`; the caller says it is unused.
        drop(unsafe { Box::from_raw(self.0 as *const T as *mut T) });
    }
}

/// How a [`Parker::park`] ended.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Parked {
    /// The unparker was called (now or before: it leaves a token).
    Woke,
    /// Every other thread has said it will never unpark us: a real executor parked
    /// here with no deadline would sleep forever.
    Quiet,
}

/// A parking place for the executor's thread made of loom's `park`/`unpark`, standing
/// in for the eventfd, futex or ring that cannot run under loom. Its unparker (park
/// rule 3) leaves a token and unparks the thread; `park` returns once it finds a token.
pub struct Parker {
    thread: loom::thread::Thread,
    token: AtomicBool,
    quiet: Arc<Quiet>,
    unparks: AtomicUsize,
}

/// How many of the threads that may unpark a [`Parker`] have said they are done.
pub struct Quiet {
    done: AtomicUsize,
    threads: usize,
}

impl Quiet {
    /// For `threads` threads that may unpark.
    pub fn new(threads: usize) -> Arc<Self> {
        Arc::new(Quiet { done: AtomicUsize::new(0), threads })
    }

    /// One of them will unpark no more; the caller then loom-unparks every parker's
    /// thread (so that it looks again).
    pub fn done(&self) {
        // Release: publishes everything the thread did (pairs with `is_quiet`'s Acquire).
        self.done.fetch_add(1, Ordering::Release);
    }

    /// Whether all of them are done.
    pub fn is_quiet(&self) -> bool {
        // Acquire: pairs with `done`'s Release, so what they did is visible.
        self.done.load(Ordering::Acquire) == self.threads
    }
}

impl Parker {
    /// A parker for the calling thread, which `threads` other threads may unpark.
    pub fn new(threads: usize) -> Arc<Self> {
        Self::sharing(Quiet::new(threads))
    }

    /// A parker for the calling thread, quiet when `quiet` is.
    pub fn sharing(quiet: Arc<Quiet>) -> Arc<Self> {
        Arc::new(Parker {
            thread: loom::thread::current(),
            token: AtomicBool::new(false),
            quiet,
            unparks: AtomicUsize::new(0),
        })
    }

    /// The unparker to hand to keel. `self` must outlive every call of it.
    pub fn unparker(&self) -> Unparker {
        Unparker { ctx: self as *const Parker as usize, unpark: unpark_fn }
    }

    /// Blocks until a token is there (taking it), or until every other thread is done.
    pub fn park(&self) -> Parked {
        // At most one loom unpark per other thread's unparker call or `done`, so the loop
        // is bounded by the model; the bound says so if it is not.
        for _ in 0..16 {
            // Acquire: pairs with the unparker's Release, like an eventfd read.
            if self.token.swap(false, Ordering::Acquire) {
                return Parked::Woke;
            }
            if self.quiet.is_quiet() {
                // An unparker may have run between our two looks.
                return if self.token.swap(false, Ordering::Acquire) { Parked::Woke } else { Parked::Quiet };
            }
            loom::thread::park();
        }
        panic!("model parker: parked 16 times in one park");
    }

    /// Called by each other thread as its last step: it will never unpark us again.
    pub fn done(&self) {
        self.quiet.done();
        self.thread.unpark();
    }

    /// Waits until every other thread has called [`done`](Self::done), so that it will
    /// unpark us no more: call before joining them (loom's `unpark` of a thread blocked
    /// in `join` breaks loom's join).
    pub fn wait_quiet(&self) {
        for _ in 0..16 {
            if self.quiet.is_quiet() {
                return;
            }
            loom::thread::park();
        }
        panic!("model parker: parked 16 times waiting for the other threads");
    }

    /// How many times the unparker was called.
    pub fn unparks(&self) -> usize {
        self.unparks.load(Ordering::Relaxed)
    }
}

fn unpark_fn(ctx: usize) {
    // SAFETY: `ctx` is a `Parker` that outlives every call (`Parker::unparker`).
    let p = unsafe { &*(ctx as *const Parker) };
    // Relaxed: a count the executor's thread reads after joining everyone.
    p.unparks.fetch_add(1, Ordering::Relaxed);
    // Release: like an eventfd write, publishes the unparker's push to the parked thread.
    // A swap, not a store: loom checks RMW atomicity only among RMWs (tokio-rs/loom#254),
    // and `park` takes the token with a swap.
    p.token.swap(true, Ordering::Release);
    p.thread.unpark();
}

/// A driver with no i/o whose `park` is a [`Parker`]'s: `Park::Stalled` when the
/// parker is quiet (a real driver would have slept forever).
pub struct ModelDriver {
    parker: Arc<Parker>,
}

impl ModelDriver {
    /// Parks on `parker`.
    pub fn new(parker: Arc<Parker>) -> Self {
        ModelDriver { parker }
    }
}

// SAFETY: it accepts no operation (its `Op` is uninhabited), and its unparker is the
// model's parker, which the executor keeps alive.
unsafe impl Driver for ModelDriver {
    type Op = Infallible;

    fn now(&self) -> Instant {
        Instant::ZERO
    }

    fn submit(&mut self, op: Infallible, _: IoToken) -> Result<OpId, (Infallible, Errno)> {
        match op {}
    }

    fn cancel(&mut self, _: OpId) {}

    fn retarget(&mut self, _: OpId, _: IoToken) {}

    fn reap<F: FnMut(IoToken, IoResult)>(&mut self, _: usize, _: &mut F) -> usize {
        0
    }

    fn in_flight(&self) -> usize {
        0
    }

    fn park(&mut self, _deadline: Option<Instant>) -> Result<Park, Errno> {
        Ok(match self.parker.park() {
            Parked::Woke => Park::Woke,
            Parked::Quiet => Park::Stalled,
        })
    }

    fn unparker(&mut self, _park_word: *const u32) -> Option<Unparker> {
        Some(self.parker.unparker())
    }
}

/// An executor for one execution, pinned on the heap. If the execution panics (a
/// model's assertion, in a weakened twin) the executor is leaked rather than dropped:
/// its drop waits for the inbox to empty, which a broken protocol may never let happen.
pub struct ModelExecutor<D: Driver>(Option<core::pin::Pin<Box<keel_core::Executor<D>>>>);

impl<D: Driver> ModelExecutor<D> {
    /// A new executor over `driver`.
    pub fn new(driver: D, config: keel_core::Config) -> Self {
        ModelExecutor(Some(Box::pin(keel_core::Executor::new(driver, config).unwrap())))
    }

    /// The executor, pinned.
    pub fn get(&self) -> core::pin::Pin<&keel_core::Executor<D>> {
        self.0.as_ref().unwrap().as_ref()
    }
}

impl<D: Driver> Drop for ModelExecutor<D> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Leaked, never dropped: the pinned memory stays valid (Pin's guarantee).
            core::mem::forget(self.0.take());
        }
    }
}

/// A weakened twin's wake: the waker's CAS on the notify word is Relaxed (wake rules 3-4
/// say AcqRel).
pub struct RelaxedWakeCas;
impl keel_core::loom_api::Weaken for RelaxedWakeCas {
    const WAKE_CAS: loom::sync::atomic::Ordering = loom::sync::atomic::Ordering::Relaxed;
}

/// A weakened twin's wake: the waker's CAS publishes but does not acquire (Release; wake
/// rule 5 says AcqRel).
pub struct ReleaseWakeCas;
impl keel_core::loom_api::Weaken for ReleaseWakeCas {
    const WAKE_CAS: loom::sync::atomic::Ordering = loom::sync::atomic::Ordering::Release;
}
