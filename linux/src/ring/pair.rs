//! Skip pairs: a send of all its bytes that links a single-shot successor (a receive:
//! `FiberNet::send_then_recv`), put in as one unit for which the kernel posts one CQE, not
//! two. The send goes in with `IOSQE_CQE_SKIP_SUCCESS`; one small table entry keeps both
//! tokens and the send's length, so either CQE completes both status blocks.
//!
//! Rules (cited as "pair rule N"):
//! 1. **What pairs.** A SEND with `MSG_WAITALL` and `IOSQE_IO_LINK` (and no other SQE
//!    flag but `FIXED_FILE`, no `ioprio` flags) marked [`RingOp::pair_head`], linking a
//!    successor that could go in as a direct operation (direct rule 1); neither has a
//!    deadline, an owned buffer or a kept result; on a kernel ring with
//!    `IORING_FEAT_CQE_SKIP` (5.17), not polled, or on the epoll engine (which posts and
//!    skips CQEs as the kernel does: its link rule 1), with room for two operations and
//!    two SQEs. Anything else goes in as two operations, one after the other, as before.
//! 2. **One CQE per pair** (the kernel's `io_send`, `req_set_fail` and `io_fail_links`):
//!    with `MSG_WAITALL` a send that sends fewer bytes than asked, or fails, is failed
//!    (`REQ_F_FAIL`); a failed request with `CQE_SKIP_SUCCESS` posts its CQE and marks its
//!    chain `REQ_F_SKIP_LINK_CQES`, so the successor it cancels posts none. A send that
//!    sends all its bytes posts none, and its successor runs and posts its own.
//! 3. **Both complete from it, exactly once, the send first.** The successor's CQE: the
//!    send with its full length, then the successor with its result. The send's CQE: the
//!    send with its result, then the successor with `ECANCELED` (what its own CQE would
//!    have said: it never ran, so it never touched its buffer). The send's token goes
//!    first, so a status block that wakes nobody (the send's, `IoStatus::new_silent`) is
//!    complete when its partner wakes the task.
//! 4. **Defensive.** A send CQE with the full length (a kernel that posted it anyway)
//!    completes the send alone and the entry waits for its successor's CQE. A CQE whose
//!    entry has moved on (generation) is stale: counted, dropped; a successor's stale CQE
//!    can only be the `ECANCELED` of a successor that never ran.
//! 5. `user_data` = `generation << 32 | PAIR | role | index`: `PAIR` is bit 31, which no
//!    slot `user_data` has (slot rule 1: their indices stay below 2^31), `role` bit 30 (set
//!    for the successor), index below 2^30; bits 62-63 clear (no direct or internal tag);
//!    the generation advances (below 2^30) each time an entry is freed.
//! 6. A live entry's unfinished operations (two, one after rule 4) are counted in
//!    `Direct::in_flight` with the direct operations (no slot either), so they count
//!    against the in-flight limit as direct rule 3 says, and the submission path's room
//!    test reads no extra counter. Cancel and retarget
//!    take a pair `user_data` as they take a slot's; a queued cancel of either half is
//!    dropped when the pair ends (cancel rule 3). The table is allocated at creation
//!    (half the slot count) and never grows: a full table means rule 1 does not hold.
//! 7. `IOSQE_CQE_SKIP_SUCCESS` is the pair's alone: only `push_pair` sets it, on a head it
//!    has an entry for. `RingOp::from_entry` clears it in a caller's SQE: every other
//!    operation completes from its own CQE, and one whose success posted none (or a
//!    successor whose CQE its failed head skipped) would leave its status block in
//!    flight for ever, its task never woken and its executor's drop waiting on it.
#![allow(unsafe_code)] // pushing SQEs is unsafe in the io-uring crate; reading SQE fields by offset

use super::driver::RingDriver;
use super::kernel::Kernel;
use super::op::RingOp;
use super::submit::{IOSQE_IO_LINK, reload_by_words};
use keel_core::driver::IoToken;
use keel_core::{Errno, IoResult, OpId};

/// The tag bit of pair `user_data`s (rule 5).
pub(crate) const PAIR: u64 = 1 << 31;
/// Whether `ud` names a pair's operation (rule 5).
#[inline(always)]
pub(crate) fn is_pair(ud: u64) -> bool {
    ud & (super::slots::INTERNAL | super::direct::DIRECT | PAIR) == PAIR
}

/// The role bit: set in the successor's `user_data` (rule 5).
const SECOND: u64 = 1 << 30;
/// `IOSQE_FIXED_FILE`.
const IOSQE_FIXED_FILE: u8 = 1;
/// `MSG_WAITALL`.
const MSG_WAITALL: u32 = libc::MSG_WAITALL as u32;
/// `IOSQE_CQE_SKIP_SUCCESS` (rule 7).
pub(crate) const IOSQE_CQE_SKIP_SUCCESS: u8 = 1 << 6;

