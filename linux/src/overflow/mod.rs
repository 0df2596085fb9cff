//! Stack overflow reports: a SIGSEGV/SIGBUS handler that recognises a fault in a fiber
//! stack's guard region, says which task overflowed, and aborts.
//!
//! A fiber that runs off the bottom of its stack touches the `PROT_NONE` guard region
//! below it ([`MmapStacks`](crate::stack::MmapStacks)) and the kernel raises SIGSEGV. The
//! handler runs on the thread's alternate signal stack (the fiber's own stack is
//! exhausted), looks the fault address up in a fixed-capacity registry of guard regions,
//! and if it is in one writes exactly
//!
//! ```text
//! keel: stack overflow in task <id> (stack <size> bytes)
//! ```
//!
//! to stderr, then calls `abort()` (the process dies by SIGABRT). A fault anywhere else is
//! not ours: it goes to whatever handler was installed before (see overflow rule 5).
//!
//! # Rules (cited as "overflow rule N")
//!
//! 1. **Installed once per process**, on the first [`install`] (every `MmapStacks::new`
//!    calls it), for SIGSEGV and SIGBUS, with `SA_SIGINFO | SA_ONSTACK`. The previous
//!    actions are kept for chaining; each is published with a Release store of its
//!    `READY` flag, which the handler reads with Acquire. A fault that arrives between
//!    the `sigaction` and that store finds no previous action and is treated as if it
//!    had been `SIG_DFL`.
//! 2. **An alternate signal stack on every thread that runs fibers** ([`set_alt_stack`]),
//!    because `sigaltstack` is per thread and a handler for an overflow cannot run on the
//!    stack that overflowed. `MmapStacks::new` sets it on the creating thread; an
//!    executor is `!Send`, so that thread is the one that runs the fibers. A thread that
//!    already has an alternate stack of at least [`ALT_STACK_MIN`] bytes keeps it;
//!    otherwise keel maps one (with a guard page below it), and unmaps it when the
//!    thread exits. An overflow on a thread without an alternate stack cannot be
//!    reported: the kernel cannot deliver the signal and kills the process by SIGSEGV.
//! 3. **The registry** is a static array of [`REGISTRY_CAPACITY`] entries, each a guard
//!    region `[guard_lo, guard_hi)`, the usable stack size and the task id. An entry is
//!    claimed with a CAS on its `claimed` flag (after reserving a place in `used`, so a
//!    full registry costs one failed reservation, not a scan); only its claimer writes
//!    its range, inside a sequence lock (`seq` odd while writing), and clears it before
//!    giving the entry up. The handler scans every entry once, reads each range between
//!    two loads of `seq`, and skips an entry that changed meanwhile: such an entry
//!    belongs to a stack being mapped or unmapped, which is never the one the faulting
//!    thread stands on. Lock-free for writers, wait-free and bounded (one pass) for the
//!    handler. When the registry is full a stack still works, but is not registered: an
//!    overflow in it is a plain SIGSEGV (rule 5), with no task id.
//! 4. **The task id** is written by the stack's provider when the pool hands the stack to
//!    a task (`StackProvider::assigned`), on the executor's thread, outside the sequence
//!    lock: the only handler that can match this entry runs on the same thread, after
//!    that store in program order (the fiber runs only after the switch, a compiler
//!    barrier). 0 means "no task yet" (task ids start at 1).
//! 5. **Chaining.** A fault not in a registered guard region goes to the previous
//!    action: an `SA_SIGINFO` function gets `(sig, info, context)`, a plain function
//!    gets `(sig)`. `SIG_DFL` is restored and the handler returns, so the faulting
//!    instruction runs again and the default action kills the process with the right
//!    signal (a signal sent by `kill`/`raise` rather than by a fault is raised again,
//!    and is delivered when the handler returns). `SIG_IGN` ignores a sent signal and is
//!    treated as `SIG_DFL` for a fault, as the kernel itself does. The previous action's
//!    mask and flags other than `SA_SIGINFO` are not emulated. `errno` is saved and
//!    restored around the handler.
//!
//! # Why the handler is async-signal-safe
//!
//! It allocates nothing, takes no lock and uses no formatting machinery: the message is
//! assembled in a fixed buffer on the (alternate) stack, decimal numbers are formatted
//! by hand. It reads only atomics (the registry and the `READY` flags) and the previous
//! actions, which are written once before their flag is published and never again.
//! The calls it makes are all on POSIX's list of async-signal-safe functions:
//! `write(2)` (to fd 2, retried a bounded number of times), `abort(3)`, `sigaction(2)`,
//! `raise(3)`; and the `errno` location, which is thread-local by design for this use.
//! The previous handler is called as it would have been called by the kernel; its own
//! safety is its business.
// libc is needed for sigaction and sigaltstack (rustix offers neither), and the handler
// reads the kernel's raw `siginfo_t` and calls the previous handler through a pointer.
#![allow(unsafe_code)]

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::ptr;
use core::sync::atomic::{AtomicBool, Ordering};
use keel_core::Errno;
use libc::{c_int, c_void, siginfo_t};
use std::sync::OnceLock;

