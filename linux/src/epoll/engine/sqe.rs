//! The SQE's raw fields: one `#[repr(C)]` mirror of the kernel's `struct io_uring_sqe`
//! (include/uapi/linux/io_uring.h), so the engine reads every operation's arguments by
//! name instead of through the `io-uring` crate's private unions. A copy is taken when
//! the SQE is pushed (as the kernel copies it out of the SQ at submission): nothing the
//! caller does to its own entry afterwards changes the operation.

use io_uring::squeue;

/// `struct io_uring_sqe`, field by field (the unions under the name the engine uses).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RawSqe {
    pub opcode: u8,
    /// `IOSQE_*`.
    pub flags: u8,
    /// An I/O priority for read/write opcodes; op flags (`IORING_RECV_MULTISHOT`,
    /// `IORING_ACCEPT_MULTISHOT`, ...) for the others.
    pub ioprio: u16,
    pub fd: i32,
    /// `off` / `addr2`.
    pub off: u64,
    /// `addr` / `splice_off_in` / {`level`, `optname`}.
    pub addr: u64,
    pub len: u32,
    /// `rw_flags`, `msg_flags`, `timeout_flags`, `cancel_flags`, `open_flags`, ...
    pub op_flags: u32,
    pub user_data: u64,
    /// `buf_index` / `buf_group`.
    pub buf_index: u16,
    pub personality: u16,
    /// `file_index` / `splice_fd_in` / `optlen` / {`addr_len`, pad}.
    pub file_index: u32,
    /// `addr3` / `optval`.
    pub addr3: u64,
    pub pad: u64,
}

const _: () = assert!(core::mem::size_of::<RawSqe>() == 64);
const _: () = assert!(core::mem::size_of::<squeue::Entry>() == 64);
const _: () = assert!(core::mem::align_of::<squeue::Entry>() >= core::mem::align_of::<RawSqe>());

impl RawSqe {
    /// The fields of `e`, in place.
    #[inline(always)]
    pub(crate) fn view(e: &squeue::Entry) -> &RawSqe {
        // SAFETY: `squeue::Entry` is `#[repr(C)]` around `io_uring_sqe`, 64 bytes of
        // integers and unions of integers (sizes and alignment asserted above: the
        // entry's alignment is at least `RawSqe`'s); `RawSqe` declares the same fields at
        // the same offsets (the `offsets` test), and every bit pattern is a valid
        // `RawSqe`. The borrow is `e`'s.
        unsafe { &*(e as *const squeue::Entry as *const RawSqe) }
    }

    /// The fields of `e`, in place, to change.
    #[inline(always)]
    pub(crate) fn view_mut(e: &mut squeue::Entry) -> &mut RawSqe {
        // SAFETY: as in `view`; any bit pattern written through `RawSqe` is a valid
        // `io_uring_sqe` (integers and unions of integers). The borrow is `e`'s.
        unsafe { &mut *(e as *mut squeue::Entry as *mut RawSqe) }
    }

    /// A copy of the fields of `e`.
    #[cfg(test)]
    pub(crate) fn of(e: &squeue::Entry) -> RawSqe {
        *Self::view(e)
    }

    /// The offset of a read or write: `None` for -1 (the file's current position).
    pub(crate) fn pos(&self) -> Option<i64> {
        (self.off != u64::MAX).then_some(self.off as i64)
    }

    /// `SOCKET_URING_OP_*` of an `IORING_OP_URING_CMD` (the low half of `off`).
    pub(crate) fn cmd_op(&self) -> u32 {
        self.off as u32
    }

