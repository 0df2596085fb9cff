use super::*;
use io_uring::{opcode, types};

#[test]
fn a_pipe_read_waits_for_data_then_completes_with_it() {
    let mut e = engine(0);
    let (r, w) = pipe();
    let mut buf = [0u8; 16];
    push(&mut e, &[opcode::Read::new(types::Fd(r.as_raw_fd()), buf.as_mut_ptr(), 16).build().user_data(1)]);
    assert_eq!(poll(&mut e), vec![], "EAGAIN must wait, not complete");
    write_all(&w, b"hello");
    assert_eq!(wait(&mut e, 1), vec![(1, 5, 0)]);
    assert_eq!(&buf[..5], b"hello");
    assert_eq!(fd_flags(r.as_raw_fd()) & libc::O_NONBLOCK, 0, "the pipe stays blocking");
}

#[test]
fn a_pipe_write_waits_for_room() {
    let mut e = engine(0);
    let (r, w) = pipe();
    // SAFETY: fcntl on our own pipe.
    let cap = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_GETPIPE_SZ) } as usize;
    write_all(&w, &vec![1u8; cap]);
    let data = [2u8; 100];
    push(&mut e, &[opcode::Write::new(types::Fd(w.as_raw_fd()), data.as_ptr(), 100).build().user_data(2)]);
    assert_eq!(poll(&mut e), vec![]);
    let mut sink = vec![0u8; cap];
    // SAFETY: `sink` is writable for its length.
    assert_eq!(unsafe { libc::read(r.as_raw_fd(), sink.as_mut_ptr().cast(), cap) }, cap as isize);
    assert_eq!(wait(&mut e, 1), vec![(2, 100, 0)]);
}

#[test]
fn the_callers_own_nowait_flags_give_eagain() {
    let mut e = engine(0);
    let (a, _b) = socketpair(libc::SOCK_STREAM);
    let (r, _w) = pipe();
    let mut buf = [0u8; 4];
    push(
        &mut e,
        &[
            opcode::Recv::new(types::Fd(a.as_raw_fd()), buf.as_mut_ptr(), 4)
                .flags(libc::MSG_DONTWAIT)
                .build()
                .user_data(1),
            opcode::Read::new(types::Fd(r.as_raw_fd()), buf.as_mut_ptr(), 4)
                .rw_flags(libc::RWF_NOWAIT)
                .build()
                .user_data(2),
        ],
    );
    assert_eq!(poll(&mut e), vec![(1, -libc::EAGAIN, 0), (2, -libc::EAGAIN, 0)]);
}

#[test]
fn send_and_recv_on_a_socketpair_and_recv_waitall_gathers_two_sends() {
    let mut e = engine(0);
    let (a, b) = socketpair(libc::SOCK_STREAM);
    let mut buf = [0u8; 10];
    push(
        &mut e,
        &[opcode::Recv::new(types::Fd(a.as_raw_fd()), buf.as_mut_ptr(), 10)
            .flags(libc::MSG_WAITALL)
            .build()
            .user_data(1)],
    );
    write_all(&b, b"01234");
    assert_eq!(poll(&mut e), vec![], "5 of 10 bytes: MSG_WAITALL waits for the rest");
    let rest = *b"56789";
    push(&mut e, &[opcode::Send::new(types::Fd(b.as_raw_fd()), rest.as_ptr(), 5).build().user_data(2)]);
    let mut got = wait(&mut e, 2);
    got.sort();
    assert_eq!(got, vec![(1, 10, 0), (2, 5, 0)]);
    assert_eq!(&buf, b"0123456789");
}

