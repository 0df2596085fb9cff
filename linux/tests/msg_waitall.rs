//! `MSG_WAITALL` on SENDMSG and RECVMSG over a stream socket: io_uring retries a short
//! transfer until every byte of the iovecs moved (or EOF, or an error), and so does the
//! epoll engine (net rule 4 in `epoll/engine/perform_net.rs`). Each case runs on the
//! `Auto` backend and on the epoll engine: the same task code, two drivers.

#[path = "net_util/mod.rs"]
mod net_util;

use core::time::Duration;
use io_uring::{opcode, types};
use keel_core::{Config, Executor, Fiber, FiberAttrs};
use keel_linux::fs::FiberFs;
use keel_linux::{BackendChoice, MmapStacks, RingConfig, RingDriver, RingOp};
use net_util::{Ex, run_all, task};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::pin::Pin;

fn executor(backend: BackendChoice) -> Pin<Box<Ex>> {
    let d = RingDriver::new(RingConfig { backend, ..RingConfig::default() }).expect("a driver");
    Box::pin(Executor::with_stacks(d, MmapStacks::new().unwrap(), Config::default()).unwrap())
}

/// Runs `body` as a fiber on `ex` to its end; its result.
fn on(ex: Pin<&Ex>, body: impl FnOnce(&mut Fiber) -> u64 + 'static) -> u64 {
    let t = ex.attach_fiber(task(), FiberAttrs::default(), body).unwrap();
    run_all(ex);
    match ex.result(t) {
        Ok(Some(Ok(v))) => v,
        other => panic!("the task: {other:?}"),
    }
}

/// A RECVMSG of 3 + 5 bytes with `MSG_WAITALL` gets all eight though the peer writes them
/// in two parts 50 ms apart (the second part lands across the iovecs' boundary).
#[test]
fn recvmsg_with_waitall_gathers_a_message_written_in_two_parts() {
    for backend in [BackendChoice::Auto, BackendChoice::Epoll] {
        let (a, mut b) = UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            b.write_all(b"abcd").unwrap();
            std::thread::sleep(Duration::from_millis(50));
            b.write_all(b"efgh").unwrap();
            b
        });
        let ex = executor(backend);
        let got = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let g = got.clone();
        let n = on(ex.as_ref(), move |f| {
            let (mut x, mut y) = ([0u8; 3], [0u8; 5]);
            let mut iov = [
                libc::iovec { iov_base: x.as_mut_ptr().cast(), iov_len: 3 },
                libc::iovec { iov_base: y.as_mut_ptr().cast(), iov_len: 5 },
            ];
            // SAFETY: an all-zero msghdr is valid (no name, no control).
            let mut m: libc::msghdr = unsafe { core::mem::zeroed() };
            m.msg_iov = iov.as_mut_ptr();
            m.msg_iovlen = 2;
            let e = opcode::RecvMsg::new(types::Fd(a.as_raw_fd()), &mut m).flags(libc::MSG_WAITALL as u32).build();
            // SAFETY: `m`, `iov`, `x` and `y` outlive `run_op`, which returns after the completion.
            let r = f.run_op(unsafe { RingOp::from_entry(e) });
            g.borrow_mut().extend_from_slice(&x);
            g.borrow_mut().extend_from_slice(&y);
            r.map_or(u64::MAX, u64::from)
        });
        writer.join().unwrap();
        assert_eq!(n, 8, "{backend:?}: every byte asked for");
        assert_eq!(&got.borrow()[..], b"abcdefgh", "{backend:?}");
    }
}

