//! A task body may poll any number of keel futures at once, on the real
//! ring driver: every ordered pair drawn from {an owned-buffer op future (`fs::nop`),
//! `rt::sleep`, `rt::yield_now`, `rt::wait` (woken by another task), a provided-buffer
//! receive that waits for a buffer (`recv_provided`, pbuf rule 3), a multishot
//! `next_recv` that waits for one, a `fs::claim_buffer()` that waits for a registered
//! buffer (regbuf rules 2-4)}, joined (both polled until both are done) and selected (the
//! first ready wins, the other is dropped at once), while there is no room to submit:
//! (a) `Config::max_io_in_flight` (1) is reached by another task's read that completes
//! later, or (b) the ring's SQ (2 entries) is full of that task's reads, queued in the
//! same pass before the tested task runs (with i/o in flight a pass resumes every task
//! that was ready at its start before its enter; the tested task checks that
//! `submit_capacity()` is 0 when it starts). A second task, a future or a fiber, waits
//! for the same resources at the same time (room, the registered buffer, the provided
//! buffer), and the only buffer of each kind is held until everyone waits for it. Each
//! case runs twice: the tested task's branches complete, or the task is cancelled while
//! they wait (before the buffers come back), so what it waited for must pass on, or the
//! executor is dropped while the tasks wait for room or for the buffers.
//!
//! Every case asserts: every task completes with its expected result (each branch's, the
//! select's winner's; a cancelled branch's error); every receive still wanted met the empty ring once and got the
//! buffer when it came back, every claim got the registered buffer with the holder's
//! byte; nothing is in flight afterwards; the provided-buffer ring has all its buffers
//! back; the process's descriptors are back at the baseline; and nothing hangs (every
//! run is bounded, 5 s a case; a stranded task fails the case by name with every task's
//! state).

#[path = "net_util/mod.rs"]
mod util;

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;
use keel_core::{Config, Driver, Executor, Fiber, SuspendReason, TaskError, TaskHandle, TaskState, rt};
use keel_linux::fs::{self, BufferError, FiberFs, File};
use keel_linux::net::{self, FiberNet, Socket};
use keel_linux::{MmapStacks, RingConfig, RingDriver};
use std::cell::{Cell, RefCell};
use std::io::Write;
use std::os::fd::{IntoRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use util::{Ex, fattrs, task};

/// The descriptor count is process-wide: the tests of this file run one at a time (also
/// under `cargo test`'s threads).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// `fs::nop()`: needs room to submit.
    Op,
    Sleep,
    Yield,
    /// `rt::wait()`, woken by the holder once it released everything.
    Wait,
    /// `net::future::recv_provided` with the ring's only buffer held: submits (needs
    /// room), meets ENOBUFS and waits for the buffer.
    Pbuf,
    /// `fs::claim_buffer()` with the only registered buffer held.
    Claim,
    /// `net::future::next_recv` of a multishot receive with the ring's only buffer held:
    /// arms (needs room), ends with ENOBUFS, waits for the buffer, re-arms; the
    /// `Multishot` is dropped after the first buffer (its op cancelled).
    Multi,
}

const KINDS: [Kind; 7] = [Kind::Op, Kind::Sleep, Kind::Yield, Kind::Wait, Kind::Pbuf, Kind::Claim, Kind::Multi];

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Combine {
    Join,
    Select,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Full {
    /// `max_io_in_flight` is 1 and the holder's read holds it.
    InFlightLimit,
    /// The SQ has 2 entries; the holder queued 2 reads in the tested task's pass (its anchor read is in flight).
    Sq,
}

/// What the second task waiting for room and the buffers is.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Waiter {
    /// Joins `fs::nop`, `claim_buffer` and a provided-buffer receive.
    Future,
    /// A provided-buffer receive, then `claim_buffer`, each blocking.
    Fiber,
}

/// What a branch ended with (checked against its kind).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Out {
    Op,
    Sleep,
    Yield,
    Wait,
    /// The received byte.
    Pbuf(u8),
    /// The claimed buffer's index and its first byte.
    Claim(u16, u8),
    /// The branch's future returned an error: what it was and the errno (-1: keel's
    /// `Cancelled`, or `BufferError::Cancelled`).
    Failed(&'static str, i32),
}