#[test]
fn sendmsg_and_recvmsg_on_a_datagram_socketpair() {
    let mut e = engine(0);
    let (a, b) = socketpair(libc::SOCK_DGRAM);
    let mut rbuf = [0u8; 8];
    let mut riov = libc::iovec { iov_base: rbuf.as_mut_ptr().cast(), iov_len: 8 };
    // SAFETY: an all-zero msghdr is valid.
    let mut rmsg: libc::msghdr = unsafe { core::mem::zeroed() };
    rmsg.msg_iov = &mut riov;
    rmsg.msg_iovlen = 1;
    push(&mut e, &[opcode::RecvMsg::new(types::Fd(a.as_raw_fd()), &mut rmsg).build().user_data(1)]);
    assert_eq!(poll(&mut e), vec![]);
    let sbuf = *b"dgram";
    let mut siov = libc::iovec { iov_base: sbuf.as_ptr() as *mut _, iov_len: 5 };
    // SAFETY: as above.
    let mut smsg: libc::msghdr = unsafe { core::mem::zeroed() };
    smsg.msg_iov = &mut siov;
    smsg.msg_iovlen = 1;
    push(&mut e, &[opcode::SendMsg::new(types::Fd(b.as_raw_fd()), &smsg).build().user_data(2)]);
    let mut got = wait(&mut e, 2);
    got.sort();
    assert_eq!(got, vec![(1, 5, 0), (2, 5, 0)]);
    assert_eq!(&rbuf[..5], b"dgram");
}

/// A 127.0.0.1 sockaddr for `port` (0: any).
fn v4(port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes([127, 0, 0, 1]) },
        sin_zero: [0; 8],
    }
}

fn port_of(fd: RawFd) -> u16 {
    let mut sa = v4(0);
    let mut len = core::mem::size_of::<libc::sockaddr_in>() as u32;
    // SAFETY: `sa`/`len` are on this frame.
    assert_eq!(unsafe { libc::getsockname(fd, (&mut sa as *mut libc::sockaddr_in).cast(), &mut len) }, 0);
    u16::from_be(sa.sin_port)
}

#[test]
fn tcp_socket_bind_listen_accept_connect_and_the_flags_each_socket_keeps() {
    let mut e = engine(0);
    let (ip4, stream) = (libc::AF_INET, libc::SOCK_STREAM);
    push(
        &mut e,
        &[
            opcode::Socket::new(ip4, stream | libc::SOCK_CLOEXEC, 0).build().user_data(1),
            opcode::Socket::new(ip4, stream | libc::SOCK_NONBLOCK, 0).build().user_data(2),
        ],
    );
    let got = poll(&mut e);
    let (l, c) = (got[0].1, got[1].1);
    assert!(l >= 0 && c >= 0, "{got:?}");
    // SAFETY: the engine's Socket ops made them; we own them now.
    let (lf, cf) = unsafe { (OwnedFd::from_raw_fd(l), OwnedFd::from_raw_fd(c)) };
    assert_eq!(fd_flags(l) & libc::O_NONBLOCK, 0, "no SOCK_NONBLOCK asked");
    assert_ne!(fd_flags(c) & libc::O_NONBLOCK, 0, "SOCK_NONBLOCK asked");
    let one: libc::c_int = 1;
    let sa = v4(0);
    let salen = core::mem::size_of::<libc::sockaddr_in>() as u32;
    push(
        &mut e,
        &[
            opcode::SetSockOpt::new(
                types::Fd(l),
                libc::SOL_SOCKET as u32,
                libc::SO_REUSEADDR as u32,
                (&one as *const i32).cast(),
                4,
            )
            .build()
            .user_data(3),
            opcode::Bind::new(types::Fd(l), (&sa as *const libc::sockaddr_in).cast(), salen).build().user_data(4),
            opcode::Listen::new(types::Fd(l), 8).build().user_data(5),
        ],
    );
    assert_eq!(poll(&mut e), vec![(3, 0, 0), (4, 0, 0), (5, 0, 0)]);
    let mut reuse: libc::c_int = 0;
    let mut len = 4u32;
    // SAFETY: `reuse`/`len` are on this frame.
    unsafe { libc::getsockopt(l, libc::SOL_SOCKET, libc::SO_REUSEADDR, (&mut reuse as *mut i32).cast(), &mut len) };
    assert_eq!(reuse, 1, "SetSockOpt did not reach the socket");
    let mut peer = v4(0);
    let mut peer_len = salen;
    push(
        &mut e,
        &[opcode::Accept::new(types::Fd(l), (&mut peer as *mut libc::sockaddr_in).cast(), &mut peer_len)
            .build()
            .user_data(6)],
    );
    assert_eq!(poll(&mut e), vec![], "accept with no connection must wait, never block");
    assert_ne!(fd_flags(l) & libc::O_NONBLOCK, 0, "net rule 3: the listener is made non-blocking");
    let to = v4(port_of(l));
    push(
        &mut e,
        &[opcode::Connect::new(types::Fd(c), (&to as *const libc::sockaddr_in).cast(), salen).build().user_data(7)],
    );
    let mut got = wait(&mut e, 2);
    got.sort();
    assert_eq!(got[1], (7, 0, 0));
    let (ud, afd, _) = got[0];
    assert!(ud == 6 && afd >= 0, "{got:?}");
    // SAFETY: the accepted descriptor is ours now.
    let af = unsafe { OwnedFd::from_raw_fd(afd) };
    assert_eq!(fd_flags(afd) & libc::O_NONBLOCK, 0, "accepted without SOCK_NONBLOCK");
    assert_eq!(u16::from_be(peer.sin_port), port_of(c), "the peer address was written");
    push(&mut e, &[opcode::Shutdown::new(types::Fd(c), libc::SHUT_WR).build().user_data(8)]);
    assert_eq!(poll(&mut e), vec![(8, 0, 0)]);
    let mut b = [0u8; 4];
    push(&mut e, &[opcode::Recv::new(types::Fd(afd), b.as_mut_ptr(), 4).build().user_data(9)]);
    assert_eq!(wait(&mut e, 1), vec![(9, 0, 0)], "EOF after the peer's shutdown");
    drop((lf, cf, af));
}

