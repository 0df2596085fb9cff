use super::*;
use io_uring::{opcode, types};
use squeue::Flags;
use types::CancelBuilder;

#[test]
fn cancel_by_user_data_of_a_waiting_op_a_timer_and_of_nothing() {
    let mut e = engine(0);
    let (a, _b) = socketpair(libc::SOCK_STREAM);
    let mut buf = [0u8; 4];
    let ts = ms(60_000);
    push(
        &mut e,
        &[
            opcode::Recv::new(types::Fd(a.as_raw_fd()), buf.as_mut_ptr(), 4).build().user_data(1),
            opcode::Timeout::new(&*ts).build().user_data(2),
        ],
    );
    assert_eq!(poll(&mut e), vec![]);
    push(
        &mut e,
        &[
            opcode::AsyncCancel::new(1).build().user_data(10),
            opcode::AsyncCancel::new(2).build().user_data(11),
            opcode::AsyncCancel::new(99).build().user_data(12),
        ],
    );
    let c = -libc::ECANCELED;
    assert_eq!(poll(&mut e), vec![(1, c, 0), (10, 0, 0), (2, c, 0), (11, 0, 0), (12, -libc::ENOENT, 0)]);
    assert_eq!(e.in_flight(), 0);
}

#[test]
fn cancel_of_a_chained_op_cancels_it_and_its_successors_in_chain_order() {
    let mut e = engine(0);
    let (a, b) = socketpair(libc::SOCK_STREAM);
    let mut buf = [0u8; 4];
    push(
        &mut e,
        &[
            opcode::Recv::new(types::Fd(a.as_raw_fd()), buf.as_mut_ptr(), 4).build().flags(Flags::IO_LINK).user_data(1),
            opcode::Nop::new().build().flags(Flags::IO_LINK).user_data(2),
            opcode::Nop::new().build().user_data(3),
        ],
    );
    assert_eq!(poll(&mut e), vec![]);
    push(&mut e, &[opcode::AsyncCancel::new(2).build().user_data(10)]);
    assert_eq!(poll(&mut e), vec![(10, 0, 0)], "found; its CQE waits for its turn");
    write_all(&b, b"head");
    let c = -libc::ECANCELED;
    assert_eq!(wait(&mut e, 3), vec![(1, 4, 0), (2, c, 0), (3, c, 0)], "the head runs, the rest in order");
}

#[test]
fn cancel_any_and_by_descriptor_count_what_they_cancelled() {
    let mut e = engine(0);
    let (a, _b) = socketpair(libc::SOCK_STREAM);
    let (r, _w) = pipe();
    let mut buf = [0u8; 4];
    let mut buf2 = [0u8; 4];
    push(
        &mut e,
        &[
            opcode::Recv::new(types::Fd(a.as_raw_fd()), buf.as_mut_ptr(), 4).build().user_data(1),
            opcode::PollAdd::new(types::Fd(a.as_raw_fd()), libc::POLLIN as u32).build().user_data(2),
            opcode::Read::new(types::Fd(r.as_raw_fd()), buf2.as_mut_ptr(), 4).build().user_data(3),
        ],
    );
    assert_eq!(poll(&mut e), vec![]);
    push(&mut e, &[opcode::AsyncCancel2::new(CancelBuilder::fd(types::Fd(a.as_raw_fd())).all()).build().user_data(10)]);
    let c = -libc::ECANCELED;
    assert_eq!(poll(&mut e), vec![(1, c, 0), (2, c, 0), (10, 2, 0)]);
    push(&mut e, &[opcode::AsyncCancel2::new(CancelBuilder::any()).build().user_data(11)]);
    assert_eq!(poll(&mut e), vec![(3, c, 0), (11, 1, 0)]);
    push(&mut e, &[opcode::AsyncCancel2::new(CancelBuilder::any()).build().user_data(12)]);
    assert_eq!(poll(&mut e), vec![(12, 0, 0)], "ANY with nothing in flight counts 0");
}

/// A FIFO whose open for reading blocks a pool thread until `unblock` opens its writer.
pub(super) struct Blocker {
    path: std::ffi::CString,
    dir: std::path::PathBuf,
}

impl Blocker {
    pub(super) fn new(name: &str) -> Blocker {
        let dir = tempdir(name);
        let path = std::ffi::CString::new(dir.join("fifo").to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        Blocker { path, dir }
    }

    pub(super) fn open_sqe(&self, ud: u64) -> squeue::Entry {
        opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), self.path.as_ptr())
            .flags(libc::O_RDONLY | libc::O_CLOEXEC)
            .build()
            .user_data(ud)
    }

    pub(super) fn path_string(&self) -> String {
        self.path.to_str().unwrap().to_owned()
    }

    /// Opens the writer (the blocked open then returns), returns it.
    pub(super) fn unblock(&self) -> OwnedFd {
        // SAFETY: a NUL-terminated path; O_NONBLOCK so this never waits (ENXIO with no reader).
        let fd = unsafe { libc::open(self.path.as_ptr(), libc::O_WRONLY | libc::O_NONBLOCK | libc::O_CLOEXEC) };
        assert!(fd >= 0, "no reader has the FIFO open yet");
        // SAFETY: just opened.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }
}

