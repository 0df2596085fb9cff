//! SENDMSG/RECVMSG with `MSG_WAITALL` and ancillary buffers (net rule 4, link rule 2).

use super::*;
use io_uring::{opcode, squeue, types};

/// A RECVMSG of `buf` with `MSG_WAITALL` and `ctl` as its ancillary buffer (may be empty).
fn recvmsg_hdr(buf: &mut [u8], iov: &mut libc::iovec, ctl: &mut [u64]) -> libc::msghdr {
    *iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: an all-zero msghdr is valid.
    let mut m: libc::msghdr = unsafe { core::mem::zeroed() };
    m.msg_iov = iov;
    m.msg_iovlen = 1;
    if !ctl.is_empty() {
        m.msg_control = ctl.as_mut_ptr().cast();
        m.msg_controllen = core::mem::size_of_val(ctl);
    }
    m
}

/// With an ancillary buffer, a short RECVMSG with `MSG_WAITALL` completes with what came
/// (it is not retried) and its linked successor starts; without one, it waits for the
/// rest, and once EOF leaves it short its successor is cancelled.
#[test]
fn a_short_recvmsg_with_waitall_and_an_ancillary_buffer_completes_and_its_link_goes_on() {
    for with_ctl in [true, false] {
        let mut e = engine(0);
        let (a, b) = socketpair(libc::SOCK_STREAM);
        write_all(&b, b"abcd");
        let (mut buf, mut iov, mut ctl) =
            ([0u8; 8], libc::iovec { iov_base: core::ptr::null_mut(), iov_len: 0 }, [0u64; 8]);
        let mut m = recvmsg_hdr(&mut buf, &mut iov, if with_ctl { &mut ctl[..] } else { &mut [] });
        push(
            &mut e,
            &[
                opcode::RecvMsg::new(types::Fd(a.as_raw_fd()), &mut m)
                    .flags(libc::MSG_WAITALL as u32)
                    .build()
                    .flags(squeue::Flags::IO_LINK)
                    .user_data(1),
                opcode::Nop::new().build().user_data(2),
            ],
        );
        if with_ctl {
            assert_eq!(wait(&mut e, 2), vec![(1, 4, 0), (2, 0, 0)], "no retry: the link goes on");
            assert_eq!(m.msg_flags & libc::MSG_CTRUNC, 0);
        } else {
            assert_eq!(poll(&mut e), vec![], "4 of 8 bytes: MSG_WAITALL waits for the rest");
            drop(b);
            assert_eq!(wait(&mut e, 2), vec![(1, 4, 0), (2, -libc::ECANCELED, 0)], "short at EOF: the link fails");
        }
        assert_eq!(&buf[..4], b"abcd");
    }
}
