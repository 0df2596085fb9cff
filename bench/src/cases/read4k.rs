//! `read4k_qd32`: 4 KiB reads at random offsets of a page-cached file, 32 in flight at
//! all times (ops/s).
//!
//! The file (256 MiB; 16 MiB with `--quick`) is made once in `$TMPDIR` (or /tmp) by the
//! bench with `std::fs`, reused if it is there with the right size and contents, and
//! read once in full before the first trial so it is in the page cache. Its 4 KiB block
//! k starts with k (u64, little-endian): every impl checks that each read returned 4096
//! bytes and that its buffer starts with the block number it asked for. The offsets are
//! one fixed xorshift64 sequence ([`Offsets`]), the same for every impl and trial.
//!
//! - keel: one fiber task on a ring executor with 32 registered 4 KiB buffers
//!   (`RingConfig { registered_buffers: 32, registered_buffer_size: 4096, .. }`), claimed
//!   with `FiberFs::claim_buffer`; 32 pinned `IoStatus` blocks, each re-initiated with
//!   `RingOp::from_entry(opcode::ReadFixed)` as soon as `suspend_until_completed_io`
//!   hands it back. The file is opened straight into the ring's fixed-file table
//!   (`FiberFs::open_direct`, `RingConfig::registered_files: 1`), as io-uring-fixed
//!   registers its file.
//! - io-uring: the raw crate loop on `IoUring::new(256)`, plain buffers: keep 32 reads
//!   queued, `submit_and_wait(1)`, drain the CQ, refill.
//! - io-uring-fixed: the same loop on a tuned ring (SINGLE_ISSUER, DEFER_TASKRUN,
//!   registered ring fd) with 32 registered buffers and the file registered
//!   (`ReadFixed` on `types::Fixed(0)`).
//! - monoio: its io_uring runtime, `monoio::fs::File::open`, 32 `read_at` futures
//!   (owned `Box<[u8; 4096]>` buffers) in a fixed array; a hand join replaces each
//!   finished future with the next read at once ([`super::read4k_peers`]).

use super::uring;
use crate::goals::{Goal, Op};
use crate::harness::{Case, Impl, Timed, Unit};
use core::pin::{Pin, pin};
use io_uring::{opcode, types};
use keel_core::{IoStatus, TaskError};
use keel_linux::fs::{FiberFs, Mode, OFlags};
use keel_linux::{RingConfig, RingDriver, RingOp};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::OnceLock;

/// The case.
pub const CASE: Case = Case {
    name: "read4k_qd32",
    unit: Unit::OpsPerSec,
    impls: &[
        Impl { name: "keel", run: keel },
        Impl { name: "io-uring", run: super::read4k_peers::raw_plain },
        Impl { name: "io-uring-fixed", run: super::read4k_peers::raw_fixed },
        Impl { name: "monoio", run: super::read4k_peers::monoio },
    ],
};

/// The goals of this module's cases (see `crate::goals`).
pub const GOALS: &[Goal] = &[Goal::vs("read4k_qd32", "keel", "io-uring-fixed", Op::AtLeast, 1.0)];

/// Bytes per read (and per block of the file).
pub(super) const BLOCK: usize = 4096;
/// Reads in flight.
pub(super) const QD: usize = 32;

/// The data file: its path and number of blocks (a power of two).
pub(super) struct DataFile {
    pub(super) path: PathBuf,
    pub(super) blocks: u64,
}

/// The data file, made (or checked) and read into the page cache on first use.
pub(super) fn data_file() -> Result<&'static DataFile, String> {
    static FILE: OnceLock<Result<DataFile, String>> = OnceLock::new();
    // The impls get only an iteration count, so the case reads `--quick` itself.
    let quick = std::env::args().any(|a| a == "--quick");
    FILE.get_or_init(|| prepare(if quick { 16 } else { 256 })).as_ref().map_err(Clone::clone)
}

fn prepare(mib: u64) -> Result<DataFile, String> {
    let blocks = (mib << 20) / BLOCK as u64;
    let path = std::env::temp_dir().join(format!("keel-bench-read4k-{mib}m.dat"));
    let ok = std::fs::metadata(&path).is_ok_and(|m| m.len() == blocks * BLOCK as u64) && warm(&path, blocks).is_ok();
    if !ok {
        // Write under a private name, then rename: bench runs in parallel (the smoke
        // tests) never see a half-written file.
        let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
        let err = |e: std::io::Error| format!("writing {}: {e}", tmp.display());
        let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp).map_err(err)?);
        let mut block = [0u8; BLOCK];
        for k in 0..blocks {
            block.fill(k as u8 ^ 0x5a);
            block[..8].copy_from_slice(&k.to_le_bytes());
            f.write_all(&block).map_err(err)?;
        }
        f.into_inner().map_err(|e| err(e.into_error()))?.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("renaming {}: {e}", tmp.display()))?;
        warm(&path, blocks)?;
    }
    Ok(DataFile { path, blocks })
}

