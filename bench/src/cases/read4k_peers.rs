//! `read4k_qd32`'s peers (see [`super::read4k`] for the case): the raw `io-uring` loops,
//! plain and with everything registered, and monoio.

use super::read4k::{BLOCK, DataFile, Offsets, QD, data_file, header};
use super::uring;
use crate::harness::Timed;
use core::cell::Cell;
use core::future::{Future, poll_fn};
use core::pin::{Pin, pin};
use core::task::Poll;
use io_uring::{opcode, types};
use std::os::fd::AsRawFd;
use std::time::Instant;

/// The 32 read buffers of a raw loop, in one allocation as keel's registered set is.
fn buffers() -> Vec<u8> {
    vec![0u8; QD * BLOCK]
}

fn open(df: &DataFile) -> Result<std::fs::File, String> {
    std::fs::File::open(&df.path).map_err(|e| format!("open {}: {e}", df.path.display()))
}

/// Whether the read of slot `i` (result `res`) into the buffers at `base` returned its
/// whole block `want[i]`.
fn verified(base: *const u8, want: &[Cell<u64>; QD], i: usize, res: i32) -> bool {
    // SAFETY: `base` is the 32 buffers, and the kernel has finished with buffer i.
    res == BLOCK as i32 && header(unsafe { core::slice::from_raw_parts(base.add(i * BLOCK), 8) }) == want[i].get()
}

/// The raw loop on a default ring with plain buffers.
pub(super) fn raw_plain(iters: u64) -> Timed {
    let df = data_file()?;
    let file = open(df)?;
    let fd = types::Fd(file.as_raw_fd());
    let mut ring = uring::raw_ring(false)?;
    let mut bufs = buffers();
    let base = bufs.as_mut_ptr();
    let want = [const { Cell::new(0u64) }; QD];
    let mut offs = Offsets::new(df.blocks);
    let t = uring::raw_depth(
        &mut ring,
        false,
        iters,
        QD,
        |i| {
            want[i].set(offs.next_block());
            opcode::Read::new(fd, base.wrapping_add(i * BLOCK), BLOCK as u32)
                .offset(want[i].get() * BLOCK as u64)
                .build()
        },
        |i, res| verified(base, &want, i, res),
    );
    drop((bufs, file));
    t
}

/// The raw loop on a tuned ring (SINGLE_ISSUER, DEFER_TASKRUN, registered ring fd) with
/// registered buffers and the file registered.
pub(super) fn raw_fixed(iters: u64) -> Timed {
    let df = data_file()?;
    let file = open(df)?;
    let mut ring = uring::raw_ring(true)?;
    let mut bufs = buffers();
    let base = bufs.as_mut_ptr();
    let iovecs: Vec<libc::iovec> =
        (0..QD).map(|i| libc::iovec { iov_base: base.wrapping_add(i * BLOCK).cast(), iov_len: BLOCK }).collect();
    // SAFETY: `bufs` outlives the ring's use of it: the ring is dropped (unregistering
    // the buffers) before `bufs`, below.
    unsafe { ring.submitter().register_buffers(&iovecs) }.map_err(|e| format!("register_buffers: {e}"))?;
    ring.submitter().register_files(&[file.as_raw_fd()]).map_err(|e| format!("register_files: {e}"))?;
    let want = [const { Cell::new(0u64) }; QD];
    let mut offs = Offsets::new(df.blocks);
    let t = uring::raw_depth(
        &mut ring,
        true,
        iters,
        QD,
        |i| {
            want[i].set(offs.next_block());
            opcode::ReadFixed::new(types::Fixed(0), base.wrapping_add(i * BLOCK), BLOCK as u32, i as u16)
                .offset(want[i].get() * BLOCK as u64)
                .build()
        },
        |i, res| verified(base, &want, i, res),
    );
    drop(ring);
    drop((bufs, file));
    t
}

/// monoio: 32 `read_at` futures in a pinned array; each finished one is replaced by the
/// next read at once (and polled, which queues its SQE), so 32 stay in flight.
pub(super) fn monoio(iters: u64) -> Timed {
    let df = data_file()?;
    let mut rt =
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().build().map_err(|e| format!("monoio runtime: {e}"))?;
    rt.block_on(async move {
        let file = monoio::fs::File::open(&df.path).await.map_err(|e| format!("open {}: {e}", df.path.display()))?;
        let read = |buf: Box<[u8; BLOCK]>, k: u64| file.read_at(buf, k * BLOCK as u64);
        let mut offs = Offsets::new(df.blocks);
        let mut want = [0u64; QD];
        let (mut issued, mut done) = (0u64, 0u64);
        let mut bad = None;
        let mut bufs: [Option<Box<[u8; BLOCK]>>; QD] = core::array::from_fn(|_| Some(Box::new([0u8; BLOCK])));
        let start = Instant::now();
        let futs: [Option<_>; QD] = core::array::from_fn(|i| {
            let buf = if issued < iters { bufs[i].take() } else { None };
            buf.map(|b| {
                issued += 1;
                want[i] = offs.next_block();
                read(b, want[i])
            })
        });
        let mut futs = pin!(futs);
        poll_fn(|cx| {
            for (i, want) in want.iter_mut().enumerate() {
                loop {
                    // SAFETY: the array is pinned and nothing is moved out of it: a
                    // finished future is dropped in place by overwriting its `Option`.
                    let slot = unsafe { futs.as_mut().get_unchecked_mut().get_unchecked_mut(i) };
                    let Some(fut) = slot.as_mut() else { break };
                    // SAFETY: as above.
                    let Poll::Ready((res, buf)) = unsafe { Pin::new_unchecked(fut) }.poll(cx) else { break };
                    done += 1;
                    if !matches!(res, Ok(BLOCK)) || header(&buf[..]) != *want {
                        bad = Some(format!("{res:?}"));
                    }
                    if issued < iters {
                        issued += 1;
                        *want = offs.next_block();
                        *slot = Some(read(buf, *want));
                    } else {
                        *slot = None;
                    }
                }
            }
            if done == iters { Poll::Ready(()) } else { Poll::Pending }
        })
        .await;
        let elapsed = start.elapsed();
        match bad {
            Some(r) => Err(format!("a read returned {r} or the wrong block")),
            None => Ok(elapsed),
        }
    })
}
