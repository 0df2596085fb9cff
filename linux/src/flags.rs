//! Typed flags for keel-linux's calls, so a wrong combination does not compile: rustix's
//! types ([`OFlags`], [`Mode`], [`FallocateFlags`], [`AddressFamily`], [`SocketType`],
//! [`Protocol`], [`Shutdown`], [`PollFlags`], ...), re-exported here (and from `fs` and
//! `net`) so a program needs no rustix dependency of its own, of the exact version keel
//! uses; and keel's own where rustix has no type: [`SyncFileRangeFlags`] and [`SockOpt`].
//!
//! ```compile_fail,E0308
//! // Rejected: the future `open` takes `OFlags`, not libc's integers.
//! async fn body() {
//!     let _ = keel_linux::fs::open("/tmp/x", libc::O_CREAT, keel_linux::fs::Mode::empty()).await;
//! }
//! ```
//!
//! ```compile_fail,E0308
//! // Rejected: `socket` takes `AddressFamily` and `SocketType`.
//! async fn body() {
//!     use keel_linux::net::{self, AddressFamily};
//!     let _ = net::future::socket(AddressFamily::INET, libc::SOCK_STREAM, None).await;
//! }
//! ```
//!
//! The same calls with the typed values, or raw ones through [`raw`], compile:
//!
//! ```
//! async fn body() {
//!     use keel_linux::flags::raw;
//!     use keel_linux::net::{self, AddressFamily, SocketType};
//!     let _ = keel_linux::fs::open("/tmp/x", raw::oflags(libc::O_CREAT).unwrap(), keel_linux::fs::Mode::empty()).await;
//!     let _ = net::future::socket(AddressFamily::INET, SocketType::STREAM, None).await;
//!     let (ty, _) = raw::socket_type(libc::SOCK_STREAM).unwrap();
//!     let _ = net::future::socket(AddressFamily::INET, ty, None).await;
//! }
//! ```
//!
//! Raw integers (from C, from another library's constants) come in only through the
//! [`raw`] module, the escape hatch, whose conversions are checked: a bit no named flag
//! has, or a value outside the type's range, is `EINVAL` (the C API's conversions). rustix's
//! own `from_bits_retain` and `from_raw` take any value unchecked; the kernel still
//! rejects what it does not know.

pub use rustix::event::PollFlags;
pub use rustix::fs::{FallocateFlags, Mode, OFlags};
pub use rustix::net::{AddressFamily, Protocol, RecvFlags, SendFlags, Shutdown, SocketFlags, SocketType, ipproto};
/// What `open` takes as a path (`&str`, `&Path`, `&CStr`, `&CString`, ...), fibers and
/// futures alike.
pub use rustix::path::Arg as PathArg;

bitflags::bitflags! {
    /// `SYNC_FILE_RANGE_*`, see sync_file_range(2) (rustix has no type for them).
    #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
    pub struct SyncFileRangeFlags: u32 {
        /// `SYNC_FILE_RANGE_WAIT_BEFORE`: wait for writes of the range already started.
        const WAIT_BEFORE = 1;
        /// `SYNC_FILE_RANGE_WRITE`: start writing the range's dirty pages.
        const WRITE = 2;
        /// `SYNC_FILE_RANGE_WAIT_AFTER`: wait for the writes to finish.
        const WAIT_AFTER = 4;
    }
}

/// A socket option with an `int` value, as `setsockopt(fd, level, name, &value, 4)` takes
/// it: made by one of the named constructors (or [`raw::sock_opt_int`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SockOpt {
    level: i32,
    name: i32,
    value: i32,
}

const fn on(b: bool) -> i32 {
    b as i32
}

const fn clamp(bytes: u32) -> i32 {
    if bytes > i32::MAX as u32 { i32::MAX } else { bytes as i32 }
}

