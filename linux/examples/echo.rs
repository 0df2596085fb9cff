//! A TCP echo server on keel: one executor per thread, each with its own listener bound
//! with SO_REUSEPORT (the kernel spreads connections over the threads; nothing is shared
//! between executors). Each executor runs `--conns` handler tasks (default 256); each
//! accepts one connection, echoes it to end of stream, closes it and accepts again, so
//! memory is bounded by the handler count and a flood of connections waits in the
//! kernel's listen backlog. SIGINT stops every thread cleanly and prints a summary.
//!
//! ```text
//! cargo run --release -p keel-linux --example echo -- [--addr HOST:PORT] [--threads N] [--handler fiber|future] [--conns N] [--resume-batch N] [--backend auto|ring|epoll] [--direct]
//! ```
//!
//! `--direct` accepts each connection straight into the ring's fixed-file table
//! (`accept_direct`, a table of `--conns` + 64 slots: one per handler and a margin for
//! closes in flight) and names it by its slot in every operation (`FixedSocket`): no
//! descriptor in the process's table, no descriptor lookup or reference count per
//! operation in the kernel; a connection ends with `close_fixed_socket`. io_uring only.
//!
//! `--resume-batch` sets `Config::resume_batch`, the tasks resumed between two reaps:
//! 64 here (the core's default is 16), so the server resumes a whole burst of ready
//! connections before it enters and sends their replies in one submission. On the
//! keel-bench echo run (64 connections, client on the other CPU), against 16: 185K
//! against 176K msgs/s with p99 571 against 578 us in one run, 142K against 133K with
//! 816 against 810 us in another (the VM's slow level); with client and server sharing
//! one CPU, p99 went from 1.16x monoio's to 1.00-1.03x. 256 measured the same as 64.
use keel_core::{Config, Executor, Fiber, FiberAttrs, TaskAttrs, TaskHandle, TaskSlot};
use keel_linux::net::{self, AsSock, FiberNet, SockAddr, SockOpt, Socket, SocketType};
use keel_linux::{BackendChoice, MmapStacks, RingConfig, RingDriver};
use std::cell::{Cell, RefCell};
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    // Relaxed: a flag polled by the run loops; nothing else is published through it.
    STOP.store(true, Ordering::Relaxed);
}

#[derive(Default)]
struct Counts {
    messages: Cell<u64>,
    bytes: Cell<u64>,
    conns: Cell<u64>,
}

fn task() -> TaskHandle {
    let s: &'static TaskSlot<2048> = Box::leak(Box::new(TaskSlot::new()));
    s.create(TaskAttrs::default()).unwrap()
}

/// A fiber handler: accepts a connection (into the fixed-file table with `direct`),
/// echoes it to end of stream, closes it and accepts the next.
fn fiber_handler(l: RawFd, c: Rc<Counts>, direct: bool) -> impl FnOnce(&mut Fiber) -> u64 + 'static {
    move |f: &mut Fiber| {
        // SAFETY: a view of the example's listener that never closes it (ManuallyDrop); `serve` closes it once, after every task using it is done.
        let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(l) });
        let mut buf = [0u8; 4096];
        if direct {
            while let Ok(s) = f.accept_direct(&*l) {
                fiber_echo(f, &s, &mut buf, &c);
                let _ = f.close_fixed_socket(s);
            }
        } else {
            while let Ok(s) = f.accept(&*l) {
                fiber_echo(f, &s, &mut buf, &c);
                let _ = f.close_socket(s);
            }
        }
        0
    }
}

/// One connection of a fiber handler: the first message with `recv`, then each echo
/// linked to the next receive (`send_then_recv`: one suspension and one submission per
/// message), to end of stream or an error.
fn fiber_echo(f: &mut Fiber, s: &impl AsSock, buf: &mut [u8], c: &Counts) {
    c.conns.set(c.conns.get() + 1);
    let mut n = f.recv(s, buf).unwrap_or(0);
    while n > 0 {
        let echoed = n;
        n = f.send_then_recv(s, buf, n as usize).unwrap_or(0);
        c.messages.set(c.messages.get() + 1);
        c.bytes.set(c.bytes.get() + echoed as u64);
    }
}

/// A future handler: as [`fiber_handler`], with an owned buffer passed to each operation.
async fn future_handler(l: RawFd, c: Rc<Counts>, direct: bool) -> u64 {
    // SAFETY: a view of the example's listener that never closes it (ManuallyDrop); `serve` closes it once, after every task using it is done.
    let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(l) });
    let mut buf = Vec::with_capacity(4096);
    if direct {
        while let Ok(s) = net::future::accept_direct(&*l).await {
            buf = future_echo(&s, buf, &c).await;
            let _ = net::future::close_fixed_socket(s).await;
        }
    } else {
        while let Ok(s) = net::future::accept(&*l).await {
            buf = future_echo(&s, buf, &c).await;
            let _ = net::future::close_socket(s).await;
        }
    }
    0
}

