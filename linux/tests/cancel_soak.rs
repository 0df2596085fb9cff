//! Cancellation soak: for each operation kind (yield, sleep, open/close, read, write,
//! recv, accept, registered buffers, provided buffers) eight tasks, fibers and futures
//! picked at random, run the operation in a loop while the test cancels tasks at random
//! points (and, for futures of kinds whose result may be given up, drops the operation
//! future mid-flight), re-attaching each task once it ends. Seeded: the seed is printed
//! and `KEEL_SOAK_SEED` repeats it; `KEEL_SOAK_SECS` sets the time per kind (the default
//! is short, for `make test`; the full soak is 3 s each).
//!
//! Afterwards, with every task cancelled: every task completed within a bound (no
//! stranded waiter) and has a result; nothing is in flight and the executor's operations
//! submitted equal those completed (a multishot's extra results aside); no timer is left
//! armed; registered buffers claimed equal released and every one can be claimed again;
//! every provided buffer is back in the ring; the bytes (or connections) the peers fed
//! equal those the tasks reported plus those left unread (a cancel never loses a
//! completion); the process's descriptors are back to their baseline.

#[path = "net_util/mod.rs"]
mod net_util;
#[path = "soak_util/mod.rs"]
mod soak_util;

use core::future::Future;
use core::pin::pin;
use core::task::Poll;
use core::time::Duration;
use keel_core::{Fiber, TaskAttrs, TaskHandle, TaskSlot, rt};
use keel_linux::RingConfig;
use keel_linux::fs::{self, FiberFs, File, FixedBuf};
use keel_linux::net::{self, FiberNet, Socket};
use net_util::{executor_with, fattrs, ring};
use soak_util::{Rng, fd_count, seed, soak_time};
use std::cell::Cell;
use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::rc::Rc;
use std::time::Instant;

/// Tasks at once.
const W: usize = 8;
/// Registered buffers (fewer than tasks: claims wait) and provided buffers.
const REG_BUFS: u16 = 2;
const PBUFS: u16 = 4;

#[derive(Copy, Clone, Debug, PartialEq)]
enum Kind {
    Yield,
    Sleep,
    OpenClose,
    Read,
    Write,
    Recv,
    Accept,
    Registered,
    Provided,
}

/// What the tasks of one soak share: their descriptors and the counters they report to.
struct Fix {
    kind: Kind,
    /// Per task: the keel side (a pipe end, a socket) and the peer the test feeds or drains.
    files: Vec<Rc<File>>,
    socks: Vec<Rc<Socket>>,
    peers: Vec<OwnedFd>,
    streams: Vec<UnixStream>,
    listener: Option<Rc<Socket>>,
    listen_path: std::path::PathBuf,
    clients: Vec<UnixStream>,
    path: String,
    /// Bytes or connections the test fed, and what the tasks reported.
    fed: Cell<u64>,
    got: Rc<Cell<u64>>,
    claims: Rc<Cell<u64>>,
    releases: Rc<Cell<u64>>,
    /// Operation futures dropped before they completed: the driver gives their results
    /// back without reporting them to the executor (completion rule 3).
    given_up: Rc<Cell<u64>>,
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both were just made and are ours.
    unsafe { (std::os::fd::FromRawFd::from_raw_fd(fds[0]), std::os::fd::FromRawFd::from_raw_fd(fds[1])) }
}

fn nonblocking(fd: RawFd) {
    // SAFETY: flag changes on a descriptor the test owns.
    unsafe { libc::fcntl(fd, libc::F_SETFL, libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK) };
}

/// Reads everything `fd` holds now (non-blocking); returns the byte count.
fn drain(fd: RawFd) -> u64 {
    let mut buf = [0u8; 65536];
    let mut n = 0;
    loop {
        // SAFETY: `buf` is valid for its length.
        let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if r <= 0 {
            return n;
        }
        n += r as u64;
    }
}

