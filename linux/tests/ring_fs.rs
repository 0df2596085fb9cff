//! File i/o on a real ring, for fibers and futures.

#[path = "net_util/mod.rs"]
mod net_util;

use core::pin::pin;
use core::time::Duration;
use keel_core::{
    Config, Errno, Executor, Fiber, FiberAttrs, Priorities, Priority, RegionStacks, TaskAttrs, TaskHandle, TaskSlot,
    TaskState,
};
use keel_linux::fs::{self, FallocateFlags, FiberFs, Mode, OFlags, SyncFileRangeFlags};
use keel_linux::{RingConfig, RingDriver};
use std::ffi::CString;
use std::path::PathBuf;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("keel-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn task() -> TaskHandle {
    let s: &'static TaskSlot<1024> = Box::leak(Box::new(TaskSlot::new()));
    s.create(TaskAttrs::default()).unwrap()
}

fn stacks(n: usize) -> RegionStacks {
    RegionStacks::new(Vec::leak(vec![0u8; n * 68 * 1024 + 64]), 64 * 1024, 4096).unwrap()
}

fn ring(cfg: RingConfig) -> RingDriver {
    RingDriver::new(cfg).expect("io_uring is available on this kernel")
}

macro_rules! run_all {
    ($ex:expr) => {{
        let t0 = std::time::Instant::now();
        while $ex.attached() > 0 {
            $ex.run(1024, Some(Duration::from_secs(5))).expect("run");
            assert!(t0.elapsed() < Duration::from_secs(60), "runaway");
        }
    }};
}

#[test]
fn a_fiber_writes_syncs_and_reads_back() {
    let d = dir("fiber-rw");
    let path = CString::new(d.join("f").to_str().unwrap()).unwrap();
    let ex = pin!(Executor::with_stacks(ring(RingConfig::default()), stacks(2), keel_linux::panic::config()).unwrap());
    let ex = ex.into_ref();
    let t = ex
        .attach_fiber(task(), FiberAttrs::default(), move |f: &mut Fiber| -> Result<u64, keel_core::TaskError> {
            let file = f.open(&path, OFlags::CREATE | OFlags::RDWR, Mode::from_raw_mode(0o644)).expect("open");
            let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
            assert_eq!(f.write(&file, &data, 0), Ok(10_000));
            f.fsync(&file).expect("fsync");
            f.fdatasync(&file).expect("fdatasync");
            f.sync_file_range(&file, 0, 4096, SyncFileRangeFlags::WRITE).expect("sync_file_range");
            f.fallocate(&file, FallocateFlags::empty(), 0, 1 << 20).expect("fallocate");
            let mut back = vec![0u8; 10_000];
            assert_eq!(f.read(&file, &mut back, 0), Ok(10_000));
            assert_eq!(back, data);
            // A short read at the end of the file (fallocate made it 1 MiB).
            let mut tail = vec![0u8; 100];
            assert_eq!(f.read(&file, &mut tail, (1 << 20) - 30), Ok(30));
            let (mut a, mut b) = (vec![0u8; 3], vec![0u8; 4]);
            let n =
                f.readv(&file, &mut [std::io::IoSliceMut::new(&mut a), std::io::IoSliceMut::new(&mut b)], 0).unwrap();
            assert_eq!((n, &a[..], &b[..]), (7, &data[..3], &data[3..7]));
            f.close(file).expect("close");
            Ok(1)
        })
        .unwrap();
    run_all!(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(1))));
    assert_eq!(std::fs::metadata(d.join("f")).unwrap().len(), 1 << 20);
}

