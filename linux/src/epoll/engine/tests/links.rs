use super::*;
use io_uring::{opcode, types};
use squeue::Flags;

#[test]
fn a_chain_runs_in_order_and_its_cqes_come_in_order() {
    let mut e = engine(2);
    let d = tempdir("chain");
    let f = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(d.join("f")).unwrap();
    let fd = types::Fd(f.as_raw_fd());
    let data = *b"chained!";
    let mut back = [0u8; 8];
    push(
        &mut e,
        &[
            opcode::Write::new(fd, data.as_ptr(), 8).offset(0).build().flags(Flags::IO_LINK).user_data(1),
            opcode::Fsync::new(fd).build().flags(Flags::IO_LINK).user_data(2),
            opcode::Read::new(fd, back.as_mut_ptr(), 8).offset(0).build().user_data(3),
        ],
    );
    assert_eq!(wait(&mut e, 3), vec![(1, 8, 0), (2, 0, 0), (3, 8, 0)]);
    assert_eq!(&back, b"chained!");
}

#[test]
fn a_failed_or_short_member_cancels_the_rest_of_its_chain() {
    let mut e = engine(0);
    let (r, w) = pipe();
    write_all(&w, b"abc");
    let mut buf = [0u8; 8];
    push(
        &mut e,
        &[
            // A short read (3 of 8) breaks the chain.
            opcode::Read::new(types::Fd(r.as_raw_fd()), buf.as_mut_ptr(), 8).build().flags(Flags::IO_LINK).user_data(1),
            opcode::Nop::new().build().flags(Flags::IO_LINK).user_data(2),
            opcode::Nop::new().build().user_data(3),
            // A failure does too; the next chain is not touched.
            opcode::Close::new(types::Fd(-1)).build().flags(Flags::IO_LINK).user_data(4),
            opcode::Nop::new().build().user_data(5),
            opcode::Nop::new().build().user_data(6),
        ],
    );
    let c = -libc::ECANCELED;
    assert_eq!(wait(&mut e, 6), vec![(1, 3, 0), (2, c, 0), (3, c, 0), (4, -libc::EBADF, 0), (5, c, 0), (6, 0, 0)]);
}

#[test]
fn a_hard_link_goes_on_after_a_failure() {
    let mut e = engine(0);
    push(
        &mut e,
        &[
            opcode::Close::new(types::Fd(-1)).build().flags(Flags::IO_HARDLINK).user_data(1),
            opcode::Nop::new().build().user_data(2),
        ],
    );
    assert_eq!(wait(&mut e, 2), vec![(1, -libc::EBADF, 0), (2, 0, 0)]);
}

#[test]
fn a_link_timeout_that_fires_first_cancels_its_op() {
    let mut e = engine(0);
    let (a, _b) = socketpair(libc::SOCK_STREAM);
    let mut buf = [0u8; 4];
    let ts = ms(10);
    push(
        &mut e,
        &[
            opcode::Recv::new(types::Fd(a.as_raw_fd()), buf.as_mut_ptr(), 4).build().flags(Flags::IO_LINK).user_data(1),
            opcode::LinkTimeout::new(&*ts).build().user_data(2),
        ],
    );
    let mut got = wait(&mut e, 2);
    got.sort();
    assert_eq!(got, vec![(1, -libc::ECANCELED, 0), (2, -libc::ETIME, 0)]);
    assert_eq!(e.in_flight(), 0);
}

