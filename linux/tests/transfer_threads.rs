//! Descriptor transfer between executors on two threads (transfer rules 4-7): a TCP
//! connection's bytes are read partly on executor A, the connection is sent to executor
//! B's ring mid-stream, and B reads the rest. Every byte arrives once, in order; the
//! process's descriptors and both fixed-file tables are back at baseline afterwards.
//! Fibers and futures. Loopback only; every wait is bounded.

#[path = "net_util/mod.rs"]
mod util;

use core::time::Duration;
use keel_core::Fiber;
use keel_linux::RingConfig;
use keel_linux::net::{self, FiberNet};
use keel_linux::transfer::{self, FiberTransfer, Mailbox};
use std::io::Write;
use std::os::fd::AsFd;
use std::sync::mpsc;
use util::*;

const FILES: u32 = 4;
const N: usize = 256 * 1024;
const KEY: u32 = 7;

fn byte(i: usize) -> u8 {
    (i % 251) as u8
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// A connected stream whose peer (a thread) writes `N` pattern bytes and closes.
fn stream() -> (std::net::TcpStream, std::thread::JoinHandle<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    let w = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(a).unwrap();
        let data: Vec<u8> = (0..N).map(byte).collect();
        s.write_all(&data).unwrap();
    });
    let (s, _) = l.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    (s, w)
}

/// Fiber: every index of the table is free (registers `FILES` descriptors, then closes them).
fn fiber_table_empty(f: &mut Fiber) {
    let null = std::fs::File::open("/dev/null").unwrap();
    let all: Vec<_> =
        (0..FILES).map(|i| f.register_fd(null.as_fd()).unwrap_or_else(|e| panic!("index {i}: {e}"))).collect();
    for x in all {
        f.close_fd(x).unwrap();
    }
}

/// Future: as `fiber_table_empty`.
async fn future_table_empty() {
    let null = std::fs::File::open("/dev/null").unwrap();
    let mut all = Vec::new();
    for i in 0..FILES {
        all.push(transfer::register(null.as_fd()).await.unwrap_or_else(|e| panic!("index {i}: {e}")));
    }
    for x in all {
        transfer::close(x).await.unwrap();
    }
}

/// Runs the sending side on this thread: register the stream, read about a quarter of
/// it, send the rest of the connection to `mb`. Returns the bytes read here.
fn sender(futures: bool, s: std::net::TcpStream, mb: Mailbox) -> Vec<u8> {
    let ex = executor(RingConfig { registered_files: FILES, ..RingConfig::default() });
    let ex = ex.as_ref();
    let got = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let out = got.clone();
    let t = if futures {
        ex.attach(task(), async move {
            let fixed = transfer::register(s.as_fd()).await.expect("register");
            drop(s); // the original descriptor: the index lives on (transfer rule 1)
            let mut buf = vec![0u8; 4096];
            while out.borrow().len() < N / 4 {
                let (r, b) = net::future::recv(&fixed, buf).await;
                let n = r.expect("recv by index") as usize;
                assert!(n > 0, "end of stream before the hand-off");
                out.borrow_mut().extend_from_slice(&b[..n]);
                buf = b;
                buf.resize(4096, 0);
            }
            transfer::send(fixed, &mb, KEY).await.map_err(|e| e.error).expect("send");
            future_table_empty().await;
            1u64
        })
        .map_err(|_| "attach")
        .unwrap()
    } else {
        ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            let fixed = f.register_fd(s.as_fd()).expect("register");
            drop(s);
            let mut buf = [0u8; 4096];
            while out.borrow().len() < N / 4 {
                let n = f.recv(&fixed, &mut buf).expect("recv by index") as usize;
                assert!(n > 0, "end of stream before the hand-off");
                out.borrow_mut().extend_from_slice(&buf[..n]);
            }
            f.send_fd(fixed, &mb, KEY).map_err(|e| e.error).expect("send");
            fiber_table_empty(f);
            1u64
        })
        .unwrap()
    };
    run_all(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(1))), "the sending task ended early");
    got.take()
}