#[test]
fn futures_pass_buffers_by_ownership() {
    let d = dir("future-rw");
    let p = d.join("g").to_str().unwrap().to_owned();
    let ex = pin!(Executor::new(ring(RingConfig::default()), Config::default()).unwrap());
    let ex = ex.into_ref();
    let t = ex
        .attach(task(), async move {
            let file = fs::open(&p, OFlags::CREATE | OFlags::RDWR, Mode::from_raw_mode(0o644)).await.expect("open");
            let (r, buf) = fs::write(&file, b"hello, ring".to_vec(), 0).await;
            assert_eq!(r, Ok(11));
            assert_eq!(buf, b"hello, ring");
            fs::fdatasync(&file).await.expect("fdatasync");
            let (r, back) = fs::read(&file, Vec::with_capacity(64), 0).await;
            assert_eq!(r, Ok(11));
            assert_eq!(back, b"hello, ring");
            fs::close(file).await.expect("close");
            assert_eq!(fs::open("/nonexistent/keel", OFlags::RDONLY, Mode::empty()).await.err(), Some(Errno::ENOENT));
            Ok(2)
        })
        .unwrap();
    run_all!(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(2))));
}

#[test]
fn a_read_on_a_closed_fd_is_ebadf_and_a_missing_path_is_enoent() {
    let ex = pin!(Executor::with_stacks(ring(RingConfig::default()), stacks(1), Config::default()).unwrap());
    let ex = ex.into_ref();
    let t = ex
        .attach_fiber(task(), FiberAttrs::default(), |f: &mut Fiber| {
            // SAFETY: 99 999 is not open in the test process (nobody else's to close), and
            // the `File` gives it up below without closing it.
            let bogus = unsafe { keel_linux::File::from_raw_fd(99_999) };
            let mut b = [0u8; 8];
            assert_eq!(f.read(&bogus, &mut b, 0), Err(Errno::EBADF));
            let _ = bogus.into_raw_fd();
            let missing = CString::new("/definitely/not/here").unwrap();
            assert_eq!(f.open(&missing, OFlags::RDONLY, Mode::empty()).err(), Some(Errno::ENOENT));
            3u64
        })
        .unwrap();
    run_all!(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(3))));
}

#[test]
fn a_pipe_read_cancelled_in_flight_and_the_task_drains() {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (rd, wr) = (fds[0], fds[1]);
    let ex = pin!(Executor::with_stacks(ring(RingConfig::default()), stacks(1), Config::default()).unwrap());
    let ex = ex.into_ref();
    let t = ex
        .attach_fiber(task(), FiberAttrs::default(), move |f: &mut Fiber| -> keel_core::TaskResult {
            // SAFETY: the pipe's read end is ours and wrapped once.
            let file = unsafe { keel_linux::File::from_raw_fd(rd) };
            let mut b = [0u8; 8];
            let r = f.read(&file, &mut b, 0);
            assert_eq!(r, Err(Errno::ECANCELED));
            Err(keel_core::TaskError::Cancelled)
        })
        .unwrap();
    ex.run(1, None).unwrap();
    assert_eq!(ex.state(t), Ok(TaskState::Suspended(keel_core::SuspendReason::Io)));
    assert_eq!(ex.cancel(t), Ok(keel_core::CancelOutcome::CancellingIo));
    run_all!(ex);
    assert_eq!(ex.result(t), Ok(Some(Err(keel_core::TaskError::Cancelled))));
    // SAFETY: our descriptor.
    unsafe { libc::close(wr) };
}

