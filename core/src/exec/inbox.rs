//! The executor's inbox: an intrusive multi-producer, single-consumer queue
//! (Dmitry Vyukov's node-based MPSC design), through which other threads hand tasks
//! (wakes now, attaches in the cross-thread issue) to the executor.
//!
//! Written by hand: the queue threads through nodes embedded in `'static` task
//! headers and must run under loom through `crate::sync`; the maintained MPSC crates
//! allocate their nodes or use their own atomics.
//!
//! Rules (cited as "inbox rule N"):
//! 1. Producers (any thread) push with one `swap` of `head` and one store linking the
//!    previous node to theirs: wait-free.
//! 2. The single consumer is the owning executor's thread; `tail` is consumer-local.
//! 3. Between a producer's swap and its link store the queue looks cut: `pop` returns
//!    `Busy`, and the consumer tries again on its next pass. A run loop with nothing
//!    else to do makes that pass at once (the park re-check refuses to park on a push in
//!    progress), so it busy-waits for the producer's second step, which a preemption of
//!    the producer's thread can stretch to a scheduler quantum; `Busy` and the re-check
//!    say so with a spin hint (`sync::spin_loop`: `pause`, and a yield under loom, whose
//!    models of `run` found the wait). An executor being dropped waits the same way.
//! 4. A node is pushed only by the waker that set its task's `QUEUED` bit (wake rule 3),
//!    so it is in the queue at most once.
//! 5. The inbox lives inside a pinned executor; `init` runs once it is pinned, before
//!    any task can name the executor (attach stores `exec` only after it).

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
    pub(crate) fn next_store(&self, p: *mut InboxNode) {
        self.next.store(p, Ordering::Relaxed);
    }
}

/// What `pop` found.
pub(crate) enum Pop {
    Item(NonNull<InboxNode>),
    Empty,
    /// A producer is between its two steps (rule 3).
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
        // Relaxed: nothing can reach the inbox until `exec` is published with Release
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
        #[cfg(not(keel_loom))]
        use crate::sync::Strong as W;
        let n = node.as_ptr();
        // SAFETY: the caller owns the right to link `node` (rule 4).
        // Relaxed: published by the Release swap below.
        unsafe { (*n).next.store(ptr::null_mut(), Ordering::Relaxed) };
        // AcqRel: Release publishes the node's cleared `next`; Acquire orders our later
        // store into `prev` after the previous producer's initialisation of it.
        let prev = self.head.swap(n, Ordering::AcqRel);
        // SAFETY: `prev` is the stub or a node pushed earlier; nodes are `'static` and the
        // stub lives as long as the pinned inbox, which outlives every push (wake rule 6).
        // Release (W::PUSH_LINK): pairs with the consumer's Acquire load of `next` in
        // `pop`, publishing the cleared `next` of a node being pushed again.
        unsafe { (*prev).next.store(n, W::PUSH_LINK) };
    }

    /// Cheap test used on every run-loop pass: true if nothing is visibly queued.
    #[inline(always)]
    pub(crate) fn looks_empty(&self) -> bool {
        let tail = self.tail.get();
        // SAFETY: `tail` is the stub or a popped-from node, valid (rule 2).
        // Relaxed: a hint only; `pop` re-reads with Acquire.
        tail == self.stub() && unsafe { (*tail).next.load(Ordering::Relaxed) }.is_null()
    }

    /// Strict emptiness for the park re-check (park rule 2): also false while a producer
    /// is between its two steps, so the executor does not park on a push in progress.
    pub(crate) fn is_empty_for_park(&self) -> bool {
        if !self.looks_empty() {
            return false;
        }
        // Relaxed: ordered by the SeqCst fence the caller issued just before.
        if self.head.load(Ordering::Relaxed) == self.stub() {
            return true;
        }
        // A producer is between its two steps (rule 3) and the caller will pass again at
        // once: hint that this is a busy wait (under loom, let the producer run).
        crate::sync::spin_loop();
        false
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
