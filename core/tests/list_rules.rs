//! The intrusive list's rules (`list.rs`), through its public API. Every check here reads
//! the debug owner record, so a release build (`make test-valgrind`) has none of them.
#![cfg(debug_assertions)]

use core::ptr::NonNull;
use keel_core::list::{Link, Links, List};

struct Kind;
struct Node {
    value: u32,
    links: Links<Node>,
}
// SAFETY: `links` points at the node's own field, used for `Kind` lists only.
unsafe impl Link<Kind> for Node {
    fn links(this: NonNull<Self>) -> NonNull<Links<Self>> {
        // SAFETY: `this` is a valid node pointer; the field projection stays inside it.
        unsafe { NonNull::new_unchecked(&raw mut (*this.as_ptr()).links) }
    }
}

fn nodes(n: u32) -> Vec<Node> {
    (0..n).map(|value| Node { value, links: Links::new() }).collect()
}

/// A node is in at most one list through one `Links` field: debug builds record the
/// owning list in the node, so pushing a linked node onto a second list panics.
#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "node pushed while linked")]
fn list_rule_1_debug_builds_catch_a_node_pushed_onto_a_second_list() {
    let ns = nodes(1);
    let a = List::<Node, Kind>::new();
    let b = List::<Node, Kind>::new();
    // SAFETY: deliberately breaks list rule 1 to see the debug check fire; the nodes
    // outlive both lists.
    unsafe {
        a.push_back(NonNull::from(&ns[0]));
        b.push_back(NonNull::from(&ns[0]));
    }
}

/// The debug owner check answers `contains` per list: a node linked in `a` is not in
/// `b`, and once removed from `a` it may go into `b` (one list at a time).
#[test]
#[cfg(debug_assertions)] // `contains` answers per list only with the debug owner check
fn list_rule_1_a_node_moves_to_another_list_only_once_removed() {
    let ns = nodes(3);
    let a = List::<Node, Kind>::new();
    let b = List::<Node, Kind>::new();
    // SAFETY: each node is in one list at a time and outlives both lists' use.
    unsafe {
        for n in &ns {
            a.push_back(NonNull::from(n));
        }
        assert!(a.contains(NonNull::from(&ns[1])));
        assert!(!b.contains(NonNull::from(&ns[1])));
        a.remove(NonNull::from(&ns[1]));
        b.push_back(NonNull::from(&ns[1]));
        assert!(b.contains(NonNull::from(&ns[1])));
    }
    let drain = |l: &List<Node, Kind>| {
        let mut out = Vec::new();
        while let Some(n) = l.pop_front() {
            // SAFETY: the nodes outlive the lists.
            out.push(unsafe { n.as_ref() }.value);
        }
        out
    };
    assert_eq!(drain(&a), [0, 2]);
    assert_eq!(drain(&b), [1]);
}
