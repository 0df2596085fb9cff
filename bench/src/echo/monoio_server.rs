//! `monoio`: monoio's io_uring runtime (`RuntimeBuilder::<IoUringDriver>`, its defaults)
//! on one thread: an accept loop spawning one task per connection, each reading into
//! its own 4 KiB `Vec` and writing it back with `write_all` (ownership-passing
//! buffers, no allocation per message). It stops accepting at the first connection
//! after the stop flag is raised, drops the listener and waits for its connections.

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};

/// Serves `l` until the stop flag, then until its connections end.
pub fn serve(l: TcpListener, stop: &AtomicBool) -> Result<(), String> {
    let mut rt =
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().build().map_err(|e| format!("monoio runtime: {e}"))?;
    rt.block_on(accept_and_echo(l, stop))
}

/// The accept loop on whichever monoio driver runs it (also the `monoio-legacy`
/// server's): one task per connection; at the first connection after the stop flag it
/// drops the listener and waits for its connections.
pub(super) async fn accept_and_echo(l: TcpListener, stop: &AtomicBool) -> Result<(), String> {
    let l = monoio::net::TcpListener::from_std(l).map_err(|e| format!("listener: {e}"))?;
    let mut conns = Vec::new();
    loop {
        let (s, _) = l.accept().await.map_err(|e| format!("accept: {e}"))?;
        // Acquire: pairs with the bench's Release store before its last connect.
        if stop.load(Ordering::Acquire) {
            break;
        }
        conns.push(monoio::spawn(echo(s)));
    }
    drop(l);
    for c in conns {
        c.await;
    }
    Ok(())
}

/// One connection: read up to 4 KiB, write it all back, until EOF or an error (also the
/// `monoio-legacy` server's).
pub(super) async fn echo(mut s: TcpStream) {
    let mut buf = Vec::with_capacity(4096);
    loop {
        let (r, b) = s.read(buf).await;
        if !matches!(r, Ok(1..)) {
            return;
        }
        let (r, mut b) = s.write_all(b).await;
        if r.is_err() {
            return;
        }
        b.clear();
        buf = b;
    }
}
