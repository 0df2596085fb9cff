//! Accepts on one listener are woken one at a time (readiness rule 10).

use super::*;
use io_uring::{opcode, types};

/// `n` ACCEPTs on `l`, user_data 1..=n.
fn accepts(e: &mut Engine, l: RawFd, n: u64) {
    let sqes: Vec<_> = (1..=n)
        .map(|k| opcode::Accept::new(types::Fd(l), core::ptr::null_mut(), core::ptr::null_mut()).build().user_data(k))
        .collect();
    push(e, &sqes);
}

/// Each accepted descriptor is closed; the user_data of each accept, sorted.
fn accepted(got: &[(u64, i32, u32)]) -> Vec<u64> {
    let mut uds: Vec<u64> = got
        .iter()
        .map(|&(ud, fd, _)| {
            assert!(fd >= 0, "{got:?}");
            // SAFETY: each accepted descriptor is ours.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
            ud
        })
        .collect();
    uds.sort();
    uds
}

/// Eight accepts wait on one listener. One connection wakes the accept that takes it and
/// the one after it (which finds `EAGAIN` and waits again), not all eight; a
/// connection taken by someone else before the engine looks wakes one accept, which
/// loses and waits again; a burst of connections behind one edge completes one accept
/// each; and every accept completes once there are connections for all.
#[test]
fn a_connection_wakes_one_accept_and_a_burst_wakes_one_per_connection() {
    let mut e = engine(0);
    // A Unix listener: a connect queues its connection before it returns.
    let dir = tempdir("accept-one");
    let addr = dir.join("l");
    let l = std::os::unix::net::UnixListener::bind(&addr).unwrap();
    let lfd = l.as_raw_fd();
    accepts(&mut e, lfd, 8);
    assert_eq!(poll(&mut e), vec![], "no connection yet");
    let mut clients = Vec::new();

    let before = e.ready.counts.woken;
    clients.push(std::os::unix::net::UnixStream::connect(&addr).unwrap());
    let got = wait(&mut e, 1);
    assert_eq!(got.len(), 1, "{got:?}");
    let mut done = accepted(&got);
    assert_eq!(poll(&mut e), vec![], "one connection, one accept");
    // The accept that took it, and the next one (the edge might have stood for more),
    // which lost: it found EAGAIN and waits again.
    let woken = e.ready.counts.woken - before;
    assert_eq!(woken, 2, "one connection woke {woken} of 8 accepts");
    assert_eq!(e.in_flight(), 7, "the loser waits again");

    // Taken by someone else before the engine looks: epoll re-checks the level, so no
    // accept completes (at most one is woken, to lose and wait again).
    clients.push(std::os::unix::net::UnixStream::connect(&addr).unwrap());
    // SAFETY: accept4 on the listener (non-blocking since the engine's accepts, net rule 3).
    let stolen = unsafe { libc::accept4(lfd, core::ptr::null_mut(), core::ptr::null_mut(), libc::SOCK_CLOEXEC) };
    assert!(stolen >= 0, "{}", std::io::Error::last_os_error());
    // SAFETY: ours.
    drop(unsafe { OwnedFd::from_raw_fd(stolen) });
    let before = e.ready.counts.woken;
    assert_eq!(poll(&mut e), vec![], "the connection was taken");
    assert!(e.ready.counts.woken - before <= 1, "the lost wake-up woke more than one accept");
    assert_eq!(e.in_flight(), 7);

    // A burst behind one edge: one accept per connection, all in the pass that sees the
    // edge (each accept that took one wakes the next).
    for _ in 0..3 {
        clients.push(std::os::unix::net::UnixStream::connect(&addr).unwrap());
    }
    let before = e.ready.counts.woken;
    done.extend(accepted(&poll(&mut e)));
    assert_eq!(done.len(), 4, "three connections, three accepts in one pass: {done:?}");
    assert_eq!(e.ready.counts.woken - before, 4, "three that took one, one that lost");
    assert_eq!(poll(&mut e), vec![]);
    assert_eq!(e.in_flight(), 4);

    // The rest: no accept stranded.
    for _ in 0..4 {
        clients.push(std::os::unix::net::UnixStream::connect(&addr).unwrap());
    }
    done.extend(accepted(&wait(&mut e, 4)));
    done.sort();
    assert_eq!(done, (1..=8).collect::<Vec<_>>(), "every accept completed once");
    assert_eq!(e.in_flight(), 0);
    drop((clients, l));
    let _ = std::fs::remove_dir_all(dir);
}
