//! Readiness rules 1-4 and 9 (`ready.rs`): the steady state makes no `epoll_ctl` and no
//! attempt that would only say `EAGAIN`, and what readiness is known is never wrong for
//! long enough to strand a waiter (an end, a peek, a burst, a poll). Closes: `closes.rs`.

use super::*;
use io_uring::{opcode, types};

/// Enters until `n` CQEs came or `ms` passed; the CQEs.
pub(super) fn wait_ms(e: &mut Engine, n: usize, ms: u64) -> Vec<(u64, i32, u32)> {
    let until = super::super::timers::now() + ms * 1_000_000;
    let mut got = Vec::new();
    while got.len() < n && super::super::timers::now() < until {
        e.enter((n - got.len()) as u32, Some(keel_core::Instant::from_nanos(until))).expect("enter");
        got.extend(take(e));
    }
    got
}

/// An engine whose revalidation period is `ms` milliseconds.
pub(super) fn engine_with_period(ms: u64) -> Engine {
    let mut e = engine(0);
    e.period = ms * 1_000_000;
    e
}

/// An hour: no revalidation within a test, so what completes did so without it.
pub(super) const NEVER: u64 = 3_600_000;

pub(super) fn recv(fd: RawFd, buf: &mut [u8], ud: u64) -> squeue::Entry {
    opcode::Recv::new(types::Fd(fd), buf.as_mut_ptr(), buf.len() as u32).build().user_data(ud)
}

/// Closes `fd` without telling keel (no close-log note): behind keel's back.
pub(super) fn close_behind(fd: RawFd) {
    // SAFETY: the test owns `fd` (its OwnedFd was turned into the raw number).
    assert_eq!(unsafe { libc::close(fd) }, 0);
}

/// Puts `file` under the number `at` (closed before), as a reuse of the number.
pub(super) fn reuse(file: OwnedFd, at: RawFd) -> OwnedFd {
    if file.as_raw_fd() == at {
        return file; // the kernel gave the lowest free number: the closed one
    }
    // SAFETY: dup3 onto a number the test owns (closed or about to be replaced).
    let r = unsafe { libc::dup3(file.as_raw_fd(), at, libc::O_CLOEXEC) };
    assert_eq!(r, at);
    // SAFETY: dup3 made `at` a descriptor of its own.
    unsafe { OwnedFd::from_raw_fd(at) }
}

#[test]
fn readiness_rule_3_the_steady_state_makes_no_epoll_ctl_and_no_eagain_attempt() {
    let mut e = engine_with_period(NEVER);
    let (a, b) = socketpair(libc::SOCK_STREAM);
    let mut buf = [0u8; 64];
    let mut reply = [0u8; 64];
    for round in 0..50u64 {
        // The echo server's shape: a receive waiting, then a message, then the reply.
        push(&mut e, &[recv(a.as_raw_fd(), &mut buf, round)]);
        assert_eq!(poll(&mut e), vec![], "round {round}: nothing to read yet");
        write_all(&b, b"hello");
        assert_eq!(wait(&mut e, 1), vec![(round, 5, 0)]);
        push(&mut e, &[opcode::Send::new(types::Fd(a.as_raw_fd()), buf.as_ptr(), 5).build().user_data(1000)]);
        assert_eq!(wait(&mut e, 1), vec![(1000, 5, 0)]);
        // SAFETY: `reply` is writable for its length.
        assert_eq!(unsafe { libc::read(b.as_raw_fd(), reply.as_mut_ptr().cast(), 64) }, 5);
    }
    let c = e.ready.counts;
    assert_eq!(c.ctl, 1, "one registration, then none: {c:?}");
    assert!(c.skipped >= 49, "each receive after a short read waits without trying: {c:?}");
}

