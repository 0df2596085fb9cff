//! The executor's inbox: an intrusive multi-producer, single-consumer queue
//! (Dmitry Vyukov's node-based MPSC design), through which other threads hand tasks
//! (wakes and attaches) to the executor.
//!
//! Written by hand: the queue threads through nodes embedded in `'static` task
//! headers and must run under loom through `crate::sync`; the maintained MPSC crates
//! allocate their nodes or use their own atomics.
//!
//! Its rules are the inbox rules of the mailbox module (cited as "inbox rule N").

use crate::sync::{AtomicPtr, Ordering};
use core::cell::Cell;
use core::ptr::{self, NonNull};

/// The link a task carries for inboxes.
pub(crate) struct InboxNode {
    next: AtomicPtr<InboxNode>,
}

impl InboxNode {
    crate::sync::maybe_const_fn! {
        pub(crate) fn new() -> Self {
            InboxNode { next: AtomicPtr::new(ptr::null_mut()) }
        }
    }
}

impl InboxNode {
    /// The link, for the dispatcher's stacks (dispatch rule 1). Relaxed: the stack's
    /// head CAS orders it.
    pub(crate) fn next_load(&self) -> *mut InboxNode {
        self.next.load(Ordering::Relaxed)
    }

    /// As `next_load`.
    pub(crate) fn next_store(&self, next: *mut InboxNode) {
        self.next.store(next, Ordering::Relaxed);
    }
}

/// What `pop` found.
pub(crate) enum Pop {
    Item(NonNull<InboxNode>),
    Empty,
    /// A producer is between its two steps (rule 3).
    Busy,
}

/// What the park re-check found (rule 3, park rule 2).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Recheck {
    /// Nothing queued and no push in progress.
    Empty,
    /// At least one node can be taken.
    Items,
    /// A producer is between its swap and its link store (rule 3): the node is not
    /// takeable yet, and that producer will unpark a parked executor (park rule 2).
    Busy,
}

/// The queue. Cache-padded: producers hammer `head`, the consumer reads `tail`.
#[repr(C, align(64))]
pub(crate) struct Inbox {
    head: AtomicPtr<InboxNode>,
    _pad: [u8; 56],
    tail: Cell<*mut InboxNode>,
    stub: InboxNode,
}

impl Inbox {
    pub(crate) fn new() -> Self {
        Inbox {
            head: AtomicPtr::new(ptr::null_mut()),
            _pad: [0; 56],
            tail: Cell::new(ptr::null_mut()),
            stub: InboxNode::new(),
        }
    }

    fn stub(&self) -> *mut InboxNode {
        &self.stub as *const InboxNode as *mut InboxNode
    }

    /// Points head and tail at the stub. Rule 5: called once the inbox is pinned.
    pub(crate) fn init(&self) {
        self.tail.set(self.stub());
        // Relaxed: nothing can reach the inbox until `owner` is published with Release
        // after this (rule 5).
        self.head.store(self.stub(), Ordering::Relaxed);
    }

    /// Pushes `node` (rule 1). Any thread.
    ///
    /// # Safety
    /// `node` is valid, `'static`, and not in any inbox (rule 4); `init` has run.
    #[inline(always)]
    pub(crate) unsafe fn push(&self, node: NonNull<InboxNode>) {
        // SAFETY: the caller's duties are `push_with`'s.
        #[cfg(keel_loom)]
        return unsafe { self.push_with::<crate::sync::Strong>(node) };
        // SAFETY: as above.
        #[cfg(not(keel_loom))]
        unsafe {
            self.push_with(node)
        }
    }

