//! The status block itself: its states, its links in its task's lists, and what the
//! owning executor does to it without a driver (complete it, reap it). Below the task
//! layer: a task's header embeds the lists these blocks are linked on. The io_status
//! rules are stated in the parent module.

use crate::driver::{IoResult, IoToken, OpId};
use crate::list::{Link, Links};
use crate::task::header::{Header, SlotPtr, Trailer};
use core::cell::Cell;
use core::marker::PhantomPinned;
use core::ptr::NonNull;

/// Marker for the status lists.
pub(crate) struct IoLink;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum IoState {
    Idle,
    InFlight,
    Completed,
    Reaped,
}

/// The status of one i/o operation. Pin it (on the fiber's stack, or in the future's
/// state) and pass it to `initiate`; read `result()` once it has completed.
///
/// Neither `Send` nor `Sync` (rule 1): once initiated it is linked in its task's lists,
/// and its `Drop` unlinks it from them, which only the executor's thread may do. A boxed
/// status sent to another thread could otherwise be dropped there, racing the executor:
///
/// ```compile_fail
/// fn send<T: Send>(_: T) {}
/// send(Box::pin(keel_core::IoStatus::new()));
/// ```
///
/// A future that holds one across an `.await` is therefore not `Send` either, so it is
/// attached with `Executor::attach` on the executor's own thread, not through
/// `ExecutorHandle::attach`. A future attached from another thread does its i/o through
/// operations that keep no status in the future (`try_submit` with a wake token, the
/// keel-linux future operations).
pub struct IoStatus {
    pub(super) links: Links<IoStatus>,
    pub(super) task: Cell<Option<NonNull<Header>>>,
    pub(super) op: Cell<OpId>,
    pub(super) state: Cell<IoState>,
    pub(super) result: Cell<Option<IoResult>>,
    /// Whether its completion wakes its task (see [`IoStatus::new_silent`]).
    pub(super) wakes: Cell<bool>,
    _pinned: PhantomPinned,
}

impl Default for IoStatus {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for IoStatus {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IoStatus").field("state", &self.state.get()).field("result", &self.result.get()).finish()
    }
}

// SAFETY: `links` is used only for the initiated/completed lists of the owning task.
unsafe impl Link<IoLink> for IoStatus {
    fn links(this: NonNull<Self>) -> NonNull<Links<Self>> {
        // SAFETY: `this` is a valid status; the projection stays inside it.
        unsafe { NonNull::new_unchecked(&raw mut (*this.as_ptr()).links) }
    }
}

impl IoStatus {
    /// A status block with nothing in flight.
    pub const fn new() -> Self {
        Self::with_wakes(true)
    }

    /// A status block whose completion does not wake its task (the status still moves to
    /// the completed list). For the first of a linked pair whose second operation always
    /// completes after it (and wakes the task): the task then wakes once, not twice. A task
    /// that waits on silent statuses alone never wakes.
    pub const fn new_silent() -> Self {
        Self::with_wakes(false)
    }

    const fn with_wakes(wakes: bool) -> Self {
        IoStatus {
            links: Links::new(),
            task: Cell::new(None),
            op: Cell::new(OpId(0)),
            state: Cell::new(IoState::Idle),
            result: Cell::new(None),
            wakes: Cell::new(wakes),
            _pinned: PhantomPinned,
        }
    }

    /// Whether its completion wakes its task.
    #[inline(always)]
    pub(crate) fn wakes(&self) -> bool {
        self.wakes.get()
    }

    /// From now on its completion wakes its task (for a silent status whose partner can
    /// no longer be counted on to complete after it: both cancelled, say).
    pub fn wake_on_completion(&self) {
        self.wakes.set(true);
    }

    /// The operation's result once it has completed.
    pub fn result(&self) -> Option<IoResult> {
        self.result.get()
    }

