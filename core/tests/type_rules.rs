//! Rules the type system keeps. Each test names its rule; a change that breaks the rule
//! (an `unsafe impl Send`, a `DerefMut`, an `Unpin` executor) makes this file fail to
//! compile, and so the test fail.

use keel_core::driver::DriverMut;
use keel_core::list::{Link, Links, List};
use keel_core::sim::SimDriver;
use keel_core::{Executor, IoStatus, NoIo};
use static_assertions::assert_not_impl_any;

/// The executor is pinned before use and stays where it is: `Executor` is `!Unpin`, and
/// its methods take `Pin<&Self>`, so the `Sched` inside never moves once a task names it.
#[test]
fn sched_rule_1_an_executor_is_not_unpin_so_its_sched_never_moves() {
    assert_not_impl_any!(Executor<NoIo>: Unpin);
    assert_not_impl_any!(Executor<SimDriver>: Unpin);
}

/// Everything but the inbox is touched only on the executor's thread: the executor is
/// neither `Send` nor `Sync`, so no other thread can reach its `Cell`s.
#[test]
fn sched_rule_2_an_executor_is_neither_send_nor_sync() {
    assert_not_impl_any!(Executor<NoIo>: Send, Sync);
    assert_not_impl_any!(Executor<SimDriver>: Send, Sync);
}

/// The inbox has a single consumer, the owning executor's thread: the inbox lives inside
/// the executor, which cannot be shared with or sent to another thread.
#[test]
fn inbox_rule_2_the_inbox_consumer_is_the_executors_own_thread() {
    assert_not_impl_any!(Executor<NoIo>: Send, Sync);
}

/// The closure lent the driver gets a `DriverMut`, which reads as `&D` only: safe code
/// can never replace the driver (`*d = other` needs `DerefMut`).
#[test]
fn driver_rule_2_a_lent_driver_reads_as_a_shared_reference_only() {
    assert_not_impl_any!(DriverMut<'static, SimDriver>: core::ops::DerefMut);
    assert_not_impl_any!(DriverMut<'static, NoIo>: core::ops::DerefMut);
}

/// Only the owning executor's thread touches a status block: `IoStatus` is neither
/// `Send` nor `Sync`.
#[test]
fn io_status_rule_1_a_status_block_stays_on_its_executors_thread() {
    assert_not_impl_any!(IoStatus: Send, Sync);
}

struct Node {
    links: Links<Node>,
}
struct Kind;
// SAFETY: `links` is the node's only `Links<Node>` for `Kind`.
unsafe impl Link<Kind> for Node {
    fn links(this: core::ptr::NonNull<Self>) -> core::ptr::NonNull<Links<Self>> {
        // SAFETY: a place projection of a valid node pointer.
        unsafe { core::ptr::NonNull::new_unchecked(&raw mut (*this.as_ptr()).links) }
    }
}

/// Lists and links are executor-local: neither is `Send` or `Sync`.
#[test]
fn list_rule_4_lists_and_links_are_neither_send_nor_sync() {
    assert_not_impl_any!(List<Node, Kind>: Send, Sync);
    assert_not_impl_any!(Links<Node>: Send, Sync);
}

/// The stack pool is executor-local (`Cell`s, no atomics): it lives in the executor,
/// which is neither `Send` nor `Sync`, so only the executor's thread reaches it.
#[test]
fn pool_rule_1_the_stack_pool_lives_in_an_executor_no_other_thread_reaches() {
    assert_not_impl_any!(Executor<NoIo, keel_core::RegionStacks>: Send, Sync);
}
