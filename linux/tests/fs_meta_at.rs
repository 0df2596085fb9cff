//! statx, unlinkat, renameat2 and mkdirat relative to an open directory (`fs/meta.rs`,
//! meta rules 1 and 3), fibers and futures: each call's effect, a file as the directory
//! (`ENOTDIR`), typed-flag misuse, and a directory dropped or closed while a future's
//! operation on it is in flight (its descriptor stays open until the completion is
//! reaped, so the operation resolves the right directory, and closes then).

#[path = "net_util/mod.rs"]
mod util;

use core::future::Future;
use core::task::{Context, Poll};
use keel_core::{Errno, Fiber};
use keel_linux::RingConfig;
use keel_linux::fs::{self, AtFlags, FiberFs, FiberMeta, File, Mode, OFlags, RenameFlags, StatxFlags};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use util::*;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("keel-meta-at-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn open_dir(p: &Path) -> File {
    File::from(std::os::fd::OwnedFd::from(std::fs::File::open(p).unwrap()))
}

/// What descriptor `fd` of this process names now (None: closed).
fn fd_target(fd: i32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()
}

fn names(d: &Path) -> Vec<String> {
    let mut v: Vec<_> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

#[test]
fn meta_at_a_fiber_makes_stats_renames_and_removes_relative_to_directories() {
    let (a, b) = (dir("fiber-a"), dir("fiber-b"));
    std::fs::write(a.join("f"), b"12345").unwrap();
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let (aa, bb) = (a.clone(), b.clone());
    let t = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            let da = f.open(&aa, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
            let db = f.open(&bb, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
            let st = f.statx_at(&da, "f", AtFlags::empty(), StatxFlags::SIZE).expect("statx_at");
            assert_eq!(st.stx_size, 5);
            let me = f.statx_at(&da, "", AtFlags::EMPTY_PATH, StatxFlags::MODE).expect("the directory itself");
            assert_eq!(u32::from(me.stx_mode) & 0o170000, 0o040000);
            let abs = f.statx_at(&db, aa.join("f"), AtFlags::empty(), StatxFlags::SIZE).unwrap();
            assert_eq!(abs.stx_size, 5, "an absolute path ignores the directory");
            assert_eq!(f.mkdir_at(&db, "sub", Mode::from_raw_mode(0o700)), Ok(()));
            assert_eq!(f.mkdir_at(&db, "sub", Mode::from_raw_mode(0o700)), Err(Errno(libc::EEXIST)));
            assert_eq!(f.rename_at(&da, "f", &db, "sub/g", RenameFlags::NOREPLACE), Ok(()));
            std::fs::write(aa.join("x"), b"x").unwrap();
            assert_eq!(f.rename_at(&da, "x", &db, "sub/g", RenameFlags::NOREPLACE), Err(Errno(libc::EEXIST)));
            assert_eq!(f.rename_at(&da, "x", &da, "y", RenameFlags::empty()), Ok(()), "one directory for both");
            assert_eq!(f.statx_at(&da, "f", AtFlags::empty(), StatxFlags::SIZE).err(), Some(Errno::ENOENT));
            assert_eq!(f.unlink_at(&db, "sub", AtFlags::REMOVEDIR), Err(Errno(libc::ENOTEMPTY)));
            assert_eq!(f.unlink_at(&db, "sub/g", AtFlags::empty()), Ok(()));
            assert_eq!(f.unlink_at(&db, "sub", AtFlags::REMOVEDIR), Ok(()));
            // A file is no directory to resolve against.
            let file = f.open(aa.join("y"), OFlags::RDONLY, Mode::empty()).unwrap();
            assert_eq!(f.mkdir_at(&file, "z", Mode::from_raw_mode(0o700)), Err(Errno(libc::ENOTDIR)));
            assert_eq!(f.unlink_at(&file, "z", AtFlags::empty()), Err(Errno(libc::ENOTDIR)));
            1u64
        })
        .unwrap();
    run_all(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(1))));
    assert_eq!(names(&a), ["y"]);
    assert!(names(&b).is_empty());
}