    /// Whether the operation is still in flight.
    pub fn is_in_flight(&self) -> bool {
        self.state.get() == IoState::InFlight
    }

    /// In flight or completed and not yet taken: it cannot start another operation.
    pub(crate) fn is_busy(&self) -> bool {
        matches!(self.state.get(), IoState::InFlight | IoState::Completed)
    }

    pub(crate) fn op_id(&self) -> OpId {
        self.op.get()
    }

    pub(crate) fn token(&self) -> IoToken {
        IoToken::status(self as *const IoStatus as usize)
    }

    /// Its operation `id` was submitted for `task`: in flight, on the task's initiated
    /// list (io_status rule 1).
    pub(crate) fn begin(self: core::pin::Pin<&Self>, id: OpId, task: NonNull<Header>) {
        self.op.set(id);
        self.task.set(Some(task));
        self.result.set(None);
        self.state.set(IoState::InFlight);
        // SAFETY: pinned (io_status rule 2: unlinked in Drop before the memory goes), and
        // not busy (the caller checked) means Idle or Reaped: on no list.
        unsafe { task.trailer().initiated.push_back(NonNull::from(self.get_ref())) };
    }

    /// Taken off its task's lists by the executor (teardown): reaped with `result`.
    pub(crate) fn reap_with(&self, result: IoResult) {
        self.result.set(Some(result));
        self.state.set(IoState::Reaped);
    }

    /// Its completion arrived: move it to the completed list. Returns its task.
    pub(crate) fn complete(&self, result: IoResult) -> NonNull<Header> {
        let task = self.task.get().expect("keel bug: completion for a status with no task");
        // SAFETY: `'static` header.
        let trailer = task.trailer();
        let this = NonNull::from(self);
        // SAFETY: an in-flight status is on its task's initiated list (rule 1); it is
        // alive and pinned (rule 2).
        unsafe {
            trailer.initiated.remove(this);
            trailer.completed.push_back(this);
        }
        self.result.set(Some(result));
        self.state.set(IoState::Completed);
        task
    }
}

/// Takes up to `max` statuses off the completed list, marking them reaped.
/// What a wait for one completed status block found (`Fiber::next_completed_io`,
/// `io_status::next_completed_io`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum NextIo {
    /// A status block completed: it was taken off the completed list (its `result()` is
    /// set), oldest completion first.
    Completed(Completion),
    /// The timeout passed with no status block completed (its operations stay in flight).
    TimedOut,
    /// Nothing is in flight and nothing completed: no wait would ever end.
    Idle,
}

/// One completed status block, named by address (the block stays the caller's).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    status: *const IoStatus,
    /// Its result (as `IoStatus::result` reads it).
    pub result: IoResult,
}

impl Completion {
    /// Whether this is `status`'s completion.
    pub fn is(&self, status: &IoStatus) -> bool {
        core::ptr::eq(self.status, status)
    }

    /// The completed block's address (for a caller keeping several in an array; never
    /// dereferenced by keel).
    pub fn status_ptr(&self) -> *const IoStatus {
        self.status
    }
}

/// Takes the oldest completed status block off `trailer`'s list (io_status rule 1).
pub(crate) fn take_one_completed(trailer: &Trailer) -> Option<Completion> {
    let status = trailer.completed.pop_front()?;
    // SAFETY: linked statuses are alive (rule 2).
    let s = unsafe { status.as_ref() };
    s.state.set(IoState::Reaped);
    let result = s.result.get().expect("keel bug: a completed status block without a result");
    Some(Completion { status: status.as_ptr(), result })
}

pub(crate) fn take_completed(trailer: &Trailer, max: usize) -> usize {
    let mut taken = 0;
    while taken < max {
        let Some(status) = trailer.completed.pop_front() else { break };
        // SAFETY: linked statuses are alive (rule 2).
        unsafe { status.as_ref() }.state.set(IoState::Reaped);
        taken += 1;
    }
    taken
}
