//! Armed timers: an intrusive pairing heap ordered by (deadline, arming order).
//!
//! Why a pairing heap: insert is O(1), remove-min and remove-from-the-middle are
//! O(log n) amortized, nodes are intrusive (one per task, in its `'static` trailer)
//! so arming allocates nothing, and the code is short enough to check by eye. A
//! hierarchical wheel would give O(1) insert but cannot keep exact (deadline, arming
//! order) firing order without sorting its finest bucket; a sorted list is O(n).
//! Written by hand: no maintained crate offers an intrusive, allocation-free,
//! removable heap.
//!
//! Rules (cited elsewhere as "timer rule N"):
//! 1. A node is in the heap iff `armed` is true; only the owning executor's thread
//!    touches nodes or the heap (plain `Cell`s).
//! 2. Key order is `(deadline, seq)`; `seq` is taken from a per-heap counter at arm
//!    time, so equal deadlines fire in arming order.
//! 3. Tree links: `child` is the first child; `next` the next sibling; `prev` the
//!    previous sibling, or the parent for a first child, `None` for the root.
//! 4. Loop bounds: `merge_pairs` walks one sibling list, at most the number of armed
//!    timers; nothing else loops.

use crate::clock::Instant;
use core::cell::Cell;
use core::ptr::NonNull;

/// One armed-or-not timer, embedded in a task.
#[derive(Debug)]
pub struct TimerNode {
    deadline: Cell<Instant>,
    seq: Cell<u64>,
    armed: Cell<bool>,
    child: Cell<Option<NonNull<TimerNode>>>,
    next: Cell<Option<NonNull<TimerNode>>>,
    prev: Cell<Option<NonNull<TimerNode>>>,
}

impl Default for TimerNode {
    fn default() -> Self {
        Self::new()
    }
}

impl TimerNode {
    /// An unarmed node.
    pub const fn new() -> Self {
        TimerNode {
            deadline: Cell::new(Instant::MAX),
            seq: Cell::new(0),
            armed: Cell::new(false),
            child: Cell::new(None),
            next: Cell::new(None),
            prev: Cell::new(None),
        }
    }

    /// Whether it is in a heap.
    pub fn is_armed(&self) -> bool {
        self.armed.get()
    }

    /// Its deadline (meaningful while armed).
    pub fn deadline(&self) -> Instant {
        self.deadline.get()
    }
}

#[inline(always)]
fn node<'a>(ptr: NonNull<TimerNode>) -> &'a TimerNode {
    // SAFETY: heap nodes are valid while armed (the `TimerHeap` safety contracts), and
    // every pointer stored in a node or the root is to an armed node (rule 1).
    unsafe { ptr.as_ref() }
}

#[inline(always)]
fn less(a: NonNull<TimerNode>, b: NonNull<TimerNode>) -> bool {
    let key = |n: NonNull<TimerNode>| (node(n).deadline.get(), node(n).seq.get());
    // A planted bug for the fuzz target `timer_heap` (off in every normal build): ties
    // in deadline ignore the arming order (breaks rule 2).
    #[cfg(keel_planted = "timer_heap")]
    let key = |n: NonNull<TimerNode>| (node(n).deadline.get(), 0);
    key(a) < key(b)
}

/// Makes the larger of two roots the first child of the smaller; returns the new root.
fn meld(a: NonNull<TimerNode>, b: NonNull<TimerNode>) -> NonNull<TimerNode> {
    let (root, sub) = if less(b, a) { (b, a) } else { (a, b) };
    let (root_ref, sub_ref) = (node(root), node(sub));
    sub_ref.next.set(root_ref.child.get());
    if let Some(child) = root_ref.child.get() {
        node(child).prev.set(Some(sub));
    }
    sub_ref.prev.set(Some(root));
    root_ref.child.set(Some(sub));
    root
}

