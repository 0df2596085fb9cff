//! Transfer rules 1-2 (`transfer.rs`): the plain send and receive's own path does what the
//! general path does: the echo server's linked pair in its steady state, a failed send
//! ending its chain, and what is not plain (a link timer, `MSG_DONTWAIT`) still taking the
//! general path.

use super::ready::{NEVER, engine_with_period, recv, wait_ms};
use super::*;
use io_uring::{opcode, squeue::Flags, types};

/// The echo server's pair: a send of `len` bytes of `buf` with `MSG_WAITALL`, linked to a
/// receive into `buf`.
fn send_then_recv(fd: RawFd, buf: &mut [u8], len: u32, ud: u64) -> [squeue::Entry; 2] {
    let flags = libc::MSG_NOSIGNAL | libc::MSG_WAITALL;
    [
        opcode::Send::new(types::Fd(fd), buf.as_ptr(), len).flags(flags).build().user_data(ud).flags(Flags::IO_LINK),
        recv(fd, buf, ud + 1),
    ]
}

#[test]
fn transfer_rule_2_the_echo_pair_completes_in_chain_order_with_no_epoll_ctl_in_the_steady_state() {
    let mut e = engine_with_period(NEVER);
    let (a, b) = socketpair(libc::SOCK_STREAM);
    let mut buf = [0u8; 64];
    let mut peer = [0u8; 64];
    write_all(&b, b"ping");
    push(&mut e, &[recv(a.as_raw_fd(), &mut buf, 1)]);
    assert_eq!(wait(&mut e, 1), vec![(1, 4, 0)]);
    for round in 0..20u64 {
        let ud = 100 + 2 * round;
        push(&mut e, &send_then_recv(a.as_raw_fd(), &mut buf, 4, ud));
        assert_eq!(poll(&mut e), vec![(ud, 4, 0)], "round {round}: the send at once, the receive waits");
        // SAFETY: `peer` is writable for its length.
        assert_eq!(unsafe { libc::read(b.as_raw_fd(), peer.as_mut_ptr().cast(), 64) }, 4);
        write_all(&b, b"pong");
        assert_eq!(wait(&mut e, 1), vec![(ud + 1, 4, 0)], "round {round}");
    }
    let c = e.ready.counts;
    assert_eq!(c.ctl, 1, "one registration, then none: {c:?}");
    // The first receive of the loop tries (its descriptor not yet registered), then registers.
    assert!(c.skipped >= 19, "each later receive after a short one waits without trying: {c:?}");
}

#[test]
fn transfer_rule_2_a_failed_send_cancels_the_receive_linked_to_it() {
    let mut e = engine(0);
    let (a, b) = socketpair(libc::SOCK_STREAM);
    drop(b);
    let mut buf = [0u8; 8];
    push(&mut e, &send_then_recv(a.as_raw_fd(), &mut buf, 8, 1));
    assert_eq!(wait(&mut e, 2), vec![(1, -libc::EPIPE, 0), (2, -libc::ECANCELED, 0)]);
}

#[test]
fn transfer_rule_1_a_receive_with_a_link_timer_or_its_own_dontwait_takes_the_general_path() {
    let mut e = engine(0);
    let (a, _b) = socketpair(libc::SOCK_STREAM);
    let mut buf = [0u8; 8];
    let ts = types::Timespec::new().nsec(5_000_000);
    push(
        &mut e,
        &[recv(a.as_raw_fd(), &mut buf, 1).flags(Flags::IO_LINK), opcode::LinkTimeout::new(&ts).build().user_data(2)],
    );
    // Link rule 3: the timer's CQE, then the op it cancelled.
    assert_eq!(wait_ms(&mut e, 2, 2_000), vec![(2, -libc::ETIME, 0), (1, -libc::ECANCELED, 0)]);
    let own = opcode::Recv::new(types::Fd(a.as_raw_fd()), buf.as_mut_ptr(), 8).flags(libc::MSG_DONTWAIT);
    push(&mut e, &[own.build().user_data(3)]);
    assert_eq!(poll(&mut e), vec![(3, -libc::EAGAIN, 0)], "net rule 2: the caller's EAGAIN");
}
