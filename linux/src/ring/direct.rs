//! Status-block operations with no slot: their `user_data` carries the completion token
//! itself, so submitting and completing one touches no table: `user_data` finds the status
//! block without a lookup on the hot path.
//!
//! Rules (cited as "direct rule N"):
//! 1. A *direct* operation is one with a packable token (`IoToken::pack`: a status block
//!    or an orphan, 48 bits), no owned buffer, no kept result, not multishot, and an
//!    SQE that completes exactly once with nothing to give back if nobody takes its
//!    result ([`is_direct_sqe`]: no SEND_ZC, no multishot, no buffer selection, nothing
//!    that yields a descriptor). Everything else takes a slot (`slots.rs`).
//! 2. `user_data` = `DIRECT | generation << 48 | token bits`. Bit 63 stays clear (the
//!    driver's internal tags), bit 62 is set (slot `user_data`s never have it: slot rule 1
//!    keeps their generations below 2^30), and the 14-bit generation advances on every
//!    submission.
//! 3. Direct operations count against the same limit as slots (`RingConfig::slots`):
//!    at most that many operations are in flight, of both kinds together.
//! 4. Orphans (io_status rule 4): when a status block goes away with its operation in
//!    flight, the core retargets the operation to its task. The new token is kept in a
//!    small table (capacity: the in-flight limit, allocated at creation) consulted only
//!    when it is not empty, and the completion goes to it. Two in-flight operations never
//!    share a `user_data`: while orphans are outstanding, a new submission whose
//!    `user_data` equals an orphan's takes the next generation (at most `orphans + 1`
//!    tries: each orphan excludes one value).
//! 5. A cancel request still queued in the driver for a direct operation that has
//!    completed is dropped then, so it cannot reach a later operation of a status block
//!    at the same address; the rolling generation covers a cancel already in the kernel.

#![allow(unsafe_code)] // rebuilding a token from its bits (`IoToken::unpack`)

use keel_core::driver::IoToken;

/// Tag bit of direct `user_data`s (rule 2).
pub(crate) const DIRECT: u64 = 1 << 62;
const GENERATION_SHIFT: u32 = 48;
const GENERATION_MASK: u64 = (1 << 14) - 1;
const TOKEN_MASK: u64 = (1 << GENERATION_SHIFT) - 1;

/// `IOSQE_BUFFER_SELECT` (include/uapi/linux/io_uring.h).
const IOSQE_BUFFER_SELECT: u8 = 1 << 5;
/// `IORING_RECV_MULTISHOT`, in a RECV's `ioprio`.
const IORING_RECV_MULTISHOT: u16 = 1 << 1;

/// Whether `entry` may run as a direct operation (rule 1): single-shot, selects no
/// provided buffer, links no successor, yields no descriptor, owns nothing the driver
/// would have to give back.
#[inline(always)]
pub(crate) fn is_direct_sqe(entry: &io_uring::squeue::Entry) -> bool {
    let p = entry as *const io_uring::squeue::Entry as *const u8;
    // SAFETY: `Entry` is `#[repr(C)]` around `io_uring_sqe`: `opcode` is byte 0, `flags`
    // byte 1, `ioprio` the u16 at byte 2; we only read them.
    let (code, flags, ioprio) = unsafe { (p.read(), p.add(1).read(), (p.add(2) as *const u16).read_unaligned()) };
    // A linked operation goes through a slot, whose submission keeps room for its
    // successor (deadline rule 1): same test, wider mask.
    if flags & (IOSQE_BUFFER_SELECT | super::submit::IOSQE_IO_LINK) != 0 {
        return false;
    }
    if code == io_uring::opcode::Recv::CODE {
        return ioprio & IORING_RECV_MULTISHOT == 0;
    }
    is_direct_opcode(code)
}

/// Whether opcode `code` may run as a direct operation (rule 1) whatever its flags:
/// single-shot, yields no descriptor, and owns nothing the driver would have to give back.
#[inline(always)]
fn is_direct_opcode(code: u8) -> bool {
    use io_uring::opcode as o;
    const fn bit(code: u8) -> u128 {
        1 << code
    }
    const DIRECT_OPCODES: u128 = bit(o::Nop::CODE)
        | bit(o::Read::CODE)
        | bit(o::Write::CODE)
        | bit(o::Readv::CODE)
        | bit(o::Writev::CODE)
        | bit(o::ReadFixed::CODE)
        | bit(o::WriteFixed::CODE)
        | bit(o::Fsync::CODE)
        | bit(o::SyncFileRange::CODE)
        | bit(o::Fallocate::CODE)
        | bit(o::Close::CODE)
        | bit(o::Statx::CODE)
        | bit(o::Send::CODE)
        | bit(o::SendMsg::CODE)
        | bit(o::Connect::CODE)
        | bit(o::Shutdown::CODE)
        | bit(o::Bind::CODE)
        | bit(o::Listen::CODE);
    code < 128 && DIRECT_OPCODES >> code & 1 != 0
}

/// The bookkeeping of direct operations.
pub(crate) struct Direct {
    /// Direct operations submitted and not yet completed, and the unfinished operations of
    /// skip pairs (pair rule 6 in `pair.rs`: they take no slot either).
    pub(crate) in_flight: usize,
    generation: u64,
    /// Rule 4: (user_data, the token its completion now goes to).
    orphans: Vec<(u64, IoToken)>,
}

impl Direct {
    /// `limit`: the most operations in flight (rule 3); allocates the orphan table.
    pub(crate) fn new(limit: usize) -> Self {
        Direct { in_flight: 0, generation: 0, orphans: Vec::with_capacity(limit) }
    }