impl Out {
    /// A cancelled task's branch may end like this.
    fn is_cancelled(self) -> bool {
        matches!(self, Out::Failed(_, c) if c == -1 || c == libc::ECANCELED)
    }
}

/// How the tested task ends.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum End {
    /// Its branches complete after the release.
    Completes,
    /// It is cancelled while its branches wait (for room, a buffer, a wake), before the
    /// release: whatever it waits for is passed on to the second waiter (waitq rule 3,
    /// room rule 5).
    Cancelled,
    /// The executor is dropped while the tasks wait for room (the holder's reads in
    /// flight, never completed): the drop ends, and every descriptor the tasks held is
    /// closed.
    DroppedWaitingForRoom,
    /// The executor is dropped while the tasks wait for the buffers the holder has.
    DroppedWaitingForBuffers,
}

type Branch<'a> = Pin<Box<dyn Future<Output = Out> + 'a>>;

/// The byte the provided-buffer receive of branch `i` finds on its socket.
fn pbuf_byte(i: usize) -> u8 {
    b'p' + i as u8
}

/// The byte the holder writes into the registered buffer before it releases it.
const CLAIM_BYTE: u8 = 0x5a;

fn expected(k: Kind, i: usize) -> Out {
    match k {
        Kind::Op => Out::Op,
        Kind::Sleep => Out::Sleep,
        Kind::Yield => Out::Yield,
        Kind::Wait => Out::Wait,
        Kind::Pbuf | Kind::Multi => Out::Pbuf(pbuf_byte(i)),
        Kind::Claim => Out::Claim(0, CLAIM_BYTE),
    }
}

/// Branch `i` of kind `k`; `sock` is its own socket (data already written).
fn branch(k: Kind, sock: &'static Socket) -> Branch<'static> {
    match k {
        Kind::Op => Box::pin(async {
            match fs::nop().await {
                Ok(_) => Out::Op,
                Err(e) => Out::Failed("nop", e.0),
            }
        }),
        Kind::Sleep => Box::pin(async {
            match rt::sleep(Duration::from_millis(1)).await {
                Ok(()) => Out::Sleep,
                Err(_) => Out::Failed("sleep", -1),
            }
        }),
        Kind::Yield => Box::pin(async {
            match rt::yield_now().await {
                Ok(()) => Out::Yield,
                Err(_) => Out::Failed("yield_now", -1),
            }
        }),
        Kind::Wait => Box::pin(async {
            match rt::wait().await {
                Ok(()) => Out::Wait,
                Err(_) => Out::Failed("wait", -1),
            }
        }),
        Kind::Pbuf => Box::pin(async move {
            match net::future::recv_provided(sock).await {
                Ok(b) => {
                    let b = b.expect("data, not end of stream");
                    assert_eq!(b.len(), 1, "one byte was written");
                    Out::Pbuf(b[0]) // the buffer goes back here (pbuf rule 2)
                }
                Err(e) => Out::Failed("recv_provided", e.0),
            }
        }),
        Kind::Multi => Box::pin(async move {
            let mut m = match net::future::recv_multi(sock).await {
                Ok(m) => m,
                Err(e) => return Out::Failed("recv_multi", e.0),
            };
            match net::future::next_recv(&mut m).await {
                Ok(b) => {
                    let b = b.expect("data, not end of stream");
                    assert_eq!(b.len(), 1, "one byte was written");
                    Out::Pbuf(b[0]) // the buffer goes back here, and the multishot is cancelled
                }
                Err(e) => Out::Failed("next_recv", e.0),
            }
        }),
        Kind::Claim => Box::pin(async {
            match fs::claim_buffer().await {
                Ok(b) => Out::Claim(b.index(), b[0]), // released here (regbuf rule 3)
                Err(BufferError::Cancelled) => Out::Failed("claim_buffer", -1),
                Err(e) => panic!("claim_buffer: {e}"),
            }
        }),
    }
}

/// Both polled on every poll until both are ready.
async fn join2(mut a: Branch<'_>, mut b: Branch<'_>) -> [Option<Out>; 2] {
    let (mut ra, mut rb) = (None, None);
    core::future::poll_fn(|cx: &mut Context<'_>| {
        if ra.is_none()
            && let Poll::Ready(v) = a.as_mut().poll(cx)
        {
            ra = Some(v);
        }
        if rb.is_none()
            && let Poll::Ready(v) = b.as_mut().poll(cx)
        {
            rb = Some(v);
        }
        if ra.is_some() && rb.is_some() { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
    [ra, rb]
}

/// The first ready wins; the other is dropped at once.
async fn select2(a: Branch<'_>, b: Branch<'_>) -> [Option<Out>; 2] {
    let (mut a, mut b) = (Some(a), Some(b));
    let r = core::future::poll_fn(|cx: &mut Context<'_>| {
        if let Poll::Ready(v) = a.as_mut().unwrap().as_mut().poll(cx) {
            return Poll::Ready([Some(v), None]);
        }
        if let Poll::Ready(v) = b.as_mut().unwrap().as_mut().poll(cx) {
            return Poll::Ready([None, Some(v)]);
        }
        Poll::Pending
    })
    .await;
    drop((a, b));
    r
}

/// Polls `f` once with the task's context (its SQE is queued until the pass's enter).
async fn poll_once<F: Future + Unpin>(f: &mut F) -> bool {
    core::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *f).poll(cx).is_pending())).await
}

