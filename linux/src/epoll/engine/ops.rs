//! The engine's operations in flight: a slab of [`Op`]s, each an SQE taken from the SQ
//! and not yet completed, with its place in a link chain and its state.
//!
//! Op rules (cited as "op rule N"):
//! 1. An op lives from the `enter` that takes its SQE until its CQE is posted (or, for
//!    `IOSQE_CQE_SKIP_SUCCESS`, skipped); then its entry is freed. Its `serial` is unique
//!    over the engine's life, so a timer or pool result naming a freed or reused entry
//!    (index and serial) is recognised as stale and ignored.
//! 2. An op is in exactly one state: `Linked` (waiting for its chain predecessor),
//!    `Waiting` (on a descriptor's readiness: its entry is in that descriptor's waiter
//!    list), `Pool` (a job of the blocking pool, queued or running), `Timer` (a TIMEOUT in
//!    the timer heap), `MultiPoll` (a multishot poll, until cancelled), `LinkTimer` (a LINK_TIMEOUT: armed in the heap once its op has
//!    started) or `Starting` (chosen to start in this pass).
//! 3. Chains: `next` names the member that starts when this one completes (successfully,
//!    or at all for a hard link); `prev` the member this one waits for. A LINK_TIMEOUT is
//!    not a member: its op names it in `ltimeout` and it names its op in `prev`.
//! 4. Ops still in flight when the engine is dropped are dropped with it (engine rule 5),
//!    after what they changed on a descriptor is undone: a connect puts back the flags
//!    it found (net rule 3). The descriptor is still open then: the caller keeps it open
//!    until the op's CQE, which never comes.
//! 5. What io_uring copies at prep, a TIMEOUT's and a LINK_TIMEOUT's timespec, is copied
//!    when the SQE is taken (`Op::ts`), not read when the op starts: a chain member or a
//!    link timer starts later, and the caller may reuse its timespec once it submitted.

use super::sqe::RawSqe;
use std::os::fd::RawFd;

/// Where an op is (op rule 2).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Free,
    Starting,
    Linked,
    Waiting {
        fd: RawFd,
        events: u32,
    },
    /// A multishot poll (`multi_poll.rs`).
    MultiPoll {
        fd: RawFd,
    },
    Pool,
    Timer,
    LinkTimer {
        armed: bool,
    },
}

/// One operation (module doc).
#[derive(Debug)]
pub(crate) struct Op {
    pub sqe: RawSqe,
    pub serial: u64,
    pub state: State,
    pub next: Option<u32>,
    pub prev: Option<u32>,
    pub ltimeout: Option<u32>,
    /// Bytes moved so far by a send/recv with `MSG_WAITALL` (retried until all).
    pub done: u32,
    /// A RECVMSG with an ancillary buffer: `MSG_WAITALL` does not retry it (net rule 4)
    /// and its short count fails no link (link rule 2).
    pub cmsg: bool,
    /// A connect's descriptor flags before the engine set `O_NONBLOCK` (restored when
    /// the connect ends); -1: nothing to restore.
    pub saved_fl: i32,
    /// A timer's instant (ns, `CLOCK_MONOTONIC`).
    pub deadline: u64,
    /// A TIMEOUT's or LINK_TIMEOUT's timespec (seconds, nanoseconds), copied when its SQE
    /// is taken (op rule 5); `None` for a null one (and every other op).
    pub ts: Option<(i64, i64)>,
    /// A `Linked` op a cancel found: it completes with `-ECANCELED` when its predecessor
    /// completes, in chain order (cancel rule 1).
    pub cancelled: bool,
}

/// The slab (module doc).
#[derive(Debug, Default)]
pub(crate) struct Ops {
    ops: Vec<Op>,
    free: Vec<u32>,
    serial: u64,
    live: usize,
}

impl Ops {
    /// A slab with room for `n` ops before it grows.
    pub(crate) fn with_capacity(n: usize) -> Ops {
        Ops { ops: Vec::with_capacity(n), free: Vec::with_capacity(n), ..Ops::default() }
    }

    /// A new op for `sqe` in state `Starting`. A freed entry is reused in place (its
    /// fields written one by one, no whole-entry move).
    #[inline]
    pub(crate) fn alloc(&mut self, sqe: &RawSqe) -> u32 {
        self.serial += 1;
        self.live += 1;
        let ts = timespec_of(sqe);
        match self.free.pop() {
            Some(i) => {
                let op = &mut self.ops[i as usize];
                op.sqe = *sqe;
                op.serial = self.serial;
                op.state = State::Starting;
                op.next = None;
                op.prev = None;
                op.ltimeout = None;
                op.done = 0;
                op.cmsg = false;
                op.saved_fl = -1;
                op.deadline = 0;
                op.ts = ts;
                op.cancelled = false;
                i
            }
            None => {
                self.ops.push(Op {
                    sqe: *sqe,
                    serial: self.serial,
                    state: State::Starting,
                    next: None,
                    prev: None,
                    ltimeout: None,
                    done: 0,
                    cmsg: false,
                    saved_fl: -1,
                    deadline: 0,
                    ts,
                    cancelled: false,
                });
                (self.ops.len() - 1) as u32
            }
        }
    }

