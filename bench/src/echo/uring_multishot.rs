//! `io-uring-mshot`: per connection one multishot receive that picks its buffers from a
//! ring of provided buffers ([`BUFS`] of [`BUF`] bytes, buffer group 0, shared by every
//! connection), so a message costs no receive submission; each message is sent from the
//! buffer it came in (`MSG_WAITALL`: the kernel finishes a short send), and the buffer
//! goes back to the ring when its send completes. One send at a time per connection:
//! a message that comes while one is being sent waits in the connection's queue (a
//! `VecDeque` with room for [`QUEUED`], allocated at start; a client keeping one message
//! in flight never fills it). The receive is armed again when the kernel ends it
//! without `IORING_CQE_F_MORE` (`ENOBUFS`: every buffer in use).

use super::uring_server::{Queue, Shape, TABLE};
use io_uring::types::BufRingEntry;
use io_uring::{cqueue, opcode, squeue, types};
use std::alloc::Layout;
use std::collections::VecDeque;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};

/// Bytes per provided buffer.
const BUF: usize = 4096;
/// Provided buffers (a power of two, at most 32768): one per connection the servers
/// hold, since a buffer stays out of the ring while its message is being sent.
const BUFS: usize = super::uring_server::CONNS;
/// Messages a connection's queue holds without growing.
const QUEUED: usize = 4;
const GROUP: u16 = 0;
const RECV: u64 = 0;
const SEND: u64 = 1;

#[derive(Default)]
struct Conn {
    /// A send is in flight.
    sending: bool,
    /// The receive has ended: the connection closes once nothing is being sent.
    ended: bool,
    /// A send failed: what still comes is dropped.
    failed: bool,
    /// Messages waiting for the send in flight: (buffer id, length).
    queued: VecDeque<(u16, u32)>,
}

struct Multishot {
    /// The ring of buffer descriptors the kernel takes from (page-aligned, [`BUFS`]
    /// entries; its tail shares the first entry's last field).
    ring: *mut BufRingEntry,
    /// Our copy of the ring's tail.
    tail: u16,
    bufs: Box<[[u8; BUF]]>,
    conns: Box<[Conn]>,
}

fn ring_layout() -> Layout {
    Layout::from_size_align(BUFS * size_of::<BufRingEntry>(), 4096).expect("a valid layout")
}

/// Serves `l` until the stop flag, then until its connections end.
pub fn serve(l: TcpListener, stop: &AtomicBool) -> Result<(), String> {
    const _: () = assert!(BUFS.is_power_of_two() && BUFS <= 32768);
    // SAFETY: the layout has a non-zero size.
    let ring = unsafe { std::alloc::alloc_zeroed(ring_layout()) }.cast::<BufRingEntry>();
    if ring.is_null() {
        return Err("no memory for the buffer ring".into());
    }
    // SAFETY: an all-zero `[u8; BUF]` is a valid value; calloc leaves the pages untouched.
    let bufs = unsafe { Box::<[[u8; BUF]]>::new_zeroed_slice(BUFS).assume_init() };
    let conns = (0..TABLE).map(|_| Conn { queued: VecDeque::with_capacity(QUEUED), ..Conn::default() }).collect();
    let mut shape = Multishot { ring, tail: 0, bufs, conns };
    for bid in 0..BUFS as u16 {
        shape.give_back(bid);
    }
    let r = super::uring_server::serve_with(&l, stop, &mut shape, |sub| {
        // SAFETY: the ring is page-aligned, BUFS entries long, and outlives the io_uring
        // (freed after `serve_with` returns, which drops the io_uring; leaked on error).
        unsafe { sub.register_buf_ring_with_flags(ring as u64, BUFS as u16, GROUP, 0) }
            .map_err(|e| format!("register_buf_ring: {e}"))
    });
    if r.is_err() {
        // An operation may still be in flight into a buffer: keep them.
        std::mem::forget(shape);
        return r;
    }
    // SAFETY: allocated above with this layout; the io_uring that used it is gone.
    unsafe { std::alloc::dealloc(ring.cast(), ring_layout()) };
    r
}

