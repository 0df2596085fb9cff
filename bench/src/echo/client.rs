//! The load generator: `conns` blocking-connected loopback sockets to one server, driven
//! by one io_uring (the same for every server), one `MSG`-byte message in flight per
//! connection. A [`Load`] keeps its connections open across slices of load.
//!
//! Each connection sends a message (its number and sequence number, so every echoed byte
//! is checked), waits for all of its echo, records the round trip and sends the next.
//! The phases of a slice, by the clock: warm-up, the measured window (messages counted,
//! round trips appended to the caller's preallocated array), then a drain in which every connection waits for its last echo and
//! sends no more, so the next slice starts with nothing in flight. Nothing allocates per
//! message; every wait is bounded by a timeout, every slice by a deadline.

use super::{MSG, Params};
use io_uring::{IoUring, Submitter, opcode, squeue, types};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// What a slice measured.
pub struct Window {
    /// Messages echoed in the window.
    pub msgs: u64,
    /// The window's length.
    pub elapsed: Duration,
    /// Messages echoed in the whole slice: warm-up, window and drain.
    pub echoed: u64,
}

/// One connection's state; its buffers stay put while operations use them.
struct Conn {
    fd: i32,
    tx: [u8; MSG],
    rx: [u8; MSG],
    sent: usize,
    got: usize,
    seq: u64,
    t0: Instant,
}

impl Conn {
    /// Writes message `seq` of connection `i` into `tx`.
    fn next(&mut self, i: usize, now: Instant) {
        self.seq += 1;
        self.tx[..8].copy_from_slice(&self.seq.to_le_bytes());
        self.tx[8..16].copy_from_slice(&(i as u64).to_le_bytes());
        self.tx[16..].fill(self.seq as u8 ^ i as u8);
        (self.sent, self.got, self.t0) = (0, 0, now);
    }
}

const SEND: u64 = 1;
/// How long the last echoes may take after the window: 3 s, or 2 ms per connection where
/// that is longer (from 1,500 connections on: every connection's last message may wait
/// behind all the others', and a server on a loaded 2-vCPU VM has been seen to echo no
/// more than 8K messages/s; 4,096 connections get 8.2 s).
fn drain(conns: usize) -> Duration {
    Duration::from_secs(3).max(Duration::from_millis(2 * conns as u64))
}

#[derive(PartialEq)]
enum Phase {
    Warm,
    Window,
    Drain,
}

/// Open connections to one server and the ring that drives them.
pub struct Load {
    ring: IoUring,
    cs: Box<[Conn]>,
    /// The sockets go last (field order): the server sees their end.
    _streams: Vec<TcpStream>,
    /// A slice failed, so an operation may still be in flight into a buffer.
    broken: bool,
}

impl Load {
    /// Opens `conns` connections to `addr` (no load yet).
    pub fn connect(addr: SocketAddr, conns: usize) -> Result<Load, String> {
        let streams = (0..conns)
            .map(|i| {
                let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                    .map_err(|e| format!("connect {i}: {e}"))?;
                s.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
                Ok(s)
            })
            .collect::<Result<Vec<_>, String>>()?;
        let now = Instant::now();
        let cs: Box<[Conn]> = streams
            .iter()
            .map(|s| Conn { fd: s.as_raw_fd(), tx: [0; MSG], rx: [0; MSG], sent: 0, got: 0, seq: 0, t0: now })
            .collect();
        let ring = ring(conns)?;
        Ok(Load { ring, cs, _streams: streams, broken: false })
    }

    /// One slice of load as `p` says; round trips (ns) are appended to `lat`, never past
    /// its capacity.
    pub fn slice(&mut self, p: Params, lat: &mut Vec<u32>) -> Result<Window, String> {
        if self.broken {
            return Err("an earlier slice on these connections failed".into());
        }
        let r = drive(&mut self.ring, &mut self.cs, p, lat);
        self.broken = r.is_err();
        r
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if self.broken {
            // An operation may still be in flight into a buffer: keep them (a few KiB).
            Box::leak(std::mem::take(&mut self.cs));
        }
    }
}

/// The load's ring: a submission queue of two entries per connection up to 4,096 (a full
/// queue is submitted and reused), room for four completions per connection. Its memory
/// is a few physically contiguous blocks, which a fragmented kernel may refuse for a while
/// (`ENOMEM` seen when 4,096-connection loads came one after another, the dropped ring's
/// memory being freed in the background): a refusal is tried again, at most 10 times
/// 100 ms apart.
fn ring(conns: usize) -> Result<IoUring, String> {
    let sq = (2 * conns).next_power_of_two().clamp(64, 4096) as u32;
    let cq = ((4 * conns).next_power_of_two() as u32).max(2 * sq);
    let mut tries = 0;
    loop {
        match IoUring::builder().setup_cqsize(cq).build(sq) {
            Ok(r) => return Ok(r),
            Err(e) if e.raw_os_error() == Some(libc::ENOMEM) && tries < 10 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(format!("io_uring ({sq} SQ, {cq} CQ entries): {e}")),
        }
    }
}