/// Rule 1's kernel part: a kernel ring with `IORING_FEAT_CQE_SKIP`, not polled, or the
/// epoll engine (its link rule 1 posts and skips CQEs as the kernel does).
pub(super) fn kernel_pairs(ring: &Kernel, iopoll: bool) -> bool {
    !iopoll
        && match ring {
            Kernel::Uring(r, _) => r.params().is_feature_skip_cqe_on_success(),
            Kernel::Epoll(_) => true,
        }
}

#[derive(Copy, Clone, Debug)]
struct Entry {
    generation: u32,
    live: bool,
    /// The send's completion went out already (rule 4).
    first_done: bool,
    len: u32,
    first: Option<IoToken>,
    second: Option<IoToken>,
}

/// The pair table (rules 5-6).
pub(crate) struct Pairs {
    entries: Vec<Entry>,
    free: Vec<u32>,
    /// Rule 1's kernel part: a kernel ring with `IORING_FEAT_CQE_SKIP`, not polled.
    pub(crate) enabled: bool,
    /// CQEs for entries that had moved on (rule 4).
    pub(crate) stale: u64,
}

/// What a pair CQE ended (`Pairs::complete`).
enum Ended {
    /// The send alone (rule 4).
    First(IoToken, IoResult),
    /// Both, in this order (rule 3).
    Both(IoToken, IoResult, IoToken, IoResult),
}

impl Pairs {
    /// A table of `n` entries (rule 6), in use if `enabled`.
    pub(crate) fn new(n: u32, enabled: bool) -> Self {
        let n = n.min(SECOND as u32);
        let e = Entry { generation: 0, live: false, first_done: false, len: 0, first: None, second: None };
        Pairs { entries: vec![e; n as usize], free: (0..n).rev().collect(), enabled, stale: 0 }
    }

    /// The live entry `ud` names, if current (rule 5).
    #[inline(always)]
    fn get(&mut self, ud: u64) -> Option<&mut Entry> {
        let (i, g) = ((ud & (SECOND - 1)) as usize, (ud >> 32) as u32);
        self.entries.get_mut(i).filter(|e| e.live && e.generation == g)
    }

    /// Whether `ud`'s operation may still post a CQE (cancel rule 3).
    pub(crate) fn cancellable(&mut self, ud: u64) -> bool {
        let second = ud & SECOND != 0;
        self.get(ud).is_some_and(|e| second || !e.first_done)
    }

    /// Points `ud`'s completion at `token` (io_status rule 4).
    pub(crate) fn retarget(&mut self, ud: u64, token: IoToken) {
        let second = ud & SECOND != 0;
        if let Some(e) = self.get(ud) {
            if second {
                e.second = Some(token);
            } else if !e.first_done {
                e.first = Some(token);
            }
        }
    }

    /// Takes an entry for a pair headed by `a` (its send), with both tokens; its
    /// `user_data` (rule 5), or `None` if the table is full.
    #[inline(always)]
    fn open(&mut self, a: &RingOp, first: IoToken, second: IoToken) -> Option<u64> {
        let i = self.free.pop()?;
        // SAFETY: as in `heads_pair`: the u32 `len` at byte 24.
        let len = unsafe { ((&a.entry as *const _ as *const u8).add(24) as *const u32).read_unaligned() };
        let e = &mut self.entries[i as usize];
        *e = Entry {
            generation: e.generation,
            live: true,
            first_done: false,
            len,
            first: Some(first),
            second: Some(second),
        };
        Some((e.generation as u64) << 32 | PAIR | i as u64)
    }

    /// Frees entry `i` (its generation advances).
    fn release(&mut self, i: usize) {
        let e = &mut self.entries[i];
        e.live = false;
        e.first = None;
        e.second = None;
        e.generation = (e.generation + 1) & 0x3FFF_FFFF;
        self.free.push(i as u32);
    }

    /// Routes the CQE (`ud`, `res`) of a pair (rules 3-4); `None` if stale.
    #[inline(always)]
    fn complete(&mut self, ud: u64, res: i32) -> Option<Ended> {
        let i = (ud & (SECOND - 1)) as usize;
        let second = ud & SECOND != 0;
        let Some(e) = self.get(ud) else {
            self.stale += 1;
            return None;
        };
        let (first, other, len) = (e.first?, e.second?, e.len);
        if second {
            let first_done = e.first_done;
            self.release(i);
            let result = super::complete::to_result(res);
            return Some(if first_done {
                Ended::First(other, result)
            } else {
                Ended::Both(first, Ok(len), other, result)
            });
        }
        if e.first_done {
            self.stale += 1; // rule 4: the send has no second CQE
            return None;
        }
        if res >= 0 && res as u32 == len {
            e.first_done = true; // rule 4: the successor's own CQE follows
            return Some(Ended::First(first, Ok(len)));
        }
        self.release(i);
        Some(Ended::Both(first, super::complete::to_result(res), other, Err(Errno::ECANCELED)))
    }
}