/// A SENDMSG of 4 MiB with `MSG_WAITALL` (far past the socket's buffer) sends every byte,
/// in order, while the peer reads slowly.
#[test]
fn sendmsg_with_waitall_sends_every_byte_past_a_full_socket_buffer() {
    const LEN: usize = 4 << 20;
    for backend in [BackendChoice::Auto, BackendChoice::Epoll] {
        let (a, mut b) = UnixStream::pair().unwrap();
        let reader = std::thread::spawn(move || {
            let mut all = Vec::with_capacity(LEN);
            let mut buf = [0u8; 65536];
            loop {
                match b.read(&mut buf).unwrap() {
                    0 => return all,
                    n => all.extend_from_slice(&buf[..n]),
                }
                if all.len() < LEN / 2 {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        });
        let ex = executor(backend);
        let n = on(ex.as_ref(), move |f| {
            let data: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
            let (head, tail) = data.split_at(1000);
            let mut iov = [
                libc::iovec { iov_base: head.as_ptr() as *mut _, iov_len: head.len() },
                libc::iovec { iov_base: tail.as_ptr() as *mut _, iov_len: tail.len() },
            ];
            // SAFETY: an all-zero msghdr is valid (no name, no control).
            let mut m: libc::msghdr = unsafe { core::mem::zeroed() };
            m.msg_iov = iov.as_mut_ptr();
            m.msg_iovlen = 2;
            let e = opcode::SendMsg::new(types::Fd(a.as_raw_fd()), &m).flags(libc::MSG_WAITALL as u32).build();
            // SAFETY: `m`, `iov` and `data` outlive `run_op`, which returns after the completion.
            let r = f.run_op(unsafe { RingOp::from_entry(e) });
            drop(a); // EOF for the reader
            r.map_or(u64::MAX, u64::from)
        });
        let all = reader.join().unwrap();
        assert_eq!(n, LEN as u64, "{backend:?}: one completion for every byte");
        assert_eq!(all.len(), LEN, "{backend:?}");
        assert!(all.iter().enumerate().all(|(i, &v)| v == (i % 251) as u8), "{backend:?}: in order");
    }
}

/// Sends `data` on `fd` with one descriptor (`pass`) as `SCM_RIGHTS`.
fn send_with_fd(fd: i32, data: &[u8], pass: i32) {
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut _, iov_len: data.len() };
    let mut ctl = [0u64; 4]; // aligned room for one cmsghdr and an int
    // SAFETY: an all-zero msghdr is valid; the CMSG_* calls stay inside `ctl`, which is
    // larger than CMSG_SPACE(4).
    unsafe {
        let mut m: libc::msghdr = core::mem::zeroed();
        m.msg_iov = &mut iov;
        m.msg_iovlen = 1;
        m.msg_control = ctl.as_mut_ptr().cast();
        m.msg_controllen = libc::CMSG_SPACE(4) as usize;
        let c = libc::CMSG_FIRSTHDR(&m);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(4) as usize;
        libc::CMSG_DATA(c).cast::<i32>().write_unaligned(pass);
        assert_eq!(libc::sendmsg(fd, &m, 0), data.len() as isize);
    }
}

/// What one RECVMSG of `len` bytes with `MSG_WAITALL` and an ancillary buffer got: the
/// result, the bytes, `msg_flags`, and the descriptor of an `SCM_RIGHTS` message (-1: none).
fn recvmsg_with_cmsg(f: &mut Fiber, fd: i32, len: usize) -> (i64, Vec<u8>, i32, i32) {
    let mut buf = vec![0u8; len];
    let mut ctl = [0u64; 8];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: len };
    // SAFETY: an all-zero msghdr is valid; `ctl` is its ancillary buffer.
    let mut m: libc::msghdr = unsafe { core::mem::zeroed() };
    m.msg_iov = &mut iov;
    m.msg_iovlen = 1;
    m.msg_control = ctl.as_mut_ptr().cast();
    m.msg_controllen = core::mem::size_of_val(&ctl);
    let e = opcode::RecvMsg::new(types::Fd(fd), &mut m).flags(libc::MSG_WAITALL as u32).build();
    // SAFETY: `m`, `iov`, `buf` and `ctl` outlive `run_op`, which returns after the completion.
    let r = f.run_op(unsafe { RingOp::from_entry(e) }).map_or_else(|e| -i64::from(e.0), i64::from);
    let mut got = -1;
    // SAFETY: the kernel wrote `msg_controllen` bytes of cmsgs into `ctl`; CMSG_* walk them.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&m);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                got = libc::CMSG_DATA(c).cast::<i32>().read_unaligned();
            }
            c = libc::CMSG_NXTHDR(&m, c);
        }
    }
    buf.truncate(r.max(0) as usize);
    (r, buf, m.msg_flags, got)
}

/// A RECVMSG with `MSG_WAITALL` and an ancillary buffer is not retried after a short
/// transfer (io_uring since 6.10: a later part's ancillary data would find no buffer and
/// be dropped): it completes with the 4 bytes there, and the descriptor sent with the next
/// 4 bytes comes with the next receive, not lost to a retry without a buffer.
#[test]
fn recvmsg_with_waitall_and_an_ancillary_buffer_completes_short_and_loses_no_descriptor() {
    for backend in [BackendChoice::Auto, BackendChoice::Epoll] {
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(b"abcd").unwrap();
        let (pr, pw) = std::io::pipe().unwrap();
        let ex = executor(backend);
        let ex = ex.as_ref();
        let (afd, bfd, pass) = (a.as_raw_fd(), b.as_raw_fd(), pw.as_raw_fd());
        let out = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let o = out.clone();
        let receiver = ex
            .attach_fiber(task(), FiberAttrs::default(), move |f: &mut Fiber| {
                let first = recvmsg_with_cmsg(f, afd, 8);
                o.borrow_mut().push(first);
                let second = recvmsg_with_cmsg(f, afd, 4);
                o.borrow_mut().push(second);
                0
            })
            .unwrap();
        // Sends the second part once the receive has made its first attempt (the NOP
        // after it in the same submission completed).
        let sender = ex
            .attach_fiber(task(), FiberAttrs::default(), move |f: &mut Fiber| {
                // SAFETY: a NOP names no memory.
                f.run_op(unsafe { RingOp::from_entry(opcode::Nop::new().build()) }).unwrap();
                send_with_fd(bfd, b"efgh", pass);
                0
            })
            .unwrap();
        run_all(ex);
        assert_eq!(ex.result(sender), Ok(Some(Ok(0))), "{backend:?}");
        assert_eq!(ex.result(receiver), Ok(Some(Ok(0))), "{backend:?}");
        let (first, second) = {
            let mut v = out.borrow_mut();
            assert_eq!(v.len(), 2, "{backend:?}");
            let second = v.pop().unwrap();
            (v.pop().unwrap(), second)
        };
        assert_eq!((first.0, &first.1[..], first.3), (4, &b"abcd"[..], -1), "{backend:?}: the first part only");
        assert_eq!(first.2 & libc::MSG_CTRUNC, 0, "{backend:?}");
        assert_eq!((second.0, &second.1[..]), (4, &b"efgh"[..]), "{backend:?}");
        assert_eq!(second.2 & libc::MSG_CTRUNC, 0, "{backend:?}: the descriptor found its buffer");
        assert!(second.3 >= 0, "{backend:?}: the descriptor came with the second part");
        // SAFETY: the received descriptor is ours now; fstat fills `st`.
        let same = unsafe {
            let got = std::os::fd::OwnedFd::from_raw_fd(second.3);
            let (mut x, mut y): (libc::stat, libc::stat) = (core::mem::zeroed(), core::mem::zeroed());
            libc::fstat(got.as_raw_fd(), &mut x) == 0
                && libc::fstat(pw.as_raw_fd(), &mut y) == 0
                && x.st_ino == y.st_ino
        };
        assert!(same, "{backend:?}: the pipe's write end");
        drop((a, b, pr, pw));
    }
}
