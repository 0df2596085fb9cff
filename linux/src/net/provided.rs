//! Buffers the kernel picked from the provided-buffer ring for a receive ([`ProvidedBuf`],
//! net rule 3): given back to the ring when dropped, while the driver lives (shared rule
//! 3, pbuf rule 2).
#![allow(unsafe_code)] // reading a buffer of the provided-buffer ring the kernel filled

use crate::ring::RingDriver;
use crate::ring::shared::Shared;
use std::rc::Rc;

/// A buffer the kernel picked from the provided-buffer ring for a receive: `len` bytes of
/// data in buffer `id`. Dropping it gives it back to the ring (pbuf rule 2). It may be
/// kept and dropped at any time, after its executor and driver too (shared rule 3: it
/// holds the ring's memory, and its bytes never change while it lives); `!Send`.
pub struct ProvidedBuf {
    shared: Rc<Shared>,
    ptr: *const u8,
    id: u16,
    len: u32,
}

impl core::fmt::Debug for ProvidedBuf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ProvidedBuf").field("id", &self.id).field("len", &self.len).finish()
    }
}

impl ProvidedBuf {
    /// The buffer's id in the ring.
    pub fn id(&self) -> u16 {
        self.id
    }
    /// Bytes received.
    pub fn len(&self) -> usize {
        self.len as usize
    }
    /// Whether nothing was received.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl core::ops::Deref for ProvidedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the kernel wrote `len` bytes at `ptr` (the buffer's start) and handed the
        // buffer to us; it is not in the ring again until we give it back (pbuf rule 2),
        // and `shared` keeps the memory alive (shared rule 3).
        unsafe { core::slice::from_raw_parts(self.ptr, self.len as usize) }
    }
}

impl Drop for ProvidedBuf {
    fn drop(&mut self) {
        self.shared.give_back(self.id); // shared rule 3
    }
}

/// Turns a buffer-selecting receive's result into a buffer (`None`: end of stream, or a
/// result with no buffer).
pub(crate) fn provided(d: &mut RingDriver, res: i32, flags: u32) -> Option<ProvidedBuf> {
    let id = io_uring::cqueue::buffer_select(flags)?;
    let mut p = d.pbuf()?;
    if res <= 0 {
        // No data, but a buffer was picked: give it back (not expected from the kernel).
        p.give_back(id);
        return None;
    }
    let ptr = p.ptr(id);
    drop(p);
    Some(ProvidedBuf { shared: d.shared.clone(), ptr, id, len: res as u32 })
}
