//! The `echo` measurement: TCP echo servers on loopback under one load generator.
//!
//! Every server is started at once, with its serving thread pinned to the first CPU this
//! process may use, and the load generator ([`client`]), pinned to the second, opens
//! `conns` connections to each. Then it loads one server at a time in short slices: one
//! `MSG`-byte message in flight on each of that server's connections, a warm-up, then a
//! fixed window in which it counts echoed messages and records each message's round
//! trip in a preallocated array, then a drain. The servers not being loaded
//! wait in their kernel calls and take no CPU. A round is one slice per server, in an
//! order rotated each round; the caller gets each server's medians over its slices.
//!
//! Why slices of all servers up at once rather than one long trial per server: this VM
//! moves between throughput levels that last from seconds to minutes and hit every
//! server alike (echo at about 135K or 200K msgs/s for all of them; the host places the
//! two vCPUs near each other or far apart, [`placement`]). With 1 s trials a server
//! whose trials happened to fall in the slow level lost by 30%, whatever its design;
//! rounds of 0.4 s slices take about three seconds, so every server meets the
//! same levels, and the goal lines compare keel with a peer round by round (the median
//! over rounds of keel's figure over the peer's in the same round) as well as median
//! against median. Each round line shows the placement probe made just before it.
//!
//! The server's user-space CPU time ([`cpu`]: `utime` of `/proc/<pid>/stat` for a child
//! process, of `/proc/self/task/<tid>/stat` for an in-process server thread) is the
//! kernel's tick-sampled accounting (HZ=250 here, printed in 10 ms units), while a server
//! spends only a few ms of user time in a slice: too coarse for a median, so `echo_cpu`
//! is pooled: each server's user time read once before the first round and once after
//! the last (it is idle while the others are loaded), over every message it echoed in
//! all its slices, warm-up and drain included (no tick at all counts half a tick).
//! Reading it around each window instead added a 10 ms rounding per slice, and the
//! keel/monoio ratio ranged 0.45-1.0x from run to run; the tick sampling itself still
//! leaves about 10% on each server's figure. The server's whole CPU time (user and
//! system, the scheduler's exact `schedstat`) is pooled the same way: the scaling
//! curves' per-message cost, since an echo server's time is mostly the kernel's.
//!
//! Where every server's connections do not fit in the descriptor limit at once (4,096
//! connections: an in-process server holds both ends of each, and the hard limit here is
//! 20,000), the servers run one at a time instead ([`Params::alone`], [`alone`]): each
//! slice starts its server, connects, primes every connection and stops it again, in the
//! same rotated order, and the CPU time is read around each measured slice.
//!
//! The servers, one per file:
//! - `keel`, `keel-future`, `keel-epoll`, `keel-direct`: keel's echo example
//!   (`--handler fiber` / `future`, `--backend epoll`, `--direct`: fiber handlers on
//!   connections in the ring's fixed-file table) as a child process ([`keel_server`]),
//!   SIGINT at the end;
//! - `monoio`, `tokio`, `io-uring`, `io-uring-mshot`, `monoio-legacy`: in-process server threads
//!   ([`monoio_server`], [`tokio_server`], [`uring_server`] with its two shapes
//!   [`uring_linked`] and [`uring_multishot`]; `monoio-legacy`, monoio's epoll driver:
//!   `monoio_legacy_server`, built only with keel-bench's feature `monoio-legacy`, in
//!   which `monoio` is left out: see `crate::features`) that stop by themselves once the bench
//!   raises their stop flag and makes one last connection (their accept loop sees the
//!   flag, closes the listener and waits for its connections to end).

mod alone;
mod client;
pub mod cpu;
mod host;
mod keel_server;
#[cfg(feature = "monoio-legacy")]
mod monoio_legacy_server;
mod monoio_server;
mod placement;
mod tokio_server;
mod uring_linked;
mod uring_multishot;
mod uring_server;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

pub use host::{cpus, pin, raise_descriptor_limit};

/// Bytes per message.
pub const MSG: usize = 64;

/// The servers, in the order the cases list them.
pub const SERVERS: [&str; 9] = [
    "keel",
    "keel-future",
    "monoio",
    "tokio",
    "io-uring",
    "io-uring-mshot",
    "keel-epoll",
    "monoio-legacy",
    "keel-direct",
];

/// How long and how often to measure.
#[derive(Copy, Clone, Debug)]
pub struct Params {
    /// Client connections.
    pub conns: usize,
    /// Load before each measured window.
    pub warmup: Duration,
    /// Each slice's measured window.
    pub window: Duration,
    /// Slices per server.
    pub rounds: usize,
    /// One server up at a time, started and stopped around each of its slices ([`alone`]),
    /// instead of all up for the whole run.
    pub alone: bool,
}

