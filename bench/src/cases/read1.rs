//! `read1_b1`, `read1_b8`, `read1_b32`: 1-byte reads of /dev/zero through io_uring in
//! batches of B, each batch submitted together and waited for as a whole (ops/s). The
//! NOP cases' shape with an operation monoio has.
//!
//! - keel: as `nop_*`, with `RingOp::from_entry(opcode::Read)` of one byte into byte i
//!   of a B-byte buffer on the fiber's stack (no I/O priority set: the peers set none).
//!   Every result must be `Ok(1)`.
//! - monoio: its io_uring runtime (`RuntimeBuilder::<IoUringDriver>`, default 1024
//!   entries), `monoio::fs::File::open("/dev/zero")`, then per batch B `read_at` futures
//!   (owned `Box<[u8; 1]>` buffers, handed back with each result and reused) in a fixed
//!   array polled by a small hand join ([`join_batch`]): nothing allocated per batch
//!   (`futures::join_all` would box a `Vec` per batch; `monoio::join!` takes a fixed
//!   list of expressions, not B of them).
//! - io-uring: the raw crate loop on `IoUring::new(256)`: push B reads, one
//!   `submit_and_wait(B)`, drain the CQ (each result checked).

use super::uring;
use crate::harness::{Case, Impl, Timed, Unit};
use core::future::{Future, poll_fn};
use core::pin::{Pin, pin};
use core::task::Poll;
use io_uring::{opcode, types};
use keel_linux::{RingConfig, RingOp};
use std::os::fd::AsRawFd;
use std::time::Instant;

const fn case<const B: usize>(name: &'static str) -> Case {
    Case {
        name,
        unit: Unit::OpsPerSec,
        impls: &[
            Impl { name: "keel", run: keel::<B> },
            Impl { name: "monoio", run: monoio::<B> },
            Impl { name: "io-uring", run: raw::<B> },
        ],
    }
}

/// Batch 1.
pub const B1: Case = case::<1>("read1_b1");
/// Batch 8.
pub const B8: Case = case::<8>("read1_b8");
/// Batch 32.
pub const B32: Case = case::<32>("read1_b32");

const ZERO: &str = "/dev/zero";

fn dev_zero() -> Result<std::fs::File, String> {
    std::fs::File::open(ZERO).map_err(|e| format!("open {ZERO}: {e}"))
}

fn keel<const B: usize>(iters: u64) -> Timed {
    let zero = dev_zero()?;
    let fd = zero.as_raw_fd();
    let body = uring::keel_batches::<B>(
        iters,
        move |_, p| {
            let e = opcode::Read::new(types::Fd(fd), p, 1).build();
            // SAFETY: `p` is a byte of the batch buffer on the fiber's stack, which
            // `keel_batches` keeps until the read has completed; `fd` stays open for
            // the whole trial (`zero` below).
            unsafe { RingOp::from_entry(e) }
        },
        1,
    );
    let t = uring::keel_fiber(RingConfig::default(), iters, body);
    drop(zero);
    t
}

fn raw<const B: usize>(iters: u64) -> Timed {
    let zero = dev_zero()?;
    let fd = types::Fd(zero.as_raw_fd());
    let mut buf = [0u8; B];
    let p = buf.as_mut_ptr();
    let mut ring = uring::raw_ring(false)?;
    // The buffer and the file outlive the loop, which waits for every read.
    uring::raw_batches(&mut ring, false, iters, B, |i| opcode::Read::new(fd, p.wrapping_add(i), 1).build(), 1)
}

/// Polls the first `n` futures of the pinned array together until all are done, calling
/// `done(i, output)` for each as it completes (each is dropped in place then).
pub(super) async fn join_batch<F: Future, const B: usize>(
    mut futs: Pin<&mut [Option<F>; B]>,
    mut done: impl FnMut(usize, F::Output),
) {
    poll_fn(|cx| {
        let mut pending = false;
        for i in 0..B {
            // SAFETY: the array is pinned and nothing is moved out of it: a finished
            // future is dropped in place by overwriting its `Option`.
            let slot = unsafe { futs.as_mut().get_unchecked_mut().get_unchecked_mut(i) };
            let Some(fut) = slot.as_mut() else { continue };
            // SAFETY: as above, the future stays where it is until dropped.
            match unsafe { Pin::new_unchecked(fut) }.poll(cx) {
                Poll::Ready(out) => {
                    *slot = None;
                    done(i, out);
                }
                Poll::Pending => pending = true,
            }
        }
        if pending { Poll::Pending } else { Poll::Ready(()) }
    })
    .await
}

fn monoio<const B: usize>(iters: u64) -> Timed {
    let mut rt =
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().build().map_err(|e| format!("monoio runtime: {e}"))?;
    rt.block_on(async move {
        let file = monoio::fs::File::open(ZERO).await.map_err(|e| format!("open {ZERO}: {e}"))?;
        let mut bufs: [Option<Box<[u8; 1]>>; B] = core::array::from_fn(|_| Some(Box::new([0xff])));
        let mut bad = None;
        let start = Instant::now();
        let mut left = iters;
        while left > 0 {
            let n = left.min(B as u64) as usize;
            let futs: [Option<_>; B] = core::array::from_fn(|i| {
                let buf = if i < n { bufs[i].take() } else { None };
                buf.map(|b| file.read_at(b, 0))
            });
            join_batch(pin!(futs), |i, (res, buf): (std::io::Result<usize>, Box<[u8; 1]>)| {
                if !matches!(res, Ok(1)) {
                    bad = Some(format!("{res:?}"));
                }
                bufs[i] = Some(buf);
            })
            .await;
            left -= n as u64;
        }
        let elapsed = start.elapsed();
        match bad {
            Some(r) => Err(format!("a read returned {r} (expected Ok(1))")),
            None => Ok(elapsed),
        }
    })
}
