//! Choosing the ring driver's backend (chooser rules in `ring/choose.rs`). Run twice by
//! `make test`: as a plain test (io_uring allowed here), and under `deny_io_uring` with
//! `EPERM` and with `ENOSYS` (`KEEL_IO_URING_DENIED` names the errno), where `Auto` must
//! fall back to the epoll engine, say so on its log line, and refuse ring-only features
//! with typed errors.

use core::pin::pin;
use keel_core::{Config, Executor, Fiber, FiberAttrs, RegionStacks, TaskAttrs, TaskHandle, TaskSlot};
use keel_linux::fs::FiberFs;
use keel_linux::{Backend, BackendChoice, RingConfig, RingDriver, RingOp, ring_availability};
use std::sync::Mutex;

/// The errno `deny_io_uring` injects, when run under it.
fn denied() -> Option<i32> {
    match std::env::var("KEEL_IO_URING_DENIED").ok()?.as_str() {
        "EPERM" => Some(libc::EPERM),
        "EACCES" => Some(libc::EACCES),
        "ENOSYS" => Some(libc::ENOSYS),
        other => panic!("KEEL_IO_URING_DENIED={other}"),
    }
}

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[cfg(feature = "log")]
struct Capture;

#[cfg(feature = "log")]
impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        LINES.lock().unwrap().push(format!("{} {}", record.target(), record.args()));
    }
    fn flush(&self) {}
}

fn capture_log() {
    #[cfg(feature = "log")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            log::set_logger(&Capture).unwrap();
            log::set_max_level(log::LevelFilter::Info);
        });
    }
}

/// The backend lines logged since the last call.
fn backend_lines() -> Vec<String> {
    let mut lines = LINES.lock().unwrap();
    let out = lines.iter().filter(|l| l.contains("ring driver on")).cloned().collect();
    lines.clear();
    out
}

fn task() -> TaskHandle {
    let s: &'static TaskSlot<1024> = Box::leak(Box::new(TaskSlot::new()));
    s.create(TaskAttrs::default()).unwrap()
}

fn stacks() -> RegionStacks {
    RegionStacks::new(Vec::leak(vec![0u8; 2 * 68 * 1024 + 64]), 64 * 1024, 4096).unwrap()
}

fn driver(backend: BackendChoice) -> std::io::Result<RingDriver> {
    RingDriver::new(RingConfig { backend, ..RingConfig::default() })
}

