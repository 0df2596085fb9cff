//! liburing's `bind-listen.c` (`test_bad_bind`, `test_bad_listen`) through keel: bind,
//! listen and shutdown as raw SQEs (`RingOp::from_entry`) with a bad descriptor, a bad
//! length or a field the opcode does not use set, and through the typed calls with an
//! address in use or a socket bound twice. Each is its errno, the same on io_uring and on
//! the epoll engine (net rule 5 in `epoll/engine/perform_net.rs`: the engine checks what
//! the kernel's prep checks), and a refused call has no effect on the socket. Fibers, on
//! the `Auto` backend (`KEEL_DRIVER=epoll`: the epoll engine). 127.0.0.1 only.

#[path = "net_util/mod.rs"]
mod util;

use io_uring::{opcode, squeue, types};
use keel_core::{Errno, Fiber};
use keel_linux::net::{FiberNet, SockAddr, Socket};
use keel_linux::{RingConfig, RingOp};
use std::cell::RefCell;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use util::raw_sqe::{Sqe, edit};
use util::{executor, fattrs, run_all, task};

fn v4_any_port() -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes([127, 0, 0, 1]) },
        sin_zero: [0; 8],
    }
}

fn tcp_socket() -> OwnedFd {
    rustix::net::socket(rustix::net::AddressFamily::INET, rustix::net::SocketType::STREAM, None).unwrap()
}

fn bound_port(s: &OwnedFd) -> u16 {
    let a: std::net::SocketAddrV4 = rustix::net::getsockname(s).unwrap().try_into().unwrap();
    a.port()
}

/// Runs `body` in a fiber on a fresh executor, to the end.
fn in_fiber<T: 'static>(body: impl FnOnce(&mut Fiber) -> T + 'static) -> T {
    let out: Rc<RefCell<Option<T>>> = Rc::default();
    let o = out.clone();
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
        let r = body(f);
        *o.borrow_mut() = Some(r);
        0u64
    })
    .unwrap();
    run_all(ex);
    out.borrow_mut().take().expect("the fiber finished")
}

/// Runs raw `e` in a fiber.
///
/// # Safety
/// Every pointer in `e` stays valid until this returns.
unsafe fn run_raw(e: squeue::Entry) -> Result<u32, Errno> {
    // SAFETY: the caller's promise; `run_op` returns after the completion.
    let op = unsafe { RingOp::from_entry(e) };
    in_fiber(move |f| keel_linux::fs::FiberFs::run_op(f, op))
}

/// Whether this backend performs BIND (io_uring since 6.11); says SKIPPED if not.
fn bind_supported() -> bool {
    let s = tcp_socket();
    let a = v4_any_port();
    let e = opcode::Bind::new(types::Fd(s.as_raw_fd()), (&raw const a).cast(), size_of_val(&a) as u32).build();
    // SAFETY: `a` outlives the call.
    let ok = unsafe { run_raw(e) } == Ok(0);
    if !ok {
        println!("SKIPPED: this kernel's io_uring has no IORING_OP_BIND/LISTEN (6.11)");
    }
    ok
}

#[test]
fn a_bad_bind_is_its_errno_and_leaves_the_socket_unbound() {
    if !bind_supported() {
        return;
    }
    let a = v4_any_port();
    let len = size_of_val(&a) as u32;
    let s = tcp_socket();
    let fd = types::Fd(s.as_raw_fd());
    // SAFETY: (each) `a` outlives the call.
    let zero_len = unsafe { run_raw(opcode::Bind::new(fd, (&raw const a).cast(), 0).build()) };
    assert_eq!(zero_len, Err(Errno::EINVAL), "a bind with an address length of 0");
    let (pipe_r, _w) = std::io::pipe().unwrap();
    // SAFETY: as above.
    let not_sock =
        unsafe { run_raw(opcode::Bind::new(types::Fd(pipe_r.as_raw_fd()), (&raw const a).cast(), len).build()) };
    assert_eq!(not_sock, Err(Errno(libc::ENOTSOCK)), "a bind of a pipe");
    for (what, set) in [
        ("rw_flags", (|q: &mut Sqe| q.op_flags = 1) as fn(&mut Sqe)),
        ("len", |q: &mut Sqe| q.len = 1),
        ("buf_index", |q: &mut Sqe| q.buf_index = 1),
        ("splice_fd_in", |q: &mut Sqe| q.file_index = 1),
    ] {
        let e = edit(opcode::Bind::new(fd, (&raw const a).cast(), len).build(), set);
        // SAFETY: as above.
        assert_eq!(unsafe { run_raw(e) }, Err(Errno::EINVAL), "a bind with {what} set");
        assert_eq!(bound_port(&s), 0, "a refused bind ({what}) bound nothing");
    }
}

