//! The socket lifecycle on a real ring: end of stream, resets and refusals as values,
//! multishot accept ended by close, provided-buffer exhaustion, a peer that never reads,
//! half-close, direct descriptors, zero-copy send, IPv6 and Unix sockets.

#[path = "net_util/mod.rs"]
mod util;

use core::time::Duration;
use keel_core::{Errno, Fiber};
use keel_linux::RingConfig;
use keel_linux::fs::FiberFs;
use keel_linux::net::{self, AddressFamily, FiberNet, Shutdown, SockAddr, Socket, SocketType};
use std::cell::Cell;
use std::io::{Read, Write};
use std::rc::Rc;
use util::*;

fn v4() -> SockAddr {
    SockAddr::from("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap())
}

fn listener(ex: core::pin::Pin<&Ex>) -> (std::mem::ManuallyDrop<Socket>, std::net::SocketAddr) {
    let (fd, a) = listen(ex, v4());
    // SAFETY: a view of the test's listener that never closes it (ManuallyDrop); the test closes it once, after every task using it is done.
    (std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(fd) }), std_addr(&a))
}

#[test]
fn a_peer_closing_mid_read_is_a_clean_end_of_stream() {
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let (l, a) = listener(ex);
    let lfd = l.fd();
    let t = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            // SAFETY: a view of the test's listener that never closes it (ManuallyDrop); the test closes it once, after every task using it is done.
            let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(lfd) });
            let c = f.accept(&*l).unwrap();
            let mut buf = [0u8; 64];
            let mut got = Vec::new();
            loop {
                match f.recv(&c, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n as usize]),
                    Err(e) => panic!("{e:?}"),
                }
            }
            assert_eq!(got, b"0123456789");
            f.close_socket(c).unwrap();
            1u64
        })
        .unwrap();
    let cl = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(a).unwrap();
        s.write_all(b"0123456789").unwrap();
    });
    run_all(ex);
    cl.join().unwrap();
    assert_eq!(ex.result(t), Ok(Some(Ok(1))));
}

#[test]
fn a_reset_is_econnreset_and_a_refusal_is_econnrefused() {
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let (l, a) = listener(ex);
    let lfd = l.fd();
    // A port nobody listens on: bind one, learn it, close it.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let t = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            let s = f.socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
            assert_eq!(f.connect(&s, &SockAddr::from(dead)), Err(Errno::ECONNREFUSED));
            // SAFETY: a view of the test's listener that never closes it (ManuallyDrop); the test closes it once, after every task using it is done.
            let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(lfd) });
            let c = f.accept(&*l).unwrap();
            let mut buf = [0u8; 64];
            assert_eq!(f.recv(&c, &mut buf), Ok(2));
            assert_eq!(f.recv(&c, &mut buf), Err(Errno::ECONNRESET));
            1u64
        })
        .unwrap();
    let cl = std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let mut s = std::net::TcpStream::connect(a).unwrap();
        s.write_all(b"hi").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let lg = libc::linger { l_onoff: 1, l_linger: 0 };
        // SAFETY: a valid socket and a linger struct of the right size.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                &lg as *const _ as *const libc::c_void,
                size_of::<libc::linger>() as u32,
            )
        };
        drop(s); // RST
    });
    run_all(ex);
    cl.join().unwrap();
    assert_eq!(ex.result(t), Ok(Some(Ok(1))));
}

#[test]
fn net_rule_1_a_multishot_accept_ends_with_ecanceled_when_another_task_closes_the_listener() {
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let (l, a) = listener(ex);
    let lfd = l.fd();
    let accepted = Rc::new(Cell::new(0u32));
    let acc = accepted.clone();
    let acceptor = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            // SAFETY: a view of the test's listener that never closes it (ManuallyDrop); the test closes it once, after every task using it is done.
            let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(lfd) });
            let mut m = f.accept_multi(&*l);
            let mut conns = Vec::new();
            loop {
                match f.next_accept(&mut m) {
                    Ok(c) => {
                        conns.push(c);
                        acc.set(acc.get() + 1);
                    }
                    Err(e) => {
                        assert_eq!(f.next_accept(&mut m).err(), Some(e), "an ended multishot stays ended");
                        return e.0 as u64;
                    }
                }
            }
        })
        .unwrap();
    let acc2 = accepted.clone();
    let closer = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            while acc2.get() < 3 {
                f.sleep(Duration::from_millis(5)).unwrap();
            }
            // SAFETY: the test's listener; the acceptor's view never closes it, so this is
            // its one close.
            f.close_socket(unsafe { Socket::from_raw_fd(lfd) }).unwrap();
            0u64
        })
        .unwrap();
    let cl = std::thread::spawn(move || (0..3).map(|_| std::net::TcpStream::connect(a).unwrap()).collect::<Vec<_>>());
    run_all(ex);
    drop(cl.join().unwrap());
    assert_eq!(accepted.get(), 3);
    assert_eq!(ex.result(acceptor), Ok(Some(Ok(libc::ECANCELED as u64))));
    assert_eq!(ex.result(closer), Ok(Some(Ok(0))));
}

