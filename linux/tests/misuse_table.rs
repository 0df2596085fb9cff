//! The misuse table (`MISUSE.md` at the repository root): keel-linux rows no other test
//! file shows. Each test makes one caller mistake and asserts the exact error.

#[path = "net_util/mod.rs"]
mod util;

use core::future::Future;
use core::pin::pin;
use core::task::{Context, Poll};
use keel_core::{Config, Errno, Executor, Fiber, TaskError};
use keel_linux::fs::{self, BufferError, FiberFs, Mode, OFlags};
use keel_linux::net::{self, AddressFamily, FiberNet, SockAddr, SocketType};
use keel_linux::{File, MmapStacks, RingConfig, RingDriver, SleepDriver};
use util::*;

/// `RingDriver::new` with no SQ entries, no slots, or 2^30 slots or more: `InvalidInput`.
#[test]
fn ring_config_zero_entries_or_slots_is_invalid_input() {
    for cfg in [
        RingConfig { entries: 0, ..RingConfig::default() },
        RingConfig { slots: 0, ..RingConfig::default() },
        RingConfig { slots: (1 << 30) + 1, ..RingConfig::default() },
    ] {
        let e = RingDriver::new(cfg).err().expect("refused");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{cfg:?}");
        assert!(e.to_string().contains("must be at least 1"), "{e}");
    }
}

/// Registered buffers of 0 bytes: `InvalidInput`.
#[test]
fn registered_buffer_size_zero_is_invalid_input() {
    let cfg = RingConfig { registered_buffers: 2, registered_buffer_size: 0, ..RingConfig::default() };
    let e = RingDriver::new(cfg).err().expect("refused");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("registered_buffer_size must be at least 1"), "{e}");
}

/// A guard size that cannot be rounded up to a page: `EINVAL`.
#[test]
fn mmap_stacks_guard_that_overflows_is_einval() {
    assert_eq!(MmapStacks::with_guard(usize::MAX).err(), Some(Errno::EINVAL));
    assert!(MmapStacks::with_guard(1).is_ok(), "a small guard rounds up to a page");
}

/// A Unix-domain path of 108 bytes or more, or one with a NUL: `EINVAL`.
#[test]
fn sockaddr_unix_too_long_or_with_nul_is_einval() {
    assert_eq!(SockAddr::unix(&"a".repeat(108)).err(), Some(Errno::EINVAL));
    assert_eq!(SockAddr::unix("a\0b").err(), Some(Errno::EINVAL));
    assert!(SockAddr::unix(&"a".repeat(107)).is_ok());
}

/// Runs one future task on a fresh ring executor and returns its result.
fn on_ring(cfg: RingConfig, body: impl Future<Output = Result<u64, TaskError>> + 'static) -> keel_core::TaskResult {
    let ex = executor(cfg);
    let ex = ex.as_ref();
    let t = ex.attach(task(), body).unwrap();
    run_all(ex);
    ex.result(t).unwrap().expect("completed")
}

/// `fs::open` of a path with a NUL byte: `EINVAL` (nothing is submitted).
#[test]
fn open_with_a_nul_in_the_path_is_einval() {
    let r = on_ring(RingConfig::default(), async {
        assert_eq!(fs::open("/tmp/a\0b", OFlags::RDONLY, Mode::empty()).await.err(), Some(Errno::EINVAL));
        Ok(1)
    });
    assert_eq!(r, Ok(1));
}

/// Claiming a registered buffer on a ring that registered none: `NoneRegistered`, from
/// the fiber calls and the future.
#[test]
fn claim_buffer_with_none_registered_is_none_registered() {
    let r = on_ring(RingConfig::default(), async {
        assert_eq!(fs::claim_buffer().await.err(), Some(BufferError::NoneRegistered));
        Ok(1)
    });
    assert_eq!(r, Ok(1));
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let t = ex
        .attach_fiber(task(), fattrs(), |f: &mut Fiber| {
            assert_eq!(f.try_claim_buffer().err(), Some(BufferError::NoneRegistered));
            assert_eq!(f.claim_buffer().err(), Some(BufferError::NoneRegistered));
            Ok(2)
        })
        .unwrap();
    run_all(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(2))));
    assert!(BufferError::NoneRegistered.to_string().contains("set RingConfig::registered_buffers"));
}

/// Claiming a registered buffer on an executor without a ring, or polling the claim
/// outside any task: `NotOnRing`.
#[test]
fn claim_buffer_without_a_ring_is_not_on_ring() {
    let ex =
        Box::pin(Executor::with_stacks(SleepDriver::new(), MmapStacks::new().unwrap(), Config::default()).unwrap());
    let ex = ex.as_ref();
    let fut = ex
        .attach(task(), async {
            assert_eq!(fs::claim_buffer().await.err(), Some(BufferError::NotOnRing));
            Ok(1)
        })
        .unwrap();
    let fib = ex
        .attach_fiber(task(), fattrs(), |f: &mut Fiber| {
            assert_eq!(f.try_claim_buffer().err(), Some(BufferError::NotOnRing));
            assert_eq!(f.claim_buffer().err(), Some(BufferError::NotOnRing));
            Ok(2)
        })
        .unwrap();
    while ex.attached() > 0 {
        ex.run(16, Some(core::time::Duration::from_millis(10))).unwrap();
    }
    assert_eq!(ex.result(fut), Ok(Some(Ok(1))));
    assert_eq!(ex.result(fib), Ok(Some(Ok(2))));
    let mut outside = pin!(fs::claim_buffer());
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(matches!(outside.as_mut().poll(&mut cx), Poll::Ready(Err(BufferError::NotOnRing))));
}

