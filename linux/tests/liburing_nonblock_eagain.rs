//! liburing's `socket-rw-eagain.c` and `fifo-nonblock-read.c`: a read or receive through
//! the ring on a descriptor whose file is `O_NONBLOCK` and not ready. The kernels keel
//! runs on (`IORING_FEAT_FAST_POLL`) poll such a file and retry, so the operation waits
//! for the data instead of completing with `EAGAIN` (only `RwFlags::NOWAIT` asks for
//! that: `rw_flags.rs`), and the epoll engine must do the same (it performs the read with
//! the file's own flags, so it sees `EAGAIN` and must wait, not pass it on). Socket read,
//! socket receive and pipe read, fibers and futures, each bounded by a deadline (a wait
//! that never ends is `TIMED_OUT`, a passed-on `EAGAIN` is `EAGAIN`: both fail), on the
//! `Auto` backend (`KEEL_DRIVER=epoll`: the epoll engine).

#[path = "net_util/mod.rs"]
mod util;

use core::time::Duration;
use keel_core::{Errno, Fiber, rt};
use keel_linux::RingConfig;
use keel_linux::deadline::{self, Deadline, FiberDeadline};
use keel_linux::fs::{self, FiberFs, File};
use keel_linux::net::{self, FiberNet, Socket};
use std::cell::RefCell;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use util::{executor, fattrs, run_all, task};

const MSG: &[u8] = b"liburing";

type Out = Rc<RefCell<Vec<(Result<u32, Errno>, Vec<u8>)>>>;

#[derive(Copy, Clone, Debug)]
enum Kind {
    SocketRead,
    SocketRecv,
    PipeRead,
}

fn nonblocking(fd: &impl std::os::fd::AsFd) {
    let fl = rustix::fs::fcntl_getfl(fd).unwrap();
    rustix::fs::fcntl_setfl(fd, fl | rustix::fs::OFlags::NONBLOCK).unwrap();
}

/// The reading end (`O_NONBLOCK`) and the writing end of `kind`'s descriptor pair.
fn pair(kind: Kind) -> (OwnedFd, OwnedFd) {
    let (r, w) = match kind {
        Kind::SocketRead | Kind::SocketRecv => {
            let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
            (OwnedFd::from(a), OwnedFd::from(b))
        }
        Kind::PipeRead => {
            let (r, w) = std::io::pipe().unwrap();
            (OwnedFd::from(r), OwnedFd::from(w))
        }
    };
    nonblocking(&r);
    (r, w)
}

fn bound() -> Deadline {
    Deadline::after(Duration::from_secs(5))
}

/// `kind`'s read of the empty `O_NONBLOCK` end, as a fiber or a future, with a task that
/// writes `MSG` to the other end after a sleep; what the read gave.
fn read_then_write(kind: Kind, fiber: bool) -> (Result<u32, Errno>, Vec<u8>) {
    let out: Out = Rc::default();
    let (r, w) = pair(kind);
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let o = out.clone();
    if fiber {
        ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            let mut buf = [0u8; 16];
            let res = match kind {
                Kind::SocketRecv => {
                    let s = Socket::from(r);
                    f.within(bound(), |f| f.recv(&s, &mut buf))
                }
                _ => {
                    let file = File::from(r);
                    f.within(bound(), |f| f.read(&file, &mut buf, 0))
                }
            };
            let n = *res.as_ref().unwrap_or(&0) as usize;
            o.borrow_mut().push((res, buf[..n].to_vec()));
            0u64
        })
        .unwrap();
    } else {
        ex.attach(task(), async move {
            let (res, buf) = match kind {
                Kind::SocketRecv => {
                    let s = Socket::from(r);
                    deadline::within(bound(), net::future::recv(&s, Vec::with_capacity(16))).await
                }
                _ => {
                    let file = File::from(r);
                    deadline::within(bound(), fs::read(&file, Vec::with_capacity(16), 0)).await
                }
            };
            o.borrow_mut().push((res, buf));
            0u64
        })
        .unwrap();
    }
    ex.attach(task(), async move {
        rt::sleep(Duration::from_millis(30)).await.unwrap();
        assert_eq!(rustix::io::write(&w, MSG), Ok(MSG.len()));
        0u64
    })
    .unwrap();
    run_all(ex);
    out.borrow_mut().pop().expect("the reader finished")
}

#[test]
fn a_read_of_an_empty_nonblocking_socket_or_pipe_waits_for_the_data() {
    for kind in [Kind::SocketRead, Kind::SocketRecv, Kind::PipeRead] {
        for fiber in [true, false] {
            let (res, data) = read_then_write(kind, fiber);
            assert_eq!(res, Ok(MSG.len() as u32), "{kind:?} fiber {fiber} (EAGAIN 11, TIMED_OUT 62)");
            assert_eq!(data, MSG, "{kind:?} fiber {fiber}");
        }
    }
}

/// liburing's `socket-nb.c`: a receive with `MSG_DONTWAIT` on an empty socket is `EAGAIN`
/// at once whether or not the socket is `O_NONBLOCK` (a raw SQE: keel's own receives never
/// set it), also after the epoll engine has seen the socket empty.
#[test]
fn a_dontwait_receive_of_an_empty_socket_is_eagain_blocking_or_not() {
    use keel_linux::RingOp;
    use std::os::fd::AsRawFd;
    for nonblock in [false, true] {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        if nonblock {
            nonblocking(&a);
        }
        let s = Rc::new(Socket::from(OwnedFd::from(a)));
        let out: Rc<RefCell<Vec<Result<u32, Errno>>>> = Rc::default();
        let o = out.clone();
        let ex = executor(RingConfig::default());
        let ex = ex.as_ref();
        ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            let mut buf = [0u8; 8];
            let plain = f.within(Deadline::after(Duration::from_millis(50)), |f| f.recv(&*s, &mut buf));
            let e = io_uring::opcode::Recv::new(io_uring::types::Fd(s.as_raw_fd()), buf.as_mut_ptr(), 8)
                .flags(libc::MSG_DONTWAIT)
                .build();
            // SAFETY: `buf` outlives `run_op`, which returns after the completion.
            let op = unsafe { RingOp::from_entry(e) };
            let dontwait = f.within(bound(), |f| keel_linux::fs::FiberFs::run_op(f, op));
            o.borrow_mut().extend([plain, dontwait]);
            0u64
        })
        .unwrap();
        run_all(ex);
        assert_eq!(
            out.take(),
            vec![Err(deadline::TIMED_OUT), Err(Errno::EAGAIN)],
            "O_NONBLOCK {nonblock}: a plain receive waits, a MSG_DONTWAIT one is EAGAIN"
        );
    }
}