impl Drop for Blocker {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits until the pool runs `n` jobs.
pub(super) fn pool_running(e: &Engine, n: usize) {
    for _ in 0..10_000 {
        if e.pool.as_ref().unwrap().running() >= n {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    panic!("the pool did not start {n} jobs within 10 s");
}

#[test]
fn cancel_of_a_queued_pool_job_and_of_a_running_one() {
    let mut e = engine(1);
    let b = Blocker::new("cancelpool");
    let f = std::fs::File::open("/proc/self/exe").unwrap();
    push(&mut e, &[b.open_sqe(1), opcode::Fsync::new(types::Fd(f.as_raw_fd())).build().user_data(2)]);
    assert_eq!(poll(&mut e), vec![]);
    pool_running(&e, 1);
    push(
        &mut e,
        &[opcode::AsyncCancel::new(2).build().user_data(10), opcode::AsyncCancel::new(1).build().user_data(11)],
    );
    assert_eq!(poll(&mut e), vec![(2, -libc::ECANCELED, 0), (10, 0, 0), (11, -libc::EALREADY, 0)]);
    let _w = b.unblock();
    let got = wait(&mut e, 1);
    assert!(got.len() == 1 && got[0].0 == 1 && got[0].1 >= 0, "the running open completes with its fd: {got:?}");
    // SAFETY: the open's descriptor is ours.
    drop(unsafe { OwnedFd::from_raw_fd(got[0].1) });
}

#[test]
fn sync_cancel_fd_ends_what_waits_on_the_descriptor() {
    let mut e = engine(0);
    let (a, _b) = socketpair(libc::SOCK_STREAM);
    let (r, _w) = pipe();
    let mut buf = [0u8; 4];
    let mut buf2 = [0u8; 4];
    push(
        &mut e,
        &[
            opcode::Recv::new(types::Fd(a.as_raw_fd()), buf.as_mut_ptr(), 4).build().user_data(1),
            opcode::Read::new(types::Fd(r.as_raw_fd()), buf2.as_mut_ptr(), 4).build().user_data(2),
        ],
    );
    assert_eq!(poll(&mut e), vec![]);
    e.sync_cancel_fd(a.as_raw_fd(), std::time::Duration::from_millis(100));
    assert_eq!(take(&mut e), vec![(1, -libc::ECANCELED, 0)]);
    assert_eq!(e.in_flight(), 1);
}

#[test]
fn cancel_after_completion_but_before_the_reap_finds_nothing() {
    let mut e = engine(0);
    push(&mut e, &[opcode::Nop::new().build().user_data(1)]);
    e.enter(0, None).unwrap();
    push(&mut e, &[opcode::AsyncCancel::new(1).build().user_data(2)]);
    assert_eq!(poll(&mut e), vec![(1, 0, 0), (2, -libc::ENOENT, 0)], "the completion stays, once");
}

#[test]
fn cancel_all_by_user_data_counts_every_match_and_a_link_timer_is_never_matched() {
    let mut e = engine(0);
    let (a, _b) = socketpair(libc::SOCK_STREAM);
    let (mut x, mut y) = ([0u8; 4], [0u8; 4]);
    let ts = ms(60_000);
    push(
        &mut e,
        &[
            opcode::Recv::new(types::Fd(a.as_raw_fd()), x.as_mut_ptr(), 4).build().flags(Flags::IO_LINK).user_data(5),
            opcode::LinkTimeout::new(&*ts).build().user_data(5),
            opcode::Recv::new(types::Fd(a.as_raw_fd()), y.as_mut_ptr(), 4).build().user_data(5),
        ],
    );
    assert_eq!(poll(&mut e), vec![]);
    push(&mut e, &[opcode::AsyncCancel2::new(CancelBuilder::user_data(5).all()).build().user_data(9)]);
    let c = -libc::ECANCELED;
    assert_eq!(poll(&mut e), vec![(5, c, 0), (5, c, 0), (5, c, 0), (9, 2, 0)], "two ops and the first's timer");
    assert_eq!(e.in_flight(), 0);
}

#[test]
fn engine_rule_6_a_cancel_finds_what_already_completed_by_time_or_readiness_done() {
    let mut e = engine(0);
    let (a, b) = socketpair(libc::SOCK_STREAM);
    let (c, _d) = socketpair(libc::SOCK_STREAM);
    let (mut x, mut y) = ([0u8; 4], [0u8; 4]);
    let ts = ms(5);
    push(
        &mut e,
        &[
            opcode::Recv::new(types::Fd(a.as_raw_fd()), x.as_mut_ptr(), 4).build().user_data(1),
            opcode::Recv::new(types::Fd(c.as_raw_fd()), y.as_mut_ptr(), 4).build().flags(Flags::IO_LINK).user_data(2),
            opcode::LinkTimeout::new(&*ts).build().user_data(3),
        ],
    );
    assert_eq!(poll(&mut e), vec![]);
    write_all(&b, b"data");
    std::thread::sleep(std::time::Duration::from_millis(30));
    push(
        &mut e,
        &[opcode::AsyncCancel::new(1).build().user_data(10), opcode::AsyncCancel::new(2).build().user_data(11)],
    );
    let mut got = poll(&mut e);
    got.sort();
    let n = -libc::ENOENT;
    assert_eq!(got, vec![(1, 4, 0), (2, -libc::ECANCELED, 0), (3, -libc::ETIME, 0), (10, n, 0), (11, n, 0)]);
}