impl Params {
    /// The full run: 64 connections, 0.4 s windows (10 s of load per server, for the tick-sampled CPU time), 25 rounds (odd: a true median).
    pub const FULL: Params = Params {
        conns: 64,
        warmup: Duration::from_millis(100),
        window: Duration::from_millis(400),
        rounds: 25,
        alone: false,
    };
    /// The smoke run: 8 connections, 0.2 s, one round.
    pub const QUICK: Params = Params {
        conns: 8,
        warmup: Duration::from_millis(50),
        window: Duration::from_millis(200),
        rounds: 1,
        alone: false,
    };
    /// A large point of the scaling curve (set `conns`, and `alone` past what every
    /// server up at once holds): 0.2 s warm-ups, 1 s windows, 7 rounds.
    pub const LONG: Params = Params {
        conns: 1,
        warmup: Duration::from_millis(200),
        window: Duration::from_millis(1000),
        rounds: 7,
        alone: false,
    };
    /// A point of the scaling curve (set `conns`): 0.3 s windows, 9 rounds.
    pub const CURVE: Params = Params {
        conns: 1,
        warmup: Duration::from_millis(100),
        window: Duration::from_millis(300),
        rounds: 9,
        alone: false,
    };
}

/// One slice's figures, or a server's medians.
#[derive(Copy, Clone, Debug, Default)]
pub struct Figures {
    /// Echoed messages per second.
    pub msgs_per_sec: f64,
    /// Median round trip, ns.
    pub p50_ns: f64,
    /// 99th-percentile round trip, ns.
    pub p99_ns: f64,
    /// Server user-space CPU time per message, ns (a server's medians only: 0 for one
    /// slice, see the module doc).
    pub cpu_ns: f64,
    /// Server CPU time per message, user and system, ns (likewise pooled).
    pub all_cpu_ns: f64,
}

/// One slice of one server's load: its figures (CPU time is per run, not per slice) and
/// the messages it echoed.
#[derive(Copy, Clone, Debug)]
struct Trial {
    figures: Figures,
    /// The 90th and 99.9th-percentile round trips, ns (printed, not reported).
    p90_ns: f64,
    p999_ns: f64,
    /// Messages echoed in the whole slice (warm-up and drain too).
    echoed: u64,
}