/// Runs the receiving side on this thread: hands its mailbox out on `tx`, waits for the
/// connection, reads it to its end. Returns the bytes read here.
fn receiver(futures: bool, tx: mpsc::Sender<Mailbox>) -> Vec<u8> {
    let mut d = ring(RingConfig { registered_files: FILES, ..RingConfig::default() });
    tx.send(d.mailbox().expect("mailbox")).unwrap();
    let ex = executor_with(d);
    let ex = ex.as_ref();
    let got = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let out = got.clone();
    let t = if futures {
        ex.attach(task(), async move {
            let fixed = transfer::receive(KEY, None).await.expect("receive");
            let mut buf = vec![0u8; 4096];
            loop {
                let (r, b) = net::future::recv(&fixed, buf).await;
                let n = r.expect("recv by index") as usize;
                if n == 0 {
                    break;
                }
                out.borrow_mut().extend_from_slice(&b[..n]);
                buf = b;
                buf.resize(4096, 0);
            }
            transfer::close(fixed).await.expect("close");
            future_table_empty().await;
            1u64
        })
        .map_err(|_| "attach")
        .unwrap()
    } else {
        ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            let fixed = f.receive_fd(KEY, None).expect("receive");
            let mut buf = [0u8; 4096];
            loop {
                let n = f.recv(&fixed, &mut buf).expect("recv by index") as usize;
                if n == 0 {
                    break;
                }
                out.borrow_mut().extend_from_slice(&buf[..n]);
            }
            f.close_fd(fixed).expect("close");
            fiber_table_empty(f);
            1u64
        })
        .unwrap()
    };
    run_all(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(1))), "the receiving task ended early");
    assert_eq!(ex.with_driver(|d| d.arrivals_pending()).unwrap(), 0, "every arrival was taken");
    got.take()
}

fn stream_across_the_hand_off(futures: bool) {
    let before = open_fds();
    let (s, writer) = stream();
    let (tx, rx) = mpsc::channel();
    let b = std::thread::spawn(move || receiver(futures, tx));
    let mb = rx.recv_timeout(Duration::from_secs(10)).expect("B's mailbox");
    let a_bytes = std::thread::spawn(move || sender(futures, s, mb)).join().expect("sender thread");
    let b_bytes = b.join().expect("receiver thread");
    writer.join().unwrap();
    assert!(a_bytes.len() >= N / 4 && !b_bytes.is_empty(), "both sides read: {} + {}", a_bytes.len(), b_bytes.len());
    let all: Vec<u8> = a_bytes.iter().chain(b_bytes.iter()).copied().collect();
    assert_eq!(all.len(), N, "each byte arrives once: A read {}, B read {}", a_bytes.len(), b_bytes.len());
    if let Some(i) = (0..N).find(|&i| all[i] != byte(i)) {
        panic!("byte {i} out of order: {} (expected {}); A read {}", all[i], byte(i), a_bytes.len());
    }
    assert_eq!(open_fds(), before, "descriptors at baseline (rings, mailbox duplicates, the stream all closed)");
}

#[test]
fn fibers_stream_n_bytes_across_a_hand_off_between_executors_on_two_threads() {
    if ring_only("a fixed-file table (descriptor transfer)") {
        return;
    }
    stream_across_the_hand_off(false);
}

#[test]
fn futures_stream_n_bytes_across_a_hand_off_between_executors_on_two_threads() {
    if ring_only("a fixed-file table (descriptor transfer)") {
        return;
    }
    stream_across_the_hand_off(true);
}

