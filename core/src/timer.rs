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
//! Rules:
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
fn node<'a>(p: NonNull<TimerNode>) -> &'a TimerNode {
    // SAFETY: heap nodes are valid while armed (the `TimerHeap` safety contracts), and
    // every pointer stored in a node or the root is to an armed node (rule 1).
    unsafe { p.as_ref() }
}

#[inline(always)]
fn less(a: NonNull<TimerNode>, b: NonNull<TimerNode>) -> bool {
    let (a, b) = (node(a), node(b));
    (a.deadline.get(), a.seq.get()) < (b.deadline.get(), b.seq.get())
}

/// Makes the larger of two roots the first child of the smaller; returns the new root.
fn meld(a: NonNull<TimerNode>, b: NonNull<TimerNode>) -> NonNull<TimerNode> {
    let (root, sub) = if less(b, a) { (b, a) } else { (a, b) };
    let (r, s) = (node(root), node(sub));
    s.next.set(r.child.get());
    if let Some(c) = r.child.get() {
        node(c).prev.set(Some(sub));
    }
    s.prev.set(Some(root));
    r.child.set(Some(sub));
    root
}

/// Two-pass merge of a sibling list into one tree (rule 4 bounds the loops).
fn merge_pairs(first: Option<NonNull<TimerNode>>) -> Option<NonNull<TimerNode>> {
    let mut stack: Option<NonNull<TimerNode>> = None;
    let mut cur = first;
    while let Some(a) = cur {
        let na = node(a);
        let b = na.next.get();
        na.prev.set(None);
        na.next.set(None);
        let pair = match b {
            None => {
                cur = None;
                a
            }
            Some(b) => {
                let nb = node(b);
                cur = nb.next.get();
                nb.prev.set(None);
                nb.next.set(None);
                meld(a, b)
            }
        };
        node(pair).next.set(stack);
        stack = Some(pair);
    }
    let mut result: Option<NonNull<TimerNode>> = None;
    while let Some(m) = stack {
        stack = node(m).next.get();
        node(m).next.set(None);
        result = Some(match result {
            None => m,
            Some(r) => meld(r, m),
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
        self.root.get().map(|r| node(r).deadline.get())
    }

    /// Arms `n` for `deadline`.
    ///
    /// # Safety
    /// `n` is valid, unarmed, and stays valid and unmoved until it is removed or popped.
    pub unsafe fn insert(&self, n: NonNull<TimerNode>, deadline: Instant) {
        let t = node(n);
        debug_assert!(!t.armed.get(), "keel bug: timer armed twice");
        t.deadline.set(deadline);
        t.seq.set(self.next_seq.get());
        self.next_seq.set(self.next_seq.get().wrapping_add(1));
        t.armed.set(true);
        t.child.set(None);
        t.next.set(None);
        t.prev.set(None);
        self.root.set(Some(match self.root.get() {
            None => n,
            Some(r) => meld(r, n),
        }));
        self.len.set(self.len.get() + 1);
    }

    /// Disarms and returns the earliest timer if its deadline is at or before `now`.
    pub fn pop_expired(&self, now: Instant) -> Option<NonNull<TimerNode>> {
        let r = self.root.get()?;
        if node(r).deadline.get() > now {
            return None;
        }
        self.root.set(merge_pairs(node(r).child.get()));
        self.detached(r);
        Some(r)
    }

    /// Disarms `n`, wherever it is in the heap.
    ///
    /// # Safety
    /// `n` is armed in this heap.
    pub unsafe fn remove(&self, n: NonNull<TimerNode>) {
        let t = node(n);
        debug_assert!(t.armed.get(), "keel bug: removing an unarmed timer");
        if self.root.get() == Some(n) {
            self.root.set(merge_pairs(t.child.get()));
        } else {
            let prev = t.prev.get().expect("keel bug: armed non-root timer without prev");
            let p = node(prev);
            if p.child.get() == Some(n) {
                p.child.set(t.next.get());
            } else {
                p.next.set(t.next.get());
            }
            if let Some(next) = t.next.get() {
                node(next).prev.set(Some(prev));
            }
            if let Some(sub) = merge_pairs(t.child.get()) {
                let root = self.root.get().expect("keel bug: non-empty heap without root");
                self.root.set(Some(meld(root, sub)));
            }
        }
        self.detached(n);
    }

    fn detached(&self, n: NonNull<TimerNode>) {
        let t = node(n);
        t.armed.set(false);
        t.child.set(None);
        t.next.set(None);
        t.prev.set(None);
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
    fn equal_deadlines_fire_in_arming_order() {
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
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for (i, n) in nodes.iter().enumerate() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let d = x % 1_000_000;
            // SAFETY: leaked nodes; each armed once.
            unsafe { heap.insert(NonNull::from(n), Instant::from_nanos(d)) };
            model.insert((d, i));
        }
        for (i, n) in nodes.iter().enumerate().step_by(3) {
            // SAFETY: every third node is armed in `heap`.
            unsafe { heap.remove(NonNull::from(n)) };
            model.remove(&(n.deadline().as_nanos(), i));
        }
        assert_eq!(heap.len(), model.len());
        let mut fired = Vec::with_capacity(model.len());
        while let Some(p) = heap.pop_expired(Instant::MAX) {
            let i = (p.as_ptr() as usize - nodes.as_ptr() as usize) / core::mem::size_of::<TimerNode>();
            fired.push((node(p).deadline().as_nanos(), i));
        }
        let want: Vec<_> = model.into_iter().collect();
        assert_eq!(fired, want);
    }

    proptest! {
        #[test]
        fn matches_a_sorted_model(ops in proptest::collection::vec((0u8..3, 0usize..32, 0u64..50), 1..200)) {
            let nodes = leak(32);
            let heap = TimerHeap::new();
            let mut model: BTreeSet<(u64, u64, usize)> = BTreeSet::new();
            let mut seq = 0u64;
            let mut now = 0u64;
            for (op, i, d) in ops {
                let n = NonNull::from(&nodes[i]);
                match op {
                    0 if !nodes[i].is_armed() => {
                        // SAFETY: unarmed leaked node.
                        unsafe { heap.insert(n, Instant::from_nanos(now + d)) };
                        model.insert((now + d, seq, i));
                        seq += 1;
                    }
                    1 if nodes[i].is_armed() => {
                        let key = *model.iter().find(|k| k.2 == i).unwrap();
                        model.remove(&key);
                        // SAFETY: armed in this heap.
                        unsafe { heap.remove(n) };
                    }
                    _ => {
                        now += d;
                        while let Some(p) = heap.pop_expired(Instant::from_nanos(now)) {
                            let first = *model.iter().next().unwrap();
                            prop_assert!(first.0 <= now);
                            prop_assert!(core::ptr::eq(p.as_ptr(), &nodes[first.2]));
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
