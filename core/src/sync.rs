//! The one place keel-core names atomics, fences and `UnsafeCell`.
//!
//! Under `--cfg keel_loom` every name here is loom's instrumented twin, so the
//! loom models in `loom-tests/` run the same source as production. The cfg is
//! crate-specific (`keel_loom`, not `loom`) because a `--cfg` reaches every
//! dependency and some of them (tokio) change themselves under `cfg(loom)`.
//!
//! `UnsafeCell` is wrapped with loom's `with`/`with_mut` shape so that code
//! written against it compiles unchanged under both.

#[cfg(not(keel_loom))]
pub(crate) use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicU32, Ordering, fence};

#[cfg(keel_loom)]
pub(crate) use loom::sync::atomic::{AtomicPtr, AtomicU8, AtomicU32, Ordering, fence};

/// A busy-wait hint (`pause`). Under loom it yields to the other threads, so a model
/// can run a loop that waits for another thread's next step.
#[cfg(not(keel_loom))]
pub(crate) use core::hint::spin_loop;
#[cfg(keel_loom)]
pub(crate) use loom::hint::spin_loop;

/// An `UnsafeCell` with loom's access shape: the pointer is only reachable
/// inside a closure, so loom can track every access.
#[cfg(not(keel_loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

#[cfg(not(keel_loom))]
impl<T> UnsafeCell<T> {
    #[allow(dead_code)]
    pub(crate) const fn new(value: T) -> Self {
        Self(core::cell::UnsafeCell::new(value))
    }

    /// Reads through a shared pointer.
    #[allow(dead_code)]
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Writes through an exclusive pointer; the caller's protocol makes it exclusive.
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(keel_loom)]
pub(crate) use loom::cell::UnsafeCell;

