//! The kernel's prep checks, made when the engine takes an SQE (start rule 5): what
//! io_uring refuses with `-EINVAL` before it performs anything (io_uring.c's
//! `io_init_req` and each opcode's `prep` in net.c, rw.c, sync.c, openclose.c, fs.c,
//! statx.c, poll.c, timeout.c, cancel.c, nop.c), so a raw SQE (`RingOp::from_entry`)
//! gets the same result on either backend.
//!
//! Prep rules (cited as "prep rule N"):
//! 1. An I/O priority (`ioprio`) on an opcode that takes none is refused; the opcodes that
//!    take one are the reads and writes (a priority, rule 2) and the sends, receives and
//!    accept (their op flags, checked where they are performed).
//! 2. A read's or write's priority is checked as `ioprio_check_cap` checks it: a level
//!    without a class, or a class above IDLE, is refused. (A realtime class without
//!    `CAP_SYS_NICE` is the kernel's `-EPERM`, which the engine does not check: keel's
//!    own SQEs carry it only where allowed, `RingDriver`'s `rt_allowed`.)
//! 3. Each opcode refuses the fields it does not use when they are set (the table in
//!    `refused`), and the flag bits it does not know in the fields it does use
//!    (fsync's, unlinkat's).
//! 4. A send's, receive's or accept's op flags (`ioprio`) with a bit the kernel does not
//!    know for that opcode are refused (the bits 6.18 knows: `SEND_FLAGS` ...), and so is
//!    a multishot receive without buffer selection. Bits the kernel knows but the engine
//!    does not perform (multishot receive, fixed buffers, bundles, vectorized sends) pass
//!    here and are declined by start rule 4 (`EOPNOTSUPP`).
//!
//! Which of these the kernel of the day checks was measured on io_uring itself, field by
//! field: `linux/tests/liburing_prep_fields.rs` compares both backends.

use super::sqe::*;
use io_uring::opcode;

/// Prep rule 4: the op-flag bits each opcode knows (io_uring/net.c's `SENDMSG_FLAGS`,
/// `RECVMSG_FLAGS` and `ACCEPT_FLAGS` as kernel 6.18 has them).
const SEND_FLAGS: u16 =
    IORING_RECVSEND_POLL_FIRST | IORING_RECVSEND_FIXED_BUF | IORING_RECVSEND_BUNDLE | IORING_SEND_VECTORIZED;
const SENDMSG_FLAGS: u16 = IORING_RECVSEND_POLL_FIRST | IORING_RECVSEND_FIXED_BUF | IORING_SEND_VECTORIZED;
const RECV_FLAGS: u16 =
    IORING_RECVSEND_POLL_FIRST | IORING_RECV_MULTISHOT | IORING_RECVSEND_FIXED_BUF | IORING_RECVSEND_BUNDLE;
const RECVMSG_FLAGS: u16 = IORING_RECVSEND_POLL_FIRST | IORING_RECV_MULTISHOT | IORING_RECVSEND_FIXED_BUF;
const ACCEPT_FLAGS: u16 = IORING_ACCEPT_MULTISHOT | IORING_ACCEPT_DONTWAIT | IORING_ACCEPT_POLL_FIRST;

/// Prep rule 4: whether receive `s`'s op flags are refused.
fn bad_recv_flags(s: &RawSqe, known: u16) -> bool {
    s.ioprio & !known != 0 || (s.ioprio & IORING_RECV_MULTISHOT != 0 && s.flags & IOSQE_BUFFER_SELECT == 0)
}

const IOPRIO_CLASS_SHIFT: u16 = 13;
const IOPRIO_CLASS_IDLE: u16 = 3;

/// Prep rule 2: whether read/write priority `p` is one the kernel refuses.
fn bad_priority(p: u16) -> bool {
    let (class, level) = (p >> IOPRIO_CLASS_SHIFT, p & 0x7);
    (class == 0 && level != 0) || class > IOPRIO_CLASS_IDLE
}

/// Prep rules 1-4: whether the kernel's prep refuses `s` (with `-EINVAL`). Inline: the
/// hot pair (a send and a receive, the echo path's two SQEs) is tested here in a few
/// instructions; every other opcode goes to [`refused_other`].
#[inline(always)]
pub(crate) fn refused(s: &RawSqe) -> bool {
    match s.opcode {
        // A send's fields are all its own.
        opcode::Send::CODE => s.ioprio & !SEND_FLAGS != 0,
        opcode::Recv::CODE => (s.off | s.file_index as u64) != 0 || (s.ioprio != 0 && bad_recv_flags(s, RECV_FLAGS)),
        _ => refused_other(s),
    }
}

/// [`refused`] for every opcode but the hot pair.
#[inline(never)]
fn refused_other(s: &RawSqe) -> bool {
    // Field by field as each opcode's prep reads them: `off` is addr2, `op_flags` the
    // rw/msg/fsync/... flags, `file_index` splice_fd_in.
    match s.opcode {
        opcode::SendMsg::CODE => s.off != 0 || s.file_index != 0 || s.ioprio & !SENDMSG_FLAGS != 0,
        opcode::RecvMsg::CODE => s.off != 0 || s.file_index != 0 || bad_recv_flags(s, RECVMSG_FLAGS),
        opcode::Read::CODE | opcode::Write::CODE | opcode::Readv::CODE | opcode::Writev::CODE => bad_priority(s.ioprio),
        opcode::Accept::CODE => s.len != 0 || s.buf_index != 0 || s.ioprio & !ACCEPT_FLAGS != 0,
        _ if s.ioprio != 0 => true, // prep rule 1
        opcode::Fsync::CODE => {
            s.addr != 0 || s.buf_index != 0 || s.file_index != 0 || s.op_flags & !IORING_FSYNC_DATASYNC != 0
        }
        opcode::SyncFileRange::CODE => s.addr != 0 || s.buf_index != 0 || s.file_index != 0,
        opcode::Fallocate::CODE => s.op_flags != 0 || s.buf_index != 0 || s.file_index != 0,
        opcode::OpenAt::CODE | opcode::OpenAt2::CODE => s.buf_index != 0,
        opcode::Close::CODE => s.off != 0 || s.addr != 0 || s.len != 0 || s.op_flags != 0 || s.buf_index != 0,
        opcode::Statx::CODE | opcode::RenameAt::CODE => s.buf_index != 0 || s.file_index != 0,
        opcode::UnlinkAt::CODE => {
            s.off != 0
                || s.len != 0
                || s.buf_index != 0
                || s.file_index != 0
                || s.op_flags & !(libc::AT_REMOVEDIR as u32) != 0
        }
        opcode::MkDirAt::CODE => s.off != 0 || s.op_flags != 0 || s.buf_index != 0 || s.file_index != 0,
        opcode::Socket::CODE => s.addr != 0 || s.op_flags != 0 || s.buf_index != 0,
        opcode::Bind::CODE | opcode::Connect::CODE => {
            s.len != 0 || s.op_flags != 0 || s.buf_index != 0 || s.file_index != 0
        }
        opcode::Listen::CODE | opcode::Shutdown::CODE => {
            s.addr != 0 || s.off != 0 || s.op_flags != 0 || s.buf_index != 0 || s.file_index != 0
        }
        opcode::PollAdd::CODE => s.off != 0 || s.addr != 0 || s.buf_index != 0,
        opcode::Timeout::CODE | opcode::LinkTimeout::CODE => {
            s.buf_index != 0 || s.file_index != 0 || s.addr3 != 0 || s.len != 1
        }
        opcode::AsyncCancel::CODE => s.off != 0 || s.file_index != 0,
        _ => false,
    }
}