#[test]
fn connect_on_a_blocking_socket_waits_then_restores_blocking_mode() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut e = engine(0);
    // SAFETY: a new socket.
    let s = unsafe { OwnedFd::from_raw_fd(libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0)) };
    let to = v4(port);
    let len = core::mem::size_of::<libc::sockaddr_in>() as u32;
    push(
        &mut e,
        &[opcode::Connect::new(types::Fd(s.as_raw_fd()), (&to as *const libc::sockaddr_in).cast(), len)
            .build()
            .user_data(1)],
    );
    assert_eq!(wait(&mut e, 1), vec![(1, 0, 0)]);
    assert_eq!(fd_flags(s.as_raw_fd()) & libc::O_NONBLOCK, 0, "net rule 3: flags restored");
    // A refused connect reports the error.
    drop(listener);
    // SAFETY: a new socket.
    let s2 = unsafe { OwnedFd::from_raw_fd(libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0)) };
    push(
        &mut e,
        &[opcode::Connect::new(types::Fd(s2.as_raw_fd()), (&to as *const libc::sockaddr_in).cast(), len)
            .build()
            .user_data(2)],
    );
    assert_eq!(wait(&mut e, 1), vec![(2, -libc::ECONNREFUSED, 0)]);
}

#[test]
fn poll_add_waits_for_readiness_and_a_regular_file_is_always_ready() {
    let mut e = engine(0);
    let (r, w) = pipe();
    push(&mut e, &[opcode::PollAdd::new(types::Fd(r.as_raw_fd()), libc::POLLIN as u32).build().user_data(1)]);
    assert_eq!(poll(&mut e), vec![]);
    write_all(&w, b"x");
    assert_eq!(wait(&mut e, 1), vec![(1, libc::POLLIN as i32, 0)]);
    let f = std::fs::File::open("/proc/self/exe").unwrap();
    push(&mut e, &[opcode::PollAdd::new(types::Fd(f.as_raw_fd()), libc::POLLIN as u32).build().user_data(2)]);
    assert_eq!(wait(&mut e, 1), vec![(2, libc::POLLIN as i32, 0)]);
    drop(w);
    push(&mut e, &[opcode::PollAdd::new(types::Fd(r.as_raw_fd()), libc::POLLOUT as u32).build().user_data(3)]);
    let got = wait(&mut e, 1);
    assert!(got[0].1 & libc::POLLHUP as i32 != 0, "a hang-up always counts: {got:?}");
}