#[test]
fn pbuf_rule_3_provided_buffer_exhaustion_with_slow_consumers_loses_and_duplicates_nothing() {
    if ring_only("provided buffers") {
        return;
    }
    let mut d = ring(RingConfig::default());
    d.enable_provided_buffers(4, 512).unwrap();
    let ex = executor_with(d);
    let ex = ex.as_ref();
    let (l, a) = listener(ex);
    let lfd = l.fd();
    const CONNS: usize = 4;
    const BYTES: usize = 40_000;
    let results: Rc<std::cell::RefCell<Vec<Vec<u8>>>> = Rc::default();
    let mut hs = Vec::new();
    for i in 0..CONNS {
        let r = results.clone();
        hs.push(
            ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
                // SAFETY: a view of the test's listener that never closes it (ManuallyDrop); the test closes it once, after every task using it is done.
                let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(lfd) });
                let c = f.accept(&*l).unwrap();
                // Slow consumers: every few buffers, keep the buffer while sleeping a little,
                // then give it back before asking for the next one. (A consumer that hoards
                // buffers while it waits for another deadlocks by design once every buffer is
                // hoarded: the ring is bounded on purpose.)
                let mut got = Vec::new();
                let mut n = 0u32;
                if i % 2 == 0 {
                    let mut m = f.recv_multi(&c).unwrap();
                    while let Some(b) = f.next_recv(&mut m).unwrap() {
                        got.extend_from_slice(&b);
                        n += 1;
                        if n.is_multiple_of(3) {
                            f.sleep(Duration::from_millis(1)).unwrap();
                        }
                        drop(b);
                    }
                } else {
                    while let Some(b) = f.recv_provided(&c).unwrap() {
                        got.extend_from_slice(&b);
                        n += 1;
                        if n.is_multiple_of(2) {
                            f.sleep(Duration::from_millis(1)).unwrap();
                        }
                        drop(b);
                    }
                }
                r.borrow_mut().push(got);
                0u64
            })
            .unwrap(),
        );
    }
    let cl: Vec<_> = (0..CONNS)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = std::net::TcpStream::connect(a).unwrap();
                let data: Vec<u8> = (0..BYTES).map(|i| (i % 251) as u8).collect();
                for chunk in data.chunks(1000) {
                    s.write_all(chunk).unwrap();
                }
            })
        })
        .collect();
    let t0 = std::time::Instant::now();
    while ex.attached() > 0 {
        let _ = ex.run(1024, Some(Duration::from_millis(50)));
        if t0.elapsed() > Duration::from_secs(15) {
            for h in &hs {
                eprintln!("DBG task {:?} state {:?} times {:?}", h, ex.state(*h), ex.task_times(*h));
            }
            eprintln!(
                "DBG pbuf {:?} ring {:?} exec {:?}",
                ex.with_driver(pbuf_stats).unwrap(),
                ex.with_driver(|d| d.stats()).unwrap(),
                ex.stats()
            );
            panic!("stuck: see the DBG lines above");
        }
    }
    cl.into_iter().for_each(|c| c.join().unwrap());
    let want: Vec<u8> = (0..BYTES).map(|i| (i % 251) as u8).collect();
    for got in results.borrow().iter() {
        assert_eq!(got.len(), BYTES);
        assert!(got == &want, "every byte once, in order");
    }
    let st = ex.with_driver(pbuf_stats).unwrap().unwrap();
    eprintln!("provided buffers: {st:?}, ring {:?}", ex.with_driver(|d| d.stats()).unwrap());
    assert_eq!(st.in_use, 0, "every buffer came back");
    assert!(st.exhausted > 0, "4 buffers for 4 connections of 40 KB must run dry: {st:?}");
}