    /// The `user_data` for a new direct operation with packed token `bits` (rule 2),
    /// counted in flight.
    #[inline(always)]
    pub(crate) fn start(&mut self, bits: u64) -> u64 {
        self.generation = (self.generation + 1) & GENERATION_MASK;
        let mut ud = DIRECT | self.generation << GENERATION_SHIFT | bits;
        if !self.orphans.is_empty() {
            ud = self.avoid_orphans(ud);
        }
        self.in_flight += 1;
        ud
    }

    #[cold]
    fn avoid_orphans(&mut self, mut ud: u64) -> u64 {
        for _ in 0..=self.orphans.len() {
            if !self.orphans.iter().any(|o| o.0 == ud) {
                break;
            }
            self.generation = (self.generation + 1) & GENERATION_MASK;
            ud = DIRECT | self.generation << GENERATION_SHIFT | (ud & TOKEN_MASK);
        }
        ud
    }

    /// Rule 4: `ud`'s completion goes to `token` from now on.
    #[cold]
    pub(crate) fn retarget(&mut self, ud: u64, token: IoToken) {
        match self.orphans.iter_mut().find(|o| o.0 == ud) {
            Some(o) => o.1 = token,
            None => {
                debug_assert!(self.orphans.len() < self.orphans.capacity(), "more orphans than operations in flight");
                self.orphans.push((ud, token));
            }
        }
    }

    /// `ud` completed: its token (rule 4 first). No longer in flight.
    #[inline(always)]
    pub(crate) fn complete(&mut self, ud: u64) -> IoToken {
        self.in_flight -= 1;
        if !self.orphans.is_empty()
            && let Some(t) = self.take_orphan(ud)
        {
            return t;
        }
        // SAFETY: `ud` was made by `start` from `pack` of the token given for it, and was
        // not retargeted (else it would be in `orphans`); bit 62 and the generation are
        // masked off.
        unsafe { IoToken::unpack(ud & TOKEN_MASK) }
    }

    #[cold]
    fn take_orphan(&mut self, ud: u64) -> Option<IoToken> {
        let i = self.orphans.iter().position(|o| o.0 == ud)?;
        Some(self.orphans.swap_remove(i).1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(addr: u64) -> IoToken {
        // SAFETY: test tokens are compared, never handed to a core.
        unsafe { IoToken::unpack(addr) }
    }

    #[test]
    fn direct_rule_4_user_data_round_trips_and_orphans_are_routed_and_never_shared() {
        let mut d = Direct::new(4);
        let a = d.start(0x7f00_1000);
        assert_ne!(a & DIRECT, 0);
        assert_eq!(a & (1 << 63), 0, "never an internal tag");
        assert_eq!(d.complete(a), token(0x7f00_1000));
        // An orphan at the same address as a new operation: distinct user_data.
        let b = d.start(0x7f00_2000);
        d.retarget(b, token(0x5000 | 1));
        for _ in 0..(GENERATION_MASK + 3) {
            let c = d.start(0x7f00_2000);
            assert_ne!(c, b, "a new operation may not share an orphan's user_data");
            assert_eq!(d.complete(c), token(0x7f00_2000));
        }
        assert_eq!(d.complete(b), token(0x5000 | 1), "the orphan's completion goes to its task");
        assert_eq!(d.in_flight, 0);
    }

    /// Direct rule 2's rolling generation: two operations at one address in a row (the
    /// second issued while a cancel aimed at the first may still be in the kernel) never
    /// share a `user_data`, until the 14-bit generation wraps.
    #[test]
    fn direct_rule_2_operations_at_one_address_in_a_row_get_distinct_user_data() {
        let mut d = Direct::new(4);
        let first = d.start(0x7f00_3000);
        assert_eq!(d.complete(first), token(0x7f00_3000));
        let mut seen = std::collections::HashSet::from([first]);
        for _ in 0..GENERATION_MASK {
            let next = d.start(0x7f00_3000);
            assert!(seen.insert(next), "user_data {next:#x} reused before the generation wrapped");
            assert_eq!(d.complete(next), token(0x7f00_3000));
        }
    }

    #[test]
    fn direct_rule_1_only_single_shot_opcodes_that_give_nothing_back_are_direct() {
        use io_uring::opcode as o;
        assert!(is_direct_opcode(o::Nop::CODE));
        assert!(is_direct_opcode(o::ReadFixed::CODE));
        for code in [
            o::SendZc::CODE,
            o::RecvMsg::CODE,
            o::Recv::CODE,
            o::Accept::CODE,
            o::OpenAt::CODE,
            o::OpenAt2::CODE,
            o::Socket::CODE,
            o::PollAdd::CODE,
            200,
        ] {
            assert!(!is_direct_opcode(code), "opcode {code} must take a slot whatever its flags");
        }
        let fd = io_uring::types::Fd(0);
        let mut b = [0u8; 8];
        assert!(is_direct_sqe(&o::Recv::new(fd, b.as_mut_ptr(), 8).build()), "a plain recv is single-shot");
        assert!(!is_direct_sqe(&o::RecvMulti::new(fd, 0).build()), "a multishot recv takes a slot");
        let select = io_uring::squeue::Flags::BUFFER_SELECT;
        assert!(
            !is_direct_sqe(&o::Recv::new(fd, core::ptr::null_mut(), 8).buf_group(0).build().flags(select)),
            "a buffer-select recv takes a slot"
        );
        assert!(
            !is_direct_sqe(&o::Read::new(fd, core::ptr::null_mut(), 8).buf_group(0).build().flags(select)),
            "a buffer-select read takes a slot"
        );
        assert!(is_direct_sqe(&o::Read::new(fd, b.as_mut_ptr(), 8).build()));
    }
}