mod altstack;
mod registry;

pub use altstack::set_alt_stack;
use registry::lookup;
pub use registry::registered_stacks;
pub(crate) use registry::{register, set_task, unregister};

/// Guard regions the overflow handler can recognise at once (overflow rule 3).
pub const REGISTRY_CAPACITY: usize = 4096;

/// The smallest alternate signal stack keel accepts on a thread (overflow rule 2):
/// four times `SIGSTKSZ`, and at least 64 KiB.
pub const ALT_STACK_MIN: usize = if libc::SIGSTKSZ * 4 > 64 * 1024 { libc::SIGSTKSZ * 4 } else { 64 * 1024 };

// ---------------------------------------------------------------------------------------
// Installing the handler (overflow rule 1).

const SIGNALS: [c_int; 2] = [libc::SIGSEGV, libc::SIGBUS];

/// The actions in place before ours, one per signal of `SIGNALS`; each written once,
/// before its `READY` flag is set, and never again.
struct Previous([UnsafeCell<MaybeUninit<libc::sigaction>>; 2]);

// SAFETY: each cell is written once, by the installer inside `OnceLock`, before its
// `READY` flag is stored with Release; every reader checks the flag with Acquire first.
unsafe impl Sync for Previous {}

static PREVIOUS: Previous = Previous([const { UnsafeCell::new(MaybeUninit::uninit()) }; 2]);
static READY: [AtomicBool; 2] = [const { AtomicBool::new(false) }; 2];
static INSTALLED: OnceLock<Result<(), Errno>> = OnceLock::new();

fn last_errno() -> Errno {
    Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EINVAL))
}

