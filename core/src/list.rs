//! Intrusive doubly-linked lists: O(1) push, pop and remove-from-middle, no allocation.
//!
//! Written by hand rather than taken from a crate: the run queues, the owned-task
//! list and the i/o status lists are the heart of the core, their nodes live inside
//! `'static` task storage and caller-pinned status blocks, and they are touched only
//! by one executor thread through `Cell`s. The maintained intrusive crates either
//! need `alloc` for their adapters' smart pointers or bring their own atomics; this
//! file is a hundred lines we can read whole.
//!
//! Rules (cited elsewhere as "list rule N"):
//! 1. A node is in at most one list at a time through one `Links` field. Debug builds
//!    record the owning list's address in the node and assert it on every operation.
//! 2. A node does not move or die while it is linked (it is `'static` or pinned and
//!    unlinks itself in `Drop`).
//! 3. A list does not move while it is non-empty (it lives in pinned or `'static`
//!    storage).
//! 4. Lists and links are executor-local: plain `Cell`s, no atomics, never shared
//!    across threads while linked.

use core::cell::Cell;
use core::marker::PhantomData;
use core::ptr::NonNull;

/// The links a node carries for one kind of list.
pub struct Links<T> {
    prev: Cell<Option<NonNull<T>>>,
    next: Cell<Option<NonNull<T>>>,
    #[cfg(debug_assertions)]
    owner: Cell<*const ()>,
}

impl<T> core::fmt::Debug for Links<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Links").finish_non_exhaustive()
    }
}

impl<T> Links<T> {
    /// Where `next` is, for debuggers (`exec/debug.rs`).
    pub(crate) const DEBUG_NEXT: usize = core::mem::offset_of!(Self, next);

    /// Unlinked links.
    pub const fn new() -> Self {
        Links {
            prev: Cell::new(None),
            next: Cell::new(None),
            #[cfg(debug_assertions)]
            owner: Cell::new(core::ptr::null()),
        }
    }

    /// Whether the node is linked (debug builds only; release builds return `None`).
    #[allow(dead_code)]
    pub(crate) fn debug_is_linked(&self) -> Option<bool> {
        #[cfg(debug_assertions)]
        {
            Some(!self.owner.get().is_null())
        }
        #[cfg(not(debug_assertions))]
        {
            None
        }
    }
}

impl<T> Default for Links<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// A type whose values carry `Links<Self>` for a list `L` (a marker, so one node type
/// can sit in several kinds of list through several `Links` fields).
///
/// # Safety
/// `links` must return a pointer to a `Links<Self>` inside `*this` that is used for
/// no other list kind, valid for as long as `this` is.
pub unsafe trait Link<L>: Sized {
    /// The links inside `this`.
    fn links(this: NonNull<Self>) -> NonNull<Links<Self>>;
}

/// A FIFO intrusive list of `T` through the links that `Link<L>` names.
pub struct List<T: Link<L>, L> {
    head: Cell<Option<NonNull<T>>>,
    tail: Cell<Option<NonNull<T>>>,
    len: Cell<usize>,
    _kind: PhantomData<L>,
}

impl<T: Link<L>, L> core::fmt::Debug for List<T, L> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("List").field("len", &self.len.get()).finish()
    }
}

impl<T: Link<L>, L> Default for List<T, L> {
    fn default() -> Self {
        Self::new()
    }
}

#[inline(always)]
fn links<'a, T: Link<L>, L>(node: NonNull<T>) -> &'a Links<T> {
    // SAFETY: per list rule 2 a node handed to a list is valid while linked, and
    // `Link::links` points inside it (the trait's safety contract).
    unsafe { T::links(node).as_ref() }
}

impl<T: Link<L>, L> List<T, L> {
    /// Where `head` and `len` are, for debuggers (`exec/debug.rs`).
    pub(crate) const DEBUG_HEAD_LEN: [usize; 2] = [core::mem::offset_of!(Self, head), core::mem::offset_of!(Self, len)];

