//! Deadline scopes for futures ([`within`]), see the `deadline` module doc.

use super::Deadline;
use super::scope::Scope;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

/// `fut` with deadline `d` on every operation it submits (the future form of
/// [`FiberDeadline::within`](super::FiberDeadline::within)): an operation the deadline
/// cancels returns [`TIMED_OUT`](super::TIMED_OUT) to the call that awaited it (deadline
/// rule 3); the scope is open only while `fut` is polled, for the polling task (scope rule
/// 1). Outside a keel task it polls `fut` with no deadline.
pub fn within<F: Future>(d: Deadline, fut: F) -> Within<F> {
    Within { d, fut }
}

/// The future of [`within`].
#[must_use = "a deadline scope does nothing unless awaited"]
pub struct Within<F> {
    d: Deadline,
    fut: F,
}

impl<F: Future> Future for Within<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `fut` is structurally pinned: never moved out of `self`, which is pinned.
        let this = unsafe { self.get_unchecked_mut() };
        let _scope = keel_core::rt::current_task(cx).map(|t| Scope::open(t, this.d.instant()));
        // SAFETY: as above.
        unsafe { Pin::new_unchecked(&mut this.fut) }.poll(cx)
    }
}
