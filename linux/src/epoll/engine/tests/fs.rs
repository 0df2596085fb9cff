use super::cancel::{Blocker, pool_running};
use super::*;
use io_uring::{opcode, types};
use std::ffi::CString;

fn cpath(p: &std::path::Path) -> CString {
    CString::new(p.to_str().unwrap()).unwrap()
}

#[test]
fn file_ops_open_write_read_vectored_sync_statx_rename_unlink_mkdir_close() {
    for threads in [0, 2] {
        let mut e = engine(threads);
        let d = tempdir(&format!("fsops{threads}"));
        let (f, g, sub) = (cpath(&d.join("f")), cpath(&d.join("g")), cpath(&d.join("sub")));
        let cwd = types::Fd(libc::AT_FDCWD);
        push(
            &mut e,
            &[opcode::OpenAt::new(cwd, f.as_ptr())
                .flags(libc::O_CREAT | libc::O_RDWR | libc::O_CLOEXEC)
                .mode(0o600)
                .build()
                .user_data(1)],
        );
        let got = wait(&mut e, 1);
        let fd = got[0].1;
        assert!(got[0].0 == 1 && fd >= 0, "{got:?}");
        let t = types::Fd(fd);
        let (a, b) = (*b"head", *b"tail!");
        let iov = [
            libc::iovec { iov_base: a.as_ptr() as *mut _, iov_len: 4 },
            libc::iovec { iov_base: b.as_ptr() as *mut _, iov_len: 5 },
        ];
        push(
            &mut e,
            &[
                opcode::Writev::new(t, iov.as_ptr(), 2).offset(0).build().user_data(2),
                opcode::Fallocate::new(t, 4096).offset(0).build().user_data(3),
            ],
        );
        let mut got = wait(&mut e, 2);
        got.sort();
        assert_eq!(got, vec![(2, 9, 0), (3, 0, 0)]);
        let (mut x, mut y) = ([0u8; 4], [0u8; 5]);
        let riov = [
            libc::iovec { iov_base: x.as_mut_ptr().cast(), iov_len: 4 },
            libc::iovec { iov_base: y.as_mut_ptr().cast(), iov_len: 5 },
        ];
        // SAFETY: an all-zero statx is valid.
        let mut st: libc::statx = unsafe { core::mem::zeroed() };
        push(
            &mut e,
            &[
                opcode::Readv::new(t, riov.as_ptr(), 2).offset(0).build().user_data(4),
                opcode::Fsync::new(t).flags(types::FsyncFlags::DATASYNC).build().user_data(5),
                opcode::SyncFileRange::new(t, 9).build().user_data(6),
                opcode::Statx::new(t, c"".as_ptr(), (&mut st as *mut libc::statx).cast())
                    .flags(libc::AT_EMPTY_PATH)
                    .mask(libc::STATX_SIZE)
                    .build()
                    .user_data(7),
            ],
        );
        let mut got = wait(&mut e, 4);
        got.sort();
        assert_eq!(got, vec![(4, 9, 0), (5, 0, 0), (6, 0, 0), (7, 0, 0)]);
        assert_eq!((&x, &y), (b"head", b"tail!"));
        assert_eq!(st.stx_size, 4096, "fallocate grew the file and statx saw it");
        push(
            &mut e,
            &[
                opcode::RenameAt::new(cwd, f.as_ptr(), cwd, g.as_ptr()).build().user_data(8),
                opcode::MkDirAt::new(cwd, sub.as_ptr()).mode(0o700).build().user_data(9),
                opcode::Close::new(t).build().user_data(10),
            ],
        );
        let mut got = wait(&mut e, 3);
        got.sort();
        assert_eq!(got, vec![(8, 0, 0), (9, 0, 0), (10, 0, 0)]);
        assert!(d.join("g").exists() && !d.join("f").exists() && d.join("sub").is_dir());
        push(
            &mut e,
            &[
                opcode::UnlinkAt::new(cwd, g.as_ptr()).build().user_data(11),
                opcode::UnlinkAt::new(cwd, sub.as_ptr()).flags(libc::AT_REMOVEDIR).build().user_data(12),
            ],
        );
        let mut got = wait(&mut e, 2);
        got.sort();
        assert_eq!(got, vec![(11, 0, 0), (12, 0, 0)]);
        assert!(!d.join("g").exists() && !d.join("sub").exists());
        // OpenAt2 of what is gone: ENOENT.
        let how = types::OpenHow::new().flags(libc::O_RDONLY as u64);
        push(&mut e, &[opcode::OpenAt2::new(cwd, g.as_ptr(), &how).build().user_data(13)]);
        assert_eq!(wait(&mut e, 1), vec![(13, -libc::ENOENT, 0)]);
        let _ = std::fs::remove_dir_all(&d);
    }
}

