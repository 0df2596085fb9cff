//! The byte reader every fuzz harness decodes its input with: a fuzzer's byte string (or
//! a proptest twin's `Vec<u8>`) read front to back; past the end every read gives 0, so
//! any input, empty included, is a valid program.

/// Reads a byte string as a program, front to back.
pub struct Bytes<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Bytes<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Bytes { data, at: 0 }
    }

    /// True once every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.at >= self.data.len()
    }

    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub fn u64(&mut self) -> u64 {
        (self.u32() as u64) | ((self.u32() as u64) << 32)
    }

    /// A number in `0..n` (`n > 0`) from one byte.
    pub fn below(&mut self, n: usize) -> usize {
        self.u8() as usize % n
    }
}
