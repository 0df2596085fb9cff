//! Deadline scopes (`deadline` module doc): a thread's list of open scopes, each naming
//! the task run it belongs to, so a scope never reaches another task's operations even
//! while its fiber is suspended and others run. A submission looks its task up only while
//! a scope is open on the thread (`OPEN`: one thread-local load otherwise).
//!
//! Rules (cited as "scope rule N"):
//! 1. A scope is opened and closed by a guard ([`Scope`]) on the task's own stack or in
//!    its future's poll: closed on every way out, an unwinding fiber's too.
//! 2. An operation takes the earliest deadline among its task's open scopes (nested
//!    scopes can only shorten it) and its own, if it has one.

use core::cell::{Cell, RefCell};
use keel_core::{Instant, TaskHandle};

thread_local! {
    /// Scopes open on this thread: (id, task run, deadline).
    static SCOPES: RefCell<Vec<(u64, TaskHandle, Instant)>> = const { RefCell::new(Vec::new()) };
    /// How many (the fast path's test).
    static OPEN: Cell<u32> = const { Cell::new(0) };
    /// The next scope's id.
    static NEXT: Cell<u64> = const { Cell::new(0) };
}

/// An open scope (scope rule 1): closed when dropped. `!Send`: its entry is in this
/// thread's list.
pub(crate) struct Scope {
    id: u64,
    _thread: core::marker::PhantomData<*const ()>,
}

impl Scope {
    /// Opens a scope of `task` with deadline `at`.
    pub(crate) fn open(task: TaskHandle, at: Instant) -> Scope {
        let id = NEXT.with(|n| {
            let id = n.get();
            n.set(id + 1);
            id
        });
        SCOPES.with(|s| s.borrow_mut().push((id, task, at)));
        OPEN.with(|o| o.set(o.get() + 1));
        Scope { id, _thread: core::marker::PhantomData }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        // `try_with`: a scope dropped while the thread's locals are torn down has nothing to do.
        let removed = SCOPES.try_with(|s| {
            let mut s = s.borrow_mut();
            let before = s.len();
            s.retain(|e| e.0 != self.id);
            before != s.len()
        });
        if removed == Ok(true) {
            let _ = OPEN.try_with(|o| o.set(o.get() - 1));
        }
    }
}

/// The deadline the open scopes give `task`'s operations (scope rule 2), if any.
#[inline(always)]
pub(crate) fn deadline_of(task: impl FnOnce() -> Option<TaskHandle>) -> Option<Instant> {
    if OPEN.with(Cell::get) == 0 {
        return None;
    }
    lookup(task()?)
}

#[cold]
fn lookup(task: TaskHandle) -> Option<Instant> {
    SCOPES.with(|s| s.borrow().iter().filter(|e| e.1 == task).map(|e| e.2).min())
}