    /// `push`, with the link store's ordering a loom model may weaken (`sync::Weaken`).
    ///
    /// # Safety
    /// As for `push`.
    pub(crate) unsafe fn push_with<#[cfg(keel_loom)] W: crate::sync::Weaken>(&self, node: NonNull<InboxNode>) {
        let node_ptr = node.as_ptr();
        // SAFETY: the caller's duties.
        let prev = unsafe { self.push_swap(node_ptr) };
        // SAFETY: `prev` came from our swap just above, `node_ptr` is the node it swapped in.
        #[cfg(keel_loom)]
        unsafe {
            Self::push_link::<W>(prev, node_ptr)
        };
        // SAFETY: as above.
        #[cfg(not(keel_loom))]
        unsafe {
            Self::push_link(prev, node_ptr)
        };
    }

    /// A push's first step (rule 1): clear the node's link and swap it in as `head`.
    /// Returns the previous head, which [`push_link`](Self::push_link) must link to it.
    /// Between the two the inbox is cut (rule 3).
    ///
    /// # Safety
    /// As for `push`; the caller then calls `push_link(prev, node)` exactly once.
    #[inline(always)]
    pub(crate) unsafe fn push_swap(&self, node: *mut InboxNode) -> *mut InboxNode {
        // SAFETY: the caller owns the right to link `node` (rule 4).
        // Relaxed: published by the Release swap below.
        unsafe { (*node).next.store(ptr::null_mut(), Ordering::Relaxed) };
        // AcqRel: Release publishes the node's cleared `next`; Acquire orders our later
        // store into `prev` after the previous producer's initialisation of it.
        self.head.swap(node, Ordering::AcqRel)
    }

    /// A push's second step (rule 1): link `prev` (the head `push_swap` replaced) to `node`.
    ///
    /// # Safety
    /// `prev` and `node` are what one `push_swap` took and swapped in, linked once.
    #[inline(always)]
    pub(crate) unsafe fn push_link<#[cfg(keel_loom)] W: crate::sync::Weaken>(
        prev: *mut InboxNode,
        node: *mut InboxNode,
    ) {
        #[cfg(not(keel_loom))]
        use crate::sync::Strong as W;
        // SAFETY: `prev` is the stub or a node pushed earlier; nodes are `'static` and the
        // stub lives as long as the pinned inbox, which outlives every push (wake rule 6, park rule 4).
        // Release (W::PUSH_LINK): pairs with the consumer's Acquire load of `next` in
        // `pop`, publishing the cleared `next` of a node being pushed again.
        unsafe { (*prev).next.store(node, W::PUSH_LINK) };
    }

    /// Cheap test used on every run-loop pass: true if nothing is visibly queued.
    #[inline(always)]
    pub(crate) fn looks_empty(&self) -> bool {
        let tail = self.tail.get();
        // SAFETY: `tail` is the stub or a popped-from node, valid (rule 2).
        // Relaxed: a hint only; `pop` re-reads with Acquire.
        tail == self.stub() && unsafe { (*tail).next.load(Ordering::Relaxed) }.is_null()
    }

    /// The park re-check (park rule 2), after the caller's announce and `SeqCst` fence:
    /// whether anything is queued, or a producer is between its two steps (rule 3).
    /// Never spins: what to do about `Busy` is the caller's (a bounded number of passes,
    /// then park: rule 3).
    pub(crate) fn recheck(&self) -> Recheck {
        let tail = self.tail.get();
        // SAFETY: `tail` is the stub or a popped-from node, valid (rule 2).
        // Relaxed: ordered by the SeqCst fence the caller issued just before (park rule
        // 2): if a producer's link into `tail` is not seen here, that producer's own fence
        // comes later and it will see PARKED.
        if !unsafe { (*tail).next.load(Ordering::Relaxed) }.is_null() {
            return Recheck::Items;
        }
        // Relaxed: as above.
        let head = self.head.load(Ordering::Relaxed);
        if head == tail {
            // `tail` is the last node: an item unless it is the stub.
            return if tail == self.stub() { Recheck::Empty } else { Recheck::Items };
        }
        // Some producer swapped `tail` out as head and has not linked it yet (rule 3).
        Recheck::Busy
    }

    /// Takes the oldest node. Only the owning executor's thread (rule 2).
    pub(crate) fn pop(&self) -> Pop {
        let stub = self.stub();
        let mut tail = self.tail.get();
        // Acquire: pairs with the Release link store in `push`, so the node is initialised.
        // SAFETY: `tail`, `next` and `head` (here and below) are the stub or
        // pushed nodes, all valid for as long as the inbox (see `push`).
        let mut next = unsafe { (*tail).next.load(Ordering::Acquire) };
        if tail == stub {
            if next.is_null() {
                return Pop::Empty;
            }
            self.tail.set(next);
            tail = next;
            // SAFETY: as above.
            next = unsafe { (*next).next.load(Ordering::Acquire) };
        }
        if !next.is_null() {
            self.tail.set(next);
            // SAFETY: `tail` is non-null here.
            return Pop::Item(unsafe { NonNull::new_unchecked(tail) });
        }
        // Acquire: pairs with the producers' swap, to compare with a head that is current.
        let head = self.head.load(Ordering::Acquire);
        if tail != head {
            // Rule 3: the caller comes back on its next pass, at once if it has nothing
            // else to do: hint that this is a busy wait (under loom, let the producer run).
            crate::sync::spin_loop();
            return Pop::Busy;
        }
        // `tail` is the last node: push the stub behind it so it can be taken.
        // SAFETY: the stub is in the queue only as `tail` was not it (checked above).
        unsafe { self.push(NonNull::new_unchecked(stub)) };
        // SAFETY: as above.
        next = unsafe { (*tail).next.load(Ordering::Acquire) };
        if !next.is_null() {
            self.tail.set(next);
            // SAFETY: non-null.
            return Pop::Item(unsafe { NonNull::new_unchecked(tail) });
        }
        // Another producer came between: as above.
        crate::sync::spin_loop();
        Pop::Busy
    }
}