#[test]
fn an_op_that_completes_first_cancels_its_link_timeout_and_a_linked_timeout_continues_the_chain() {
    let mut e = engine(0);
    let (a, b) = socketpair(libc::SOCK_STREAM);
    let mut buf = [0u8; 4];
    let ts = ms(60_000);
    push(
        &mut e,
        &[
            opcode::Recv::new(types::Fd(a.as_raw_fd()), buf.as_mut_ptr(), 4).build().flags(Flags::IO_LINK).user_data(1),
            opcode::LinkTimeout::new(&*ts).build().flags(Flags::IO_LINK).user_data(2),
            opcode::Nop::new().build().user_data(3),
        ],
    );
    assert_eq!(poll(&mut e), vec![]);
    write_all(&b, b"data");
    assert_eq!(wait(&mut e, 3), vec![(1, 4, 0), (2, -libc::ECANCELED, 0), (3, 0, 0)]);
    // An op done at once: the timer is never armed and still reports ECANCELED.
    let abs = Box::new(types::Timespec::new().sec(1));
    push(
        &mut e,
        &[
            opcode::Nop::new().build().flags(Flags::IO_LINK).user_data(4),
            opcode::LinkTimeout::new(&*abs).flags(types::TimeoutFlags::ABS).build().user_data(5),
        ],
    );
    assert_eq!(poll(&mut e), vec![(4, 0, 0), (5, -libc::ECANCELED, 0)]);
}

#[test]
fn a_link_timeout_that_fires_on_a_broken_chain_cancels_the_rest() {
    let mut e = engine(0);
    let (a, _b) = socketpair(libc::SOCK_STREAM);
    let mut buf = [0u8; 4];
    let ts = ms(5);
    push(
        &mut e,
        &[
            opcode::Recv::new(types::Fd(a.as_raw_fd()), buf.as_mut_ptr(), 4).build().flags(Flags::IO_LINK).user_data(1),
            opcode::LinkTimeout::new(&*ts).build().flags(Flags::IO_LINK).user_data(2),
            opcode::Nop::new().build().user_data(3),
        ],
    );
    let mut got = wait(&mut e, 3);
    got.sort();
    assert_eq!(got, vec![(1, -libc::ECANCELED, 0), (2, -libc::ETIME, 0), (3, -libc::ECANCELED, 0)]);
}

#[test]
fn a_link_timeout_with_nothing_to_time_is_einval() {
    let mut e = engine(0);
    let ts = ms(1);
    push(&mut e, &[opcode::LinkTimeout::new(&*ts).build().user_data(1)]);
    assert_eq!(poll(&mut e), vec![(1, -libc::EINVAL, 0)]);
}

#[test]
fn cqe_skip_success_posts_only_failures() {
    let mut e = engine(0);
    push(
        &mut e,
        &[
            opcode::Nop::new().build().flags(Flags::SKIP_SUCCESS).user_data(1),
            opcode::Close::new(types::Fd(-1)).build().flags(Flags::SKIP_SUCCESS).user_data(2),
        ],
    );
    assert_eq!(poll(&mut e), vec![(2, -libc::EBADF, 0)]);
}

#[test]
fn a_link_timeout_on_a_running_pool_job_says_ealready_and_the_job_keeps_its_result() {
    let mut e = engine(1);
    let b = super::cancel::Blocker::new("ltrunning");
    let f = std::fs::File::open("/proc/self/exe").unwrap();
    let (t1, t2) = (ms(20), ms(20));
    push(
        &mut e,
        &[
            b.open_sqe(1).flags(Flags::IO_LINK),
            opcode::LinkTimeout::new(&*t1).build().user_data(2),
            // Queued behind the blocked open: its timer cancels it from the queue.
            opcode::Fsync::new(types::Fd(f.as_raw_fd())).build().flags(Flags::IO_LINK).user_data(3),
            opcode::LinkTimeout::new(&*t2).build().user_data(4),
        ],
    );
    let mut got = wait(&mut e, 3);
    got.sort();
    assert_eq!(got, vec![(2, -libc::EALREADY, 0), (3, -libc::ECANCELED, 0), (4, -libc::ETIME, 0)]);
    let _w = b.unblock();
    let got = wait(&mut e, 1);
    assert!(got.len() == 1 && got[0].0 == 1 && got[0].1 >= 0, "{got:?}");
    // SAFETY: the open's descriptor is ours.
    drop(unsafe { OwnedFd::from_raw_fd(got[0].1) });
}

