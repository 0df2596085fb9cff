//! Descriptors shared with the operations that name them: a [`File`](crate::File) or
//! [`Socket`](crate::net::Socket) and every future operation on it hold one `Rc<Fd>`, so
//! the descriptor number cannot be closed (and reused by the next `open`, `socket` or
//! `accept`) while an SQE naming it is queued or in flight (the shape tokio-uring and
//! monoio use).
//!
//! Rules (cited as "fd rule N"):
//! 1. **Holders.** The `File`/`Socket` holds one reference. A future operation (an owned
//!    op, a buffer-select receive, a multishot op) keeps a clone until it is submitted and
//!    hands it to the operation's slot in the same poll (`RingDriver::hold_fd`, before any
//!    enter); the slot drops it when the operation's last CQE is reaped (or when the slot
//!    is freed, whichever comes first). A refused submission drops it with the future. A
//!    clone is a non-atomic count bump: no allocation, no lock, and nothing at all on the
//!    SQE path of operations that name no descriptor (fibers' status-block operations).
//!    `Rc` makes `File` and `Socket` `!Send` (as in tokio-uring and monoio): they belong to
//!    the executor's thread.
//! 2. **Fiber operations** borrow the `File`/`Socket` for the whole call and return only
//!    after the completion has been reaped, cancelled or not (`fs` module doc), so they
//!    take no clone: the borrow keeps the owner alive.
//! 3. **Closing.** The last holder to go closes the descriptor with `close(2)`, unless an
//!    `IORING_OP_CLOSE` holding it completed with anything but `ECANCELED` (the kernel
//!    closed it then: `mark_closed`, set by the driver when it reaps that CQE). keel's
//!    `close`/`close_socket` first cancel every operation on the descriptor (`ASYNC_CANCEL`
//!    with `CANCEL_FD | CANCEL_ALL`, net rule 1), then close it through the ring if they
//!    hold the only reference, else drop theirs: the descriptor closes when the last
//!    operation's completion is reaped. So the descriptor is closed whatever `close`
//!    returns.
//! 4. **Giving it up.** `into_raw_fd` succeeds only when no operation holds the descriptor;
//!    otherwise the owner comes back in `Err` (run the executor until the operations it
//!    started have completed, then try again).
//! 5. **Taking ownership.** A holder closes its descriptor (rule 3), so only a descriptor
//!    the caller owns may become a `File`/`Socket`: safe code converts an `OwnedFd`
//!    (`From<OwnedFd>`); `from_raw_fd` is `unsafe` (the caller promises that nothing else
//!    closes the number, as with `std::os::fd::FromRawFd`), else safe code could wrap stdin
//!    or another `File`'s descriptor and close it under its owner, whose next operation
//!    would then name a reused number. Descriptors the kernel returns to keel (`open`,
//!    `socket`, `accept`) are keel's own. `AsRawFd`/`AsFd` only lend the number.
#![allow(unsafe_code)] // closing a descriptor through rustix is `unsafe`

use std::cell::Cell;
use std::os::fd::RawFd;
use std::rc::Rc;

/// One open descriptor and whether the kernel closed it already (fd rule 3). `pub` in a
/// private module: nameable only inside the crate.
#[derive(Debug)]
pub struct Fd {
    raw: RawFd,
    /// The descriptor is no longer ours to close (closed through the ring, or given up).
    closed: Cell<bool>,
}

/// A shared descriptor (fd rule 1).
pub(crate) type SharedFd = Rc<Fd>;

impl Fd {
    /// Takes ownership of `raw`.
    pub(crate) fn new(raw: RawFd) -> SharedFd {
        Rc::new(Fd { raw, closed: Cell::new(false) })
    }

    /// Takes `fd` over.
    pub(crate) fn from_owned(fd: std::os::fd::OwnedFd) -> SharedFd {
        use std::os::fd::IntoRawFd;
        Fd::new(fd.into_raw_fd())
    }

    /// The descriptor, borrowed for as long as `self`: open while any holder lives (rules
    /// 1 and 3; `mark_closed` is set only once the last user-facing owner has gone into a
    /// close operation).
    pub(crate) fn borrowed(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: the descriptor stays open while this `Fd` lives (it closes it in `Drop`),
        // and the borrow does not outlive `self`.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.raw) }
    }