#[test]
fn meta_at_futures_make_stat_rename_and_remove_relative_to_directories() {
    let (a, b) = (dir("future-a"), dir("future-b"));
    std::fs::write(a.join("f"), vec![7u8; 4096]).unwrap();
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let (aa, bb) = (a.clone(), b.clone());
    let t = ex
        .attach(task(), async move {
            let da = fs::open(&aa, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).await.unwrap();
            let db = fs::open(&bb, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).await.unwrap();
            let st = fs::statx_at(&da, "f", AtFlags::empty(), StatxFlags::SIZE).await.expect("statx_at");
            assert_eq!(st.stx_size, 4096);
            let me = fs::statx_at(&db, "", AtFlags::EMPTY_PATH, StatxFlags::MODE).await.unwrap();
            assert_eq!(u32::from(me.stx_mode) & 0o170000, 0o040000);
            assert_eq!(fs::mkdir_at(&db, "sub", Mode::from_raw_mode(0o700)).await, Ok(()));
            assert_eq!(fs::rename_at(&da, "f", &db, "sub/f", RenameFlags::empty()).await, Ok(()));
            std::fs::write(aa.join("x"), b"x").unwrap();
            assert_eq!(fs::rename_at(&da, "x", &db, "sub/f", RenameFlags::EXCHANGE).await, Ok(()));
            assert_eq!(std::fs::read(bb.join("sub/f")).unwrap(), b"x", "exchanged");
            assert_eq!(fs::unlink_at(&db, "sub", AtFlags::REMOVEDIR).await, Err(Errno(libc::ENOTEMPTY)));
            assert_eq!(fs::unlink_at(&db, "sub/f", AtFlags::empty()).await, Ok(()));
            assert_eq!(fs::unlink_at(&db, "sub", AtFlags::REMOVEDIR).await, Ok(()));
            assert_eq!(fs::unlink_at(&db, "sub", AtFlags::REMOVEDIR).await, Err(Errno::ENOENT));
            let file = fs::open(aa.join("x"), OFlags::RDONLY, Mode::empty()).await.unwrap();
            assert_eq!(
                fs::statx_at(&file, "z", AtFlags::empty(), StatxFlags::SIZE).await.err(),
                Some(Errno(libc::ENOTDIR))
            );
            1u64
        })
        .unwrap();
    run_all(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(1))));
    assert_eq!(names(&a), ["x"]);
    assert_eq!(std::fs::metadata(a.join("x")).unwrap().len(), 4096);
    assert!(names(&b).is_empty());
}

/// Meta rules 1-2 in the `_at` forms: a flag unlinkat(2) does not take, or a path holding a
/// NUL, is `EINVAL` before anything is submitted (fibers and futures).
#[test]
fn meta_at_bad_flags_or_a_nul_in_a_path_are_einval() {
    let d = dir("bad");
    std::fs::write(d.join("f"), b"").unwrap();
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let (d1, d2) = (open_dir(&d), open_dir(&d));
    let t1 = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            assert_eq!(f.unlink_at(&d1, "f", AtFlags::SYMLINK_NOFOLLOW), Err(Errno::EINVAL));
            assert_eq!(f.mkdir_at(&d1, "a\0b", Mode::empty()), Err(Errno::EINVAL));
            assert_eq!(f.rename_at(&d1, "f", &d1, "b\0", RenameFlags::empty()), Err(Errno::EINVAL));
            assert_eq!(f.statx_at(&d1, "f\0", AtFlags::empty(), StatxFlags::SIZE).err(), Some(Errno::EINVAL));
            1u64
        })
        .unwrap();
    let t2 = ex
        .attach(task(), async move {
            assert_eq!(fs::unlink_at(&d2, "f", AtFlags::EMPTY_PATH).await, Err(Errno::EINVAL));
            assert_eq!(fs::rename_at(&d2, "f\0", &d2, "g", RenameFlags::empty()).await, Err(Errno::EINVAL));
            assert_eq!(fs::mkdir_at(&d2, "\0", Mode::empty()).await, Err(Errno::EINVAL));
            1u64
        })
        .unwrap();
    run_all(ex);
    assert_eq!(ex.result(t1), Ok(Some(Ok(1))));
    assert_eq!(ex.result(t2), Ok(Some(Ok(1))));
    assert_eq!(names(&d), ["f"], "nothing was unlinked or made");
}

