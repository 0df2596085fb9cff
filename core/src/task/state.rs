//! The task lifecycle: one enum of states, one enum of events, one pure transition
//! function. Executor-local plain data: only the executor that owns the task reads or
//! writes it (what other threads touch is the notify word, `mailbox::notify`).
//!
//! ```text
//!                 (1) Attach                (2) Start
//!   Idle ─────────────────────► Attached ─────────────────► Running ◄──────────┐
//!    ▲                             │                    │ │ │ │  │            │
//!    │(14) Release              (8)│CancelQueued   (4)  │ │ │ │  │(5) Yield   │(3) Resume
//!    │                             ▼          Suspend(r)│ │ │ │  ▼            │
//!   Completed ◄────────────────────┴─────┐     ┌────────┘ │ │ │ Ready ────────┘
//!    ▲  ▲  │(1) Attach (re-use)          │     ▼          │ │ │  ▲ │
//!    │  │  └──────► Attached             │  Suspended(r)  │ │ │  │ │(8) CancelQueued
//!    │  │                                │   │  │  │     │ │ │  │ └──────► Completed
//!    │  │(12) Return                     │   │  │  │(6) Wake ──┘  (r = Timer|Io|Wait|SqSlot)
//!    │  └────────────────────────────────┼───┼──┼──┘     │ │
//!    │                                   │   │  │(9) CancelSuspended (r = Timer|Wait|SqSlot) ──► Ready
//!    │                                   │   │(10) CancelIo (r = Io) ──► Cancelling ──(11) IoDone──► Ready
//!    │(13) Drained                                        │
//!   Draining ◄──────────────────────────────────── (7) ReturnWithIo
//! ```
//!
//! Edges, by number (the transition table in the tests is written from this list,
//! not from the `match`):
//! 1. `Attach`: Idle or Completed → Attached (a completed task is reused).
//! 2. `Start`: Attached → Running (first resumption of this run).
//! 3. `Resume`: Ready → Running.
//! 4. `Suspend(r)`: Running → Suspended(r).
//! 5. `Yield`: Running → Ready (also: woken while running, requeued as it suspends).
//! 6. `Wake`: Suspended(any) → Ready.
//! 7. `ReturnWithIo`: Running → Draining (the body returned with i/o in flight: pump and dump).
//! 8. `CancelQueued`: Attached or Ready → Completed (removed from its queue, result
//!    Cancelled). `Executor::cancel` takes it from Attached only (a body that never
//!    ran); from Ready only the executor's teardown does (teardown rule 1), and a body
//!    whose `Drop` panicked (body rule 1).
//! 9. `CancelSuspended`: Suspended(Timer | Wait | SqSlot) → Ready (resumes with `Cancelled`).
//! 10. `CancelIo`: Suspended(Io) → Cancelling (its i/o is cancelled; it resumes once that completes).
//! 11. `IoDone`: Cancelling → Ready.
//! 12. `Return`: Running → Completed.
//! 13. `Drained`: Draining → Completed (the last in-flight operation was reaped).
//! 14. `Release`: Completed or Idle → Idle (the executor gives the task up; also destroy).
//! 15. `CancelQueuedWithIo`: Ready → Draining (a started body dropped by the executor's
//!     teardown left i/o in flight: it completes once that i/o is reaped).
//!
//! Cancelling a Running or Ready task (a started one: woken, or yielding) sets a flag
//! instead of changing state: its next suspension point returns `Cancelled`, and what
//! its operations completed with before the cancel reaches it stays its to take (issue
//! 14 item 10: no lost completion). Cancelling Draining or Completed is "too late", Idle
//! "not attached" (`Executor::cancel`, `exec/cancel.rs`).

/// Why a task is suspended.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SuspendReason {
    /// Until a deadline (`sleep`, `suspend_for`, `suspend_until`).
    Timer,
    /// Until i/o it initiated completes.
    Io,
    /// Until something wakes it explicitly.
    Wait,
    /// Until a submission slot frees up (the ring's SQ is full).
    SqSlot,
}

/// A task's lifecycle state.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum TaskState {
    /// Created, not attached; reusable.
    Idle,
    /// Attached to an executor, not started.
    Attached,
    /// Started, waiting in a run queue.
    Ready,
    /// Being resumed right now.
    Running,
    /// Waiting for something.
    Suspended(SuspendReason),
    /// Its i/o is being cancelled; it resumes (with `Cancelled`) when that completes.
    Cancelling,
    /// The body returned with i/o in flight; it completes when that i/o is reaped.
    Draining,
    /// The run ended; its result can be read; reusable.
    Completed,
}

/// Something that happens to a task.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum TaskEvent {
    /// Edge 1.
    Attach,
    /// Edge 2.
    Start,
    /// Edge 3.
    Resume,
    /// Edge 4.
    Suspend(SuspendReason),
    /// Edge 5.
    Yield,
    /// Edge 6.
    Wake,
    /// Edge 7.
    ReturnWithIo,
    /// Edge 8.
    CancelQueued,
    /// Edge 9.
    CancelSuspended,
    /// Edge 10.
    CancelIo,
    /// Edge 11.
    IoDone,
    /// Edge 12.
    Return,
    /// Edge 13.
    Drained,
    /// Edge 14.
    Release,
    /// Edge 15.
    CancelQueuedWithIo,
}

