//! `monoio-legacy`: monoio's legacy driver (`RuntimeBuilder::<LegacyDriver>`, monoio's
//! feature `legacy`: readiness on epoll through mio, for where io_uring is switched off)
//! on one thread, serving exactly as the `monoio` server does (its accept loop and
//! per-connection `echo`): the epoll peer of `keel-epoll` beside `tokio`. Built only with
//! keel-bench's feature `monoio-legacy`, since monoio's `legacy` weakens its io_uring
//! driver (`crate::features`).

use std::net::TcpListener;
use std::sync::atomic::AtomicBool;

/// Serves `l` until the stop flag, then until its connections end.
pub fn serve(l: TcpListener, stop: &AtomicBool) -> Result<(), String> {
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .build()
        .map_err(|e| format!("monoio legacy runtime: {e}"))?;
    // The legacy driver tries each accept first and waits on EAGAIN: a blocking listener
    // would block the thread, and every connection with it, until the next connect.
    l.set_nonblocking(true).map_err(|e| format!("listener: {e}"))?;
    rt.block_on(super::monoio_server::accept_and_echo(l, stop))
}
