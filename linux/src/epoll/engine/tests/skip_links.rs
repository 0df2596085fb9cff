//! `IOSQE_CQE_SKIP_SUCCESS` in chains, against the kernel's own ring (where this kernel
//! has one): a failed op that skips its success posts its CQE, and the members its failure
//! cancels post none (`req_set_fail` sets `REQ_F_SKIP_LINK_CQES`, `io_fail_links`); a
//! successful one posts nothing and its successor runs (link rule 1). liburing's
//! `test/skip-cqe.c` checks the same (`test_link_fail`).

use super::*;
use io_uring::{IoUring, opcode, squeue::Flags, types};

/// The CQEs of `sqes` on the kernel's ring (`None` without io_uring here), in order,
/// after waiting for `n`, plus whatever else came within 50 ms.
fn on_kernel(sqes: &[squeue::Entry], n: usize) -> Option<Vec<(u64, i32, u32)>> {
    let mut ring = IoUring::new(32).ok()?;
    if !ring.params().is_feature_skip_cqe_on_success() {
        return None;
    }
    for s in sqes {
        // SAFETY: every test keeps what its SQEs name alive until it has their CQEs.
        unsafe { ring.submission().push(s).expect("SQ room") };
    }
    // Bounded: a test that expects more than the kernel posts fails, it does not hang.
    let ts = types::Timespec::new().sec(10);
    let args = types::SubmitArgs::new().timespec(&ts);
    match ring.submitter().submit_with_args(n, &args) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
        Err(e) => panic!("enter: {e}"),
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    ring.submit().expect("enter");
    Some(ring.completion().map(|c| (c.user_data(), c.result(), c.flags())).collect())
}

/// The same on the engine.
fn on_engine(sqes: &[squeue::Entry], n: usize) -> Vec<(u64, i32, u32)> {
    let mut e = engine(0);
    push(&mut e, sqes);
    let mut got = wait(&mut e, n);
    std::thread::sleep(std::time::Duration::from_millis(50));
    got.extend(poll(&mut e));
    got
}

/// Both backends give `want` for `sqes` (the kernel's part only where it can pair).
fn both(sqes: impl Fn() -> Vec<squeue::Entry>, want: &[(u64, i32, u32)]) {
    if let Some(k) = on_kernel(&sqes(), want.len()) {
        assert_eq!(k, want, "the kernel's ring (what the engine emulates)");
    }
    assert_eq!(on_engine(&sqes(), want.len()), want, "the engine");
}

#[test]
fn a_failed_skip_success_send_posts_its_cqe_and_none_for_the_receive_it_cancels() {
    let (a, b) = socketpair(libc::SOCK_STREAM);
    drop(b);
    let mut buf = [0u8; 8];
    let fd = a.as_raw_fd();
    let p = buf.as_mut_ptr();
    let flags = libc::MSG_NOSIGNAL | libc::MSG_WAITALL;
    both(
        || {
            vec![
                opcode::Send::new(types::Fd(fd), p, 8)
                    .flags(flags)
                    .build()
                    .user_data(1)
                    .flags(Flags::IO_LINK | Flags::SKIP_SUCCESS),
                opcode::Recv::new(types::Fd(fd), p, 8).build().user_data(2),
            ]
        },
        &[(1, -libc::EPIPE, 0)],
    );
}

#[test]
fn a_failed_skip_success_op_mid_chain_silences_every_later_member() {
    both(
        || {
            vec![
                opcode::Nop::new().build().user_data(1).flags(Flags::IO_LINK | Flags::SKIP_SUCCESS),
                opcode::Close::new(types::Fd(-1)).build().user_data(2).flags(Flags::IO_LINK | Flags::SKIP_SUCCESS),
                opcode::Nop::new().build().user_data(3).flags(Flags::IO_LINK),
                opcode::Nop::new().build().user_data(4),
            ]
        },
        &[(2, -libc::EBADF, 0)],
    );
}