/// An event that has no edge from the current state.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct InvalidTransition {
    /// The state the task was in.
    pub from: TaskState,
    /// The event that has no edge from it.
    pub event: TaskEvent,
}

impl core::fmt::Display for InvalidTransition {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "no transition from {:?} on {:?}", self.from, self.event)
    }
}

impl TaskState {
    /// The state after `event`, or the error if the lifecycle has no such edge.
    #[inline(always)]
    pub const fn on(self, event: TaskEvent) -> Result<TaskState, InvalidTransition> {
        use SuspendReason as R;
        use TaskEvent as E;
        use TaskState as S;
        let next = match (self, event) {
            (S::Idle | S::Completed, E::Attach) => S::Attached,
            (S::Attached, E::Start) => S::Running,
            (S::Ready, E::Resume) => S::Running,
            (S::Running, E::Suspend(reason)) => S::Suspended(reason),
            (S::Running, E::Yield) => S::Ready,
            (S::Suspended(_), E::Wake) => S::Ready,
            (S::Running, E::ReturnWithIo) => S::Draining,
            (S::Attached | S::Ready, E::CancelQueued) => S::Completed,
            (S::Suspended(R::Timer | R::Wait | R::SqSlot), E::CancelSuspended) => S::Ready,
            (S::Suspended(R::Io), E::CancelIo) => S::Cancelling,
            (S::Cancelling, E::IoDone) => S::Ready,
            (S::Running, E::Return) => S::Completed,
            (S::Draining, E::Drained) => S::Completed,
            (S::Completed | S::Idle, E::Release) => S::Idle,
            (S::Ready, E::CancelQueuedWithIo) => S::Draining,
            _ => return Err(InvalidTransition { from: self, event }),
        };
        Ok(next)
    }

    /// Whether the task is attached (anything from Attached to Draining).
    pub const fn is_attached(self) -> bool {
        !matches!(self, TaskState::Idle | TaskState::Completed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SuspendReason as R;
    use TaskEvent as E;
    use TaskState as S;

    const REASONS: [R; 4] = [R::Timer, R::Io, R::Wait, R::SqSlot];

    fn all_states() -> impl Iterator<Item = S> {
        [S::Idle, S::Attached, S::Ready, S::Running, S::Cancelling, S::Draining, S::Completed]
            .into_iter()
            .chain(REASONS.into_iter().map(S::Suspended))
    }

    fn all_events() -> impl Iterator<Item = E> {
        [
            E::Attach,
            E::Start,
            E::Resume,
            E::Yield,
            E::Wake,
            E::ReturnWithIo,
            E::CancelQueued,
            E::CancelSuspended,
            E::CancelIo,
            E::IoDone,
            E::Return,
            E::Drained,
            E::Release,
            E::CancelQueuedWithIo,
        ]
        .into_iter()
        .chain(REASONS.into_iter().map(E::Suspend))
    }

    /// The documented edges, written from the module doc's numbered list.
    fn documented(from: S, event: E) -> Option<S> {
        let edges: &[(S, E, S)] = &[
            (S::Idle, E::Attach, S::Attached),
            (S::Completed, E::Attach, S::Attached),
            (S::Attached, E::Start, S::Running),
            (S::Ready, E::Resume, S::Running),
            (S::Running, E::Yield, S::Ready),
            (S::Running, E::ReturnWithIo, S::Draining),
            (S::Attached, E::CancelQueued, S::Completed),
            (S::Ready, E::CancelQueued, S::Completed),
            (S::Suspended(R::Timer), E::CancelSuspended, S::Ready),
            (S::Suspended(R::Wait), E::CancelSuspended, S::Ready),
            (S::Suspended(R::SqSlot), E::CancelSuspended, S::Ready),
            (S::Suspended(R::Io), E::CancelIo, S::Cancelling),
            (S::Cancelling, E::IoDone, S::Ready),
            (S::Running, E::Return, S::Completed),
            (S::Draining, E::Drained, S::Completed),
            (S::Completed, E::Release, S::Idle),
            (S::Idle, E::Release, S::Idle),
            (S::Ready, E::CancelQueuedWithIo, S::Draining),
        ];
        for &(edge_from, edge_event, edge_to) in edges {
            if edge_from == from && edge_event == event {
                return Some(edge_to);
            }
        }
        for reason in REASONS {
            if from == S::Running && event == E::Suspend(reason) {
                return Some(S::Suspended(reason));
            }
            if from == S::Suspended(reason) && event == E::Wake {
                return Some(S::Ready);
            }
        }
        None
    }

    #[test]
    fn every_state_event_pair_matches_the_documented_table() {
        let mut legal = 0;
        let mut illegal = 0;
        for state in all_states() {
            for event in all_events() {
                match (state.on(event), documented(state, event)) {
                    (Ok(got), Some(want)) => {
                        assert_eq!(got, want, "{state:?} on {event:?}");
                        legal += 1;
                    }
                    (Err(err), None) => {
                        assert_eq!(err, InvalidTransition { from: state, event });
                        illegal += 1;
                    }
                    (got, want) => panic!("{state:?} on {event:?}: got {got:?}, documented {want:?}"),
                }
            }
        }
        // 11 states x 18 events; the documented edges are 18 fixed + 4 suspends + 4 wakes.
        assert_eq!(legal, 26);
        assert_eq!(legal + illegal, 11 * 18);
    }
}