/// Declares a `const fn` outside loom and a plain `fn` under it: loom's
/// atomics have no const constructors.
macro_rules! maybe_const_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty $body:block) => {
        #[cfg(not(keel_loom))]
        $(#[$m])* $vis const fn $name($($arg: $ty),*) -> $ret $body
        #[cfg(keel_loom)]
        $(#[$m])* $vis fn $name($($arg: $ty),*) -> $ret $body
    };
}
pub(crate) use maybe_const_fn;

#[cfg(not(keel_loom))]
pub(crate) use core::sync::atomic::AtomicU64 as AtomicU64Like;
#[cfg(keel_loom)]
pub(crate) use loom::sync::atomic::AtomicU64 as AtomicU64Like;

/// Production's orderings (and fences) for the protocol steps the loom models weaken.
///
/// Code that has such a step writes it as `W::NAME` with `use crate::sync::Strong as W`
/// (outside loom), or takes `W: Weaken` (under `keel_loom` only): the source the models
/// check is the production source, and outside loom it compiles to the same constants.
pub struct Strong;

impl Strong {
    /// Inbox rule 1: a producer's store linking the previous node to its own. Release:
    /// pairs with the consumer's Acquire load of `next` in `pop`.
    pub const PUSH_LINK: Ordering = Ordering::Release;
    /// Wake rules 3-5: a waker's CAS on the notify word, when it succeeds. Release
    /// publishes the waker's writes to the owner's `take`; Acquire takes the owner's
    /// writes to the node (from `take`) and its claim (from `open`).
    pub const WAKE_CAS: Ordering = Ordering::AcqRel;
    /// Wake rule 4: a waker that finds an equal wake already queued still merges with
    /// its CAS (false), rather than returning on what its load saw (true).
    pub const MERGE_BY_LOAD: bool = false;
    /// Park rule 2: the executor's `SeqCst` fence between its announce and its re-check.
    pub const ANNOUNCE_FENCE: bool = true;
    /// Park rule 2: a pusher's `SeqCst` fence between its push and its park-word load
    /// (also `Dispatcher::quit`'s, between its tokens and the workers' park words).
    pub const PUSH_FENCE: bool = true;
    /// Dispatch rule 5: a worker takes a quit token only if no dispatched task waits,
    /// checked after its Acquire load of the quit word (true), rather than on the token
    /// alone (false), which can strand a task submitted before the quit.
    pub const QUIT_DRAINS: bool = true;
    /// Remote rule 1: a handle slot's epoch is bumped by unbind, before the address is
    /// cleared (true), rather than by bind after the address is published (false), which
    /// lets a stale handle attach to the next executor bound to the slot.
    pub const EPOCH_AT_UNBIND: bool = true;
    /// Remote rule 2: a foreign claim sets the owner to the `CLAIMING` sentinel and the
    /// owner is published once the task is whole (true), rather than set at the claim
    /// (false), which lets the owner's thread act on the task while the attacher writes it.
    pub const CLAIM_SENTINEL: bool = true;
    /// Wake rule 8: a join on another thread announces its registration to the task's
    /// owner (true), rather than only storing it (false), which the owner never reads
    /// unless the run's end was marked: the join is not woken.
    pub const ANNOUNCE_JOIN: bool = true;
    /// Join rule 8: a join that re-points its entry at the run polling it announces
    /// itself again before its second look (true), rather than only storing the new
    /// target (false), which nothing orders before the owner's read of the entry at the
    /// run's end: the owner may wake the run the entry named before, and the task
    /// awaiting the join now is not woken.
    pub const REPOINT_ANNOUNCE: bool = true;
    /// Dispatch rule 4: a worker counts itself idle before its announce fence (true), so
    /// a submitter that reads no idle worker after its own fence skips the scan safely,
    /// rather than after its re-check (false), which lets the submit skip a worker whose
    /// re-check missed the push: the task waits while the worker sleeps.
    pub const IDLE_BEFORE_RECHECK: bool = true;
}

/// The protocol steps a loom model may weaken, to show that it catches the bug
/// (`loom-tests/`, each model's weakened twin). Every default is [`Strong`]'s value;
/// a twin overrides one. Exists only under `keel_loom`, so no production path is
/// generic over it.
#[cfg(keel_loom)]
pub trait Weaken: 'static {
    /// See [`Strong::PUSH_LINK`].
    const PUSH_LINK: Ordering = Strong::PUSH_LINK;
    /// See [`Strong::WAKE_CAS`].
    const WAKE_CAS: Ordering = Strong::WAKE_CAS;
    /// See [`Strong::MERGE_BY_LOAD`].
    const MERGE_BY_LOAD: bool = Strong::MERGE_BY_LOAD;
    /// See [`Strong::ANNOUNCE_FENCE`].
    const ANNOUNCE_FENCE: bool = Strong::ANNOUNCE_FENCE;
    /// See [`Strong::PUSH_FENCE`].
    const PUSH_FENCE: bool = Strong::PUSH_FENCE;
    /// See [`Strong::QUIT_DRAINS`].
    const QUIT_DRAINS: bool = Strong::QUIT_DRAINS;
    /// See [`Strong::EPOCH_AT_UNBIND`].
    const EPOCH_AT_UNBIND: bool = Strong::EPOCH_AT_UNBIND;
    /// See [`Strong::CLAIM_SENTINEL`].
    const CLAIM_SENTINEL: bool = Strong::CLAIM_SENTINEL;
    /// See [`Strong::ANNOUNCE_JOIN`].
    const ANNOUNCE_JOIN: bool = Strong::ANNOUNCE_JOIN;
    /// See [`Strong::REPOINT_ANNOUNCE`].
    const REPOINT_ANNOUNCE: bool = Strong::REPOINT_ANNOUNCE;
    /// See [`Strong::IDLE_BEFORE_RECHECK`].
    const IDLE_BEFORE_RECHECK: bool = Strong::IDLE_BEFORE_RECHECK;
}

#[cfg(keel_loom)]
impl Weaken for Strong {}

#[cfg(keel_loom)]
std::thread_local! {
    static ANY_RESUME_IS_CURRENT: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
}

/// Whether rt rule 1's check is the weakened twin's in this model: "the waker's task is
/// running", on any thread (as the check first was, through the owner's record of the
/// task it resumes), rather than "this `Context` is the task's own". A switch per OS
/// thread, which loom's threads share within one model and tests do not.
#[cfg(keel_loom)]
pub(crate) fn any_resume_is_current() -> bool {
    ANY_RESUME_IS_CURRENT.with(|c| c.get())
}

/// Sets the switch `any_resume_is_current` reads (`loom_api::weaken_current`).
#[cfg(keel_loom)]
pub(crate) fn set_any_resume_is_current(on: bool) {
    ANY_RESUME_IS_CURRENT.with(|c| c.set(on));
}