impl Fix {
    fn new(kind: Kind, dir: &std::path::Path) -> Fix {
        let path = dir.join("file");
        std::fs::write(&path, vec![7u8; 4096]).unwrap();
        let mut fix = Fix {
            kind,
            files: Vec::new(),
            socks: Vec::new(),
            peers: Vec::new(),
            streams: Vec::new(),
            listener: None,
            listen_path: dir.join("listener"),
            clients: Vec::new(),
            path: path.to_str().unwrap().to_owned(),
            fed: Cell::new(0),
            got: Rc::new(Cell::new(0)),
            claims: Rc::new(Cell::new(0)),
            releases: Rc::new(Cell::new(0)),
            given_up: Rc::new(Cell::new(0)),
        };
        for _ in 0..W {
            match kind {
                Kind::Read => {
                    let (r, w) = pipe();
                    nonblocking(w.as_raw_fd());
                    fix.files.push(Rc::new(File::from(r)));
                    fix.peers.push(w);
                }
                Kind::Write => {
                    let (r, w) = pipe();
                    nonblocking(r.as_raw_fd());
                    fix.files.push(Rc::new(File::from(w)));
                    fix.peers.push(r);
                }
                Kind::Recv | Kind::Provided => {
                    let (a, b) = UnixStream::pair().unwrap();
                    b.set_nonblocking(true).unwrap();
                    fix.socks.push(Rc::new(Socket::from(OwnedFd::from(a))));
                    fix.streams.push(b);
                }
                Kind::Registered => {
                    fix.files.push(Rc::new(File::from(OwnedFd::from(std::fs::File::open(&path).unwrap()))))
                }
                _ => {}
            }
        }
        if kind == Kind::Accept {
            let l = UnixListener::bind(&fix.listen_path).unwrap();
            fix.listener = Some(Rc::new(Socket::from(OwnedFd::from(l))));
        }
        fix
    }

    /// One random poke from the peers' side: bytes in, bytes out, or a connection.
    fn feed(&mut self, rng: &mut Rng) {
        let i = rng.below(W as u64) as usize;
        match self.kind {
            Kind::Read => {
                let n = 1 + rng.below(64) as usize;
                let buf = [b'r'; 64];
                // SAFETY: `buf` is valid for `n <= 64` bytes; the write end is ours.
                let r = unsafe { libc::write(self.peers[i].as_raw_fd(), buf.as_ptr().cast(), n) };
                if r > 0 {
                    self.fed.set(self.fed.get() + r as u64);
                }
            }
            Kind::Write => {
                let n = drain(self.peers[i].as_raw_fd());
                self.fed.set(self.fed.get() + n);
            }
            Kind::Recv | Kind::Provided => {
                let n = 1 + rng.below(200) as usize;
                if let Ok(k) = self.streams[i].write(&[b's'; 200][..n]) {
                    self.fed.set(self.fed.get() + k as u64);
                }
            }
            Kind::Accept => {
                // Bounded: a full backlog would block a Unix-domain connect.
                if self.fed.get() - self.got.get() < 16 {
                    self.clients.push(UnixStream::connect(&self.listen_path).unwrap());
                    self.fed.set(self.fed.get() + 1);
                    if self.clients.len() > 64 {
                        self.clients.remove(0); // closed: its accepted end stays valid
                    }
                }
            }
            _ => {}
        }
    }