#[test]
fn readiness_rule_3_data_that_came_before_the_receive_is_read_without_a_new_edge() {
    let mut e = engine_with_period(NEVER);
    let (a, b) = socketpair(libc::SOCK_STREAM);
    let mut buf = [0u8; 64];
    push(&mut e, &[recv(a.as_raw_fd(), &mut buf, 1)]);
    assert_eq!(poll(&mut e), vec![]);
    write_all(&b, b"one");
    assert_eq!(wait(&mut e, 1), vec![(1, 3, 0)]); // short: in is known not ready
    write_all(&b, b"two"); // its edge is not yet taken when the next receive starts
    push(&mut e, &[recv(a.as_raw_fd(), &mut buf, 2)]);
    assert_eq!(wait_ms(&mut e, 1, 2_000), vec![(2, 3, 0)]);
    assert_eq!(&buf[..3], b"two");
}

#[test]
fn readiness_rule_2_an_end_of_stream_after_a_short_read_is_not_missed() {
    let mut e = engine_with_period(NEVER);
    let (a, b) = socketpair(libc::SOCK_STREAM);
    let mut buf = [0u8; 64];
    push(&mut e, &[recv(a.as_raw_fd(), &mut buf, 1)]);
    assert_eq!(poll(&mut e), vec![]);
    write_all(&b, b"last");
    // SAFETY: shutdown of our own socket.
    assert_eq!(unsafe { libc::shutdown(b.as_raw_fd(), libc::SHUT_WR) }, 0);
    std::thread::sleep(std::time::Duration::from_millis(5)); // both edges before one wait
    assert_eq!(wait(&mut e, 1), vec![(1, 4, 0)]);
    // The end came with the data's event: no edge follows it, so in must stay maybe ready.
    push(&mut e, &[recv(a.as_raw_fd(), &mut buf, 2)]);
    assert_eq!(wait_ms(&mut e, 1, 2_000), vec![(2, 0, 0)], "end of stream, at once");
}

#[test]
fn readiness_rule_4_a_multishot_accept_takes_a_backlog_longer_than_its_burst() {
    let mut e = engine_with_period(NEVER);
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    // Registered first (a one-shot accept that waits and is then cancelled)...
    push(
        &mut e,
        &[opcode::Accept::new(types::Fd(l.as_raw_fd()), std::ptr::null_mut(), std::ptr::null_mut())
            .build()
            .user_data(9)],
    );
    assert_eq!(poll(&mut e), vec![]);
    push(&mut e, &[opcode::AsyncCancel::new(9).build().user_data(10)]);
    assert_eq!(poll(&mut e), vec![(9, -libc::ECANCELED, 0), (10, 0, 0)]);
    // ...then a backlog of 40, more than two bursts, before the multishot accept starts.
    let n = 2 * super::super::perform_net::MULTI_BURST as usize + 8;
    let clients: Vec<_> = (0..n).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(std::time::Duration::from_millis(20));
    push(&mut e, &[opcode::AcceptMulti::new(types::Fd(l.as_raw_fd())).flags(libc::SOCK_CLOEXEC).build().user_data(1)]);
    let got = wait_ms(&mut e, n, 5_000);
    assert_eq!(got.len(), n, "every connection of the backlog, with no new edge: {got:?}");
    for &(_, fd, _) in &got {
        assert!(fd >= 0, "{got:?}");
        // SAFETY: each accepted descriptor is ours.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    push(&mut e, &[opcode::AsyncCancel::new(1).build().user_data(2)]);
    assert_eq!(poll(&mut e), vec![(1, -libc::ECANCELED, 0), (2, 0, 0)]);
    drop(clients);
}

/// Leaves `fd` registered with in known not ready (one short receive after a wait).
pub(super) fn registered_and_drained(e: &mut Engine, fd: RawFd, peer: &OwnedFd) {
    let mut buf = [0u8; 64];
    push(e, &[recv(fd, &mut buf, 77)]);
    assert_eq!(poll(e), vec![]);
    write_all(peer, b"x");
    assert_eq!(wait(e, 1), vec![(77, 1, 0)]);
    let k = fd as usize;
    assert!(e.ready.fds[k].registered && e.ready.must_wait(fd, super::super::ready::IN));
}

#[test]
fn readiness_rule_1_a_poll_for_a_normal_form_alone_is_woken_by_the_registration() {
    let mut e = engine_with_period(NEVER);
    let (a, b) = socketpair(libc::SOCK_STREAM);
    registered_and_drained(&mut e, a.as_raw_fd(), &b);
    push(&mut e, &[opcode::PollAdd::new(types::Fd(a.as_raw_fd()), libc::POLLRDNORM as u32).build().user_data(1)]);
    assert_eq!(poll(&mut e), vec![]);
    write_all(&b, b"x");
    let got = wait_ms(&mut e, 1, 2_000);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].1 & libc::POLLRDNORM as i32 != 0, "{got:?}");
}