#[test]
fn a_read_at_the_current_position_advances_it() {
    let mut e = engine(1);
    let d = tempdir("curpos");
    std::fs::write(d.join("f"), b"abcdef").unwrap();
    let f = std::fs::File::open(d.join("f")).unwrap();
    let (mut x, mut y) = ([0u8; 3], [0u8; 3]);
    let fd = types::Fd(f.as_raw_fd());
    push(
        &mut e,
        &[
            opcode::Read::new(fd, x.as_mut_ptr(), 3)
                .offset(u64::MAX)
                .build()
                .flags(squeue::Flags::IO_LINK)
                .user_data(1),
            opcode::Read::new(fd, y.as_mut_ptr(), 3).offset(u64::MAX).build().user_data(2),
        ],
    );
    assert_eq!(wait(&mut e, 2), vec![(1, 3, 0), (2, 3, 0)]);
    assert_eq!((&x, &y), (b"abc", b"def"));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn queued_file_work_runs_in_io_priority_order() {
    let mut e = engine(1);
    let b = Blocker::new("prio");
    let d = tempdir("prio-out");
    let out = std::fs::OpenOptions::new().create(true).append(true).open(d.join("log")).unwrap();
    let fd = types::Fd(out.as_raw_fd());
    push(&mut e, &[b.open_sqe(1)]);
    assert_eq!(poll(&mut e), vec![]);
    pool_running(&e, 1);
    // ioprio: class << 13 | level. Queued in the worst order.
    let be = |lvl: u16| (2 << 13) | lvl;
    let jobs: [(u64, u16, &[u8]); 5] =
        [(2, be(7), b"7"), (3, be(4), b"4"), (4, 0, b"n"), (5, be(0), b"0"), (6, (1 << 13) | 4, b"R")];
    let sqes: Vec<_> = jobs
        .iter()
        .map(|&(ud, prio, data)| opcode::Write::new(fd, data.as_ptr(), 1).ioprio(prio).build().user_data(ud))
        .collect();
    push(&mut e, &sqes);
    assert_eq!(poll(&mut e), vec![]);
    let _w = b.unblock();
    let got = wait(&mut e, 6);
    assert_eq!(got.len(), 6, "{got:?}");
    // SAFETY: the open's descriptor is ours.
    drop(unsafe { OwnedFd::from_raw_fd(got.iter().find(|c| c.0 == 1).unwrap().1) });
    let order: Vec<u64> = got.iter().map(|c| c.0).filter(|&u| u != 1).collect();
    assert_eq!(order, vec![6, 5, 3, 4, 2], "realtime, BE0, BE4, none (as BE4, after), BE7");
    assert_eq!(std::fs::read(d.join("log")).unwrap(), b"R04n7");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn dropping_the_engine_waits_for_its_running_job() {
    let mut e = engine(1);
    let b = Blocker::new("drop");
    push(&mut e, &[b.open_sqe(1)]);
    assert_eq!(poll(&mut e), vec![]);
    pool_running(&e, 1);
    let path = b.path_string();
    let unblocker = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(30));
        // Blocking open of the writer: returns once the pool's open of the reader has.
        std::fs::OpenOptions::new().write(true).open(path).unwrap()
    });
    drop(e);
    // The job ran to its end before the drop returned: its descriptor (the FIFO's read
    // end) is open in this process.
    let fifo = std::fs::canonicalize(b.path_string()).unwrap();
    let mut found = None;
    for ent in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        if std::fs::read_link(ent.path()).ok().as_deref() == Some(fifo.as_path()) {
            let fd: i32 = ent.file_name().to_str().unwrap().parse().unwrap();
            if fd_flags(fd) & libc::O_ACCMODE == libc::O_RDONLY {
                found = Some(fd);
            }
        }
    }
    let w = unblocker.join().unwrap();
    let fd = found.expect("the pool's open had not finished when drop returned");
    // SAFETY: the job's descriptor, which nobody else owns (its CQE was never taken).
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    drop(w);
}

#[test]
fn with_no_pool_threads_file_work_is_done_at_once() {
    let mut e = engine(0);
    let f = std::fs::File::open("/proc/self/exe").unwrap();
    let mut buf = [0u8; 4];
    push(&mut e, &[opcode::Read::new(types::Fd(f.as_raw_fd()), buf.as_mut_ptr(), 4).offset(0).build().user_data(1)]);
    assert_eq!(poll(&mut e), vec![(1, 4, 0)]);
    assert_eq!(&buf, b"\x7fELF");
    assert!(e.pool.is_none());
}

#[test]
fn pool_rule_1_threads_start_only_for_file_work() {
    let mut e = engine(3);
    let (a, b) = socketpair(libc::SOCK_STREAM);
    let mut buf = [0u8; 2];
    write_all(&b, b"hi");
    push(&mut e, &[opcode::Recv::new(types::Fd(a.as_raw_fd()), buf.as_mut_ptr(), 2).build().user_data(1)]);
    assert_eq!(wait(&mut e, 1), vec![(1, 2, 0)]);
    assert_eq!(e.pool.as_ref().unwrap().threads(), 0, "socket work started a pool thread");
    let f = std::fs::File::open("/proc/self/exe").unwrap();
    push(&mut e, &[opcode::Fsync::new(types::Fd(f.as_raw_fd())).build().user_data(2)]);
    assert_eq!(wait(&mut e, 1), vec![(2, 0, 0)]);
    assert_eq!(e.pool.as_ref().unwrap().threads(), 1);
}
