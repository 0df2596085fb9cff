//! The executor's registered buffer set (`IORING_REGISTER_BUFFERS`): allocated and
//! registered once at creation. A task claims a buffer and gets a [`FixedBuf`], fills it
//! and initiates `WRITE_FIXED`, or `READ_FIXED`s into it; dropping the `FixedBuf`
//! releases the buffer.
//!
//! Rules (cited as "regbuf rule N"):
//! 1. **Owner.** A claimed buffer is owned by the one [`FixedBuf`] naming it: the
//!    operations that use a registered buffer (`read_fixed`, `write_fixed`,
//!    `send_zc_fixed`) take a `FixedBuf`, not an index, so only its holder can read into,
//!    write from or release it (a `FixedBuf` moved to another task of the executor is
//!    that task's now). A `FixedBuf` of another executor's ring is refused (`EXDEV`): its
//!    index means another buffer here. `read_fixed` takes it by `&mut` (the kernel writes
//!    into it), `write_fixed` and `send_zc_fixed` by `&` (the kernel only reads it).
//! 2. **Claiming when none is free**: `try_claim` says so (`None`); the waiting form
//!    (`FiberFs::claim_buffer`, the future `fs::claim_buffer`) queues a wait (`waitq.rs`,
//!    bounded, sized at creation). While anyone waits no buffer is free (a release with a
//!    waiter hands its buffer over instead of freeing it), so a waiter is never overtaken
//!    by a `try_claim`.
//! 3. **Release is the `FixedBuf`'s drop**, however it goes: released explicitly, dropped
//!    at the end of the task's body, by a cancelled task's early return, by a panic's
//!    unwind, or with a future's body. A release with waiters gives the buffer straight to
//!    the oldest (waitq rule 2): a grant (ticket, index) is recorded and the waiter woken;
//!    it collects the grant (`collect`) and makes its `FixedBuf` when it runs. A woken
//!    waiter still queued was woken spuriously and waits on. So no buffer stays claimed by
//!    a task that ended, and a waiter in `claim_buffer` gets every buffer that comes back.
//!    (A `FixedBuf` passed to `mem::forget` keeps its buffer: a leak, never unsafety.)
//! 4. **Leaving** (waitq rule 3): a waiter cancelled or dropped calls `leave`. Still
//!    queued: removed. Already granted a buffer: the grant is released again, which
//!    hands it to the next waiter (rule 3) or frees it. So a release always reaches a
//!    live waiter, and no buffer is held by a wait that ended.
//! 5. **Lifetime** (shared rule 5): the set lives in the driver's shared state, which each
//!    `FixedBuf` holds, so its memory stays valid for as long as any `FixedBuf` does, after
//!    the driver included; a `FixedBuf` dropped after the driver releases nothing (there is
//!    nobody left to hand it to). The kernel writes into a buffer only during a
//!    `READ_FIXED` that holds its `FixedBuf` exclusively until its completion (a fiber's
//!    call borrows it until then; a future's operation keeps it in the driver slot).
//! 6. Bounded: grants are at most the buffer count (allocated at creation); claims,
//!    releases and grants allocate nothing.
#![allow(unsafe_code)] // registering buffers with the kernel, and handing out slices of them

use crate::fs::BufferError;
use crate::ring::shared::Shared;
use crate::waitq::{Left, Ticket, WaitQueue};
use io_uring::IoUring;
use keel_core::TaskHandle;
use std::io;
use std::ptr::NonNull;
use std::rc::Rc;

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

/// The buffers' memory, held by raw pointer: each `FixedBuf` and the kernel access their
/// own part of it while the bookkeeping is borrowed, so no reference to the whole may
/// exist (rule 5).
struct Mem {
    ptr: NonNull<u8>,
    len: usize,
}

