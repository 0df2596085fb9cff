//! The keel side of the hostile-peer tests, run in a child process of the test binary
//! (so its descriptor limit and resident memory are its own): an echo server on one ring
//! executor, one task per connection (every fourth a fiber, the rest futures; all fibers
//! in `idle_fibers`), an acceptor that
//! backs off on `EMFILE` (a multishot accept, made again after each error, in the flood and
//! idle scenarios; one-shot accepts in the others).
//!
//! Protocol, chosen by a connection's first byte: `S` and a little-endian u64 `n`: the
//! server sends `n` bytes and closes; `H`: the server consumes everything slowly (through
//! provided buffers when the scenario has them) and sends nothing; anything else: echo.
//! Connections are served with plain receives or with a multishot receive into the
//! executor's 16 provided buffers (every connection in the hog scenario, half of them in
//! the others; none on the epoll backend, which has no provided buffers).
//!
//! It prints `KEEL_PORT <port>` once listening, serves until its stdin closes, then
//! cancels every task, checks that each completed within a bound and that no operation is
//! in flight, and prints `KEEL_SERVER key=value ...`.

use core::pin::Pin;
use core::time::Duration;
use keel_core::{Config, Errno, Executor, Fiber, FiberAttrs, TaskAttrs, TaskHandle, TaskSlot, rt};
use keel_linux::net::{self, FiberNet, SockAddr, SockOpt, Socket, SocketType};
use keel_linux::{MmapStacks, RingConfig, RingDriver};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::Read;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

type Ex = Executor<RingDriver, MmapStacks>;

/// Handler task slots: every connection of the largest scenario and some to spare.
const HANDLERS: usize = 1400;
/// Room for the handler future (checked at start).
const BODY: usize = 2048;
/// Bytes per send of an `S` stream.
const CHUNK: usize = 64 * 1024;

#[derive(Default)]
struct Counters {
    accepted: Cell<u64>,
    emfile: Cell<u64>,
    accept_errors: Cell<u64>,
    streamed: Cell<u64>,
    hog_bytes: Cell<u64>,
    echoed: Cell<u64>,
    refused: Cell<u64>,
    fibers: Cell<u64>,
    provided: Cell<u64>,
}

