//! Attaching tasks from other threads: `ExecutorHandle`.
//!
//! A handle names an executor through a [`HandleSlot`], `'static` storage the user
//! provides (as for tasks), so a handle can outlive its executor and say so: a handle
//! whose executor is gone (or was re-bound) gives `AttachError::ExecutorGone`. The
//! attach follows the remote rules of the mailbox module.

use crate::error::AttachError;
use crate::fiber::{Fiber, FiberAttrs, FiberBody, FiberVt, MIN_STACK};
use crate::mailbox::{HandleSlot, Mailbox};
use crate::switch::FiberSwitch;
use crate::task::TaskHandle;
use crate::task::body::{BodyVTable, FutureBody, IntoTaskResult};
use crate::task::claim::claim_and_place;
use crate::task::header::{SlotPtr, flag};
use core::future::Future;

/// A `Send + Sync + Clone` handle to an executor, for attaching tasks from any thread.
#[derive(Copy, Clone, Debug)]
pub struct ExecutorHandle {
    slot: &'static HandleSlot,
    epoch: u64,
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

    /// Attaches a fiber on keel's own switch as the next run of `task` (an unowned
    /// task) from any thread. The closure travels to the executor, which gives it a stack
    /// from its pool when it first runs it (fiber rule 8): a pool with no stack for it
    /// completes the run with `TaskError::NoStack`.
    pub fn attach_fiber<F, R>(&self, task: TaskHandle, attrs: FiberAttrs, body: F) -> Result<TaskHandle, AttachError<F>>
    where
        F: FnOnce(&mut Fiber) -> R + Send + 'static,
        R: IntoTaskResult,
    {
        self.attach_fiber_with::<crate::arch::AsmSwitch, F, R>(task, attrs, body)
    }

    /// [`attach_fiber`](Self::attach_fiber) on switcher `Sw`.
    pub fn attach_fiber_with<Sw, F, R>(
        &self,
        task: TaskHandle,
        attrs: FiberAttrs,
        body: F,
    ) -> Result<TaskHandle, AttachError<F>>
    where
        Sw: FiberSwitch,
        F: FnOnce(&mut Fiber) -> R + Send + 'static,
        R: IntoTaskResult,
    {
        let fiber = unstacked_fiber::<Sw, F>(task, attrs, body)?;
        self.attach_body(task, fiber, &FiberVt::<Sw, F, R>::VTABLE).map_err(|failed| {
            let (err, fiber) = failed.split();
            err.with_body(fiber.into_body())
        })
    }

    fn attach_body<B>(
        &self,
        task: TaskHandle,
        body: B,
        vtable: &'static BodyVTable,
    ) -> Result<TaskHandle, AttachError<B>> {
        #[cfg(keel_loom)]
        return self.attach_body_with::<crate::sync::Strong, B>(task, body, vtable);
        #[cfg(not(keel_loom))]
        self.attach_body_with(task, body, vtable)
    }

    /// `attach`, with the claim a loom model may weaken (`sync::Weaken::CLAIM_SENTINEL`).
    pub(crate) fn attach_body_with<#[cfg(keel_loom)] W: crate::sync::Weaken, B>(
        &self,
        task: TaskHandle,
        body: B,
        vtable: &'static BodyVTable,
    ) -> Result<TaskHandle, AttachError<B>> {
        let attached = self.slot.with_bound(self.epoch, body, |mailbox, body| {
            #[cfg(keel_loom)]
            return attach_remote::<W, B>(mailbox, task, body, vtable);
            #[cfg(not(keel_loom))]
            attach_remote(mailbox, task, body, vtable)
        });
        attached.unwrap_or_else(|body| Err(AttachError::ExecutorGone(body)))
    }
}

/// A fiber body for an attach from another thread (fiber rule 8), or `StackTooSmall`.
pub(crate) fn unstacked_fiber<Sw: FiberSwitch, F>(
    task: TaskHandle,
    attrs: FiberAttrs,
    body: F,
) -> Result<FiberBody<Sw, F>, AttachError<F>> {
    if attrs.stack_size < MIN_STACK {
        return Err(AttachError::StackTooSmall { body, min: MIN_STACK });
    }
    let header = task.header();
    // Reading the id is harmless whoever owns the task (header rule 4).
    let id = header.trailer().id();
    Ok(FiberBody::new_unstacked(header, id, attrs, body))
}

/// Remote rules 2-3.
fn attach_remote<#[cfg(keel_loom)] W: crate::sync::Weaken, B>(
    mailbox: &Mailbox,
    task: TaskHandle,
    body: B,
    vtable: &'static BodyVTable,
) -> Result<TaskHandle, AttachError<B>> {
    let owner = mailbox as *const Mailbox as *mut Mailbox;
    #[cfg(keel_loom)]
    let run = claim_and_place::<W, B>(owner, task, body, vtable, flag::RELEASE_ON_COMPLETE)?;
    #[cfg(not(keel_loom))]
    let run = claim_and_place(owner, task, body, vtable, flag::RELEASE_ON_COMPLETE)?;
    // SAFETY: `'static` slot.
    let header = unsafe { run.header().as_ref() };
    // Remote rule 2: the owner stores itself in `owner` when it takes the node.
    header.notify.mark_attach();
    // SAFETY: remote rule 3: QUEUED is ours to push on; the node is in no inbox. Made
    // from the whole-slot pointer (provenance rule 3: the owner steps back to the header).
    // The executor is alive while the slot's binding holds (remote rule 1).
    unsafe { mailbox.push(run.header().inbox_node()) };
    Ok(run)
}
