//! The one place keel-core names atomics, fences and `UnsafeCell`.
//!
//! Under `--cfg keel_loom` every name here is loom's instrumented twin, so the
//! loom models in `loom-tests/` run the same source as production. The cfg is
//! crate-specific (`keel_loom`, not `loom`) because a `--cfg` reaches every
//! dependency and some of them (tokio) change themselves under `cfg(loom)`.
//!
//! `UnsafeCell` is wrapped with loom's `with`/`with_mut` shape so that code
//! written against it compiles unchanged under both.

#[cfg(not(keel_loom))]
pub(crate) use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicU32, Ordering, fence};

#[cfg(keel_loom)]
pub(crate) use loom::sync::atomic::{AtomicPtr, AtomicU8, AtomicU32, Ordering, fence};

/// An `UnsafeCell` with loom's access shape: the pointer is only reachable
/// inside a closure, so loom can track every access.
#[cfg(not(keel_loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

#[cfg(not(keel_loom))]
impl<T> UnsafeCell<T> {
    #[allow(dead_code)]
    pub(crate) const fn new(value: T) -> Self {
        Self(core::cell::UnsafeCell::new(value))
    }

    /// Reads through a shared pointer.
    #[allow(dead_code)]
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Writes through an exclusive pointer; the caller's protocol makes it exclusive.
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(keel_loom)]
pub(crate) use loom::cell::UnsafeCell;

/// Declares a `const fn` outside loom and a plain `fn` under it: loom's
/// atomics have no const constructors.
macro_rules! maybe_const_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty $body:block) => {
        #[cfg(not(keel_loom))]
        $(#[$m])* $vis const fn $name($($arg: $ty),*) -> $ret $body
        #[cfg(keel_loom)]
        $(#[$m])* $vis fn $name($($arg: $ty),*) -> $ret $body
    };
}
pub(crate) use maybe_const_fn;

#[cfg(not(keel_loom))]
pub(crate) use core::sync::atomic::AtomicU64 as AtomicU64Like;
#[cfg(keel_loom)]
pub(crate) use loom::sync::atomic::AtomicU64 as AtomicU64Like;