/// Two-pass merge of a sibling list into one tree (rule 4 bounds the loops).
fn merge_pairs(first: Option<NonNull<TimerNode>>) -> Option<NonNull<TimerNode>> {
    let mut stack: Option<NonNull<TimerNode>> = None;
    let mut cur = first;
    while let Some(left) = cur {
        let left_ref = node(left);
        let right = left_ref.next.get();
        left_ref.prev.set(None);
        left_ref.next.set(None);
        let pair = match right {
            None => {
                cur = None;
                left
            }
            Some(right) => {
                let right_ref = node(right);
                cur = right_ref.next.get();
                right_ref.prev.set(None);
                right_ref.next.set(None);
                meld(left, right)
            }
        };
        node(pair).next.set(stack);
        stack = Some(pair);
    }
    let mut result: Option<NonNull<TimerNode>> = None;
    while let Some(tree) = stack {
        stack = node(tree).next.get();
        node(tree).next.set(None);
        result = Some(match result {
            None => tree,
            Some(merged) => meld(merged, tree),
        });
    }
    result
}

/// A min-heap of armed timers.
#[derive(Debug, Default)]
pub struct TimerHeap {
    root: Cell<Option<NonNull<TimerNode>>>,
    len: Cell<usize>,
    next_seq: Cell<u64>,
}

impl TimerHeap {
    /// An empty heap.
    pub const fn new() -> Self {
        TimerHeap { root: Cell::new(None), len: Cell::new(0), next_seq: Cell::new(0) }
    }

    /// Number of armed timers.
    pub fn len(&self) -> usize {
        self.len.get()
    }

