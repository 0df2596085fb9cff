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
use std::os::fd::AsRawFd;
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