    /// Whether an `IOSQE_*` flag is set.
    pub(crate) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// `IOSQE_*` (include/uapi/linux/io_uring.h).
pub(crate) const IOSQE_FIXED_FILE: u8 = 1 << 0;
pub(crate) const IOSQE_IO_DRAIN: u8 = 1 << 1;
pub(crate) const IOSQE_IO_LINK: u8 = 1 << 2;
pub(crate) const IOSQE_IO_HARDLINK: u8 = 1 << 3;
pub(crate) const IOSQE_BUFFER_SELECT: u8 = 1 << 5;
pub(crate) const IOSQE_CQE_SKIP_SUCCESS: u8 = 1 << 6;

/// `IORING_ACCEPT_*` in an ACCEPT's `ioprio`.
pub(crate) const IORING_ACCEPT_MULTISHOT: u16 = 1 << 0;
pub(crate) const IORING_ACCEPT_DONTWAIT: u16 = 1 << 1;
/// `IORING_RECV_MULTISHOT` in a RECV/RECVMSG's `ioprio`.
pub(crate) const IORING_RECV_MULTISHOT: u16 = 1 << 1;
/// `IORING_RECVSEND_FIXED_BUF` / `IORING_SEND_ZC_REPORT_USAGE` and friends: a send
/// or receive with any of these is refused.
pub(crate) const IORING_RECVSEND_FIXED_BUF: u16 = 1 << 2;
/// `IORING_RECVSEND_POLL_FIRST` in a send's or receive's `ioprio` (also
/// `IORING_ACCEPT_POLL_FIRST`'s value is `1 << 2`).
pub(crate) const IORING_RECVSEND_POLL_FIRST: u16 = 1 << 0;
pub(crate) const IORING_ACCEPT_POLL_FIRST: u16 = 1 << 2;
/// `IORING_RECVSEND_BUNDLE` and `IORING_SEND_VECTORIZED`: forms the engine does not
/// perform (a bundle takes provided buffers; a vectorized send's `addr` is an iovec array).
pub(crate) const IORING_RECVSEND_BUNDLE: u16 = 1 << 4;
pub(crate) const IORING_SEND_VECTORIZED: u16 = 1 << 5;
/// `IORING_CQE_F_MORE`: a multishot op goes on after this CQE.
pub(crate) const IORING_CQE_F_MORE: u32 = 1 << 1;
/// `IORING_POLL_ADD_MULTI` (and the update flags) in a POLL_ADD's `len`.
pub(crate) const IORING_POLL_ADD_MULTI: u32 = 1 << 0;

/// `IORING_TIMEOUT_*`.
pub(crate) const IORING_TIMEOUT_ABS: u32 = 1 << 0;
pub(crate) const IORING_TIMEOUT_BOOTTIME: u32 = 1 << 2;
pub(crate) const IORING_TIMEOUT_REALTIME: u32 = 1 << 3;
pub(crate) const IORING_TIMEOUT_ETIME_SUCCESS: u32 = 1 << 5;

/// `IORING_ASYNC_CANCEL_*`.
pub(crate) const IORING_ASYNC_CANCEL_ALL: u32 = 1 << 0;
pub(crate) const IORING_ASYNC_CANCEL_FD: u32 = 1 << 1;
pub(crate) const IORING_ASYNC_CANCEL_ANY: u32 = 1 << 2;
pub(crate) const IORING_ASYNC_CANCEL_FD_FIXED: u32 = 1 << 3;
pub(crate) const IORING_ASYNC_CANCEL_USERDATA: u32 = 1 << 4;
pub(crate) const IORING_ASYNC_CANCEL_OP: u32 = 1 << 5;

/// `IORING_FSYNC_DATASYNC`.
pub(crate) const IORING_FSYNC_DATASYNC: u32 = 1 << 0;

/// `SOCKET_URING_OP_SETSOCKOPT`, the `cmd_op` of an `IORING_OP_URING_CMD` on a socket.
pub(crate) const SOCKET_URING_OP_SETSOCKOPT: u32 = 3;

#[cfg(test)]
mod tests {
    use super::*;
    use io_uring::{opcode, types};

    #[test]
    fn offsets_match_the_crates_builders() {
        let e = opcode::Write::new(types::Fd(7), 0x1000 as *const u8, 33)
            .offset(44)
            .rw_flags(5)
            .ioprio(6)
            .build()
            .user_data(0xabcd)
            .flags(squeue::Flags::IO_LINK);
        let r = RawSqe::of(&e);
        assert_eq!(r.opcode, opcode::Write::CODE);
        assert_eq!((r.fd, r.addr, r.len, r.off, r.op_flags, r.ioprio), (7, 0x1000, 33, 44, 5, 6));
        assert_eq!(r.user_data, 0xabcd);
        assert!(r.has(IOSQE_IO_LINK));
        let s = opcode::SetSockOpt::new(types::Fd(3), 1, 2, 0x2000 as *const libc::c_void, 4).build();
        let r = RawSqe::of(&s);
        assert_eq!(r.cmd_op(), SOCKET_URING_OP_SETSOCKOPT);
        assert_eq!((r.addr as u32, (r.addr >> 32) as u32, r.file_index, r.addr3), (1, 2, 4, 0x2000));
        let a = opcode::Accept::new(types::Fd(9), 0x10 as *mut _, 0x20 as *mut _).flags(libc::SOCK_CLOEXEC).build();
        let r = RawSqe::of(&a);
        assert_eq!((r.addr, r.off, r.op_flags as i32, r.file_index), (0x10, 0x20, libc::SOCK_CLOEXEC, 0));
        let sd =
            opcode::Send::new(types::Fd(1), 0x30 as *const u8, 5).dest_addr(0x40 as *const _).dest_addr_len(16).build();
        let r = RawSqe::of(&sd);
        assert_eq!((r.off, r.file_index & 0xffff), (0x40, 16));
    }
}
