//! Attaching tasks from other threads: `ExecutorHandle`.
//!
//! A handle names an executor through a [`HandleSlot`], `'static` storage the user
//! provides (as for tasks), so a handle can outlive its executor and say so: a handle
//! whose executor is gone (or was re-bound) gives `AttachError::ExecutorGone`.
//!
//! Rules (cited as "remote rule N"):
//! 1. The slot's epoch names one binding: binding stores the executor's address in the
//!    slot (CAS from null) and hands out the epoch it then reads; unbinding (the
//!    executor's drop) first bumps the epoch, then stores null, then waits until no
//!    attacher is inside (`active`), all `SeqCst`. An attacher enters `active`, then
//!    loads the address, then the epoch, and goes on only if the address is non-null
//!    and the epoch is its handle's. So a handle works only while its own binding
//!    lasts: an attacher that sees a later binding's address comes after that binding's
//!    CAS, which read the null stored after the bump, so it sees the bumped epoch (the
//!    bump is in unbind, before the null: a bump in bind after publishing the address
//!    lets a stale handle reach the new executor; loom: `loom_remote`'s twin). The
//!    epoch is 64 bits: no count of rebinds a program can reach wraps it. An attacher
//!    that sees the old address is waited for (`active`) before that executor goes.
//! 2. An attacher claims an unowned task by a CAS of `exec` from null to `CLAIMING`, a
//!    sentinel no executor (and no dispatcher) ever compares equal to, and only then
//!    touches its local fields (body, generation, flags, result). The owner pointer is
//!    published only once the task is whole: for an attach, by the owner itself, which
//!    stores its own address when it takes the node off its inbox (that pop acquires
//!    the attacher's writes) and before it opens the task to wakes; for a dispatch, by
//!    the submitter, which stores the dispatcher's sentinel before it pushes. So every
//!    owner-side check (`Executor::attach`, `destroy`, `result`, `cancel`, `wake`, ...,
//!    all through `exec == self`) sees another owner while the attacher writes, and says
//!    so (`OwnedElsewhere`, `StaleHandle`), rather than reading or writing the fields
//!    being written (loom: `loom_remote`'s claim twin, which publishes the owner at the
//!    claim).
//! 3. The task's notify word keeps QUEUED while it is unowned and claimed (wake rule 3),
//!    so no waker pushes it or loads `exec`; the attacher adds ATTACH and pushes the
//!    node itself, then unparks the executor if it is parked (park rule 2).
//! 4. A task attached from another thread is released by its executor when it completes
//!    (or as soon after as no wake is in flight to it), so the attacher can attach it
//!    again; until then a new attach says `OwnedElsewhere`.
//!
//! Progress: an attach is lock-free (one CAS to claim, one swap to push, at most one CAS
//! to unpark) plus one syscall when the executor was parked.

use crate::error::AttachError;
use crate::exec::sched::Sched;
use crate::sync::{AtomicPtr, AtomicU32, AtomicU64Like, Ordering};
use crate::task::TaskHandle;
use crate::task::body::{BodyVTable, FutureBody, IntoTaskResult, place};
use crate::task::header::{SlotPtr, flag};
use core::future::Future;
use core::ptr;

/// `'static` storage an [`ExecutorHandle`] names its executor through.
pub struct HandleSlot {
    sched: AtomicPtr<Sched>,
    active: AtomicU32,
    /// Remote rule 1: bumped by every unbind.
    epoch: AtomicU64Like,
}

impl HandleSlot {
    crate::sync::maybe_const_fn! {
        /// An unbound slot.
        pub fn new() -> Self {
            HandleSlot { sched: AtomicPtr::new(ptr::null_mut()), active: AtomicU32::new(0), epoch: AtomicU64Like::new(0) }
        }
    }

    /// Binds to `sched`; fails if the slot is bound already. Returns the epoch.
    pub(crate) fn bind(&'static self, sched: &Sched) -> Option<u64> {
        #[cfg(keel_loom)]
        return self.bind_with::<crate::sync::Strong>(sched);
        #[cfg(not(keel_loom))]
        self.bind_with(sched)
    }