#[cfg(all(test, not(keel_loom)))]
mod tests {
    use super::*;

    extern crate std;
    use std::boxed::Box;

    fn nodes<const N: usize>() -> &'static [InboxNode; N] {
        Box::leak(Box::new(core::array::from_fn(|_| InboxNode::new())))
    }

    /// Rule 3: a producer between its swap and its link is `Busy` to the park re-check
    /// (and to `pop` once the tail is a real node), and cuts off the nodes before it;
    /// its link makes everything takeable, in order.
    #[test]
    fn inbox_rule_3_a_push_in_progress_is_busy_until_linked() {
        let inbox: &'static Inbox = Box::leak(Box::new(Inbox::new()));
        inbox.init();
        let [a, b] = nodes::<2>();
        let (a, b) = (a as *const InboxNode as *mut InboxNode, b as *const InboxNode as *mut InboxNode);
        assert_eq!(inbox.recheck(), Recheck::Empty);
        // SAFETY: `a` is `'static` and in no inbox; linked right below.
        let prev = unsafe { inbox.push_swap(a) };
        assert_eq!(inbox.recheck(), Recheck::Busy, "a swap without its link is a push in progress");
        // `pop` from the stub cannot tell (it reads no `head` then); the re-check can.
        assert!(matches!(inbox.pop(), Pop::Empty));
        assert_eq!(inbox.recheck(), Recheck::Busy);
        // SAFETY: `prev`/`a` from the swap above.
        unsafe { Inbox::push_link(prev, a) };
        assert_eq!(inbox.recheck(), Recheck::Items);
        // A complete push of `a`, then `b` half pushed: `a` is cut off behind `b`'s swap.
        // SAFETY: `b` is `'static` and in no inbox.
        let prev_b = unsafe { inbox.push_swap(b) };
        assert_eq!(prev_b, a);
        assert_eq!(inbox.recheck(), Recheck::Items, "the stub's link to `a` is visible");
        assert!(matches!(inbox.pop(), Pop::Busy), "`a` is the tail and `b` is not linked to it");
        assert_eq!(inbox.recheck(), Recheck::Busy);
        // SAFETY: from the swap above.
        unsafe { Inbox::push_link(prev_b, b) };
        assert!(matches!(inbox.pop(), Pop::Item(n) if n.as_ptr() == a));
        assert_eq!(inbox.recheck(), Recheck::Items, "`b` is the last node: an item, not the stub");
        assert!(matches!(inbox.pop(), Pop::Item(n) if n.as_ptr() == b));
        assert!(matches!(inbox.pop(), Pop::Empty));
        assert_eq!(inbox.recheck(), Recheck::Empty);
    }
}
