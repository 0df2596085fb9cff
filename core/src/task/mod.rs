//! Tasks: created once ("expensive"), reused for any number of runs.
//!
//! A task lives in a [`TaskSlot`] the user declares `'static` (or in a [`TaskPool`] of
//! them), so its storage outlives every handle and waker that names it. A
//! [`TaskHandle`] is the slot plus a generation: each attach starts a new run with a
//! new generation and returns its handle, so a handle for an earlier run, or for a
//! destroyed task, is detected as stale (a stale wake is a no-op; a stale attach,
//! cancel or destroy is a typed error).

pub(crate) mod body;
pub(crate) mod claim;
pub(crate) mod header;
pub(crate) mod join;
pub mod state;
pub(crate) mod wake;

pub use crate::switch::SwitcherKind;
pub use body::IntoTaskResult;
pub use header::TaskSlot;

use crate::priority::Priorities;
use crate::sync::Ordering;
use core::ptr::NonNull;
use core::task::Waker;
use header::{Header, SlotPtr};

/// How a task is created.
#[derive(Copy, Clone, Debug, Default)]
pub struct TaskAttrs {
    /// Its CPU and I/O priorities (changeable while it is not attached).
    pub priority: Priorities,
    /// A name for listings and debuggers.
    pub name: &'static str,
}

/// Why a slot could not be made into a task.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CreateError {
    /// The slot already holds a task: destroy it first, or use another slot.
    SlotInUse,
    /// Every slot of the pool holds a task.
    PoolFull,
}

impl core::fmt::Display for CreateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CreateError::SlotInUse => {
                f.write_str("the slot already holds a task: destroy it first or use another slot")
            }
            CreateError::PoolFull => {
                f.write_str("every slot of the pool holds a task: destroy one or declare a larger pool")
            }
        }
    }
}

static NEXT_ID: AtomicU32Static = AtomicU32Static::new();

/// The task-id counter (a static; under loom a plain `core` atomic is fine: ids are
/// labels, not synchronisation).
struct AtomicU32Static(core::sync::atomic::AtomicU32);
impl AtomicU32Static {
    const fn new() -> Self {
        AtomicU32Static(core::sync::atomic::AtomicU32::new(1))
    }
    fn next(&self) -> u32 {
        // Relaxed: a unique label, nothing is published with it.
        self.0.fetch_add(1, core::sync::atomic::Ordering::Relaxed)
    }
}

impl<const N: usize> TaskSlot<N> {
    /// Makes this slot a task (cold: one CAS). Returns the handle attach takes.
    pub fn create(&'static self, attrs: TaskAttrs) -> Result<TaskHandle, CreateError> {
        let trailer = &self.core.trailer;
        // Acquire: sees the last destroy's writes. Relaxed on failure: nothing read.
        if trailer.live.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed).is_err() {
            return Err(CreateError::SlotInUse);
        }
        // The slot is unowned, so the creating thread may set its local fields (header
        // rule 2).
        let header = &self.core.header;
        header.prio.set(attrs.priority);
        trailer.name.set(attrs.name);
        trailer.set_id(NEXT_ID.next());
        // Relaxed: only owner-side code reads it, after claiming with AcqRel.
        let generation = header.generation.load(Ordering::Relaxed);
        // Join rule 1: the handle returned names no run; a join on it says so.
        trailer.record.publish(generation, join::Outcome::NeverAttached);
        Ok(TaskHandle::from_parts(self.header(), generation))
    }
}

/// A fixed number of task slots, for when tasks are made and destroyed at run time.
pub struct TaskPool<const TASKS: usize, const BYTES: usize = 256> {
    slots: [TaskSlot<BYTES>; TASKS],
}

impl<const TASKS: usize, const BYTES: usize> TaskPool<TASKS, BYTES> {
    /// An empty pool.
    #[cfg(not(keel_loom))]
    pub const fn new() -> Self {
        TaskPool { slots: [const { TaskSlot::new() }; TASKS] }
    }

    /// An empty pool (loom's atomics have no const constructors).
    #[cfg(keel_loom)]
    pub fn new() -> Self {
        TaskPool { slots: core::array::from_fn(|_| TaskSlot::new()) }
    }

    /// Creates a task in the first free slot (cold: a scan and a CAS).
    pub fn create(&'static self, attrs: TaskAttrs) -> Result<TaskHandle, CreateError> {
        for slot in &self.slots {
            if let Ok(handle) = slot.create(attrs) {
                return Ok(handle);
            }
        }
        Err(CreateError::PoolFull)
    }
}

impl<const TASKS: usize, const BYTES: usize> Default for TaskPool<TASKS, BYTES> {
    fn default() -> Self {
        Self::new()
    }
}

/// Names one run of a task: its slot and that run's generation. `Copy`, `Send`, `Sync`.
#[derive(Copy, Clone, PartialEq, Eq, Hash)]
pub struct TaskHandle {
    /// The whole slot, typed as its header (provenance rule 1).
    hdr: NonNull<Header>,
    generation: u32,
}

// SAFETY: the header is in a `'static` slot and a handle only reads its atomics (or hands
// it to the owning executor, which checks ownership before touching anything else).
unsafe impl Send for TaskHandle {}
// SAFETY: as for `Send`.
unsafe impl Sync for TaskHandle {}

impl core::fmt::Debug for TaskHandle {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "TaskHandle(#{} gen {})", self.id(), self.generation)
    }
}

impl TaskHandle {
    pub(crate) fn from_parts(hdr: NonNull<Header>, generation: u32) -> Self {
        TaskHandle { hdr, generation }
    }

    pub(crate) fn header(self) -> NonNull<Header> {
        self.hdr
    }

    fn h(&self) -> &'static Header {
        // SAFETY: headers are in `'static` slots.
        unsafe { &*self.hdr.as_ptr() }
    }

    /// The run this handle names.
    pub fn generation(self) -> u32 {
        self.generation
    }

    /// The task's id (stable across runs; for messages and listings).
    pub fn id(self) -> u32 {
        self.hdr.trailer().id()
    }

    /// Whether this handle names the task's current run.
    pub fn is_current(self) -> bool {
        // Acquire: pairs with the owner's Release of a new generation.
        self.h().generation.load(Ordering::Acquire) == self.generation
    }

    /// Wakes this run of the task, from any thread (wake rules 1-4). Stale: a no-op.
    pub fn wake(self) {
        wake::wake_by_gen(self.hdr, self.generation);
    }

    /// A `Waker` for this run, usable from any thread. Allocation-free. Waking is all it
    /// does: keel futures polled with it in a `Context` of their own are outside the task
    /// (rt rule 2), on every thread.
    pub fn waker(self) -> Waker {
        wake::waker_for(self.hdr, self.generation)
    }
}

// Named by a driver's `IoToken`, defined here because a token names a task: the driver
// layer sits below the tasks it carries tokens for.
impl crate::driver::IoToken {
    /// A token whose completion wakes run `task` (if it is still that run) and counts as
    /// its i/o; the driver keeps the operation's result for the task to take.
    pub fn wake(task: TaskHandle) -> Self {
        crate::driver::IoToken { addr: task.header().as_ptr() as usize | Self::WAKE, generation: task.generation() }
    }
}
