//! File operations performed with blocking system calls, on a pool thread (or on the
//! executor's thread when the pool has no threads): what io_uring itself hands to its
//! io-wq workers. Each returns the CQE's `res` (a count, a descriptor, 0, or `-errno`).
//!
//! Arguments come from the SQE's fields as io_uring's `prep` functions read them
//! (io_uring/rw.c, fs.c, openclose.c, statx.c, sync.c); the memory they name is the
//! caller's until the CQE (`Engine::push`'s contract), which comes after this returns.

use super::sqe::{IORING_FSYNC_DATASYNC, RawSqe};
use io_uring::opcode;

/// `-errno` of the last failed call.
pub(crate) fn neg_errno() -> i32 {
    -std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// A syscall's return as a CQE result.
pub(crate) fn res(r: i64) -> i32 {
    if r < 0 { neg_errno() } else { r.min(i64::from(i32::MAX)) as i32 }
}

/// What a read or write's descriptor is.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A regular file, block device or directory: what the pool performs (epoll cannot
    /// wait for them).
    File,
    /// A pipe or a socket: no position, so the offset is ignored, as io_uring ignores it.
    Stream,
    /// An anonymous inode (eventfd, signalfd, timerfd): a stream as well, whose reads and
    /// writes check their length before readiness (an eventfd's buffer shorter than 8
    /// bytes is `EINVAL` at once), so they always make their first attempt (readiness
    /// rule 3).
    Anon,
    /// Anything else (a character device such as a tty), or a descriptor `fstat` refuses
    /// (the readiness path then reports the error).
    Other,
}

/// `fd`'s [`Kind`] (one `fstat`).
pub(crate) fn kind(fd: i32) -> Kind {
    let mut st = core::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is writable memory of the size fstat fills.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return Kind::Other;
    }
    // SAFETY: fstat returned 0, so it filled `st`.
    match unsafe { st.assume_init() }.st_mode & libc::S_IFMT {
        libc::S_IFREG | libc::S_IFBLK | libc::S_IFDIR => Kind::File,
        0 => Kind::Anon,
        libc::S_IFIFO | libc::S_IFSOCK => Kind::Stream,
        _ => Kind::Other,
    }
}

/// Performs file operation `s` (blocking).
pub(crate) fn blocking(s: &RawSqe) -> i32 {
    let (fd, addr, off, len, fl) = (s.fd, s.addr, s.off, s.len, s.op_flags);
    // SAFETY: (every call below) the pointers are the SQE's own (`addr`, `off`/`addr2`,
    // `addr3`), valid for what each call reads or writes until the CQE (module doc); the
    // kernel validates every descriptor and length.
    let r: i64 = unsafe {
        match s.opcode {
            opcode::Read::CODE | opcode::Write::CODE | opcode::Readv::CODE | opcode::Writev::CODE => {
                return rw(s, fl as i32);
            }
            opcode::Fsync::CODE if fl & IORING_FSYNC_DATASYNC != 0 => libc::fdatasync(fd).into(),
            opcode::Fsync::CODE => libc::fsync(fd).into(),
            opcode::SyncFileRange::CODE => libc::sync_file_range(fd, off as i64, i64::from(len), fl).into(),
            opcode::Fallocate::CODE => libc::fallocate(fd, len as i32, off as i64, addr as i64).into(),
            opcode::OpenAt::CODE => libc::openat(fd, addr as *const libc::c_char, fl as i32, len).into(),
            opcode::OpenAt2::CODE => libc::syscall(libc::SYS_openat2, fd, addr, off, len as usize),
            opcode::Close::CODE => libc::close(fd).into(),
            opcode::Statx::CODE => {
                libc::statx(fd, addr as *const libc::c_char, fl as i32, len, off as *mut libc::statx).into()
            }
            opcode::UnlinkAt::CODE => libc::unlinkat(fd, addr as *const libc::c_char, fl as i32).into(),
            opcode::RenameAt::CODE => libc::syscall(libc::SYS_renameat2, fd, addr, len as i32, off, fl),
            opcode::MkDirAt::CODE => libc::mkdirat(fd, addr as *const libc::c_char, len).into(),
            _ => return -libc::EOPNOTSUPP,
        }
    };
    res(r)
}

/// The iovec array of a read or write: the SQE's own (vectored) or `one`, made from
/// `addr`/`len`.
pub(crate) fn iov(s: &RawSqe, one: &mut libc::iovec) -> (*const libc::iovec, i32) {
    match s.opcode {
        opcode::Readv::CODE | opcode::Writev::CODE => (s.addr as *const libc::iovec, s.len as i32),
        _ => {
            *one = libc::iovec { iov_base: s.addr as *mut libc::c_void, iov_len: s.len as usize };
            (one as *const libc::iovec, 1)
        }
    }
}

/// `preadv2`/`pwritev2` of `s` with `rw_flags`; the offset is the SQE's (-1: the current
/// position), or -1 where the descriptor has no position (`ESPIPE`: a pipe, a socket, a
/// tty), as io_uring ignores the offset of a stream.
pub(crate) fn rw(s: &RawSqe, rw_flags: i32) -> i32 {
    let write = matches!(s.opcode, opcode::Write::CODE | opcode::Writev::CODE);
    let mut one = libc::iovec { iov_base: core::ptr::null_mut(), iov_len: 0 };
    let (iov, n) = iov(s, &mut one);
    let mut off = s.pos().unwrap_or(-1);
    loop {
        // SAFETY: `iov` names `n` iovecs (the SQE's, or `one` on this frame) whose buffers
        // are valid until the CQE (module doc).
        let r = unsafe {
            if write { libc::pwritev2(s.fd, iov, n, off, rw_flags) } else { libc::preadv2(s.fd, iov, n, off, rw_flags) }
        };
        let r = res(r as i64);
        if r == -libc::ESPIPE && off != -1 {
            off = -1;
            continue;
        }
        return r;
    }
}

/// The bytes a read or write asks for (the iovecs' total for a vectored one), which a
/// result must reach for a link chain to go on.
pub(crate) fn asked(s: &RawSqe) -> u64 {
    match s.opcode {
        opcode::Readv::CODE | opcode::Writev::CODE => {
            let p = s.addr as *const libc::iovec;
            (0..s.len as usize)
                // SAFETY: the SQE's `len` iovecs at `addr` are valid until the CQE, which
                // has not been posted yet when a chain asks.
                .map(|k| unsafe { (*p.add(k)).iov_len as u64 })
                .sum()
        }
        _ => u64::from(s.len),
    }
}
