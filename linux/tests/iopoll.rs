//! A polled ring (`RingConfig::iopoll`, iopoll rules 1-4 in `ring/config.rs`) under keel's
//! driver: the eventfd unpark is refused at creation, a buffered read is `EOPNOTSUPP`
//! (fibers and futures), an open is `EINVAL`, a deadline is `EOPNOTSUPP` before anything
//! is submitted, a timer still fires while the park spins, and an `O_DIRECT` read returns
//! its data where the device has poll queues (`EOPNOTSUPP` where it has none).

mod net_util;

use core::time::Duration;
use keel_core::{Errno, Fiber};
use keel_linux::deadline::{Deadline, FiberDeadline};
use keel_linux::fs::{self, FiberFs, File, Mode, OFlags};
use keel_linux::{RingConfig, RingDriver, UnparkMode};
use net_util::{executor_with, fattrs, run_all, task};
use std::cell::RefCell;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::rc::Rc;

const EOPNOTSUPP: Errno = Errno(libc::EOPNOTSUPP);

fn polled() -> Option<RingDriver> {
    match RingDriver::new(RingConfig { iopoll: true, ..RingConfig::default() }) {
        Ok(d) => Some(d),
        Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
            eprintln!("SKIP: {e}");
            None
        }
        Err(e) => panic!("a polled ring: {e}"),
    }
}

#[test]
fn iopoll_rule_4_an_eventfd_unpark_is_refused_at_creation() {
    let e = RingDriver::new(RingConfig { iopoll: true, unpark: UnparkMode::Eventfd, ..RingConfig::default() })
        .err()
        .expect("refused");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("UnparkMode::Auto"), "{e}");
}

#[test]
fn iopoll_rules_1_and_2_buffered_reads_opens_and_deadlines_get_typed_errors() {
    let Some(d) = polled() else { return };
    assert!(d.flags().iopoll);
    let path = std::env::temp_dir().join(format!("keel-iopoll-drv-{}", std::process::id()));
    std::fs::write(&path, vec![3u8; 8192]).unwrap();
    let buffered = Rc::new(File::from(OwnedFd::from(std::fs::File::open(&path).unwrap())));
    let direct = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(&path).ok();
    let direct = direct.map(|f| Rc::new(File::from(OwnedFd::from(f))));
    let ex = executor_with(d);
    let ex = ex.as_ref();
    let out = Rc::new(RefCell::new(Vec::new()));
    let (o, b, dr, p) = (out.clone(), buffered.clone(), direct.clone(), path.clone());
    ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
        let mut buf = [0u8; 16];
        let r = f.read(&b, &mut buf, 0).map(drop);
        o.borrow_mut().push(("fiber buffered read", r));
        let r = f.open(p.as_path(), OFlags::RDONLY, Mode::empty()).map(drop);
        o.borrow_mut().push(("fiber open", r));
        let r = f.within(Deadline::after(Duration::from_secs(5)), |f| f.nop());
        o.borrow_mut().push(("fiber deadline nop", r.map(drop)));
        let r = f.run_op(keel_linux::RingOp::nop().linked());
        o.borrow_mut().push(("fiber linked nop", r.map(drop)));
        let t0 = std::time::Instant::now();
        f.sleep(Duration::from_millis(5)).unwrap();
        assert!(t0.elapsed() >= Duration::from_millis(5), "a timer fires while the park spins");
        if let Some(dr) = dr {
            // A 4 KiB-aligned buffer for O_DIRECT.
            let mut page = vec![0u8; 8192];
            let at = page.as_ptr().align_offset(4096);
            let r = f.read(&dr, &mut page[at..at + 4096], 0);
            eprintln!("an O_DIRECT read on a polled ring here: {r:?}");
            assert!(r == Ok(4096) || r == Err(EOPNOTSUPP), "{r:?}");
        }
        0u64
    })
    .unwrap();
    let (o, b) = (out.clone(), buffered.clone());
    ex.attach(task(), async move {
        let (r, _) = fs::read(&b, Vec::with_capacity(16), 0).await;
        o.borrow_mut().push(("future buffered read", r.map(drop)));
        0u64
    })
    .unwrap();
    run_all(ex);
    let want = [
        ("fiber buffered read", Err(EOPNOTSUPP)),
        ("fiber open", Err(Errno::EINVAL)),
        ("fiber deadline nop", Err(EOPNOTSUPP)),
        ("fiber linked nop", Err(EOPNOTSUPP)),
        ("future buffered read", Err(EOPNOTSUPP)),
    ];
    let got = out.borrow().clone();
    for w in want {
        assert!(got.contains(&w), "{w:?} not in {got:?}");
    }
    std::fs::remove_file(&path).unwrap();
}