/// Reads the whole file (so it is page-cached) and checks every block's number.
fn warm(path: &std::path::Path, blocks: u64) -> Result<(), String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut k = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| format!("read {}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        // BufWriter-made files and 1 MiB reads: whole blocks except, at worst, a short
        // read; check the blocks that start in this chunk.
        for b in buf[..n].chunks(BLOCK).filter(|b| b.len() >= 8) {
            if header(b) != k {
                return Err(format!("{}: block {k} is not what the bench wrote", path.display()));
            }
            k += 1;
        }
    }
    if k != blocks { Err(format!("{}: {k} blocks, not {blocks}", path.display())) } else { Ok(()) }
}

/// The block number a block (or a read buffer) starts with.
pub(super) fn header(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().expect("a block has 8 bytes"))
}

/// The fixed offset sequence: xorshift64 from a fixed seed, block numbers in
/// `0..blocks` (a power of two).
pub(super) struct Offsets {
    x: u64,
    mask: u64,
}

impl Offsets {
    pub(super) fn new(blocks: u64) -> Self {
        debug_assert!(blocks.is_power_of_two());
        Offsets { x: 0x9e37_79b9_7f4a_7c15, mask: blocks - 1 }
    }

    /// The next block number.
    #[inline(always)]
    pub(super) fn next_block(&mut self) -> u64 {
        let mut x = self.x;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.x = x;
        x & self.mask
    }
}

fn keel(iters: u64) -> Timed {
    let df = data_file()?;
    let path = std::ffi::CString::new(df.path.as_os_str().as_encoded_bytes()).map_err(|e| format!("path: {e}"))?;
    let blocks = df.blocks;
    let cfg = RingConfig {
        registered_buffers: QD as u16,
        registered_buffer_size: BLOCK,
        registered_files: 1,
        ..RingConfig::default()
    };
    let body = move |f: &mut keel_core::Fiber| -> keel_core::TaskResult {
        let file = f.open_direct(&path, OFlags::RDONLY, Mode::empty()).map_err(|e| TaskError::Failed(-(e.0 as i64)))?;
        let fixed = types::Fixed(file.index());
        // The claims (`FixedBuf`s) are released at the end, after every read has
        // completed; each read is built from the buffer's index and pointer. An error
        // return keeps them (ManuallyDrop: never released under a read still in flight),
        // and the loop carries no drop glue for them.
        let mut bufs: core::mem::ManuallyDrop<[keel_linux::fs::FixedBuf; QD]> = {
            let mut v = Vec::with_capacity(QD);
            for _ in 0..QD {
                v.push(f.claim_buffer().map_err(|_| TaskError::Failed(-10))?);
            }
            core::mem::ManuallyDrop::new(v.try_into().map_err(|_| TaskError::Failed(-11))?)
        };
        let mut idx = [0u16; QD];
        let mut ptrs = [core::ptr::null_mut::<u8>(); QD];
        for ((i, p), b) in idx.iter_mut().zip(ptrs.iter_mut()).zip(bufs.iter_mut()) {
            (*i, *p) = (b.index(), b.as_mut_ptr());
        }
        let sts = pin!([const { IoStatus::new() }; QD]);
        let mut want = [0u64; QD];
        let mut live = [false; QD];
        let mut offs = Offsets::new(blocks);
        let (mut issued, mut good) = (0u64, 0u64);
        // Initiates slot i's next read (the caller checks `issued < iters`).
        macro_rules! issue {
            ($i:expr) => {{
                let i = $i;
                let k = offs.next_block();
                want[i] = k;
                let e = opcode::ReadFixed::new(fixed, ptrs[i], BLOCK as u32, idx[i]).offset(k * BLOCK as u64).build();
                // SAFETY: the array is pinned on this fiber's stack and every read is
                // waited for before the body returns.
                let st = unsafe { Pin::new_unchecked(&sts[i]) };
                // SAFETY: buffer i is registered, claimed by `bufs[i]`, which lives for the
                // whole body, and 4096 bytes long; the fd stays open for the trial.
                if f.initiate::<RingDriver>(st, unsafe { RingOp::from_entry(e) }).is_err() {
                    return Err(TaskError::Failed(-12));
                }
                live[i] = true;
                issued += 1;
            }};
        }
        for i in 0..QD.min(iters as usize) {
            issue!(i);
        }
        while good < iters {
            if f.suspend_until_completed_io(QD)? == 0 {
                return Err(TaskError::Failed(-13));
            }
            // Every status handed back is no longer in flight: find them.
            for i in 0..QD {
                if !live[i] || sts[i].is_in_flight() {
                    continue;
                }
                live[i] = false;
                match sts[i].result() {
                    // SAFETY: buffer i is ours and its read has completed.
                    Some(Ok(4096)) if header(unsafe { core::slice::from_raw_parts(ptrs[i], 8) }) == want[i] => {
                        good += 1
                    }
                    other => {
                        return Err(TaskError::Failed(match other {
                            Some(Ok(n)) => n as i64,
                            Some(Err(e)) => -(e.0 as i64),
                            None => -14,
                        }));
                    }
                }
                if issued < iters {
                    issue!(i);
                }
            }
        }
        drop(core::mem::ManuallyDrop::into_inner(bufs)); // every read has completed: the claims go

        f.close_direct(file).map_err(|e| TaskError::Failed(-(e.0 as i64)))?;
        Ok(good)
    };
    // Besides the reads: the open, and the close's two (a cancel of the file's
    // operations, then the close: fd rule 3 in linux/src/fd.rs).
    uring::keel_fiber_setup(cfg, iters, 3, body)
}
