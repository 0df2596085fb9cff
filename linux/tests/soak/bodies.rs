//! The cancellation soak's task bodies, one fiber form and one future form per operation
//! kind: each runs its operation in a loop, reports what it got, and ends at an error
//! (a cancel) or after its number of iterations (`cancel_soak.rs`).

use super::Kind;
use super::soak_util::Rng;
use core::future::Future;
use core::pin::pin;
use core::task::Poll;
use core::time::Duration;
use keel_core::{Fiber, rt};
use keel_linux::fs::{self, FiberFs, File, FixedBuf, Mode, OFlags};
use keel_linux::net::{self, FiberNet, Socket};
use std::cell::Cell;
use std::ffi::CString;
use std::rc::Rc;

/// A registered buffer whose release is counted (its drop).
pub struct Held(Option<FixedBuf>, Rc<Cell<u64>>);

impl Drop for Held {
    fn drop(&mut self) {
        if self.0.take().is_some() {
            self.1.set(self.1.get() + 1);
        }
    }
}

/// Polls `f` at most `polls + 1` times, then drops it (a future given up mid-flight).
async fn race<F: Future>(f: F, polls: u64) -> Option<F::Output> {
    let mut f = pin!(f);
    let mut left = polls;
    core::future::poll_fn(|cx| match f.as_mut().poll(cx) {
        Poll::Ready(v) => Poll::Ready(Some(v)),
        Poll::Pending if left == 0 => Poll::Ready(None),
        Poll::Pending => {
            left -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

/// What one task takes with it.
#[derive(Clone)]
pub struct Ctx {
    pub kind: Kind,
    pub file: Option<Rc<File>>,
    pub sock: Option<Rc<Socket>>,
    pub path: String,
    pub got: Rc<Cell<u64>>,
    pub claims: Rc<Cell<u64>>,
    pub releases: Rc<Cell<u64>>,
    pub given_up: Rc<Cell<u64>>,
    /// Iterations before the task ends on its own (if not cancelled first).
    pub iters: u64,
    pub seed: u64,
}

impl Ctx {
    fn add(&self, n: u64) {
        self.got.set(self.got.get() + n);
    }
    fn claimed(&self, b: FixedBuf) -> Held {
        self.claims.set(self.claims.get() + 1);
        Held(Some(b), self.releases.clone())
    }
}

pub fn fiber_body(f: &mut Fiber, c: Ctx) -> keel_core::TaskResult {
    let mut rng = Rng::new(c.seed);
    let cpath = CString::new(c.path.clone()).unwrap();
    let mut buf = [0u8; 4096];
    for _ in 0..c.iters {
        match c.kind {
            Kind::Yield => f.yield_now()?,
            Kind::Sleep => f.sleep(Duration::from_micros(rng.below(2000)))?,
            Kind::OpenClose => match f.open(&cpath, OFlags::RDONLY, Mode::empty()) {
                Ok(file) if rng.one_in(2) => {
                    let _ = f.close(file);
                }
                Ok(file) => drop(file),
                Err(_) => return Ok(1),
            },
            Kind::Read => match f.read(c.file.as_ref().unwrap(), &mut buf[..1 + rng.below(64) as usize], 0) {
                Ok(n) => c.add(n as u64),
                Err(_) => return Ok(1),
            },
            Kind::Write => match f.write(c.file.as_ref().unwrap(), &buf[..1 + rng.below(4096) as usize], 0) {
                Ok(n) => c.add(n as u64),
                Err(_) => return Ok(1),
            },
            Kind::Recv => match f.recv(&**c.sock.as_ref().unwrap(), &mut buf[..1 + rng.below(256) as usize]) {
                Ok(n) => c.add(n as u64),
                Err(_) => return Ok(1),
            },
            Kind::Accept => match f.accept(&**c.sock.as_ref().unwrap()) {
                Ok(s) => {
                    c.add(1);
                    if rng.one_in(2) {
                        let _ = f.close_socket(s);
                    }
                }
                Err(_) => return Ok(1),
            },
            Kind::Registered => {
                let mut held = match f.claim_buffer() {
                    Ok(b) => c.claimed(b),
                    Err(_) => return Ok(1),
                };
                let r = f.read_fixed(c.file.as_ref().unwrap(), held.0.as_mut().unwrap(), 4096, 0);
                if r.is_err() || (rng.one_in(2) && f.yield_now().is_err()) {
                    return Ok(1);
                }
            }
            Kind::Provided => {
                let s = &**c.sock.as_ref().unwrap();
                if rng.one_in(2) {
                    match f.recv_provided(s) {
                        Ok(Some(b)) => c.add(b.len() as u64),
                        _ => return Ok(1),
                    }
                } else {
                    // A multishot is drained to its end: results it queued are not given
                    // up (dropping it with results queued would give them back unread).
                    let Ok(mut m) = f.recv_multi(s) else { return Ok(1) };
                    while let Ok(Some(b)) = f.next_recv(&mut m) {
                        c.add(b.len() as u64);
                    }
                    return Ok(1);
                }
            }
        }
    }
    Ok(0)
}

pub async fn future_body(c: Ctx) -> u64 {
    let mut rng = Rng::new(c.seed);
    for _ in 0..c.iters {
        match c.kind {
            Kind::Yield => {
                if rng.one_in(4) {
                    let _ = race(rt::yield_now(), rng.below(2)).await;
                } else if rt::yield_now().await.is_err() {
                    return 1;
                }
            }
            Kind::Sleep => {
                let d = Duration::from_micros(rng.below(2000));
                if rng.one_in(3) {
                    if let Some(Err(_)) = race(rt::sleep(d), rng.below(4)).await {
                        return 1;
                    }
                } else if rt::sleep(d).await.is_err() {
                    return 1;
                }
            }
            Kind::OpenClose => {
                // A dropped open's descriptor is closed by the driver (completion rule 3).
                let r = if rng.one_in(3) {
                    race(fs::open(&c.path, OFlags::RDONLY, Mode::empty()), rng.below(3)).await
                } else {
                    Some(fs::open(&c.path, OFlags::RDONLY, Mode::empty()).await)
                };
                match r {
                    Some(Ok(file)) if rng.one_in(2) => {
                        let _ = fs::close(file).await;
                    }
                    Some(Ok(file)) => drop(file),
                    Some(Err(_)) => return 1,
                    None => c.given_up.set(c.given_up.get() + 1),
                }
            }
            Kind::Read => {
                let len = 1 + rng.below(64) as usize;
                match fs::read(c.file.as_ref().unwrap(), Vec::with_capacity(len), 0).await {
                    (Ok(n), _) => c.add(n as u64),
                    _ => return 1,
                }
            }
            Kind::Write => {
                let len = 1 + rng.below(4096) as usize;
                match fs::write(c.file.as_ref().unwrap(), vec![b'w'; len], 0).await {
                    (Ok(n), _) => c.add(n as u64),
                    _ => return 1,
                }
            }
            Kind::Recv => {
                let len = 1 + rng.below(256) as usize;
                match net::future::recv(&**c.sock.as_ref().unwrap(), Vec::with_capacity(len)).await {
                    (Ok(n), _) => c.add(n as u64),
                    _ => return 1,
                }
            }
            Kind::Accept => match net::future::accept(&**c.sock.as_ref().unwrap()).await {
                Ok(s) => {
                    c.add(1);
                    if rng.one_in(2) {
                        let _ = net::future::close_socket(s).await;
                    }
                }
                Err(_) => return 1,
            },
            Kind::Registered => {
                let mut held = match fs::claim_buffer().await {
                    Ok(b) => c.claimed(b),
                    Err(_) => return 1,
                };
                let b = held.0.take().unwrap();
                let (r, b) = fs::read_fixed(c.file.as_ref().unwrap(), b, 4096, 0).await;
                held.0 = Some(b);
                if r.is_err() || (rng.one_in(2) && rt::yield_now().await.is_err()) {
                    return 1;
                }
            }
            Kind::Provided => {
                let s = &**c.sock.as_ref().unwrap();
                if rng.one_in(2) {
                    match net::future::recv_provided(s).await {
                        Ok(Some(b)) => c.add(b.len() as u64),
                        _ => return 1,
                    }
                } else {
                    let Ok(mut m) = net::future::recv_multi(s).await else { return 1 };
                    while let Ok(Some(b)) = net::future::next_recv(&mut m).await {
                        c.add(b.len() as u64);
                    }
                    return 1;
                }
            }
        }
    }
    0
}