/// A file read or write on an executor whose driver is not the ring: the operation is
/// refused with `EINVAL` and the buffer comes back.
#[test]
fn file_io_on_an_executor_without_a_ring_is_einval() {
    let ex = Box::pin(Executor::new(SleepDriver::new(), Config::default()).unwrap());
    let ex = ex.as_ref();
    let file = File::from(std::os::fd::OwnedFd::from(std::fs::File::open("/dev/null").unwrap()));
    let t = ex
        .attach(task(), async move {
            let (r, buf) = fs::read(&file, vec![0u8; 8], 0).await;
            assert_eq!(r, Err(Errno::EINVAL));
            assert_eq!((buf.len(), buf.capacity()), (0, 8), "the buffer comes back, nothing read");
            let (r, buf) = fs::write(&file, b"kept".to_vec(), 0).await;
            assert_eq!(r, Err(Errno::EINVAL));
            assert_eq!(buf, b"kept", "the buffer comes back unchanged");
            Ok(1)
        })
        .unwrap();
    while ex.attached() > 0 {
        ex.run(16, Some(core::time::Duration::from_millis(10))).unwrap();
    }
    assert_eq!(ex.result(t), Ok(Some(Ok(1))));
}

/// A provided-buffer receive on a ring with no provided buffers enabled: `ENOBUFS`, from
/// the futures and the fiber calls.
#[test]
fn recv_provided_without_provided_buffers_is_enobufs() {
    let r = on_ring(RingConfig::default(), async {
        let s = net::future::socket(AddressFamily::INET, SocketType::STREAM, None).await.expect("socket");
        assert_eq!(net::future::recv_provided(&s).await.err(), Some(Errno::ENOBUFS));
        assert_eq!(net::future::recv_multi(&s).await.err(), Some(Errno::ENOBUFS));
        net::future::close_socket(s).await.expect("close");
        Ok(1)
    });
    assert_eq!(r, Ok(1));
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let t = ex
        .attach_fiber(task(), fattrs(), |f: &mut Fiber| {
            let s = f.socket(AddressFamily::INET, SocketType::STREAM, None).expect("socket");
            assert_eq!(f.recv_provided(&s).err(), Some(Errno::ENOBUFS));
            assert_eq!(f.recv_multi(&s).err(), Some(Errno::ENOBUFS));
            f.close_socket(s).expect("close");
            Ok(2)
        })
        .unwrap();
    run_all(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(2))));
}

/// Taking the wrong kind of item from a multishot (a receive from an accept, a direct
/// accept from a plain one): `EINVAL`, and the multishot is left as it was.
#[test]
fn next_of_the_wrong_kind_on_a_multishot_is_einval() {
    let r = on_ring(RingConfig::default(), async {
        let s = net::future::socket(AddressFamily::INET, SocketType::STREAM, None).await.expect("socket");
        let mut m = net::future::accept_multi(&s);
        assert_eq!(net::future::next_recv(&mut m).await.err(), Some(Errno::EINVAL));
        assert_eq!(net::future::next_accept_direct(&mut m).await.err(), Some(Errno::EINVAL));
        drop(m);
        net::future::close_socket(s).await.expect("close");
        Ok(1)
    });
    assert_eq!(r, Ok(1));
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let t = ex
        .attach_fiber(task(), fattrs(), |f: &mut Fiber| {
            let s = f.socket(AddressFamily::INET, SocketType::STREAM, None).expect("socket");
            let mut m = f.accept_multi(&s);
            assert_eq!(f.next_recv(&mut m).err(), Some(Errno::EINVAL));
            assert_eq!(f.next_accept_direct(&mut m).err(), Some(Errno::EINVAL));
            drop(m);
            f.close_socket(s).expect("close");
            Ok(2)
        })
        .unwrap();
    run_all(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(2))));
}

/// Enabling provided buffers a second time: `AlreadyExists`, the first ring kept.
#[test]
fn provided_buffers_enabled_twice_is_already_exists() {
    if ring_only("provided buffers") {
        return;
    }
    let mut d = ring(RingConfig::default());
    d.enable_provided_buffers(4, 64).expect("the first ring");
    let e = d.enable_provided_buffers(8, 64).expect_err("refused");
    assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
    assert_eq!(d.provided_buffer_stats().map(|s| s.count), Some(4), "the first ring stays");
}

/// `ThreadPool::start` with 0 workers: nothing would ever run what is submitted to its
/// dispatcher, yet it starts. A zero bound should be refused (`InvalidInput`), as the
/// executor's `Config` refuses its zero bounds (`ConfigError::Zero`).
#[test]
fn thread_pool_with_zero_workers_is_invalid_input() {
    static D: keel_core::Dispatcher = keel_core::Dispatcher::new();
    match keel_linux::pool::ThreadPool::start(&D, 0, false) {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput),
        Ok(pool) => {
            let _ = pool.quit_and_join();
            panic!("a pool of 0 workers started");
        }
    }
}
