//! A deliberately bad dependency, for `check.sh` only: feature `alloc` pulls in the
//! `alloc` crate, feature `std` the `std` crate, as a careless dependency of keel-core
//! would. A consumer that links it must fail to build (see the consumer's README).
#![no_std]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

/// Uses what the features pulled in (a heap allocation), so it is linked.
pub fn touch() -> usize {
    #[cfg(feature = "alloc")]
    let n = alloc::vec::Vec::<u8>::with_capacity(1).capacity();
    #[cfg(all(feature = "std", not(feature = "alloc")))]
    let n = std::vec::Vec::<u8>::with_capacity(1).capacity();
    #[cfg(not(any(feature = "alloc", feature = "std")))]
    let n = 0;
    n
}
