//! One-line notices: which driver or feature keel chose and why it fell back (ring set-up
//! flags, the unpark mechanism, the realtime I/O class, the clock source), an enter that
//! failed, operations a dropped driver had to leak. With the `log` feature each goes
//! through the `log` crate (target `keel`); without it nothing is written anywhere: a
//! library does not write to stderr. What a program may need to act on is also queryable
//! without logging: [`RingDriver::flags`](crate::RingDriver::flags),
//! [`RingDriver::unpark_kind`](crate::RingDriver::unpark_kind),
//! [`RingDriver::realtime_ioprio`](crate::RingDriver::realtime_ioprio),
//! [`RingDriver::cq_nodrop`](crate::RingDriver::cq_nodrop) and
//! [`Calibration::source`](crate::tsc::Calibration::source).
//!
//! Two messages bypass this on purpose, because the process ends right after them and
//! the reason would otherwise be lost: the stack-overflow report (`overflow` module doc,
//! async-signal-safe, straight to fd 2) and a failed `ucontext` call (then `abort`).

/// Logs a notice at `$level` (`warn`, `info`, ...) with the `log` feature; without it the
/// arguments are type-checked but never evaluated and nothing is written.
macro_rules! notice {
    ($level:ident, $($arg:tt)+) => {{
        #[cfg(feature = "log")]
        {
            ::log::$level!(target: "keel", $($arg)+);
        }
        #[cfg(not(feature = "log"))]
        {
            if false {
                let _ = format_args!($($arg)+);
            }
        }
    }};
}
pub(crate) use notice;

#[cfg(test)]
mod tests {
    use crate::{RingConfig, RingDriver};
    use std::process::Command;

    const CHILD_ENV: &str = "KEEL_NOTICE_CHILD";
    const CHILD_TEST: &str = "notice::tests::child_makes_a_ring_driver";

    /// Captures keel's records on stdout, where the parent looks for them.
    #[cfg(feature = "log")]
    struct ToStdout;

    #[cfg(feature = "log")]
    impl log::Log for ToStdout {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, record: &log::Record<'_>) {
            println!("LOG {} {}", record.target(), record.args());
        }
        fn flush(&self) {}
    }

    /// The child half of `notices_reach_log_or_nowhere_never_stderr`: does nothing unless
    /// run by it (`KEEL_NOTICE_CHILD` set). Makes a ring driver in a process without
    /// CAP_SYS_NICE and CAP_SYS_ADMIN, so the realtime-class notice is given.
    #[test]
    fn child_makes_a_ring_driver() {
        if std::env::var_os(CHILD_ENV).is_none() {
            return;
        }
        #[cfg(feature = "log")]
        {
            log::set_logger(&ToStdout).expect("the only logger of the child");
            log::set_max_level(log::LevelFilter::Trace);
        }
        // `KEEL_NOTICE_CHILD=epoll`: the driver on the epoll engine, which gives the notice too.
        let backend = match std::env::var(CHILD_ENV).as_deref() {
            Ok("epoll") => crate::BackendChoice::Epoll,
            _ => crate::BackendChoice::Auto,
        };
        match RingDriver::new(RingConfig { entries: 8, cq_entries: 16, slots: 8, backend, ..RingConfig::default() }) {
            Ok(driver) => println!("CHILD rt={}", driver.realtime_ioprio()),
            Err(e) => println!("CHILD no ring: {e}"),
        }
    }

    /// With the `log` feature a notice is a `log` record (target `keel`); without it,
    /// nothing: in both cases the process's stderr stays empty. Checked on a real notice
    /// path: a child process (this test binary) whose bounding set lacks CAP_SYS_NICE and
    /// CAP_SYS_ADMIN makes a ring driver, which takes the "no realtime I/O class" notice;
    /// once with the `Auto` backend, once on the epoll engine.
    #[test]
    fn notices_reach_log_or_nowhere_never_stderr() {
        for backend in ["auto", "epoll"] {
            notice_in_a_child(backend);
        }
    }

    #[allow(unsafe_code)] // `pre_exec`
    fn notice_in_a_child(backend: &str) {
        use std::os::unix::process::CommandExt;
        // Capability numbers (include/uapi/linux/capability.h).
        const CAP_SYS_ADMIN: libc::c_ulong = 21;
        const CAP_SYS_NICE: libc::c_ulong = 23;
        let mut cmd = Command::new(std::env::current_exe().expect("the test binary"));
        cmd.args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"]).env(CHILD_ENV, backend);
        // SAFETY: runs in the forked child before exec; prctl is async-signal-safe and
        // touches only the child. Failures are ignored: without CAP_SETPCAP the process
        // lacks the dropped capabilities already (the child reports what it got).
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_CAPBSET_DROP, CAP_SYS_NICE, 0, 0, 0);
                libc::prctl(libc::PR_CAPBSET_DROP, CAP_SYS_ADMIN, 0, 0, 0);
                Ok(())
            })
        };
        let out = cmd.output().expect("the child runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "child failed: {stdout}\n{stderr}");
        assert!(stderr.is_empty(), "keel wrote to stderr: {stderr:?}");
        if stdout.contains("CHILD no ring") || stdout.contains("CHILD rt=true") {
            println!(
                "SKIP the notice path did not run here (no ring, or the capabilities could not be dropped): {stdout}"
            );
            return;
        }
        assert!(stdout.contains("CHILD rt=false"), "the child did not report: {stdout}");
        let logged = stdout.lines().any(|l| l.contains("LOG keel no CAP_SYS_NICE") && l.contains("realtime class"));
        assert_eq!(logged, cfg!(feature = "log"), "notice through log iff the feature is on: {stdout}");
    }
}
