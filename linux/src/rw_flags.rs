//! Per-read/write flags ([`RwFlags`], the `RWF_*` of preadv2(2)/pwritev2(2)) and the
//! driver-independent description of one flagged read or write ([`RwOp`]).
//!
//! `RwFlags` has no `HIPRI`: polled completion is a property of the whole ring
//! (`IORING_SETUP_IOPOLL`), which keel does not set up, not of one operation; a raw
//! `RWF_HIPRI` bit is refused by [`RwFlags::from_raw`] with `EINVAL`.
//!
//! Rules (cited as "rw rule N"):
//! 1. **Description apart from the driver.** An [`RwOp`] is plain data: direction,
//!    descriptor, offset, length, flags. The ring driver encodes it as one SQE
//!    ([`RwOp::sqe`]: `IORING_OP_READ`/`WRITE` with the flags in the SQE's `rw_flags`); a
//!    readiness driver performs the same description with preadv2/pwritev2 when the
//!    descriptor is ready.
//! 2. **`NOWAIT`**: the kernel does not wait (for a pipe or socket with nothing to read,
//!    or a page not in the cache): `EAGAIN` instead, through the ring as with preadv2.
//! 3. **Offsets**: `u64::MAX` means "the file position" (`-1` in the SQE), which
//!    `APPEND` ignores for writes (they go to the end).

use io_uring::{opcode, squeue, types};
use keel_core::Errno;
use std::os::fd::RawFd;

bitflags::bitflags! {
    /// `RWF_*`, see preadv2(2), without `RWF_HIPRI` (module doc).
    #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
    pub struct RwFlags: u32 {
        /// `RWF_DSYNC`: this write's data is durable when it completes (as `O_DSYNC`).
        const DSYNC = 0x2;
        /// `RWF_SYNC`: this write's data and metadata are durable (as `O_SYNC`).
        const SYNC = 0x4;
        /// `RWF_NOWAIT`: `EAGAIN` instead of waiting (rw rule 2).
        const NOWAIT = 0x8;
        /// `RWF_APPEND`: this write goes to the end of the file (as `O_APPEND`).
        const APPEND = 0x10;
    }
}

/// `RWF_HIPRI` (linux/fs.h), refused per operation (module doc).
const RWF_HIPRI: u32 = 0x1;

impl RwFlags {
    /// `RWF_*` bits from C or another library: `EINVAL` for `RWF_HIPRI` (polled i/o is a
    /// ring option, not an operation's) or any bit keel does not name.
    pub fn from_raw(raw: i32) -> Result<Self, Errno> {
        let raw = raw as u32;
        if raw & RWF_HIPRI != 0 {
            return Err(Errno::EINVAL);
        }
        RwFlags::from_bits(raw).ok_or(Errno::EINVAL)
    }
}

/// Which way an [`RwOp`] moves data.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RwKind {
    /// pread2: into the buffer.
    Read,
    /// pwrite2: from the buffer.
    Write,
}

/// One read or write with flags, as any driver performs it (rw rule 1).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RwOp {
    /// The direction.
    pub kind: RwKind,
    /// The descriptor.
    pub fd: RawFd,
    /// The file offset (`u64::MAX`: the file position, rw rule 3).
    pub offset: u64,
    /// Bytes to move.
    pub len: u32,
    /// The `RWF_*` flags.
    pub flags: RwFlags,
}

impl RwOp {
    /// The SQE: `IORING_OP_READ` or `IORING_OP_WRITE` on `buf` with `rw_flags`. Building
    /// it is safe; submitting it is not: `buf` must hold `len` bytes and stay valid (and,
    /// for a read, unused) until the completion (`RingOp::from_entry`'s contract).
    pub fn sqe(&self, buf: *mut u8) -> squeue::Entry {
        let rw_flags = self.flags.bits() as i32;
        match self.kind {
            RwKind::Read => {
                opcode::Read::new(types::Fd(self.fd), buf, self.len).offset(self.offset).rw_flags(rw_flags).build()
            }
            RwKind::Write => opcode::Write::new(types::Fd(self.fd), buf.cast_const(), self.len)
                .offset(self.offset)
                .rw_flags(rw_flags)
                .build(),
        }
    }
}

#[cfg(test)]
#[allow(unsafe_code)] // reading SQE fields by offset
mod tests {
    use super::*;

    #[test]
    fn rw_flags_match_the_kernel_and_hipri_is_refused() {
        assert_eq!(RwFlags::DSYNC.bits(), libc::RWF_DSYNC as u32);
        assert_eq!(RwFlags::SYNC.bits(), libc::RWF_SYNC as u32);
        assert_eq!(RwFlags::NOWAIT.bits(), libc::RWF_NOWAIT as u32);
        assert_eq!(RwFlags::APPEND.bits(), libc::RWF_APPEND as u32);
        assert_eq!(RWF_HIPRI, libc::RWF_HIPRI as u32);
        assert_eq!(RwFlags::from_raw(libc::RWF_HIPRI), Err(Errno::EINVAL));
        assert_eq!(RwFlags::from_raw(0x1000), Err(Errno::EINVAL));
        assert_eq!(RwFlags::from_raw(libc::RWF_NOWAIT | libc::RWF_DSYNC), Ok(RwFlags::NOWAIT | RwFlags::DSYNC));
    }

    #[test]
    fn rw_rule_1_an_rw_op_encodes_its_flags_in_the_sqe() {
        let op = RwOp { kind: RwKind::Write, fd: 3, offset: 9, len: 4, flags: RwFlags::APPEND | RwFlags::DSYNC };
        let e = op.sqe(core::ptr::null_mut());
        let at = |o: usize| (&e as *const squeue::Entry as *const u8).wrapping_add(o);
        // SAFETY: `Entry` is `#[repr(C)]` around `io_uring_sqe` (64 bytes): opcode at byte
        // 0, fd at 4, off at 8, len at 24, rw_flags at 28; in-bounds reads of integers.
        unsafe {
            assert_eq!(*at(0), opcode::Write::CODE);
            assert_eq!((at(4) as *const i32).read_unaligned(), 3);
            assert_eq!((at(8) as *const u64).read_unaligned(), 9);
            assert_eq!((at(24) as *const u32).read_unaligned(), 4);
            assert_eq!((at(28) as *const u32).read_unaligned(), 0x12);
        }
    }
}
