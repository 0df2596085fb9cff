//! statx, unlinkat, renameat2 and mkdirat through the ring (`fs/meta.rs`), fibers and
//! futures: each call's effect on the filesystem, typed-flag misuse, a future dropped in
//! flight and a cancelled task.

#[path = "net_util/mod.rs"]
mod util;

use core::future::Future;
use core::task::{Context, Poll};
use keel_core::{Errno, Fiber, rt};
use keel_linux::RingConfig;
use keel_linux::fs::{self, AtFlags, FiberFs, FiberMeta, Mode, OFlags, RenameFlags, StatxFlags};
use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use util::*;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("keel-meta-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn meta_a_fiber_makes_stats_renames_and_removes() {
    let d = dir("fiber");
    std::fs::write(d.join("f"), b"12345").unwrap();
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let dd = d.clone();
    let t = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            let st = f.statx(dd.join("f"), AtFlags::empty(), StatxFlags::BASIC_STATS).expect("statx");
            assert_eq!(st.stx_size, 5);
            let file = f.open(dd.join("f"), OFlags::RDONLY, Mode::empty()).unwrap();
            let fst = f.fstatx(&file, StatxFlags::BASIC_STATS).expect("fstatx");
            assert_eq!((fst.stx_size, fst.stx_ino), (5, st.stx_ino), "the same file");
            assert!(StatxFlags::from_bits_retain(st.stx_mask).contains(StatxFlags::SIZE));
            assert_eq!(f.mkdir(dd.join("sub"), Mode::from_raw_mode(0o750)), Ok(()));
            assert_eq!(f.mkdir(dd.join("sub"), Mode::from_raw_mode(0o750)), Err(Errno(libc::EEXIST)));
            let st = f.statx(dd.join("sub"), AtFlags::empty(), StatxFlags::MODE).unwrap();
            assert_eq!(u32::from(st.stx_mode) & 0o170000, 0o040000, "a directory");
            std::fs::write(dd.join("g"), b"x").unwrap();
            assert_eq!(f.rename(dd.join("f"), dd.join("g"), RenameFlags::NOREPLACE), Err(Errno(libc::EEXIST)));
            assert_eq!(f.rename(dd.join("f"), dd.join("h"), RenameFlags::empty()), Ok(()));
            assert_eq!(f.statx(dd.join("f"), AtFlags::empty(), StatxFlags::SIZE).err(), Some(Errno::ENOENT));
            assert_eq!(f.unlink(dd.join("h"), AtFlags::empty()), Ok(()));
            assert_eq!(f.unlink(dd.join("sub"), AtFlags::empty()), Err(Errno(libc::EISDIR)));
            assert_eq!(f.unlink(dd.join("sub"), AtFlags::REMOVEDIR), Ok(()));
            1u64
        })
        .unwrap();
    run_all(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(1))));
    let mut left: Vec<_> = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name()).collect();
    left.sort();
    assert_eq!(left, ["g"]);
}

#[test]
fn meta_futures_make_stat_rename_and_remove() {
    let d = dir("future");
    std::fs::write(d.join("f"), vec![7u8; 4096]).unwrap();
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let dd = d.clone();
    let t = ex
        .attach(task(), async move {
            let st = fs::statx(dd.join("f"), AtFlags::empty(), StatxFlags::SIZE).await.expect("statx");
            assert_eq!(st.stx_size, 4096);
            let file = fs::open(dd.join("f"), OFlags::RDONLY, Mode::empty()).await.unwrap();
            assert_eq!(fs::fstatx(&file, StatxFlags::SIZE).await.map(|s| s.stx_size), Ok(4096));
            assert_eq!(fs::mkdir(dd.join("sub"), Mode::from_raw_mode(0o700)).await, Ok(()));
            assert_eq!(fs::rename(dd.join("f"), dd.join("sub/f"), RenameFlags::empty()).await, Ok(()));
            std::fs::write(dd.join("x"), b"x").unwrap();
            assert_eq!(fs::rename(dd.join("x"), dd.join("sub/f"), RenameFlags::EXCHANGE).await, Ok(()));
            assert_eq!(std::fs::read(dd.join("sub/f")).unwrap(), b"x", "exchanged");
            assert_eq!(fs::unlink(dd.join("sub"), AtFlags::REMOVEDIR).await, Err(Errno(libc::ENOTEMPTY)));
            assert_eq!(fs::unlink(dd.join("sub/f"), AtFlags::empty()).await, Ok(()));
            assert_eq!(fs::unlink(dd.join("sub"), AtFlags::REMOVEDIR).await, Ok(()));
            assert_eq!(fs::unlink(dd.join("sub"), AtFlags::REMOVEDIR).await, Err(Errno::ENOENT));
            1u64
        })
        .unwrap();
    run_all(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(1))));
    assert_eq!(std::fs::metadata(d.join("x")).unwrap().len(), 4096);
}