    /// An empty list.
    pub const fn new() -> Self {
        List { head: Cell::new(None), tail: Cell::new(None), len: Cell::new(0), _kind: PhantomData }
    }

    /// Number of nodes.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.len.get()
    }

    /// Whether the list is empty.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.head.get().is_none()
    }

    /// The first node.
    #[inline(always)]
    pub fn front(&self) -> Option<NonNull<T>> {
        self.head.get()
    }

    /// The node after `node`.
    ///
    /// # Safety
    /// `node` is linked in this list.
    #[inline(always)]
    pub unsafe fn next_of(&self, node: NonNull<T>) -> Option<NonNull<T>> {
        links(node).next.get()
    }

    /// Appends `node`.
    ///
    /// # Safety
    /// `node` is valid, not linked in any list of kind `L` (list rule 1), and stays
    /// valid and unmoved until removed (list rule 2).
    #[inline(always)]
    pub unsafe fn push_back(&self, node: NonNull<T>) {
        let node_links = links(node);
        #[cfg(debug_assertions)]
        {
            assert!(node_links.owner.get().is_null(), "keel bug: node pushed while linked in another list");
            node_links.owner.set(self as *const Self as *const ());
        }
        node_links.next.set(None);
        node_links.prev.set(self.tail.get());
        match self.tail.get() {
            Some(tail) => links(tail).next.set(Some(node)),
            None => self.head.set(Some(node)),
        }
        self.tail.set(Some(node));
        self.len.set(self.len.get() + 1);
    }

    /// Prepends `node`.
    ///
    /// # Safety
    /// As [`push_back`](Self::push_back).
    #[inline(always)]
    pub unsafe fn push_front(&self, node: NonNull<T>) {
        let node_links = links(node);
        #[cfg(debug_assertions)]
        {
            assert!(node_links.owner.get().is_null(), "keel bug: node pushed while linked in another list");
            node_links.owner.set(self as *const Self as *const ());
        }
        node_links.prev.set(None);
        node_links.next.set(self.head.get());
        match self.head.get() {
            Some(head) => links(head).prev.set(Some(node)),
            None => self.tail.set(Some(node)),
        }
        self.head.set(Some(node));
        self.len.set(self.len.get() + 1);
    }

    /// Removes and returns the first node.
    #[inline(always)]
    pub fn pop_front(&self) -> Option<NonNull<T>> {
        let node = self.head.get()?;
        // `remove` of the head, with what the head already says folded in: its `prev` is
        // `None`, so only its `next` needs clearing (an unlinked node has both `None`:
        // `contains`), and the new head's `prev` (or the tail) is the one neighbour to fix.
        let node_links = links(node);
        #[cfg(debug_assertions)]
        {
            assert_eq!(
                node_links.owner.get(),
                self as *const Self as *const (),
                "keel bug: node popped from a list it is not in"
            );
            debug_assert!(node_links.prev.get().is_none(), "keel bug: the head has a predecessor");
            node_links.owner.set(core::ptr::null());
        }
        let next = node_links.next.get();
        self.head.set(next);
        match next {
            Some(next_node) => links(next_node).prev.set(None),
            None => self.tail.set(None),
        }
        node_links.next.set(None);
        self.len.set(self.len.get() - 1);
        Some(node)
    }

    /// Unlinks `node` from the middle, front or back.
    ///
    /// # Safety
    /// `node` is linked in this list.
    #[inline(always)]
    pub unsafe fn remove(&self, node: NonNull<T>) {
        let node_links = links(node);
        #[cfg(debug_assertions)]
        {
            assert_eq!(
                node_links.owner.get(),
                self as *const Self as *const (),
                "keel bug: node removed from a list it is not in"
            );
            node_links.owner.set(core::ptr::null());
        }
        let (prev, next) = (node_links.prev.get(), node_links.next.get());
        match prev {
            Some(prev_node) => links(prev_node).next.set(next),
            None => self.head.set(next),
        }
        match next {
            Some(next_node) => links(next_node).prev.set(prev),
            // A planted bug for the fuzz target `run_queue` (off in every normal build):
            // removing the back node of a longer list leaves the tail on it.
            #[cfg(keel_planted = "run_queue")]
            None if prev.is_some() => {}
            None => self.tail.set(prev),
        }
        node_links.prev.set(None);
        node_links.next.set(None);
        self.len.set(self.len.get() - 1);
    }

    /// Whether `node` is linked in this list (debug builds check the owner; release builds
    /// walk nothing and answer from the node's neighbours and the list's ends).
    ///
    /// # Safety
    /// `node` is valid, and if linked anywhere through these links, it is in a list of
    /// this kind.
    pub unsafe fn contains(&self, node: NonNull<T>) -> bool {
        let node_links = links(node);
        #[cfg(debug_assertions)]
        {
            node_links.owner.get() == self as *const Self as *const ()
        }
        #[cfg(not(debug_assertions))]
        {
            node_links.prev.get().is_some() || node_links.next.get().is_some() || self.head.get() == Some(node)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Kind;
    struct Node {
        value: u32,
        links: Links<Node>,
    }
    // SAFETY: `links` points at the node's own field.
    unsafe impl Link<Kind> for Node {
        fn links(this: NonNull<Self>) -> NonNull<Links<Self>> {
            // SAFETY: `this` is a valid node pointer; the field projection stays inside it.
            unsafe { NonNull::new_unchecked(&raw mut (*this.as_ptr()).links) }
        }
    }

    fn nodes(count: u32) -> std::vec::Vec<Node> {
        (0..count).map(|value| Node { value, links: Links::new() }).collect()
    }

    fn drain(list: &List<Node, Kind>) -> std::vec::Vec<u32> {
        let mut out = std::vec::Vec::new();
        while let Some(node) = list.pop_front() {
            // SAFETY: nodes outlive the list operations in these tests.
            out.push(unsafe { node.as_ref() }.value);
        }
        out
    }

    extern crate std;

    #[test]
    fn fifo_order_and_remove_from_middle() {
        let pool = nodes(5);
        let list = List::<Node, Kind>::new();
        for node in &pool {
            // SAFETY: each node is pushed once and outlives the list's use.
            unsafe { list.push_back(NonNull::from(node)) };
        }
        assert_eq!(list.len(), 5);
        // SAFETY: nodes 2, 0 and 4 are linked in `list`.
        unsafe {
            list.remove(NonNull::from(&pool[2]));
            list.remove(NonNull::from(&pool[0]));
            list.remove(NonNull::from(&pool[4]));
        }
        assert_eq!(drain(&list), [1, 3]);
        assert!(list.is_empty());
    }

    #[test]
    fn push_front_goes_before_the_oldest() {
        let pool = nodes(3);
        let list = List::<Node, Kind>::new();
        // SAFETY: each node is pushed once and outlives the list's use.
        unsafe {
            list.push_front(NonNull::from(&pool[1]));
            list.push_back(NonNull::from(&pool[2]));
            list.push_front(NonNull::from(&pool[0]));
        }
        assert_eq!(list.len(), 3);
        assert_eq!(drain(&list), [0, 1, 2]);
        // SAFETY: as above; node 1 is linked again, alone.
        unsafe { list.push_front(NonNull::from(&pool[1])) };
        // SAFETY: node 1 is linked in `list`.
        unsafe { list.remove(NonNull::from(&pool[1])) };
        assert!(list.is_empty() && list.front().is_none());
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "node pushed while linked")]
    fn list_rule_1_debug_builds_catch_a_node_in_two_lists() {
        let pool = nodes(1);
        let first = List::<Node, Kind>::new();
        let second = List::<Node, Kind>::new();
        // SAFETY: deliberately breaks list rule 1 to see the debug check fire.
        unsafe {
            first.push_back(NonNull::from(&pool[0]));
            second.push_back(NonNull::from(&pool[0]));
        }
    }
}
