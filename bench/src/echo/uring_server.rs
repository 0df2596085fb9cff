//! `io-uring` and `io-uring-mshot`: the hand-written echo servers, the limit keel is held
//! to. Both run io_uring's own best set-up on one thread, the same for both:
//!
//! - the tuned ring: `SINGLE_ISSUER` + `DEFER_TASKRUN` (completion work runs only when
//!   the thread waits for it, in one batch) and the ring's descriptor registered
//!   (`register_ring_fd`: no descriptor lookup per `io_uring_enter`);
//! - registered files: one multishot accept installs each connection straight into the
//!   ring's file table ([`TABLE`] slots, so it holds [`CONNS`] connections and more), and
//!   every operation names the connection by its slot (`types::Fixed`: no descriptor
//!   lookup or reference count per operation); a connection ends with a `Close` of its
//!   slot.
//!
//! What differs is how a connection's messages go (one shape per file):
//! - `io-uring` ([`linked`]): a receive into the connection's own 4 KiB buffer, then the
//!   send of what came linked to the next receive (`IO_LINK`), the send with
//!   `MSG_WAITALL` (the kernel finishes a short send itself) and `CQE_SKIP_SUCCESS`: one
//!   submission and one completion per message;
//! - `io-uring-mshot` (`uring_multishot`): one multishot receive per connection into a ring of
//!   provided buffers (a message costs no receive submission), and a send from the
//!   buffer that came, which goes back to the ring once the send completes: two
//!   completions and one submission per message, and buffers only for messages in flight.
//!
//! Nothing is allocated per message. A server stops accepting at the first connection
//! after the stop flag is raised and returns once every connection has ended (or after
//! [`LIFETIME`]).

use io_uring::{IoUring, Submitter, cqueue, opcode, squeue, types};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Connections a server is built to hold at once.
pub const CONNS: usize = 4096;
/// Slots of the registered file table: [`CONNS`], the stop connection and a margin for
/// slots whose `Close` is still in flight.
pub const TABLE: u32 = CONNS as u32 + 64;
/// The longest a server may run: every server is up for the whole measurement (a few
/// minutes for the full run), so this only ends a server the bench forgot.
const LIFETIME: Duration = Duration::from_secs(900);
/// Submission queue entries (a full queue is submitted and reused).
const SQ: u32 = 1024;

/// `user_data` of the multishot accept.
const ACCEPT: u64 = u64::MAX;
/// `user_data` of a `Close` (only a failed one completes: `CQE_SKIP_SUCCESS`).
const CLOSE: u64 = u64::MAX - 1;

/// What a shape does with a connection and its completions.
pub trait Shape {
    /// A connection was accepted into file slot `slot`: start serving it.
    fn accepted(&mut self, slot: u32, q: &mut Queue<'_>) -> Result<(), String>;
    /// One of the shape's own operations completed (`user_data` is the shape's own, never
    /// [`ACCEPT`] or [`CLOSE`]); returns whether its connection has now ended (the shape
    /// has queued its [`Queue::close`]).
    fn completed(&mut self, user_data: u64, res: i32, flags: u32, q: &mut Queue<'_>) -> Result<bool, String>;
}

/// The submission side a shape queues its operations on.
pub struct Queue<'a> {
    submitter: &'a Submitter<'a>,
    sq: io_uring::SubmissionQueue<'a>,
}

impl Queue<'_> {
    /// Queues `entries` in one submission (a link chain must not be split), submitting
    /// what is queued first if they do not fit.
    ///
    /// # Safety
    ///
    /// Every buffer an entry points to stays valid and unused by anything else until its
    /// operation completes (or the ring is dropped).
    pub unsafe fn push(&mut self, entries: &[squeue::Entry]) -> Result<(), String> {
        for _ in 0..2 {
            // SAFETY: the caller keeps every buffer valid until its operation completes.
            if unsafe { self.sq.push_multiple(entries) }.is_ok() {
                return Ok(());
            }
            self.sq.sync();
            self.submitter.submit().map_err(|e| format!("submit: {e}"))?;
            self.sq.sync();
        }
        Err("the submission queue stays full".into())
    }