/// A NOP and a file write and read through a fiber on `d`: the driver performs work.
fn runs_io(d: RingDriver) {
    let ex = pin!(Executor::with_stacks(d, stacks(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let dir = std::env::temp_dir().join(format!("keel-backend-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = std::ffi::CString::new(dir.join("f").to_str().unwrap()).unwrap();
    let t = ex
        .attach_fiber(task(), FiberAttrs::default(), move |f: &mut Fiber| {
            f.nop().unwrap();
            let file = f
                .open(
                    path.as_c_str(),
                    keel_linux::fs::OFlags::CREATE | keel_linux::fs::OFlags::RDWR | keel_linux::fs::OFlags::TRUNC,
                    keel_linux::fs::Mode::from_raw_mode(0o600),
                )
                .unwrap();
            assert_eq!(f.write(&file, b"backend", 0), Ok(7));
            let mut buf = [0u8; 16];
            let n = f.read(&file, &mut buf, 0).unwrap() as usize;
            f.close(file).unwrap();
            u64::from(&buf[..n] == b"backend")
        })
        .unwrap();
    while ex.attached() > 0 {
        ex.run(16, Some(core::time::Duration::from_secs(5))).unwrap();
    }
    assert_eq!(ex.result(t), Ok(Some(Ok(1))), "the fiber's file round trip");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn auto_uses_io_uring_where_allowed_and_the_epoll_engine_where_denied() {
    capture_log();
    let d = driver(BackendChoice::Auto).expect("an Auto driver is made wherever either backend works");
    let forced = std::env::var("KEEL_DRIVER").ok();
    let want = match (denied(), forced.as_deref()) {
        (Some(_), _) | (None, Some("epoll")) => Backend::Epoll,
        (None, _) if ring_availability().is_ok() => Backend::Ring,
        (None, _) => Backend::Epoll,
    };
    assert_eq!(d.backend(), want);
    if cfg!(feature = "log") {
        let lines = backend_lines();
        assert_eq!(lines.len(), 1, "one line says which backend: {lines:?}");
        assert!(lines[0].contains(if want == Backend::Epoll { "epoll" } else { "io_uring" }), "{lines:?}");
        if denied().is_some() {
            assert!(lines[0].contains("unavailable"), "the line says why io_uring was not used: {lines:?}");
        }
    } else {
        println!("SKIPPED the log line check: built without keel-linux's `log` feature (the denied run has it)");
    }
    runs_io(d);
}

#[test]
fn forcing_epoll_never_touches_io_uring_and_performs_the_same_operations() {
    let d = driver(BackendChoice::Epoll).unwrap();
    assert_eq!(d.backend(), Backend::Epoll);
    runs_io(d);
}

#[test]
fn forcing_the_ring_where_io_uring_is_denied_fails_with_the_errno() {
    match (denied(), driver(BackendChoice::Ring)) {
        (Some(errno), Err(e)) => assert_eq!(e.raw_os_error(), Some(errno), "{e}"),
        (Some(_), Ok(_)) => panic!("a Ring driver was made with io_uring denied"),
        (None, Ok(d)) => assert_eq!(d.backend(), Backend::Ring),
        (None, Err(e)) => println!("SKIPPED: io_uring is unavailable here ({e})"),
    }
}

#[test]
fn ring_only_settings_are_refused_on_the_epoll_engine_with_a_typed_error() {
    let cases: [(&str, RingConfig); 4] = [
        ("registered_buffers", RingConfig { registered_buffers: 2, ..RingConfig::default() }),
        ("registered_files", RingConfig { registered_files: 2, ..RingConfig::default() }),
        ("iopoll", RingConfig { iopoll: true, ..RingConfig::default() }),
        ("iowq_max_workers", RingConfig { iowq_max_workers: [1, 1], ..RingConfig::default() }),
    ];
    for (name, cfg) in cases {
        let e = RingDriver::new(RingConfig { backend: BackendChoice::Epoll, ..cfg }).err().expect(name);
        assert_eq!(e.kind(), std::io::ErrorKind::Unsupported, "{name}: {e}");
        assert!(e.to_string().contains(name), "the error names the setting: {e}");
    }
    let mut d = driver(BackendChoice::Epoll).unwrap();
    let e = d.enable_provided_buffers(8, 64).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::Unsupported, "{e}");
}

/// A configuration that contradicts itself is the caller's mistake whichever backend runs
/// it: `InvalidInput` on both, checked before a backend is chosen (on the epoll engine a
/// ring-only setting in it would otherwise be refused first, as `Unsupported`).
#[test]
fn a_configurations_own_mistakes_are_invalid_input_on_both_backends() {
    let cases: [(&str, RingConfig); 3] = [
        ("must be at least 1", RingConfig { entries: 0, ..RingConfig::default() }),
        (
            "registered_buffer_size must be at least 1",
            RingConfig { registered_buffers: 2, registered_buffer_size: 0, ..RingConfig::default() },
        ),
        (
            "UnparkMode::Auto",
            RingConfig { iopoll: true, unpark: keel_linux::UnparkMode::Eventfd, ..RingConfig::default() },
        ),
    ];
    for backend in [BackendChoice::Ring, BackendChoice::Epoll, BackendChoice::Auto] {
        for (says, cfg) in &cases {
            let e = RingDriver::new(RingConfig { backend, ..*cfg }).err().expect(says);
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{backend:?}: {e}");
            assert!(e.to_string().contains(says), "{backend:?}: {e}");
        }
    }
}

#[test]
fn a_ring_only_operation_completes_with_eopnotsupp_on_the_epoll_engine() {
    let ex = pin!(Executor::with_stacks(driver(BackendChoice::Epoll).unwrap(), stacks(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let t = ex
        .attach_fiber(task(), FiberAttrs::default(), |f: &mut Fiber| {
            let mut buf = [0u8; 8];
            let e = io_uring::opcode::ReadFixed::new(io_uring::types::Fd(0), buf.as_mut_ptr(), 8, 0).build();
            // SAFETY: `buf` outlives `run_op`, which returns after the completion.
            let r = f.run_op(unsafe { RingOp::from_entry(e) });
            u64::from(r == Err(keel_core::Errno(libc::EOPNOTSUPP)))
        })
        .unwrap();
    while ex.attached() > 0 {
        ex.run(16, Some(core::time::Duration::from_secs(5))).unwrap();
    }
    assert_eq!(ex.result(t), Ok(Some(Ok(1))), "READ_FIXED is not performed by the engine");
}
