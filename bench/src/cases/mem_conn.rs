//! `mem_conn` (bytes per connection): the resident memory an echo server needs to hold
//! [`CONNS`] live connections, divided by [`CONNS`].
//!
//! Each server is measured once per bench process, in a memory child of its own (the
//! bench binary run again with `KEEL_BENCH_MEM=conn-<server>`, like `mem_task`): the
//! child raises its descriptor limit, reads the resident set size of an empty process,
//! starts the server ([`servers`]' start, pinned as in the echo measurement), opens
//! [`CONNS`] blocking loopback connections one after another and has each echo one
//! 64-byte message (so every connection's handler has started and touched what it
//! keeps per connection), then reads the server's resident set size again; the figure is
//! the growth over [`CONNS`]. It so counts all the server's memory, its fixed part too
//! (runtime, ring, tables: a few bytes per connection at this count).
//!
//! - in-process servers (monoio, tokio, io-uring, io-uring-mshot): the child's own
//!   resident set, before the server started and with the connections held (the client
//!   sockets' user-space part is one preallocated `Vec`, reserved before the first
//!   reading);
//! - keel, keel-future (the echo example, a child of the child, `--conns` = [`CONNS`]
//!   handlers): its resident set with the connections held, less that of the same
//!   example started with one handler and no connection (an empty process of the same
//!   binary).

use super::echo::servers;
use crate::harness::{Case, Impl, Timed, Unit};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::OnceLock;
use std::time::Duration;

/// Connections the servers hold.
pub const CONNS: usize = 4096;

/// The servers, as the child is told them.
const KINDS: [&str; 6] = ["keel", "keel-future", "monoio", "tokio", "io-uring", "io-uring-mshot"];

/// The case.
pub const CASE: Case = Case {
    name: "mem_conn",
    unit: Unit::Bytes,
    impls: &[
        Impl { name: KINDS[0], run: report::<0> },
        Impl { name: KINDS[1], run: report::<1> },
        Impl { name: KINDS[2], run: report::<2> },
        Impl { name: KINDS[3], run: report::<3> },
        Impl { name: KINDS[4], run: report::<4> },
        Impl { name: KINDS[5], run: report::<5> },
    ],
};

/// The child kind of a server (`KEEL_BENCH_MEM`'s value).
pub const PREFIX: &str = "conn-";

/// The bytes per connection of server `K`, measured in a child once per process.
fn report<const K: usize>(iters: u64) -> Timed {
    static R: [OnceLock<Result<f64, String>>; KINDS.len()] = [const { OnceLock::new() }; KINDS.len()];
    let bytes = R[K].get_or_init(|| super::memory::spawn_child(&format!("{PREFIX}{}", KINDS[K]))).clone()?;
    Ok(Duration::from_nanos((bytes.max(1.0) * iters as f64) as u64))
}

/// The memory child's work for `server`: its bytes per connection.
pub fn child(server: &str) -> Result<f64, String> {
    if !KINDS.contains(&server) {
        return Err(format!("unknown server {server}"));
    }
    servers::raise_descriptor_limit(2 * CONNS + 256)?;
    let cpu = servers::cpus()?.0;
    let mut streams: Vec<TcpStream> = Vec::with_capacity(CONNS);
    let before = match server {
        "keel" | "keel-future" => {
            let empty = servers::start(server, cpu, 1)?;
            let rss = empty.rss();
            (empty.stop)()?;
            rss?
        }
        _ => servers::cpu::own_rss()?,
    };
    let up = servers::start(server, cpu, CONNS)?;
    let held = hold(&up, &mut streams);
    let after = held.and_then(|()| up.rss());
    drop(streams);
    let stopped = (up.stop)();
    let after = after?;
    stopped?;
    Ok(after.saturating_sub(before) as f64 / CONNS as f64)
}

/// Opens [`CONNS`] connections to `up`, each echoing one message, into `streams`.
fn hold(up: &servers::Running, streams: &mut Vec<TcpStream>) -> Result<(), String> {
    let mut echo = [0u8; servers::MSG];
    for i in 0..CONNS {
        let mut s = TcpStream::connect_timeout(&up.addr, Duration::from_secs(5))
            .map_err(|e| format!("connection {i} of {CONNS}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| format!("timeout: {e}"))?;
        let msg = [i as u8; servers::MSG];
        s.write_all(&msg).and_then(|()| s.read_exact(&mut echo)).map_err(|e| format!("connection {i}: echo: {e}"))?;
        if echo != msg {
            return Err(format!("connection {i}: the echo is not what was sent"));
        }
        streams.push(s);
    }
    Ok(())
}
