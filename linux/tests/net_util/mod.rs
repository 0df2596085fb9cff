//! Shared set-up for the net_* tests: executors on a real ring, a listener made through
//! the ring, echo workers of both kinds, and std clients on threads.
#![allow(dead_code)]

use core::pin::Pin;
use core::time::Duration;
use keel_core::{Config, Executor, Fiber, FiberAttrs, TaskAttrs, TaskHandle, TaskSlot};
use keel_linux::net::{self, AddressFamily, FiberNet, SockAddr, SockOpt, Socket, SocketType};
use keel_linux::{MmapStacks, RingConfig, RingDriver};
use std::cell::Cell;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::rc::Rc;

pub mod raw_sqe;

pub type Ex = Executor<RingDriver, MmapStacks>;

pub fn task() -> TaskHandle {
    let s: &'static TaskSlot<8192> = Box::leak(Box::new(TaskSlot::new()));
    s.create(TaskAttrs::default()).unwrap()
}

/// The driver for `cfg`; on the epoll backend (`KEEL_DRIVER=epoll`, or io_uring denied:
/// `make denied`) without the settings only io_uring has, so the suites run there too.
pub fn ring(cfg: RingConfig) -> RingDriver {
    RingDriver::new(for_backend(cfg)).expect("a ring driver on either backend")
}

/// `cfg` less what only io_uring has, on the epoll backend (registered buffers and files).
pub fn for_backend(cfg: RingConfig) -> RingConfig {
    if on_epoll() { RingConfig { registered_buffers: 0, registered_files: 0, ..cfg } } else { cfg }
}

/// Whether this process's `Auto` ring drivers run on the epoll backend.
pub fn on_epoll() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        RingDriver::new(RingConfig::default()).expect("a ring driver on either backend").backend()
            == keel_linux::Backend::Epoll
    })
}

/// For tests of what only io_uring has (registered buffers and files, provided buffers,
/// multishot receives, zero-copy sends, direct descriptors): on the epoll backend says
/// SKIPPED and why, and answers true (the test then returns).
pub fn ring_only(what: &str) -> bool {
    let skip = on_epoll();
    if skip {
        println!("SKIPPED on the epoll backend: {what} needs io_uring");
    }
    skip
}

/// Whether a skip-pair test cannot run: skip pairs need a kernel ring with
/// `IORING_FEAT_CQE_SKIP`, or the epoll backend; says SKIPPED and why when they are out.
pub fn skip_pairs_unavailable() -> bool {
    let ok = ring(RingConfig::default()).skip_pairs_supported();
    if !ok {
        println!("SKIPPED: this kernel lacks IORING_FEAT_CQE_SKIP, so no skip pair is ever made");
    }
    !ok
}

/// 127.0.0.1, any port.
pub fn localhost() -> SockAddr {
    SockAddr::from("127.0.0.1:0".parse::<SocketAddr>().unwrap())
}

/// Registers `count` provided buffers of `size` bytes on the io_uring backend; nothing on
/// the epoll backend, which has none (the tests that use them are `ring_only`).
pub fn provided_buffers(d: &mut RingDriver, count: u16, size: u32) {
    if d.backend() == keel_linux::Backend::Ring {
        d.enable_provided_buffers(count, size).unwrap();
    }
}

pub fn executor(cfg: RingConfig) -> Pin<Box<Ex>> {
    Box::pin(
        Executor::with_stacks(
            ring(cfg),
            MmapStacks::new().unwrap(),
            Config { fiber_panics: keel_linux::panic::config().fiber_panics, ..Config::default() },
        )
        .unwrap(),
    )
}

pub fn executor_with(d: RingDriver) -> Pin<Box<Ex>> {
    Box::pin(Executor::with_stacks(d, MmapStacks::new().unwrap(), keel_linux::panic::config()).unwrap())
}

/// Runs until no task is attached (60 s cap).
pub fn run_all(ex: Pin<&Ex>) {
    let t0 = std::time::Instant::now();
    while ex.attached() > 0 {
        let _ = ex.run(1024, Some(Duration::from_millis(50)));
        assert!(t0.elapsed() < Duration::from_secs(60), "runaway");
    }
}

