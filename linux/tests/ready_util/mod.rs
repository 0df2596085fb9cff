//! Shared by the ready* tests: descriptors keel does not own (eventfd, pipe), their
//! writes and reads, and the probes the tests wait on.
#![allow(dead_code)]

use crate::net_util::Ex;
use keel_core::{Errno, SuspendReason, TaskState};
use keel_linux::ready::PollFlags;
use rustix::event::{EventfdFlags, eventfd};
use std::cell::RefCell;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::rc::Rc;

pub type Out = Rc<RefCell<Vec<Result<PollFlags, Errno>>>>;

pub fn efd() -> Rc<OwnedFd> {
    Rc::new(eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).unwrap())
}

pub fn bump(fd: &OwnedFd) {
    rustix::io::write(fd, &1u64.to_ne_bytes()).unwrap();
}

pub fn drain(fd: &OwnedFd) {
    let mut b = [0u8; 8];
    let _ = rustix::io::read(fd, &mut b);
}

pub fn pipe() -> (Rc<OwnedFd>, OwnedFd) {
    let (r, w) = std::io::pipe().unwrap();
    (Rc::new(OwnedFd::from(r)), OwnedFd::from(w))
}

/// Open descriptors of this process (each test runs in a process of its own).
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

pub fn in_io(ex: Pin<&Ex>, t: keel_core::TaskHandle) -> bool {
    ex.state(t) == Ok(TaskState::Suspended(SuspendReason::Io))
}
