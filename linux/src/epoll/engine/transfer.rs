//! The plain send and receive in one piece: an echo server's whole steady state (a
//! receive, then a send, per message), performed without the general start path's
//! layers (`first_attempt`, `attempt_unless_known`, `attempt`, `go_on`) so that each takes
//! one decision and one system call.
//!
//! Transfer rules (cited as "transfer rule N"):
//! 1. A plain transfer is a SEND or RECV with no `IOSQE_*` flag but the link ones and
//!    `IOSQE_CQE_SKIP_SUCCESS`, no multishot or registered buffer (`ioprio` 0), no
//!    destination address, no `MSG_DONTWAIT` or `MSG_PEEK`, no LINK_TIMEOUT,
//!    on a descriptor number >= 0. Any other SQE, and any of these with one of those,
//!    takes the general path; a plain transfer takes this one, at its start and at each
//!    retry after an event.
//! 2. It does what the general path does for it, in the same order: a start skips the
//!    attempt when the descriptor is known not ready and the length is above 0
//!    (readiness rule 3) and waits; an
//!    attempt is one `sendto`/`recvfrom` with `MSG_DONTWAIT` (net rule 1; `MSG_WAITALL`
//!    on a stream goes on until all moved, net rule 4); `EAGAIN` clears
//!    the direction and waits (readiness rule 2), arming the descriptor at a start (a
//!    retry's caller arms it once after all its waiters); `EINTR` tries again; a result
//!    completes the op (link rules), a short one on a descriptor that drains clearing the
//!    direction first (readiness rule 2).

use super::Engine;
use super::ops::State;
use super::perform_net::{self, Step};
use super::ready;
use super::sqe::{IOSQE_CQE_SKIP_SUCCESS, IOSQE_IO_HARDLINK, IOSQE_IO_LINK};
use io_uring::opcode;

/// `IOSQE_*` flags a plain transfer may carry (transfer rule 1).
const PLAIN_FLAGS: u8 = IOSQE_IO_LINK | IOSQE_IO_HARDLINK | IOSQE_CQE_SKIP_SUCCESS;

/// Message flags that send a transfer down the general path (transfer rule 1).
const NOT_PLAIN_MSG: u32 = (libc::MSG_DONTWAIT | libc::MSG_PEEK) as u32;

impl Engine {
    /// Transfer rule 1: `Some(send)` if op `i` is a plain transfer.
    #[inline(always)]
    pub(super) fn plain_transfer(&self, i: u32) -> Option<bool> {
        let op = &self.ops[i];
        let s = &op.sqe;
        let send = match s.opcode {
            opcode::Send::CODE => true,
            opcode::Recv::CODE => false,
            _ => return None,
        };
        let plain = s.flags & !PLAIN_FLAGS == 0
            && s.ioprio == 0
            && s.off == 0
            && s.op_flags & NOT_PLAIN_MSG == 0
            && s.fd >= 0
            && op.ltimeout.is_none();
        plain.then_some(send)
    }

    /// Transfer rule 2: starts plain transfer `i` (`send`: a SEND).
    #[inline(always)]
    pub(super) fn start_transfer(&mut self, i: u32, send: bool) {
        let fd = self.ops[i].sqe.fd;
        let events = if send { ready::OUT } else { ready::IN };
        // A transfer of nothing always asks the kernel (readiness rule 3).
        if self.ready.must_wait(fd, events) && self.ops[i].sqe.len != 0 {
            self.ready.not_ready(fd, events);
            return self.wait_on(i, fd, events, true);
        }
        self.transfer(i, send, true);
    }

    /// Transfer rule 2: one attempt at plain transfer `i` (state `Starting`), and where it
    /// goes from there (`arm`: arm its descriptor if it waits).
    #[inline(always)]
    pub(super) fn transfer(&mut self, i: u32, send: bool, arm: bool) {
        debug_assert!(self.ops[i].state == State::Starting, "keel bug: a transfer attempted while not starting");
        let (fd, len) = (self.ops[i].sqe.fd, self.ops[i].sqe.len);
        let events = if send { ready::OUT } else { ready::IN };
        match perform_net::send_recv(&mut self.ops[i], send) {
            Step::Done(res) => {
                if res > 0 && (res as u32) < len && self.ready.drains(fd) {
                    self.ready.drained(fd, events);
                }
                self.complete(i, res);
            }
            Step::Wait(..) => {
                self.ready.not_ready(fd, events);
                self.wait_on(i, fd, events, arm);
            }
            Step::More(_) => unreachable!("keel bug: a plain transfer is never multishot"),
        }
    }
}
