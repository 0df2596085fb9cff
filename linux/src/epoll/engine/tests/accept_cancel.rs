//! Readiness rule 10 with cancels: the oldest of several accepts (the one an edge would
//! wake) cancelled in the enter that sees the connection, or right after it was woken and
//! lost; the connection goes to another accept, never to none.

use super::*;
use io_uring::{opcode, types};

fn listener(name: &str) -> (std::os::unix::net::UnixListener, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempdir(name);
    let addr = dir.join("l");
    (std::os::unix::net::UnixListener::bind(&addr).unwrap(), addr, dir)
}

fn accept(l: RawFd, ud: u64) -> squeue::Entry {
    opcode::Accept::new(types::Fd(l), core::ptr::null_mut(), core::ptr::null_mut()).build().user_data(ud)
}

fn cancel(ud: u64, me: u64) -> squeue::Entry {
    opcode::AsyncCancel::new(ud).build().user_data(me)
}

/// Closes each accepted descriptor in `got`.
fn close_accepted(got: &[(u64, i32, u32)], accepts: &[u64]) {
    for &(ud, res, _) in got {
        if accepts.contains(&ud) && res >= 0 {
            // SAFETY: an accepted descriptor, ours.
            drop(unsafe { OwnedFd::from_raw_fd(res) });
        }
    }
}

#[test]
fn readiness_rule_10_the_oldest_accept_cancelled_as_a_connection_arrives_leaves_it_to_the_next() {
    let mut e = engine(0);
    let (l, addr, dir) = listener("accept-cancel-oldest");
    push(&mut e, &[accept(l.as_raw_fd(), 1), accept(l.as_raw_fd(), 2), accept(l.as_raw_fd(), 3)]);
    assert_eq!(poll(&mut e), vec![]);
    let _c = std::os::unix::net::UnixStream::connect(&addr).unwrap();
    // The cancel of the oldest goes in with the enter that sees the connection's edge.
    // Either the cancel came first (accept 1 ends ECANCELED, the next oldest takes the
    // connection) or the edge did (accept 1 took it; the cancel finds nothing: ENOENT),
    // as on io_uring, whose accept may take a connection before a cancel is submitted.
    // Never both, never neither.
    push(&mut e, &[cancel(1, 100)]);
    let mut got = wait(&mut e, 2);
    got.extend(poll(&mut e));
    got.sort();
    close_accepted(&got, &[1, 2, 3]);
    let took: Vec<u64> = got.iter().filter(|&&(ud, res, _)| ud <= 3 && res >= 0).map(|g| g.0).collect();
    let waiting = match got.as_slice() {
        [(1, r1, _), (2, r2, _), (100, 0, _)] if *r1 == -libc::ECANCELED && *r2 >= 0 => 3,
        [(1, r1, _), (100, r, _)] if *r1 >= 0 && *r == -libc::ENOENT => 2,
        _ => panic!("one connection, one accept, the cancel's own result: {got:?}"),
    };
    assert_eq!(took.len(), 1, "{got:?}");
    assert_eq!(e.in_flight(), if waiting == 3 { 1 } else { 2 }, "the others still wait: {got:?}");
    // Nothing stranded: as many connections as accepts left reach each of them.
    let left = e.in_flight();
    let _more: Vec<_> = (0..left).map(|_| std::os::unix::net::UnixStream::connect(&addr).unwrap()).collect();
    let got = wait(&mut e, left);
    close_accepted(&got, &[2, 3]);
    assert!(got.len() == left && got.iter().all(|&(ud, res, _)| ud >= 2 && res >= 0), "{got:?}");
    assert_eq!(e.in_flight(), 0);
    drop(l);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn readiness_rule_10_an_accept_that_lost_and_is_cancelled_strands_no_later_connection() {
    let mut e = engine(0);
    let (l, addr, dir) = listener("accept-cancel-loser");
    push(&mut e, &[accept(l.as_raw_fd(), 1), accept(l.as_raw_fd(), 2), accept(l.as_raw_fd(), 3)]);
    assert_eq!(poll(&mut e), vec![]);
    // One connection: accept 1 takes it, accept 2 is woken next, finds EAGAIN and waits
    // again at the back; cancel it then.
    let _c = std::os::unix::net::UnixStream::connect(&addr).unwrap();
    let got = wait(&mut e, 1);
    close_accepted(&got, &[1]);
    assert!(got.len() == 1 && got[0].0 == 1 && got[0].1 >= 0, "{got:?}");
    push(&mut e, &[cancel(2, 100)]);
    let mut got = poll(&mut e);
    got.sort();
    assert_eq!(got, vec![(2, -libc::ECANCELED, 0), (100, 0, 0)]);
    // Two connections behind one edge: the one accept left takes one; the other waits in
    // the backlog for the next accept, which takes it at once.
    let _d = std::os::unix::net::UnixStream::connect(&addr).unwrap();
    let _f = std::os::unix::net::UnixStream::connect(&addr).unwrap();
    let got = wait(&mut e, 1);
    close_accepted(&got, &[3]);
    assert!(got.len() == 1 && got[0].0 == 3 && got[0].1 >= 0, "{got:?}");
    push(&mut e, &[accept(l.as_raw_fd(), 4)]);
    let got = wait(&mut e, 1);
    close_accepted(&got, &[4]);
    assert!(got.len() == 1 && got[0].0 == 4 && got[0].1 >= 0, "the backlog's connection: {got:?}");
    assert_eq!(e.in_flight(), 0);
    drop(l);
    let _ = std::fs::remove_dir_all(dir);
}
