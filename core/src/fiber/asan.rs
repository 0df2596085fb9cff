//! AddressSanitizer's fiber annotations, built only with `--cfg keel_asan` (`make
//! test-asan`); default builds contain none of this.
//!
//! ASan keeps one stack range per thread. Without being told, it takes a fiber's frames
//! for frames of the thread's own stack: `__asan_handle_no_return` (a panic, say) then
//! unpoisons a nonsense range and ASan warns that false reports may follow. Each switch
//! is announced as the runtime asks (as corosensei does):
//!
//! - the switching side calls `__sanitizer_start_switch_fiber` with the stack it goes
//!   to, just before the switch;
//! - the arriving side calls `__sanitizer_finish_switch_fiber` just after it, which also
//!   gives back the range of the stack it came from.
//!
//! The fiber keeps its resumer's range (learnt at each arrival) to name it when it
//! switches back, and its own fake-stack handle between runs; at its exit it passes a
//! null handle, so ASan frees its fake stack.

use super::body::FiberCore;
use core::cell::Cell;
use core::ffi::c_void;
use core::ptr;

unsafe extern "C" {
    fn __sanitizer_start_switch_fiber(fake_stack_save: *mut *mut c_void, bottom: *const c_void, size: usize);
    fn __sanitizer_finish_switch_fiber(
        fake_stack_save: *mut c_void,
        bottom_old: *mut *const c_void,
        size_old: *mut usize,
    );
}

/// A fiber's side of the annotations (a field of `FiberCore`).
pub(crate) struct AsanFiber {
    fake: Cell<*mut c_void>,
    resumer_bottom: Cell<*const c_void>,
    resumer_size: Cell<usize>,
}

impl Default for AsanFiber {
    fn default() -> Self {
        AsanFiber {
            fake: Cell::new(ptr::null_mut()),
            resumer_bottom: Cell::new(ptr::null()),
            resumer_size: Cell::new(0),
        }
    }
}

/// Executor side, just before resuming `core`'s fiber; returns the executor's fake-stack
/// handle for [`after_resume`].
pub(super) fn before_resume(core: &FiberCore) -> *mut c_void {
    let mut fake: *mut c_void = ptr::null_mut();
    // SAFETY: the ASan runtime is linked (a keel_asan build is an ASan build); the range
    // is the fiber's usable stack, where it is about to run.
    unsafe { __sanitizer_start_switch_fiber(&mut fake, core.stack.base.as_ptr().cast(), core.stack.size) };
    fake
}

/// Executor side, back from the fiber.
pub(super) fn after_resume(fake: *mut c_void) {
    // SAFETY: back on the executor's stack; `fake` is what `before_resume` saved.
    unsafe { __sanitizer_finish_switch_fiber(fake, ptr::null_mut(), ptr::null_mut()) };
}

/// Fiber side, on arrival (first entry, or back from a suspension).
pub(super) fn arrived(core: &FiberCore) {
    let a = &core.asan;
    let (mut bottom, mut size) = (ptr::null(), 0usize);
    // SAFETY: called first thing on the fiber's stack after a switch onto it; `fake` is
    // the handle its last `leaving` saved (null at the first entry).
    unsafe { __sanitizer_finish_switch_fiber(a.fake.get(), &mut bottom, &mut size) };
    a.resumer_bottom.set(bottom);
    a.resumer_size.set(size);
}

/// Fiber side, just before switching back to its resumer from a suspension.
pub(super) fn leaving(core: &FiberCore) {
    let a = &core.asan;
    let mut fake = ptr::null_mut();
    // SAFETY: the range is the resumer's stack, as `arrived` learnt it.
    unsafe { __sanitizer_start_switch_fiber(&mut fake, a.resumer_bottom.get(), a.resumer_size.get()) };
    a.fake.set(fake);
}

/// Fiber side, just before its last switch back to its resumer. A null save lets ASan
/// free this fiber's fake stack at once, so nothing that may live there (a local whose
/// address was taken) is touched after the call: this function takes no local's address,
/// and its caller switches away right after it.
pub(super) fn exiting(core: &FiberCore) {
    let a = &core.asan;
    // SAFETY: the range is the resumer's stack, as `arrived` learnt it.
    unsafe { __sanitizer_start_switch_fiber(ptr::null_mut(), a.resumer_bottom.get(), a.resumer_size.get()) };
}