    /// What is still unread at the end: added to what the tasks reported, it must equal
    /// what was fed (for a write soak: what the tasks wrote equals what was drained).
    fn leftover(&mut self) -> u64 {
        match self.kind {
            Kind::Read => self
                .files
                .iter()
                .map(|f| {
                    nonblocking(f.fd());
                    drain(f.fd())
                })
                .sum(),
            Kind::Write => {
                let n: u64 = self.peers.iter().map(|p| drain(p.as_raw_fd())).sum();
                self.fed.set(self.fed.get() + n);
                0
            }
            Kind::Recv | Kind::Provided => self
                .socks
                .iter()
                .map(|s| {
                    nonblocking(s.fd());
                    drain(s.fd())
                })
                .sum(),
            Kind::Accept => {
                let l = self.listener.as_ref().unwrap().fd();
                nonblocking(l);
                let mut n = 0;
                loop {
                    // SAFETY: accepting on the test's listener; the result is closed at once.
                    let c =
                        unsafe { libc::accept4(l, core::ptr::null_mut(), core::ptr::null_mut(), libc::SOCK_CLOEXEC) };
                    if c < 0 {
                        return n;
                    }
                    // SAFETY: just accepted, ours.
                    unsafe { libc::close(c) };
                    n += 1;
                }
            }
            _ => 0,
        }
    }
}

/// A registered buffer whose release is counted (its drop).
struct Held(Option<FixedBuf>, Rc<Cell<u64>>);

impl Drop for Held {
    fn drop(&mut self) {
        if self.0.take().is_some() {
            self.1.set(self.1.get() + 1);
        }
    }
}