    /// Op rule 1: frees `i`.
    pub(crate) fn free(&mut self, i: u32) {
        let op = &mut self.ops[i as usize];
        debug_assert!(op.state != State::Free, "keel bug: an engine op freed twice");
        op.state = State::Free;
        op.serial = 0;
        self.live -= 1;
        self.free.push(i);
    }

    /// Whether `(i, serial)` still names a live op (op rule 1).
    pub(crate) fn is(&self, i: u32, serial: u64) -> bool {
        self.ops.get(i as usize).is_some_and(|op| op.serial == serial && op.state != State::Free)
    }

    /// Ops in flight.
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// Every live op's index, oldest first (by serial).
    pub(crate) fn live_by_age(&self) -> Vec<u32> {
        let mut v: Vec<u32> =
            (0..self.ops.len() as u32).filter(|&i| self.ops[i as usize].state != State::Free).collect();
        v.sort_by_key(|&i| self.ops[i as usize].serial);
        v
    }
}

/// Op rule 5: the timespec a TIMEOUT or LINK_TIMEOUT names, read now.
#[inline]
fn timespec_of(s: &RawSqe) -> Option<(i64, i64)> {
    use io_uring::opcode::{LinkTimeout, Timeout};
    if !matches!(s.opcode, Timeout::CODE | LinkTimeout::CODE) || s.addr == 0 {
        return None;
    }
    // SAFETY: `addr` is the caller's `__kernel_timespec` (two i64), valid at least until
    // the SQE has been taken, which is now (`Engine::push`).
    Some(unsafe {
        let p = s.addr as *const i64;
        (p.read_unaligned(), p.add(1).read_unaligned())
    })
}

impl Drop for Ops {
    /// Op rule 4: a connect still in flight when the engine goes gives its socket the
    /// flags it found (net rule 3); bounded by the ops in flight.
    fn drop(&mut self) {
        for op in &mut self.ops {
            if op.state != State::Free && op.sqe.opcode == io_uring::opcode::Connect::CODE {
                super::perform_net::restore_flags(op);
            }
        }
    }
}

impl core::ops::Index<u32> for Ops {
    type Output = Op;
    fn index(&self, i: u32) -> &Op {
        &self.ops[i as usize]
    }
}

impl core::ops::IndexMut<u32> for Ops {
    fn index_mut(&mut self, i: u32) -> &mut Op {
        &mut self.ops[i as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{engine, fd_flags, push, take};
    use io_uring::{opcode, types};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    fn tcp_socket() -> OwnedFd {
        // SAFETY: a new socket, owned once.
        unsafe { OwnedFd::from_raw_fd(libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0)) }
    }

    /// A listener on 127.0.0.1 whose accept queue is full (backlog 0, never accepted from,
    /// filled by non-blocking connects until one stays in progress): a connect to it waits.
    /// `None` if no connect stayed in progress within the bound.
    fn full_listener() -> Option<(OwnedFd, libc::sockaddr_in, Vec<OwnedFd>)> {
        let l = tcp_socket();
        // SAFETY: an all-zero sockaddr_in is valid; the calls get its address and size.
        let mut to: libc::sockaddr_in = unsafe { core::mem::zeroed() };
        to.sin_family = libc::AF_INET as u16;
        to.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        let mut len = core::mem::size_of::<libc::sockaddr_in>() as u32;
        let p = (&raw mut to).cast::<libc::sockaddr>();
        // SAFETY: as above; `l` is ours.
        unsafe {
            assert_eq!(libc::bind(l.as_raw_fd(), p, len), 0);
            assert_eq!(libc::listen(l.as_raw_fd(), 0), 0);
            assert_eq!(libc::getsockname(l.as_raw_fd(), p, &mut len), 0);
        }
        let mut fill = Vec::new();
        for _ in 0..16 {
            let c = tcp_socket();
            // SAFETY: our socket; `to` is a valid address of `len` bytes.
            let r = unsafe {
                libc::fcntl(c.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK);
                libc::connect(c.as_raw_fd(), p, len)
            };
            let mut pfd = libc::pollfd { fd: c.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
            // SAFETY: one pollfd on this frame.
            let pending = r != 0 && unsafe { libc::poll(&mut pfd, 1, 100) } == 0;
            fill.push(c);
            if pending {
                return Some((l, to, fill));
            }
        }
        None
    }

    #[test]
    fn op_rule_4_a_connect_waiting_when_the_engine_drops_gets_its_socket_flags_back() {
        let Some((_l, to, _fill)) = full_listener() else {
            println!("SKIPPED: no connect to a full accept queue stayed in progress here");
            return;
        };
        let s = tcp_socket();
        let mut e = engine(0);
        let len = core::mem::size_of::<libc::sockaddr_in>() as u32;
        push(
            &mut e,
            &[opcode::Connect::new(types::Fd(s.as_raw_fd()), (&to as *const libc::sockaddr_in).cast(), len)
                .build()
                .user_data(1)],
        );
        e.enter(0, None).unwrap();
        assert_eq!(take(&mut e), vec![], "the connect waits");
        assert_ne!(fd_flags(s.as_raw_fd()) & libc::O_NONBLOCK, 0, "net rule 3: non-blocking while it waits");
        drop(e);
        assert_eq!(fd_flags(s.as_raw_fd()) & libc::O_NONBLOCK, 0, "op rule 4: the flags it found, back");
    }
}
