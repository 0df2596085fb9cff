//! The long soak's echo executor: one ring executor serving echo connections (one task per
//! connection; by arrival order a fiber with plain receives, a future with plain receives,
//! a future with a multishot receive into provided buffers, a fiber with the same) and
//! running timer tasks (fibers and futures sleeping random lengths, checking each sleep
//! lasted at least its duration), some of which it cancels every 100 ms. Foreign threads
//! attach to it through the `ExecutorHandle` it publishes.

use super::net_util::{executor_with, fattrs, listen, ring};
use super::soak_util::Rng;
use super::stats::{CANCELS, CONNECTIONS, Stats, TIMERS};
use super::{Shared, check_result, run_down};
use core::time::Duration;
use keel_core::{Errno, ExecutorHandle, Fiber, HandleSlot, TaskAttrs, TaskHandle, TaskSlot, rt};
use keel_linux::RingConfig;
use keel_linux::net::{self, FiberNet, SockAddr, SockOpt, Socket};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Connection handler slots (a client holds one connection at a time; spares cover the
/// handlers still closing).
const HANDLERS: usize = 32;
/// Timer tasks.
const TIMER_TASKS: usize = 8;
/// Provided buffers in the executor's ring, and their size.
const PBUFS: u16 = 32;
const PBUF_SIZE: u32 = 4096;

/// Runs the echo executor until `sh.shutdown`; sends the listening address and the
/// executor's handle first. Returns the number of tasks that were still attached after
/// the shutdown's cancels (must be zero).
pub fn run(sh: Arc<Shared>, seed: u64, ready: std::sync::mpsc::Sender<(SocketAddr, ExecutorHandle)>) {
    let st = sh.stats.clone();
    let mut rng = Rng::new(seed);
    let mut d = ring(RingConfig { entries: 256, cq_entries: 2048, slots: 1024, ..RingConfig::default() });
    d.enable_provided_buffers(PBUFS, PBUF_SIZE).unwrap();
    let ex = executor_with(d);
    let ex = ex.as_ref();
    let hslot: &'static HandleSlot = Box::leak(Box::new(HandleSlot::new()));
    let (lfd, addr) = listen(ex, SockAddr::from("127.0.0.1:0".parse::<SocketAddr>().unwrap()));
    ready.send((addr.to_std().unwrap(), ex.handle(hslot).unwrap())).unwrap();

    let slot = || -> TaskHandle {
        let s: &'static TaskSlot<8192> = Box::leak(Box::new(TaskSlot::new()));
        s.create(TaskAttrs::default()).unwrap()
    };
    let queue: Rc<RefCell<VecDeque<Socket>>> = Rc::new(RefCell::new(VecDeque::new()));
    let (q, s2) = (queue.clone(), st.clone());
    let acceptor = ex
        .attach(slot(), async move {
            // SAFETY: a view of the listener that never closes it (ManuallyDrop); `run`
            // closes it once, after every task using it has completed.
            let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(lfd) });
            loop {
                match net::future::accept(&*l).await {
                    Ok(c) => {
                        // Small echoes go out at once (no Nagle wait for the client's ACK).
                        if let Err(e) = net::future::set_option(&c, SockOpt::tcp_nodelay(true)).await {
                            s2.error(format!("UNEXPECTED TCP_NODELAY {e}"));
                        }
                        s2.op(CONNECTIONS, 1);
                        q.borrow_mut().push_back(c);
                    }
                    Err(Errno::ECANCELED) => return 0u64,
                    Err(e) => {
                        s2.error(format!("UNEXPECTED accept {e}"));
                        if rt::sleep(Duration::from_millis(5)).await.is_err() {
                            return 0;
                        }
                    }
                }
            }
        })
        .map_err(|_| "attach acceptor")
        .unwrap();

    let mut free: Vec<TaskHandle> = (0..HANDLERS).map(|_| slot()).collect();
    let mut busy: Vec<TaskHandle> = Vec::new();
    let mut timers: Vec<(TaskHandle, Rc<Cell<bool>>, bool)> =
        (0..TIMER_TASKS).map(|_| (slot(), Rc::new(Cell::new(false)), false)).collect();
    let mut conns = 0u64;
    let mut last_cancel = Instant::now();
    // Acquire: pairs with the main thread's Release store of `shutdown`.
    while !sh.shutdown.load(Ordering::Acquire) {
        let _ = ex.run(256, Some(Duration::from_millis(2)));
        busy.retain(|&h| match ex.result(h) {
            Ok(Some(r)) => {
                check_result(&st, "echo handler", Ok(Some(r)), false);
                free.push(h);
                false
            }
            _ => true,
        });
        loop {
            let Some(conn) = queue.borrow_mut().pop_front() else { break };
            let Some(h) = free.pop() else {
                queue.borrow_mut().push_front(conn); // wait for a handler to finish
                break;
            };
            let (kind, s) = (conns % 4, st.clone());
            conns += 1;
            let run = match kind {
                0 => ex.attach_fiber(h, fattrs(), move |f: &mut Fiber| fiber_echo(f, conn, false, s)).map_err(|_| ()),
                1 => ex.attach(h, future_echo(conn, s)).map_err(|_| ()),
                2 => ex.attach(h, future_echo_provided(conn, s)).map_err(|_| ()),
                _ => ex.attach_fiber(h, fattrs(), move |f: &mut Fiber| fiber_echo(f, conn, true, s)).map_err(|_| ()),
            };
            busy.push(run.expect("attach a handler"));
        }
        for (i, (h, flag, live)) in timers.iter_mut().enumerate() {
            if *live {
                match ex.result(*h) {
                    Ok(Some(r)) => {
                        check_result(&st, "timer task", Ok(Some(r)), flag.get());
                        *live = false;
                    }
                    _ => continue,
                }
            }
            flag.set(false);
            let (seed, iters, fl, s) = (rng.next(), 1 + rng.below(50), flag.clone(), st.clone());
            *h = if i % 2 == 0 {
                ex.attach_fiber(*h, fattrs(), move |f: &mut Fiber| fiber_timer(f, seed, iters, fl, s)).map_err(|_| ())
            } else {
                ex.attach(*h, future_timer(seed, iters, fl, s)).map_err(|_| ())
            }
            .expect("attach a timer task");
            *live = true;
        }
        if last_cancel.elapsed() >= Duration::from_millis(100) {
            last_cancel = Instant::now();
            let (h, flag, _) = &timers[rng.below(TIMER_TASKS as u64) as usize];
            flag.set(true);
            if ex.cancel(*h).is_ok() {
                st.op(CANCELS, 1);
            }
        }
    }
    let _ = ex.cancel(acceptor);
    for (h, flag, _) in &timers {
        flag.set(true);
        let _ = ex.cancel(*h);
    }
    for &h in &busy {
        let _ = ex.cancel(h);
    }
    run_down(ex, &st, "echo executor");
    queue.borrow_mut().clear();
    // SAFETY: the listener made by `listen`; every task that viewed it has completed.
    unsafe { libc::close(lfd) };
}