/// One connection of a future handler, to end of stream or an error; hands the buffer back.
async fn future_echo(s: &impl AsSock, mut buf: Vec<u8>, c: &Counts) -> Vec<u8> {
    c.conns.set(c.conns.get() + 1);
    loop {
        let (r, b) = net::future::recv(s, buf).await;
        let Ok(n @ 1..) = r else {
            return b;
        };
        let (r, mut b) = net::future::send_all(s, b).await;
        b.clear();
        buf = b;
        if r.is_err() {
            return buf;
        }
        c.messages.set(c.messages.get() + 1);
        c.bytes.set(c.bytes.get() + n as u64);
    }
}

/// The listener, through the ring: socket, SO_REUSEADDR, SO_REUSEPORT, bind, listen.
/// A failed step closes the socket (its drop) and says which step failed.
fn listen(f: &mut Fiber, addr: SocketAddr) -> Result<RawFd, String> {
    let sa = SockAddr::from(addr);
    let os = std::io::Error::from_raw_os_error;
    let s = f.socket(sa.family(), SocketType::STREAM, None).map_err(|e| format!("socket: {}", os(e.0)))?;
    f.set_option(&s, SockOpt::reuse_addr(true)).map_err(|e| format!("SO_REUSEADDR: {}", os(e.0)))?;
    f.set_option(&s, SockOpt::reuse_port(true)).map_err(|e| format!("SO_REUSEPORT: {}", os(e.0)))?;
    f.bind(&s, &sa).map_err(|e| format!("cannot listen on {addr}: bind: {}", os(e.0)))?;
    f.listen(&s, 4096).map_err(|e| format!("cannot listen on {addr}: listen: {}", os(e.0)))?;
    s.into_raw_fd().map_err(|_| "keel bug: an operation still holds the new listener".to_string())
}

/// One server thread: its executor, listener and handlers until SIGINT. An error (no
/// io_uring, the address not bindable) is one line for `main` to print.
fn serve(args: Args) -> Result<(u64, u64, u64), String> {
    let Args { addr, fiber, conns, resume_batch, backend, direct, .. } = args;
    let ring = RingDriver::new(RingConfig {
        entries: 1024,
        cq_entries: 4096,
        slots: 4 * conns as u32 + 64,
        // One slot per handler and a margin for closes in flight.
        registered_files: if direct { conns as u32 + 64 } else { 0 },
        backend,
        ..RingConfig::default()
    })
    .map_err(|e| format!("the ring driver: {e}"))?;
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| eprintln!("echo: serving on the {} backend", ring.backend().name()));
    let stacks = MmapStacks::new().map_err(|e| format!("fiber stacks: {e}"))?;
    let config = Config { max_spare_stacks: conns + 8, resume_batch, ..keel_linux::panic::config() };
    let ex = std::pin::pin!(Executor::with_stacks(ring, stacks, config).map_err(|e| format!("executor: {e:?}"))?);
    let ex = ex.into_ref();
    let fa = FiberAttrs { stack_size: 64 * 1024, ..FiberAttrs::DEFAULT };
    let made = Rc::new(RefCell::new(None));
    let out = made.clone();
    ex.attach_fiber(task(), fa, move |f: &mut Fiber| {
        *out.borrow_mut() = Some(listen(f, addr));
        0u64
    })
    .map_err(|e| format!("attach: {e:?}"))?;
    while ex.attached() > 0 {
        let _ = ex.run(64, Some(Duration::from_millis(100)));
    }
    let l = made.take().unwrap_or_else(|| Err("keel bug: the listener fiber did not run".into()))?;
    let counts = Rc::new(Counts::default());
    let handlers: Vec<_> = (0..conns)
        .map(|_| {
            if fiber {
                ex.attach_fiber(task(), fa, fiber_handler(l, counts.clone(), direct)).unwrap()
            } else {
                ex.attach(task(), future_handler(l, counts.clone(), direct)).unwrap()
            }
        })
        .collect();
    // Relaxed: see `on_sigint`.
    while !STOP.load(Ordering::Relaxed) {
        let _ = ex.run(1024, Some(Duration::from_millis(50)));
    }
    for h in handlers {
        let _ = ex.cancel(h);
    }
    while ex.attached() > 0 {
        let _ = ex.run(1024, Some(Duration::from_millis(50)));
    }
    // SAFETY: the example's own listener, which no task uses any more: closed once, here.
    drop(unsafe { Socket::from_raw_fd(l) });
    Ok((counts.messages.get(), counts.bytes.get(), counts.conns.get()))
}

const USAGE: &str = "\
usage: echo [--addr HOST:PORT] [--threads N] [--handler fiber|future] [--conns N] [--resume-batch N]
            [--backend auto|ring|epoll] [--direct]

