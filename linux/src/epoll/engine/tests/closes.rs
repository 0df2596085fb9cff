//! Readiness rules 6-7 (`ready.rs`), revalidation rules (`revalidate.rs`) and the close
//! log (`closes.rs`): no close, by keel or behind its back, strands a waiter.

use super::ready::*;
use super::*;
use io_uring::{opcode, types};

#[test]
fn readiness_rule_6_a_close_keel_notes_renews_the_entry_for_the_number_reused() {
    let mut e = engine_with_period(NEVER);
    let (a, b) = socketpair(libc::SOCK_STREAM);
    let n = a.as_raw_fd();
    registered_and_drained(&mut e, n, &b);
    // A `File`/`Socket` dropped: noted, then closed (close-log rule 1).
    super::super::closes::note_closed(n);
    drop(a);
    let (c, d) = socketpair(libc::SOCK_STREAM);
    let c = reuse(c, n);
    write_all(&d, b"new"); // there before the receive: no edge will come
    let mut buf = [0u8; 64];
    push(&mut e, &[recv(c.as_raw_fd(), &mut buf, 1)]);
    assert_eq!(wait_ms(&mut e, 1, 2_000), vec![(1, 3, 0)], "the new socket is read, not trusted as the old");
    assert_eq!(&buf[..3], b"new");
    drop(b);
}

#[test]
fn readiness_rule_6_the_engines_close_and_sync_cancel_fd_forget_the_registration() {
    for via_sync_cancel in [false, true] {
        let mut e = engine_with_period(NEVER);
        let (a, b) = socketpair(libc::SOCK_STREAM);
        let n = std::os::fd::IntoRawFd::into_raw_fd(a);
        registered_and_drained(&mut e, n, &b);
        if via_sync_cancel {
            e.sync_cancel_fd(n, std::time::Duration::from_millis(10));
            close_behind(n); // after the cancel, as keel's close does
        } else {
            push(&mut e, &[opcode::Close::new(types::Fd(n)).build().user_data(5)]);
            assert_eq!(wait(&mut e, 1), vec![(5, 0, 0)]);
        }
        let (c, d) = socketpair(libc::SOCK_STREAM);
        let c = reuse(c, n);
        write_all(&d, b"new");
        let mut buf = [0u8; 64];
        push(&mut e, &[recv(c.as_raw_fd(), &mut buf, 1)]);
        assert_eq!(wait_ms(&mut e, 1, 2_000), vec![(1, 3, 0)], "via_sync_cancel {via_sync_cancel}");
    }
}

#[test]
fn readiness_rule_6_an_accepted_number_is_new() {
    let mut e = engine_with_period(NEVER);
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (a, b) = socketpair(libc::SOCK_STREAM);
    let n = std::os::fd::IntoRawFd::into_raw_fd(a);
    registered_and_drained(&mut e, n, &b);
    let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    close_behind(n); // not noted: only the accept's result tells the engine
    push(
        &mut e,
        &[opcode::Accept::new(types::Fd(l.as_raw_fd()), std::ptr::null_mut(), std::ptr::null_mut())
            .build()
            .user_data(1)],
    );
    let got = wait(&mut e, 1);
    assert_eq!(got, vec![(1, n, 0)], "the lowest free number: the closed one");
    // SAFETY: the accepted descriptor is ours.
    let s = unsafe { OwnedFd::from_raw_fd(n) };
    std::io::Write::write_all(&mut &client, b"hi").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let mut buf = [0u8; 64];
    push(&mut e, &[recv(s.as_raw_fd(), &mut buf, 2)]);
    assert_eq!(wait_ms(&mut e, 1, 2_000), vec![(2, 2, 0)]);
}

#[test]
fn readiness_rule_7_a_number_closed_and_reused_behind_keels_back_under_a_waiter() {
    let mut e = engine_with_period(10);
    let (a, b) = socketpair(libc::SOCK_STREAM);
    let n = std::os::fd::IntoRawFd::into_raw_fd(a);
    let mut buf = [0u8; 64];
    push(&mut e, &[recv(n, &mut buf, 1)]);
    assert_eq!(poll(&mut e), vec![]);
    close_behind(n); // the registration goes with the file
    let (c, d) = socketpair(libc::SOCK_STREAM);
    let _c = reuse(c, n);
    write_all(&d, b"new"); // the new file under the number has data: no registration reports it
    let got = wait_ms(&mut e, 1, 5_000);
    assert_eq!(got, vec![(1, 3, 0)], "revalidation found the new file and read it");
    assert_eq!(&buf[..3], b"new");
    drop(b);
}

#[test]
fn readiness_rule_7_a_number_closed_behind_keels_back_ends_its_waiter_with_ebadf() {
    let mut e = engine_with_period(10);
    let (a, _b) = socketpair(libc::SOCK_STREAM);
    let n = std::os::fd::IntoRawFd::into_raw_fd(a);
    let mut buf = [0u8; 64];
    push(&mut e, &[recv(n, &mut buf, 1)]);
    assert_eq!(poll(&mut e), vec![]);
    close_behind(n);
    assert_eq!(wait_ms(&mut e, 1, 5_000), vec![(1, -libc::EBADF, 0)]);
}