/// Whether `op` heads a pair (rule 1, the first operation's part).
#[inline(always)]
fn heads_pair(op: &RingOp) -> bool {
    let p = &op.entry as *const io_uring::squeue::Entry as *const u8;
    // SAFETY: `Entry` is `#[repr(C)]` around `io_uring_sqe`: `opcode` is byte 0, `flags`
    // byte 1, `ioprio` the u16 at byte 2, `msg_flags` the u32 at byte 28; we only read them.
    let (code, flags, ioprio, msg_flags) = unsafe {
        (
            p.read(),
            p.add(1).read(),
            (p.add(2) as *const u16).read_unaligned(),
            (p.add(28) as *const u32).read_unaligned(),
        )
    };
    op.is_pair_head()
        && op.buf.is_none()
        && !op.keep()
        && !op.multi()
        && op.deadline_ns().is_none()
        && code == io_uring::opcode::Send::CODE
        && flags & !IOSQE_FIXED_FILE == IOSQE_IO_LINK
        && ioprio == 0
        && msg_flags & MSG_WAITALL != 0
}

/// Whether `op` may be a pair's successor (rule 1, the second operation's part).
#[inline(always)]
fn follows_pair(op: &RingOp) -> bool {
    op.buf.is_none() && op.meta == 0 && super::direct::is_direct_sqe(&op.entry)
}

impl RingDriver {
    /// `Driver::submit_pair_from`: the two as a skip pair where rule 1 holds, else one
    /// after the other.
    #[inline(always)]
    pub(super) fn submit_pair(
        &mut self,
        first: &mut Option<RingOp>,
        first_token: IoToken,
        second: &mut Option<RingOp>,
        second_token: IoToken,
    ) -> Result<(OpId, OpId), Errno> {
        if let (Some(a), Some(b)) = (first.as_ref(), second.as_ref())
            && self.pairs.enabled
            && heads_pair(a)
            && follows_pair(b)
            && self.room() >= 2
            && let Some(ids) = self.push_pair(a, b, first_token, second_token)
        {
            self.submitted(first);
            self.submitted(second);
            return Ok(ids);
        }
        let a = self.submit_op(first, first_token)?;
        match self.submit_op(second, second_token) {
            Ok(b) => Ok((a, b)),
            Err(e) => {
                panic!("keel bug: the second of a linked pair was refused ({e:?}) after room for both was checked")
            }
        }
    }

    /// Pushes the pair's two SQEs with an entry for them, or nothing (`None`: no entry or
    /// no room for two SQEs).
    #[inline(always)]
    fn push_pair(&mut self, a: &RingOp, b: &RingOp, first: IoToken, second: IoToken) -> Option<(OpId, OpId)> {
        let Kernel::Uring(ring, _) = &mut self.ring else { return self.push_pair_on_engine(a, b, first, second) };
        let mut sq = ring.submission();
        if sq.capacity() - sq.len() < 2 {
            return None;
        }
        let ud = self.pairs.open(a, first, second)?;
        self.direct.in_flight += 2; // rule 6
        let head = reload_by_words(&a.entry).user_data(ud).flags(io_uring::squeue::Flags::SKIP_SUCCESS);
        let tail = reload_by_words(&b.entry).user_data(ud | SECOND);
        // SAFETY: both operations' memory stays valid until their completions are reaped
        // (the `RingOp` constructors' contracts; neither owns a buffer); room for two was
        // checked above.
        unsafe {
            sq.push(&head).expect("checked room for two");
            sq.push(&tail).expect("checked room for two");
        }
        Some((OpId(ud), OpId(ud | SECOND)))
    }

    /// [`push_pair`](Self::push_pair) on the epoll engine (kernel rule 3: kept out of the
    /// ring's path), which performs `CQE_SKIP_SUCCESS` and its failure as the kernel does
    /// (engine link rule 1).
    #[inline(never)]
    fn push_pair_on_engine(&mut self, a: &RingOp, b: &RingOp, first: IoToken, second: IoToken) -> Option<(OpId, OpId)> {
        let Kernel::Epoll(engine) = &mut self.ring else { return None };
        if engine.sq_capacity() - engine.sq_len() < 2 {
            return None;
        }
        let ud = self.pairs.open(a, first, second)?;
        self.direct.in_flight += 2; // rule 6
        // Copied once each, straight into the engine's SQ (no `reload_by_words`: the copy
        // is the engine's own, as for a single op in `submit.rs`).
        // SAFETY: as in `push_pair`; room for two was checked above.
        let pushed = unsafe {
            engine.push_flagged(&a.entry, ud, IOSQE_CQE_SKIP_SUCCESS) && engine.push_as(&b.entry, ud | SECOND)
        };
        assert!(pushed, "keel bug: the engine's SQ had room for a pair");
        Some((OpId(ud), OpId(ud | SECOND)))
    }

