//! The waker of future tasks, and a task's resume `Context`: how a task is named to
//! whoever wakes it. The wake itself is the mailbox protocol (wake rules, stated in the
//! mailbox module): a waker decodes its task and calls `mailbox::wake`.

use crate::mailbox::{self, WakeTarget};
use crate::sync::Ordering;
use crate::task::header::{Header, SlotPtr};
use core::cell::{Cell, UnsafeCell};
use core::mem::MaybeUninit;
use core::ptr::NonNull;
use core::task::{Context, RawWaker, RawWakerVTable, Waker};

/// Wakes run `generation` of the task at `hdr` from any thread (wake rules 2-4).
#[inline(always)]
pub(crate) fn wake_by_gen(hdr: NonNull<Header>, generation: u32) {
    mailbox::wake(wake_target(hdr), generation);
}

/// Announces a join registered in run `generation` of the task at `hdr` to its owner,
/// from any thread (wake rule 8; the task is not woken).
pub(crate) fn announce_join(hdr: NonNull<Header>, generation: u32) {
    #[cfg(keel_loom)]
    mailbox::announce_join_with::<crate::sync::Strong>(wake_target(hdr), generation);
    #[cfg(not(keel_loom))]
    mailbox::announce_join(wake_target(hdr), generation);
}

/// `announce_join`, with the step a loom model may weaken (`sync::Weaken`).
#[cfg(keel_loom)]
pub(crate) fn announce_join_with<W: crate::sync::Weaken>(hdr: NonNull<Header>, generation: u32) {
    mailbox::announce_join_with::<W>(wake_target(hdr), generation);
}

/// `wake_by_gen`, with the CAS ordering a loom model may weaken (`sync::Weaken`).
#[cfg(keel_loom)]
pub(crate) fn wake_by_gen_with<W: crate::sync::Weaken>(hdr: NonNull<Header>, generation: u32) {
    mailbox::wake_with::<W>(wake_target(hdr), generation);
}

/// The header fields a wake touches, and the task's inbox node.
#[inline(always)]
fn wake_target(hdr: NonNull<Header>) -> WakeTarget<'static> {
    // Provenance rule 2: the header's own fields through a `&Header`.
    let header = hdr.hdr();
    // Provenance rule 3: the node carries the whole slot's provenance, for the owner's
    // step back to the header.
    WakeTarget { generation: &header.generation, notify: &header.notify, owner: &header.owner, node: hdr.inbox_node() }
}

// ---- the `core::task::Waker` for future tasks ----
//
// The data pointer packs the header's address (64-byte aligned, below 2^48 on the
// targets keel builds for: 42 significant bits) shifted right by 5 into bits 1..43, and
// the generation's low 21 bits into bits 43..64; bit 0 says the tag is present (one
// shift and two ors to make, as every resume makes one). A tag that cannot be formed
// (an address at or above 2^48) is left out: the data is then the plain address, and
// such a waker skips wake rule 2's first check; the owner's check in wake rule 5 still
// applies. A stale waker held across exactly a multiple of 2^21 re-uses of its task
// would pass the check: the wake then lands on the newer run as a spurious wake, which
// futures must tolerate anyway.

const TAG_BIT: usize = 1;
const ADDR_MASK: usize = ((1usize << 48) - 1) & !63;
/// Bits 1..43 of tagged data: the address shifted right by 5.
const PACKED_ADDR: usize = ((1usize << 43) - 1) & !TAG_BIT;
const TAG_SHIFT: u32 = 43;

#[inline(always)]
pub(crate) fn encode(hdr: NonNull<Header>, generation: u32) -> *const () {
    let addr = hdr.as_ptr() as usize;
    if usize::BITS < 64 || addr & !ADDR_MASK != 0 {
        return addr as *const ();
    }
    // Bit 0 of `addr >> 5` is the address's bit 5: clear (64-byte aligned).
    ((addr >> 5) | TAG_BIT | (generation as usize) << TAG_SHIFT) as *const ()
}

#[inline(always)]
fn decode(data: *const ()) -> (NonNull<Header>, Option<u32>) {
    let bits = data as usize;
    let (addr, tag) =
        if bits & TAG_BIT != 0 { ((bits & PACKED_ADDR) << 5, Some((bits >> TAG_SHIFT) as u32)) } else { (bits, None) };
    // SAFETY: every waker with this vtable was made by `waker_for` from a non-null header
    // pointer, whose whole-slot provenance `encode` exposed (provenance rule 5).
    (unsafe { NonNull::new_unchecked(addr as *mut Header) }, tag)
}

