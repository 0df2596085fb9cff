//! Wait primitives for tasks: [`Semaphore`], [`Mutex`], [`Event`] and a bounded
//! [`Channel`] over caller-provided storage. Intrusive and allocation-free: a waiter's
//! node lives in its future (pinned) or on its fiber's stack. Each works from future
//! tasks (`.await` the future a method returns) and from fibers (the `*_blocking`
//! methods, which take the fiber's `&mut Fiber`).
//!
//! Two flavours of each, picked by a type parameter:
//!
//! - [`Local`] (`LocalSemaphore`, `LocalMutex`, ...): for tasks on one thread. No lock
//!   and no atomic read-modify-write: taking and giving a unit are `Cell` updates, and a
//!   waiter of an executor on this thread is woken as the executor wakes its own tasks
//!   (wake rule 7). Neither `Send` nor `Sync`: share it between tasks with an `Rc` or a
//!   `thread_local!`.
//! - [`Shared`] (`Semaphore`, `Mutex`, ...): `Sync` (and `Send`), for tasks on any
//!   executors and any threads; its state sits behind a one-byte spin lock, and a waiter
//!   is woken through `TaskHandle::wake` (wake rules 2-4). Put it in a `static`.
//!
//! ```
//! use core::pin::pin;
//! use keel_core::wait::Semaphore;
//! use keel_core::{Config, Executor, TaskAttrs, TaskError, TaskSlot, rt, sim::SimDriver};
//! static SEM: Semaphore = Semaphore::new(1);
//! static A: TaskSlot = TaskSlot::new();
//! static B: TaskSlot = TaskSlot::new();
//! let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
//! let ex = ex.into_ref();
//! for slot in [&A, &B] {
//!     ex.attach(slot.create(TaskAttrs::default()).unwrap(), async {
//!         for _ in 0..3 {
//!             let permit = SEM.acquire().await?; // one task at a time in here
//!             rt::yield_now().await?;
//!             drop(permit); // hands the permit to the other task, which waits
//!         }
//!         Ok::<_, TaskError>(())
//!     }).unwrap();
//! }
//! while ex.attached() > 0 { ex.run(16, None).unwrap(); }
//! assert_eq!(SEM.available_permits(), 1);
//! ```
//!
//! A primitive cannot be dropped (or moved) while a waiter, permit or guard borrows it
//! (wait rule 2):
//!
//! ```compile_fail,E0505
//! let sem = keel_core::wait::LocalSemaphore::new(0);
//! let acquire = sem.acquire();
//! drop(sem); // error: `sem` is borrowed by `acquire`
//! drop(acquire);
//! ```
//!
//! and a same-thread primitive cannot be shared with another thread (wait rule 1):
//!
//! ```compile_fail,E0277
//! fn share<T: Sync>(_: &T) {}
//! share(&keel_core::wait::LocalSemaphore::new(1));
//! ```
//!
//! Rules (cited as "wait rule N"):
//! 1. A same-thread primitive stays on the thread that made it (`!Send`, `!Sync`), so
//!    all its waiters were queued there, by tasks of executors on that thread.
//! 2. A waiter borrows its primitive, so a primitive is never dropped or moved while a
//!    waiter (a future, a fiber's wait) exists: dropping a primitive with waiters does
//!    not compile. A permit or guard borrows it too. (A waiting future leaked with
//!    `mem::forget` keeps its place and whatever unit it is granted, as a forgotten
//!    permit does; its node stays valid, since pinned memory is never reused without
//!    its drop.)
//! 3. A primitive's state (free units, closed flag, queues, and every queued node's
//!    fields) is touched only under its lock (same-thread: on its one thread), by keel's
//!    own code, which runs no user code meanwhile (no `T` is dropped and no foreign
//!    waker called inside), so the lock is never re-entered and each critical section is
//!    bounded (below).
//! 4. Waiters are served by their task's CPU priority, then first come first served
//!    within a level; a new waiter does not take a free unit while others wait for one
//!    (no barging), so a high-priority waiter queued first is never overtaken.
//! 5. A waiter is queued at its first try that finds no free unit, and its node names
//!    the task that polled it last (a future moved to another task wakes that one). A
//!    try outside a task (rt rule 2: polled by hand, moved out of its task, on another
//!    thread) takes a free unit if there is one and otherwise ends the wait with
//!    `WaitError::NotInTask`, leaving the queue; one by a cancelled task ends it with
//!    `WaitError::Cancelled`, leaving the queue.
//! 6. Giving a unit back hands it to the first waiter (by rule 4) by taking the waiter
//!    off the queue and marking it granted: from then on the unit is that waiter's.
//!    A granted waiter that is dropped, or whose task was cancelled before it took the
//!    unit (its try then says `Cancelled`), passes the unit on to the next waiter, or
//!    back to the free count: no wake is swallowed. A granted waiter polled outside its
//!    task takes the unit (it is its own). Closing marks every queued waiter closed.
//! 7. A waiter is woken after it is marked, under the lock. Same-thread: if its task's
//!    current run is still the one queued and is owned by the executor it was queued
//!    from, that executor is alive and on this thread (rule 1; an executor's drop
//!    releases its tasks), and the wake is `Sched::wake_local` (wake rule 7, plain
//!    `Cell`s); otherwise `TaskHandle::wake`, a no-op for a stale run. Cross-thread:
//!    always `TaskHandle::wake` (lock-free; at most one unpark syscall). The lock's
//!    Release (giver) and Acquire (waiter's next try) order the mark before the
//!    waiter's read of it; the wake orders nothing (loom: `loom_wait`).
//!
//! Bounds: a try, a take and a give are O(1) (three priority levels); `add_permits(n)`
//! wakes at most `n` waiters; `Event::set` and `close` wake every waiter queued at the
//! time, once each. The same-thread flavour has no loop beyond these; the cross-thread
//! lock spins while another thread holds it (blocking, one bounded critical section per
//! holder ahead).

