//! Typed flags reach the kernel as meant (`flags` module): each `SockOpt` sets the option it
//! names (read back with getsockopt), socket types and protocols make the socket asked for,
//! and open flags and modes make the file asked for, for fibers and futures.

mod net_util;

use keel_core::{Errno, Fiber};
use keel_linux::RingConfig;
use keel_linux::flags::raw;
use keel_linux::fs::{self, FiberFs, Mode, OFlags};
use keel_linux::net::{self, AddressFamily, FiberNet, SockOpt, Socket, SocketType, ipproto};
use net_util::{executor, fattrs, run_all, task};
use rustix::net::sockopt;
use std::cell::RefCell;
use std::os::unix::fs::PermissionsExt;
use std::rc::Rc;

/// Reads an option back: whether it holds the value set.
type ReadBack = fn(&Socket) -> bool;

/// Every named option, set to a non-default value, and a check that reads it back.
fn options() -> Vec<(SockOpt, ReadBack)> {
    vec![
        (SockOpt::reuse_addr(true), |s| sockopt::socket_reuseaddr(s).unwrap()),
        (SockOpt::reuse_port(true), |s| sockopt::socket_reuseport(s).unwrap()),
        (SockOpt::keep_alive(true), |s| sockopt::socket_keepalive(s).unwrap()),
        (SockOpt::broadcast(true), |s| sockopt::socket_broadcast(s).unwrap()),
        (SockOpt::tcp_nodelay(true), |s| sockopt::tcp_nodelay(s).unwrap()),
        (SockOpt::ipv6_v6only(true), |s| sockopt::ipv6_v6only(s).unwrap()),
        // The kernel doubles the size asked for.
        (SockOpt::recv_buffer_size(100_000), |s| sockopt::socket_recv_buffer_size(s).unwrap() >= 100_000),
        (SockOpt::send_buffer_size(100_000), |s| sockopt::socket_send_buffer_size(s).unwrap() >= 100_000),
        // The escape hatch: any int option by number (SO_REUSEADDR again).
        (raw::sock_opt_int(libc::SOL_SOCKET, libc::SO_REUSEADDR, 1), |s| sockopt::socket_reuseaddr(s).unwrap()),
    ]
}

#[test]
fn every_sock_opt_sets_its_option_through_the_ring() {
    for fiber in [true, false] {
        let ex = executor(RingConfig::default());
        let ex = ex.as_ref();
        let failed: Rc<RefCell<Vec<String>>> = Rc::default();
        let f2 = failed.clone();
        let check = move |s: &Socket, opt: SockOpt, r: Result<(), Errno>, read: ReadBack| {
            if r.is_err() || !read(s) {
                f2.borrow_mut().push(format!("{opt:?}: {r:?}"));
            }
        };
        if fiber {
            ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
                for (opt, read) in options() {
                    let s = f.socket(AddressFamily::INET6, SocketType::STREAM, Some(ipproto::TCP)).unwrap();
                    let r = f.set_option(&s, opt);
                    check(&s, opt, r, read);
                    f.close_socket(s).unwrap();
                }
                0u64
            })
            .unwrap();
        } else {
            ex.attach(task(), async move {
                for (opt, read) in options() {
                    let s = net::future::socket(AddressFamily::INET6, SocketType::STREAM, Some(ipproto::TCP))
                        .await
                        .unwrap();
                    let r = net::future::set_option(&s, opt).await;
                    check(&s, opt, r, read);
                    net::future::close_socket(s).await.unwrap();
                }
                0u64
            })
            .unwrap();
        }
        run_all(ex);
        assert!(failed.borrow().is_empty(), "fiber {fiber}: {:?}", failed.borrow());
    }
}