/// (submit capacity, ops in flight) as the running task sees them.
async fn room() -> (usize, usize) {
    core::future::poll_fn(|cx| {
        Poll::Ready(keel_core::io_status::with_driver::<RingDriver, _>(cx, |d| (d.submit_capacity(), d.in_flight())))
    })
    .await
    .expect("on the ring")
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn pipe() -> (RawFd, RawFd) {
    let mut p = [0; 2];
    // SAFETY: `p` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    (p[0], p[1])
}

/// A socket whose peer has already written `byte` (the peer is returned to keep the
/// stream open); the socket is leaked as `&'static` and closed by the caller through
/// the returned descriptor once the executor is gone.
fn socket_with(byte: u8) -> (&'static Socket, RawFd, UnixStream) {
    let (a, mut b) = UnixStream::pair().unwrap();
    b.write_all(&[byte]).unwrap();
    let fd = a.into_raw_fd();
    // SAFETY: `fd` came from `into_raw_fd`: ours, wrapped once; the test closes it once
    // after every task using it is done (ManuallyDrop: the wrapper never closes it).
    let s: &'static Socket = Box::leak(Box::new(std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(fd) })));
    (s, fd, b)
}

fn executor(full: Full) -> (Pin<Box<Ex>>, usize) {
    let (entries, limit) = match full {
        Full::InFlightLimit => (8, Some(1)),
        Full::Sq => (2, None),
    };
    let mut d = RingDriver::new(RingConfig {
        entries,
        cq_entries: 64,
        registered_buffers: 1,
        registered_buffer_size: 64,
        ..RingConfig::default()
    })
    .expect("io_uring is available on this kernel");
    d.enable_provided_buffers(1, 64).unwrap();
    let cfg =
        Config { max_io_in_flight: limit, fiber_panics: keel_linux::panic::config().fiber_panics, ..Config::default() };
    let ex = Box::pin(Executor::with_stacks(d, MmapStacks::new().unwrap(), cfg).unwrap());
    // The hog reads: the anchor (in flight before the tested task starts: all the limit
    // allows in (a)), and in (b) as many more as the SQ has entries, queued in the
    // tested task's pass.
    let hogs = match full {
        Full::InFlightLimit => 1,
        Full::Sq => 1 + entries as usize,
    };
    (ex, hogs)
}

fn state(ex: Pin<&Ex>, t: TaskHandle) -> String {
    format!("{:?} / {:?}", ex.state(t), ex.result(t))
}

fn case(a: Kind, b: Kind, combine: Combine, full: Full, waiter: Waiter, end: End) {
    let name = format!("{a:?}+{b:?} {combine:?} under full {full:?}, second waiter a {waiter:?}, tested task {end:?}");
    let fds0 = open_fds();
    let (exb, hogs) = executor(full);
    let ex = exb.as_ref();

    // The holder's socket (its provided buffer), the tested branches' and the second
    // waiter's sockets, each with one byte waiting.
    let (hs, hfd, hpeer) = socket_with(b'h');
    let (s0, fd0, peer0) = socket_with(pbuf_byte(0));
    let (s1, fd1, peer1) = socket_with(pbuf_byte(1));
    let (s2, fd2, peer2) = socket_with(b'w');
    let mut pipes = Vec::new();
    for _ in 0..hogs {
        pipes.push(pipe());
    }

    // The holder: takes the only registered buffer and the only provided buffer, puts
    // its anchor read (of a pipe nobody wrote yet) in flight, waits for `start`, then in
    // one poll fills the SQ with more such reads (b), and awaits them all; once they
    // complete and the test says `release`, it gives back the provided buffer, yields,
    // gives back the registered buffer (with CLAIM_BYTE in it), and wakes the tested task.
    let start = Rc::new(Cell::new(false));
    let release = Rc::new(Cell::new(false));
    let tested: Rc<Cell<Option<TaskHandle>>> = Rc::new(Cell::new(None));
    let hog_fds: Vec<RawFd> = pipes.iter().map(|p| p.0).collect();
    let (st, rl, tt) = (start.clone(), release.clone(), tested.clone());
    let holder = ex
        .attach(task(), async move {
            let mut reg = fs::claim_buffer().await.expect("the only registered buffer is free");
            reg[0] = CLAIM_BYTE;
            let pb = net::future::recv_provided(hs).await.expect("recv").expect("data");
            assert_eq!(&*pb, b"h");
            // SAFETY: the pipes' read ends are the test's; wrapped once, closed by `File`'s
            // drop when the holder ends (after its reads completed).
            let files: Vec<File> = hog_fds.iter().map(|&fd| unsafe { File::from_raw_fd(fd) }).collect();
            let mut reads: Vec<_> = files.iter().map(|f| Box::pin(fs::read(f, Vec::with_capacity(8), 0))).collect();
            // The anchor read goes in flight now: with i/o in flight a pass resumes every
            // task that was ready at its start before it enters (the `run` module doc), so
            // the reads queued after `start` stay in the SQ while the tested task runs.
            assert!(poll_once(&mut reads[0]).await, "a read of an empty pipe waits");
            while !st.get() {
                rt::yield_now().await?;
            }
            for r in reads[1..].iter_mut() {
                assert!(poll_once(r).await, "a read of an empty pipe waits");
            }
            for r in reads {
                let (res, buf) = r.await;
                assert_eq!((res, &buf[..]), (Ok(1), &b"x"[..]), "hog read");
            }
            drop(files);
            // The test lets go once the second waiter waits for the buffers.
            while !rl.get() {
                rt::yield_now().await?;
            }
            drop(pb); // the provided buffer goes back: the first receive waiting for it gets it
            rt::yield_now().await?;
            drop(reg); // the registered buffer goes back: the first claim gets it
            rt::yield_now().await?;
            tt.get().expect("the tested task is attached").wake();
            Ok(7)
        })
        .unwrap();
    let t0 = Instant::now();
    let deadline = |what: &str, ex: Pin<&Ex>, ts: &[TaskHandle]| {
        let states: Vec<String> = ts.iter().map(|&t| state(ex, t)).collect();
        assert!(t0.elapsed() < Duration::from_secs(5), "{name}: {what}: tasks stranded: {states:?}");
    };
    // The holder has both buffers and its anchor read in flight, and yields for `start`.
    while ex.with_driver(|d| pstats(d).in_use).unwrap() == 0 || ex.with_driver(|d| d.in_flight()).unwrap() != 1 {
        deadline("holder set-up", ex, &[holder]);
        let _ = ex.run(16, Some(Duration::from_millis(5)));
    }

    // The tested task: runs right after the holder's poll that filled the SQ (same pass),
    // records the room it sees, then polls the pair.
    let no_room = Rc::new(Cell::new(None));
    let outs: Rc<RefCell<Option<[Option<Out>; 2]>>> = Rc::new(RefCell::new(None));
    let (nr, o) = (no_room.clone(), outs.clone());
    let t = ex
        .attach(task(), async move {
            nr.set(Some(room().await));
            let (x, y) = (branch(a, s0), branch(b, s1));
            let r = match combine {
                Combine::Join => join2(x, y).await,
                Combine::Select => select2(x, y).await,
            };
            *o.borrow_mut() = Some(r);
            if r.iter().flatten().any(|o| matches!(o, Out::Failed(..))) {
                return Err(TaskError::Cancelled);
            }
            Ok(1)
        })
        .unwrap();
    tested.set(Some(t));

    // The second task waits for the same resources: room, the registered buffer and a
    // provided buffer, all at once.
    let fiber_end: Rc<Cell<Option<i32>>> = Rc::new(Cell::new(None));
    let fe = fiber_end.clone();
    let w = match waiter {
        Waiter::Future => ex
            .attach(task(), async move {
                let mut op: Branch<'static> = branch(Kind::Op, s2);
                let mut cl: Branch<'static> = branch(Kind::Claim, s2);
                let mut rv: Branch<'static> = branch(Kind::Pbuf, s2);
                let mut r: [Option<Out>; 3] = [None; 3];
                core::future::poll_fn(|cx: &mut Context<'_>| {
                    for (slot, f) in r.iter_mut().zip([&mut op, &mut cl, &mut rv]) {
                        if slot.is_none()
                            && let Poll::Ready(v) = f.as_mut().poll(cx)
                        {
                            *slot = Some(v);
                        }
                    }
                    if r.iter().all(Option::is_some) { Poll::Ready(()) } else { Poll::Pending }
                })
                .await;
                assert_eq!(
                    r,
                    [Some(Out::Op), Some(Out::Claim(0, CLAIM_BYTE)), Some(Out::Pbuf(b'w'))],
                    "the second waiter's results"
                );
                Ok(2)
            })
            .unwrap(),
        // A fiber shares the same queues: its receive waits for room, then for the
        // provided buffer; then it claims the registered buffer.
        Waiter::Fiber => ex
            .attach_fiber(task(), fattrs(), move |f: &mut Fiber| -> keel_core::TaskResult {
                let b = match f.recv_provided(s2) {
                    Ok(b) => b.expect("data, not end of stream"),
                    Err(e) => {
                        fe.set(Some(e.0)); // the executor's drop resumes it with ECANCELED
                        return Err(TaskError::Failed(3));
                    }
                };
                assert_eq!(&*b, b"w");
                drop(b);
                let c = match f.claim_buffer() {
                    Ok(c) => c,
                    Err(BufferError::Cancelled) => {
                        fe.set(Some(-1));
                        return Err(TaskError::Failed(4));
                    }
                    Err(e) => panic!("fiber claim_buffer: {e}"),
                };
                assert_eq!((c.index(), c[0]), (0, CLAIM_BYTE));
                Ok(2)
            })
            .unwrap(),
    };

    start.set(true);
    let all = [holder, t, w];
    // Until the tested task has started and the second waiter waits (for room first).
    while no_room.get().is_none() || !matches!(ex.state(w), Ok(TaskState::Suspended(_))) {
        deadline("before the release", ex, &all);
        let _ = ex.run(64, Some(Duration::from_millis(1)));
    }
    let nr = no_room.get().unwrap_or_else(|| panic!("{name}: the tested task did not start ({})", state(ex, t)));
    match full {
        Full::Sq => assert_eq!(
            nr.0, 0,
            "{name}: the SQ must be full when the tested task starts (capacity, in flight) = {nr:?}"
        ),
        Full::InFlightLimit => assert!(
            nr.1 >= 1,
            "{name}: the in-flight limit must be reached when the tested task starts (capacity, in flight) = {nr:?}"
        ),
    }
    assert_eq!(ex.result(w), Ok(None), "{name}: the second waiter cannot be done before the release: {}", state(ex, w));
    if end == End::DroppedWaitingForRoom {
        drop_executor(&name, exb, pipes, [hfd, fd0, fd1, fd2], (hpeer, peer0, peer1, peer2), fds0);
        // A started fiber is resumed with `Cancelled` and unwinds (its receive waited for
        // room).
        assert_eq!(fiber_end.get(), (waiter == Waiter::Fiber).then_some(libc::ECANCELED), "{name}: the fiber's end");
        return;
    }
    // The hog reads complete.
    for p in &pipes {
        // SAFETY: writes one byte from a live local to the pipe's write end.
        assert_eq!(unsafe { libc::write(p.1, b"x".as_ptr().cast(), 1) }, 1);
    }
    // Room comes back; every receive that is still wanted meets the empty ring (pbuf
    // rule 3) and waits for the buffer, as do the claims: the second waiter's always,
    // the tested task's in a join (a select may end first, with a branch that needs
    // no buffer).
    let pbufs = [a, b].iter().filter(|&&k| matches!(k, Kind::Pbuf | Kind::Multi)).count() as u64;
    let exhausted = || ex.with_driver(|d| pstats(d).exhausted).unwrap();
    while ex.state(w) != Ok(TaskState::Suspended(SuspendReason::Wait))
        || !(exhausted() == 1 + pbufs || (combine == Combine::Select && ex.result(t) != Ok(None)))
    {
        deadline(&format!("every receive meets the empty ring ({} of {})", exhausted(), 1 + pbufs), ex, &all);
        let _ = ex.run(64, Some(Duration::from_millis(1)));
    }
    assert!(exhausted() <= 1 + pbufs, "{name}: a receive met the empty ring twice: {}", exhausted());
    let buffer_waits = |k: Kind| matches!(k, Kind::Pbuf | Kind::Claim | Kind::Multi);
    if (combine == Combine::Join && (buffer_waits(a) || buffer_waits(b))) || (buffer_waits(a) && buffer_waits(b)) {
        assert_eq!(ex.result(t), Ok(None), "{name}: a branch waits for a buffer the holder has: {}", state(ex, t));
    }
    if end == End::DroppedWaitingForBuffers {
        drop_executor(&name, exb, pipes, [hfd, fd0, fd1, fd2], (hpeer, peer0, peer1, peer2), fds0);
        // Its receive waited for the provided buffer.
        assert_eq!(fiber_end.get(), (waiter == Waiter::Fiber).then_some(libc::ECANCELED), "{name}: the fiber's end");
        return;
    }
    let done_before_cancel = ex.result(t) != Ok(None);
    if end == End::Cancelled && !done_before_cancel {
        ex.cancel(t).unwrap_or_else(|e| panic!("{name}: cancel: {e:?}"));
    }
    release.set(true);
    while ex.attached() > 0 {
        deadline("after the release", ex, &all);
        let _ = ex.run(64, Some(Duration::from_millis(5)));
    }

    assert_eq!(ex.result(holder), Ok(Some(Ok(7))), "{name}: holder");
    assert_eq!(ex.result(w), Ok(Some(Ok(2))), "{name}: second waiter");
    let r = outs.borrow_mut().take().expect("the tested task stored its results");
    if end == End::Completes || done_before_cancel {
        assert_eq!(ex.result(t), Ok(Some(Ok(1))), "{name}: tested");
        match combine {
            Combine::Join => {
                assert_eq!(r, [Some(expected(a, 0)), Some(expected(b, 1))], "{name}: both branches' results")
            }
            Combine::Select => assert!(
                r == [Some(expected(a, 0)), None] || r == [None, Some(expected(b, 1))],
                "{name}: exactly one branch wins, with its result: {r:?}"
            ),
        }
    } else {
        // Each branch that was still waiting ends with the cancel; one that had finished
        // keeps its result; the select's first ready branch is the cancelled one.
        assert_eq!(ex.result(t), Ok(Some(Err(TaskError::Cancelled))), "{name}: tested: {r:?}");
        let ok = |o: Option<Out>, k: Kind, i: usize| o.is_some_and(|o| o == expected(k, i) || o.is_cancelled());
        match combine {
            Combine::Join => assert!(ok(r[0], a, 0) && ok(r[1], b, 1), "{name}: both branches end: {r:?}"),
            Combine::Select => assert!(
                (ok(r[0], a, 0) && r[1].is_none()) || (r[0].is_none() && ok(r[1], b, 1)),
                "{name}: exactly one branch ends the select: {r:?}"
            ),
        }
    }
    // A dropped multishot's cancel may still be in flight: it resolves without any task.
    while ex.with_driver(|d| d.in_flight()).unwrap() > 0 {
        deadline("operations left in flight", ex, &all);
        let _ = ex.run(64, Some(Duration::from_millis(5)));
    }
    let ps = ex.with_driver(pstats).unwrap();
    assert_eq!((ps.in_use, ps.available), (0, ps.count), "{name}: provided buffers not all back: {ps:?}");
    drop(exb);
    close_all(pipes, [hfd, fd0, fd1, fd2], (hpeer, peer0, peer1, peer2));
    assert_eq!(open_fds(), fds0, "{name}: descriptors left open");
}