/// Installs the overflow handler for SIGSEGV and SIGBUS, once per process (overflow
/// rule 1); later calls return the first call's result. `MmapStacks::new` calls it.
pub fn install() -> Result<(), Errno> {
    *INSTALLED.get_or_init(|| {
        for (i, &sig) in SIGNALS.iter().enumerate() {
            // SAFETY: an all-zero `sigaction` is a valid value (no handler, empty flags),
            // filled in below.
            let mut act: libc::sigaction = unsafe { core::mem::zeroed() };
            act.sa_sigaction = on_fault as *const () as usize;
            act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            let mut old = MaybeUninit::<libc::sigaction>::zeroed();
            // SAFETY: `act.sa_mask` is a valid sigset to initialise; `act` and `old` are
            // valid for the call; the handler is an `extern "C"` function with the
            // SA_SIGINFO signature.
            let rc = unsafe {
                libc::sigemptyset(&mut act.sa_mask);
                libc::sigaction(sig, &act, old.as_mut_ptr())
            };
            if rc != 0 {
                return Err(last_errno());
            }
            // SAFETY: only this closure writes the cell, once (OnceLock), and no reader
            // looks before the Release store below.
            unsafe { (*PREVIOUS.0[i].get()).write(old.assume_init()) };
            // Release: publishes the previous action to the handler's Acquire load.
            READY[i].store(true, Ordering::Release);
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------
// The handler (overflow rules 3-5; see "Why the handler is async-signal-safe").

extern "C" fn on_fault(sig: c_int, info: *mut siginfo_t, ctx: *mut c_void) {
    // SAFETY: the errno location is this thread's, valid for the thread's life.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: the kernel passes a valid `siginfo_t` to an SA_SIGINFO handler.
    let code = unsafe { (*info).si_code };
    // si_code > 0: sent by the kernel for a fault, so `si_addr` is the faulting address
    // (a signal from kill/raise has si_code <= 0 and no address).
    let fault = code > 0;
    if fault {
        // SAFETY: as above; for a fault the address member is the valid one.
        let addr = unsafe { (*info).si_addr() } as usize;
        if let Some((task, size)) = lookup(addr) {
            report(task, size);
            // SAFETY: abort is async-signal-safe and ends the process.
            unsafe { libc::abort() };
        }
    }
    chain(sig, info, ctx, fault);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Hands a fault that is not ours to the previous action (overflow rule 5).
fn chain(sig: c_int, info: *mut siginfo_t, ctx: *mut c_void, fault: bool) {
    let i = if sig == SIGNALS[0] { 0 } else { 1 };
    // Acquire: pairs with the installer's Release (overflow rule 1).
    let prev = if READY[i].load(Ordering::Acquire) {
        // SAFETY: written before READY was set, never written again.
        Some(unsafe { (*PREVIOUS.0[i].get()).assume_init_read() })
    } else {
        None
    };
    let (handler, flags) = prev.map_or((libc::SIG_DFL, 0), |p| (p.sa_sigaction, p.sa_flags));
    match handler {
        libc::SIG_IGN if !fault => {}
        libc::SIG_DFL | libc::SIG_IGN => {
            // SAFETY: an all-zero sigaction with SIG_DFL (0) is the default action.
            let dfl: libc::sigaction = unsafe { core::mem::zeroed() };
            // SAFETY: sigaction and raise are async-signal-safe; `dfl` is valid.
            unsafe {
                libc::sigaction(sig, &dfl, ptr::null_mut());
                if !fault {
                    // Blocked while we run: delivered, by default, when we return.
                    libc::raise(sig);
                }
            }
        }
        f if flags & libc::SA_SIGINFO != 0 => {
            // SAFETY: an SA_SIGINFO action's handler has this signature; we call it as
            // the kernel would have.
            let f: extern "C" fn(c_int, *mut siginfo_t, *mut c_void) = unsafe { core::mem::transmute(f) };
            f(sig, info, ctx);
        }
        f => {
            // SAFETY: a non-SA_SIGINFO action's handler takes the signal number.
            let f: extern "C" fn(c_int) = unsafe { core::mem::transmute(f) };
            f(sig);
        }
    }
}

/// Writes `keel: stack overflow in task <id> (stack <size> bytes)\n` to fd 2 with no
/// allocation and no formatting machinery.
fn report(task: u32, size: usize) {
    let mut buf = [0u8; 96];
    let mut n = 0;
    let mut put = |s: &[u8], n: &mut usize| {
        buf[*n..*n + s.len()].copy_from_slice(s);
        *n += s.len();
    };
    let mut digits = [0u8; 20];
    put(b"keel: stack overflow in task ", &mut n);
    put(decimal(task as u64, &mut digits), &mut n);
    put(b" (stack ", &mut n);
    put(decimal(size as u64, &mut digits), &mut n);
    put(b" bytes)\n", &mut n);
    write_all(2, &buf[..n]);
}

/// `v` in decimal, in the tail of `out`.
fn decimal(mut v: u64, out: &mut [u8; 20]) -> &[u8] {
    let mut i = out.len();
    loop {
        i -= 1;
        out[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return &out[i..];
        }
    }
}

/// `write(2)` until done, an error other than EINTR, or 16 attempts.
fn write_all(fd: c_int, mut bytes: &[u8]) {
    for _ in 0..16 {
        if bytes.is_empty() {
            return;
        }
        // SAFETY: `bytes` is valid for reads of its length; write is async-signal-safe.
        let r = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if r > 0 {
            bytes = &bytes[r as usize..];
        } else if r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_formats_by_hand() {
        let mut d = [0u8; 20];
        assert_eq!(decimal(0, &mut d), b"0");
        assert_eq!(decimal(40960, &mut d), b"40960");
        assert_eq!(decimal(u64::MAX, &mut d), b"18446744073709551615");
    }
}