/// Runs the server for `scenario` (see `hostile_peers.rs`); returns when stdin closes.
pub fn serve(scenario: &str) {
    if scenario == "accept_flood" {
        set_nofile(128);
    }
    let all_provided = scenario == "pbuf_hog";
    let multishot = matches!(scenario, "accept_flood" | "idle" | "idle_fibers");
    // Which connections get a fiber (the rest a future): every fourth, or all of them.
    let fiber_every = if scenario == "idle_fibers" { 1 } else { 4 };
    let mut d = RingDriver::new(RingConfig { entries: 512, cq_entries: 4096, slots: 4096, ..RingConfig::default() })
        .expect("io_uring");
    // The epoll backend has no provided buffers: every connection gets plain receives.
    let on_ring = d.backend() == keel_linux::Backend::Ring;
    if on_ring {
        d.enable_provided_buffers(16, 4096).unwrap();
    }
    let ex: Pin<Box<Ex>> = Box::pin(
        Executor::with_stacks(
            d,
            MmapStacks::new().unwrap(),
            Config { fiber_panics: keel_linux::panic::config().fiber_panics, ..Config::default() },
        )
        .unwrap(),
    );
    let ex = ex.as_ref();
    // Every slot is made (and its memory written) before the peers come: serving them
    // allocates no task memory.
    let slots: &'static [TaskSlot<BODY>] = (0..HANDLERS + 1).map(|_| TaskSlot::new()).collect::<Vec<_>>().leak();
    let mut free: Vec<TaskHandle> = slots.iter().map(|s| s.create(TaskAttrs::default()).unwrap()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        s.store(true, Ordering::Release); // pairs with the Acquire load in the run loop
    });

    let c = Rc::new(Counters::default());
    let queue: Rc<RefCell<VecDeque<Socket>>> = Rc::new(RefCell::new(VecDeque::new()));
    let addr = SockAddr::from("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap());
    let (q, cc) = (queue.clone(), c.clone());
    let acceptor = ex
        .attach(free.pop().unwrap(), async move {
            let s = net::future::socket(addr.family(), SocketType::STREAM, None).await.expect("socket");
            net::future::set_option(&s, SockOpt::reuse_addr(true)).await.expect("SO_REUSEADDR");
            net::future::bind(&s, &addr).await.expect("bind");
            net::future::listen(&s, 4096).await.expect("listen");
            let port = net::local_addr(&s).unwrap().to_std().unwrap().port();
            println!("KEEL_PORT {port}");
            let mut multi = None;
            loop {
                let r = if multishot {
                    let m = multi.get_or_insert_with(|| net::future::accept_multi(&s));
                    let r = net::future::next_accept(m).await;
                    if r.is_err() {
                        multi = None; // an error ends a multishot for good (net rule 2)
                    }
                    r
                } else {
                    net::future::accept(&s).await
                };
                match r {
                    Ok(conn) => {
                        cc.accepted.set(cc.accepted.get() + 1);
                        q.borrow_mut().push_back(conn);
                    }
                    Err(Errno::ECANCELED) => return 0u64,
                    Err(e) => {
                        if e == Errno(libc::EMFILE) || e == Errno(libc::ENFILE) {
                            cc.emfile.set(cc.emfile.get() + 1);
                        } else {
                            cc.accept_errors.set(cc.accept_errors.get() + 1);
                        }
                        if rt::sleep(Duration::from_millis(5)).await.is_err() {
                            return 0;
                        }
                    }
                }
            }
        })
        .unwrap();
    let mut busy: Vec<TaskHandle> = Vec::new();
    // Connections handed to a task so far (1 for the first): a connection's kind (fiber or
    // future, provided buffers or not) follows its own number, never the acceptor's count,
    // which runs ahead by the whole batch accepted in one pass (under load every
    // connection of a batch would get the same kind).
    let mut served = 0u64;
    let t0 = std::time::Instant::now();
    // Acquire: pairs with the stdin thread's Release store.
    while !stop.load(Ordering::Acquire) && t0.elapsed() < Duration::from_secs(120) {
        let _ = ex.run(512, Some(Duration::from_millis(5)));
        busy.retain(|&h| {
            let done = matches!(ex.result(h), Ok(Some(_)));
            if done {
                free.push(h);
            }
            !done
        });
        while let Some(conn) = queue.borrow_mut().pop_front() {
            let Some(slot) = free.pop() else {
                c.refused.set(c.refused.get() + 1);
                drop(conn);
                continue;
            };
            served += 1;
            let cc = c.clone();
            let provided = on_ring && (all_provided || served % 4 >= 2);
            c.provided.set(c.provided.get() + provided as u64);
            let h = if served.is_multiple_of(fiber_every) {
                c.fibers.set(c.fibers.get() + 1);
                ex.attach_fiber(slot, FiberAttrs::DEFAULT, move |f: &mut Fiber| fiber_handler(f, conn, provided, cc))
                    .map_err(|_| "attach fiber")
                    .unwrap()
            } else {
                ex.attach(slot, handler(conn, provided, cc)).map_err(|_| "attach").unwrap()
            };
            busy.push(h);
        }
    }
    // Shutting down: cancel everything; each task must complete (no stranded waiter).
    let _ = ex.cancel(acceptor);
    for &h in &busy {
        let _ = ex.cancel(h);
    }
    let t1 = std::time::Instant::now();
    while ex.attached() > 0 && t1.elapsed() < Duration::from_secs(10) {
        let _ = ex.run(1024, Some(Duration::from_millis(10)));
    }
    let stranded = ex.attached();
    queue.borrow_mut().clear();
    let in_flight = ex.with_driver(|d| keel_core::Driver::in_flight(&**d)).unwrap();
    let (exhausted, pbuf_in_use) = ex
        .with_driver(|d| {
            // SAFETY: reading statistics only: nothing is replaced, no driver method the
            // executor owns is called (keel-core driver rule 2).
            let s = unsafe { d.get_mut() }.provided_buffer_stats();
            s.map(|s| (s.exhausted, s.in_use)).unwrap_or((0, 0))
        })
        .unwrap();
    let rs = ex.with_driver(|d| d.stats()).unwrap();
    println!(
        "KEEL_SERVER accepted={} fibers={} provided={} emfile={} accept_errors={} refused={} echoed={} streamed={} \
         hog_bytes={} pbuf_exhausted={} pbuf_in_use={} multishot_throttled={} stranded={} in_flight={}",
        c.accepted.get(),
        c.fibers.get(),
        c.provided.get(),
        c.emfile.get(),
        c.accept_errors.get(),
        c.refused.get(),
        c.echoed.get(),
        c.streamed.get(),
        c.hog_bytes.get(),
        exhausted,
        pbuf_in_use,
        rs.multishot_throttled,
        stranded,
        in_flight,
    );
    assert_eq!(stranded, 0, "every task completes once cancelled (no stranded waiter)");
    assert_eq!(in_flight, 0, "no operation is left in flight");
    assert_eq!(pbuf_in_use, 0, "every provided buffer went back");
}

fn set_nofile(n: u64) {
    let lim = libc::rlimit { rlim_cur: n, rlim_max: n.max(rlimit_max()) };
    // SAFETY: a valid rlimit struct for the call's duration.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0, "setrlimit");
}

fn rlimit_max() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is valid for writing.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    lim.rlim_max
}

/// One connection (see the module doc for the protocol).
async fn handler(conn: Socket, provided: bool, c: Rc<Counters>) -> u64 {
    if provided {
        return provided_handler(conn, c).await;
    }
    let (r, mut buf) = net::future::recv(&conn, Vec::with_capacity(4096)).await;
    match r {
        Ok(n) if n > 0 => {}
        _ => return close(conn).await,
    }
    if buf[0] == b'S' && buf.len() >= 9 {
        let n = u64::from_le_bytes(buf[1..9].try_into().unwrap());
        stream(&conn, n, &c).await;
        return close(conn).await;
    }
    loop {
        let len = buf.len();
        let (r, b) = net::future::send_all(&conn, buf).await;
        if r.is_err() {
            break;
        }
        c.echoed.set(c.echoed.get() + len as u64);
        let mut b = b;
        b.clear();
        let (r, b) = net::future::recv(&conn, b).await;
        buf = b;
        if !matches!(r, Ok(n) if n > 0) {
            break;
        }
    }
    close(conn).await
}