    /// The descriptor number.
    #[inline(always)]
    pub(crate) fn raw(&self) -> RawFd {
        self.raw
    }

    /// The kernel closed it (an `IORING_OP_CLOSE` holding it completed): dropping the last
    /// holder must not close the number again (fd rule 3).
    pub(crate) fn mark_closed(&self) {
        self.closed.set(true);
    }

    /// [`try_into_raw`](Self::try_into_raw) as an `OwnedFd`.
    pub(crate) fn try_into_owned(fd: SharedFd) -> Result<std::os::fd::OwnedFd, SharedFd> {
        let raw = Fd::try_into_raw(fd)?;
        // SAFETY: rule 4: the sole holder gave it up without closing it, so it is ours.
        Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) })
    }

    /// Gives the descriptor up if `fd` is its only holder (fd rule 4).
    pub(crate) fn try_into_raw(fd: SharedFd) -> Result<RawFd, SharedFd> {
        let inner = Rc::try_unwrap(fd)?;
        crate::epoll::note_closed(inner.raw); // close-log rule 1: its new owner may close it
        inner.closed.set(true);
        Ok(inner.raw)
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        if !self.closed.get() {
            crate::epoll::note_closed(self.raw); // close-log rule 1 (epoll/engine/closes.rs)
            // SAFETY: fd rule 1: the descriptor is ours, and the last holder is going, so
            // no operation names it any more.
            unsafe { rustix::io::close(self.raw) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe() -> (RawFd, RawFd) {
        let mut p = [0; 2];
        // SAFETY: `p` has room for the two descriptors.
        assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        (p[0], p[1])
    }

    fn is_open(fd: RawFd) -> bool {
        // SAFETY: only asks for the flags of a number; nothing is closed or taken.
        rustix::io::fcntl_getfd(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }).is_ok()
    }

    #[test]
    fn fd_rule_3_the_last_holder_closes_and_only_the_sole_holder_gives_it_up() {
        let (r, w) = pipe();
        let a = Fd::new(r);
        let b = a.clone(); // an operation's hold (rule 1)
        let a = Fd::try_into_raw(a).expect_err("another holder: not ours to give up (rule 4)");
        drop(a);
        assert!(is_open(r), "a holder is left");
        drop(b);
        assert!(!is_open(r), "the last holder closed it");
        let c = Fd::new(w);
        assert_eq!(Fd::try_into_raw(c).ok(), Some(w));
        assert!(is_open(w), "given up, not closed");
        // SAFETY: ours again, closed once.
        unsafe { rustix::io::close(w) };
    }

    #[test]
    fn fd_rule_3_keel_notes_each_close_and_each_descriptor_it_gives_up_for_the_epoll_engine() {
        use crate::epoll::engine::closes;
        let (r, w) = pipe();
        let before = closes::count();
        drop(Fd::new(r)); // closed by its last holder
        assert_eq!(closes::count(), before + 1, "the close is noted (close-log rule 1)");
        let raw = Fd::try_into_raw(Fd::new(w)).expect("the only holder");
        assert_eq!(closes::count(), before + 2, "a descriptor given up is noted: its owner may close it");
        let marked = Fd::new(raw);
        marked.mark_closed();
        drop(marked);
        assert_eq!(closes::count(), before + 2, "closed by the ring already: noted by the engine's own close");
        // SAFETY: ours again, closed once.
        unsafe { rustix::io::close(raw) };
    }

    #[test]
    fn fd_rule_3_a_descriptor_the_kernel_closed_is_not_closed_again() {
        let (r, w) = pipe();
        let a = Fd::new(r);
        a.mark_closed(); // as the driver does for a completed IORING_OP_CLOSE (rule 3)
        drop(a);
        assert!(is_open(r), "not closed a second time (the number may be someone else's by now)");
        // SAFETY: our pipe, closed once each.
        unsafe {
            rustix::io::close(r);
            rustix::io::close(w);
        }
    }
}