#[test]
fn two_waiters_on_one_descriptor_each_complete_once() {
    let mut e = engine(0);
    let (a, b) = socketpair(libc::SOCK_STREAM);
    let mut buf = [0u8; 4];
    // Fill the socket's send buffer so a send waits too.
    let big = vec![0u8; 1 << 16];
    loop {
        // SAFETY: `big` is readable.
        let n = unsafe { libc::send(a.as_raw_fd(), big.as_ptr().cast(), big.len(), libc::MSG_DONTWAIT) };
        if n < 0 {
            break;
        }
    }
    push(
        &mut e,
        &[
            opcode::Recv::new(types::Fd(a.as_raw_fd()), buf.as_mut_ptr(), 4).build().user_data(1),
            opcode::Send::new(types::Fd(a.as_raw_fd()), big.as_ptr(), 10).build().user_data(2),
        ],
    );
    assert_eq!(poll(&mut e), vec![]);
    write_all(&b, b"ping");
    assert_eq!(wait(&mut e, 1), vec![(1, 4, 0)]);
    let mut sink = vec![0u8; 1 << 20];
    // SAFETY: `sink` is writable.
    while unsafe { libc::recv(b.as_raw_fd(), sink.as_mut_ptr().cast(), sink.len(), libc::MSG_DONTWAIT) } > 0 {}
    assert_eq!(wait(&mut e, 1), vec![(2, 10, 0)]);
    assert_eq!(e.in_flight(), 0);
}

#[test]
fn an_eventfd_read_at_offset_0_waits_for_a_write() {
    let mut e = engine(0);
    // SAFETY: a new eventfd, owned here.
    let efd = unsafe { OwnedFd::from_raw_fd(libc::eventfd(0, libc::EFD_CLOEXEC)) };
    let mut v = 0u64;
    push(&mut e, &[opcode::Read::new(types::Fd(efd.as_raw_fd()), (&mut v as *mut u64).cast(), 8).build().user_data(1)]);
    assert_eq!(poll(&mut e), vec![]);
    write_all(&efd, &5u64.to_ne_bytes());
    assert_eq!(wait(&mut e, 1), vec![(1, 8, 0)]);
    assert_eq!(v, 5);
}

#[test]
fn a_tty_read_waits_for_input() {
    let mut e = engine(0);
    // SAFETY: plain libc pty calls on descriptors this test owns.
    let (master, slave) = unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        if m < 0 {
            println!("skipped: no pseudo-terminal here (posix_openpt failed)");
            return;
        }
        assert!(libc::grantpt(m) == 0 && libc::unlockpt(m) == 0);
        let name = libc::ptsname(m);
        let s = libc::open(name, libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(s >= 0);
        (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s))
    };
    let mut buf = [0u8; 16];
    push(&mut e, &[opcode::Read::new(types::Fd(master.as_raw_fd()), buf.as_mut_ptr(), 16).build().user_data(1)]);
    assert_eq!(poll(&mut e), vec![]);
    write_all(&slave, b"tty\n");
    let got = wait(&mut e, 1);
    assert!(got.len() == 1 && got[0].1 > 0, "{got:?}");
    assert!(buf.starts_with(b"tty"), "{buf:?}");
}

