//! io_uring denied the way container runtimes deny it: a child process installs a seccomp
//! filter (`PR_SET_NO_NEW_PRIVS` and a BPF program built with seccompiler: no root needed)
//! that makes `io_uring_setup`, `io_uring_enter` and `io_uring_register` fail with `EPERM`
//! (Docker's default profile) or `ENOSYS`, then checks what keel says there:
//! - the raw `io_uring_setup` fails with the injected errno (the filter is in force);
//! - `ring_availability` names the cause (`Denied` or `NotInKernel`), with a message that
//!   says what to change;
//! - `RingDriver::new` on io_uring fails with that errno, and nothing is left open; the
//!   default (`Auto`) falls back to the epoll engine;
//! - an executor on a driver without a ring still runs tasks and timers, and the default
//!   driver, on the epoll engine there, waits for a descriptor's readiness.

use core::pin::pin;
use core::time::Duration;
use keel_core::{Config, Executor, Priorities, Priority, TaskAttrs, TaskError, TaskSlot, rt};
use keel_linux::flags::PollFlags;
use keel_linux::{Backend, BackendChoice, RingConfig, RingDriver, RingUnavailable, SleepDriver, ring_availability};
use std::io::Write;
use std::os::fd::AsFd;
use std::process::Command;

const CHILD_ENV: &str = "KEEL_RING_DENIED_ERRNO";

/// Makes the three io_uring syscalls of every thread fail with `errno` from now on.
fn deny_io_uring(errno: i32) {
    use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
    let rules = [libc::SYS_io_uring_setup, libc::SYS_io_uring_enter, libc::SYS_io_uring_register]
        .into_iter()
        .map(|nr| (nr, vec![]))
        .collect();
    let arch = TargetArch::try_from(std::env::consts::ARCH).expect("a seccompiler target");
    let filter =
        SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(errno as u32), arch).expect("the filter");
    let program: BpfProgram = filter.try_into().expect("the BPF program");
    seccompiler::apply_filter_all_threads(&program).expect("install the filter");
}

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
#[ignore = "the child half of the tests below: they run it in a child process"]
fn child() {
    let errno: i32 = std::env::var(CHILD_ENV).expect("run by the tests below").parse().unwrap();
    deny_io_uring(errno);
    // The filter is in force: the raw call gets the injected errno.
    let mut params = [0u8; 120]; // struct io_uring_params
    // SAFETY: io_uring_setup(entries, params) with a zeroed params block of its size.
    let r = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    assert_eq!((r, std::io::Error::last_os_error().raw_os_error()), (-1, Some(errno)));

    let sysctl: Option<u8> =
        std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok().and_then(|s| s.trim().parse().ok());
    let why = ring_availability().expect_err("io_uring is denied");
    match (errno, why) {
        (libc::ENOSYS, RingUnavailable::NotInKernel) => {}
        (libc::EPERM, RingUnavailable::Denied(e)) if sysctl.unwrap_or(0) == 0 => assert_eq!(e.raw(), libc::EPERM),
        (libc::EPERM, RingUnavailable::DisabledBySysctl { .. }) if sysctl.unwrap_or(0) > 0 => {}
        other => panic!("errno {errno} was reported as {other:?}"),
    }
    eprintln!("child: ring_availability: {why}");

    let before = open_descriptors();
    let ring_only = RingConfig { backend: BackendChoice::Ring, ..RingConfig::default() };
    let err = RingDriver::new(ring_only).err().expect("RingDriver::new on io_uring fails");
    assert_eq!(err.raw_os_error(), Some(errno), "{err}");
    assert_eq!(open_descriptors(), before, "a failed RingDriver::new left a descriptor open");
    // The default (`Auto`) falls back to the epoll engine; dropped, it leaves nothing open.
    let auto = RingDriver::new(RingConfig::default()).expect("Auto falls back to the epoll engine");
    assert_eq!(auto.backend(), Backend::Epoll);
    drop(auto);
    assert_eq!(open_descriptors(), before, "a dropped epoll-backed RingDriver left a descriptor open");

    // Tasks and timers still run on a driver without a ring.
    static SLOT: TaskSlot = TaskSlot::new();
    let ex = pin!(Executor::new(SleepDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let attrs = TaskAttrs { priority: Priorities { cpu: Priority::Normal, io: Priority::Normal }, name: "sleeper" };
    let t = ex
        .attach(SLOT.create(attrs).unwrap(), async {
            rt::sleep(Duration::from_millis(2)).await?;
            Ok::<u64, keel_core::TaskError>(7)
        })
        .unwrap();
    while ex.attached() > 0 {
        ex.run(16, Some(Duration::from_secs(5))).unwrap();
    }
    assert_eq!(ex.result(t), Ok(Some(Ok(7))));

    // The default driver (`Auto`, on the epoll engine there) performs readiness waits.
    static WAITER: TaskSlot = TaskSlot::new();
    let ex = pin!(Executor::new(RingDriver::new(RingConfig::default()).unwrap(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    let attrs = TaskAttrs { priority: Priorities { cpu: Priority::Normal, io: Priority::Normal }, name: "waiter" };
    let t = ex
        .attach(WAITER.create(attrs).unwrap(), async move {
            let ready = keel_linux::ready::poll(a.as_fd(), PollFlags::IN, Some(Duration::from_secs(5))).await;
            Ok::<u64, TaskError>(u64::from(ready.map_err(|e| TaskError::Failed(e.0 as i64))?.contains(PollFlags::IN)))
        })
        .unwrap();
    ex.run(16, Some(Duration::from_millis(1))).ok();
    b.write_all(b"x").unwrap();
    while ex.attached() > 0 {
        ex.run(16, Some(Duration::from_secs(5))).unwrap();
    }
    assert_eq!(ex.result(t), Ok(Some(Ok(1))), "the readiness wait on the epoll engine");
    eprintln!("child: ok");
}

fn run_child(errno: i32) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, errno.to_string())
        .output()
        .expect("spawn the child");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains("child: ok"), "child with errno {errno}: {}\n{stderr}", out.status);
    println!("{}", stderr.lines().filter(|l| l.starts_with("child: ring")).collect::<Vec<_>>().join("\n"));
}

#[test]
fn io_uring_denied_with_eperm_is_reported_as_denied_and_tasks_still_run() {
    run_child(libc::EPERM);
}

#[test]
fn io_uring_missing_with_enosys_is_reported_as_not_in_kernel_and_tasks_still_run() {
    run_child(libc::ENOSYS);
}