pub(crate) fn wake_data(data: *const ()) {
    let (hdr, tag) = decode(data);
    // SAFETY: headers live in `'static` slots.
    let current = unsafe { hdr.as_ref() }.generation.load(Ordering::Acquire);
    let matches = tag.is_none_or(|t| t == current & 0x1F_FFFF);
    if matches {
        wake_by_gen(hdr, current);
    }
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(|data| RawWaker::new(data, &VTABLE), wake_data, wake_data, |_| {});

/// A waker for run `generation` of the task at `hdr`. Allocation-free; cloning copies.
pub(crate) fn waker_for(hdr: NonNull<Header>, generation: u32) -> Waker {
    // SAFETY: the vtable's functions accept any data `encode` produces, and the header
    // they name is `'static`, so the waker may outlive anything and cross threads.
    unsafe { Waker::from_raw(RawWaker::new(encode(hdr, generation), &VTABLE)) }
}

/// The task a keel waker names, if `waker` is one; `None` for foreign wakers.
pub(crate) fn task_of(waker: &Waker) -> Option<NonNull<Header>> {
    if core::ptr::eq(waker.vtable(), &VTABLE) { Some(decode(waker.data()).0) } else { None }
}

/// The `Context` a task's body is polled with, and the waker it names (rt rule 1): in
/// the task's `'static` trailer, so its address is fixed and names the task. Touched
/// only by the owner's thread (header rule 2). The waker is the same for every poll of
/// one run (it names the run's generation): written at the run's first poll, and again
/// only when a poll finds `run` naming another run. The `Context` is rewritten before
/// every poll (a body may have stored another one in it: `*cx = ...`).
pub(crate) struct ResumeCx {
    waker: UnsafeCell<MaybeUninit<Waker>>,
    cx: UnsafeCell<MaybeUninit<Context<'static>>>,
    /// The generation `waker` was written for; `NOT_WRITTEN` before the first.
    run: Cell<u64>,
}

/// `ResumeCx::run` before the waker's first write: no generation (a `u32`) equals it.
const NOT_WRITTEN: u64 = u64::MAX;

impl ResumeCx {
    pub(crate) const fn new() -> Self {
        ResumeCx {
            waker: UnsafeCell::new(MaybeUninit::uninit()),
            cx: UnsafeCell::new(MaybeUninit::uninit()),
            run: Cell::new(NOT_WRITTEN),
        }
    }
}

/// The task's resume `Context` (rt rule 1) for run `generation` of the task at `hdr`,
/// made afresh for the body's poll; its waker is written at the run's first poll.
///
/// # Safety
/// The owner, on its thread, about to poll the body: no reference to this task's resume
/// `Context` or waker is live (no poll of this task's body is on the stack), and the one
/// returned is used only for that poll. (The body cannot keep one past its poll either:
/// `Future::poll` takes the `Context` at a lifetime of its own, so `cx.waker()` is
/// borrowed for that poll, and a waker it keeps is a clone, a copy of the data.)
#[inline(always)]
pub(crate) unsafe fn resume_context<'a>(hdr: NonNull<Header>, generation: u32) -> &'a mut Context<'static> {
    // Provenance rule 2: through the whole-slot pointer.
    let resume: &'static ResumeCx = &hdr.trailer().resume;
    let waker_slot = resume.waker.get() as *mut Waker;
    let cx_slot = resume.cx.get() as *mut Context<'static>;
    if resume.run.get() != u64::from(generation) {
        // SAFETY: the caller's duties: nothing refers to the waker now. The one
        // overwritten (if any) is not dropped: a keel waker's drop does nothing.
        unsafe { waker_slot.write(waker_for(hdr, generation)) };
        resume.run.set(u64::from(generation));
    }
    // The waker was written for this run (above, or at an earlier poll of it): only
    // shared references to it were handed out since, so it is unchanged.
    // SAFETY: the caller's duties: nothing else refers to these two now. Both stay in
    // the `'static` trailer, so the `'static` borrows hold.
    unsafe {
        cx_slot.write(Context::from_waker(&*waker_slot));
        &mut *cx_slot
    }
}

/// Whether `cx` is the task at `hdr`'s resume `Context` (rt rule 1), which only its
/// owner's thread can hold, inside a poll of its body. Any thread; reads nothing.
#[inline(always)]
pub(crate) fn is_resume_cx(hdr: NonNull<Header>, cx: &Context<'_>) -> bool {
    // Only the field's address is taken (provenance rule 2).
    let mine = hdr.trailer().resume.cx.get() as *const ();
    #[cfg(keel_loom)]
    if crate::sync::any_resume_is_current() {
        // The weakened twin (`loom_api::weaken_current`): "the task is running", on
        // whatever thread, taken for "inside the task" (a check through the owner's
        // record of the task it resumes, weaker than rt rule 1): it reads the owner's Cell.
        let _ = mine;
        // SAFETY: none across threads: this is the bug the twin shows.
        return unsafe { hdr.as_ref() }.state.get() == crate::task::state::TaskState::Running;
    }
    core::ptr::eq(cx as *const Context<'_> as *const (), mine)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_rule_2_tags_round_trip() {
        let fake = NonNull::new(0x7f00_1234_5640usize as *mut Header).unwrap();
        for generation in [0u32, 1, 31, 32, 0x1F_FFFF, 0x20_0000, u32::MAX] {
            let (decoded, tag) = decode(encode(fake, generation));
            assert_eq!(decoded, fake);
            assert_eq!(tag, Some(generation & 0x1F_FFFF));
        }
    }
}