    /// `bind`, with the epoch step a loom model may move (`sync::Weaken::EPOCH_AT_UNBIND`).
    pub(crate) fn bind_with<#[cfg(keel_loom)] W: crate::sync::Weaken>(&'static self, sched: &Sched) -> Option<u64> {
        #[cfg(not(keel_loom))]
        use crate::sync::Strong as W;
        let me = sched as *const Sched as *mut Sched;
        // SeqCst: remote rule 1 (reads the null the last unbind stored after its bump).
        self.sched.compare_exchange(ptr::null_mut(), me, Ordering::SeqCst, Ordering::SeqCst).ok()?;
        if !W::EPOCH_AT_UNBIND {
            // A weakened twin's bump, after publishing the address (never in `Strong`).
            // SeqCst: as below.
            return Some(self.epoch.fetch_add(1, Ordering::SeqCst).wrapping_add(1));
        }
        // SeqCst: remote rule 1. Only the bound executor's unbind writes the epoch, so
        // this is the epoch of our binding.
        Some(self.epoch.load(Ordering::SeqCst))
    }

    /// Unbinds and waits for attachers inside (remote rule 1). Blocking, cold.
    pub(crate) fn unbind(&self) {
        #[cfg(keel_loom)]
        self.unbind_with::<crate::sync::Strong>();
        #[cfg(not(keel_loom))]
        self.unbind_with();
    }

    /// `unbind`, with the epoch step a loom model may move (`sync::Weaken::EPOCH_AT_UNBIND`).
    pub(crate) fn unbind_with<#[cfg(keel_loom)] W: crate::sync::Weaken>(&self) {
        #[cfg(not(keel_loom))]
        use crate::sync::Strong as W;
        if W::EPOCH_AT_UNBIND {
            // SeqCst: remote rule 1: before the null, so a binder that reads the null
            // (and an attacher that then sees its address) sees the bump.
            self.epoch.fetch_add(1, Ordering::SeqCst);
        }
        // SeqCst: remote rule 1.
        self.sched.store(ptr::null_mut(), Ordering::SeqCst);
        let mut spins: u64 = 0;
        // SeqCst: remote rule 1.
        while self.active.load(Ordering::SeqCst) != 0 {
            spins += 1;
            crate::sync::spin_loop();
            debug_assert!(spins < 1 << 40, "keel bug: an attacher never left");
        }
    }
}

impl Default for HandleSlot {
    fn default() -> Self {
        Self::new()
    }
}

/// A `Send + Sync + Clone` handle to an executor, for attaching tasks from any thread.
#[derive(Copy, Clone, Debug)]
pub struct ExecutorHandle {
    slot: &'static HandleSlot,
    epoch: u64,
}

impl core::fmt::Debug for HandleSlot {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HandleSlot").finish_non_exhaustive()
    }
}

impl ExecutorHandle {
    pub(crate) fn new(slot: &'static HandleSlot, epoch: u64) -> Self {
        ExecutorHandle { slot, epoch }
    }

    /// Attaches a future as the next run of `task` (an unowned task: newly created, or
    /// released) from any thread. The executor runs it on its own thread; a parked
    /// executor is unparked.
    pub fn attach<F>(&self, task: TaskHandle, body: F) -> Result<TaskHandle, AttachError<F>>
    where
        F: Future + Send + 'static,
        F::Output: IntoTaskResult,
    {
        self.attach_body(task, body, &FutureBody::<F>::VTABLE)
    }

    fn attach_body<B>(&self, task: TaskHandle, body: B, vt: &'static BodyVTable) -> Result<TaskHandle, AttachError<B>> {
        #[cfg(keel_loom)]
        return self.attach_body_with::<crate::sync::Strong, B>(task, body, vt);
        #[cfg(not(keel_loom))]
        self.attach_body_with(task, body, vt)
    }

    /// `attach`, with the claim a loom model may weaken (`sync::Weaken::CLAIM_SENTINEL`).
    pub(crate) fn attach_body_with<#[cfg(keel_loom)] W: crate::sync::Weaken, B>(
        &self,
        task: TaskHandle,
        body: B,
        vt: &'static BodyVTable,
    ) -> Result<TaskHandle, AttachError<B>> {
        let slot = self.slot;
        // SeqCst: remote rule 1 (the increment is ordered before reading `sched`).
        slot.active.fetch_add(1, Ordering::SeqCst);
        let result = (|| {
            // SeqCst: remote rule 1 (the address, then the epoch).
            let sched = slot.sched.load(Ordering::SeqCst);
            // SeqCst: as above.
            if sched.is_null() || slot.epoch.load(Ordering::SeqCst) != self.epoch {
                return Err(AttachError::ExecutorGone(body));
            }
            // SAFETY: bound and not yet unbound: the executor is alive until we leave
            // (remote rule 1).
            let s = unsafe { &*sched };
            #[cfg(keel_loom)]
            return attach_remote::<W, B>(s, task, body, vt);
            #[cfg(not(keel_loom))]
            attach_remote(s, task, body, vt)
        })();
        // Release: the unbinder's SeqCst load of zero sees everything we did.
        slot.active.fetch_sub(1, Ordering::Release);
        result
    }
}

