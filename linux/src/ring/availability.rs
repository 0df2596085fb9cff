//! Whether this process may use io_uring, and when not, why: what a program asks before
//! it picks a driver. Docker's default seccomp profile, containerd, ChromeOS, Android and
//! many fleets switch io_uring off; there `io_uring_setup` fails with `EPERM` (a seccomp
//! filter, an LSM, or `kernel.io_uring_disabled`), `EACCES`, or `ENOSYS` (a kernel built
//! without it, or a filter that says so).
//!
//! [`ring_availability`] makes one ring of one entry and drops it (a few syscalls, once
//! per call: not for a hot path), and reads `/proc/sys/kernel/io_uring_disabled` to name
//! the sysctl when it is the cause.

use keel_core::Errno;

/// Why io_uring cannot be used here.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RingUnavailable {
    /// `kernel.io_uring_disabled` is 2 (off for everyone), or 1 and this process is not
    /// in `kernel.io_uring_group`: `io_uring_setup` failed with `errno`.
    DisabledBySysctl {
        /// The sysctl's value.
        level: u8,
        /// What `io_uring_setup` returned.
        errno: Errno,
    },
    /// `io_uring_setup` was refused with `EPERM` or `EACCES` while the sysctl allows it:
    /// a seccomp filter (a container runtime's default profile) or a security module.
    Denied(Errno),
    /// `io_uring_setup` does not exist here (`ENOSYS`): a kernel built without io_uring,
    /// or a filter that reports it missing.
    NotInKernel,
    /// Anything else (`ENOMEM`: the locked-memory limit; `EMFILE`...): io_uring exists
    /// but this ring could not be made.
    Failed(Errno),
}

impl core::fmt::Display for RingUnavailable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RingUnavailable::DisabledBySysctl { level, errno } => write!(
                f,
                "io_uring is switched off by kernel.io_uring_disabled = {level} (io_uring_setup: {errno}); \
                 set it to 0, or add this process's group to kernel.io_uring_group when it is 1, or use a driver without a ring"
            ),
            RingUnavailable::Denied(errno) => write!(
                f,
                "io_uring_setup was refused ({errno}): a seccomp filter (a container's default profile) or a security \
                 module denies io_uring; allow io_uring_setup, io_uring_enter and io_uring_register, or use a driver without a ring"
            ),
            RingUnavailable::NotInKernel => {
                write!(
                    f,
                    "io_uring_setup does not exist here (ENOSYS): a kernel without io_uring, or a filter that hides it"
                )
            }
            RingUnavailable::Failed(errno) => write!(f, "io_uring exists but a ring could not be made: {errno}"),
        }
    }
}

impl std::error::Error for RingUnavailable {}

/// `Ok` if this process can make an io_uring instance now; else why not. Makes and drops
/// a one-entry ring (see the module doc).
pub fn ring_availability() -> Result<(), RingUnavailable> {
    match io_uring::IoUring::new(1) {
        Ok(_ring) => Ok(()),
        Err(e) => Err(classify(Errno(e.raw_os_error().unwrap_or(libc::EIO)), io_uring_disabled_sysctl())),
    }
}

/// Why `io_uring_setup` failed with `errno`, given the sysctl's value (if readable).
pub(crate) fn classify(errno: Errno, sysctl: Option<u8>) -> RingUnavailable {
    match errno.raw() {
        libc::ENOSYS => RingUnavailable::NotInKernel,
        libc::EPERM | libc::EACCES => match sysctl {
            Some(level @ 1..=2) => RingUnavailable::DisabledBySysctl { level, errno },
            _ => RingUnavailable::Denied(errno),
        },
        _ => RingUnavailable::Failed(errno),
    }
}

/// `kernel.io_uring_disabled` (Linux 6.6+), `None` where the file is missing or unreadable.
pub(crate) fn io_uring_disabled_sysctl() -> Option<u8> {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_errno_gets_its_reason_and_the_sysctl_is_named_only_when_it_denies() {
        let eperm = Errno(libc::EPERM);
        assert_eq!(classify(Errno(libc::ENOSYS), Some(0)), RingUnavailable::NotInKernel);
        assert_eq!(classify(eperm, Some(0)), RingUnavailable::Denied(eperm));
        assert_eq!(classify(eperm, None), RingUnavailable::Denied(eperm));
        assert_eq!(classify(eperm, Some(2)), RingUnavailable::DisabledBySysctl { level: 2, errno: eperm });
        let eacces = Errno(libc::EACCES);
        assert_eq!(classify(eacces, Some(1)), RingUnavailable::DisabledBySysctl { level: 1, errno: eacces });
        let enomem = Errno(libc::ENOMEM);
        assert_eq!(classify(enomem, Some(2)), RingUnavailable::Failed(enomem));
        assert!(RingUnavailable::Denied(eperm).to_string().contains("seccomp"));
    }

    #[test]
    fn io_uring_is_available_on_this_machine_or_the_reason_is_printed() {
        match ring_availability() {
            Ok(()) => {}
            Err(why) => eprintln!("SKIPPED: io_uring is not available here: {why}"),
        }
        // Whatever the answer, asking twice gives the same one (no state is left behind).
        assert_eq!(ring_availability().is_ok(), ring_availability().is_ok());
    }
}