#[test]
fn socket_types_and_protocols_make_the_socket_asked_for() {
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = got.clone();
    ex.attach(task(), async move {
        for (ty, proto) in [(SocketType::STREAM, None), (SocketType::DGRAM, Some(ipproto::UDP))] {
            let s = net::future::socket(AddressFamily::INET, ty, proto).await.unwrap();
            g.borrow_mut().push(Ok(sockopt::socket_type(&s).unwrap()));
            net::future::close_socket(s).await.unwrap();
        }
        // A protocol that does not fit the type: the kernel's error, typed or not.
        let r = net::future::socket(AddressFamily::INET, SocketType::STREAM, Some(ipproto::UDP)).await;
        g.borrow_mut().push(r.map(|_| SocketType::STREAM));
        0u64
    })
    .unwrap();
    run_all(ex);
    assert_eq!(*got.borrow(), vec![Ok(SocketType::STREAM), Ok(SocketType::DGRAM), Err(Errno(libc::EPROTONOSUPPORT))]);
}

#[test]
fn open_flags_and_mode_make_the_file_asked_for() {
    let dir = std::env::temp_dir().join(format!("keel-flags-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for fiber in [true, false] {
        let ex = executor(RingConfig::default());
        let ex = ex.as_ref();
        let path = dir.join(format!("f{fiber}")).to_str().unwrap().to_owned();
        let out = Rc::new(RefCell::new(Vec::new()));
        let (o, p) = (out.clone(), path.clone());
        let create = OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY;
        let mode = Mode::from_raw_mode(0o640);
        if fiber {
            ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
                let c = std::ffi::CString::new(p).unwrap();
                let file = f.open(&c, create, mode).unwrap();
                f.close(file).unwrap();
                // O_EXCL reached the kernel: a second create fails.
                o.borrow_mut().push(f.open(&c, create, mode).err());
                0u64
            })
            .unwrap();
        } else {
            ex.attach(task(), async move {
                let file = fs::open(&p, create, mode).await.unwrap();
                fs::close(file).await.unwrap();
                let again = fs::open(&p, create, mode).await.err();
                o.borrow_mut().push(again);
                0u64
            })
            .unwrap();
        }
        run_all(ex);
        assert_eq!(*out.borrow(), vec![Some(Errno(libc::EEXIST))], "fiber {fiber}");
        let perm = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(perm & !0o022, 0o640 & !0o022, "fiber {fiber}: the mode reached the kernel (umask aside)");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fiber_and_future_open_take_the_same_path_types() {
    let dir = std::env::temp_dir().join(format!("keel-paths-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("p");
    std::fs::write(&file, b"x").unwrap();
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let out = Rc::new(RefCell::new(Vec::new()));
    let (o, p) = (out.clone(), file.clone());
    ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
        let s = p.to_str().unwrap().to_owned();
        let c = std::ffi::CString::new(s.clone()).unwrap();
        for r in [
            f.open(p.as_path(), OFlags::RDONLY, Mode::empty()),
            f.open(&s, OFlags::RDONLY, Mode::empty()),
            f.open(c.as_c_str(), OFlags::RDONLY, Mode::empty()),
        ] {
            let r = r.and_then(|file| f.close(file)); // suspends: no borrow held across it
            o.borrow_mut().push(r);
        }
        o.borrow_mut().push(f.open("a\0b", OFlags::RDONLY, Mode::empty()).map(drop));
        0u64
    })
    .unwrap();
    // The tasks' operations interleave (on the epoll backend the pool's threads finish
    // opens in any order): each task keeps its own results.
    let out2 = Rc::new(RefCell::new(Vec::new()));
    let (o, p) = (out2.clone(), file.clone());
    ex.attach(task(), async move {
        for r in [
            fs::open(p.as_path(), OFlags::RDONLY, Mode::empty()).await,
            fs::open(p.to_str().unwrap(), OFlags::RDONLY, Mode::empty()).await,
        ] {
            let r = match r {
                Ok(file) => fs::close(file).await,
                Err(e) => Err(e),
            };
            o.borrow_mut().push(r);
        }
        let r = fs::open("a\0b", OFlags::RDONLY, Mode::empty()).await.map(drop);
        o.borrow_mut().push(r);
        0u64
    })
    .unwrap();
    run_all(ex);
    let (ok, nul) = (Ok(()), Err(Errno::EINVAL));
    assert_eq!(*out.borrow(), vec![ok, ok, ok, nul], "the fiber");
    assert_eq!(*out2.borrow(), vec![ok, ok, nul], "the future");
    std::fs::remove_dir_all(&dir).unwrap();
}