#[test]
fn a_failed_op_without_skip_success_still_posts_its_cancelled_members() {
    both(
        || {
            vec![
                opcode::Close::new(types::Fd(-1)).build().user_data(1).flags(Flags::IO_LINK),
                opcode::Nop::new().build().user_data(2).flags(Flags::IO_LINK | Flags::SKIP_SUCCESS),
                opcode::Nop::new().build().user_data(3),
            ]
        },
        &[(1, -libc::EBADF, 0), (2, -libc::ECANCELED, 0), (3, -libc::ECANCELED, 0)],
    );
}

#[test]
fn a_short_waitall_skip_success_receive_posts_its_count_and_none_for_its_successor() {
    // A receive with MSG_WAITALL on a stream whose peer sent 3 of 8 bytes and closed: short,
    // so failed (io_recv's min_ret), and its successor's CQE is skipped. Each backend gets
    // its own socketpair (the bytes are consumed).
    let pairs: Vec<_> = (0..2)
        .map(|_| {
            let (a, b) = socketpair(libc::SOCK_STREAM);
            write_all(&b, b"abc");
            a
        })
        .collect();
    let mut bufs = [[0u8; 8]; 2];
    let sqes = |k: usize, buf: *mut u8| {
        vec![
            opcode::Recv::new(types::Fd(pairs[k].as_raw_fd()), buf, 8)
                .flags(libc::MSG_WAITALL)
                .build()
                .user_data(1)
                .flags(Flags::IO_LINK | Flags::SKIP_SUCCESS),
            opcode::Nop::new().build().user_data(2),
        ]
    };
    let [k, e] = &mut bufs;
    if let Some(got) = on_kernel(&sqes(0, k.as_mut_ptr()), 1) {
        assert_eq!(got, vec![(1, 3, 0)], "the kernel's ring");
    }
    assert_eq!(on_engine(&sqes(1, e.as_mut_ptr()), 1), vec![(1, 3, 0)], "the engine");
    assert_eq!(&e[..3], b"abc");
}

#[test]
fn a_short_skip_success_read_posts_its_count() {
    // A read of 8 bytes from a pipe holding 3 whose writer is gone: short, so failed.
    let pipes: Vec<_> = (0..2)
        .map(|_| {
            let (r, w) = pipe();
            write_all(&w, b"xyz");
            r
        })
        .collect();
    let mut bufs = [[0u8; 8]; 2];
    let sqes = |k: usize, buf: *mut u8| {
        vec![
            opcode::Read::new(types::Fd(pipes[k].as_raw_fd()), buf, 8)
                .build()
                .user_data(1)
                .flags(Flags::IO_LINK | Flags::SKIP_SUCCESS),
            opcode::Nop::new().build().user_data(2),
        ]
    };
    let [k, e] = &mut bufs;
    if let Some(got) = on_kernel(&sqes(0, k.as_mut_ptr()), 1) {
        assert_eq!(got, vec![(1, 3, 0)], "the kernel's ring");
    }
    assert_eq!(on_engine(&sqes(1, e.as_mut_ptr()), 1), vec![(1, 3, 0)], "the engine");
}

#[test]
fn a_whole_skip_success_chain_posts_only_its_last_cqe() {
    let (a, b) = socketpair(libc::SOCK_STREAM);
    let fd = a.as_raw_fd();
    let msg = *b"12345678";
    let mut peer = [0u8; 16];
    let pfd = b.as_raw_fd();
    let pp = peer.as_mut_ptr();
    let sqes = || {
        vec![
            opcode::Send::new(types::Fd(fd), msg.as_ptr(), 8)
                .flags(libc::MSG_WAITALL)
                .build()
                .user_data(1)
                .flags(Flags::IO_LINK | Flags::SKIP_SUCCESS),
            opcode::Recv::new(types::Fd(pfd), pp, 8)
                .flags(libc::MSG_WAITALL)
                .build()
                .user_data(2)
                .flags(Flags::IO_LINK | Flags::SKIP_SUCCESS),
            opcode::Nop::new().build().user_data(3),
        ]
    };
    both(sqes, &[(3, 0, 0)]);
    assert_eq!(&peer[..8], &msg);
}

#[test]
fn a_failed_skip_success_hard_link_still_starts_its_successor() {
    both(
        || {
            vec![
                opcode::Close::new(types::Fd(-1)).build().user_data(1).flags(Flags::IO_HARDLINK | Flags::SKIP_SUCCESS),
                opcode::Nop::new().build().user_data(2),
            ]
        },
        &[(1, -libc::EBADF, 0), (2, 0, 0)],
    );
}

