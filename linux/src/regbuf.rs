//! The executor's registered buffer set (`IORING_REGISTER_BUFFERS`): allocated and
//! registered once at creation; a task claims a buffer by index, fills it, and initiates
//! `WRITE_FIXED`, or claims one and `READ_FIXED`s into it, then releases it by index.
//!
//! Claiming when none is free: `try_claim` says so (`None`); the waiting forms (fiber and
//! future, in `fs.rs`) queue the task (bounded queue, sized at creation) and wake the
//! first waiter on each release.
#![allow(unsafe_code)] // registering buffers with the kernel is unsafe in the io-uring crate

use io_uring::IoUring;
use keel_core::TaskHandle;
use std::collections::VecDeque;
use std::io;

pub(crate) struct Registered {
    mem: Box<[u8]>,
    size: usize,
    free: Vec<u16>,
    claimed: Vec<bool>,
    waiters: VecDeque<TaskHandle>,
}

impl Registered {
    pub(crate) fn new(ring: &IoUring, count: u16, size: usize) -> io::Result<Option<Self>> {
        if count == 0 {
            return Ok(None);
        }
        if size == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "registered_buffer_size must be at least 1"));
        }
        let mut mem = vec![0u8; count as usize * size].into_boxed_slice();
        let iovecs: Vec<libc::iovec> = (0..count as usize)
            .map(|i| libc::iovec { iov_base: mem[i * size..].as_mut_ptr().cast(), iov_len: size })
            .collect();
        // SAFETY: the memory lives in this `Registered`, which the driver drops after the
        // ring (field order), so it stays valid while registered.
        unsafe { ring.submitter().register_buffers(&iovecs)? };
        Ok(Some(Registered {
            mem,
            size,
            free: (0..count).rev().collect(),
            claimed: vec![false; count as usize],
            waiters: VecDeque::with_capacity(1024),
        }))
    }

    pub(crate) fn try_claim(&mut self) -> Option<u16> {
        let i = self.free.pop()?;
        self.claimed[i as usize] = true;
        Some(i)
    }

    /// Queues `task` to be woken on the next release; false if the queue is full.
    pub(crate) fn wait(&mut self, task: TaskHandle) -> bool {
        if self.waiters.len() == self.waiters.capacity() {
            return false;
        }
        self.waiters.push_back(task);
        true
    }

    pub(crate) fn release(&mut self, i: u16) -> Result<(), crate::fs::BufferError> {
        match self.claimed.get_mut(i as usize) {
            Some(c) if *c => {
                *c = false;
                self.free.push(i);
                if let Some(w) = self.waiters.pop_front() {
                    w.wake();
                }
                Ok(())
            }
            Some(_) => Err(crate::fs::BufferError::NotClaimed(i)),
            None => Err(crate::fs::BufferError::NoSuchBuffer(i)),
        }
    }

    pub(crate) fn slice(&mut self, i: u16) -> Option<&mut [u8]> {
        if !*self.claimed.get(i as usize)? {
            return None;
        }
        let s = self.size;
        Some(&mut self.mem[i as usize * s..(i as usize + 1) * s])
    }

    pub(crate) fn size(&self) -> usize {
        self.size
    }
}