/// One echo connection on a fiber: plain receives into its buffer, or a multishot
/// receive into provided buffers.
fn fiber_echo(f: &mut Fiber, conn: Socket, provided: bool, st: Arc<Stats>) -> u64 {
    let mut buf = vec![0u8; 16 * 1024];
    if provided {
        match f.recv_multi(&conn) {
            Ok(mut m) => loop {
                match f.next_recv(&mut m) {
                    Ok(Some(b)) => {
                        let n = b.len();
                        buf[..n].copy_from_slice(&b);
                        drop(b);
                        if let Err(e) = f.send_all(&conn, &buf[..n]) {
                            st.error(format!("UNEXPECTED fiber echo send {e}"));
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        st.error(format!("UNEXPECTED fiber echo next_recv {e}"));
                        break;
                    }
                }
            },
            Err(e) => st.error(format!("UNEXPECTED fiber echo recv_multi {e}")),
        }
    } else {
        loop {
            match f.recv(&conn, &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if let Err(e) = f.send_all(&conn, &buf[..n as usize]) {
                        st.error(format!("UNEXPECTED fiber echo send {e}"));
                        break;
                    }
                }
                Err(e) => {
                    st.error(format!("UNEXPECTED fiber echo recv {e}"));
                    break;
                }
            }
        }
    }
    if let Err(e) = f.close_socket(conn) {
        st.error(format!("UNEXPECTED fiber echo close {e}"));
    }
    0
}

