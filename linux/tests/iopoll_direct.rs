//! A polled ring's one use (iopoll rule 1 in `ring/config.rs`): an `O_DIRECT` read and write
//! through keel's driver complete with their data where the file's block device has poll
//! queues. Tried in /dev/shm, the temp directory, the target directory and
//! `$KEEL_IOPOLL_DIR` (set it to a directory on, say, an NVMe device with `poll_queues`):
//! where the device says it polls (`/sys/dev/block/M:N/queue/io_poll` is 1, or the
//! directory is `$KEEL_IOPOLL_DIR`) the i/o must succeed with the right bytes; where it
//! does not (tmpfs has no block device; a queue without poll queues), the kernel's
//! `EOPNOTSUPP` is the typed error of the read. The test skips, saying why for each place,
//! when no place can poll.
//!
//! Measured on 6.18 (ext4 on a virtio disk whose queue has no poll queues, `io_poll` 0;
//! tmpfs in /dev/shm): every polled `O_DIRECT` i/o on tmpfs is `EOPNOTSUPP`; on the ext4
//! file the read is `EOPNOTSUPP` but the write of an allocated, synced block completes
//! with its bytes on disk (checked below whenever a write succeeds), so on such a device a
//! polled ring can write but not read.

mod net_util;

use keel_core::{Errno, Fiber};
use keel_linux::fs::{FiberFs, File};
use keel_linux::{RingConfig, RingDriver};
use net_util::{executor_with, fattrs, run_all, task};
use std::cell::RefCell;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

const BLOCK: usize = 4096;

/// Whether the block device under `path` polls, and what says so.
fn device_polls(path: &Path) -> (bool, String) {
    let dev = std::fs::metadata(path).unwrap().dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    if major == 0 {
        return (false, format!("no block device (device {major}:{minor}, e.g. tmpfs, which has no iopoll)"));
    }
    let base = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    // A partition's queue is its disk's.
    for q in [base.join("queue/io_poll"), base.join("../queue/io_poll")] {
        if let Ok(v) = std::fs::read_to_string(&q) {
            return (v.trim() == "1", format!("{} = {}", q.display(), v.trim()));
        }
    }
    (false, format!("no queue/io_poll under {}", base.display()))
}

/// The aligned `BLOCK` bytes inside `v` (`v` holds `2 * BLOCK`).
fn aligned(v: &mut [u8]) -> &mut [u8] {
    let at = v.as_ptr().align_offset(BLOCK);
    &mut v[at..at + BLOCK]
}

/// A polled read of block 1, a polled write of block 2, and a polled read of it back, on a
/// fiber of a polled executor: each result, and the bytes read.
fn polled_io(file: Rc<File>) -> Vec<(&'static str, Result<u32, Errno>, Vec<u8>)> {
    let d = RingDriver::new(RingConfig { iopoll: true, ..RingConfig::default() }).expect("a polled ring");
    let ex = executor_with(d);
    let ex = ex.as_ref();
    let out = Rc::new(RefCell::new(Vec::new()));
    let o = out.clone();
    ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
        let mut v = vec![0u8; 2 * BLOCK];
        let buf = aligned(&mut v);
        let r = f.read(&file, buf, BLOCK as u64);
        o.borrow_mut().push(("read", r, buf.to_vec()));
        buf.fill(0xA5);
        let r = f.write(&file, buf, 2 * BLOCK as u64);
        o.borrow_mut().push(("write", r, Vec::new()));
        buf.fill(0);
        let r = f.read(&file, buf, 2 * BLOCK as u64);
        o.borrow_mut().push(("read back", r, buf.to_vec()));
        0u64
    })
    .unwrap();
    run_all(ex);
    out.take()
}

#[test]
fn iopoll_rule_1_an_o_direct_read_and_write_on_a_polling_device_complete_with_their_data() {
    if let Err(e) = RingDriver::new(RingConfig { iopoll: true, ..RingConfig::default() }) {
        eprintln!("SKIP: no polled ring here: {e}");
        return;
    }
    let mut places: Vec<(PathBuf, bool)> = vec![
        (PathBuf::from("/dev/shm"), false),
        (std::env::temp_dir(), false),
        (PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"), false),
    ];
    if let Some(d) = std::env::var_os("KEEL_IOPOLL_DIR") {
        places.push((PathBuf::from(d), true));
    }
    let mut polled = 0;
    let mut why_not = Vec::new();
    for (dir, must) in places {
        if !dir.is_dir() {
            why_not.push(format!("{}: not a directory", dir.display()));
            continue;
        }
        let path = dir.join(format!("keel-iopoll-direct-{}", std::process::id()));
        let data: Vec<u8> = (0..4 * BLOCK).map(|i| (i / BLOCK * 16 + i % 7) as u8).collect();
        let mut f = std::fs::File::create(&path).unwrap();
        std::io::Write::write_all(&mut f, &data).unwrap();
        // On disk, not dirty in the page cache: a filesystem may carry out an O_DIRECT write
        // over dirty cached pages as a buffered one, which completes without polling.
        f.sync_all().unwrap();
        drop(f);
        let (polls, device) = device_polls(&path);
        let opened = std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_DIRECT).open(&path);
        let file = match opened {
            Ok(f) => Rc::new(File::from(OwnedFd::from(f))),
            Err(e) => {
                std::fs::remove_file(&path).unwrap();
                assert!(!must && !polls, "{}: O_DIRECT refused where polling is expected: {e}", dir.display());
                why_not.push(format!("{}: O_DIRECT refused ({e}); {device}", dir.display()));
                continue;
            }
        };
        let got = polled_io(file);
        let after = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        if got[1].1 == Ok(BLOCK as u32) {
            assert!(after[2 * BLOCK..3 * BLOCK].iter().all(|&b| b == 0xA5), "{}: the write landed", dir.display());
        }
        eprintln!("{}: {device}: {:?}", dir.display(), got.iter().map(|(n, r, _)| (n, r)).collect::<Vec<_>>());
        if got[0].1 == Err(Errno(libc::EOPNOTSUPP)) {
            assert!(!must && !polls, "{}: the device polls ({device}) but the kernel refused", dir.display());
            why_not.push(format!("{}: the kernel refused polled i/o with EOPNOTSUPP; {device}", dir.display()));
            continue;
        }
        for (name, r, _) in &got {
            assert_eq!(*r, Ok(BLOCK as u32), "{}: polled {name}", dir.display());
        }
        assert_eq!(got[0].2, data[BLOCK..2 * BLOCK], "{}: the polled read's bytes", dir.display());
        assert!(got[2].2.iter().all(|&b| b == 0xA5), "{}: the polled write's bytes read back", dir.display());
        polled += 1;
    }
    if polled == 0 {
        eprintln!("SKIP: no place here polls O_DIRECT i/o: {}", why_not.join("; "));
    }
}
