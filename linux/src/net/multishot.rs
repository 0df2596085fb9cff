//! Multishot accept, receive and poll ([`Multishot`], net rule 2, ready rule 4; completion rules 1-3): one
//! operation, many results, taken in CQE order; re-armed when the kernel or the driver
//! ended it without an error; results nobody takes given back when it is dropped.
#![allow(unsafe_code)] // building the SQE the op re-arms with

use super::AsSock;
use crate::ring::RingDriver;
use crate::ring::shared::Shared;
use crate::ring::{KEEL_REARM, MultiNext, cqueue_more as more_flag};
use io_uring::squeue;
use keel_core::{Errno, OpId};
use std::rc::Rc;

/// What the multishot op is.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum MultiKind {
    Accept,
    AcceptDirect,
    Recv,
    /// A readiness stream (`ready` rule 4): results are event masks.
    Poll,
}

/// A multishot accept, receive or poll (net rule 2, ready rule 4): made by
/// `accept_multi`/`recv_multi`/`ready::poll_multi`; each
/// `next` returns one result in order. Dropping it cancels the operation; results nobody
/// took are given back (descriptors closed, buffers returned). It holds its socket open
/// while it lives (fd rule 1): `close_socket` cancels it, and the descriptor closes when
/// the `Multishot` goes. It may be dropped anywhere on its thread, after its executor too
/// (shared rule 2).
pub struct Multishot {
    entry: squeue::Entry,
    kind: MultiKind,
    id: Option<OpId>,
    /// The driver's shared state while armed (shared rule 2).
    shared: Option<Rc<Shared>>,
    /// The socket, held open while this lives (fd rule 1).
    fd: Option<crate::fd::SharedFd>,
    /// Ended for good: `Errno(0)` is end of stream.
    done: Option<Errno>,
}

impl core::fmt::Debug for Multishot {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Multishot")
            .field("kind", &self.kind)
            .field("armed", &self.id.is_some())
            .field("done", &self.done)
            .finish()
    }
}

/// One step of a multishot op, for the fiber and future wrappers.
pub(crate) enum MStep {
    /// A result (a descriptor/index for accept; bytes, with a buffer, for recv).
    Item(i32, u32),
    /// Ended for good.
    Done(Errno),
    /// Nothing yet: wait for a completion.
    Pending,
    /// Not armed: submit `entry` (again).
    Submit,
    /// The buffer ring is empty: wait for a buffer to come back, then submit.
    WaitBuffer,
}

impl Multishot {
    pub(crate) fn new(s: &impl AsSock, entry: squeue::Entry, kind: MultiKind) -> Self {
        Multishot { entry, kind, id: None, shared: None, fd: s.held().cloned(), done: None }
    }

    /// A multishot op on a descriptor it holds itself (`ready::poll_multi`'s duplicate).
    pub(crate) fn with_fd(fd: crate::fd::SharedFd, entry: squeue::Entry, kind: MultiKind) -> Self {
        Multishot { entry, kind, id: None, shared: None, fd: Some(fd), done: None }
    }

    pub(crate) fn armed(&mut self, id: OpId, shared: Option<Rc<Shared>>) {
        self.id = Some(id);
        self.shared = shared;
    }

    pub(crate) fn op(&self) -> crate::ring::RingOp {
        // SAFETY: multishot accept passes no address; multishot recv selects provided
        // buffers; a multishot poll names only a descriptor: no memory of ours is referenced.
        unsafe { crate::ring::RingOp::multishot(self.entry.clone()) }
    }

    /// The socket the op names, for its slot to hold at each arming (fd rule 1).
    pub(crate) fn fd(&self) -> Option<&crate::fd::SharedFd> {
        self.fd.as_ref()
    }

    pub(crate) fn kind(&self) -> MultiKind {
        self.kind
    }

    /// Whether an operation of it is in flight (armed and not ended).
    pub(crate) fn is_armed(&self) -> bool {
        self.id.is_some()
    }

    /// Asks the driver to cancel the armed op; its results still arrive in order, the
    /// last one ending it (for a task cancelled while it waits: nothing is lost).
    pub(crate) fn cancel(&self, d: &mut RingDriver) {
        if let Some(id) = self.id {
            keel_core::Driver::cancel(d, id);
        }
    }

    /// Takes the next result from the driver (net rule 2). `me`: the task taking it, whose
    /// wake the op's next CQE is for (wake-token rule 3 in the `ring` module doc: the
    /// `Multishot` may have moved to another task, or a later run).
    pub(crate) fn step(&mut self, d: &mut RingDriver, me: Option<keel_core::TaskHandle>) -> MStep {
        if let Some(e) = self.done {
            return MStep::Done(e);
        }
        let Some(id) = self.id else { return MStep::Submit };
        if !self.shared.as_ref().is_some_and(|s| Rc::ptr_eq(s, &d.shared)) {
            return MStep::Done(crate::errno::EXDEV); // armed on another executor's driver
        }
        let (res, flags) = match d.take_multi(id) {
            MultiNext::Pending => {
                if let Some(me) = me {
                    d.rewake(id, me);
                }
                return MStep::Pending;
            }
            MultiNext::Gone => {
                self.id = None;
                self.done = Some(Errno::EIO);
                return MStep::Done(Errno::EIO);
            }
            MultiNext::Item(r, f) => (r, f),
        };
        let ended = flags & more_flag() == 0;
        if ended {
            self.id = None;
            if flags & KEEL_REARM != 0 {
                return MStep::Submit;
            }
        }
        if res == -Errno::ENOBUFS.0 {
            let mut p = d.pbuf().expect("ENOBUFS without a provided-buffer ring");
            p.note_exhausted();
            return if p.available() > 0 { MStep::Submit } else { MStep::WaitBuffer };
        }
        if res < 0 {
            if ended {
                self.done = Some(Errno(-res));
            }
            return MStep::Done(Errno(-res));
        }
        if self.kind == MultiKind::Recv && res == 0 {
            self.done = Some(Errno(0));
            if let Some(bid) = io_uring::cqueue::buffer_select(flags)
                && let Some(mut p) = d.pbuf()
            {
                p.give_back(bid);
            }
            return MStep::Done(Errno(0));
        }
        MStep::Item(res, flags)
    }
}

impl Drop for Multishot {
    fn drop(&mut self) {
        if let (Some(id), Some(shared)) = (self.id, &self.shared) {
            shared.abandon(id); // shared rule 2; a no-op once the driver is gone
        }
    }
}
