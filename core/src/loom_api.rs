//! What the loom models in `loom-tests/` reach inside keel-core. Exists only under
//! `--cfg keel_loom`; nothing here is API.
//!
//! The models run the production source: these are thin wrappers over the crate's own
//! inbox, park word and wake protocol, plus the `_with::<W>` entry points that let a
//! model's *weakened twin* replace one ordering or fence (see [`Weaken`]). Everything
//! else the models need (executors, task slots, `ExecutorHandle`, `TaskHandle::wake`,
//! the `Driver` trait whose `park` and unparker a model replaces) is public API.

use crate::mailbox::inbox;
use crate::mailbox::park;
use core::ptr::NonNull;

pub use crate::exec::Unparker;
pub use crate::sync::{Strong, Weaken};

/// An intrusive link, as a task header carries one (`mailbox/inbox.rs`).
#[repr(transparent)]
pub struct InboxNode(inbox::InboxNode);

impl InboxNode {
    /// A link in no inbox.
    pub fn new() -> Self {
        InboxNode(inbox::InboxNode::new())
    }
}

impl Default for InboxNode {
    fn default() -> Self {
        Self::new()
    }
}

/// What [`Inbox::pop`] found (inbox rule 3 for `Busy`).
pub enum Pop {
    /// The oldest node.
    Item(NonNull<InboxNode>),
    /// Nothing queued.
    Empty,
    /// A producer is between its swap and its link store.
    Busy,
}

/// The executor's inbox (`mailbox/inbox.rs`): the production queue itself.
pub struct Inbox(inbox::Inbox);

// SAFETY: as for the executor that holds one: producers on any thread only `push`
// (inbox rule 1); the model keeps `pop` and `init` on one thread (inbox rule 2).
unsafe impl Sync for Inbox {}
// SAFETY: as above; the inbox holds pointers to nodes the model keeps alive.
unsafe impl Send for Inbox {}

impl Inbox {
    /// An inbox to place at its final address, then [`init`](Self::init).
    pub fn new() -> Self {
        Inbox(inbox::Inbox::new())
    }

    /// Inbox rule 5: once the inbox is at its final address, before any push.
    pub fn init(&self) {
        self.0.init()
    }

    /// Inbox rule 1, with `W`'s link ordering (`Strong` is production's).
    ///
    /// # Safety
    /// `node` is valid while the inbox is used and is in no inbox (inbox rule 4); `init`
    /// has run.
    pub unsafe fn push<W: Weaken>(&self, node: NonNull<InboxNode>) {
        // SAFETY: the caller's duties; `InboxNode` is a transparent wrapper.
        unsafe { self.0.push_with::<W>(node.cast()) }
    }

    /// Takes the oldest node. The consumer's thread only (inbox rule 2).
    pub fn pop(&self) -> Pop {
        match self.0.pop() {
            inbox::Pop::Item(node) => Pop::Item(node.cast()),
            inbox::Pop::Empty => Pop::Empty,
            inbox::Pop::Busy => Pop::Busy,
        }
    }

    /// Park rule 2's re-check, after [`Remote::announce`]. The consumer's thread only.
    pub fn recheck(&self) -> Recheck {
        match self.0.recheck() {
            inbox::Recheck::Empty => Recheck::Empty,
            inbox::Recheck::Items => Recheck::Items,
            inbox::Recheck::Busy => Recheck::Busy,
        }
    }
}

/// What [`Inbox::recheck`] found (inbox rule 3, park rule 2).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Recheck {
    /// Nothing queued, no push in progress.
    Empty,
    /// Something can be taken.
    Items,
    /// A producer is between its swap and its link store: the run loop parks on it after
    /// `exec::INBOX_BUSY_SPINS` passes (zero under loom), and the producer unparks it.
    Busy,
}

impl Default for Inbox {
    fn default() -> Self {
        Self::new()
    }
}

/// The executor's park word and unparker (`mailbox/park.rs`).
pub struct Remote(park::ParkWord);

// SAFETY: the unparker `Cell` is written once before the model shares it (park rule 3);
// everything else is atomic.
unsafe impl Sync for Remote {}
// SAFETY: as above.
unsafe impl Send for Remote {}