#[test]
fn net_rule_5_a_peer_that_never_reads_makes_the_sender_wait() {
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let (l, a) = listener(ex);
    let lfd = l.fd();
    let sent = Rc::new(Cell::new(0u64));
    let s2 = sent.clone();
    let server = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            // SAFETY: a view of the test's listener that never closes it (ManuallyDrop); the test closes it once, after every task using it is done.
            let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(lfd) });
            let c = f.accept(&*l).unwrap();
            let chunk = [7u8; 16384];
            loop {
                match f.send(&c, &chunk) {
                    Ok(n) => s2.set(s2.get() + n as u64),
                    Err(e) => return e.0 as u64,
                }
            }
        })
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let cl = std::thread::spawn(move || {
        let s = std::net::TcpStream::connect(a).unwrap();
        rx.recv().unwrap(); // never reads; holds the connection open
        drop(s);
    });
    let t0 = std::time::Instant::now();
    run_until(ex, || t0.elapsed() > Duration::from_millis(300));
    let first = sent.get();
    run_until(ex, || t0.elapsed() > Duration::from_millis(600));
    assert_eq!(sent.get(), first, "the sender is stuck in send (waiting), not queueing");
    assert!(first < 64 << 20, "only the kernel's socket buffers hold data: {first}");
    assert!(matches!(ex.state(server), Ok(keel_core::TaskState::Suspended(_))), "{:?}", ex.state(server));
    eprintln!("never-reading peer: {first} bytes in the kernel, then the sender waited");
    ex.cancel(server).unwrap();
    run_all(ex);
    assert_eq!(ex.result(server), Ok(Some(Ok(libc::ECANCELED as u64))));
    tx.send(()).unwrap();
    cl.join().unwrap();
}

#[test]
fn half_close_then_read_the_reply() {
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let (l, a) = listener(ex);
    let lfd = l.fd();
    ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
        // SAFETY: a view of the test's listener that never closes it (ManuallyDrop); the test closes it once, after every task using it is done.
        let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(lfd) });
        let c = f.accept(&*l).unwrap();
        let mut total = 0u64;
        let mut buf = [0u8; 1000];
        while let Ok(n @ 1..) = f.recv(&c, &mut buf) {
            total += n as u64;
        }
        f.send_all(&c, format!("got {total}").as_bytes()).unwrap();
        f.close_socket(c).unwrap();
        0u64
    })
    .unwrap();
    let client = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            let s = f.socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
            f.connect(&s, &SockAddr::from(a)).unwrap();
            f.send_all(&s, &[1u8; 5000]).unwrap();
            f.shutdown(&s, Shutdown::Write).unwrap();
            let mut reply = Vec::new();
            let mut buf = [0u8; 64];
            while let Ok(n @ 1..) = f.recv(&s, &mut buf) {
                reply.extend_from_slice(&buf[..n as usize]);
            }
            assert_eq!(reply, b"got 5000");
            f.close_socket(s).unwrap();
            1u64
        })
        .unwrap();
    run_all(ex);
    assert_eq!(ex.result(client), Ok(Some(Ok(1))));
}

#[test]
fn a_direct_descriptor_socket_sends_receives_and_closes() {
    if ring_only("direct descriptors") {
        return;
    }
    let ex = executor(RingConfig { registered_files: 16, ..RingConfig::default() });
    let ex = ex.as_ref();
    let std_l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = std_l.local_addr().unwrap();
    let echo = std::thread::spawn(move || {
        let (mut c, _) = std_l.accept().unwrap();
        let mut buf = [0u8; 100];
        let n = c.read(&mut buf).unwrap();
        c.write_all(&buf[..n]).unwrap();
    });
    let t = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            let s = f.socket_direct(AddressFamily::INET, SocketType::STREAM, None).unwrap();
            f.connect(&s, &SockAddr::from(a)).unwrap();
            f.send_all(&s, b"direct!").unwrap();
            let mut buf = [0u8; 16];
            let n = f.recv(&s, &mut buf).unwrap();
            assert_eq!(&buf[..n as usize], b"direct!");
            let idx = s.index();
            f.close_fixed_socket(s).unwrap();
            // Closed: the index no longer names a socket.
            let again = net::FixedSocket::from_index_for_tests(idx);
            assert_eq!(f.send(&again, b"x"), Err(Errno::EBADF));
            1u64
        })
        .unwrap();
    run_all(ex);
    echo.join().unwrap();
    assert_eq!(ex.result(t), Ok(Some(Ok(1))));
}