impl Drop for Mem {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` came from `Box::into_raw` of a boxed slice (`Registered::new`);
        // the last holder of the shared state is going, so no `FixedBuf` and no kernel
        // operation uses the memory (rule 5, shared rule 4).
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.len)) });
    }
}

pub(crate) struct Registered {
    mem: Mem,
    size: usize,
    free: Vec<u16>,
    /// Whether each buffer is claimed (by a `FixedBuf` or a grant): rule 1's invariant.
    claimed: Vec<bool>,
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
        let len = count as usize * size;
        let raw = Box::into_raw(vec![0u8; len].into_boxed_slice());
        let mem = Mem { ptr: NonNull::new(raw.cast::<u8>()).expect("a Box is never null"), len };
        let iovecs: Vec<libc::iovec> = (0..count as usize)
            .map(|i| libc::iovec { iov_base: mem.ptr.as_ptr().wrapping_add(i * size).cast(), iov_len: size })
            .collect();
        // SAFETY: the memory lives in this `Registered`, which lives in the driver's shared
        // state; the driver holds that past the ring (field order) and leaks it if the
        // kernel may still use it (shared rule 4), so it stays valid while registered.
        unsafe { ring.submitter().register_buffers(&iovecs)? };
        Ok(Some(Registered {
            mem,
            size,
            free: (0..count).rev().collect(),
            claimed: vec![false; count as usize],
            waiters: WaitQueue::with_capacity(1024),
            grants: Vec::with_capacity(count as usize),
        }))
    }

    /// Claims a free buffer (rule 1), or `None`.
    pub(crate) fn try_claim(&mut self) -> Option<u16> {
        let i = self.free.pop()?;
        self.claimed[i as usize] = true;
        Some(i)
    }

    /// Claims a free buffer, or queues a wait of `me` (rule 2).
    pub(crate) fn claim_or_wait(&mut self, me: TaskHandle) -> Result<Claim, BufferError> {
        if let Some(i) = self.try_claim() {
            return Ok(Claim::Got(i));
        }
        self.waiters.push(me).map(Claim::Queued).ok_or(BufferError::WaitQueueFull)
    }

    /// A woken waiter's buffer, if it has been granted one (rule 3); still waiting, its
    /// wake goes to `me` (waitq rule 6).
    pub(crate) fn collect(&mut self, t: Ticket, me: Option<TaskHandle>) -> Collect {
        if let Some(k) = self.grants.iter().position(|g| g.0 == t) {
            return Collect::Got(self.grants.swap_remove(k).1);
        }
        if self.waiters.is_queued_for(t, me) {
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

    /// Buffer `i`'s `FixedBuf` went (rule 3).
    pub(crate) fn release(&mut self, i: u16) {
        assert!(self.claimed[i as usize], "keel bug: registered buffer {i} released while not claimed");
        self.hand_on(i);
    }

    /// Buffer `i` is no longer its holder's: to the oldest waiter, or back to the free list.
    fn hand_on(&mut self, i: u16) {
        match self.waiters.pop() {
            Some((t, task)) => {
                self.grants.push((t, i)); // within capacity: one grant per buffer (rule 6)
                task.wake();
            }
            None => {
                self.claimed[i as usize] = false;
                self.free.push(i);
            }
        }
    }

    /// First byte of buffer `i`.
    fn ptr(&self, i: u16) -> NonNull<u8> {
        debug_assert!((i as usize + 1) * self.size <= self.mem.len);
        // SAFETY: `i` is below the buffer count, so the offset stays inside the allocation.
        unsafe { self.mem.ptr.add(i as usize * self.size) }
    }

    pub(crate) fn size(&self) -> usize {
        self.size
    }
}

/// A claimed registered buffer (`RingConfig::registered_buffers`): the claim itself.
/// Its holder owns the buffer (regbuf rule 1): it reads and writes the bytes through
/// `Deref`/`DerefMut`, and passes it to `read_fixed`, `write_fixed` and `send_zc_fixed`.
/// Dropping it releases the buffer, to the oldest task waiting in `claim_buffer` if any
/// (regbuf rule 3): whether the holder releases it, returns, is cancelled or panics.
/// It may outlive its executor (then its drop does nothing; regbuf rule 5). `!Send`: it
/// belongs to its executor's thread.
pub struct FixedBuf {
    ptr: NonNull<u8>,
    len: usize,
    index: u16,
    shared: Rc<Shared>,
}

impl FixedBuf {
    /// Buffer `index`, claimed (or collected from a grant) just now in `reg`, which lives
    /// in `shared`.
    pub(crate) fn new(shared: &Rc<Shared>, reg: &Registered, index: u16) -> Self {
        FixedBuf { ptr: reg.ptr(index), len: reg.size(), index, shared: Rc::clone(shared) }
    }

    /// Its index in the registered set (the `buf_index` of a fixed SQE).
    pub fn index(&self) -> u16 {
        self.index
    }

    /// Its first byte, for building an SQE by hand (`opcode::ReadFixed` and the like): the
    /// buffer is this `FixedBuf`'s until it is dropped.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Its first byte, read-only.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// Whether it belongs to the ring whose shared state is `shared` (rule 1).
    #[inline(always)]
    pub(crate) fn is_of(&self, shared: &Rc<Shared>) -> bool {
        Rc::ptr_eq(&self.shared, shared)
    }
}

impl std::ops::Deref for FixedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the buffer's memory lives while `shared` does (rule 5); this `FixedBuf`
        // is its only owner (rule 1), and the kernel writes into it only during a
        // `READ_FIXED` that holds `&mut self` (or `self`) until completion.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for FixedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes the access exclusive: no operation
        // reads or writes the buffer meanwhile.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl std::fmt::Debug for FixedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FixedBuf").field("index", &self.index).field("len", &self.len).finish()
    }
}

impl Drop for FixedBuf {
    fn drop(&mut self) {
        self.shared.release_registered(self.index);
    }
}
