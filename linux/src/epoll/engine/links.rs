//! Completing ops: the CQE, the op's link timer, and its chain.
//!
//! Link rules (cited as "link rule N"), as io_uring 6.x links:
//! 1. An op's CQE is posted when it completes (not for `IOSQE_CQE_SKIP_SUCCESS` and a
//!    result that succeeded by rule 2: a short read, or a short count with `MSG_WAITALL`,
//!    posts its CQE, as the kernel's `req_set_fail` clears the skip); then its entry is
//!    freed (op rule 1).
//! 2. Its successor starts if it succeeded: a result >= 0 that is no short read or write
//!    (fewer bytes than its buffers hold) and, for a send or receive with `MSG_WAITALL`,
//!    no short count (io_uring fails a send or receive only then; for SENDMSG/RECVMSG the
//!    count is the iovecs' total; a RECVMSG with an ancillary buffer has none, net rule
//!    4) and, for a RECVMSG, no `MSG_TRUNC`/`MSG_CTRUNC`; a TIMEOUT with
//!    `IORING_TIMEOUT_ETIME_SUCCESS` that fired also succeeded. A hard link
//!    (`IOSQE_IO_HARDLINK`) starts its successor whatever the result. Otherwise every
//!    later member of the chain completes with `-ECANCELED`, in chain order (their link
//!    timers too).
//! 3. An op's LINK_TIMEOUT is armed when the op has started and is still in flight. The
//!    op completing first: the timer's CQE is `-ECANCELED`, after the op's. The timer
//!    firing first: the op is cancelled as by an ASYNC_CANCEL (cancel rules) and the
//!    timer's CQE is `-ETIME` if that cancelled it, else the cancel's result (`-EALREADY`
//!    for a running pool job, which then completes with its own result); the op's CQE
//!    follows the timer's cancel.
//! 4. Chain order: a member starts only after its predecessor's CQE was posted, so a
//!    chain's CQEs are in chain order.
//! 5. A member that fails its chain (link rule 2) and has `IOSQE_CQE_SKIP_SUCCESS` posts its
//!    own CQE, and the members its failure cancels (with their link timers) post none
//!    (the kernel's `req_set_fail` sets `REQ_F_SKIP_LINK_CQES`, `io_fail_links` skips
//!    them; liburing's `test/skip-cqe.c`). Without that flag they post `-ECANCELED`.

use super::Engine;
use super::ops::State;
use super::sqe::*;
use super::{cqe, perform_fs, perform_net};
use io_uring::opcode;

impl Engine {
    /// Link rules 1-2: op `i` completes with `res`.
    pub(super) fn complete(&mut self, i: u32, res: i32) {
        self.complete_as(i, res, true);
    }

    /// Link rules 1-2 and 5: op `i` completes with `res`, its CQE posted only if `post`.
    fn complete_as(&mut self, i: u32, res: i32, post: bool) {
        let op = &mut self.ops[i];
        if op.sqe.opcode == opcode::Connect::CODE {
            perform_net::restore_flags(op);
        }
        let (s, cmsg) = (&op.sqe, op.cmsg);
        let skip = s.has(IOSQE_CQE_SKIP_SUCCESS);
        // Link rule 2, read before the entry is freed (only a chain's member or an op that
        // skips its success asks): a short count is no success (link rule 1).
        let ok = (skip || op.next.is_some()) && succeeded(s, res, cmsg);
        if post && !(skip && ok) {
            self.cq.push_back(cqe(s.user_data, res, 0));
        }
        let (next, timer) = (op.next.take(), op.ltimeout.take());
        let goes_on = next.is_some() && (s.has(IOSQE_IO_HARDLINK) || ok);
        // Link rule 5: what this op's failure cancels posts nothing.
        let silent = !post || (skip && !goes_on);
        self.ops.free(i);
        if let Some(t) = timer {
            if post {
                self.post_and_free(t, -libc::ECANCELED); // link rule 3: the op came first
            } else {
                self.ops.free(t); // link rule 5: a silenced member's timer is silent too
            }
        }
        let Some(n) = next else { return };
        self.ops[n].prev = None;
        if self.ops[n].cancelled {
            self.fail_chain(n, silent); // cancel rule 1: its turn came
        } else if goes_on {
            self.ops[n].state = State::Starting;
            self.starts.push_back(n);
        } else {
            self.fail_chain(n, silent);
        }
    }

    /// Link rule 2: `n` and every later member complete with `-ECANCELED`, in order,
    /// without a CQE if `silent` (link rule 5).
    pub(super) fn fail_chain(&mut self, n: u32, silent: bool) {
        let mut at = Some(n);
        while let Some(m) = at {
            at = self.ops[m].next.take();
            if let Some(a) = at {
                self.ops[a].prev = None;
            }
            self.complete_as(m, -libc::ECANCELED, !silent);
        }
    }

    /// Posts op `t`'s CQE with `res` and frees it (a link timer, which links nothing).
    pub(super) fn post_and_free(&mut self, t: u32, res: i32) {
        let s = self.ops[t].sqe;
        if !(s.has(IOSQE_CQE_SKIP_SUCCESS) && res >= 0) {
            self.cq.push_back(cqe(s.user_data, res, 0));
        }
        self.ops.free(t);
    }

    /// Link rule 3: link timer `t` fired (or its timespec was bad: `res` is that error,
    /// else -ETIME).
    pub(super) fn fire_link_timer(&mut self, t: u32, res: i32) {
        let owner = self.ops[t].prev.expect("keel bug: a link timer without its op");
        self.ops[owner].ltimeout = None;
        let r = self.cancel_one(owner); // never `Linked`: the timer is armed at its start
        self.post_and_free(t, if r == 0 { res } else { r });
        self.finish_cancel(owner, r);
    }

    /// Fires every timer due now (each fires once: bounded by the timers armed).
    pub(super) fn expire_timers(&mut self, now: u64) {
        while let Some(i) = self.timers.pop_due(&self.ops, now) {
            match self.ops[i].state {
                State::Timer => self.complete(i, -libc::ETIME),
                _ => self.fire_link_timer(i, -libc::ETIME),
            }
        }
    }
}

/// Link rule 2: whether result `res` of `s` lets its chain go on (`cmsg`: `Op::cmsg`).
fn succeeded(s: &RawSqe, res: i32, cmsg: bool) -> bool {
    if res < 0 {
        return s.opcode == opcode::Timeout::CODE
            && res == -libc::ETIME
            && s.op_flags & IORING_TIMEOUT_ETIME_SUCCESS != 0;
    }
    match s.opcode {
        opcode::Read::CODE | opcode::Write::CODE | opcode::Readv::CODE | opcode::Writev::CODE => {
            res as u64 >= perform_fs::asked(s)
        }
        opcode::Send::CODE | opcode::Recv::CODE if s.op_flags as i32 & libc::MSG_WAITALL != 0 => res as u32 >= s.len,
        opcode::SendMsg::CODE if s.op_flags as i32 & libc::MSG_WAITALL != 0 => {
            res as u64 >= perform_net::msg_len(s.addr as *const libc::msghdr)
        }
        opcode::RecvMsg::CODE if s.op_flags as i32 & libc::MSG_WAITALL != 0 => {
            let hdr = s.addr as *const libc::msghdr;
            // SAFETY: the caller's msghdr, valid until the CQE (`Engine::push`).
            let truncated = unsafe { (*hdr).msg_flags } & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0;
            !truncated && (cmsg || res as u64 >= perform_net::msg_len(hdr))
        }
        _ => true,
    }
}
