//! `echo_pair_backend` (ns per message): the fiber echo path of both ring-driver backends
//! (`keel-ring`: io_uring, `keel-epoll`: the epoll engine) on one executor, without the
//! network's timing: a connected `socketpair(AF_UNIX, SOCK_STREAM)`, a client fiber that
//! sends 64 bytes and receives their echo with `FiberNet::send_then_recv` `iters` times,
//! and an echo fiber on the other end that receives the first message, then sends each
//! message back with `send_then_recv` (the echo example's handler), so every message is
//! two skip pairs (`ring/pair.rs`): the server's and the client's. One thread, no timer and
//! no deadline: the instruction count per message (`bench/callgrind-per-op.sh -n 20000
//! echo_pair_backend --impl keel-epoll`) is repeatable; on the epoll backend only the
//! engine's revalidation sweep (revalidation rule 1: once per second of wall time while an
//! op waits on a descriptor) depends on time, a pass over a handful of entries per second,
//! well under 0.1 instruction per message even under valgrind.
//! No goal (see [`GOALS`]).

use crate::goals::Goal;
use crate::harness::{Case, Impl, Timed, Unit};
use keel_core::{Config, Executor, Fiber, TaskError, TaskResult, TaskSlot};
use keel_linux::net::{FiberNet, Socket};
use keel_linux::{BackendChoice, RingConfig, RingDriver};
use std::os::unix::net::UnixStream;
use std::time::Instant;

/// Bytes per message, as the echo cases send.
const MSG: usize = 64;

/// `echo_pair_backend`.
pub const CASE: Case = Case {
    name: "echo_pair_backend",
    unit: Unit::NsPerOp,
    impls: &[Impl { name: "keel-ring", run: run::<0> }, Impl { name: "keel-epoll", run: run::<1> }],
};

/// No goal: the epoll backend does the transfers with system calls the ring does not make
/// (`sendto`, `recvfrom` and `epoll_wait` against `io_uring_enter`), about 1.2x the ring's
/// time per message here.
pub const GOALS: &[Goal] = &[];

std::thread_local! {
    static SLOTS: &'static [TaskSlot; 2] = Box::leak(Box::new([TaskSlot::new(), TaskSlot::new()]));
}

/// A failed call as the task's result.
fn failed(e: keel_core::Errno) -> TaskError {
    TaskError::Failed(i64::from(e.0))
}

/// The client: `iters` messages out, each echo back in whole.
fn client(f: &mut Fiber, s: &Socket, iters: u64) -> TaskResult {
    let mut buf = [7u8; MSG];
    for _ in 0..iters {
        let n = f.send_then_recv(s, &mut buf, MSG).map_err(failed)?;
        if n as usize != MSG {
            return Err(TaskError::Failed(-1)); // a stream may split, a socketpair does not here
        }
    }
    Ok(iters)
}

/// The echo: the first message in, then each one back out linked to the next one in, the
/// last one back out alone.
fn echo(f: &mut Fiber, s: &Socket, iters: u64) -> TaskResult {
    let mut buf = [0u8; MSG];
    let mut n = f.recv(s, &mut buf).map_err(failed)?;
    for _ in 1..iters {
        n = f.send_then_recv(s, &mut buf, n as usize).map_err(failed)?;
    }
    f.send_all(s, &buf[..n as usize]).map_err(failed)?;
    Ok(iters)
}

fn run<const B: usize>(iters: u64) -> Timed {
    let backend = if B == 0 { BackendChoice::Ring } else { BackendChoice::Epoll };
    let d = RingDriver::new(RingConfig { backend, ..RingConfig::default() }).map_err(|e| format!("driver: {e}"))?;
    let ex = core::pin::pin!(
        Executor::with_stacks(d, super::region_stacks(2)?, Config::default()).map_err(|e| e.to_string())?
    );
    let ex = ex.into_ref();
    let (a, b) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let (a, b) = (Socket::from(std::os::fd::OwnedFd::from(a)), Socket::from(std::os::fd::OwnedFd::from(b)));
    let slots = SLOTS.with(|s| *s);
    let iters = iters.max(1);
    let hs = super::create_task(&slots[0], "echo")?;
    let hs = ex.attach_fiber(hs, super::FIBER_ATTRS, move |f: &mut Fiber| echo(f, &b, iters));
    let hs = hs.map_err(|e| format!("attach: {e}"))?;
    let hc = super::create_task(&slots[1], "client")?;
    let hc = ex.attach_fiber(hc, super::FIBER_ATTRS, move |f: &mut Fiber| client(f, &a, iters));
    let hc = hc.map_err(|e| format!("attach: {e}"))?;
    let start = Instant::now();
    while ex.attached() > 0 {
        ex.run(usize::MAX, Some(std::time::Duration::from_secs(5))).map_err(|e| format!("run: {e}"))?;
    }
    let elapsed = start.elapsed();
    for h in [hs, hc] {
        match ex.result(h) {
            Ok(Some(Ok(n))) if n == iters => {}
            other => return Err(format!("task ended with {other:?}")),
        }
        ex.destroy(h).map_err(|e| format!("destroy: {e}"))?;
    }
    Ok(elapsed)
}
