//! Buffers for completion-based i/o: owned buffers that travel with an operation (the
//! driver keeps them in the operation's slot until its completion arrives), and the
//! executor's registered buffer set.
//!
//! An owned buffer is taken apart into a [`RawBuf`] (pointer, length, capacity) so a slot
//! can keep it without knowing its type and without allocating; it is put back together
//! when the future takes its result, or dropped when the completion of an abandoned
//! operation arrives.
//!
//! A set of buffers for a vectored operation (`preadv`/`pwritev`) is one [`RawBuf`] too
//! (`RawBuf::from_vecs`): one table of `2n` word pairs, the `n` `iovec`s the kernel reads
//! followed by each buffer's length and capacity, so the slot keeps the whole set, and
//! frees every buffer of it, without knowing it is vectored. The buffers' bytes stay
//! where they are; the table is the one allocation a vectored operation adds.
//!
//! A value an operation needs in one piece (a `msghdr` with its `iovec`, address and
//! control buffer: `net/msg.rs`) travels boxed (`RawBuf::from_box`): the slot keeps it,
//! and dropping the `RawBuf` drops the box (its `Drop` runs: a received descriptor in it
//! is closed), without the slot knowing its type.

/// A `Vec<u8>` taken apart, or a set of them for a vectored operation (module doc).
#[derive(Debug)]
pub struct RawBuf {
    ptr: *mut u8,
    len: usize,
    cap: usize,
    /// `ptr`/`len`/`cap` are a `Vec<[usize; 2]>` table of `len / 2` buffers (module doc).
    vectored: bool,
    /// `ptr` is a `Box<T>` and this drops it (module doc); `len` and `cap` are 0.
    boxed: Option<unsafe fn(*mut u8)>,
}

/// Drops the `Box<T>` at `p`.
///
/// # Safety
/// `p` came from `Box::<T>::into_raw` and is dropped once.
#[allow(unsafe_code)]
unsafe fn drop_box<T>(p: *mut u8) {
    // SAFETY: the caller's contract.
    drop(unsafe { Box::from_raw(p.cast::<T>()) });
}

/// An `iovec` is two words, as the table's pairs are (the kernel reads the table's first
/// half as `iovec`s).
const _: () = assert!(
    core::mem::size_of::<libc::iovec>() == core::mem::size_of::<[usize; 2]>()
        && core::mem::align_of::<libc::iovec>() == core::mem::align_of::<[usize; 2]>()
);

impl RawBuf {
    /// Takes `v` apart; its bytes stay where they are.
    pub fn from_vec(v: Vec<u8>) -> Self {
        let mut v = core::mem::ManuallyDrop::new(v);
        RawBuf { ptr: v.as_mut_ptr(), len: v.len(), cap: v.capacity(), vectored: false, boxed: None }
    }

    /// Takes the buffers of `bufs` apart for a vectored operation (module doc): each
    /// `iovec` covers the buffer's whole capacity when `to_read` (the kernel writes from
    /// its start, as [`into_vec`](Self::into_vec)'s read does), else its length. Allocates
    /// the table (2 x 16 bytes per buffer); the buffers' bytes stay where they are.
    pub(crate) fn from_vecs(bufs: Vec<Vec<u8>>, to_read: bool) -> Self {
        let n = bufs.len();
        let mut table: Vec<[usize; 2]> = vec![[0, 0]; 2 * n];
        for (i, b) in bufs.into_iter().enumerate() {
            let mut b = core::mem::ManuallyDrop::new(b);
            let io_len = if to_read { b.capacity() } else { b.len() };
            table[i] = [b.as_mut_ptr() as usize, io_len];
            table[n + i] = [b.len(), b.capacity()];
        }
        let mut table = core::mem::ManuallyDrop::new(table);
        RawBuf { ptr: table.as_mut_ptr().cast(), len: table.len(), cap: table.capacity(), vectored: true, boxed: None }
    }

