//! What the scheduler asks of a source of tasks it serves besides its own (the
//! `Dispatcher`, in the layer above): an interface, as the driver is one, so the
//! scheduler names no type above it. The dispatch rules it follows are the dispatcher's.

use crate::mailbox::Mailbox;
use crate::task::header::Header;
use core::ptr::NonNull;

/// A shared source of tasks (dispatch rules 1-5). Every method may be called from any
/// worker's thread.
pub(crate) trait WorkSource: Sync {
    /// Gives worker slot `slot` back.
    fn unregister(&self, slot: usize);
    /// Whether a task is waiting (the re-check before parking).
    fn has_work(&self) -> bool;
    /// Whether a quit token could be taken now.
    fn quit_pending(&self) -> bool;
    /// Takes a quit token (dispatch rule 5).
    fn take_quit(&self) -> bool;
    /// Pops the highest-priority waiting task.
    fn pop(&self) -> Option<NonNull<Header>>;
    /// Claims a popped task for the executor whose owner identity is `owner`
    /// (dispatch rule 2).
    fn claim(&self, task: NonNull<Header>, owner: *mut Mailbox) -> bool;
    /// A popped task could not be claimed (counted; dispatch rule 1).
    fn note_double_take(&self);
    /// A dispatched task's run is over (dispatch rule 3).
    fn note_completed(&self);
    /// The worker counts itself idle, before its announce (dispatch rule 4).
    fn idle_enter(&self);
    /// The worker runs again: it leaves the idle count (dispatch rule 4).
    fn idle_leave(&self);
}