#[test]
fn slot_rule_3_a_future_dropped_with_a_pipe_read_in_flight_gives_its_slot_back_safely() {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (rd, wr) = (fds[0], fds[1]);
    let ex = pin!(Executor::new(ring(RingConfig { slots: 4, ..RingConfig::default() }), Config::default()).unwrap());
    let ex = ex.into_ref();
    // SAFETY: the pipe's read end is ours and wrapped once.
    let file: &'static keel_linux::File = Box::leak(Box::new(unsafe { keel_linux::File::from_raw_fd(rd) }));
    let t = ex
        .attach(task(), async move {
            fs::read(file, vec![0u8; 4096], 0).await.0.map(u64::from).map_err(|_| keel_core::TaskError::Failed(1))
        })
        .unwrap();
    ex.run(1, None).unwrap();
    assert_eq!(ex.state(t), Ok(TaskState::Suspended(keel_core::SuspendReason::Io)));
    // Dropping the future (cancel) abandons the op: the slot keeps the buffer.
    // The future's read is not on the task's status lists (its slot keeps it), so the
    // task resumes at once, sees the cancel, and abandons the read to its slot.
    assert!(ex.cancel(t).is_ok());
    run_all!(ex);
    assert!(matches!(ex.result(t), Ok(Some(Err(_)))));
    // The kernel may already have answered the cancel; either way the slot still
    // accounts for the read until its CQE is reaped (checked below).
    // Write into the pipe: if the kernel still had the read, it must land in the slot's
    // buffer, never in freed memory. Then run until every slot is free again.
    // SAFETY: writing 5 bytes from a static buffer to our pipe.
    unsafe { libc::write(wr, b"later".as_ptr().cast(), 5) };
    for _ in 0..100 {
        let _ = ex.run(8, Some(Duration::from_millis(10)));
        if ex.with_driver(|d| keel_core::Driver::in_flight(&**d)).unwrap() == 0 {
            break;
        }
    }
    assert_eq!(
        ex.with_driver(|d| keel_core::Driver::in_flight(&**d)).unwrap(),
        0,
        "the abandoned read never completed"
    );
    assert_eq!(ex.with_driver(|d| keel_core::Driver::submit_capacity(&**d)).unwrap(), 4, "a slot was not given back");
    // SAFETY: our descriptor.
    unsafe { libc::close(wr) };
}

#[test]
fn priorities_go_into_ioprio_only_for_read_and_write() {
    use keel_linux::ring::op::{ioprio_for, opcode_takes_priority};
    let read = keel_linux::RingOp::nop();
    assert!(!opcode_takes_priority(read.opcode()));
    assert!(read.with_priority(Priority::High, false).is_err(), "a NOP must never carry a priority");
    let mut b = [0u8; 4];
    let e = io_uring::opcode::Read::new(io_uring::types::Fd(0), b.as_mut_ptr(), 4).build();
    // SAFETY: the op is only inspected, never submitted.
    let op = unsafe { keel_linux::RingOp::from_entry(e) }.with_priority(Priority::Low, false).unwrap();
    assert_eq!(op.ioprio(), ioprio_for(Priority::Low, false));
    assert_eq!(op.ioprio() >> 13, 2, "best-effort class");
    let e = io_uring::opcode::Send::new(io_uring::types::Fd(0), b.as_ptr(), 4).build();
    // SAFETY: as above.
    let send = unsafe { keel_linux::RingOp::from_entry(e) };
    assert!(send.with_priority(Priority::High, true).is_err(), "send's ioprio carries op flags, never a priority");
    let _ = Priorities::default();
}

#[test]
fn direct_descriptors_write_read_and_close_through_the_ring() {
    if net_util::ring_only("direct descriptors") {
        return;
    }
    let d = dir("direct");
    let path = CString::new(d.join("h").to_str().unwrap()).unwrap();
    let ex = pin!(
        Executor::with_stacks(
            ring(RingConfig { registered_files: 8, ..RingConfig::default() }),
            stacks(1),
            keel_linux::panic::config()
        )
        .unwrap()
    );
    let ex = ex.into_ref();
    let t = ex
        .attach_fiber(task(), FiberAttrs::default(), move |f: &mut Fiber| {
            let file =
                f.open_direct(&path, OFlags::CREATE | OFlags::RDWR, Mode::from_raw_mode(0o644)).expect("open_direct");
            assert!(file.index() < 8);
            assert_eq!(f.write_direct(&file, b"direct", 0), Ok(6));
            let mut b = [0u8; 6];
            assert_eq!(f.read_direct(&file, &mut b, 0), Ok(6));
            assert_eq!(&b, b"direct");
            f.close_direct(file).expect("close_direct");
            1u64
        })
        .unwrap();
    run_all!(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(1))));
    assert_eq!(std::fs::read(d.join("h")).unwrap(), b"direct");
}