/// Sends `n` bytes in `CHUNK` pieces, one buffer reused (net rule 5: nothing queued).
async fn stream(conn: &Socket, mut n: u64, c: &Counters) {
    let mut chunk = vec![b'x'; CHUNK];
    while n > 0 {
        chunk.resize((n as usize).min(CHUNK), b'x');
        let (r, b) = net::future::send(conn, chunk).await;
        chunk = b;
        match r {
            Ok(k) => {
                n -= k as u64;
                c.streamed.set(c.streamed.get() + k as u64);
            }
            Err(_) => return,
        }
    }
}

/// A connection served by a multishot receive into provided buffers: `S` streams, `H` is
/// consumed slowly (a pause every four buffers), anything else echoed.
async fn provided_handler(conn: Socket, c: Rc<Counters>) -> u64 {
    let Ok(mut m) = net::future::recv_multi(&conn).await else { return close(conn).await };
    let mut hog = None;
    let mut got = 0u64;
    loop {
        let b = match net::future::next_recv(&mut m).await {
            Ok(Some(b)) => b,
            _ => break,
        };
        if hog.is_none() && b[0] == b'S' && b.len() >= 9 {
            let n = u64::from_le_bytes(b[1..9].try_into().unwrap());
            drop(b);
            stream(&conn, n, &c).await;
            break;
        }
        let is_hog = *hog.get_or_insert(b[0] == b'H');
        if is_hog {
            got += 1;
            c.hog_bytes.set(c.hog_bytes.get() + b.len() as u64);
            drop(b);
            if got.is_multiple_of(4) && rt::sleep(Duration::from_millis(1)).await.is_err() {
                break;
            }
        } else {
            let v = b.to_vec();
            drop(b);
            let len = v.len();
            if net::future::send_all(&conn, v).await.0.is_err() {
                break;
            }
            c.echoed.set(c.echoed.get() + len as u64);
        }
    }
    drop(m);
    close(conn).await
}

async fn close(conn: Socket) -> u64 {
    let _ = net::future::close_socket(conn).await;
    0
}

/// [`handler`] as a fiber: blocking-style calls, buffers on the heap.
fn fiber_handler(f: &mut Fiber, conn: Socket, provided: bool, c: Rc<Counters>) -> u64 {
    let mut buf = vec![0u8; 4096];
    if provided {
        if let Ok(mut m) = f.recv_multi(&conn) {
            let mut hog = None;
            let mut got = 0u64;
            while let Ok(Some(b)) = f.next_recv(&mut m) {
                if hog.is_none() && b[0] == b'S' && b.len() >= 9 {
                    let n = u64::from_le_bytes(b[1..9].try_into().unwrap());
                    drop(b);
                    fiber_stream(f, &conn, n, &c);
                    break;
                }
                if *hog.get_or_insert(b[0] == b'H') {
                    got += 1;
                    c.hog_bytes.set(c.hog_bytes.get() + b.len() as u64);
                    drop(b);
                    if got.is_multiple_of(4) && f.sleep(Duration::from_millis(1)).is_err() {
                        break;
                    }
                } else {
                    let n = b.len();
                    buf[..n].copy_from_slice(&b);
                    drop(b);
                    if f.send_all(&conn, &buf[..n]).is_err() {
                        break;
                    }
                    c.echoed.set(c.echoed.get() + n as u64);
                }
            }
        }
        let _ = f.close_socket(conn);
        return 0;
    }
    let mut n = match f.recv(&conn, &mut buf) {
        Ok(n) if n > 0 => n as usize,
        _ => {
            let _ = f.close_socket(conn);
            return 0;
        }
    };
    if buf[0] == b'S' && n >= 9 {
        fiber_stream(f, &conn, u64::from_le_bytes(buf[1..9].try_into().unwrap()), &c);
    } else {
        loop {
            if f.send_all(&conn, &buf[..n]).is_err() {
                break;
            }
            c.echoed.set(c.echoed.get() + n as u64);
            match f.recv(&conn, &mut buf) {
                Ok(k) if k > 0 => n = k as usize,
                _ => break,
            }
        }
    }
    let _ = f.close_socket(conn);
    0
}

/// [`stream`] for a fiber.
fn fiber_stream(f: &mut Fiber, conn: &Socket, mut left: u64, c: &Counters) {
    let chunk = vec![b'x'; CHUNK];
    while left > 0 {
        match f.send(conn, &chunk[..(left as usize).min(CHUNK)]) {
            Ok(k) => {
                left -= k as u64;
                c.streamed.set(c.streamed.get() + k as u64);
            }
            Err(_) => return,
        }
    }
}
