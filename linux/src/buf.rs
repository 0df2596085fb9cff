//! Buffers for completion-based i/o: owned buffers that travel with an operation (the
//! driver keeps them in the operation's slot until its completion arrives), and the
//! executor's registered buffer set.
//!
//! An owned buffer is taken apart into a [`RawBuf`] (pointer, length, capacity) so a slot
//! can keep it without knowing its type and without allocating; it is put back together
//! when the future takes its result, or dropped when the completion of an abandoned
//! operation arrives.

/// A `Vec<u8>` taken apart.
#[derive(Debug)]
pub struct RawBuf {
    ptr: *mut u8,
    len: usize,
    cap: usize,
}

impl RawBuf {
    /// Takes `v` apart; its bytes stay where they are.
    pub fn from_vec(v: Vec<u8>) -> Self {
        let mut v = core::mem::ManuallyDrop::new(v);
        RawBuf { ptr: v.as_mut_ptr(), len: v.len(), cap: v.capacity() }
    }

    /// First byte.
    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Initialised length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the initialised length is zero.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Capacity.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Puts the `Vec` back together with `len` initialised bytes (at most the capacity).
    pub fn into_vec(self, len: usize) -> Vec<u8> {
        let me = core::mem::ManuallyDrop::new(self);
        let len = len.min(me.cap);
        // Memcheck does not see the kernel's writes through the ring: in a valgrind build
        // the bytes a read returned past the original length are marked defined here.
        #[cfg(keel_valgrind)]
        if len > me.len {
            keel_core::stack::valgrind::make_mem_defined(me.ptr.wrapping_add(me.len), len - me.len);
        }
        #[allow(unsafe_code)]
        // SAFETY: ptr/cap came from a `Vec<u8>` (`from_vec`), and `len` bytes are
        // initialised: either they were (len <= the original len) or the kernel wrote them
        // (a read's result, which the caller passes).
        unsafe {
            Vec::from_raw_parts(me.ptr, len, me.cap)
        }
    }
}

impl Drop for RawBuf {
    fn drop(&mut self) {
        #[allow(unsafe_code)]
        // SAFETY: as in `into_vec`, with the original initialised length.
        unsafe {
            drop(Vec::from_raw_parts(self.ptr, self.len, self.cap));
        }
    }
}