#[test]
fn linked_operations_run_in_order_and_a_no_wait_submit_says_busy() {
    let d = dir("linked");
    let path = d.join("l").to_str().unwrap().to_owned();
    let ex = pin!(Executor::new(ring(RingConfig { slots: 2, ..RingConfig::default() }), Config::default()).unwrap());
    let ex = ex.into_ref();
    let t = ex
        .attach(task(), async move {
            let file = fs::open(&path, OFlags::CREATE | OFlags::RDWR, Mode::from_raw_mode(0o644)).await.unwrap();
            let raw = file.fd();
            // A write linked to a read: the read starts only after the write completed.
            let data: &'static [u8] = b"linked!";
            let mut back: &'static mut [u8] = Box::leak(vec![0u8; 7].into_boxed_slice());
            let w = io_uring::opcode::Write::new(io_uring::types::Fd(raw), data.as_ptr(), 7).offset(0).build();
            let r = io_uring::opcode::Read::new(io_uring::types::Fd(raw), back.as_mut_ptr(), 7).offset(0).build();
            // SAFETY: both buffers are leaked statics.
            let (w, r) = unsafe { (keel_linux::RingOp::from_entry(w).linked(), keel_linux::RingOp::from_entry(r)) };
            let (sw, sr) = (pin!(keel_core::IoStatus::new()), pin!(keel_core::IoStatus::new()));
            keel_core::initiate::<RingDriver>(sw.as_ref(), w).await.unwrap();
            keel_core::initiate::<RingDriver>(sr.as_ref(), r).await.unwrap();
            // Both slots are taken: a no-wait owned op is refused with EBUSY at once.
            let (busy, _) = fs::OwnedOp::new_nowait(keel_linux::RingOp::nop_owned()).await;
            assert_eq!(busy, Err(Errno::EBUSY));
            let mut n = 0;
            while n < 2 {
                n += keel_core::suspend_until_completed_io(2).await?;
            }
            assert_eq!((sw.result(), sr.result()), (Some(Ok(7)), Some(Ok(7))));
            assert_eq!(&back[..], data);
            back = &mut back[..0];
            let _ = back;
            fs::close(file).await.unwrap();
            Ok(1)
        })
        .unwrap();
    run_all!(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(1))));
}

/// fd rule 5: safe code takes a descriptor over only from an `OwnedFd`, lends it with
/// `AsFd`/`AsRawFd`, and gets it back as an `OwnedFd` (still open) when no operation
/// holds it.
#[test]
fn fd_rule_5_a_file_and_a_socket_convert_from_and_into_owned_fds() {
    use std::os::fd::{AsFd, AsRawFd, OwnedFd};
    let std_file = std::fs::File::open("/dev/null").unwrap();
    let raw = std_file.as_raw_fd();
    let file = keel_linux::File::from(OwnedFd::from(std_file));
    assert_eq!((file.fd(), file.as_raw_fd(), file.as_fd().as_raw_fd()), (raw, raw, raw));
    let owned = file.into_owned_fd().expect("no operation holds it");
    assert_eq!(owned.as_raw_fd(), raw, "given back open, the same number");
    assert!(rustix::io::fcntl_getfd(&owned).is_ok(), "still open");
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let sraw = a.as_raw_fd();
    let s: keel_linux::net::Socket = OwnedFd::from(a).into();
    assert_eq!(s.as_fd().as_raw_fd(), sraw);
    let back = s.into_owned_fd().expect("no operation holds it");
    assert_eq!(back.as_raw_fd(), sraw);
    drop(back);
    assert!(rustix::io::fcntl_getfd(&owned).is_ok(), "the file's descriptor is untouched");
}