    /// Closes the connection in file slot `slot` (its slot is free for a new accept once
    /// the close has run).
    pub fn close(&mut self, slot: u32) -> Result<(), String> {
        let e = opcode::Close::new(types::Fixed(slot)).build().flags(squeue::Flags::SKIP_SUCCESS).user_data(CLOSE);
        // SAFETY: a close points to no buffer.
        unsafe { self.push(&[e]) }
    }
}

/// The tuned ring both shapes run on.
fn tuned_ring() -> Result<IoUring, String> {
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(4 * TABLE)
        .build(SQ)
        .map_err(|e| format!("io_uring (SINGLE_ISSUER | DEFER_TASKRUN): {e}"))
}

/// Serves `l` with `shape` on a tuned ring until the stop flag, then until its
/// connections end. The ring is dropped before `shape` (its buffers outlive every
/// operation); on an error, operations may still be in flight into them, so the caller
/// leaks the shape.
pub fn serve<S: Shape>(l: &TcpListener, stop: &AtomicBool, shape: &mut S) -> Result<(), String> {
    serve_with(l, stop, shape, |_| Ok(()))
}

/// [`serve`], with `setup` run on the ring's submitter before the first accept (to
/// register what the shape needs).
pub fn serve_with<S: Shape>(
    l: &TcpListener,
    stop: &AtomicBool,
    shape: &mut S,
    setup: impl FnOnce(&Submitter<'_>) -> Result<(), String>,
) -> Result<(), String> {
    let mut ring = tuned_ring()?;
    let (mut submitter, sq, mut cq) = ring.split();
    submitter.register_ring_fd().map_err(|e| format!("register_ring_fd: {e}"))?;
    submitter.register_files_sparse(TABLE).map_err(|e| format!("register_files_sparse: {e}"))?;
    setup(&submitter)?;
    let mut q = Queue { submitter: &submitter, sq };
    let accept = opcode::AcceptMulti::new(types::Fd(l.as_raw_fd())).allocate_file_index(true).build().user_data(ACCEPT);
    // SAFETY: an accept into the file table points to no buffer.
    unsafe { q.push(std::slice::from_ref(&accept)) }?;
    let deadline = Instant::now() + LIFETIME;
    let (mut accepting, mut live) = (true, 0usize);
    let wait = types::Timespec::new().nsec(100_000_000);
    while accepting || live > 0 {
        if Instant::now() >= deadline {
            return Err(format!("still serving after {LIFETIME:?}"));
        }
        q.sq.sync();
        match q.submitter.submit_with_args(1, &types::SubmitArgs::new().timespec(&wait)) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => {}
            Err(e) => return Err(format!("submit: {e}")),
        }
        cq.sync();
        for cqe in &mut cq {
            let (res, flags) = (cqe.result(), cqe.flags());
            match cqe.user_data() {
                ACCEPT => {
                    if accepting && !cqueue::more(flags) {
                        // SAFETY: as above.
                        unsafe { q.push(std::slice::from_ref(&accept)) }?;
                    }
                    if res < 0 {
                        return Err(format!("accept: {}", std::io::Error::from_raw_os_error(-res)));
                    }
                    // Acquire: pairs with the bench's Release store before its last connect.
                    if !accepting || stop.load(Ordering::Acquire) {
                        accepting = false;
                        q.close(res as u32)?;
                        continue;
                    }
                    live += 1;
                    shape.accepted(res as u32, &mut q)?;
                }
                CLOSE => return Err(format!("close: {}", std::io::Error::from_raw_os_error(-res))),
                ud => {
                    if shape.completed(ud, res, flags, &mut q)? {
                        live -= 1;
                    }
                }
            }
        }
    }
    Ok(())
}