impl Multishot {
    /// Puts buffer `bid` back in the ring for the kernel to fill.
    fn give_back(&mut self, bid: u16) {
        let i = usize::from(self.tail) & (BUFS - 1);
        // SAFETY: `i` < BUFS, inside the ring's allocation; the kernel reads only entries
        // below the published tail, and this one is past it.
        let e = unsafe { &mut *self.ring.add(i) };
        e.set_addr(self.bufs[usize::from(bid)].as_ptr() as u64);
        e.set_len(BUF as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail field lies in the ring's first entry, valid and aligned for a u16.
        let tail = unsafe { &*BufRingEntry::tail(self.ring).cast::<AtomicU16>() };
        // Release: the kernel's acquire load of the tail sees the entry written above.
        tail.store(self.tail, Ordering::Release);
    }

    fn recv(slot: u32) -> squeue::Entry {
        opcode::RecvMulti::new(types::Fixed(slot), GROUP).build().user_data(u64::from(slot) << 1 | RECV)
    }

    fn send(&mut self, slot: u32, bid: u16, len: u32, q: &mut Queue<'_>) -> Result<(), String> {
        let e = opcode::Send::new(types::Fixed(slot), self.bufs[usize::from(bid)].as_ptr(), len)
            .flags(libc::MSG_WAITALL)
            .build()
            .user_data(u64::from(bid) << 33 | u64::from(slot) << 1 | SEND);
        self.conns[slot as usize].sending = true;
        // SAFETY: buffer `bid` is out of the ring until this send completes (it goes back
        // in `completed`); the buffers outlive the io_uring (else leaked).
        unsafe { q.push(&[e]) }
    }

    /// Closes `slot` if its receive has ended and nothing is being sent.
    fn close_if_done(&mut self, slot: u32, q: &mut Queue<'_>) -> Result<bool, String> {
        let c = &self.conns[slot as usize];
        if !c.ended || c.sending {
            return Ok(false);
        }
        q.close(slot)?;
        Ok(true)
    }
}

impl Shape for Multishot {
    fn accepted(&mut self, slot: u32, q: &mut Queue<'_>) -> Result<(), String> {
        let c = &mut self.conns[slot as usize];
        (c.sending, c.ended, c.failed) = (false, false, false);
        c.queued.clear();
        // SAFETY: the receive's buffers come from the ring (see `send`).
        unsafe { q.push(&[Self::recv(slot)]) }
    }

    fn completed(&mut self, ud: u64, res: i32, flags: u32, q: &mut Queue<'_>) -> Result<bool, String> {
        let slot = (ud >> 1) as u32;
        if ud & 1 == SEND {
            self.give_back((ud >> 33) as u16);
            let c = &mut self.conns[slot as usize];
            c.sending = false;
            if res < 0 {
                c.failed = true;
                while let Some((bid, _)) = self.conns[slot as usize].queued.pop_front() {
                    self.give_back(bid);
                }
            } else if let Some((bid, len)) = c.queued.pop_front() {
                self.send(slot, bid, len, q)?;
            }
            return self.close_if_done(slot, q);
        }
        if res > 0 {
            let bid = cqueue::buffer_select(flags).ok_or("a multishot receive completed without a buffer")?;
            let c = &mut self.conns[slot as usize];
            if c.failed {
                self.give_back(bid);
            } else if c.sending {
                c.queued.push_back((bid, res as u32));
            } else {
                self.send(slot, bid, res as u32, q)?;
            }
        }
        if cqueue::more(flags) {
            return Ok(false);
        }
        if res > 0 || res == -libc::ENOBUFS {
            // SAFETY: as in `accepted`.
            unsafe { q.push(&[Self::recv(slot)]) }?;
            return Ok(false);
        }
        // The end of the stream, or an error (a reset).
        self.conns[slot as usize].ended = true;
        self.close_if_done(slot, q)
    }
}