/// Meta rule 3: a future's operation holds its directories. Polled until submitted, the
/// future is dropped and so is every `File` of the directories; their descriptors stay open
/// (a file opened now gets another number) until the executor reaps the completion, the
/// rename happened whole between those directories or not at all; then they close.
#[test]
fn meta_at_a_directory_dropped_under_a_dropped_future_stays_open_until_the_completion() {
    let (a, b) = (dir("drop-a"), dir("drop-b"));
    std::fs::write(a.join("f"), b"moved").unwrap();
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let fds = Rc::new(RefCell::new((0, 0)));
    let (seen, aa, bb) = (fds.clone(), a.clone(), b.clone());
    let t = ex
        .attach(task(), async move {
            let (da, db) = (open_dir(&aa), open_dir(&bb));
            *seen.borrow_mut() = (da.fd(), db.fd());
            let mut op = Box::pin(fs::rename_at(&da, "f", &db, "g", RenameFlags::NOREPLACE));
            core::future::poll_fn(|cx: &mut Context<'_>| {
                assert!(op.as_mut().poll(cx).is_pending(), "submitted, not reaped");
                Poll::Ready(())
            })
            .await;
            drop(op);
            drop((da, db));
            // Nothing reaped yet (no run in between): both numbers still name the directories.
            let (fa, fb) = *seen.borrow();
            assert_eq!(fd_target(fa).as_deref(), Some(aa.as_path()));
            assert_eq!(fd_target(fb).as_deref(), Some(bb.as_path()));
            let other = std::fs::File::open(aa.parent().unwrap()).unwrap();
            use std::os::fd::AsRawFd;
            assert!(other.as_raw_fd() != fa && other.as_raw_fd() != fb, "no number reused");
            1u64
        })
        .unwrap();
    run_all(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(1))));
    // The abandoned operation was cancelled (its slot does so) or had run: whole, and only
    // between the two directories it named.
    let (na, nb) = (names(&a), names(&b));
    assert!(na == ["f"] && nb.is_empty() || na.is_empty() && nb == ["g"], "{na:?} {nb:?}");
    eprintln!("meta_at: the abandoned rename {}", if nb.is_empty() { "was cancelled" } else { "ran" });
    let (fa, fb) = *fds.borrow();
    assert_ne!(fd_target(fa).as_deref(), Some(a.as_path()), "closed once the completion was reaped");
    assert_ne!(fd_target(fb).as_deref(), Some(b.as_path()));
}

/// Fd rule 3 with meta rule 3: a future's `unlink_at` polled until submitted and dropped,
/// then `close` on its directory (which cancels the directory's operations): the
/// descriptor is closed once the abandoned operation's completion is reaped, and the
/// executor drains.
#[test]
fn meta_at_close_of_a_directory_under_an_abandoned_operation_closes_it_after_the_operation() {
    let d = dir("close");
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let out = Rc::new(RefCell::new(Vec::new()));
    let (o, dd) = (out.clone(), d.clone());
    ex.attach(task(), async move {
        for i in 0..16 {
            let name = format!("f{i}");
            std::fs::write(dd.join(&name), b"").unwrap();
            let dir = open_dir(&dd);
            let fd = dir.fd();
            let mut op = Box::pin(fs::unlink_at(&dir, name.clone(), AtFlags::empty()));
            core::future::poll_fn(|cx: &mut Context<'_>| {
                let _ = op.as_mut().poll(cx);
                Poll::Ready(())
            })
            .await;
            drop(op);
            let closed = fs::close(dir).await;
            o.borrow_mut().push((name, closed, fd));
        }
        0u64
    })
    .unwrap();
    run_all(ex);
    let out = out.borrow();
    assert_eq!(out.len(), 16);
    for (name, closed, fd) in out.iter() {
        assert!(closed.is_ok() || *closed == Err(Errno::ECANCELED), "{name}: {closed:?}");
        assert_ne!(fd_target(*fd).as_deref(), Some(d.as_path()), "{name}: the directory was closed");
    }
}