impl SockOpt {
    /// `SOL_SOCKET, SO_REUSEADDR`, see socket(7).
    pub const fn reuse_addr(enable: bool) -> Self {
        SockOpt { level: libc::SOL_SOCKET, name: libc::SO_REUSEADDR, value: on(enable) }
    }
    /// `SOL_SOCKET, SO_REUSEPORT`, see socket(7).
    pub const fn reuse_port(enable: bool) -> Self {
        SockOpt { level: libc::SOL_SOCKET, name: libc::SO_REUSEPORT, value: on(enable) }
    }
    /// `SOL_SOCKET, SO_KEEPALIVE`, see socket(7).
    pub const fn keep_alive(enable: bool) -> Self {
        SockOpt { level: libc::SOL_SOCKET, name: libc::SO_KEEPALIVE, value: on(enable) }
    }
    /// `SOL_SOCKET, SO_BROADCAST`, see socket(7).
    pub const fn broadcast(enable: bool) -> Self {
        SockOpt { level: libc::SOL_SOCKET, name: libc::SO_BROADCAST, value: on(enable) }
    }
    /// `SOL_SOCKET, SO_RCVBUF` (the kernel doubles it), see socket(7); above `i32::MAX`
    /// is cut to it.
    pub const fn recv_buffer_size(bytes: u32) -> Self {
        SockOpt { level: libc::SOL_SOCKET, name: libc::SO_RCVBUF, value: clamp(bytes) }
    }
    /// `SOL_SOCKET, SO_SNDBUF` (the kernel doubles it), see socket(7); above `i32::MAX`
    /// is cut to it.
    pub const fn send_buffer_size(bytes: u32) -> Self {
        SockOpt { level: libc::SOL_SOCKET, name: libc::SO_SNDBUF, value: clamp(bytes) }
    }
    /// `IPPROTO_TCP, TCP_NODELAY`, see tcp(7).
    pub const fn tcp_nodelay(enable: bool) -> Self {
        SockOpt { level: libc::IPPROTO_TCP, name: libc::TCP_NODELAY, value: on(enable) }
    }
    /// `IPPROTO_IPV6, IPV6_V6ONLY`, see ipv6(7).
    pub const fn ipv6_v6only(enable: bool) -> Self {
        SockOpt { level: libc::IPPROTO_IPV6, name: libc::IPV6_V6ONLY, value: on(enable) }
    }
    /// `(level, name, value)` as setsockopt(2) takes them.
    pub const fn to_raw(self) -> (i32, i32, i32) {
        (self.level, self.name, self.value)
    }
}

/// The escape hatch: raw integers into keel-linux's typed flags, checked. Each conversion
/// is `EINVAL` for a bit no named flag of the type has, or a value outside its range; what
/// passes is still the kernel's to refuse (an address family it does not support:
/// `EAFNOSUPPORT`). keel's C API converts its `int` arguments with these.
pub mod raw {
    use super::*;
    use bitflags::Flags;
    use keel_core::Errno;

    /// `raw` as `F` if every bit set is one of `F`'s named flags' (rustix's flag types
    /// admit every bit, so `from_bits` would not say).
    fn known<F: Flags<Bits = B>, B: bitflags::Bits>(raw: B) -> Result<F, Errno> {
        let named = F::FLAGS
            .iter()
            .filter(|f| f.is_named())
            .fold(F::empty(), |a, f| a.union(F::from_bits_retain(f.value().bits())));
        let f = F::from_bits_retain(raw);
        if named.contains(F::from_bits_retain(f.bits())) { Ok(f) } else { Err(Errno::EINVAL) }
    }

    /// `O_*` bits as [`OFlags`].
    pub fn oflags(raw: i32) -> Result<OFlags, Errno> {
        known(raw as u32)
    }

    /// A file mode (permission bits, set-id and sticky: `0o7777` at most) as [`Mode`].
    pub fn mode(raw: u32) -> Result<Mode, Errno> {
        known(raw)
    }

    /// `FALLOC_FL_*` bits as [`FallocateFlags`].
    pub fn fallocate_flags(raw: i32) -> Result<FallocateFlags, Errno> {
        known(raw as u32)
    }

    /// `SYNC_FILE_RANGE_*` bits as [`SyncFileRangeFlags`].
    pub fn sync_file_range_flags(raw: u32) -> Result<SyncFileRangeFlags, Errno> {
        SyncFileRangeFlags::from_bits(raw).ok_or(Errno::EINVAL)
    }

    /// `AF_*` (in `u16`'s range) as [`AddressFamily`].
    pub fn address_family(raw: i32) -> Result<AddressFamily, Errno> {
        u16::try_from(raw).map(AddressFamily::from_raw).map_err(|_| Errno::EINVAL)
    }

    /// socket(2)'s `type`: a `SOCK_*` type (stream, datagram, seqpacket, raw, rdm) with
    /// `SOCK_NONBLOCK` and `SOCK_CLOEXEC` bits, split into [`SocketType`] and
    /// [`SocketFlags`].
    pub fn socket_type(raw: i32) -> Result<(SocketType, SocketFlags), Errno> {
        const TYPE_MASK: i32 = 0xf;
        let ty = SocketType::from_raw((raw & TYPE_MASK) as u32);
        let known_types =
            [SocketType::STREAM, SocketType::DGRAM, SocketType::SEQPACKET, SocketType::RAW, SocketType::RDM];
        if raw < 0 || !known_types.contains(&ty) {
            return Err(Errno::EINVAL);
        }
        Ok((ty, known((raw & !TYPE_MASK) as u32)?))
    }

    /// socket(2)'s `protocol`: 0 (the family's default) is `None`.
    pub fn protocol(raw: i32) -> Result<Option<Protocol>, Errno> {
        let raw = u32::try_from(raw).map_err(|_| Errno::EINVAL)?;
        Ok(core::num::NonZeroU32::new(raw).map(Protocol::from_raw))
    }

    /// `MSG_*` bits of send(2) as [`SendFlags`].
    pub fn send_flags(raw: i32) -> Result<SendFlags, Errno> {
        known(raw as u32)
    }

    /// `MSG_*` bits of recv(2) as [`RecvFlags`].
    pub fn recv_flags(raw: i32) -> Result<RecvFlags, Errno> {
        known(raw as u32)
    }

