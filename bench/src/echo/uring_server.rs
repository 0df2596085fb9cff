//! `io-uring`: the hand-written echo server, the limit. One default ring on one thread:
//! an accept re-armed after each connection, and per connection a recv into its own
//! 4 KiB buffer, then a send of what came (again for the rest after a short send), then
//! the next recv. A fixed table of connections, allocated once; nothing per message.
//! It stops accepting at the first connection after the stop flag is raised, and
//! returns once every connection has ended (or after [`LIFETIME`]).

use io_uring::{IoUring, Submitter, opcode, squeue, types};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Connections at once.
const SLOTS: usize = 256;
/// The longest a server may run: every server is up for the whole measurement (about
/// two minutes for the full run), so this only ends a server the bench forgot.
const LIFETIME: Duration = Duration::from_secs(600);
const BUF: usize = 4096;

const ACCEPT: u64 = u64::MAX;
const RECV: u64 = 0;
const SEND: u64 = 1;

struct Slot {
    fd: Option<OwnedFd>,
    buf: [u8; BUF],
    len: usize,
    sent: usize,
}

/// Serves `l` until the stop flag, then until its connections end.
pub fn serve(l: TcpListener, stop: &AtomicBool) -> Result<(), String> {
    let mut slots: Box<[Slot]> = (0..SLOTS).map(|_| Slot { fd: None, buf: [0; BUF], len: 0, sent: 0 }).collect();
    let mut ring = IoUring::new(2 * SLOTS as u32).map_err(|e| format!("io_uring: {e}"))?;
    let r = run(&mut ring, &mut slots, &l, stop);
    drop(ring);
    if r.is_err() {
        // An operation may still be in flight into a buffer: keep them.
        Box::leak(slots);
    }
    r
}

fn run(ring: &mut IoUring, slots: &mut [Slot], l: &TcpListener, stop: &AtomicBool) -> Result<(), String> {
    let lfd = types::Fd(l.as_raw_fd());
    let deadline = Instant::now() + LIFETIME;
    let mut free: Vec<usize> = (0..SLOTS).rev().collect();
    let (submitter, mut sq, mut cq) = ring.split();
    let accept = opcode::Accept::new(lfd, std::ptr::null_mut(), std::ptr::null_mut()).build().user_data(ACCEPT);
    push(&submitter, &mut sq, &accept)?;
    let (mut accepting, mut live) = (true, 0usize);
    let wait = types::Timespec::new().nsec(100_000_000);
    while accepting || live > 0 {
        if Instant::now() >= deadline {
            return Err(format!("still serving after {LIFETIME:?}"));
        }
        sq.sync();
        match submitter.submit_with_args(1, &types::SubmitArgs::new().timespec(&wait)) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => {}
            Err(e) => return Err(format!("submit: {e}")),
        }
        cq.sync();
        for cqe in &mut cq {
            let res = cqe.result();
            if cqe.user_data() == ACCEPT {
                if res < 0 {
                    return Err(format!("accept: {}", std::io::Error::from_raw_os_error(-res)));
                }
                // SAFETY: a successful accept returns a new descriptor that we own.
                let fd = unsafe { OwnedFd::from_raw_fd(res) };
                // Acquire: pairs with the bench's Release store before its last connect.
                if stop.load(Ordering::Acquire) {
                    accepting = false;
                    continue;
                }
                let i = free.pop().ok_or("more connections than slots")?;
                slots[i].fd = Some(fd);
                live += 1;
                push(&submitter, &mut sq, &recv(&mut slots[i], i))?;
                push(&submitter, &mut sq, &accept)?;
                continue;
            }
            let (i, kind) = ((cqe.user_data() >> 1) as usize, cqe.user_data() & 1);
            let s = &mut slots[i];
            if res <= 0 {
                // The end of the stream, or an error (a reset): the connection is done.
                s.fd = None;
                free.push(i);
                live -= 1;
                continue;
            }
            if kind == RECV {
                (s.len, s.sent) = (res as usize, 0);
            } else {
                s.sent += res as usize;
                if s.sent == s.len {
                    push(&submitter, &mut sq, &recv(s, i))?;
                    continue;
                }
            }
            push(&submitter, &mut sq, &send(s, i))?;
        }
    }
    Ok(())
}

fn raw(s: &Slot) -> types::Fd {
    types::Fd(s.fd.as_ref().map_or(-1, |f| f.as_raw_fd()))
}

fn recv(s: &mut Slot, i: usize) -> squeue::Entry {
    opcode::Recv::new(raw(s), s.buf.as_mut_ptr(), BUF as u32).build().user_data((i as u64) << 1 | RECV)
}

fn send(s: &Slot, i: usize) -> squeue::Entry {
    opcode::Send::new(raw(s), s.buf[s.sent..s.len].as_ptr(), (s.len - s.sent) as u32)
        .build()
        .user_data((i as u64) << 1 | SEND)
}

/// Queues `e`, submitting first if the queue is full.
fn push(submitter: &Submitter<'_>, sq: &mut io_uring::SubmissionQueue<'_>, e: &squeue::Entry) -> Result<(), String> {
    for _ in 0..2 {
        // SAFETY: every buffer an entry points to lives in the slot table, which is not
        // moved and is dropped only after the ring with nothing in flight (else leaked);
        // each buffer has at most one operation in flight, and its descriptor stays open
        // until that operation has completed.
        if unsafe { sq.push(e) }.is_ok() {
            return Ok(());
        }
        sq.sync();
        submitter.submit().map_err(|e| format!("submit: {e}"))?;
    }
    Err("the submission queue stays full".into())
}