#[test]
fn readiness_rule_7_a_dup_keeps_the_file_and_its_events_under_the_closed_number() {
    let mut e = engine_with_period(NEVER);
    let (a, b) = socketpair(libc::SOCK_STREAM);
    let n = std::os::fd::IntoRawFd::into_raw_fd(a);
    // SAFETY: dup of our own descriptor.
    let dup = unsafe { OwnedFd::from_raw_fd(libc::dup(n)) };
    let mut buf = [0u8; 64];
    let mut buf2 = [0u8; 64];
    push(&mut e, &[recv(n, &mut buf, 1), recv(dup.as_raw_fd(), &mut buf2, 2)]);
    assert_eq!(poll(&mut e), vec![]);
    // The number goes; the file stays open through the dup, and so does its registration
    // under the old number: its event still wakes the waiter there, which then finds the
    // number closed.
    close_behind(n);
    write_all(&b, b"ab");
    let mut got = wait_ms(&mut e, 2, 5_000);
    got.sort();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0], (1, -libc::EBADF, 0), "{got:?}");
    assert_eq!(got[1].0, 2, "the dup's waiter reads: {got:?}");
    assert!(got[1].1 > 0, "{got:?}");
}

#[test]
fn readiness_rule_7_the_engines_close_of_one_number_leaves_its_dups_registration() {
    let mut e = engine_with_period(NEVER);
    let (a, b) = socketpair(libc::SOCK_STREAM);
    let n = std::os::fd::IntoRawFd::into_raw_fd(a);
    // SAFETY: dup of our own descriptor.
    let dup = unsafe { OwnedFd::from_raw_fd(libc::dup(n)) };
    let mut buf = [0u8; 64];
    push(&mut e, &[recv(n, &mut buf, 1)]);
    assert_eq!(poll(&mut e), vec![]);
    push(&mut e, &[opcode::AsyncCancel::new(1).build().user_data(2)]);
    assert_eq!(poll(&mut e), vec![(1, -libc::ECANCELED, 0), (2, 0, 0)]);
    push(&mut e, &[opcode::Close::new(types::Fd(n)).build().user_data(3)]);
    assert_eq!(wait(&mut e, 1), vec![(3, 0, 0)]);
    push(&mut e, &[recv(dup.as_raw_fd(), &mut buf, 4)]);
    assert_eq!(poll(&mut e), vec![]);
    write_all(&b, b"dup");
    assert_eq!(wait_ms(&mut e, 1, 2_000), vec![(4, 3, 0)]);
}

#[test]
fn revalidation_rule_2_many_idle_waiters_cost_a_few_checks_each() {
    const FDS: usize = 100;
    let mut e = engine_with_period(2);
    let pairs: Vec<_> = (0..FDS).map(|_| socketpair(libc::SOCK_STREAM)).collect();
    let mut bufs = vec![[0u8; 8]; FDS];
    for (k, ((a, _), buf)) in pairs.iter().zip(bufs.iter_mut()).enumerate() {
        push(&mut e, &[recv(a.as_raw_fd(), buf, k as u64)]);
        if e.sq_len() == e.sq_capacity() {
            assert_eq!(poll(&mut e), vec![]);
        }
    }
    assert_eq!(poll(&mut e), vec![]);
    let start = e.sweeps;
    // At least 16 sweeps (about 32 ms of 2 ms periods, longer on a loaded machine: waited
    // for by count, bounded by 10 s, rather than by a fixed time).
    for _ in 0..50 {
        assert_eq!(wait_ms(&mut e, 1, 200), vec![], "idle");
        if e.sweeps.wrapping_sub(start) >= 16 {
            break;
        }
    }
    let sweeps = e.sweeps.wrapping_sub(start);
    let ctl = e.ready.counts.ctl;
    assert!(sweeps >= 16, "sweeps ran while ops waited: {sweeps}");
    // One registration each, then checks at sweeps 2, 4, 8, 16 and every 16 after.
    let bound = FDS as u64 * (1 + 4 + u64::from(sweeps) / 16 + 1);
    assert!(ctl > FDS as u64 && ctl <= bound, "ctl {ctl}, bound {bound}, sweeps {sweeps}");
    for (_, b) in &pairs {
        write_all(b, b"go");
    }
    let got = wait_ms(&mut e, FDS, 5_000);
    assert_eq!(got.len(), FDS, "every idle waiter completes: {got:?}");
    assert!(got.iter().all(|&(_, r, _)| r == 2));
}

#[test]
fn close_log_rule_2_more_closes_than_the_log_holds_renew_every_entry() {
    let mut e = engine_with_period(NEVER);
    let (a, b) = socketpair(libc::SOCK_STREAM);
    let n = a.as_raw_fd();
    registered_and_drained(&mut e, n, &b);
    for _ in 0..=super::super::closes::LOG {
        super::super::closes::note_closed(-5); // numbers no engine knows: only the count matters
    }
    super::super::closes::note_closed(n);
    drop(a);
    let (c, d) = socketpair(libc::SOCK_STREAM);
    let c = reuse(c, n);
    write_all(&d, b"new");
    let mut buf = [0u8; 64];
    push(&mut e, &[recv(c.as_raw_fd(), &mut buf, 1)]);
    assert_eq!(wait_ms(&mut e, 1, 2_000), vec![(1, 3, 0)]);
}

#[test]
fn readiness_rule_6_the_engines_close_under_a_waiter_ends_it_with_ebadf() {
    for threads in [0, 2] {
        let mut e = engine(threads);
        e.period = NEVER * 1_000_000;
        let (a, _b) = socketpair(libc::SOCK_STREAM);
        let n = std::os::fd::IntoRawFd::into_raw_fd(a);
        let mut buf = [0u8; 64];
        push(&mut e, &[recv(n, &mut buf, 1)]);
        assert_eq!(poll(&mut e), vec![]);
        // A close with an op still on the number (keel's own closes cancel first).
        push(&mut e, &[opcode::Close::new(types::Fd(n)).build().user_data(2)]);
        let mut got = wait_ms(&mut e, 2, 5_000);
        got.sort();
        assert_eq!(got, vec![(1, -libc::EBADF, 0), (2, 0, 0)], "file_threads {threads}");
    }
}