#[test]
fn readiness_rule_2_a_short_peek_leaves_the_data_maybe_ready() {
    let mut e = engine_with_period(NEVER);
    let (a, b) = socketpair(libc::SOCK_STREAM);
    registered_and_drained(&mut e, a.as_raw_fd(), &b);
    write_all(&b, b"peek");
    let mut buf = [0u8; 64];
    let peek = opcode::Recv::new(types::Fd(a.as_raw_fd()), buf.as_mut_ptr(), 64).flags(libc::MSG_PEEK);
    push(&mut e, &[peek.build().user_data(1)]);
    assert_eq!(wait_ms(&mut e, 1, 2_000), vec![(1, 4, 0)]);
    push(&mut e, &[recv(a.as_raw_fd(), &mut buf, 2)]);
    assert_eq!(wait_ms(&mut e, 1, 2_000), vec![(2, 4, 0)], "the peeked data is still there to read");
}

#[test]
fn readiness_rule_9_a_poll_rechecks_a_registration_it_finds_so_a_reused_number_is_not_trusted() {
    let mut e = engine_with_period(NEVER);
    let (a, b) = socketpair(libc::SOCK_STREAM);
    let n = std::os::fd::IntoRawFd::into_raw_fd(a);
    let poll_in = |fd: RawFd, ud: u64| opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32).build().user_data(ud);
    push(&mut e, &[poll_in(n, 1)]);
    assert_eq!(poll(&mut e), vec![]);
    write_all(&b, b"x");
    assert_eq!(wait(&mut e, 1).len(), 1);
    assert!(e.ready.is_registered(n));
    // The caller's descriptor goes (keel never owned it) and its number comes back.
    close_behind(n);
    let (c, d) = socketpair(libc::SOCK_STREAM);
    let _c = reuse(c, n);
    push(&mut e, &[poll_in(n, 2)]);
    assert_eq!(poll(&mut e), vec![]);
    write_all(&d, b"y");
    let got = wait_ms(&mut e, 1, 2_000);
    assert_eq!(got.len(), 1, "the new file is registered at its first wait: {got:?}");
    assert!(got[0].0 == 2 && got[0].1 & libc::POLLIN as i32 != 0, "{got:?}");
}

#[test]
fn readiness_rule_2_a_stale_end_from_an_old_file_does_not_keep_a_new_one_busy() {
    let mut e = engine_with_period(10);
    let (a, b) = socketpair(libc::SOCK_STREAM);
    let n = std::os::fd::IntoRawFd::into_raw_fd(a);
    registered_and_drained(&mut e, n, &b);
    // SAFETY: dup of our own descriptor: the old file outlives its number.
    let _dup = unsafe { OwnedFd::from_raw_fd(libc::dup(n)) };
    close_behind(n);
    let (c, d) = socketpair(libc::SOCK_STREAM);
    let _c = reuse(c, n);
    let mut buf = [0u8; 64];
    push(&mut e, &[recv(n, &mut buf, 1)]);
    assert_eq!(poll(&mut e), vec![]);
    drop(b); // the old file's hang-up reaches the number through its stale registration
    for _ in 0..3 {
        assert_eq!(poll(&mut e), vec![]);
        assert!(!e.ready.any_pending(), "an EAGAIN ends the stale end: no retry every pass");
    }
    write_all(&d, b"new");
    assert_eq!(wait_ms(&mut e, 1, 5_000), vec![(1, 3, 0)], "revalidation registers the new file");
}