#[test]
fn a_bad_listen_is_its_errno_and_leaves_the_socket_not_listening() {
    if !bind_supported() {
        return;
    }
    let s = tcp_socket();
    rustix::net::bind(&s, &"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap()).unwrap();
    let port = bound_port(&s);
    let fd = types::Fd(s.as_raw_fd());
    let (pipe_r, _w) = std::io::pipe().unwrap();
    // SAFETY: (each) a listen names no memory.
    let not_sock = unsafe { run_raw(opcode::Listen::new(types::Fd(pipe_r.as_raw_fd()), 1).build()) };
    assert_eq!(not_sock, Err(Errno(libc::ENOTSOCK)), "a listen on a pipe");
    for (what, set) in [
        ("addr2", (|q: &mut Sqe| q.off = 0xffffff) as fn(&mut Sqe)),
        ("addr", |q: &mut Sqe| q.addr = 1),
        ("rw_flags", |q: &mut Sqe| q.op_flags = 1),
        ("buf_index", |q: &mut Sqe| q.buf_index = 1),
        ("splice_fd_in", |q: &mut Sqe| q.file_index = 1),
    ] {
        let e = edit(opcode::Listen::new(fd, 1).build(), set);
        // SAFETY: as above.
        assert_eq!(unsafe { run_raw(e) }, Err(Errno::EINVAL), "a listen with {what} set");
        let refused = std::net::TcpStream::connect(("127.0.0.1", port)).map(drop).map_err(|e| e.kind());
        assert_eq!(refused, Err(std::io::ErrorKind::ConnectionRefused), "a refused listen ({what}) listens not");
    }
    // SAFETY: as above.
    assert_eq!(unsafe { run_raw(opcode::Listen::new(fd, 1).build()) }, Ok(0), "the same listen, clean");
}

#[test]
fn a_bad_shutdown_is_its_errno() {
    let s = tcp_socket();
    let fd = types::Fd(s.as_raw_fd());
    // SAFETY: (each) a shutdown names no memory.
    let unconnected = unsafe { run_raw(opcode::Shutdown::new(fd, libc::SHUT_RDWR).build()) };
    assert_eq!(unconnected, Err(Errno(libc::ENOTCONN)), "a shutdown of a socket never connected");
    let (pipe_r, _w) = std::io::pipe().unwrap();
    // SAFETY: as above.
    let not_sock = unsafe { run_raw(opcode::Shutdown::new(types::Fd(pipe_r.as_raw_fd()), libc::SHUT_RDWR).build()) };
    assert_eq!(not_sock, Err(Errno(libc::ENOTSOCK)), "a shutdown of a pipe");
    let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    for (what, set) in [
        ("off", (|q: &mut Sqe| q.off = 1) as fn(&mut Sqe)),
        ("addr", |q: &mut Sqe| q.addr = 1),
        ("rw_flags", |q: &mut Sqe| q.op_flags = 1),
        ("buf_index", |q: &mut Sqe| q.buf_index = 1),
        ("splice_fd_in", |q: &mut Sqe| q.file_index = 1),
    ] {
        let e = edit(opcode::Shutdown::new(types::Fd(a.as_raw_fd()), libc::SHUT_RDWR).build(), set);
        // SAFETY: as above.
        assert_eq!(unsafe { run_raw(e) }, Err(Errno::EINVAL), "a shutdown with {what} set");
    }
    // None of them shut the pair down: the peer reads what `a` writes after them.
    use std::io::{Read, Write};
    (&a).write_all(b"up").unwrap();
    let mut got = [0u8; 2];
    b.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"up");
}

#[test]
fn a_bind_to_an_address_in_use_or_a_second_bind_is_refused() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let in_use = SockAddr::from(taken.local_addr().unwrap());
    let (first, again) = in_fiber(move |f| {
        use keel_linux::net::{AddressFamily, SocketType};
        let s: Socket = f.socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
        let first = f.bind(&s, &in_use);
        let any = util::localhost();
        assert_eq!(f.bind(&s, &any), Ok(()), "a free address");
        let again = f.bind(&s, &any);
        let _ = f.close_socket(s);
        (first, again)
    });
    assert_eq!(first, Err(Errno(libc::EADDRINUSE)), "an address a listener holds");
    assert_eq!(again, Err(Errno::EINVAL), "a socket bound already");
}
