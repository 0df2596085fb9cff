//! Shared set-up for the transfer tests: ring executors with a fixed-file table, one task
//! run to its end, pipes holding known bytes, and a sender on a fresh executor.
#![allow(dead_code)]

use core::future::Future;
use core::pin::Pin;
use keel_core::Fiber;
use keel_linux::RingConfig;
use keel_linux::transfer::{FiberTransfer, Mailbox};
use std::io::{Read, Write};
use std::os::fd::AsFd;

#[path = "../net_util/mod.rs"]
mod net_util;
pub use net_util::*;

pub fn cfg(files: u32) -> RingConfig {
    RingConfig { registered_files: files, ..RingConfig::default() }
}

pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Runs one fiber to its end on `ex`; asserts it returned 1.
pub fn fiber_on(ex: Pin<&Ex>, body: impl FnOnce(&mut Fiber) + 'static) {
    let t = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            body(f);
            1u64
        })
        .unwrap();
    run_all(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(1))), "the task ended early");
}

/// Runs one future task to its end on `ex`; asserts it returned 1.
pub fn future_on(ex: Pin<&Ex>, body: impl Future<Output = ()> + 'static) {
    let t = ex
        .attach(task(), async move {
            body.await;
            1u64
        })
        .map_err(|_| "attach")
        .unwrap();
    run_all(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(1))), "the task ended early");
}

pub fn pipe_with(data: &[u8]) -> std::io::PipeReader {
    let (r, mut w) = std::io::pipe().unwrap();
    w.write_all(data).unwrap();
    r
}

pub fn read_all(fd: std::os::fd::OwnedFd) -> Vec<u8> {
    let mut v = Vec::new();
    std::fs::File::from(fd).read_to_end(&mut v).unwrap();
    v
}

pub fn cloexec(fd: &std::os::fd::OwnedFd) -> bool {
    rustix::io::fcntl_getfd(fd).unwrap().contains(rustix::io::FdFlags::CLOEXEC)
}

/// Sends a pipe holding `data` to `mb` with `key` from a fresh executor.
pub fn send_pipe(mb: &Mailbox, key: u32, data: &[u8]) {
    let a = executor(cfg(2));
    let (r, mb) = (pipe_with(data), mb.clone());
    fiber_on(a.as_ref(), move |f| {
        let fixed = f.register_fd(r.as_fd()).unwrap();
        f.send_fd(fixed, &mb, key).map_err(|e| e.error).expect("send");
    });
}
