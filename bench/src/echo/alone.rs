//! The echo measurement with one server up at a time ([`Params::alone`]), for connection
//! counts whose descriptors do not fit with every server up at once (4,096 connections:
//! an in-process server holds both ends of each, 8,192 descriptors, and the hard limit
//! here is 20,000).
//!
//! The rounds and their rotated order are those of the all-up measurement, so every
//! server still meets the VM's throughput levels alike; what changes is that each slice
//! brings its server up and down again:
//! 1. start the server (its serving thread pinned to the server CPU, as always) and open
//!    the connections;
//! 2. prime: a short slice ([`Params::warmup`] long, not counted) in which every
//!    connection echoes, so each handler has started and touched what it keeps per
//!    connection (a fresh fiber stack, a task slot, a buffer): first-touch page faults
//!    stay out of the CPU time;
//! 3. read the server's CPU time, run the slice, read it again: the server's CPU time over
//!    the slice's messages (warm-up, window and drain), summed over its slices;
//! 4. close the connections and stop the server.
//!
//! Step 3 reads the tick-sampled user time around each slice, so `echo_cpu`'s user figure
//! carries a tick's rounding per slice here (see the module doc of `echo`); the curve
//! uses the whole CPU time, `schedstat`'s exact count, which does not.

use super::{CpuTime, Params, Running, Trial, client, cpus, pin, placement, raise_descriptor_limit, start, trial};

/// Loads `servers` one at a time, a slice each per round in an order rotated each round
/// (on the load generator's CPU); returns each server's slices and its user and whole CPU
/// time summed over them, ns.
pub(super) fn load(servers: &[&'static str], p: Params) -> Result<(Vec<Vec<Trial>>, Vec<CpuTime>), String> {
    // Both ends of one in-process server's connections, and room for the rest.
    raise_descriptor_limit(2 * p.conns + 512)?;
    let cpus = cpus()?;
    std::thread::scope(|sc| {
        sc.spawn(|| {
            pin(cpus.1)?;
            rounds(servers, p, cpus)
        })
        .join()
        .unwrap_or_else(|_| Err("the load generator panicked".into()))
    })
}

/// The rounds, on the load generator's CPU.
fn rounds(
    servers: &[&'static str],
    p: Params,
    cpus: (usize, usize),
) -> Result<(Vec<Vec<Trial>>, Vec<CpuTime>), String> {
    // Room for 5 M messages/s, as in the all-up measurement.
    let mut lat: Vec<u32> = Vec::with_capacity((p.window.as_secs_f64() * 5e6) as usize + 1024);
    let mut samples = vec![Vec::with_capacity(p.rounds); servers.len()];
    let mut cpu: Vec<CpuTime> = vec![(0, 0); servers.len()];
    for round in 0..p.rounds {
        let apart = placement::probe(cpus.0, cpus.1).map_err(|e| format!("echo: {e}"))?;
        let mut line =
            format!("echo {} conns alone, round {}/{} (cpus {apart:.0} ns apart):", p.conns, round + 1, p.rounds);
        for k in 0..servers.len() {
            let i = (round + k) % servers.len();
            let (t, used) =
                one(servers[i], p, cpus.0, &mut lat).map_err(|e| format!("echo server {}: {e}", servers[i]))?;
            cpu[i] = (cpu[i].0 + used.0, cpu[i].1 + used.1);
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
    Ok((samples, cpu))
}

/// One slice of `server`, started on `cpu` for it and stopped after: its figures and the
/// server's (user, whole) CPU time over the slice.
fn one(server: &str, p: Params, cpu: usize, lat: &mut Vec<u32>) -> Result<(Trial, CpuTime), String> {
    let up = start(server, cpu, p.conns.max(256))?;
    let measured = slice(&up, p, lat);
    // Stopped whatever the slice did (its connections are closed by now); the slice's
    // error first.
    let stopped = (up.stop)();
    let r = measured?;
    stopped?;
    Ok(r)
}

/// Steps 1-3 of the module doc on a server that is up.
fn slice(up: &Running, p: Params, lat: &mut Vec<u32>) -> Result<(Trial, CpuTime), String> {
    let mut load = client::Load::connect(up.addr, p.conns)?;
    load.slice(Params { window: p.warmup, ..p }, lat)?;
    lat.clear();
    let before = (up.cpu.user_ns()?, up.cpu.on_cpu_ns()?);
    let w = load.slice(p, lat)?;
    let after = (up.cpu.user_ns()?, up.cpu.on_cpu_ns()?);
    let t = trial(w, lat)?;
    Ok((t, (after.0.saturating_sub(before.0), after.1.saturating_sub(before.1))))
}
