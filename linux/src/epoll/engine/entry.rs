//! A descriptor's entry in the readiness table (`ready.rs`): its waiters and what is known
//! of its readiness (readiness rules 2 and 8), and how an event's mask reads.

use super::ready::{ALWAYS, BOTH, IN, IN_LIKE, OUT, OUT_LIKE};
use std::os::fd::RawFd;

/// Whether a short transfer means the descriptor is drained (readiness rule 2).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum Drains {
    #[default]
    Unknown,
    Yes,
    No,
}

#[derive(Debug)]
pub(crate) struct Entry {
    /// (op index, events).
    pub(super) waiters: Waiters,
    /// Registered in the instance (readiness rule 1).
    pub(crate) registered: bool,
    /// Directions that may be ready (readiness rule 2).
    pub(super) maybe: u32,
    /// Directions whose end or error was reported: maybe ready for good (rule 2).
    pub(super) ended: u32,
    pub(super) drains: Drains,
    /// On the pending list (readiness rule 4).
    pub(super) pending: bool,
    /// The sweep at which the registration is next re-checked, and the gap after that
    /// (`revalidate.rs`).
    pub(crate) check_at: u32,
    pub(crate) gap: u32,
}

impl Default for Entry {
    fn default() -> Entry {
        Entry {
            waiters: Waiters::default(),
            registered: false,
            maybe: BOTH,
            ended: 0,
            drains: Drains::Unknown,
            pending: false,
            check_at: 0,
            gap: 0,
        }
    }
}

impl Entry {
    /// Readiness rule 6: a new file, or none, under this number.
    pub(super) fn reset(&mut self) {
        self.registered = false;
        self.maybe = BOTH;
        self.ended = 0;
        self.drains = Drains::Unknown;
    }

    pub(crate) fn has_waiters(&self) -> bool {
        self.waiters.one.is_some()
    }

    pub(super) fn more_is_empty(&self) -> bool {
        self.waiters.more.is_empty()
    }

    /// `Readiness::take` for an entry with at most one waiter: the entry updated with
    /// `revents` (readiness rule 2), and `Some(op)` if they satisfy its waiter (taken
    /// out), `Some(None)` if not or there is none; `None` (nothing done) when it has more
    /// waiters. A lone `ONE` waiter has no other to hand readiness on to (readiness rule
    /// 10).
    #[inline(always)]
    pub(super) fn take_lone(&mut self, revents: u32) -> Option<Option<u32>> {
        if !self.more_is_empty() {
            return None;
        }
        self.ended |= ended_of(revents);
        self.maybe |= maybe_of(revents);
        match self.waiters.one {
            Some((i, ev)) if revents & (ev | ALWAYS) != 0 => {
                self.waiters.one = None;
                Some(Some(i))
            }
            _ => Some(None),
        }
    }
}

/// A descriptor's waiters, oldest first: (op index, events). The first sits inline, so
/// the usual one waiter per descriptor never allocates; `one` is `None` only when `more`
/// is empty.
#[derive(Debug, Default)]
pub(super) struct Waiters {
    pub(super) one: Option<(u32, u32)>,
    pub(super) more: Vec<(u32, u32)>,
}

impl Waiters {
    pub(super) fn push(&mut self, w: (u32, u32)) {
        if self.one.is_none() { self.one = Some(w) } else { self.more.push(w) }
    }

    pub(super) fn len(&self) -> usize {
        usize::from(self.one.is_some()) + self.more.len()
    }

    pub(super) fn union(&self) -> u32 {
        self.more.iter().fold(self.one.map_or(0, |w| w.1), |acc, w| acc | w.1)
    }

    /// Keeps the waiters `keep` says, calling it oldest first.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&(u32, u32)) -> bool) {
        let first = self.one.map(|w| keep(&w));
        self.more.retain(|w| keep(w));
        if first == Some(false) {
            self.one = if self.more.is_empty() { None } else { Some(self.more.remove(0)) };
        }
    }

    pub(super) fn drain_into(&mut self, out: &mut Vec<(u32, u32)>) {
        out.extend(self.one.take());
        out.append(&mut self.more);
    }
}

/// Readiness rule 2: the directions an event's `revents` makes maybe ready.
pub(super) fn maybe_of(revents: u32) -> u32 {
    let mut m = 0;
    if revents & (IN_LIKE | ALWAYS) != 0 {
        m |= IN;
    }
    if revents & (OUT_LIKE | ALWAYS) != 0 {
        m |= OUT;
    }
    m
}

/// Readiness rule 2: the directions an event's `revents` ends (for reading: the peer
/// shut down its writing, or hung up; for both: an error), which stay maybe ready: their
/// end raises no further edge, and an attempt returns at once (0 or the error).
pub(super) fn ended_of(revents: u32) -> u32 {
    let mut m = 0;
    if revents & (libc::EPOLLRDHUP as u32 | ALWAYS) != 0 {
        m |= IN;
    }
    if revents & ALWAYS != 0 {
        m |= OUT;
    }
    m
}

/// Whether `fd` is a pipe or a stream socket: a read or write of it that moves fewer
/// bytes than asked took all there was (or all the room).
pub(super) fn drains_on_short_transfer(fd: RawFd) -> bool {
    let mut st = core::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is writable memory of the size fstat fills.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: fstat returned 0, so it filled `st`.
    match unsafe { st.assume_init() }.st_mode & libc::S_IFMT {
        libc::S_IFIFO => true,
        libc::S_IFSOCK => {
            let mut ty: libc::c_int = 0;
            let mut len = core::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: `ty` and `len` are on this frame, `len` its size.
            let r = unsafe {
                libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_TYPE, (&mut ty as *mut i32).cast(), &mut len)
            };
            r == 0 && ty == libc::SOCK_STREAM
        }
        _ => false,
    }
}