/// One echo connection on a future: plain receives, buffers passed by ownership.
async fn future_echo(conn: Socket, st: Arc<Stats>) -> u64 {
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        buf.clear();
        let (r, b) = net::future::recv(&conn, buf).await;
        buf = b;
        match r {
            Ok(0) => break,
            Ok(_) => {
                let (r, b) = net::future::send_all(&conn, buf).await;
                buf = b;
                if let Err(e) = r {
                    st.error(format!("UNEXPECTED future echo send {e}"));
                    break;
                }
            }
            Err(e) => {
                st.error(format!("UNEXPECTED future echo recv {e}"));
                break;
            }
        }
    }
    if let Err(e) = net::future::close_socket(conn).await {
        st.error(format!("UNEXPECTED future echo close {e}"));
    }
    0
}

/// One echo connection on a future, through a multishot receive into provided buffers.
async fn future_echo_provided(conn: Socket, st: Arc<Stats>) -> u64 {
    match net::future::recv_multi(&conn).await {
        Ok(mut m) => loop {
            match net::future::next_recv(&mut m).await {
                Ok(Some(b)) => {
                    let v = b.to_vec();
                    drop(b);
                    if let Err(e) = net::future::send_all(&conn, v).await.0 {
                        st.error(format!("UNEXPECTED future echo send {e}"));
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    st.error(format!("UNEXPECTED future echo next_recv {e}"));
                    break;
                }
            }
        },
        Err(e) => st.error(format!("UNEXPECTED future echo recv_multi {e}")),
    }
    if let Err(e) = net::future::close_socket(conn).await {
        st.error(format!("UNEXPECTED future echo close {e}"));
    }
    0
}

/// A random sleep length: mostly short, now and then up to 20 ms.
fn sleep_len(rng: &mut Rng) -> Duration {
    if rng.one_in(4) { Duration::from_micros(rng.below(20_000)) } else { Duration::from_micros(rng.below(2_000)) }
}

/// Checks one sleep: it lasted at least `d` by the process's monotonic clock.
fn timed(st: &Stats, t: Instant, d: Duration) {
    let took = t.elapsed();
    st.op(TIMERS, 1);
    if took < d {
        st.early(d - took);
    }
}

fn fiber_timer(f: &mut Fiber, seed: u64, iters: u64, cancelled: Rc<Cell<bool>>, st: Arc<Stats>) -> u64 {
    let mut rng = Rng::new(seed);
    for _ in 0..iters {
        let d = sleep_len(&mut rng);
        let t = Instant::now();
        if f.sleep(d).is_err() {
            st.error_if(cancelled.get(), "fiber sleep Cancelled");
            return 1;
        }
        timed(&st, t, d);
    }
    0
}

async fn future_timer(seed: u64, iters: u64, cancelled: Rc<Cell<bool>>, st: Arc<Stats>) -> u64 {
    let mut rng = Rng::new(seed);
    for _ in 0..iters {
        let d = sleep_len(&mut rng);
        let t = Instant::now();
        if rt::sleep(d).await.is_err() {
            st.error_if(cancelled.get(), "future sleep Cancelled");
            return 1;
        }
        timed(&st, t, d);
    }
    0
}
