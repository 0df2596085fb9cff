//! The close log: the descriptor numbers keel closed with `close(2)` (or gave up) outside
//! the engine, so that each engine on the thread renews their entries before it trusts
//! them again (readiness rule 6).
//!
//! Close-log rules (cited as "close-log rule N"):
//! 1. Every `close(2)` keel makes of a descriptor it owns outside the engine (the last
//!    holder of a `File`/`Socket` going, a fiber's close that could not go through the
//!    driver, a descriptor an abandoned ACCEPT returned) and every descriptor it gives up
//!    (`into_raw_fd`: its new owner may close it) is noted with [`note_closed`] first:
//!    one thread-local counter and one slot of a ring of `LOG` numbers. A `File`/`Socket`
//!    is `!Send` and the driver is not `Send` (kernel rule 4), so the notes of a
//!    descriptor's closes land on the thread of the engine that waited on it. A number
//!    closed on another thread (raw descriptors shared between executors) is, for this
//!    engine, closed behind its back: revalidation finds its waiters (readiness rule 7).
//! 2. An engine keeps the count it has read up to (`Engine::closes_seen`); each `enter`
//!    first renews the entries of the numbers noted since (bounded by `LOG`). If more
//!    than `LOG` were noted since, it renews every entry (bounded by the entries). Several
//!    engines on one thread each read the same log.
//! 3. Noting costs a thread-local store, allocates nothing and takes no lock, on either
//!    backend.
//! 4. A close keel does not make (`close(2)` from C or unsafe code on a number keel
//!    operations named) is noted by its maker with [`note_closed`] (public as
//!    `keel_linux::epoll::note_closed`, and `keel_fd_closed`/`keel_fd_close` in C), on
//!    the thread whose executor used the number, before that executor runs again: then
//!    it is one of keel's closes for rules 1-2, and the engine renews the entry at its
//!    next `enter` instead of finding the reuse by revalidation (up to 2 s later,
//!    `revalidate.rs`; a waiter on the closed number ends with `EBADF` at once, as after
//!    keel's own close). A note on another thread, or of a number the engine never
//!    waited on, only costs that engine an entry's renewal.

use std::cell::Cell;
use std::os::fd::RawFd;

/// Numbers the ring keeps (close-log rule 2).
pub(crate) const LOG: usize = 64;

struct Log {
    count: Cell<u64>,
    fds: [Cell<RawFd>; LOG],
}

thread_local! {
    static CLOSED: Log = const { Log { count: Cell::new(0), fds: [const { Cell::new(-1) }; LOG] } };
}

/// Records that `fd` was closed (or is about to be) on this thread, so that the epoll
/// engines of this thread's executors trust nothing they knew of the number (close-log
/// rules 1 and 4): call it for a close keel did not make (`close(2)` on a number keel
/// operations used), on the thread whose executor used the number, before that executor
/// runs again. keel's own closes (a dropped `File`/`Socket`, `close`, `into_raw_fd`) note
/// themselves. Without it, a wait on the number's next file is found only by
/// revalidation, up to 2 s later (and one on the closed number up to 17 s later). A
/// thread-local store: no allocation, no lock, no system call; nothing on the io_uring
/// backend needs it.
#[inline]
pub fn note_closed(fd: RawFd) {
    CLOSED.with(|l| {
        let n = l.count.get();
        l.fds[(n % LOG as u64) as usize].set(fd);
        l.count.set(n.wrapping_add(1));
    });
}

/// The notes so far on this thread.
pub(crate) fn count() -> u64 {
    CLOSED.with(|l| l.count.get())
}

/// Close-log rule 2: calls `renew` for each number noted after the first `seen` notes;
/// the count read up to, `Err` if more than `LOG` were noted since (every entry must be
/// renewed then).
pub(crate) fn since(seen: u64, mut renew: impl FnMut(RawFd)) -> Result<u64, u64> {
    let mut buf = [-1; LOG];
    let (n, new) = CLOSED.with(|l| {
        let n = l.count.get();
        let new = n.wrapping_sub(seen);
        if new <= LOG as u64 {
            for (k, at) in (seen..n).enumerate() {
                buf[k] = l.fds[(at % LOG as u64) as usize].get();
            }
        }
        (n, new)
    });
    if new > LOG as u64 {
        return Err(n);
    }
    buf[..new as usize].iter().for_each(|&fd| renew(fd));
    Ok(n)
}
