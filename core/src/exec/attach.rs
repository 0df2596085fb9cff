//! Attaching a task on the executor's own thread: a future's body or a fiber's (with a
//! stack from the pool).

use crate::error::AttachError;
use crate::exec::sched::Sched;
use crate::fiber::{Fiber, FiberAttrs, FiberBody, FiberVt, MIN_STACK};
use crate::switch::FiberSwitch;
use crate::task::TaskHandle;
use crate::task::body::IntoTaskResult;
use crate::task::header::SlotPtr;

impl Sched {
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
        let h = handle.header();
        // Reading the id is harmless whoever owns the task (header rule 4).
        let id = h.trailer().id();
        let stack = match self.stacks.take(attrs.stack_size, id) {
            Ok(s) => s,
            Err(e) => return Err(AttachError::NoStack { body, errno: e }),
        };
        let fiber = FiberBody::<Sw, F>::new(h, id, stack, attrs, self.cfg.fiber_panics, body);
        match self.attach(handle, fiber, &FiberVt::<Sw, F, R>::VTABLE) {
            Ok(run) => Ok(run),
            Err(e) => {
                let (err, fiber) = e.split();
                let (stack, body) = fiber.into_parts();
                // SAFETY: the stack was taken above and never run on.
                unsafe { self.stacks.put(stack, self.now_if_trimming()) };
                Err(err.with_body(body))
            }
        }
    }
}