mod channel;
mod event;
mod lock;
mod mutex;
mod semaphore;
mod state;
mod waiter;

pub use channel::{Channel, LocalChannel, Recv, SendError, Sending, TryRecvError, TrySendError};
pub use event::{Event, EventWait, LocalEvent};
pub use lock::{NoLock, RawLock, SpinLock};
pub use mutex::{LocalMutex, Lock, Mutex, MutexGuard};
pub use semaphore::{Acquire, LocalSemaphore, Permit, Semaphore, TryAcquireError};

/// Which flavour a primitive is: [`Local`] or [`Shared`]. Sealed.
pub trait Flavour: sealed::Sealed + 'static {
    /// The lock its state sits behind.
    type Lock: RawLock;
    /// Whether it is the same-thread flavour.
    const LOCAL: bool;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Local {}
    impl Sealed for super::Shared {}
}

/// The same-thread flavour: no lock, no atomic read-modify-write, `!Send` and `!Sync`.
#[derive(Debug)]
pub enum Local {}

/// The cross-thread flavour: `Sync`, a spin lock around the state.
#[derive(Debug)]
pub enum Shared {}

impl Flavour for Local {
    type Lock = NoLock;
    const LOCAL: bool = true;
}

impl Flavour for Shared {
    type Lock = SpinLock;
    const LOCAL: bool = false;
}

/// Why a wait ended without its unit.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitError {
    /// The waiting task was cancelled (propagate it with `?`).
    Cancelled,
    /// The primitive was closed.
    Closed,
    /// Polled outside its task (rt rule 2) while it would have had to wait.
    NotInTask,
}

impl core::fmt::Display for WaitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WaitError::Cancelled => f.write_str("the task was cancelled: return and let it complete"),
            WaitError::Closed => f.write_str("the primitive was closed: stop waiting on it"),
            WaitError::NotInTask => f.write_str(
                "waited outside a keel task (polled by hand, moved out of its task, or on another thread): \
                 await it inside the task that created it",
            ),
        }
    }
}

/// `Cancelled` stays `Cancelled`; `Closed` fails the task with `-EPIPE`, `NotInTask`
/// with `-EPERM`.
impl From<WaitError> for crate::TaskError {
    fn from(e: WaitError) -> Self {
        match e {
            WaitError::Cancelled => crate::TaskError::Cancelled,
            // Negative errnos, as a task's failure codes are: EPIPE, EPERM.
            WaitError::Closed => crate::TaskError::Failed(-32),
            WaitError::NotInTask => crate::TaskError::Failed(-1),
        }
    }
}

static_assertions::assert_impl_all!(Semaphore: Send, Sync);
static_assertions::assert_impl_all!(Mutex<u32>: Send, Sync);
static_assertions::assert_impl_all!(Event: Send, Sync);
static_assertions::assert_impl_all!(Channel<'static, u32>: Send, Sync);
static_assertions::assert_impl_all!(Acquire<'static>: Send);
static_assertions::assert_impl_all!(MutexGuard<'static, u32>: Send, Sync);
static_assertions::assert_not_impl_any!(MutexGuard<'static, core::cell::Cell<u32>>: Sync);
static_assertions::assert_not_impl_any!(Mutex<std_free::NotSend>: Sync);
static_assertions::assert_not_impl_any!(LocalSemaphore: Send, Sync);
static_assertions::assert_not_impl_any!(LocalMutex<u32>: Send, Sync);
static_assertions::assert_not_impl_any!(LocalEvent: Send, Sync);
static_assertions::assert_not_impl_any!(LocalChannel<'static, u32>: Send, Sync);

/// A `!Send` type for the assertions above (no `std` here).
mod std_free {
    pub struct NotSend(#[allow(dead_code)] *const ());
}

#[cfg(keel_loom)]
std::thread_local! {
    static WEAK_LOCK: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
}

/// The ordering `SpinLock` takes its lock with: Acquire, or Relaxed in the weakened twin.
#[cfg(keel_loom)]
pub(crate) fn loom_lock_ordering() -> crate::sync::Ordering {
    if WEAK_LOCK.with(|c| c.get()) { crate::sync::Ordering::Relaxed } else { crate::sync::Ordering::Acquire }
}

/// The loom twin's switch: `SpinLock` takes its lock with Relaxed (the model must then
/// find a data race on the state). Shared by the threads of one model.
#[cfg(keel_loom)]
#[doc(hidden)]
pub fn loom_weaken_lock(on: bool) {
    WEAK_LOCK.with(|c| c.set(on));
}
