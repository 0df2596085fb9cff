//! The `!Send` rules of keel-linux, checked at compile time: a type that became `Send`
//! makes this test binary fail to build (kept apart from `rules.rs` so that such a failure
//! hides no other test).

use keel_linux::fs::{self, FixedBuf};
use keel_linux::net::{self, ProvidedBuf, Socket};
use keel_linux::{File, MmapStacks, RingDriver};

/// `!Send` (compile-time): only `T: !Send` makes `<T as AmbiguousIfSend<_>>` resolve to
/// one impl; for a `Send` type the two impls make the call ambiguous and the test binary
/// does not build.
trait AmbiguousIfSend<A> {
    fn check() {}
}
impl<T: ?Sized> AmbiguousIfSend<()> for T {}
struct IsSend;
impl<T: ?Sized + Send> AmbiguousIfSend<IsSend> for T {}

/// The waiting queues belong to the driver's thread: the driver and every value that
/// waits in or releases into a queue are `!Send`.
#[test]
fn waitq_rule_5_the_driver_and_the_values_that_wait_are_not_send() {
    <RingDriver as AmbiguousIfSend<_>>::check();
    <FixedBuf as AmbiguousIfSend<_>>::check();
    <fs::ClaimBuffer as AmbiguousIfSend<_>>::check();
    <ProvidedBuf as AmbiguousIfSend<_>>::check();
}

/// The provided-buffer ring belongs to the driver's thread: the driver and `ProvidedBuf`
/// are `!Send` (and so is `Multishot`, which holds results with buffers).
#[test]
fn pbuf_rule_5_the_ring_and_its_buffers_are_not_send() {
    <RingDriver as AmbiguousIfSend<_>>::check();
    <ProvidedBuf as AmbiguousIfSend<_>>::check();
    <net::Multishot as AmbiguousIfSend<_>>::check();
}

/// Everything that holds the driver's shared state is on the driver's thread: the driver
/// and every holder (`FixedBuf`, `ProvidedBuf`, `Multishot`, the kept op futures) are
/// `!Send`, and so are `File` and `Socket` (fd rule 1), whose operations it holds.
#[test]
fn shared_rule_1_the_driver_and_every_holder_of_its_shared_state_are_not_send() {
    <RingDriver as AmbiguousIfSend<_>>::check();
    <FixedBuf as AmbiguousIfSend<_>>::check();
    <ProvidedBuf as AmbiguousIfSend<_>>::check();
    <net::Multishot as AmbiguousIfSend<_>>::check();
    <File as AmbiguousIfSend<_>>::check();
    <Socket as AmbiguousIfSend<_>>::check();
}

/// Transfer rule 3: a `FixedFd` names its ring's shared state and a waiting `Receive`
/// holds it, so both are `!Send`; a `Mailbox` is the one value meant for other threads
/// (rule 7: `Send + Sync`).
#[test]
fn transfer_rule_3_fixed_fds_and_receives_are_not_send_and_a_mailbox_is_send_and_sync() {
    <keel_linux::transfer::FixedFd as AmbiguousIfSend<_>>::check();
    <keel_linux::transfer::Receive as AmbiguousIfSend<_>>::check();
    fn send_sync<T: Send + Sync>() {}
    send_sync::<keel_linux::transfer::Mailbox>();
}

/// `MmapStacks` is `!Send`: it stays on the thread whose alternate signal stack it set.
#[test]
fn stack_rule_4_mmap_stacks_are_not_send() {
    <MmapStacks as AmbiguousIfSend<_>>::check();
    let s = MmapStacks::new().expect("MmapStacks");
    assert_eq!(s.guard(), s.page_size(), "one guard page by default");
}
