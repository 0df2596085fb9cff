//! Ready tasks, by CPU priority: three intrusive FIFO lists. Push, pop-highest and
//! remove are O(1); pop looks at three list heads at most.

use crate::list::List;
use crate::priority::Priority;
use crate::task::header::{Header, RunLink};
use core::ptr::NonNull;

/// Three FIFO levels.
#[derive(Default)]
pub(crate) struct RunQueue {
    levels: [List<Header, RunLink>; Priority::LEVELS],
}

impl RunQueue {
    /// Where the levels are, for debuggers (`exec/debug.rs`).
    pub(crate) const DEBUG_LEVELS: usize = core::mem::offset_of!(Self, levels);

    pub(crate) const fn new() -> Self {
        RunQueue { levels: [List::new(), List::new(), List::new()] }
    }

    /// Queues `task` at the back of its CPU priority's level.
    ///
    /// # Safety
    /// `task` is a `'static` task header owned by this executor and in no run list.
    #[inline(always)]
    pub(crate) unsafe fn push(&self, task: NonNull<Header>) {
        // SAFETY: `'static` header (caller).
        let level = unsafe { task.as_ref() }.prio.get().cpu.index();
        // SAFETY: not in any run list (caller); headers never move.
        unsafe { self.levels[level].push_back(task) };
    }

    /// Queues `task` at the front of its CPU priority's level (a task that was ahead of
    /// every task queued there since: sched rule 6).
    ///
    /// # Safety
    /// As [`push`](Self::push).
    #[inline(always)]
    pub(crate) unsafe fn push_front(&self, task: NonNull<Header>) {
        // SAFETY: `'static` header (caller).
        let level = unsafe { task.as_ref() }.prio.get().cpu.index();
        // SAFETY: not in any run list (caller); headers never move.
        unsafe { self.levels[level].push_front(task) };
    }

    /// Whether no task is queued at CPU priority level `level` or above (at most three
    /// list heads).
    #[inline(always)]
    pub(crate) fn empty_down_to(&self, level: usize) -> bool {
        self.empty_above(level) && self.levels.get(level).is_none_or(|l| l.is_empty())
    }

    /// Whether no task is queued at a level above `level`.
    #[inline(always)]
    pub(crate) fn empty_above(&self, level: usize) -> bool {
        // Written out for the three levels: a branch per head, no loop.
        const _: () = assert!(Priority::LEVELS == 3);
        match level {
            0 => true,
            1 => self.levels[0].is_empty(),
            _ => self.levels[0].is_empty() && self.levels[1].is_empty(),
        }
    }

    /// The oldest task of the highest non-empty level.
    #[inline(always)]
    pub(crate) fn pop(&self) -> Option<NonNull<Header>> {
        for level in &self.levels {
            if let Some(task) = level.pop_front() {
                return Some(task);
            }
        }
        None
    }

    /// Removes `task` from its level.
    ///
    /// # Safety
    /// `task` is queued here, and its CPU priority has not changed since it was pushed.
    pub(crate) unsafe fn remove(&self, task: NonNull<Header>) {
        // SAFETY: `'static` header (caller).
        let level = unsafe { task.as_ref() }.prio.get().cpu.index();
        // SAFETY: queued in this level (caller).
        unsafe { self.levels[level].remove(task) };
    }

    /// Tasks queued at all levels.
    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.levels.iter().map(|l| l.len()).sum()
    }

    /// Tasks queued at each level.
    pub(crate) fn lens(&self) -> [usize; 3] {
        [self.levels[0].len(), self.levels[1].len(), self.levels[2].len()]
    }
}
