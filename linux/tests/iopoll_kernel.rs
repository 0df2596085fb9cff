//! What the kernel does on an `IORING_SETUP_IOPOLL` ring, measured on the ring itself
//! (the io-uring crate, no keel driver): the facts a polled-i/o ring option must be built
//! on. Measured on 6.18 (virtio block device, ext4): a read of a file opened without
//! `O_DIRECT` completes with `EOPNOTSUPP`, as a pipe read does; an `O_DIRECT` read does
//! too where the device has no poll queues (this one), else it returns the data;
//! `ASYNC_CANCEL`, `TIMEOUT` and `FSYNC` are refused with `EINVAL` (so no cancel, no
//! deadline, no sync on such a ring); `NOP` works; a `GETEVENTS` enter with a timeout and
//! nothing in flight returns at once (a park there would spin).

use io_uring::{IoUring, opcode, squeue, types};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

/// Submits `e` and returns its CQE's result (bounded: 2 s).
fn one(ring: &mut IoUring, e: squeue::Entry) -> Option<i32> {
    // SAFETY: what `e` points at lives until this returns, after its CQE.
    unsafe { ring.submission().push(&e.user_data(1)) }.unwrap();
    let t0 = std::time::Instant::now();
    loop {
        let _ = ring.submit_and_wait(1);
        if let Some(c) = ring.completion().next() {
            return Some(c.result());
        }
        if t0.elapsed().as_secs() >= 2 {
            return None;
        }
    }
}

#[test]
fn an_iopoll_ring_refuses_buffered_reads_cancels_and_timeouts() {
    let Ok(mut ring) = IoUring::builder().setup_iopoll().build(8) else {
        eprintln!("SKIP: no io_uring with IORING_SETUP_IOPOLL here");
        return;
    };
    let dir = std::env::temp_dir();
    let path = dir.join(format!("keel-iopoll-{}", std::process::id()));
    std::fs::write(&path, vec![1u8; 1 << 16]).unwrap();
    let mut buf = vec![0u8; 8192];
    let aligned = buf.as_mut_ptr().wrapping_add(buf.as_ptr().align_offset(4096));
    let plain = std::fs::File::open(&path).unwrap();
    assert_eq!(one(&mut ring, opcode::Nop::new().build()), Some(0));
    let read = |fd: i32| opcode::Read::new(types::Fd(fd), aligned, 4096).offset(0).build();
    assert_eq!(one(&mut ring, read(plain.as_raw_fd())), Some(-libc::EOPNOTSUPP), "a buffered read is refused");
    let (r, _w) = std::io::pipe().unwrap();
    assert_eq!(one(&mut ring, read(r.as_raw_fd())), Some(-libc::EOPNOTSUPP), "a pipe read is refused");
    assert_eq!(one(&mut ring, opcode::AsyncCancel::new(99).build()), Some(-libc::EINVAL), "no cancel");
    let ts = types::Timespec::new().nsec(1000);
    assert_eq!(one(&mut ring, opcode::Timeout::new(&ts).build()), Some(-libc::EINVAL), "no timeout");
    assert_eq!(one(&mut ring, opcode::Fsync::new(types::Fd(plain.as_raw_fd())).build()), Some(-libc::EINVAL));
    match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(&path) {
        Ok(direct) => {
            let r = one(&mut ring, read(direct.as_raw_fd()));
            eprintln!("an O_DIRECT read on this device's IOPOLL ring: {r:?} (EOPNOTSUPP: no poll queues)");
            assert!(r == Some(4096) || r == Some(-libc::EOPNOTSUPP), "{r:?}");
        }
        Err(e) => eprintln!("O_DIRECT is not supported by this file system: {e}"),
    }
    std::fs::remove_file(&path).unwrap();
}