    /// Keeps `b` as it is (module doc): its address does not change while the slot holds
    /// it, and dropping the `RawBuf` drops it.
    pub(crate) fn from_box<T>(b: Box<T>) -> Self {
        RawBuf { ptr: Box::into_raw(b).cast(), len: 0, cap: 0, vectored: false, boxed: Some(drop_box::<T>) }
    }

    /// The box [`from_box`](Self::from_box) took; `None` (and `self` dropped) for any
    /// other `RawBuf`.
    ///
    /// # Safety
    /// If `self` came from `from_box`, it was `from_box::<T>` (this `T`).
    #[allow(unsafe_code)]
    pub(crate) unsafe fn into_box<T>(self) -> Option<Box<T>> {
        self.boxed?;
        let me = core::mem::ManuallyDrop::new(self);
        // SAFETY: `from_box::<T>` made `ptr` with `Box::into_raw` (the caller's contract),
        // and `me` will not drop it.
        Some(unsafe { Box::from_raw(me.ptr.cast::<T>()) })
    }

    /// A vectored set's `iovec` table and its count (module doc); `None` for one buffer.
    pub(crate) fn iovecs(&self) -> Option<(*const libc::iovec, u32)> {
        self.vectored.then(|| (self.ptr as *const libc::iovec, (self.len / 2).min(u32::MAX as usize) as u32))
    }

    /// Puts a vectored set back together (module doc). `read`: the bytes a read put in
    /// them, which fill the buffers in order from their starts (each up to its capacity);
    /// `None`: each keeps its own length. A single buffer comes back as a set of one.
    pub(crate) fn into_vecs(self, read: Option<usize>) -> Vec<Vec<u8>> {
        if self.boxed.is_some() {
            return Vec::new();
        }
        if !self.vectored {
            let len = read.unwrap_or(self.len);
            return vec![self.into_vec(len)];
        }
        let me = core::mem::ManuallyDrop::new(self);
        #[allow(unsafe_code)]
        // SAFETY: ptr/len/cap came from a `Vec<[usize; 2]>` (`from_vecs`), all initialised.
        let table = unsafe { Vec::from_raw_parts(me.ptr.cast::<[usize; 2]>(), me.len, me.cap) };
        let n = table.len() / 2;
        let mut left = read.unwrap_or(0);
        (0..n)
            .map(|i| {
                let ([base, _], [len, cap]) = (table[i], table[n + i]);
                let len = match read {
                    Some(_) => {
                        let got = left.min(cap);
                        left -= got;
                        got
                    }
                    None => len,
                };
                #[cfg(keel_valgrind)]
                keel_core::stack::valgrind::make_mem_defined(base as *mut u8, len);
                #[allow(unsafe_code)]
                // SAFETY: base/cap came from a `Vec<u8>` (`from_vecs`) and `len` bytes are
                // initialised: its own length, or what the kernel's read wrote into it
                // from its start (`read` counts them, in iovec order).
                unsafe {
                    Vec::from_raw_parts(base as *mut u8, len, cap)
                }
            })
            .collect()
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
    /// A vectored set has no one `Vec` (keel takes one apart with `into_vecs`): its buffers
    /// are dropped and the result is empty.
    pub fn into_vec(self, len: usize) -> Vec<u8> {
        if self.vectored || self.boxed.is_some() {
            drop(self);
            return Vec::new();
        }
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
        if let Some(drop_box) = self.boxed {
            #[allow(unsafe_code)]
            // SAFETY: `from_box` made `ptr` for exactly this function; dropped once here.
            unsafe {
                drop_box(self.ptr)
            };
            return;
        }
        if self.vectored {
            // Each buffer with its own length, then the table (`into_vecs` takes the
            // parts apart again, so this copy of them is dropped once).
            drop(RawBuf { ..*self }.into_vecs(None));
            return;
        }
        #[allow(unsafe_code)]
        // SAFETY: as in `into_vec`, with the original initialised length.
        unsafe {
            drop(Vec::from_raw_parts(self.ptr, self.len, self.cap));
        }
    }
}