#[test]
fn a_multishot_accept_posts_each_connection_with_more_until_cancelled() {
    let mut e = engine(0);
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    push(&mut e, &[opcode::AcceptMulti::new(types::Fd(l.as_raw_fd())).flags(libc::SOCK_CLOEXEC).build().user_data(1)]);
    assert_eq!(poll(&mut e), vec![]);
    let clients: Vec<_> = (0..20).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
    let got = wait(&mut e, 20);
    assert_eq!(got.len(), 20, "{got:?}");
    for &(ud, fd, flags) in &got {
        assert!(ud == 1 && fd >= 0 && flags & super::super::sqe::IORING_CQE_F_MORE != 0, "{got:?}");
        // SAFETY: each accepted descriptor is ours.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    push(&mut e, &[opcode::AsyncCancel::new(1).build().user_data(2)]);
    assert_eq!(poll(&mut e), vec![(1, -libc::ECANCELED, 0), (2, 0, 0)], "the last CQE has no MORE");
    drop(clients);
}

#[test]
fn a_poll_of_a_negative_descriptor_is_ebadf() {
    let mut e = engine(0);
    push(&mut e, &[opcode::PollAdd::new(types::Fd(-1), libc::POLLIN as u32).build().user_data(1)]);
    assert_eq!(poll(&mut e), vec![(1, -libc::EBADF, 0)]);
}

#[test]
fn a_multishot_poll_reports_each_wake_up_not_the_level_until_cancelled() {
    let mut e = engine(0);
    let (r, w) = pipe();
    push(
        &mut e,
        &[opcode::PollAdd::new(types::Fd(r.as_raw_fd()), libc::POLLIN as u32).multi(true).build().user_data(1)],
    );
    assert_eq!(poll(&mut e), vec![]);
    let more = super::super::sqe::IORING_CQE_F_MORE;
    let pin = libc::POLLIN as i32;
    write_all(&w, b"a");
    assert_eq!(wait(&mut e, 1), vec![(1, pin, more)]);
    // Unread data is no new wake-up: nothing more until the next write.
    let d = super::super::timers::now() + 20_000_000;
    e.enter(1, Some(keel_core::Instant::from_nanos(d))).unwrap();
    assert_eq!(take(&mut e), vec![], "a level reported again");
    write_all(&w, b"b");
    assert_eq!(wait(&mut e, 1), vec![(1, pin, more)]);
    push(&mut e, &[opcode::AsyncCancel::new(1).build().user_data(2)]);
    assert_eq!(poll(&mut e), vec![(1, -libc::ECANCELED, 0), (2, 0, 0)], "the last CQE has no MORE");
    // Armed on a descriptor already ready: reported at once.
    push(
        &mut e,
        &[opcode::PollAdd::new(types::Fd(r.as_raw_fd()), libc::POLLIN as u32).multi(true).build().user_data(3)],
    );
    assert_eq!(wait(&mut e, 1), vec![(3, pin, more)]);
    push(&mut e, &[opcode::AsyncCancel::new(3).build().user_data(4)]);
    assert_eq!(poll(&mut e), vec![(3, -libc::ECANCELED, 0), (4, 0, 0)]);
    assert_eq!(e.in_flight(), 0);
}

#[test]
fn vectored_reads_and_writes_on_a_pipe_wait_for_readiness() {
    let mut e = engine(0);
    let (r, w) = pipe();
    let (mut x, mut y) = ([0u8; 2], [0u8; 3]);
    let riov = [
        libc::iovec { iov_base: x.as_mut_ptr().cast(), iov_len: 2 },
        libc::iovec { iov_base: y.as_mut_ptr().cast(), iov_len: 3 },
    ];
    push(&mut e, &[opcode::Readv::new(types::Fd(r.as_raw_fd()), riov.as_ptr(), 2).build().user_data(1)]);
    assert_eq!(poll(&mut e), vec![]);
    let data = *b"vecto";
    let wiov = [libc::iovec { iov_base: data.as_ptr() as *mut _, iov_len: 5 }];
    push(&mut e, &[opcode::Writev::new(types::Fd(w.as_raw_fd()), wiov.as_ptr(), 1).build().user_data(2)]);
    let mut got = wait(&mut e, 2);
    got.sort();
    assert_eq!(got, vec![(1, 5, 0), (2, 5, 0)]);
    assert_eq!((&x, &y), (b"ve", b"cto"));
}