/// liburing's `test_ltimeout_fire`: a read that blocks, skipping its success, with a link
/// timer (which skips its own, or not).
fn ltimeout_fire(skip_tout: bool, want: &[(u64, i32, u32)]) {
    let (r, _w) = pipe();
    let fd = r.as_raw_fd();
    let mut buf = [0u8; 1];
    let p = buf.as_mut_ptr();
    let ts = ms(5);
    let tsp: *const types::Timespec = &*ts;
    let tflags = if skip_tout { Flags::SKIP_SUCCESS } else { Flags::empty() };
    both(
        || {
            vec![
                opcode::Read::new(types::Fd(fd), p, 1).build().user_data(1).flags(Flags::IO_LINK | Flags::SKIP_SUCCESS),
                // SAFETY: `ts` outlives both backends' runs.
                opcode::LinkTimeout::new(unsafe { &*tsp }).build().user_data(2).flags(tflags),
            ]
        },
        want,
    );
}

#[test]
fn a_link_timer_firing_on_a_skip_success_read_posts_both() {
    ltimeout_fire(false, &[(2, -libc::ETIME, 0), (1, -libc::ECANCELED, 0)]);
}

#[test]
fn a_zero_length_skip_success_transfer_is_a_success() {
    let (a, _b) = socketpair(libc::SOCK_STREAM);
    let fa = a.as_raw_fd();
    let mut buf = [0u8; 1];
    let p = buf.as_mut_ptr();
    both(
        || {
            vec![
                opcode::Send::new(types::Fd(fa), p, 0)
                    .flags(libc::MSG_WAITALL)
                    .build()
                    .user_data(1)
                    .flags(Flags::IO_LINK | Flags::SKIP_SUCCESS),
                opcode::Nop::new().build().user_data(2),
            ]
        },
        &[(2, 0, 0)],
    );
}

/// A TCP connection on 127.0.0.1: (ours, the peer's).
fn tcp() -> (std::net::TcpStream, std::net::TcpStream) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    (a, l.accept().unwrap().0)
}

/// The peer sends `data` and resets the connection (`SO_LINGER` 0).
fn reset_after(peer: std::net::TcpStream, data: &[u8]) {
    use std::io::Write;
    (&peer).write_all(data).unwrap();
    let lg = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: `lg` is a linger of its size.
    let r = unsafe {
        libc::setsockopt(
            peer.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&lg as *const libc::linger).cast(),
            core::mem::size_of::<libc::linger>() as u32,
        )
    };
    assert_eq!(r, 0);
    drop(peer);
    std::thread::sleep(std::time::Duration::from_millis(20));
}

#[test]
fn a_waitall_receive_cut_by_a_reset_posts_what_it_got_and_fails_its_chain() {
    // Kernel's io_recv: a short MSG_WAITALL receive ended by an error returns the bytes it
    // moved (`done_io`) and fails the request: its successor is cancelled.
    let mut got = Vec::new();
    for kernel in [true, false] {
        let (a, peer) = tcp();
        reset_after(peer, b"abc");
        let mut buf = [0u8; 8];
        let sqes = [
            opcode::Recv::new(types::Fd(a.as_raw_fd()), buf.as_mut_ptr(), 8)
                .flags(libc::MSG_WAITALL)
                .build()
                .user_data(1)
                .flags(Flags::IO_LINK),
            opcode::Nop::new().build().user_data(2),
        ];
        if kernel {
            match on_kernel(&sqes, 2) {
                Some(k) => got.push(k),
                None => continue,
            }
        } else {
            got.push(on_engine(&sqes, 2));
        }
        assert_eq!(&buf[..3], b"abc");
    }
    for g in &got {
        assert_eq!(g, &got[got.len() - 1], "kernel and engine agree: {got:?}");
    }
    let engine = &got[got.len() - 1];
    assert!(
        engine == &[(1, 3, 0), (2, -libc::ECANCELED, 0)]
            || engine == &[(1, -libc::ECONNRESET, 0), (2, -libc::ECANCELED, 0)],
        "{engine:?}"
    );
}

