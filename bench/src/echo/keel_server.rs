//! `keel`, `keel-future`, `keel-epoll`, `keel-direct`: keel's echo example as a child
//! process, `--addr 127.0.0.1:PORT --handler fiber|future --backend ring|epoll --conns N`
//! (one thread, N handlers: the connections it holds at once; its other defaults), with
//! `--direct` for `keel-direct` (connections accepted into the ring's fixed-file table and
//! named by their slot, as the hand-written io_uring servers do), started from
//! a thread pinned to the server CPU so that all its threads inherit the pinning, and
//! stopped with SIGINT (it prints its summary and exits; SIGKILL after 10 s).
//!
//! The binary is the example built in the bench's own profile, beside the bench's
//! executable: `<target>/<profile>/examples/echo`, made by
//! `cargo build --release -p keel-linux --example echo` (without `--release` for a debug
//! bench).

use super::Running;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The echo example beside this executable, or how to build it.
fn binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let dir = exe.parent().ok_or("the bench executable has no directory")?;
    let bin = dir.join("examples").join("echo");
    if bin.is_file() {
        return Ok(bin);
    }
    let release = if dir.ends_with("release") { "--release " } else { "" };
    Err(format!(
        "keel's echo example is not built: {} is missing; build it first with `cargo build {release}-p keel-linux --example echo`",
        bin.display()
    ))
}

/// Starts the example with `--handler handler --backend backend --conns handlers` (and
/// `--direct` if `direct`) on `cpu` and waits until it listens.
pub fn start(cpu: usize, handler: &str, backend: &str, handlers: usize, direct: bool) -> Result<Running, String> {
    let bin = binary()?;
    // A free port: the kernel's pick, released for the child to bind.
    let addr = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| format!("port: {e}"))?;
    let mut cmd = Command::new(&bin);
    let handlers = handlers.to_string();
    cmd.args(["--addr", &addr.to_string(), "--handler", handler, "--backend", backend, "--conns", &handlers])
        .args(direct.then_some("--direct"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Spawned from a thread pinned to `cpu`: the child inherits the affinity.
    let child = std::thread::scope(|s| {
        s.spawn(|| {
            super::pin(cpu)?;
            cmd.spawn().map_err(|e| format!("{}: {e}", bin.display()))
        })
        .join()
        .unwrap_or_else(|_| Err("spawning panicked".into()))
    })?;
    let pid = child.id();
    let mut child = Some(child);
    if let Err(e) = listening(child.as_mut().expect("just set"), addr) {
        let _ = stop(child.take().expect("just set"));
        return Err(e);
    }
    let stop = Box::new(move || stop(child.take().expect("stopped once")));
    Ok(Running { addr, cpu: super::cpu::Whose::Process(pid), stop })
}

/// Waits (at most 10 s) until `addr` takes connections.
fn listening(child: &mut Child, addr: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited before listening ({status})"));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(format!("not listening on {addr} after 10 s"))
}

/// SIGINT, then waits (at most 10 s, then SIGKILL) and checks the exit.
fn stop(mut child: Child) -> Result<(), String> {
    // SAFETY: kill has no memory preconditions; `child` is ours and not yet reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut killed = false;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                killed = true;
                break;
            }
        }
    }
    let out = child.wait_with_output().map_err(|e| format!("wait: {e}"))?;
    if killed || !out.status.success() {
        let how = if killed {
            "did not stop within 10 s of SIGINT".to_string()
        } else {
            format!("exited with {}", out.status)
        };
        return Err(format!("{how}; stderr: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}