/// The owner pointer of a task being claimed (remote rule 2): never dereferenced, never
/// equal to an executor or a dispatcher's sentinel.
pub(crate) fn claiming() -> *mut Sched {
    static CLAIMING: u8 = 0;
    &CLAIMING as *const u8 as *mut Sched
}

/// Claims an unowned task (remote rule 2: its owner is `CLAIMING` on success) and makes
/// `body` its next run: one CAS, then the local fields, which nobody else touches while
/// the owner is `CLAIMING`. The caller publishes the owner. Hands the task back on
/// failure.
pub(crate) fn claim_and_place<#[cfg(keel_loom)] W: crate::sync::Weaken, B>(
    owner: *mut Sched,
    task: TaskHandle,
    body: B,
    vt: &'static BodyVTable,
    flags: u8,
) -> Result<TaskHandle, AttachError<B>> {
    #[cfg(not(keel_loom))]
    use crate::sync::Strong as W;
    let h = task.header();
    // SAFETY: `'static` slot.
    let t = unsafe { h.as_ref() };
    // A weakened twin claims for `owner` at once (never in `Strong`).
    let claim = if W::CLAIM_SENTINEL { claiming() } else { owner };
    // AcqRel: Acquire sees the previous owner's release (and its writes to the task);
    // Release publishes the claim. Acquire on failure: reading who owns it.
    if t.exec.compare_exchange(ptr::null_mut(), claim, Ordering::AcqRel, Ordering::Acquire).is_err() {
        return Err(AttachError::OwnedElsewhere(body));
    }
    // Acquire: pairs with destroy's Release of `live`. Relaxed for the generation: the
    // claim's Acquire ordered it.
    let live = h.trailer().live.load(Ordering::Acquire) != 0;
    let generation = t.generation.load(Ordering::Relaxed);
    if !live || generation != task.generation() {
        // Release: hand it back as we found it.
        t.exec.store(ptr::null_mut(), Ordering::Release);
        return Err(AttachError::Stale(body));
    }
    // SAFETY: claimed and unattached (an unowned task is Idle or Completed), so its body
    // bytes are free and nobody else touches its local fields (remote rule 2).
    if let Err(e) = unsafe { place(h, body) } {
        // Release: as above.
        t.exec.store(ptr::null_mut(), Ordering::Release);
        return Err(e);
    }
    let next_gen = generation.wrapping_add(1);
    // Release: pairs with wakers' Acquire generation check.
    t.generation.store(next_gen, Ordering::Release);
    t.body.set(Some(vt));
    t.flags.set(flags);
    h.trailer().result.set(None);
    Ok(TaskHandle::from_parts(h, next_gen))
}

/// Remote rules 2-3.
fn attach_remote<#[cfg(keel_loom)] W: crate::sync::Weaken, B>(
    s: &Sched,
    task: TaskHandle,
    body: B,
    vt: &'static BodyVTable,
) -> Result<TaskHandle, AttachError<B>> {
    let me = s as *const Sched as *mut Sched;
    #[cfg(keel_loom)]
    let run = claim_and_place::<W, B>(me, task, body, vt, flag::RELEASE_ON_COMPLETE)?;
    #[cfg(not(keel_loom))]
    let run = claim_and_place(me, task, body, vt, flag::RELEASE_ON_COMPLETE)?;
    // SAFETY: `'static` slot.
    let t = unsafe { run.header().as_ref() };
    // Remote rule 2: the owner stores itself in `exec` when it takes the node.
    t.notify.mark_attach();
    // SAFETY: remote rule 3: QUEUED is ours to push on; the node is in no inbox. Made
    // from the whole-slot pointer (provenance rule 3: the owner steps back to the header).
    unsafe { s.inbox.push(run.header().inbox_node()) };
    s.remote.after_push();
    Ok(run)
}