#[test]
fn a_short_receive_breaks_a_chain_only_with_msg_waitall() {
    let mut e = engine(0);
    let (a, b) = socketpair(libc::SOCK_STREAM);
    let (mut x, mut y) = ([0u8; 8], [0u8; 8]);
    write_all(&b, b"abc");
    push(
        &mut e,
        &[
            // 3 of 8 bytes without MSG_WAITALL: a success, as io_uring counts it.
            opcode::Recv::new(types::Fd(a.as_raw_fd()), x.as_mut_ptr(), 8).build().flags(Flags::IO_LINK).user_data(1),
            opcode::Nop::new().build().user_data(2),
        ],
    );
    assert_eq!(wait(&mut e, 2), vec![(1, 3, 0), (2, 0, 0)]);
    write_all(&b, b"def");
    drop(b); // EOF after 3 bytes: MSG_WAITALL ends short
    push(
        &mut e,
        &[
            opcode::Recv::new(types::Fd(a.as_raw_fd()), y.as_mut_ptr(), 8)
                .flags(libc::MSG_WAITALL)
                .build()
                .flags(Flags::IO_LINK)
                .user_data(3),
            opcode::Nop::new().build().user_data(4),
        ],
    );
    assert_eq!(wait(&mut e, 2), vec![(3, 3, 0), (4, -libc::ECANCELED, 0)]);
}

/// Link rule 1: a skip that succeeded posts nothing and its successor runs.
#[test]
fn link_rule_1_a_successful_skip_posts_nothing_and_its_chain_goes_on() {
    let mut e = engine(0);
    push(
        &mut e,
        &[
            opcode::Nop::new().build().flags(Flags::SKIP_SUCCESS | Flags::IO_LINK).user_data(1),
            opcode::Nop::new().build().user_data(2),
        ],
    );
    assert_eq!(poll(&mut e), vec![(2, 0, 0)]);
}

/// Link rule 1, as the kernel's `REQ_F_FAIL` and `REQ_F_SKIP_LINK_CQES`: a skip that failed
/// by link rule 2 (here a short read, whose result is not negative) posts its CQE, and
/// the members it fails, their link timers too, post none.
#[test]
fn link_rule_1_a_failed_skip_posts_its_cqe_and_silences_its_chain() {
    let path = std::env::temp_dir().join(format!("keel-skip-short-{}", std::process::id()));
    std::fs::write(&path, b"abc").unwrap();
    let f = std::fs::File::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let mut buf = [0u8; 8];
    let ts = ms(1000);
    let mut e = engine(0);
    push(
        &mut e,
        &[
            opcode::Read::new(types::Fd(f.as_raw_fd()), buf.as_mut_ptr(), 8)
                .offset(0)
                .build()
                .flags(Flags::SKIP_SUCCESS | Flags::IO_LINK)
                .user_data(1),
            opcode::Nop::new().build().flags(Flags::IO_LINK).user_data(2),
            opcode::LinkTimeout::new(&*ts).build().flags(Flags::IO_LINK).user_data(3),
            opcode::Nop::new().build().user_data(4),
        ],
    );
    assert_eq!(poll(&mut e), vec![(1, 3, 0)], "the short read's CQE alone");
    assert_eq!(e.in_flight(), 0, "the silenced members are freed");
    assert_eq!(&buf[..3], b"abc");
    // A failure without the skip still posts every member's CQE.
    push(
        &mut e,
        &[
            opcode::Read::new(types::Fd(f.as_raw_fd()), buf.as_mut_ptr(), 8)
                .offset(0)
                .build()
                .flags(Flags::IO_LINK)
                .user_data(5),
            opcode::Nop::new().build().user_data(6),
        ],
    );
    assert_eq!(poll(&mut e), vec![(5, 3, 0), (6, -libc::ECANCELED, 0)]);
}