/// Polls `f` at most `polls + 1` times, then drops it (a future given up mid-flight).
async fn race<F: Future>(f: F, polls: u64) -> Option<F::Output> {
    let mut f = pin!(f);
    let mut left = polls;
    core::future::poll_fn(|cx| match f.as_mut().poll(cx) {
        Poll::Ready(v) => Poll::Ready(Some(v)),
        Poll::Pending if left == 0 => Poll::Ready(None),
        Poll::Pending => {
            left -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

/// What one task takes with it.
#[derive(Clone)]
struct Ctx {
    kind: Kind,
    file: Option<Rc<File>>,
    sock: Option<Rc<Socket>>,
    path: String,
    got: Rc<Cell<u64>>,
    claims: Rc<Cell<u64>>,
    releases: Rc<Cell<u64>>,
    given_up: Rc<Cell<u64>>,
    /// Iterations before the task ends on its own (if not cancelled first).
    iters: u64,
    seed: u64,
}

impl Ctx {
    fn add(&self, n: u64) {
        self.got.set(self.got.get() + n);
    }
    fn claimed(&self, b: FixedBuf) -> Held {
        self.claims.set(self.claims.get() + 1);
        Held(Some(b), self.releases.clone())
    }
}

fn fiber_body(f: &mut Fiber, c: Ctx) -> keel_core::TaskResult {
    let mut rng = Rng::new(c.seed);
    let cpath = CString::new(c.path.clone()).unwrap();
    let mut buf = [0u8; 4096];
    for _ in 0..c.iters {
        match c.kind {
            Kind::Yield => f.yield_now()?,
            Kind::Sleep => f.sleep(Duration::from_micros(rng.below(2000)))?,
            Kind::OpenClose => match f.open(&cpath, libc::O_RDONLY, 0) {
                Ok(file) if rng.one_in(2) => {
                    let _ = f.close(file);
                }
                Ok(file) => drop(file),
                Err(_) => return Ok(1),
            },
            Kind::Read => match f.read(c.file.as_ref().unwrap(), &mut buf[..1 + rng.below(64) as usize], 0) {
                Ok(n) => c.add(n as u64),
                Err(_) => return Ok(1),
            },
            Kind::Write => match f.write(c.file.as_ref().unwrap(), &buf[..1 + rng.below(4096) as usize], 0) {
                Ok(n) => c.add(n as u64),
                Err(_) => return Ok(1),
            },
            Kind::Recv => match f.recv(&**c.sock.as_ref().unwrap(), &mut buf[..1 + rng.below(256) as usize]) {
                Ok(n) => c.add(n as u64),
                Err(_) => return Ok(1),
            },
            Kind::Accept => match f.accept(&**c.sock.as_ref().unwrap()) {
                Ok(s) => {
                    c.add(1);
                    if rng.one_in(2) {
                        let _ = f.close_socket(s);
                    }
                }
                Err(_) => return Ok(1),
            },
            Kind::Registered => {
                let mut held = match f.claim_buffer() {
                    Ok(b) => c.claimed(b),
                    Err(_) => return Ok(1),
                };
                let r = f.read_fixed(c.file.as_ref().unwrap(), held.0.as_mut().unwrap(), 4096, 0);
                if r.is_err() || (rng.one_in(2) && f.yield_now().is_err()) {
                    return Ok(1);
                }
            }
            Kind::Provided => {
                let s = &**c.sock.as_ref().unwrap();
                if rng.one_in(2) {
                    match f.recv_provided(s) {
                        Ok(Some(b)) => c.add(b.len() as u64),
                        _ => return Ok(1),
                    }
                } else {
                    // A multishot is drained to its end: results it queued are not given
                    // up (dropping it with results queued would give them back unread).
                    let Ok(mut m) = f.recv_multi(s) else { return Ok(1) };
                    while let Ok(Some(b)) = f.next_recv(&mut m) {
                        c.add(b.len() as u64);
                    }
                    return Ok(1);
                }
            }
        }
    }
    Ok(0)
}

async fn future_body(c: Ctx) -> u64 {
    let mut rng = Rng::new(c.seed);
    for _ in 0..c.iters {
        match c.kind {
            Kind::Yield => {
                if rng.one_in(4) {
                    let _ = race(rt::yield_now(), rng.below(2)).await;
                } else if rt::yield_now().await.is_err() {
                    return 1;
                }
            }
            Kind::Sleep => {
                let d = Duration::from_micros(rng.below(2000));
                if rng.one_in(3) {
                    if let Some(Err(_)) = race(rt::sleep(d), rng.below(4)).await {
                        return 1;
                    }
                } else if rt::sleep(d).await.is_err() {
                    return 1;
                }
            }
            Kind::OpenClose => {
                // A dropped open's descriptor is closed by the driver (completion rule 3).
                let r = if rng.one_in(3) {
                    race(fs::open(&c.path, libc::O_RDONLY, 0), rng.below(3)).await
                } else {
                    Some(fs::open(&c.path, libc::O_RDONLY, 0).await)
                };
                match r {
                    Some(Ok(file)) if rng.one_in(2) => {
                        let _ = fs::close(file).await;
                    }
                    Some(Ok(file)) => drop(file),
                    Some(Err(_)) => return 1,
                    None => c.given_up.set(c.given_up.get() + 1),
                }
            }
            Kind::Read => {
                let len = 1 + rng.below(64) as usize;
                match fs::read(c.file.as_ref().unwrap(), Vec::with_capacity(len), 0).await {
                    (Ok(n), _) => c.add(n as u64),
                    _ => return 1,
                }
            }
            Kind::Write => {
                let len = 1 + rng.below(4096) as usize;
                match fs::write(c.file.as_ref().unwrap(), vec![b'w'; len], 0).await {
                    (Ok(n), _) => c.add(n as u64),
                    _ => return 1,
                }
            }
            Kind::Recv => {
                let len = 1 + rng.below(256) as usize;
                match net::future::recv(&**c.sock.as_ref().unwrap(), Vec::with_capacity(len)).await {
                    (Ok(n), _) => c.add(n as u64),
                    _ => return 1,
                }
            }
            Kind::Accept => match net::future::accept(&**c.sock.as_ref().unwrap()).await {
                Ok(s) => {
                    c.add(1);
                    if rng.one_in(2) {
                        let _ = net::future::close_socket(s).await;
                    }
                }
                Err(_) => return 1,
            },
            Kind::Registered => {
                let mut held = match fs::claim_buffer().await {
                    Ok(b) => c.claimed(b),
                    Err(_) => return 1,
                };
                let b = held.0.take().unwrap();
                let (r, b) = fs::read_fixed(c.file.as_ref().unwrap(), b, 4096, 0).await;
                held.0 = Some(b);
                if r.is_err() || (rng.one_in(2) && rt::yield_now().await.is_err()) {
                    return 1;
                }
            }
            Kind::Provided => {
                let s = &**c.sock.as_ref().unwrap();
                if rng.one_in(2) {
                    match net::future::recv_provided(s).await {
                        Ok(Some(b)) => c.add(b.len() as u64),
                        _ => return 1,
                    }
                } else {
                    let Ok(mut m) = net::future::recv_multi(s).await else { return 1 };
                    while let Ok(Some(b)) = net::future::next_recv(&mut m).await {
                        c.add(b.len() as u64);
                    }
                    return 1;
                }
            }
        }
    }
    0
}

fn soak(kind: Kind) {
    let seed = seed(&format!("cancel soak {kind:?}"));
    let mut rng = Rng::new(seed);
    let time = soak_time(Duration::from_millis(500));
    let dir = std::env::temp_dir().join(format!("keel-{}-soak-{kind:?}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut d = ring(RingConfig { registered_buffers: REG_BUFS, ..RingConfig::default() });
    d.enable_provided_buffers(PBUFS, 64).unwrap();
    let ex = executor_with(d);
    let ex = ex.as_ref();
    let mut fix = Fix::new(kind, &dir);
    let fd_base = fd_count(None);
    let slots: Vec<&'static TaskSlot<8192>> = (0..W).map(|_| &*Box::leak(Box::new(TaskSlot::new()))).collect();
    let mut handles: Vec<TaskHandle> = slots.iter().map(|s| s.create(TaskAttrs::default()).unwrap()).collect();
    let mut live = [false; W];
    let (mut runs, mut cancels, mut ended) = (0u64, 0u64, 0u64);
    let t0 = Instant::now();
    loop {
        let over = t0.elapsed() >= time;
        for i in 0..W {
            if live[i] && matches!(ex.result(handles[i]), Ok(Some(_))) {
                live[i] = false;
                ended += 1;
            }
            if !live[i] && !over {
                let c = Ctx {
                    kind,
                    file: fix.files.get(i).cloned(),
                    sock: fix.socks.get(i).cloned().or_else(|| fix.listener.clone()),
                    path: fix.path.clone(),
                    got: fix.got.clone(),
                    claims: fix.claims.clone(),
                    releases: fix.releases.clone(),
                    given_up: fix.given_up.clone(),
                    iters: 1 + rng.below(200),
                    seed: rng.next(),
                };
                handles[i] = if rng.one_in(2) {
                    ex.attach_fiber(handles[i], fattrs(), move |f: &mut Fiber| fiber_body(f, c))
                        .map_err(|_| "attach fiber")
                        .unwrap()
                } else {
                    ex.attach(handles[i], future_body(c)).map_err(|_| "attach future").unwrap()
                };
                live[i] = true;
                runs += 1;
            }
        }
        if over {
            break;
        }
        let _ = ex.run(1 + rng.below(8) as usize, Some(Duration::from_micros(200)));
        for _ in 0..rng.below(3) {
            fix.feed(&mut rng);
        }
        if rng.one_in(3) {
            let i = rng.below(W as u64) as usize;
            if live[i] && ex.cancel(handles[i]).is_ok() {
                cancels += 1;
            }
        }
    }
    // The end: every task cancelled must complete, with nothing left waiting.
    for i in 0..W {
        if live[i] {
            let _ = ex.cancel(handles[i]);
        }
    }
    let t1 = Instant::now();
    while ex.attached() > 0 && t1.elapsed() < Duration::from_secs(5) {
        let _ = ex.run(1024, Some(Duration::from_millis(5)));
    }
    let stranded: Vec<_> = (0..W).filter(|&i| live[i] && !matches!(ex.result(handles[i]), Ok(Some(_)))).collect();
    let states: Vec<_> = stranded.iter().map(|&i| ex.state(handles[i])).collect();
    assert!(
        stranded.is_empty(),
        "{kind:?} (seed {seed}): tasks {stranded:?} never completed once cancelled: {states:?}"
    );
    let st = ex.stats();
    let in_flight = ex.with_driver(|d| keel_core::Driver::in_flight(&**d)).unwrap();
    let rs = ex.with_driver(|d| d.stats()).unwrap();
    let pb = ex
        .with_driver(|d| {
            // SAFETY: reads statistics only: nothing replaced, no executor-owned driver
            // method called (keel-core driver rule 2).
            unsafe { d.get_mut() }.provided_buffer_stats().unwrap()
        })
        .unwrap();
    let left = fix.leftover();
    eprintln!(
        "cancel soak {kind:?}: {:?}, {runs} runs, {cancels} cancels, {ended} ended; ops submitted {} completed {} \
         (ring: {} SQEs, {} CQEs), {} futures given up; fed {} = reported {} + left {left}; claims {} releases {}; pbuf {pb:?}",
        t0.elapsed(),
        st.io_submitted,
        st.io_completed,
        rs.submitted,
        rs.completed,
        fix.given_up.get(),
        fix.fed.get(),
        fix.got.get(),
        fix.claims.get(),
        fix.releases.get(),
    );
    assert_eq!(in_flight, 0, "{kind:?} (seed {seed}): nothing in flight");
    if kind == Kind::Provided {
        // A multishot posts several completions for one submission.
        assert!(st.io_completed >= st.io_submitted, "{kind:?} (seed {seed}): every operation completed");
    } else {
        // An operation whose future was dropped first completes in the driver only.
        let given_up = fix.given_up.get();
        assert!(
            st.io_completed <= st.io_submitted && st.io_submitted <= st.io_completed + given_up,
            "{kind:?} (seed {seed}): operations submitted ({}) equal completed ({}) and given up (at most {given_up})",
            st.io_submitted,
            st.io_completed
        );
    }
    assert_eq!(st.timers_armed, 0, "{kind:?} (seed {seed}): no timer left armed");
    assert_eq!(fix.claims.get(), fix.releases.get(), "{kind:?} (seed {seed}): registered buffers claimed = released");
    assert_eq!((pb.in_use, pb.available), (0, PBUFS), "{kind:?} (seed {seed}): every provided buffer is back");
    assert_eq!(
        fix.fed.get(),
        fix.got.get() + left,
        "{kind:?} (seed {seed}): fed = reported + unread (no lost completion)"
    );
    // Every registered buffer can be claimed again.
    let all = Rc::new(Cell::new(0));
    let a = all.clone();
    ex.attach_fiber(handles[0], fattrs(), move |f: &mut Fiber| {
        let bufs: Vec<_> = (0..REG_BUFS).map_while(|_| f.try_claim_buffer().ok()).collect();
        a.set(bufs.len());
        0u64
    })
    .map_err(|_| "attach")
    .unwrap();
    net_util::run_all(ex);
    assert_eq!(all.get(), REG_BUFS as usize, "{kind:?} (seed {seed}): every registered buffer is free");
    drop(std::mem::take(&mut fix.clients));
    assert_eq!(fd_count(None), fd_base, "{kind:?} (seed {seed}): descriptors back to their baseline");
    drop(fix);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(runs > W as u64 && cancels > 0, "{kind:?}: the soak cancelled something");
}

#[test]
fn soak_yield() {
    soak(Kind::Yield);
}

#[test]
fn soak_sleep() {
    soak(Kind::Sleep);
}

#[test]
fn soak_open_close() {
    soak(Kind::OpenClose);
}

#[test]
fn soak_read() {
    soak(Kind::Read);
}

#[test]
fn soak_write() {
    soak(Kind::Write);
}

#[test]
fn soak_recv() {
    soak(Kind::Recv);
}

#[test]
fn soak_accept() {
    soak(Kind::Accept);
}

#[test]
fn soak_registered_buffers() {
    soak(Kind::Registered);
}

#[test]
fn soak_provided_buffers() {
    soak(Kind::Provided);
}
