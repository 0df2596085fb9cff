//! The executor's registered buffer set (`IORING_REGISTER_BUFFERS`): allocated and
//! registered once at creation; a task claims a buffer by index, fills it, and initiates
//! `WRITE_FIXED`, or claims one and `READ_FIXED`s into it, then releases it by index.
//!
//! Rules (cited as "regbuf rule N"):
//! 1. **Owner.** A claim records the claiming task's run (`TaskHandle`: slot and
//!    generation). Every use of an index (`slice`: `with_buffer`, `read_fixed`,
//!    `write_fixed`, `send_zc_fixed`) and its release check it: an index nobody holds is
//!    `BufferError::NotClaimed`, one another task (or another run of this task) holds is
//!    `BufferError::NotYours`. So a task can never read into, write from or release a
//!    buffer another task holds.
//! 2. **Claiming when none is free**: `try_claim` says so (`None`); the waiting form
//!    (`FiberFs::claim_buffer`) queues a wait (`waitq.rs`, bounded, sized at creation).
//!    While anyone waits no buffer is free (a release with a waiter hands its buffer
//!    over instead of freeing it), so a waiter is never overtaken by a `try_claim`.
//! 3. **Hand-over.** A release with waiters gives the buffer straight to the oldest
//!    (waitq rule 2): the buffer's owner becomes that waiter's task, a grant (ticket,
//!    index) is recorded and the waiter woken; the waiter collects the grant when it
//!    runs (`collect`). A woken waiter still queued was woken spuriously and waits on.
//! 4. **Leaving** (waitq rule 3): a waiter cancelled or dropped calls `leave`. Still
//!    queued: removed. Already granted a buffer: the grant is released again, which
//!    hands it to the next waiter (rule 3) or frees it. So a release always reaches a
//!    live waiter, and no buffer is held by a wait that ended.
//! 5. Bounded: grants are at most the buffer count (allocated at creation); claims,
//!    releases and grants allocate nothing.
#![allow(unsafe_code)] // registering buffers with the kernel is unsafe in the io-uring crate

use crate::fs::BufferError;
use crate::waitq::{Left, Ticket, WaitQueue};
use io_uring::IoUring;
use keel_core::TaskHandle;
use std::io;

/// The outcome of a claim that may wait (rule 2).
pub(crate) enum Claim {
    /// Claimed now.
    Got(u16),
    /// Queued: wait, then `collect` with the ticket.
    Queued(Ticket),
}

/// What a woken waiter finds (rule 3).
pub(crate) enum Collect {
    /// Its buffer.
    Got(u16),
    /// Still queued: a spurious wake, wait again.
    Waiting,
}

pub(crate) struct Registered {
    mem: Box<[u8]>,
    size: usize,
    free: Vec<u16>,
    /// Rule 1: the task run holding each buffer.
    owner: Vec<Option<TaskHandle>>,
    waiters: WaitQueue,
    /// Rule 3: buffers handed to a woken waiter that has not collected them yet.
    grants: Vec<(Ticket, u16)>,
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
            owner: vec![None; count as usize],
            waiters: WaitQueue::with_capacity(1024),
            grants: Vec::with_capacity(count as usize),
        }))
    }

    /// Claims a free buffer for `me` (rule 1), or `None`.
    pub(crate) fn try_claim(&mut self, me: TaskHandle) -> Option<u16> {
        let i = self.free.pop()?;
        self.owner[i as usize] = Some(me);
        Some(i)
    }

    /// Claims a free buffer for `me`, or queues its wait (rule 2).
    pub(crate) fn claim_or_wait(&mut self, me: TaskHandle) -> Result<Claim, BufferError> {
        if let Some(i) = self.try_claim(me) {
            return Ok(Claim::Got(i));
        }
        self.waiters.push(me).map(Claim::Queued).ok_or(BufferError::WaitQueueFull)
    }

    /// A woken waiter's buffer, if it has been granted one (rule 3).
    pub(crate) fn collect(&mut self, t: Ticket) -> Collect {
        if let Some(k) = self.grants.iter().position(|g| g.0 == t) {
            return Collect::Got(self.grants.swap_remove(k).1);
        }
        if self.waiters.is_queued(t) {
            return Collect::Waiting;
        }
        unreachable!("keel bug: a registered-buffer wait neither queued nor granted")
    }

    /// Ends wait `t` without taking a buffer (rule 4).
    pub(crate) fn leave(&mut self, t: Ticket) {
        if self.waiters.leave(t) == Left::Queued {
            return;
        }
        if let Some(k) = self.grants.iter().position(|g| g.0 == t) {
            let (_, i) = self.grants.swap_remove(k);
            self.hand_on(i);
        }
    }

    /// Releases buffer `i` held by `me` (rules 1 and 3).
    pub(crate) fn release(&mut self, i: u16, me: TaskHandle) -> Result<(), BufferError> {
        self.check(i, me)?;
        self.hand_on(i);
        Ok(())
    }

    /// Buffer `i` is no longer its owner's: to the oldest waiter, or back to the free list.
    fn hand_on(&mut self, i: u16) {
        match self.waiters.pop() {
            Some((t, task)) => {
                self.owner[i as usize] = Some(task);
                self.grants.push((t, i)); // within capacity: one grant per buffer (rule 5)
                task.wake();
            }
            None => {
                self.owner[i as usize] = None;
                self.free.push(i);
            }
        }
    }

    /// Whether `me` holds buffer `i` (rule 1).
    fn check(&self, i: u16, me: TaskHandle) -> Result<(), BufferError> {
        match self.owner.get(i as usize) {
            None => Err(BufferError::NoSuchBuffer(i)),
            Some(None) => Err(BufferError::NotClaimed(i)),
            Some(Some(o)) if *o != me => Err(BufferError::NotYours(i)),
            Some(Some(_)) => Ok(()),
        }
    }

    /// Buffer `i`, if `me` holds it (rule 1).
    pub(crate) fn slice(&mut self, i: u16, me: TaskHandle) -> Result<&mut [u8], BufferError> {
        self.check(i, me)?;
        let s = self.size;
        Ok(&mut self.mem[i as usize * s..(i as usize + 1) * s])
    }

    pub(crate) fn size(&self) -> usize {
        self.size
    }
}