/// Drops the executor while its tasks wait, then checks that every descriptor they held
/// is closed. A watchdog completes the holder's reads after 5 s, so a drop that waits for
/// them ends (and fails) instead of hanging.
fn drop_executor(
    name: &str,
    exb: Pin<Box<Ex>>,
    pipes: Vec<(RawFd, RawFd)>,
    socks: [RawFd; 4],
    peers: (UnixStream, UnixStream, UnixStream, UnixStream),
    fds0: usize,
) {
    let done = Arc::new(AtomicBool::new(false));
    let (d, wfds): (_, Vec<RawFd>) = (done.clone(), pipes.iter().map(|p| p.1).collect());
    let wd = std::thread::spawn(move || {
        let t0 = Instant::now();
        // Acquire: pairs with the Release store after the drop returned.
        while !d.load(Ordering::Acquire) && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(2));
        }
        if !d.load(Ordering::Acquire) {
            for fd in wfds {
                // SAFETY: writes one byte from a static to a pipe write end the test closes
                // only after this thread was joined.
                unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) };
            }
        }
    });
    let t1 = Instant::now();
    drop(exb);
    let took = t1.elapsed();
    // Release: pairs with the watchdog's Acquire loads.
    done.store(true, Ordering::Release);
    wd.join().unwrap();
    assert!(took < Duration::from_secs(4), "{name}: the executor's drop waited {took:?} for the holder's reads");
    close_all(pipes, socks, peers);
    assert_eq!(open_fds(), fds0, "{name}: descriptors left open after the executor's drop");
}

