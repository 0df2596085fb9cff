//! Catching a panic in a fiber body: keel-linux's `keel_core::PanicCatcher`.
//!
//! A panic must never unwind across a context switch (fiber rule 3 in keel-core). With
//! [`catch_panics`] in `Config::fiber_panics` the fiber's first frame catches it, and the
//! task completes with `TaskError::Panicked(message)`. [`config`] is keel-linux's
//! recommended `Config`, with the catcher set.
//!
//! The message is a `&'static str`. A panic with a literal message (`panic!("boom")`)
//! already has one. A formatted message (a `String` payload) is leaked to make one, but
//! only for the first [`LEAKED_MESSAGES_MAX`] such panics in the process, so a fiber
//! that panics in a loop cannot grow memory without bound; after that the message is
//! dropped and the error says so.

use core::sync::atomic::{AtomicUsize, Ordering};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// `String` panic messages leaked into `&'static str` per process; later ones are
/// replaced by [`MESSAGE_DROPPED`].
pub const LEAKED_MESSAGES_MAX: usize = 64;

/// The error message of a panic whose `String` message was not kept.
pub const MESSAGE_DROPPED: &str = "fiber panicked (message dropped: more than 64 panics)";

/// The error message of a panic whose payload is neither `&str` nor `String`.
pub const MESSAGE_OTHER: &str = "fiber panicked with a payload that is not a string";

static LEAKED: AtomicUsize = AtomicUsize::new(0);

/// Runs `body`, catching a panic; `Err` names it (see the module doc for how the message
/// is kept). The `keel_core::PanicCatcher` for `Config::fiber_panics`.
pub fn catch_panics(body: &mut dyn FnMut()) -> Result<(), &'static str> {
    let payload = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(()) => return Ok(()),
        Err(p) => p,
    };
    let payload = match payload.downcast::<&'static str>() {
        Ok(s) => return Err(*s),
        Err(p) => p,
    };
    let msg = match payload.downcast::<String>() {
        // Relaxed: a counter bounding a leak, nothing published with it.
        Ok(s) if LEAKED.fetch_add(1, Ordering::Relaxed) < LEAKED_MESSAGES_MAX => {
            return Err(Box::leak(s.into_boxed_str()));
        }
        Ok(_) => MESSAGE_DROPPED,
        Err(other) => {
            // Dropping an arbitrary payload may itself panic: contain it.
            if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(other))) {
                core::mem::forget(again);
            }
            MESSAGE_OTHER
        }
    };
    Err(msg)
}

/// keel-linux's recommended executor configuration: the defaults, with fiber panics
/// caught by [`catch_panics`].
pub fn config() -> keel_core::Config {
    keel_core::Config { fiber_panics: Some(catch_panics), ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_become_messages() {
        assert_eq!(catch_panics(&mut || {}), Ok(()));
        assert_eq!(catch_panics(&mut || panic!("literal")), Err("literal"));
        let n = std::hint::black_box(7);
        assert_eq!(catch_panics(&mut || panic!("formatted {n}")), Err("formatted 7"));
        assert_eq!(catch_panics(&mut || std::panic::panic_any(5u8)), Err(MESSAGE_OTHER));
    }
}
