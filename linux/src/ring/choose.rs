//! Choosing the ring driver's backend (`RingConfig::backend`). Chooser rules:
//! 1. `Auto` sets up io_uring and checks that one enter and one register call work; if
//!    any of the three fails with `EPERM`, `EACCES` or `ENOSYS` (a seccomp profile, a
//!    security module, `kernel.io_uring_disabled`, a kernel without io_uring), the epoll
//!    engine is used instead. Any other failure (`ENOMEM`: the locked-memory limit) is
//!    returned: io_uring exists, and hiding that failure would hide a misconfiguration.
//! 2. `KEEL_DRIVER=ring` or `KEEL_DRIVER=epoll` in the environment forces `Auto` drivers
//!    of the process either way (read once); any other value is ignored, with a notice.
//! 3. `Ring` never falls back; `Epoll` never touches io_uring.
//! 4. A configuration that needs io_uring (registered buffers or files, a polled ring, a
//!    worker-pool cap or attachment) is refused on the epoll engine with `Unsupported`
//!    naming the setting, never silently dropped.
//! 5. The choice is said on one log line (`notice.rs`): the backend and, for a fallback,
//!    why io_uring was not used; [`RingDriver::backend`](super::RingDriver::backend)
//!    answers the same without logging.
#![allow(unsafe_code)] // one enter that submits nothing, to check io_uring_enter is allowed

use super::availability::{classify, io_uring_disabled_sysctl};
use super::config::{BackendChoice, RingConfig};
use super::kernel::not_on_epoll;
use super::setup::{self, RingFlags};
use crate::epoll::engine::{Engine, EngineConfig};
use crate::notice::notice;
use io_uring::IoUring;
use keel_core::Errno;
use std::io;
use std::sync::OnceLock;

/// What the chooser set up.
#[allow(clippy::large_enum_variant)] // the ring inline: boxing it would add a load to every push and reap
pub(crate) enum Chosen {
    Ring(IoUring, RingFlags),
    Epoll(Box<Engine>),
}

/// The errnos that mean "io_uring is not allowed or not there" (chooser rule 1).
fn denies(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES | libc::ENOSYS))
}

/// Chooser rule 2: the process-wide override, read once.
fn forced() -> Option<BackendChoice> {
    static FORCED: OnceLock<Option<BackendChoice>> = OnceLock::new();
    *FORCED.get_or_init(|| match std::env::var("KEEL_DRIVER").ok()?.as_str() {
        "ring" | "io_uring" => Some(BackendChoice::Ring),
        "epoll" => Some(BackendChoice::Epoll),
        other => {
            notice!(warn, "KEEL_DRIVER={other:?} is neither \"ring\" nor \"epoll\": ignored");
            None
        }
    })
}

/// Chooser rule 1's checks on a ring just made: one enter (submitting nothing) and one
/// register call (the opcode probe).
fn usable(ring: &IoUring) -> io::Result<()> {
    // SAFETY: no SQEs, no extended argument, no flags: an enter that does nothing.
    unsafe { ring.submitter().enter::<libc::sigset_t>(0, 0, 0, None) }?;
    let mut probe = io_uring::Probe::new();
    ring.submitter().register_probe(&mut probe)
}

/// Chooser rule 4.
fn ring_only_setting(cfg: &RingConfig) -> Option<&'static str> {
    if cfg.registered_buffers > 0 {
        Some("RingConfig::registered_buffers")
    } else if cfg.registered_files > 0 {
        Some("RingConfig::registered_files")
    } else if cfg.iopoll {
        Some("RingConfig::iopoll")
    } else if cfg.attach_wq.is_some() {
        Some("RingConfig::attach_wq")
    } else if cfg.iowq_max_workers != [0, 0] {
        Some("RingConfig::iowq_max_workers")
    } else {
        None
    }
}

fn engine(cfg: &RingConfig, why: &str) -> io::Result<Chosen> {
    if let Some(setting) = ring_only_setting(cfg) {
        return Err(not_on_epoll(setting));
    }
    // Sized as the kernel sizes a ring (`io_uring_setup`: each rounded up to a power of
    // two; `RingConfig`'s check keeps both within the kernel's maximum, so no overflow),
    // so `sq_entries`/`cq_entries` and the room they give are the same on either backend.
    let (sq, cq) = (cfg.entries.next_power_of_two(), cfg.cq_entries.max(cfg.entries).next_power_of_two());
    let engine = Engine::new(sq, cq, EngineConfig { file_threads: cfg.file_threads })?;
    notice!(info, "keel: ring driver on the epoll backend ({why})");
    Ok(Chosen::Epoll(Box::new(engine)))
}

/// Sets up the backend `cfg` asks for (the chooser rules).
pub(crate) fn choose(cfg: &RingConfig) -> io::Result<Chosen> {
    let choice = match cfg.backend {
        BackendChoice::Auto => forced().unwrap_or(BackendChoice::Auto),
        other => other,
    };
    if choice == BackendChoice::Epoll {
        return engine(cfg, "asked for");
    }
    let built = setup::build(cfg.entries, cfg.cq_entries, cfg.attach_wq.map(|p| p.raw()), cfg.iopoll)
        .and_then(|(ring, flags)| usable(&ring).map(|()| (ring, flags)));
    match built {
        Ok((ring, flags)) => {
            notice!(info, "keel: ring driver on io_uring");
            Ok(Chosen::Ring(ring, flags))
        }
        Err(e) if choice == BackendChoice::Auto && denies(&e) => {
            let errno = Errno(e.raw_os_error().unwrap_or(libc::EIO));
            engine(cfg, &format!("io_uring is unavailable: {}", classify(errno, io_uring_disabled_sysctl())))
        }
        Err(e) => Err(e),
    }
}
