//! A registered-buffer file read: a fiber on a ring with one registered buffer
//! (`RingConfig { registered_buffers: 1, .. }`), claimed once before the window,
//! `READ_FIXED`s the 512 bytes of a small, page-cached temporary file into it with
//! `FiberFs::read_fixed`; each cycle clears the bytes first and checks them after, so
//! every read is seen to land. 1,000,000 reads in the window (1.1-1.9 µs each here:
//! one SQE, one `io_uring_enter`, a page-cache copy). Skipped, loudly, where io_uring is
//! unavailable.

use core::pin::pin;
use keel_alloc_free_tests::{CYCLES, WARM_UP, Window, assert_alloc_free, ring_or_skip, run_to_end, run_until, task};
use keel_core::{Errno, Executor, Fiber, FiberAttrs, RegionStacks, TaskError};
use keel_linux::RingConfig;
use keel_linux::fs::FiberFs;
use std::sync::atomic::{AtomicU64, Ordering};

/// Reads done (Relaxed: read on the same thread).
static DONE: AtomicU64 = AtomicU64::new(0);

const LEN: usize = 512;

/// The file's bytes.
const PATTERN: [u8; LEN] = {
    let mut p = [0u8; LEN];
    let mut i = 0;
    while i < LEN {
        p[i] = (i * 7 + 1) as u8;
        i += 1;
    }
    p
};

#[test]
fn a_registered_buffer_read_allocates_nothing() {
    let what = "ring read_fixed 512 B";
    let cfg = RingConfig { registered_buffers: 1, registered_buffer_size: 4096, ..RingConfig::default() };
    let Some(ring) = ring_or_skip(what, cfg) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("keel-alloc-free-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("read_fixed");
    std::fs::write(&path, PATTERN).unwrap();
    // Outlives the window: a `File` frees its shared count when dropped (fd rule 1), which
    // the fiber's last iteration would otherwise do inside the window.
    let file: &'static keel_linux::File =
        Box::leak(Box::new(keel_linux::File::from(std::os::fd::OwnedFd::from(std::fs::File::open(&path).unwrap()))));

    let stacks = RegionStacks::new(Vec::leak(vec![0u8; 64 * 1024 + 16]), 64 * 1024, 0).expect("region stacks");
    let ex = pin!(Executor::with_stacks(ring, stacks, keel_linux::panic::config()).unwrap());
    let ex = ex.into_ref();
    let n = WARM_UP + CYCLES;
    let h = ex
        .attach_fiber(
            task::<1024>("read-fixed"),
            FiberAttrs { stack_size: 64 * 1024, ..FiberAttrs::DEFAULT },
            move |f: &mut Fiber| {
                let mut buf = f.try_claim_buffer().map_err(|_| TaskError::Failed(1))?;
                for _ in 0..n {
                    buf[..LEN].fill(0);
                    if f.read_fixed(file, &mut buf, LEN as u32, 0) != Ok::<u32, Errno>(LEN as u32) {
                        return Err(TaskError::Failed(3));
                    }
                    if buf[..LEN] != PATTERN {
                        return Err(TaskError::Failed(5));
                    }
                    DONE.fetch_add(1, Ordering::Relaxed);
                }
                f.release_buffer(buf); // an Rc count drop: the driver keeps the set
                Ok(4)
            },
        )
        .unwrap_or_else(|e| panic!("attach_fiber: {e}"));

    run_until(ex, || DONE.load(Ordering::Relaxed) >= WARM_UP);
    let w = Window::open();
    run_until(ex, || DONE.load(Ordering::Relaxed) >= n);
    let counts = w.close();
    run_to_end(ex);
    assert_eq!(ex.result(h), Ok(Some(Ok(4))));
    assert_eq!(DONE.load(Ordering::Relaxed), n);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_alloc_free(what, CYCLES, &counts);
}