    /// Whether no timer is armed.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.root.get().is_none()
    }

    /// The earliest deadline.
    #[inline(always)]
    pub fn next_deadline(&self) -> Option<Instant> {
        self.root.get().map(|root| node(root).deadline.get())
    }

    /// Arms `timer` for `deadline`.
    ///
    /// # Safety
    /// `timer` is valid, unarmed, and stays valid and unmoved until it is removed or popped.
    pub unsafe fn insert(&self, timer: NonNull<TimerNode>, deadline: Instant) {
        let timer_ref = node(timer);
        debug_assert!(!timer_ref.armed.get(), "keel bug: timer armed twice");
        timer_ref.deadline.set(deadline);
        timer_ref.seq.set(self.next_seq.get());
        self.next_seq.set(self.next_seq.get().wrapping_add(1));
        timer_ref.armed.set(true);
        timer_ref.child.set(None);
        timer_ref.next.set(None);
        timer_ref.prev.set(None);
        self.root.set(Some(match self.root.get() {
            None => timer,
            Some(root) => meld(root, timer),
        }));
        self.len.set(self.len.get() + 1);
    }

    /// Disarms and returns the earliest timer if its deadline is at or before `now`.
    pub fn pop_expired(&self, now: Instant) -> Option<NonNull<TimerNode>> {
        let root = self.root.get()?;
        if node(root).deadline.get() > now {
            return None;
        }
        self.root.set(merge_pairs(node(root).child.get()));
        self.detached(root);
        Some(root)
    }

    /// Disarms `timer`, wherever it is in the heap.
    ///
    /// # Safety
    /// `timer` is armed in this heap.
    pub unsafe fn remove(&self, timer: NonNull<TimerNode>) {
        let timer_ref = node(timer);
        debug_assert!(timer_ref.armed.get(), "keel bug: removing an unarmed timer");
        if self.root.get() == Some(timer) {
            self.root.set(merge_pairs(timer_ref.child.get()));
        } else {
            let prev = timer_ref.prev.get().expect("keel bug: armed non-root timer without prev");
            let prev_ref = node(prev);
            if prev_ref.child.get() == Some(timer) {
                prev_ref.child.set(timer_ref.next.get());
            } else {
                prev_ref.next.set(timer_ref.next.get());
            }
            if let Some(next) = timer_ref.next.get() {
                node(next).prev.set(Some(prev));
            }
            if let Some(sub) = merge_pairs(timer_ref.child.get()) {
                let root = self.root.get().expect("keel bug: non-empty heap without root");
                self.root.set(Some(meld(root, sub)));
            }
        }
        self.detached(timer);
    }

    fn detached(&self, timer: NonNull<TimerNode>) {
        let timer_ref = node(timer);
        timer_ref.armed.set(false);
        timer_ref.child.set(None);
        timer_ref.next.set(None);
        timer_ref.prev.set(None);
        self.len.set(self.len.get() - 1);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::vec::Vec;

    fn leak(n: usize) -> &'static [TimerNode] {
        Vec::leak((0..n).map(|_| TimerNode::new()).collect())
    }

    #[test]
    fn timer_rule_2_equal_deadlines_fire_in_arming_order() {
        let nodes = leak(4);
        let heap = TimerHeap::new();
        for i in [2, 0, 3, 1] {
            // SAFETY: leaked nodes live forever; each armed once.
            unsafe { heap.insert(NonNull::from(&nodes[i]), Instant::from_nanos(5)) };
        }
        let order: Vec<usize> = core::iter::from_fn(|| heap.pop_expired(Instant::from_nanos(5)))
            .map(|p| nodes.iter().position(|n| core::ptr::eq(n, p.as_ptr())).unwrap())
            .collect();
        assert_eq!(order, [2, 0, 3, 1]);
    }

    #[test]
    fn hundred_thousand_timers_insert_remove_and_fire_in_order() {
        const N: usize = 100_000;
        let nodes = leak(N);
        let heap = TimerHeap::new();
        let mut model = BTreeSet::new();
        let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
        for (i, timer) in nodes.iter().enumerate() {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let deadline = rng % 1_000_000;
            // SAFETY: leaked nodes; each armed once.
            unsafe { heap.insert(NonNull::from(timer), Instant::from_nanos(deadline)) };
            model.insert((deadline, i));
        }
        for (i, timer) in nodes.iter().enumerate().step_by(3) {
            // SAFETY: every third node is armed in `heap`.
            unsafe { heap.remove(NonNull::from(timer)) };
            model.remove(&(timer.deadline().as_nanos(), i));
        }
        assert_eq!(heap.len(), model.len());
        let mut fired = Vec::with_capacity(model.len());
        while let Some(popped) = heap.pop_expired(Instant::MAX) {
            let i = (popped.as_ptr() as usize - nodes.as_ptr() as usize) / core::mem::size_of::<TimerNode>();
            fired.push((node(popped).deadline().as_nanos(), i));
        }
        let want: Vec<_> = model.into_iter().collect();
        assert_eq!(fired, want);
    }

    proptest! {
        #[test]
        fn timer_rule_3_matches_a_sorted_model(ops in proptest::collection::vec((0u8..3, 0usize..32, 0u64..50), 1..200)) {
            let nodes = leak(32);
            let heap = TimerHeap::new();
            let mut model: BTreeSet<(u64, u64, usize)> = BTreeSet::new();
            let mut seq = 0u64;
            let mut now = 0u64;
            for (op, i, delay) in ops {
                let timer = NonNull::from(&nodes[i]);
                match op {
                    0 if !nodes[i].is_armed() => {
                        // SAFETY: unarmed leaked node.
                        unsafe { heap.insert(timer, Instant::from_nanos(now + delay)) };
                        model.insert((now + delay, seq, i));
                        seq += 1;
                    }
                    1 if nodes[i].is_armed() => {
                        let key = *model.iter().find(|k| k.2 == i).unwrap();
                        model.remove(&key);
                        // SAFETY: armed in this heap.
                        unsafe { heap.remove(timer) };
                    }
                    _ => {
                        now += delay;
                        while let Some(popped) = heap.pop_expired(Instant::from_nanos(now)) {
                            let first = *model.iter().next().unwrap();
                            prop_assert!(first.0 <= now);
                            prop_assert!(core::ptr::eq(popped.as_ptr(), &nodes[first.2]));
                            model.remove(&first);
                        }
                        prop_assert!(model.iter().next().is_none_or(|k| k.0 > now));
                    }
                }
                prop_assert_eq!(heap.len(), model.len());
            }
        }
    }
}
