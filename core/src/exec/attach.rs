//! Attaching a task on the executor's own thread (a future's body, or a fiber's with a
//! stack from the pool), claiming an unowned one, and releasing one.

use crate::error::AttachError;
use crate::exec::sched::{Sched, hdr, step, step_known};
use crate::fiber::{Fiber, FiberAttrs, FiberBody, FiberVt, MIN_STACK};
use crate::switch::FiberSwitch;
use crate::sync::Ordering;
use crate::task::TaskHandle;
use crate::task::body::IntoTaskResult;
use crate::task::body::{BodyVTable, place};
use crate::task::header::{Header, SlotPtr};
use crate::task::state::{TaskEvent as E, TaskState as S};
use core::ptr::NonNull;

/// Why claiming an unowned task failed.
pub(crate) enum Claim {
    /// The handle is stale or the task destroyed.
    Stale,
    /// Another executor claimed it first.
    Raced,
}

impl Sched {
    /// Attaches run `handle` of a task with `body`, returning the new run's handle.
    pub(crate) fn attach<B>(
        &self,
        handle: TaskHandle,
        body: B,
        vtable: &'static BodyVTable,
    ) -> Result<TaskHandle, AttachError<B>> {
        let task = handle.header();
        let header = hdr(task);
        // Acquire: pairs with the Release that published a previous owner's release.
        let owner = header.owner.load(Ordering::Acquire);
        if owner.is_null() {
            match self.claim(handle) {
                Ok(()) => {}
                Err(Claim::Stale) => return Err(AttachError::Stale(body)),
                Err(Claim::Raced) => return Err(AttachError::OwnedElsewhere(body)),
            }
        } else if owner != self.owner_id() {
            return Err(AttachError::OwnedElsewhere(body));
        }
        // Relaxed: we are the owner, and the owner is the only writer (header rule 2).
        let generation = header.generation.load(Ordering::Relaxed);
        if generation != handle.generation() {
            return Err(AttachError::Stale(body));
        }
        if header.state.get().is_attached() {
            return Err(AttachError::AlreadyAttached(body));
        }
        // SAFETY: we own the task and it is not attached, so its body bytes are free.
        unsafe { place(task, body)? };
        let next_gen = generation.wrapping_add(1);
        // Release: pairs with the Acquire generation check in `wake_by_gen`.
        header.generation.store(next_gen, Ordering::Release);
        header.body.set(Some(vtable));
        header.flags.set(0);
        self.reset_counts(task);
        if self.times.on.get() {
            self.reset_times(task);
        }
        // Sched rule 5: not attached (checked above), so Idle or Completed.
        step_known(header, E::Attach, S::Attached);
        self.attached.set(self.attached.get() + 1);
        // SAFETY: an attached task that was Idle or Completed is in no run list.
        unsafe { self.ready.push(task) };
        Ok(TaskHandle::from_parts(task, next_gen))
    }

    /// Takes an unowned task for this executor (cold: one CAS). Fails if the handle is
    /// stale or the task was destroyed.
    pub(crate) fn claim(&self, handle: TaskHandle) -> Result<(), Claim> {
        let task = handle.header();
        let header = hdr(task);
        // AcqRel: Release publishes this executor's initialised inbox to wakers that load
        // `owner` with Acquire; Acquire sees the previous owner's last writes to the task.
        if header
            .owner
            .compare_exchange(core::ptr::null_mut(), self.owner_id(), Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(Claim::Raced);
        }
        // Acquire: pairs with destroy's Release of `live`.
        let live = task.trailer().live.load(Ordering::Acquire) != 0;
        if !live || header.generation.load(Ordering::Relaxed) != handle.generation() {
            // Release: hand it back exactly as we found it.
            header.owner.store(core::ptr::null_mut(), Ordering::Release);
            return Err(Claim::Stale);
        }
        header.notify.open();
        // SAFETY: an unowned task is in no executor's owned list.
        unsafe { self.owned.push_back(task) };
        Ok(())
    }

    /// Gives up an owned, unattached task (wake rule 6). Returns false while a wake is in
    /// flight to this executor.
    pub(crate) fn release(&self, task: NonNull<Header>) -> bool {
        let header = hdr(task);
        if header.state.get().is_attached() {
            return false;
        }
        for _ in 0..2 {
            // Relaxed: owner-written.
            if header.notify.close(header.generation.load(Ordering::Relaxed)) {
                step(header, E::Release);
                // SAFETY: owned tasks are in `owned`.
                unsafe { self.owned.remove(task) };
                // Release: pairs with the Acquire in a later claim.
                header.owner.store(core::ptr::null_mut(), Ordering::Release);
                return true;
            }
            self.drain_inbox(self.cfg.inbox_batch);
        }
        false
    }

    /// Attaches a fiber on switcher `Sw` (one stack from the pool).
    pub(crate) fn attach_fiber<Sw, F, R>(
        &self,
        handle: TaskHandle,
        attrs: FiberAttrs,
        body: F,
    ) -> Result<TaskHandle, AttachError<F>>
    where
        Sw: FiberSwitch,
        F: FnOnce(&mut Fiber) -> R + 'static,
        R: IntoTaskResult,
    {
        if attrs.stack_size < MIN_STACK {
            return Err(AttachError::StackTooSmall { body, min: MIN_STACK });
        }
        let task = handle.header();
        // Reading the id is harmless whoever owns the task (header rule 4).
        let id = task.trailer().id();
        let stack = match self.stacks.take(attrs.stack_size, id) {
            Ok(stack) => stack,
            Err(errno) => return Err(AttachError::NoStack { body, errno }),
        };
        let fiber = FiberBody::<Sw, F>::new(task, id, stack, attrs, self.cfg.fiber_panics, body);
        match self.attach(handle, fiber, &FiberVt::<Sw, F, R>::VTABLE) {
            Ok(run) => {
                // SAFETY: just attached here with that vtable and a fresh body (fiber rule 9).
                unsafe { FiberVt::<Sw, F, R>::attached(task) };
                Ok(run)
            }
            Err(failed) => {
                let (err, fiber) = failed.split();
                let (stack, body) = fiber.into_parts();
                // SAFETY: the stack was taken above and never run on.
                unsafe { self.stacks.put(stack, self.now_if_trimming()) };
                Err(err.with_body(body))
            }
        }
    }
}