/// Measures `servers` (names from [`SERVERS`]), all up at once, in `p.rounds` rounds of
/// one slice each, in an order rotated each round; returns each server's medians, in
/// the order given.
pub fn measure(servers: &[&'static str], p: Params) -> Result<Vec<Figures>, String> {
    if p.alone {
        let (samples, cpu) = alone::load(servers, p)?;
        return Ok(summary(servers, p, &samples, &cpu));
    }
    // Both ends of every connection of an in-process server, the client's end of a child
    // server's, and room for the rest.
    let ends: usize = servers.iter().map(|s| if s.starts_with("keel") { 1 } else { 2 }).sum();
    raise_descriptor_limit(ends * p.conns + 512)?;
    let cpus = cpus()?;
    let mut up: Vec<Running> = Vec::with_capacity(servers.len());
    let mut started = Ok(());
    for s in servers {
        match start(s, cpus.0, p.conns.max(256)) {
            Ok(r) => up.push(r),
            Err(e) => {
                started = Err(format!("echo server {s}: {e}"));
                break;
            }
        }
    }
    let targets: Vec<(SocketAddr, &cpu::Whose)> = up.iter().map(|r| (r.addr, &r.cpu)).collect();
    let loaded = started.and_then(|()| {
        std::thread::scope(|sc| {
            sc.spawn(|| {
                pin(cpus.1)?;
                load(servers, &targets, p, cpus)
            })
            .join()
            .unwrap_or_else(|_| Err("the load generator panicked".into()))
        })
    });
    // Stop every server that started, whatever the load did (its connections are closed
    // by now); report the load's error first.
    let stopped = up
        .into_iter()
        .zip(servers)
        .map(|(r, s)| (r.stop)().map_err(|e| format!("echo server {s}: {e}")))
        .fold(Ok(()), Result::and);
    let (samples, cpu) = loaded?;
    stopped?;
    Ok(summary(servers, p, &samples, &cpu))
}

/// Each server's medians from its slices and CPU time, printed with the goal lines.
fn summary(servers: &[&'static str], p: Params, samples: &[Vec<Trial>], cpu: &[CpuTime]) -> Vec<Figures> {
    let medians: Vec<Figures> = samples.iter().zip(cpu).map(|(s, &(u, a))| medians(s, u, a)).collect();
    for ((name, m), s) in servers.iter().zip(&medians).zip(samples) {
        let med = |get: fn(&Trial) -> f64| crate::harness::median(&mut s.iter().map(get).collect::<Vec<_>>());
        eprintln!(
            "echo {name:<14} {} conns{}, medians of {} slices: {:>7.0} msgs/s  p50 {:>6.1} us  p90 {:>6.1}  p99 {:>6.1}  p99.9 {:>6.1}  cpu {:>5.0} ns/msg, user {:>4.0} (pooled over {} msgs)",
            p.conns,
            if p.alone { " (alone)" } else { "" },
            s.len(),
            m.msgs_per_sec,
            m.p50_ns / 1e3,
            med(|t| t.p90_ns) / 1e3,
            m.p99_ns / 1e3,
            med(|t| t.p999_ns) / 1e3,
            m.all_cpu_ns,
            m.cpu_ns,
            s.iter().map(|t| t.echoed).sum::<u64>()
        );
    }
    goals(servers, &medians, samples);
    medians
}

/// A server's (user, whole) CPU time, ns.
type CpuTime = (u64, u64);

/// Connects to every server (its address and whose CPU time it is), then loads them one
/// slice at a time, round after round (on the load generator's CPU). Each round line
/// shows the placement probe made before it. Returns each server's slices and its user
/// and whole CPU time over the whole run, ns.
fn load(
    servers: &[&'static str],
    targets: &[(SocketAddr, &cpu::Whose)],
    p: Params,
    cpus: (usize, usize),
) -> Result<(Vec<Vec<Trial>>, Vec<CpuTime>), String> {
    let mut loads = Vec::with_capacity(targets.len());
    for ((addr, _), s) in targets.iter().zip(servers) {
        loads.push(client::Load::connect(*addr, p.conns).map_err(|e| format!("echo server {s}: {e}"))?);
    }
    // Room for 5 M messages/s, far above what loopback TCP does on one core.
    let mut lat: Vec<u32> = Vec::with_capacity((p.window.as_secs_f64() * 5e6) as usize + 1024);
    let mut samples = vec![Vec::with_capacity(p.rounds); servers.len()];
    let cpu_now =
        || targets.iter().map(|(_, w)| Ok((w.user_ns()?, w.on_cpu_ns()?))).collect::<Result<Vec<CpuTime>, String>>();
    let cpu0 = cpu_now()?;
    for round in 0..p.rounds {
        let apart = placement::probe(cpus.0, cpus.1).map_err(|e| format!("echo: {e}"))?;
        let mut line = format!("echo {} conns round {}/{} (cpus {apart:.0} ns apart):", p.conns, round + 1, p.rounds);
        for k in 0..servers.len() {
            let i = (round + k) % servers.len();
            lat.clear();
            let t = loads[i].slice(p, &mut lat).and_then(|w| trial(w, &mut lat));
            let t = t.map_err(|e| format!("echo server {}: {e}", servers[i]))?;
            let f = t.figures;
            line += &format!(
                "  {} {:.0}K p50 {:.0} p99 {:.0} us",
                servers[i],
                f.msgs_per_sec / 1e3,
                f.p50_ns / 1e3,
                f.p99_ns / 1e3
            );
            samples[i].push(t);
        }
        eprintln!("{line}");
    }
    let cpu = cpu_now()?.iter().zip(&cpu0).map(|(b, a)| (b.0.saturating_sub(a.0), b.1.saturating_sub(a.1))).collect();
    Ok((samples, cpu))
}

/// A slice's figures from what the load generator measured and the round trips.
fn trial(w: client::Window, lat: &mut [u32]) -> Result<Trial, String> {
    if w.msgs == 0 || lat.is_empty() {
        return Err("no message was echoed in the measured window".into());
    }
    let n = lat.len();
    let mut at = |q: usize| *lat.select_nth_unstable(n * q / 1000).1 as f64;
    let (p50, p90, p99, p999) = (at(500), at(900), at(990), at(999));
    let figures = Figures {
        msgs_per_sec: w.msgs as f64 / w.elapsed.as_secs_f64(),
        p50_ns: p50,
        p99_ns: p99,
        ..Figures::default()
    };
    Ok(Trial { figures, p90_ns: p90, p999_ns: p999, echoed: w.echoed })
}

/// The medians of a server's slices, and its CPU time per message: `cpu_ns` its user
/// time over the whole run, `all_cpu_ns` its whole CPU time, over every message it echoed.
fn medians(s: &[Trial], cpu_ns: u64, all_cpu_ns: u64) -> Figures {
    let med =
        |get: fn(&Figures) -> f64| crate::harness::median(&mut s.iter().map(|t| get(&t.figures)).collect::<Vec<_>>());
    // Below one tick over the whole run: count half a tick.
    let cpu = if cpu_ns == 0 { 0.5e9 / cpu::clock_ticks() as f64 } else { cpu_ns as f64 };
    let echoed = s.iter().map(|t| t.echoed).sum::<u64>().max(1) as f64;
    Figures {
        msgs_per_sec: med(|f| f.msgs_per_sec),
        p50_ns: med(|f| f.p50_ns),
        p99_ns: med(|f| f.p99_ns),
        cpu_ns: cpu / echoed,
        all_cpu_ns: all_cpu_ns.max(1) as f64 / echoed,
    }
}

/// Prints keel's ratios against the goals (stderr), when the peers were measured: for
/// throughput and p99 the median of the per-round ratios (`paired`) and the ratio of
/// the medians; for CPU per message the pooled ratio.
fn goals(servers: &[&'static str], m: &[Figures], samples: &[Vec<Trial>]) {
    let get = |name: &str| servers.iter().position(|s| *s == name);
    let (Some(monoio), Some(uring), mshot) = (get("monoio"), get("io-uring"), get("io-uring-mshot")) else { return };
    let ok = |met: bool| if met { "met" } else { "NOT met" };
    let msgs = |f: &Figures| f.msgs_per_sec;
    let p99 = |f: &Figures| f.p99_ns;
    for name in ["keel", "keel-future", "keel-epoll", "keel-direct"] {
        let Some(k) = get(name) else { continue };
        let (a, a_m) = (paired(samples, k, monoio, msgs), msgs(&m[k]) / msgs(&m[monoio]));
        let (b, b_m) = (paired(samples, k, uring, msgs), msgs(&m[k]) / msgs(&m[uring]));
        let (c, c_m) = (paired(samples, k, monoio, p99), p99(&m[k]) / p99(&m[monoio]));
        let d = m[k].cpu_ns / m[monoio].cpu_ns;
        let ms = mshot.map_or(String::new(), |u| {
            let (e, e_m) = (paired(samples, k, u, msgs), msgs(&m[k]) / msgs(&m[u]));
            format!(", {e:.2}x io-uring-mshot [{e_m:.2}x] (>= 1.0 {})", ok(e >= 1.0))
        });
        eprintln!(
            "echo goals, {name} (paired by round; of the medians in brackets): msgs/s {a:.2}x monoio [{a_m:.2}x] (>= 1.0 {}), {b:.2}x io-uring [{b_m:.2}x] (>= 1.0 {}){ms}; p99 {c:.2}x monoio [{c_m:.2}x] (<= 1.0 {}); user cpu/msg {d:.2}x monoio, pooled (<= 0.6 {})",
            ok(a >= 1.0),
            ok(b >= 1.0),
            ok(c <= 1.0),
            ok(d <= 0.6)
        );
    }
}

/// The median over rounds of `get` of server `a`'s slice over `get` of server `b`'s.
fn paired(samples: &[Vec<Trial>], a: usize, b: usize, get: fn(&Figures) -> f64) -> f64 {
    let mut r: Vec<f64> = samples[a].iter().zip(&samples[b]).map(|(x, y)| get(&x.figures) / get(&y.figures)).collect();
    crate::harness::median(&mut r)
}

/// Starts `server` with its serving thread on `cpu` (keel's with `handlers` handler
/// tasks: the connections it holds at once); returns once it listens. A server this build
/// leaves out (`crate::features`) is an error saying which build has it.
pub fn start(server: &str, cpu: usize, handlers: usize) -> Result<Running, String> {
    if let Some(why) = crate::features::left_out(server) {
        return Err(why.into());
    }
    match server {
        "keel" => keel_server::start(cpu, "fiber", "ring", handlers, false),
        "keel-future" => keel_server::start(cpu, "future", "ring", handlers, false),
        "keel-epoll" => keel_server::start(cpu, "fiber", "epoll", handlers, false),
        "keel-direct" => keel_server::start(cpu, "fiber", "ring", handlers, true),
        "monoio" => in_process(cpu, monoio_server::serve),
        #[cfg(feature = "monoio-legacy")]
        "monoio-legacy" => in_process(cpu, monoio_legacy_server::serve),
        "tokio" => in_process(cpu, tokio_server::serve),
        "io-uring" => in_process(cpu, uring_linked::serve),
        "io-uring-mshot" => in_process(cpu, uring_multishot::serve),
        _ => Err("no such server".into()),
    }
}

/// A server that is up: where it listens, whose CPU time it is, how it stops.
pub struct Running {
    /// Its listening address.
    pub addr: SocketAddr,
    /// Whose CPU time is the server's.
    pub cpu: cpu::Whose,
    /// Stops it and waits (bounded) until it has.
    pub stop: Box<dyn FnOnce() -> Result<(), String>>,
}

impl Running {
    /// The resident set size of the process the server runs in, bytes.
    pub fn rss(&self) -> Result<u64, String> {
        self.cpu.rss()
    }
}

/// An in-process server: `serve` runs on its own thread, pinned to `cpu`, with a
/// listener on an ephemeral loopback port, until it sees its stop flag. The listener's
/// backlog is [`BACKLOG`], as keel's example listens: std's 128 would make a burst of
/// connects wait for SYN retransmits (1 s each) while the server drains its queue.
type Serve = fn(TcpListener, &AtomicBool) -> Result<(), String>;

/// The listen backlog of every server.
const BACKLOG: i32 = 4096;

fn in_process(cpu: usize, serve: Serve) -> Result<Running, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    // SAFETY: `l` is a listening socket this function owns; listen on it again only sets
    // its backlog.
    if unsafe { libc::listen(l.as_raw_fd(), BACKLOG) } != 0 {
        return Err(format!("listen: {}", std::io::Error::last_os_error()));
    }
    let addr = l.local_addr().map_err(|e| format!("local_addr: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready) = mpsc::channel::<Result<libc::pid_t, String>>();
    let (done_tx, done) = mpsc::channel::<Result<(), String>>();
    let flag = stop.clone();
    let h = std::thread::Builder::new()
        .name("echo-server".into())
        .spawn(move || {
            let r = pin(cpu).and_then(|()| {
                // SAFETY: gettid has no preconditions.
                let _ = ready_tx.send(Ok(unsafe { libc::gettid() }));
                serve(l, &flag)
            });
            if let Err(e) = &r {
                let _ = ready_tx.send(Err(e.clone()));
            }
            let _ = done_tx.send(r);
        })
        .map_err(|e| format!("spawn: {e}"))?;
    let tid =
        ready.recv_timeout(Duration::from_secs(5)).map_err(|_| "the server thread did not start".to_string())??;
    let stop = Box::new(move || {
        // Release: pairs with the server's Acquire load after its accept returns.
        stop.store(true, Ordering::Release);
        // The last connection: wakes the accept loop, which sees the flag.
        let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
        match done.recv_timeout(Duration::from_secs(5)) {
            Ok(r) => {
                let _ = h.join();
                r
            }
            Err(_) => Err("the server thread did not stop within 5 s (left running)".into()),
        }
    });
    Ok(Running { addr, cpu: cpu::Whose::Thread(tid), stop })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn made_trial(msgs_per_sec: f64, p99_ns: f64) -> Trial {
        Trial { figures: Figures { msgs_per_sec, p99_ns, ..Figures::default() }, p90_ns: 0.0, p999_ns: 0.0, echoed: 1 }
    }

    #[test]
    fn a_left_out_server_does_not_start() {
        let left = if cfg!(feature = "monoio-legacy") { "monoio" } else { "monoio-legacy" };
        let e = start(left, 0, 1).err().expect("left out of this build");
        assert_eq!(Some(e.as_str()), crate::features::left_out(left), "says which build has it");
    }

    #[test]
    fn paired_ratios_follow_the_rounds_not_the_medians() {
        // Server 0 beats server 1 by 10% in every round, but its slices met the slow
        // level more often: the medians say it loses, the rounds say it wins.
        let a = vec![made_trial(110.0, 900.0), made_trial(110.0, 900.0), made_trial(220.0, 450.0)];
        let b = vec![made_trial(100.0, 1000.0), made_trial(200.0, 500.0), made_trial(200.0, 500.0)];
        let s = [a, b];
        assert!((paired(&s, 0, 1, |f| f.msgs_per_sec) - 1.1).abs() < 1e-9);
        assert!((paired(&s, 0, 1, |f| f.p99_ns) - 0.9).abs() < 1e-9);
        let (ma, mb) = (medians(&s[0], 0, 0), medians(&s[1], 0, 0));
        assert!(ma.msgs_per_sec / mb.msgs_per_sec < 1.0, "the medians alone would call it a loss");
    }
}