/// A receiver that waits with nothing in flight and no deadline is not a stall while a
/// mailbox is out (transfer rule 7): the arrival wakes it.
#[test]
fn a_receiver_waiting_with_nothing_in_flight_is_woken_by_an_arrival_from_another_thread() {
    if ring_only("a fixed-file table (descriptor transfer)") {
        return;
    }
    let (tx, rx) = mpsc::channel();
    let b = std::thread::spawn(move || {
        let mut d = ring(RingConfig { registered_files: FILES, ..RingConfig::default() });
        tx.send(d.mailbox().unwrap()).unwrap();
        let ex = executor_with(d);
        let ex = ex.as_ref();
        let t = ex
            .attach_fiber(task(), fattrs(), |f: &mut Fiber| {
                let fixed = f.receive_fd(3, None).expect("receive");
                let fd = f.install_fd(&fixed, true).expect("install");
                let mut line = String::new();
                std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut line).unwrap();
                assert_eq!(line, "over the wall");
                f.close_fd(fixed).unwrap();
                1u64
            })
            .unwrap();
        // One long run: it parks with nothing in flight until the arrival.
        let t0 = std::time::Instant::now();
        while ex.attached() > 0 {
            let _ = ex.run(1024, None);
            assert!(t0.elapsed() < Duration::from_secs(30), "runaway");
        }
        ex.result(t)
    });
    let mb: Mailbox = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let (r, mut w) = std::io::pipe().unwrap();
    w.write_all(b"over the wall").unwrap();
    drop(w);
    std::thread::sleep(Duration::from_millis(50)); // B is parked by now (not asserted: only the wake matters)
    let ex = executor(RingConfig { registered_files: FILES, ..RingConfig::default() });
    let ex = ex.as_ref();
    let t = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            let fixed = f.register_fd(r.as_fd()).expect("register");
            drop(r);
            f.send_fd(fixed, &mb, 3).map_err(|e| e.error).expect("send");
            1u64
        })
        .unwrap();
    run_all(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(1))));
    assert_eq!(b.join().unwrap(), Ok(Some(Ok(1))));
}

/// Transfer rule 5: a waiting receive counts as an operation in flight, so an executor
/// kept busy by a task that only yields (it never parks) still reaps the arrival.
#[test]
fn an_arrival_reaches_a_receiver_while_another_task_keeps_the_executor_busy() {
    if ring_only("a fixed-file table (descriptor transfer)") {
        return;
    }
    let (tx, rx) = mpsc::channel();
    let b = std::thread::spawn(move || {
        let mut d = ring(RingConfig { registered_files: FILES, ..RingConfig::default() });
        tx.send(d.mailbox().unwrap()).unwrap();
        let ex = executor_with(d);
        let ex = ex.as_ref();
        let done = std::rc::Rc::new(std::cell::Cell::new(false));
        let d2 = done.clone();
        ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            let fixed = f.receive_fd(11, None).expect("receive");
            f.close_fd(fixed).unwrap();
            d2.set(true);
            1u64
        })
        .unwrap();
        let spinner = ex
            .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
                let t0 = std::time::Instant::now();
                while !done.get() {
                    if t0.elapsed() > Duration::from_secs(20) {
                        return 0u64; // the arrival was never reaped while the executor was busy
                    }
                    f.yield_now().unwrap();
                }
                1u64
            })
            .unwrap();
        run_all(ex);
        ex.result(spinner)
    });
    let mb: Mailbox = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let ex = executor(RingConfig { registered_files: FILES, ..RingConfig::default() });
    let null = std::fs::File::open("/dev/null").unwrap();
    let t = ex
        .as_ref()
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            std::thread::sleep(Duration::from_millis(20)); // B is spinning by now (not asserted)
            let fixed = f.register_fd(null.as_fd()).unwrap();
            f.send_fd(fixed, &mb, 11).map_err(|e| e.error).expect("send");
            1u64
        })
        .unwrap();
    run_all(ex.as_ref());
    assert_eq!(ex.as_ref().result(t), Ok(Some(Ok(1))));
    assert_eq!(b.join().unwrap(), Ok(Some(Ok(1))), "the busy executor saw the arrival");
}