/// Closes the test's own descriptors, after the executor is gone.
fn close_all(pipes: Vec<(RawFd, RawFd)>, socks: [RawFd; 4], peers: (UnixStream, UnixStream, UnixStream, UnixStream)) {
    for p in pipes {
        // SAFETY: the write ends are the test's (the read ends were the holder's `File`s).
        unsafe { libc::close(p.1) };
    }
    for fd in socks {
        // SAFETY: the sockets' descriptors are the test's, closed once, after the executor.
        unsafe { libc::close(fd) };
    }
    drop(peers);
}

fn pstats(d: &mut keel_core::DriverMut<'_, RingDriver>) -> keel_linux::pbuf::PbufStats {
    // SAFETY: reads counters (it caches whether the kernel reports the ring's head); no
    // replacement, no Driver method, no other code runs.
    unsafe { d.get_mut() }.provided_buffer_stats().expect("enabled")
}

fn table(full: Full) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for a in KINDS {
        for b in KINDS {
            for combine in [Combine::Join, Combine::Select] {
                for waiter in [Waiter::Future, Waiter::Fiber] {
                    for end in
                        [End::Completes, End::Cancelled, End::DroppedWaitingForRoom, End::DroppedWaitingForBuffers]
                    {
                        case(a, b, combine, full, waiter, end);
                    }
                }
            }
        }
    }
}

#[test]
fn every_pair_joined_and_selected_under_a_full_in_flight_limit() {
    if util::ring_only("registered and provided buffers (every pair includes their waits)") {
        return;
    }
    table(Full::InFlightLimit);
}

#[test]
fn every_pair_joined_and_selected_under_a_full_sq() {
    if util::ring_only("registered and provided buffers (every pair includes their waits)") {
        return;
    }
    table(Full::Sq);
}