impl Remote {
    /// Running, no unparker.
    pub fn new() -> Self {
        Remote(park::ParkWord::new())
    }

    /// Park rule 3: set once, before any other thread can reach this.
    pub fn set_unparker(&self, unparker: Option<Unparker>) {
        self.0.set_unparker(unparker)
    }

    /// Park rule 2, the executor's announce (store PARKED, then `W`'s fence).
    pub fn announce<W: Weaken>(&self) {
        self.0.announce_with::<W>()
    }

    /// The executor is running again.
    pub fn running(&self) {
        self.0.running()
    }

    /// Park rule 2, a pusher's half (`W`'s fence, then unpark if PARKED).
    pub fn after_push<W: Weaken>(&self) {
        self.0.after_push_with::<W>()
    }
}

impl Default for Remote {
    fn default() -> Self {
        Self::new()
    }
}

/// `TaskHandle::wake` (wake rules 2-4) with `W`'s orderings (`Strong` is production's).
pub fn wake_with<W: Weaken>(task: crate::TaskHandle) {
    crate::task::wake::wake_by_gen_with::<W>(task.header(), task.generation())
}

/// `Dispatcher::quit` (dispatch rule 5) with `W`'s fence (`Strong` is production's).
pub fn quit_with<W: Weaken>(dispatcher: &crate::dispatch::Dispatcher, count: u32) {
    dispatcher.quit_with::<W>(count)
}

/// `Dispatcher::take_quit` (dispatch rule 5) with `W`'s drain check (`Strong` is
/// production's): an idle worker takes a quit token.
pub fn take_quit_with<W: Weaken>(dispatcher: &crate::dispatch::Dispatcher) -> bool {
    dispatcher.take_quit_with::<W>()
}

/// A stand-in for a worker executor of a dispatcher: the scheduler state a worker claims
/// dispatched tasks with, parks through and re-checks with (`exec/intake.rs`), without the
/// rest of the run loop, so that models of several workers stay small. A task it takes
/// counts as run to completion at once (it is never attached).
pub struct DispatchWorker(crate::exec::sched::Sched);

impl DispatchWorker {
    /// A worker that has not registered.
    pub fn new() -> Self {
        DispatchWorker(crate::exec::sched::Sched::new(crate::exec::Config::default()))
    }

    /// Registers with `dispatcher` as `Executor::serve` does (dispatch rule 4), parking
    /// through `unparker` (park rule 3). `false` if every worker slot is taken.
    ///
    /// # Safety
    /// `self` stays at this address until it is dropped (the dispatcher holds its park
    /// word's address; drop unregisters).
    pub unsafe fn serve(&self, dispatcher: &'static crate::dispatch::Dispatcher, unparker: Unparker) -> bool {
        self.0.mailbox.park.set_unparker(Some(unparker));
        match dispatcher.register(&self.0.mailbox.park) {
            Some(slot) => {
                self.0.dispatcher.set(Some((dispatcher, slot)));
                true
            }
            None => false,
        }
    }

    /// Park rule 2 with the dispatcher as the inbox (dispatch rule 4), as the run loop
    /// does it: announce PARKED, fence, re-check. `true`: something is there (the caller
    /// then calls [`running`](Self::running) and passes again); `false`: park.
    pub fn announce_and_recheck(&self) -> bool {
        self.announce_and_recheck_with::<Strong>()
    }

    /// [`announce_and_recheck`](Self::announce_and_recheck) with `W`'s place for the idle
    /// count (dispatch rule 4; `Strong` is production's: before the announce).
    pub fn announce_and_recheck_with<W: Weaken>(&self) -> bool {
        self.0.announce_and_recheck_with::<W>()
    }

    /// The worker is running again (after a park, or a re-check that found work).
    pub fn running(&self) {
        self.0.running_again();
    }
}

impl Drop for DispatchWorker {
    /// Unregisters, waiting for submitters looking at its slot (as an executor's drop).
    fn drop(&mut self) {
        if let Some((dispatcher, slot)) = self.0.dispatcher.get() {
            dispatcher.unregister(slot);
        }
    }
}