/// Runs until `done()` (60 s cap).
pub fn run_until(ex: Pin<&Ex>, mut done: impl FnMut() -> bool) {
    let t0 = std::time::Instant::now();
    while !done() {
        let _ = ex.run(1024, Some(Duration::from_millis(20)));
        assert!(t0.elapsed() < Duration::from_secs(60), "runaway");
    }
}

pub fn fattrs() -> FiberAttrs {
    FiberAttrs { stack_size: 128 * 1024, ..FiberAttrs::DEFAULT }
}

/// A listener made through the ring (socket, SO_REUSEADDR, bind, listen) on `addr`
/// (port 0: any); returns its descriptor and the bound address.
pub fn listen(ex: Pin<&Ex>, addr: SockAddr) -> (RawFd, SockAddr) {
    let out = Rc::new(Cell::new(None));
    let o = out.clone();
    ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
        let s = f.socket(addr.family(), SocketType::STREAM, None).expect("socket");
        if addr.family() != AddressFamily::UNIX {
            f.set_option(&s, SockOpt::reuse_addr(true)).expect("SO_REUSEADDR");
        }
        f.bind(&s, &addr).expect("bind");
        f.listen(&s, 1024).expect("listen");
        o.set(Some(s.into_raw_fd().expect("no operation holds the listener")));
        0u64
    })
    .unwrap();
    run_all(ex);
    let fd = out.get().unwrap();
    let bound = if addr.family() == AddressFamily::UNIX {
        addr
    } else {
        // SAFETY: a view of the test's listener that never closes it (ManuallyDrop); the
        // test closes it once, after every task using it is done.
        let view = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(fd) });
        net::local_addr(&view).unwrap()
    };
    (fd, bound)
}

pub fn std_addr(a: &SockAddr) -> SocketAddr {
    a.to_std().unwrap()
}

/// Echo worker, fiber: accept one connection at a time on `lfd`, echo until end of
/// stream, close, again; ends when cancelled. Counts bytes echoed.
pub fn fiber_worker(ex: Pin<&Ex>, lfd: RawFd, bytes: Rc<Cell<u64>>) -> TaskHandle {
    ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
        // SAFETY: a view of the test's listener that never closes it (ManuallyDrop); the test closes it once, after every task using it is done.
        let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(lfd) });
        let mut buf = [0u8; 4096];
        loop {
            let c = match f.accept(&*l) {
                Ok(c) => c,
                Err(_) => return 0u64,
            };
            loop {
                match f.recv(&c, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if f.send_all(&c, &buf[..n as usize]).is_err() {
                            break;
                        }
                        bytes.set(bytes.get() + n as u64);
                    }
                }
            }
            let _ = f.close_socket(c);
        }
    })
    .unwrap()
}

/// Echo worker, future: as `fiber_worker` with owned buffers.
pub fn future_worker(ex: Pin<&Ex>, lfd: RawFd, bytes: Rc<Cell<u64>>) -> TaskHandle {
    ex.attach(task(), async move {
        // SAFETY: a view of the test's listener that never closes it (ManuallyDrop); the test closes it once, after every task using it is done.
        let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(lfd) });
        let mut buf = Vec::with_capacity(4096);
        loop {
            let c = match net::future::accept(&*l).await {
                Ok(c) => c,
                Err(_) => return 0u64,
            };
            loop {
                let (r, b) = net::future::recv(&c, buf).await;
                buf = b;
                match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let (r, b) = net::future::send_all(&c, buf).await;
                        buf = b;
                        buf.clear();
                        if r.is_err() {
                            break;
                        }
                        bytes.set(bytes.get() + n as u64);
                    }
                }
            }
            let _ = net::future::close_socket(c).await;
        }
    })
    .unwrap()
}

/// One client: `msgs` messages of `size` bytes, each echoed and checked byte by byte.
pub fn echo_client(addr: SocketAddr, id: u32, msgs: u32, size: usize) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut out = vec![0u8; size];
    let mut back = vec![0u8; size];
    for m in 0..msgs {
        for (i, b) in out.iter_mut().enumerate() {
            *b = (id as usize * 31 + m as usize * 7 + i) as u8;
        }
        s.write_all(&out).unwrap();
        s.read_exact(&mut back).unwrap();
        assert_eq!(back, out, "client {id} message {m}");
    }
}