    /// shutdown(2)'s `how` (`SHUT_RD`, `SHUT_WR`, `SHUT_RDWR`) as [`Shutdown`].
    pub fn shutdown(raw: i32) -> Result<Shutdown, Errno> {
        match raw {
            libc::SHUT_RD => Ok(Shutdown::Read),
            libc::SHUT_WR => Ok(Shutdown::Write),
            libc::SHUT_RDWR => Ok(Shutdown::Both),
            _ => Err(Errno::EINVAL),
        }
    }

    /// `POLL*` bits as [`PollFlags`] (in `u16`'s range).
    pub fn poll_flags(raw: i32) -> Result<PollFlags, Errno> {
        // `as _`: `PollFlags`' bits are `u16` or `i16` by rustix backend; 16 bits either way.
        known(u16::try_from(raw).map_err(|_| Errno::EINVAL)? as _)
    }

    /// Any `int` socket option, unchecked: the kernel refuses an unknown one (`ENOPROTOOPT`).
    pub const fn sock_opt_int(level: i32, name: i32, value: i32) -> SockOpt {
        SockOpt { level, name, value }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// Each single bit is accepted exactly when one of the listed C constants has it (a
        /// table written apart from rustix's).
        #[test]
        fn each_bit_is_known_iff_a_c_flag_has_it() {
            let o = [
                libc::O_WRONLY,
                libc::O_RDWR,
                libc::O_CREAT,
                libc::O_EXCL,
                libc::O_NOCTTY,
                libc::O_TRUNC,
                libc::O_APPEND,
                libc::O_NONBLOCK,
                libc::O_DSYNC,
                libc::O_SYNC,
                libc::O_ASYNC,
                libc::O_DIRECT,
                0o100000, // the kernel's O_LARGEFILE (glibc's libc::O_LARGEFILE is 0 on x86_64)
                libc::O_DIRECTORY,
                libc::O_NOFOLLOW,
                libc::O_NOATIME,
                libc::O_CLOEXEC,
                libc::O_PATH,
                libc::O_TMPFILE,
            ]
            .iter()
            .fold(0, |a, f| a | f);
            let msg = [
                libc::MSG_CONFIRM,
                libc::MSG_DONTROUTE,
                libc::MSG_DONTWAIT,
                libc::MSG_EOR,
                libc::MSG_MORE,
                libc::MSG_NOSIGNAL,
                libc::MSG_OOB,
            ]
            .iter()
            .fold(0, |a, f| a | f);
            let poll = [
                libc::POLLIN,
                libc::POLLPRI,
                libc::POLLOUT,
                libc::POLLRDNORM,
                libc::POLLWRNORM,
                libc::POLLRDBAND,
                libc::POLLWRBAND,
                libc::POLLERR,
                libc::POLLHUP,
                libc::POLLNVAL,
                libc::POLLRDHUP,
            ]
            .iter()
            .fold(0, |a, f| a | i32::from(*f));
            for bit in 0..31 {
                let b = 1i32 << bit;
                assert_eq!(oflags(b).is_ok(), o & b != 0, "O_ bit {bit}");
                assert_eq!(send_flags(b).is_ok(), msg & b != 0, "MSG_ bit {bit}");
                assert_eq!(poll_flags(b).is_ok(), poll & b != 0, "POLL bit {bit}");
                assert_eq!(mode(b as u32).is_ok(), b <= 0o4000, "mode bit {bit}");
            }
        }

        #[test]
        fn unknown_bits_are_einval() {
            assert_eq!(oflags(libc::O_CREAT | libc::O_RDWR), Ok(OFlags::CREATE | OFlags::RDWR));
            assert_eq!(oflags(1 << 30), Err(Errno::EINVAL));
            assert_eq!(mode(0o644), Ok(Mode::from_raw_mode(0o644)));
            assert_eq!(mode(0o10644), Err(Errno::EINVAL));
            assert_eq!(sync_file_range_flags(8), Err(Errno::EINVAL));
            assert_eq!(
                socket_type(libc::SOCK_STREAM | libc::SOCK_CLOEXEC),
                Ok((SocketType::STREAM, SocketFlags::CLOEXEC))
            );
            assert_eq!(socket_type(9), Err(Errno::EINVAL));
            assert_eq!(socket_type(libc::SOCK_STREAM | 0x100), Err(Errno::EINVAL));
            assert_eq!(protocol(0), Ok(None));
            assert_eq!(protocol(-1), Err(Errno::EINVAL));
            assert_eq!(address_family(-1), Err(Errno::EINVAL));
            assert_eq!(shutdown(3), Err(Errno::EINVAL));
            assert_eq!(send_flags(libc::MSG_NOSIGNAL), Ok(SendFlags::NOSIGNAL));
            assert_eq!(recv_flags(1 << 28), Err(Errno::EINVAL));
            assert_eq!(poll_flags(0x10000), Err(Errno::EINVAL));
            assert_eq!(poll_flags(libc::POLLIN as i32), Ok(PollFlags::IN));
        }
    }
}