#[test]
fn net_rule_4_a_zero_copy_send_releases_its_buffer_only_after_the_notification() {
    if ring_only("zero-copy sends from registered buffers") {
        return;
    }
    let ex = executor(RingConfig { registered_buffers: 1, registered_buffer_size: 8192, ..RingConfig::default() });
    let ex = ex.as_ref();
    let std_l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = std_l.local_addr().unwrap();
    let rx = std::thread::spawn(move || {
        let (mut c, _) = std_l.accept().unwrap();
        let mut all = Vec::new();
        c.read_to_end(&mut all).unwrap();
        all
    });
    let t = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            let s = f.socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
            f.connect(&s, &SockAddr::from(a)).unwrap();
            let mut b = f.claim_buffer().unwrap();
            for (round, byte) in [b'A', b'B', b'C'].into_iter().enumerate() {
                b.fill(byte);
                let before = f.with_driver::<keel_linux::RingDriver, _>(|d| d.stats().zc_notifs).unwrap();
                assert_eq!(f.send_zc_fixed(&s, &b, 8192), Ok(8192));
                let after = f.with_driver::<keel_linux::RingDriver, _>(|d| d.stats().zc_notifs).unwrap();
                assert_eq!(after, before + 1, "round {round}: returned only after the notification");
            }
            f.release_buffer(b);
            f.close_socket(s).unwrap();
            1u64
        })
        .unwrap();
    run_all(ex);
    let all = rx.join().unwrap();
    assert_eq!(ex.result(t), Ok(Some(Ok(1))));
    assert_eq!(all.len(), 3 * 8192);
    assert!(
        all[..8192].iter().all(|&x| x == b'A')
            && all[8192..16384].iter().all(|&x| x == b'B')
            && all[16384..].iter().all(|&x| x == b'C')
    );
}

fn round_trip(addr: SockAddr) {
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let (lfd, bound) = listen(ex, addr);
    let bytes = Rc::new(Cell::new(0));
    let w = fiber_worker(ex, lfd, bytes.clone());
    let c = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            let s = f.socket(bound.family(), SocketType::STREAM, None).unwrap();
            f.connect(&s, &bound).unwrap();
            for i in 0..100u32 {
                let msg = format!("message {i}");
                f.send_all(&s, msg.as_bytes()).unwrap();
                let mut buf = [0u8; 64];
                let mut got = 0;
                while got < msg.len() {
                    got += f.recv(&s, &mut buf[got..]).unwrap() as usize;
                }
                assert_eq!(&buf[..got], msg.as_bytes());
            }
            f.close_socket(s).unwrap();
            1u64
        })
        .unwrap();
    run_until(ex, || ex.result(c).ok().flatten().is_some());
    ex.cancel(w).unwrap();
    run_all(ex);
    assert_eq!(ex.result(c), Ok(Some(Ok(1))));
    // SAFETY: the test's own listener, which no task uses any more: closed once, here.
    drop(unsafe { Socket::from_raw_fd(lfd) });
}

#[test]
fn an_ipv6_round_trip() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("SKIPPED: no IPv6 loopback on this machine");
        return;
    }
    round_trip(SockAddr::from("[::1]:0".parse::<std::net::SocketAddr>().unwrap()));
}

#[test]
fn a_unix_socket_round_trip() {
    let p = std::env::temp_dir().join(format!("keel-net-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&p);
    round_trip(SockAddr::unix(p.to_str().unwrap()).unwrap());
    let _ = std::fs::remove_file(&p);
}

#[test]
fn completion_rule_1_futures_multishot_accept_and_receive() {
    if ring_only("multishot receives into provided buffers") {
        return;
    }
    let mut d = ring(RingConfig::default());
    d.enable_provided_buffers(8, 256).unwrap();
    let ex = executor_with(d);
    let ex = ex.as_ref();
    let (l, a) = listener(ex);
    let lfd = l.fd();
    let t = ex
        .attach(task(), async move {
            // SAFETY: a view of the test's listener that never closes it (ManuallyDrop); the test closes it once, after every task using it is done.
            let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(lfd) });
            let mut m = net::future::accept_multi(&*l);
            let mut total = 0u64;
            for _ in 0..2 {
                let c = net::future::next_accept(&mut m).await.unwrap();
                let mut r = net::future::recv_multi(&c).await.unwrap();
                while let Some(b) = net::future::next_recv(&mut r).await.unwrap() {
                    total += b.len() as u64;
                }
                let (res, _) = net::future::send(&c, b"bye".to_vec()).await;
                res.unwrap();
                net::future::close_socket(c).await.unwrap();
            }
            total
        })
        .unwrap();
    let cl = std::thread::spawn(move || {
        for _ in 0..2 {
            let mut s = std::net::TcpStream::connect(a).unwrap();
            s.write_all(&[9u8; 3000]).unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let mut back = Vec::new();
            s.read_to_end(&mut back).unwrap();
            assert_eq!(back, b"bye");
        }
    });
    run_all(ex);
    cl.join().unwrap();
    assert_eq!(ex.result(t), Ok(Some(Ok(6000))));
}

/// The provided-buffer counters of a lent ring driver.
fn pbuf_stats(d: &mut keel_core::DriverMut<'_, keel_linux::RingDriver>) -> Option<keel_linux::pbuf::PbufStats> {
    // SAFETY: reads counters (it caches whether the kernel reports the ring's head); no
    // replacement, no Driver method, no other code runs.
    unsafe { d.get_mut() }.provided_buffer_stats()
}
