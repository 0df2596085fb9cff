//! Errno values keel-linux returns that keel-core's `Errno` has no constant for, taken from
//! rustix (the kernel's numbers; libc stays out of everything but signals and ucontext).

use keel_core::Errno;

/// `EXDEV`: a value of another executor's ring (a registered buffer, a kept operation).
pub(crate) const EXDEV: Errno = Errno(rustix::io::Errno::XDEV.raw_os_error());
/// `EALREADY`: a cancel that found its operation already running in io-wq.
pub(crate) const EALREADY: Errno = Errno(rustix::io::Errno::ALREADY.raw_os_error());
/// `EAFNOSUPPORT`: an address family keel cannot turn into a std address.
pub(crate) const EAFNOSUPPORT: Errno = Errno(rustix::io::Errno::AFNOSUPPORT.raw_os_error());
/// `EOPNOTSUPP`: an operation a polled ring cannot carry (iopoll rule 2 in `ring/config.rs`).
pub(crate) const EOPNOTSUPP: Errno = Errno(rustix::io::Errno::OPNOTSUPP.raw_os_error());
