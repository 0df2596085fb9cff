//! The cancellation soak's fixture: per task a pipe end or a connected socket (or one
//! shared listener, or a file), the peers' side the test feeds or drains at random, and
//! the counters the tasks report to (`cancel_soak.rs`).

use super::soak_util::Rng;
use super::{Kind, W};
use keel_linux::fs::File;
use keel_linux::net::Socket;
use std::cell::Cell;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::rc::Rc;

/// What the tasks of one soak share: their descriptors and the counters they report to.
pub struct Fix {
    pub kind: Kind,
    /// Per task: the keel side (a pipe end, a socket) and the peer the test feeds or drains.
    pub files: Vec<Rc<File>>,
    pub socks: Vec<Rc<Socket>>,
    pub peers: Vec<OwnedFd>,
    pub streams: Vec<UnixStream>,
    pub listener: Option<Rc<Socket>>,
    pub listen_path: std::path::PathBuf,
    pub clients: Vec<UnixStream>,
    pub path: String,
    /// Bytes or connections the test fed, and what the tasks reported.
    pub fed: Cell<u64>,
    pub got: Rc<Cell<u64>>,
    pub claims: Rc<Cell<u64>>,
    pub releases: Rc<Cell<u64>>,
    /// Operation futures dropped before they completed: the driver gives their results
    /// back without reporting them to the executor (completion rule 3).
    pub given_up: Rc<Cell<u64>>,
}

pub fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both were just made and are ours.
    unsafe { (std::os::fd::FromRawFd::from_raw_fd(fds[0]), std::os::fd::FromRawFd::from_raw_fd(fds[1])) }
}

pub fn nonblocking(fd: RawFd) {
    // SAFETY: flag changes on a descriptor the test owns.
    unsafe { libc::fcntl(fd, libc::F_SETFL, libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK) };
}

/// Reads everything `fd` holds now (non-blocking); returns the byte count.
pub fn drain(fd: RawFd) -> u64 {
    let mut buf = [0u8; 65536];
    let mut n = 0;
    loop {
        // SAFETY: `buf` is valid for its length.
        let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if r <= 0 {
            return n;
        }
        n += r as u64;
    }
}

impl Fix {
    pub fn new(kind: Kind, dir: &std::path::Path) -> Fix {
        let path = dir.join("file");
        std::fs::write(&path, vec![7u8; 4096]).unwrap();
        let mut fix = Fix {
            kind,
            files: Vec::new(),
            socks: Vec::new(),
            peers: Vec::new(),
            streams: Vec::new(),
            listener: None,
            listen_path: dir.join("listener"),
            clients: Vec::new(),
            path: path.to_str().unwrap().to_owned(),
            fed: Cell::new(0),
            got: Rc::new(Cell::new(0)),
            claims: Rc::new(Cell::new(0)),
            releases: Rc::new(Cell::new(0)),
            given_up: Rc::new(Cell::new(0)),
        };
        for _ in 0..W {
            match kind {
                Kind::Read => {
                    let (r, w) = pipe();
                    nonblocking(w.as_raw_fd());
                    fix.files.push(Rc::new(File::from(r)));
                    fix.peers.push(w);
                }
                Kind::Write => {
                    let (r, w) = pipe();
                    nonblocking(r.as_raw_fd());
                    fix.files.push(Rc::new(File::from(w)));
                    fix.peers.push(r);
                }
                Kind::Recv | Kind::Provided => {
                    let (a, b) = UnixStream::pair().unwrap();
                    b.set_nonblocking(true).unwrap();
                    fix.socks.push(Rc::new(Socket::from(OwnedFd::from(a))));
                    fix.streams.push(b);
                }
                Kind::Registered => {
                    fix.files.push(Rc::new(File::from(OwnedFd::from(std::fs::File::open(&path).unwrap()))))
                }
                _ => {}
            }
        }
        if kind == Kind::Accept {
            let l = UnixListener::bind(&fix.listen_path).unwrap();
            fix.listener = Some(Rc::new(Socket::from(OwnedFd::from(l))));
        }
        fix
    }

    /// One random poke from the peers' side: bytes in, bytes out, or a connection.
    pub fn feed(&mut self, rng: &mut Rng) {
        let i = rng.below(W as u64) as usize;
        match self.kind {
            Kind::Read => {
                let n = 1 + rng.below(64) as usize;
                let buf = [b'r'; 64];
                // SAFETY: `buf` is valid for `n <= 64` bytes; the write end is ours.
                let r = unsafe { libc::write(self.peers[i].as_raw_fd(), buf.as_ptr().cast(), n) };
                if r > 0 {
                    self.fed.set(self.fed.get() + r as u64);
                }
            }
            Kind::Write => {
                let n = drain(self.peers[i].as_raw_fd());
                self.fed.set(self.fed.get() + n);
            }
            Kind::Recv | Kind::Provided => {
                let n = 1 + rng.below(200) as usize;
                if let Ok(k) = self.streams[i].write(&[b's'; 200][..n]) {
                    self.fed.set(self.fed.get() + k as u64);
                }
            }
            // Bounded: a full backlog would block a Unix-domain connect.
            Kind::Accept if self.fed.get() - self.got.get() < 16 => {
                self.clients.push(UnixStream::connect(&self.listen_path).unwrap());
                self.fed.set(self.fed.get() + 1);
                if self.clients.len() > 64 {
                    self.clients.remove(0); // closed: its accepted end stays valid
                }
            }
            _ => {}
        }
    }

    /// What is still unread at the end: added to what the tasks reported, it must equal
    /// what was fed (for a write soak: what the tasks wrote equals what was drained).
    pub fn leftover(&mut self) -> u64 {
        match self.kind {
            Kind::Read => self
                .files
                .iter()
                .map(|f| {
                    nonblocking(f.fd());
                    drain(f.fd())
                })
                .sum(),
            Kind::Write => {
                let n: u64 = self.peers.iter().map(|p| drain(p.as_raw_fd())).sum();
                self.fed.set(self.fed.get() + n);
                0
            }
            Kind::Recv | Kind::Provided => self
                .socks
                .iter()
                .map(|s| {
                    nonblocking(s.fd());
                    drain(s.fd())
                })
                .sum(),
            Kind::Accept => {
                let l = self.listener.as_ref().unwrap().fd();
                nonblocking(l);
                let mut n = 0;
                loop {
                    // SAFETY: accepting on the test's listener; the result is closed at once.
                    let c =
                        unsafe { libc::accept4(l, core::ptr::null_mut(), core::ptr::null_mut(), libc::SOCK_CLOEXEC) };
                    if c < 0 {
                        return n;
                    }
                    // SAFETY: just accepted, ours.
                    unsafe { libc::close(c) };
                    n += 1;
                }
            }
            _ => 0,
        }
    }
}
