//! `tokio`: a current-thread tokio runtime with its I/O driver (epoll) on one thread:
//! an accept loop spawning one task per connection, each reading into its own 4 KiB
//! buffer and writing back what came with `write_all`. It stops accepting at the first
//! connection after the stop flag is raised, drops the listener and waits for its
//! connections.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Serves `l` until the stop flag, then until its connections end.
pub fn serve(l: TcpListener, stop: &AtomicBool) -> Result<(), String> {
    l.set_nonblocking(true).map_err(|e| format!("nonblocking: {e}"))?;
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_io().build().map_err(|e| format!("tokio runtime: {e}"))?;
    rt.block_on(async {
        let l = tokio::net::TcpListener::from_std(l).map_err(|e| format!("listener: {e}"))?;
        let mut conns = Vec::new();
        loop {
            let (s, _) = l.accept().await.map_err(|e| format!("accept: {e}"))?;
            // Acquire: pairs with the bench's Release store before its last connect.
            if stop.load(Ordering::Acquire) {
                break;
            }
            conns.push(tokio::spawn(echo(s)));
        }
        drop(l);
        for c in conns {
            let _ = c.await;
        }
        Ok(())
    })
}

async fn echo(mut s: TcpStream) {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf).await {
            Ok(n @ 1..) => {
                if s.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            _ => return,
        }
    }
}