/// Meta rules 1-2: a flag unlinkat(2) does not take, or a path holding a NUL, is `EINVAL`
/// before anything is submitted (fibers and futures).
#[test]
fn meta_bad_flags_or_a_nul_in_a_path_are_einval() {
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let d = dir("bad");
    std::fs::write(d.join("f"), b"").unwrap();
    let (d1, d2) = (d.clone(), d.clone());
    let t1 = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            assert_eq!(f.unlink(d1.join("f"), AtFlags::SYMLINK_NOFOLLOW), Err(Errno::EINVAL));
            assert_eq!(f.unlink(d1.join("f"), AtFlags::REMOVEDIR | AtFlags::EMPTY_PATH), Err(Errno::EINVAL));
            assert_eq!(f.mkdir("a\0b", Mode::empty()), Err(Errno::EINVAL));
            assert_eq!(f.rename("a", "b\0", RenameFlags::empty()), Err(Errno::EINVAL));
            1u64
        })
        .unwrap();
    let t2 = ex
        .attach(task(), async move {
            assert_eq!(fs::unlink(d2.join("f"), AtFlags::SYMLINK_FOLLOW).await, Err(Errno::EINVAL));
            assert_eq!(fs::statx("x\0", AtFlags::empty(), StatxFlags::SIZE).await.err(), Some(Errno::EINVAL));
            1u64
        })
        .unwrap();
    run_all(ex);
    assert_eq!(ex.result(t1), Ok(Some(Ok(1))));
    assert_eq!(ex.result(t2), Ok(Some(Ok(1))));
    assert!(d.join("f").exists(), "nothing was unlinked");
}

/// Meta rule 3: futures polled until their operation is submitted, then dropped; the
/// executor drains them (no slot left in flight) and the filesystem shows each either done
/// or not, never half.
#[test]
fn meta_futures_dropped_in_flight_are_drained() {
    let d = dir("drop");
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let out = Rc::new(RefCell::new(0));
    let (o, dd) = (out.clone(), d.clone());
    ex.attach(task(), async move {
        for i in 0..32 {
            let p = dd.join(format!("d{i}"));
            let mut f = Box::pin(fs::mkdir(p.clone(), Mode::from_raw_mode(0o700)));
            let mut s = Box::pin(fs::statx(dd.clone(), AtFlags::empty(), StatxFlags::BASIC_STATS));
            core::future::poll_fn(|cx: &mut Context<'_>| {
                let _ = f.as_mut().poll(cx);
                let _ = s.as_mut().poll(cx);
                Poll::Ready(())
            })
            .await;
            drop((f, s));
            rt::yield_now().await.unwrap();
        }
        *o.borrow_mut() = 1;
        0u64
    })
    .unwrap();
    run_all(ex);
    assert_eq!(*out.borrow(), 1);
    for e in std::fs::read_dir(&d).unwrap() {
        assert!(e.unwrap().file_type().unwrap().is_dir(), "only whole directories");
    }
}

/// Meta rule 4: a fiber cancelled while its statx is in flight gets the operation's own
/// result (done or `ECANCELED`), and the executor drains.
#[test]
fn meta_a_cancelled_fiber_gets_its_operations_own_result() {
    let d = dir("cancel");
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let (s, dd) = (seen.clone(), d.clone());
    let t = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            for _ in 0..64 {
                let r = f.statx(&dd, AtFlags::empty(), StatxFlags::BASIC_STATS).map(|st| st.stx_mode != 0);
                s.borrow_mut().push(r);
                if f.is_cancelled() {
                    break;
                }
            }
            0u64
        })
        .unwrap();
    let _ = ex.run(1, Some(core::time::Duration::ZERO));
    let _ = ex.cancel(t);
    run_all(ex);
    let seen = seen.borrow();
    assert!(!seen.is_empty());
    for r in seen.iter() {
        assert!(matches!(r, Ok(true) | Err(Errno::ECANCELED)), "{r:?}");
    }
}