#[test]
fn a_send_to_a_reset_connection_fails_its_chain() {
    let mut got = Vec::new();
    for kernel in [true, false] {
        let (a, peer) = tcp();
        reset_after(peer, b"");
        let buf = [7u8; 8];
        let sqes = [
            opcode::Send::new(types::Fd(a.as_raw_fd()), buf.as_ptr(), 8)
                .flags(libc::MSG_WAITALL | libc::MSG_NOSIGNAL)
                .build()
                .user_data(1)
                .flags(Flags::IO_LINK | Flags::SKIP_SUCCESS),
            opcode::Nop::new().build().user_data(2),
        ];
        if kernel {
            match on_kernel(&sqes, 1) {
                Some(k) => got.push(k),
                None => continue,
            }
        } else {
            got.push(on_engine(&sqes, 1));
        }
    }
    let engine = &got[got.len() - 1];
    assert_eq!(engine, &got[0], "kernel and engine agree: {got:?}");
    assert_eq!(engine.len(), 1, "the send's error alone: {engine:?}");
    assert!(engine[0].0 == 1 && engine[0].1 < 0, "{engine:?}");
}

#[test]
fn a_skip_success_timeout_that_fires_posts_its_etime_unless_etime_counts_as_success() {
    let ts = ms(1);
    let tsp: *const types::Timespec = &*ts;
    for etime_success in [false, true] {
        let sqes = || {
            let t = opcode::Timeout::new(tsp);
            let t = if etime_success { t.flags(types::TimeoutFlags::ETIME_SUCCESS) } else { t };
            vec![
                t.build().user_data(1).flags(Flags::IO_LINK | Flags::SKIP_SUCCESS),
                opcode::Nop::new().build().user_data(2),
            ]
        };
        if etime_success {
            both(sqes, &[(2, 0, 0)]);
        } else {
            both(sqes, &[(1, -libc::ETIME, 0)]);
        }
    }
}

/// A bind whose `rw_flags` the kernel's prep refuses (start rule 5, prep rule 3).
fn refused_bind(sin: &libc::sockaddr_in) -> squeue::Entry {
    let mut e = opcode::Bind::new(types::Fd(-1), (sin as *const libc::sockaddr_in).cast(), 16).build();
    super::super::sqe::RawSqe::view_mut(&mut e).op_flags = 1;
    e
}

fn sin() -> libc::sockaddr_in {
    // SAFETY: all-zero is a valid sockaddr_in.
    unsafe { core::mem::zeroed() }
}

#[test]
fn start_rule_5_a_chain_with_a_refused_member_fails_whole_in_chain_order() {
    let a = sin();
    let nop = || opcode::Nop::new().build();
    both(
        || {
            vec![
                nop().flags(Flags::IO_LINK).user_data(1),
                refused_bind(&a).flags(Flags::IO_LINK).user_data(2),
                nop().user_data(3),
            ]
        },
        &[(1, -libc::ECANCELED, 0), (2, -libc::EINVAL, 0), (3, -libc::ECANCELED, 0)],
    );
}

#[test]
fn start_rule_5_a_refused_chain_fails_its_link_timer_and_hard_links_too() {
    let a = sin();
    let ts = types::Timespec::new().sec(10);
    both(
        || {
            vec![
                opcode::Nop::new().build().flags(Flags::IO_HARDLINK).user_data(1),
                opcode::LinkTimeout::new(&ts).build().flags(Flags::IO_LINK).user_data(2),
                refused_bind(&a).user_data(3),
            ]
        },
        &[(1, -libc::ECANCELED, 0), (2, -libc::ECANCELED, 0), (3, -libc::EINVAL, 0)],
    );
}

#[test]
fn start_rule_5_a_refused_chain_whose_head_skips_success_silences_the_rest() {
    let a = sin();
    both(
        || {
            vec![
                opcode::Nop::new().build().flags(Flags::IO_LINK | Flags::SKIP_SUCCESS).user_data(1),
                refused_bind(&a).flags(Flags::IO_LINK).user_data(2),
                opcode::Nop::new().build().user_data(3),
            ]
        },
        &[(1, -libc::ECANCELED, 0)],
    );
}