impl Default for DispatchWorker {
    fn default() -> Self {
        Self::new()
    }
}

/// `Dispatcher::submit` with `W`'s fence between the push and the look for a parked
/// worker (dispatch rule 4; `Strong` is production's). `false` if it was refused.
pub fn submit_with<W: Weaken, F>(
    dispatcher: &'static crate::dispatch::Dispatcher,
    task: crate::TaskHandle,
    body: F,
) -> bool
where
    F: core::future::Future + Send + 'static,
    F::Output: crate::task::body::IntoTaskResult,
{
    dispatcher.submit_body_with::<W, F>(task, body, &crate::task::body::FutureBody::<F>::VTABLE).is_ok()
}

/// Dispatch rules 1-2, a worker's take: pop the highest priority's newest task and claim
/// it, as `Sched::take_dispatched` does (without attaching it). The task's id.
pub fn take(dispatcher: &crate::dispatch::Dispatcher, worker: &DispatchWorker) -> Option<u32> {
    let task = dispatcher.pop()?;
    if !dispatcher.claim(task, worker.0.owner_id()) {
        return None;
    }
    // Headers are in `'static` slots; the claim made the worker its owner.
    Some(crate::task::header::SlotPtr::trailer(task).id())
}

/// `Executor::handle` (remote rule 1) with `W`'s bind (`Strong` is production's).
pub fn handle_with<W: Weaken>(
    ex: core::pin::Pin<&crate::Executor<impl crate::Driver>>,
    slot: &'static crate::HandleSlot,
) -> Option<crate::ExecutorHandle> {
    let sched = ex.sched();
    if sched.handle_slot.get().is_some() {
        return None;
    }
    let epoch = slot.bind_with::<W>(sched.owner_id())?;
    sched.handle_slot.set(Some(slot));
    Some(crate::exec::remote::ExecutorHandle::new(slot, epoch))
}

/// The first step of an executor's drop (remote rule 1: unbind its handle slot and wait
/// for attachers inside) with `W`'s unbind; the drop then finds the slot unbound.
pub fn unbind_with<W: Weaken>(ex: core::pin::Pin<&crate::Executor<impl crate::Driver>>) {
    if let Some(slot) = ex.sched().handle_slot.take() {
        slot.unbind_with::<W>();
    }
}

/// `ExecutorHandle::attach` (remote rules 2-3) with `W`'s claim (`Strong` is production's).
pub fn attach_with<W: Weaken, F>(
    handle: &crate::ExecutorHandle,
    task: crate::TaskHandle,
    body: F,
) -> Result<crate::TaskHandle, crate::AttachError<F>>
where
    F: core::future::Future + Send + 'static,
    F::Output: crate::task::body::IntoTaskResult,
{
    handle.attach_body_with::<W, F>(task, body, &crate::task::body::FutureBody::<F>::VTABLE)
}

/// Makes rt rule 1's check the weakened twin's (`on`) or production's for the rest of
/// the calling test; every keel future checks "inside my task" through it.
pub fn weaken_current(on: bool) {
    crate::sync::set_any_resume_is_current(on);
}

/// `join::join_blocking`, announcing with `W`'s step (wake rule 8; `Strong` is
/// production's).
pub fn join_blocking_with<W: Weaken, P: crate::join::ThreadWait>(
    task: crate::task::TaskHandle,
    timeout: Option<core::time::Duration>,
) -> Result<crate::error::TaskResult, crate::join::JoinError> {
    crate::join::join_blocking_with::<P>(task, timeout, crate::task::wake::announce_join_with::<W>)
}

/// Polls `join` (a `join::join_send`) with `W`'s re-point (join rule 8: whether a join
/// polled by another run than the one its entry names announces itself again; `Strong`
/// is production's, `JoinSend`'s own `poll`).
pub fn poll_join_send_with<W: Weaken>(
    join: core::pin::Pin<&mut crate::join::JoinSend>,
    cx: &mut core::task::Context<'_>,
) -> core::task::Poll<Result<crate::error::TaskResult, crate::join::JoinError>> {
    join.get_mut().poll_with::<W>(cx)
}