/// The phases; returns with nothing in flight, or an error.
fn drive(ring: &mut IoUring, cs: &mut [Conn], p: Params, lat: &mut Vec<u32>) -> Result<Window, String> {
    let now = Instant::now();
    let (warm_end, end) = (now + p.warmup, now + p.warmup + p.window);
    let deadline = end + drain(cs.len());
    let (mut phase, mut outstanding, mut msgs, mut echoed) = (Phase::Warm, cs.len(), 0u64, 0u64);
    let (mut t_start, mut elapsed) = (now, None);
    let (submitter, mut sq, mut cq) = ring.split();
    for (i, c) in cs.iter_mut().enumerate() {
        c.next(i, now);
        push(&submitter, &mut sq, &send(c, i))?;
        push(&submitter, &mut sq, &recv(c, i))?;
    }
    let wait = types::Timespec::new().nsec(50_000_000);
    loop {
        sq.sync();
        match submitter.submit_with_args(1, &types::SubmitArgs::new().timespec(&wait)) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => {}
            Err(e) => return Err(format!("submit: {e}")),
        }
        let now = Instant::now();
        cq.sync();
        for cqe in &mut cq {
            let (i, res) = ((cqe.user_data() >> 1) as usize, cqe.result());
            let is_send = cqe.user_data() & 1 == SEND;
            if res < 0 {
                let op = if is_send { "send" } else { "recv" };
                return Err(format!("connection {i}: {op}: {}", std::io::Error::from_raw_os_error(-res)));
            }
            let c = &mut cs[i];
            if is_send {
                c.sent += res as usize;
                if c.sent < MSG {
                    push(&submitter, &mut sq, &send(c, i))?;
                }
                continue;
            }
            if res == 0 {
                return Err(format!("connection {i}: the server closed it"));
            }
            c.got += res as usize;
            if c.got < MSG {
                push(&submitter, &mut sq, &recv(c, i))?;
                continue;
            }
            if c.rx != c.tx || c.sent != MSG {
                return Err(format!("connection {i}: the echo of message {} is not what was sent", c.seq));
            }
            echoed += 1;
            if phase == Phase::Window {
                msgs += 1;
                if lat.len() < lat.capacity() {
                    lat.push(now.saturating_duration_since(c.t0).as_nanos().min(u32::MAX as u128) as u32);
                }
            }
            if phase == Phase::Drain {
                outstanding -= 1;
                continue;
            }
            c.next(i, now);
            push(&submitter, &mut sq, &send(c, i))?;
            push(&submitter, &mut sq, &recv(c, i))?;
        }
        if phase == Phase::Warm && now >= warm_end {
            t_start = Instant::now();
            phase = Phase::Window;
        } else if phase == Phase::Window && now >= end {
            elapsed = Some(t_start.elapsed());
            phase = Phase::Drain;
        }
        if phase == Phase::Drain && outstanding == 0 {
            return elapsed
                .map(|elapsed| Window { msgs, elapsed, echoed })
                .ok_or_else(|| "the window never ended".into());
        }
        if now >= deadline {
            return Err(format!("{outstanding} echoes still missing {:?} after the window", drain(cs.len())));
        }
    }
}

fn send(c: &Conn, i: usize) -> squeue::Entry {
    opcode::Send::new(types::Fd(c.fd), c.tx[c.sent..].as_ptr(), (MSG - c.sent) as u32)
        .build()
        .user_data((i as u64) << 1 | SEND)
}

fn recv(c: &mut Conn, i: usize) -> squeue::Entry {
    opcode::Recv::new(types::Fd(c.fd), c.rx[c.got..].as_mut_ptr(), (MSG - c.got) as u32)
        .build()
        .user_data((i as u64) << 1)
}

/// Queues `e`, submitting first if the queue is full.
fn push(submitter: &Submitter<'_>, sq: &mut io_uring::SubmissionQueue<'_>, e: &squeue::Entry) -> Result<(), String> {
    for _ in 0..2 {
        // SAFETY: every buffer an entry points to lives in `cs`, a boxed slice that is
        // not moved, and is dropped only after the ring with nothing in flight (else
        // leaked); each buffer has at most one operation in flight.
        if unsafe { sq.push(e) }.is_ok() {
            return Ok(());
        }
        sq.sync();
        submitter.submit().map_err(|e| format!("submit: {e}"))?;
        // The kernel's new head: the entries it took are free again.
        sq.sync();
    }
    Err("the submission queue stays full".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drain_bound_grows_with_the_connections() {
        assert_eq!(drain(1), Duration::from_secs(3));
        assert_eq!(drain(64), Duration::from_secs(3));
        assert_eq!(drain(4096), Duration::from_millis(8192));
    }
}