    /// A pair's CQE (rules 3-4).
    #[inline(always)]
    pub(super) fn complete_pair<F: FnMut(IoToken, IoResult)>(&mut self, ud: u64, res: i32, sink: &mut F) {
        let Some(ended) = self.pairs.complete(ud, res) else { return };
        // Rule 6: the operations this CQE ended are no longer in flight.
        self.direct.in_flight -= if matches!(ended, Ended::Both(..)) { 2 } else { 1 };
        if !self.pending_cancels.is_empty() {
            let both = matches!(ended, Ended::Both(..));
            let base = ud & !SECOND;
            // Cancel rule 3: what has ended is not cancelled any more.
            self.pending_cancels.retain(|&c| if both { c & !SECOND != base } else { c != base });
        }
        match ended {
            Ended::First(t, r) => sink(t, r),
            Ended::Both(t1, r1, t2, r2) => {
                sink(t1, r1);
                sink(t2, r2);
            }
        }
    }

    /// Test hook: whether linked sends go in as skip pairs from now on (rule 1's kernel
    /// part still applies: on a kernel without `IORING_FEAT_CQE_SKIP` they never do).
    pub fn set_skip_pairs(&mut self, on: bool) {
        self.pairs.enabled = on && self.skip_pairs_supported();
    }

    /// Whether this ring can put skip pairs in (rule 1's kernel part).
    pub fn skip_pairs_supported(&self) -> bool {
        kernel_pairs(&self.ring, self.flags.iopoll)
    }

    /// Pair CQEs dropped as stale (rule 4).
    pub fn stale_pair_cqes(&self) -> u64 {
        self.pairs.stale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(addr: u64) -> IoToken {
        // SAFETY: test tokens are compared, never handed to a core.
        unsafe { IoToken::unpack(addr) }
    }

    fn open(p: &mut Pairs, len: u32) -> u64 {
        let i = p.free.pop().unwrap();
        let e = &mut p.entries[i as usize];
        *e = Entry {
            generation: e.generation,
            live: true,
            first_done: false,
            len,
            first: Some(token(0x1000)),
            second: Some(token(0x2000)),
        };
        (e.generation as u64) << 32 | PAIR | i as u64
    }

    #[test]
    fn pair_rule_3_either_cqe_completes_both_once_and_the_send_first() {
        let mut p = Pairs::new(2, true);
        let ud = open(&mut p, 64);
        match p.complete(ud | SECOND, 5) {
            Some(Ended::Both(a, Ok(64), b, Ok(5))) => assert_eq!((a, b), (token(0x1000), token(0x2000))),
            _ => panic!("the successor's CQE must complete the send (full length) and then itself"),
        }
        assert!(p.complete(ud | SECOND, 5).is_none(), "a second CQE for a freed entry is stale");
        let ud = open(&mut p, 64);
        match p.complete(ud, -libc::EPIPE) {
            Some(Ended::Both(_, Err(e), _, Err(Errno::ECANCELED))) if e.0 == libc::EPIPE => {}
            _ => panic!("a failed send completes itself with its error and its successor with ECANCELED"),
        }
        let ud = open(&mut p, 64);
        match p.complete(ud, 10) {
            Some(Ended::Both(_, Ok(10), _, Err(Errno::ECANCELED))) => {}
            _ => panic!("a short send ends the pair: its successor never ran"),
        }
        assert_eq!(p.free.len(), 2, "every entry freed");
        assert_eq!(p.stale, 1);
    }

    #[test]
    fn pair_rule_4_a_posted_full_send_waits_for_its_successor() {
        let mut p = Pairs::new(1, true);
        let ud = open(&mut p, 64);
        assert!(matches!(p.complete(ud, 64), Some(Ended::First(_, Ok(64)))));
        assert!(p.cancellable(ud | SECOND) && !p.cancellable(ud));
        assert!(p.complete(ud, 64).is_none(), "the send has no second CQE");
        assert!(matches!(p.complete(ud | SECOND, 3), Some(Ended::First(t, Ok(3))) if t == token(0x2000)));
        assert!(!p.cancellable(ud | SECOND), "an ended pair is not cancelled (cancel rule 3)");
        let next = open(&mut p, 1);
        assert_ne!(next, ud, "a reused entry has a new generation (rule 5)");
        assert!(p.complete(ud | SECOND, 0).is_none(), "the old user_data is stale");
    }
}
