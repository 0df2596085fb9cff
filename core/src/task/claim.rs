//! Claiming an unowned task for a new run from any thread (remote rule 2 and dispatch
//! rule 2): the CAS of its owner, then the body and local fields.

use crate::error::AttachError;
use crate::mailbox::Mailbox;
use crate::sync::Ordering;
use crate::task::TaskHandle;
use crate::task::body::{BodyVTable, place};
use crate::task::header::SlotPtr;
use core::ptr;

/// The owner pointer of a task being claimed (remote rule 2): never dereferenced, never
/// equal to an executor or a dispatcher's sentinel.
pub(crate) fn claiming() -> *mut Mailbox {
    static CLAIMING: u8 = 0;
    &CLAIMING as *const u8 as *mut Mailbox
}

/// Claims an unowned task (remote rule 2: its owner is `CLAIMING` on success) and makes
/// `body` its next run: one CAS, then the local fields, which nobody else touches while
/// the owner is `CLAIMING`. The caller publishes the owner. Hands the task back on
/// failure.
pub(crate) fn claim_and_place<#[cfg(keel_loom)] W: crate::sync::Weaken, B>(
    owner: *mut Mailbox,
    task: TaskHandle,
    body: B,
    vtable: &'static BodyVTable,
    flags: u8,
) -> Result<TaskHandle, AttachError<B>> {
    #[cfg(not(keel_loom))]
    use crate::sync::Strong as W;
    let header = task.header();
    // SAFETY: `'static` slot.
    let hdr = unsafe { header.as_ref() };
    // A weakened twin claims for `owner` at once (never in `Strong`).
    let claim = if W::CLAIM_SENTINEL { claiming() } else { owner };
    // AcqRel: Acquire sees the previous owner's release (and its writes to the task);
    // Release publishes the claim. Acquire on failure: reading who owns it.
    if hdr.owner.compare_exchange(ptr::null_mut(), claim, Ordering::AcqRel, Ordering::Acquire).is_err() {
        return Err(AttachError::OwnedElsewhere(body));
    }
    // Acquire: pairs with destroy's Release of `live`. Relaxed for the generation: the
    // claim's Acquire ordered it.
    let live = header.trailer().live.load(Ordering::Acquire) != 0;
    let generation = hdr.generation.load(Ordering::Relaxed);
    if !live || generation != task.generation() {
        // Release: hand it back as we found it.
        hdr.owner.store(ptr::null_mut(), Ordering::Release);
        return Err(AttachError::Stale(body));
    }
    // SAFETY: claimed and unattached (an unowned task is Idle or Completed), so its body
    // bytes are free and nobody else touches its local fields (remote rule 2).
    if let Err(err) = unsafe { place(header, body) } {
        // Release: as above.
        hdr.owner.store(ptr::null_mut(), Ordering::Release);
        return Err(err);
    }
    let next_gen = generation.wrapping_add(1);
    // Release: pairs with wakers' Acquire generation check.
    hdr.generation.store(next_gen, Ordering::Release);
    hdr.body.set(Some(vtable));
    hdr.flags.set(flags);
    Ok(TaskHandle::from_parts(header, next_gen))
}
