//! Socket addresses in the kernel's form ([`SockAddr`]: `sockaddr_storage` and its
//! length) for IPv4, IPv6 and Unix-domain sockets, and [`local_addr`]. Cold: nothing here
//! is on the hot path.
#![allow(unsafe_code)] // filling `sockaddr_storage`; borrowing a socket's descriptor

use super::Socket;
use crate::flags::AddressFamily;
use keel_core::Errno;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// A socket address in the kernel's form (`sockaddr_storage` and its length): IPv4, IPv6
/// or a Unix-domain path.
#[derive(Copy, Clone)]
pub struct SockAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl core::fmt::Debug for SockAddr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.to_std() {
            Some(a) => write!(f, "SockAddr({a})"),
            None => write!(f, "SockAddr(family {}, {} bytes)", self.storage.ss_family, self.len),
        }
    }
}

impl SockAddr {
    fn zeroed() -> Self {
        // SAFETY: `sockaddr_storage` is plain old data; all-zero is a valid value.
        SockAddr { storage: unsafe { core::mem::zeroed() }, len: 0 }
    }

    /// A Unix-domain address for `path` (at most 107 bytes, no NUL).
    pub fn unix(path: &str) -> Result<Self, Errno> {
        let mut a = Self::zeroed();
        let p = path.as_bytes();
        // SAFETY: `sockaddr_un` fits in `sockaddr_storage` (that is what the storage is for).
        let un = unsafe { &mut *(&mut a.storage as *mut _ as *mut libc::sockaddr_un) };
        if p.len() >= un.sun_path.len() || p.contains(&0) {
            return Err(Errno::EINVAL);
        }
        un.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (d, s) in un.sun_path.iter_mut().zip(p) {
            *d = *s as libc::c_char;
        }
        a.len = (core::mem::offset_of!(libc::sockaddr_un, sun_path) + p.len() + 1) as libc::socklen_t;
        Ok(a)
    }

    /// An address the kernel wrote (`recvmsg`'s `msg_name`): `len` bytes of `storage`.
    pub(crate) fn from_storage(storage: libc::sockaddr_storage, len: libc::socklen_t) -> Self {
        SockAddr { storage, len: len.min(core::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t) }
    }

    /// A Unix-domain address's path bytes (without the NUL; empty for an unnamed socket,
    /// such as an unbound datagram sender); `None` for another family.
    pub fn unix_path(&self) -> Option<&[u8]> {
        if self.storage.ss_family as i32 != libc::AF_UNIX {
            return None;
        }
        let at = core::mem::offset_of!(libc::sockaddr_un, sun_path);
        let n = (self.len as usize).saturating_sub(at);
        // SAFETY: the family says the storage holds a `sockaddr_un`; `n` is within its path.
        let un = unsafe { &*(&self.storage as *const _ as *const libc::sockaddr_un) };
        // SAFETY: `c_char` and `u8` have one layout; `n` is at most the path's length.
        let path = unsafe { core::slice::from_raw_parts(un.sun_path.as_ptr().cast::<u8>(), n.min(un.sun_path.len())) };
        Some(path.split(|&b| b == 0).next().unwrap_or(&[]))
    }

    /// The address family (`INET`, `INET6`, `UNIX`), for `socket`'s domain.
    pub fn family(&self) -> AddressFamily {
        AddressFamily::from_raw(self.storage.ss_family)
    }

    /// Bytes of the address the kernel reads (a `socklen_t`).
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the address is empty (never for one made by keel).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn as_ptr(&self) -> *const libc::sockaddr {
        &self.storage as *const _ as *const libc::sockaddr
    }

    /// Back to a std address (IPv4 and IPv6 only).
    pub fn to_std(&self) -> Option<SocketAddr> {
        match self.storage.ss_family as i32 {
            libc::AF_INET => {
                // SAFETY: the family says the storage holds a `sockaddr_in`.
                let a = unsafe { &*(self.as_ptr() as *const libc::sockaddr_in) };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: the family says the storage holds a `sockaddr_in6`.
                let a = unsafe { &*(self.as_ptr() as *const libc::sockaddr_in6) };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

impl From<SocketAddr> for SockAddr {
    fn from(addr: SocketAddr) -> Self {
        let mut a = Self::zeroed();
        match addr {
            SocketAddr::V4(v4) => {
                // SAFETY: `sockaddr_in` fits in `sockaddr_storage`.
                let s = unsafe { &mut *(&mut a.storage as *mut _ as *mut libc::sockaddr_in) };
                s.sin_family = libc::AF_INET as libc::sa_family_t;
                s.sin_port = v4.port().to_be();
                s.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
                a.len = core::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            }
            SocketAddr::V6(v6) => {
                // SAFETY: `sockaddr_in6` fits in `sockaddr_storage`.
                let s = unsafe { &mut *(&mut a.storage as *mut _ as *mut libc::sockaddr_in6) };
                s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                s.sin6_port = v6.port().to_be();
                s.sin6_addr.s6_addr = v6.ip().octets();
                s.sin6_flowinfo = v6.flowinfo();
                s.sin6_scope_id = v6.scope_id();
                a.len = core::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            }
        }
        a
    }
}

/// The local address of an IPv4 or IPv6 socket (getsockname(2) through rustix: cold, and
/// io_uring has no opcode for it). For finding the port the kernel chose for port 0.
/// Unix-domain sockets give `EAFNOSUPPORT`: their address is the path they were bound to.
pub fn local_addr(s: &Socket) -> Result<SockAddr, Errno> {
    // SAFETY: the socket's descriptor is open for as long as `s` is borrowed.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(s.fd()) };
    let any = rustix::net::getsockname(fd).map_err(|e| Errno(e.raw_os_error()))?;
    SocketAddr::try_from(any).map(SockAddr::from).map_err(|_| crate::errno::EAFNOSUPPORT)
}