A TCP echo server: one executor per thread, each with its own SO_REUSEPORT listener.
SIGINT or SIGTERM stops it and prints a summary.

  --addr HOST:PORT    the address to listen on (default 127.0.0.1:7000)
  --threads N         server threads, 1 to 1024 (default 1)
  --handler KIND      `fiber` (default) or `future` handler tasks
  --conns N           handler tasks per thread, 1 to 65536 (default 256)
  --resume-batch N    tasks resumed between two reaps, at least 1 (default 64)
  --backend KIND      `auto` (default: io_uring where allowed, else epoll), `ring` or `epoll`
  --direct            accept into the ring's fixed-file table (io_uring only)
  -h, --help          this text";

/// The command line, checked.
#[derive(Clone, Copy, Debug)]
struct Args {
    addr: SocketAddr,
    threads: usize,
    fiber: bool,
    conns: usize,
    resume_batch: usize,
    backend: BackendChoice,
    direct: bool,
}

/// Parses the arguments (without the program name): `Ok(None)` for `--help`; an error is
/// one line that names the flag and what it takes.
fn parse(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Option<Args>, String> {
    use lexopt::prelude::*;
    let mut a = Args {
        addr: SocketAddr::from(([127, 0, 0, 1], 7000)),
        threads: 1,
        fiber: true,
        conns: 256,
        resume_batch: 64,
        backend: BackendChoice::Auto,
        direct: false,
    };
    let mut p = lexopt::Parser::from_args(args);
    let mut help = false;
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => help = true,
            Long("addr") => {
                let v = text(&mut p, "--addr")?;
                a.addr = v.parse().map_err(|_| {
                    format!("--addr takes HOST:PORT, an IP address and a port such as 127.0.0.1:7000, not {v:?}")
                })?;
            }
            Long("threads") => a.threads = number(&mut p, "--threads", 1, 1024)?,
            Long("conns") => a.conns = number(&mut p, "--conns", 1, 65536)?,
            Long("resume-batch") => a.resume_batch = number(&mut p, "--resume-batch", 1, usize::MAX)?,
            Long("handler") => {
                a.fiber = match text(&mut p, "--handler")?.as_str() {
                    "fiber" => true,
                    "future" => false,
                    v => return Err(format!("--handler takes `fiber` or `future`, not {v:?}")),
                }
            }
            Long("direct") => a.direct = true,
            Long("backend") => {
                a.backend = match text(&mut p, "--backend")?.as_str() {
                    "auto" => BackendChoice::Auto,
                    "ring" => BackendChoice::Ring,
                    "epoll" => BackendChoice::Epoll,
                    v => return Err(format!("--backend takes `auto`, `ring` or `epoll`, not {v:?}")),
                }
            }
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    if a.direct && a.backend == BackendChoice::Epoll {
        return Err("--direct needs io_uring's fixed-file table: use it with --backend ring or auto".into());
    }
    Ok((!help).then_some(a))
}

/// The flag's value as UTF-8 text.
fn text(p: &mut lexopt::Parser, flag: &str) -> Result<String, String> {
    let v = p.value().map_err(|e| e.to_string())?;
    v.into_string().map_err(|v| format!("{flag} takes UTF-8 text, not {v:?}"))
}

/// The flag's value as a whole number from `min` to `max`.
fn number(p: &mut lexopt::Parser, flag: &str, min: usize, max: usize) -> Result<usize, String> {
    let v = text(p, flag)?;
    match v.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ if max == usize::MAX => Err(format!("{flag} takes a whole number, at least {min}, not {v:?}")),
        _ => Err(format!("{flag} takes a whole number from {min} to {max}, not {v:?}")),
    }
}

fn main() -> ExitCode {
    let args = match parse(std::env::args_os().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            // A closed stdout (`| head -1`) is not an error of the command line.
            let _ = writeln!(std::io::stdout(), "{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("echo: {e} (see `echo --help`)");
            return ExitCode::from(2);
        }
    };
    // SAFETY: installs a handler that only stores to an atomic (async-signal-safe).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigint as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
    }
    eprintln!(
        "echo: starting on {}, {} thread(s), {} handlers, {} per thread{}",
        args.addr,
        args.threads,
        if args.fiber { "fiber" } else { "future" },
        args.conns,
        if args.direct { ", direct descriptors" } else { "" }
    );
    // A thread that fails (or panics) stops the others, so that every join returns.
    let ts: Vec<_> = (0..args.threads)
        .map(|_| {
            std::thread::spawn(move || {
                let r = std::panic::catch_unwind(|| serve(args))
                    .unwrap_or_else(|_| Err("keel bug: a server thread panicked".into()));
                if r.is_err() {
                    // Relaxed: see `on_sigint`.
                    STOP.store(true, Ordering::Relaxed);
                }
                r
            })
        })
        .collect();
    let (mut m, mut b, mut c) = (0, 0, 0);
    let mut failed = None;
    for t in ts {
        match t.join().unwrap_or_else(|_| Err("keel bug: a server thread panicked".into())) {
            Ok((tm, tb, tc)) => {
                m += tm;
                b += tb;
                c += tc;
            }
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    if let Some(e) = failed {
        eprintln!("echo: {e}");
        return ExitCode::FAILURE;
    }
    println!("echo: {m} messages, {b} bytes, {c} connections");
    ExitCode::SUCCESS
}
