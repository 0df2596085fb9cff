//! `io-uring`: per connection a receive into its own 4 KiB buffer, then the send of what
//! came linked to the next receive into the same buffer (the link orders them: the
//! receive starts once the send has finished with the buffer). The send has
//! `MSG_WAITALL` (a short send is finished by the kernel, so the link breaks only on an
//! error) and `CQE_SKIP_SUCCESS` (only a failed send completes): one submission of two
//! entries and one completion per message. The buffers are one table indexed by file
//! slot, allocated once and zeroed lazily (a connection's page is touched by its first
//! message).

use super::uring_server::{CONNS, Queue, Shape, TABLE};
use io_uring::{opcode, squeue, types};
use std::net::TcpListener;
use std::sync::atomic::AtomicBool;

const BUF: usize = 4096;
const RECV: u64 = 0;
const SEND: u64 = 1;

struct Linked {
    bufs: Box<[[u8; BUF]]>,
}

/// Serves `l` until the stop flag, then until its connections end.
pub fn serve(l: TcpListener, stop: &AtomicBool) -> Result<(), String> {
    const _: () = assert!(TABLE as usize > CONNS);
    // SAFETY: an all-zero `[u8; BUF]` is a valid value; calloc leaves the pages untouched.
    let bufs = unsafe { Box::<[[u8; BUF]]>::new_zeroed_slice(TABLE as usize).assume_init() };
    let mut shape = Linked { bufs };
    let r = super::uring_server::serve(&l, stop, &mut shape);
    if r.is_err() {
        // An operation may still be in flight into a buffer: keep them.
        std::mem::forget(shape);
    }
    r
}

impl Linked {
    fn recv(&mut self, slot: u32) -> squeue::Entry {
        opcode::Recv::new(types::Fixed(slot), self.bufs[slot as usize].as_mut_ptr(), BUF as u32)
            .build()
            .user_data(u64::from(slot) << 1 | RECV)
    }
}

impl Shape for Linked {
    fn accepted(&mut self, slot: u32, q: &mut Queue<'_>) -> Result<(), String> {
        let e = self.recv(slot);
        // SAFETY: the buffer lives in `bufs`, dropped only after the ring (else leaked),
        // and has one operation at a time: its receive, or its send linked to the next
        // receive, which the kernel starts only once the send has completed.
        unsafe { q.push(&[e]) }
    }

    fn completed(&mut self, ud: u64, res: i32, _flags: u32, q: &mut Queue<'_>) -> Result<bool, String> {
        let slot = (ud >> 1) as u32;
        if ud & 1 == SEND {
            // Only a failed send completes; its linked receive completes with ECANCELED
            // and ends the connection.
            return Ok(false);
        }
        if res <= 0 {
            // The end of the stream, an error (a reset), or the receive of a failed send.
            q.close(slot)?;
            return Ok(true);
        }
        let send = opcode::Send::new(types::Fixed(slot), self.bufs[slot as usize].as_ptr(), res as u32)
            .flags(libc::MSG_WAITALL)
            .build()
            .flags(squeue::Flags::IO_LINK | squeue::Flags::SKIP_SUCCESS)
            .user_data(u64::from(slot) << 1 | SEND);
        let recv = self.recv(slot);
        // SAFETY: as in `accepted`: the send reads the buffer, then the linked receive
        // fills it again.
        unsafe { q.push(&[send, recv]) }?;
        Ok(false)
    }
}
