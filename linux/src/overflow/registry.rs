//! The registry of guard regions (overflow rules 3 and 4): a static array the stack
//! provider writes (lock-free, a sequence lock per entry) and the fault handler reads
//! (wait-free, one pass, no writes).

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering, fence};

use super::REGISTRY_CAPACITY;

struct Entry {
    claimed: AtomicBool,
    seq: AtomicU32,
    guard_lo: AtomicUsize,
    guard_hi: AtomicUsize,
    size: AtomicUsize,
    task: AtomicU32,
}

impl Entry {
    const fn new() -> Self {
        Entry {
            claimed: AtomicBool::new(false),
            seq: AtomicU32::new(0),
            guard_lo: AtomicUsize::new(0),
            guard_hi: AtomicUsize::new(0),
            size: AtomicUsize::new(0),
            task: AtomicU32::new(0),
        }
    }

    /// Writes the range under the sequence lock; only the claimer calls it.
    fn write(&self, lo: usize, hi: usize, size: usize) {
        // Relaxed: only the claimer writes `seq` (its CAS on `claimed` ordered it).
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        // Release fence: the odd `seq` is ordered before the field stores below, so a
        // reader that sees any of them and then re-reads `seq` (after its Acquire fence)
        // sees it changed.
        fence(Ordering::Release);
        self.guard_lo.store(lo, Ordering::Relaxed);
        self.guard_hi.store(hi, Ordering::Relaxed);
        self.size.store(size, Ordering::Relaxed);
        self.task.store(0, Ordering::Relaxed);
        // Release: publishes the fields to a reader whose Acquire load of `seq` sees it.
        self.seq.store(s.wrapping_add(2), Ordering::Release);
    }

    /// A consistent `(lo, hi, size, task)`, or `None` if it changed while being read.
    fn read(&self) -> Option<(usize, usize, usize, u32)> {
        // Acquire: pairs with the Release store ending `write`.
        let s1 = self.seq.load(Ordering::Acquire);
        if s1 & 1 != 0 {
            return None;
        }
        // Relaxed: validated by the second `seq` load below.
        let v = (
            self.guard_lo.load(Ordering::Relaxed),
            self.guard_hi.load(Ordering::Relaxed),
            self.size.load(Ordering::Relaxed),
            self.task.load(Ordering::Relaxed),
        );
        // Acquire fence: the field loads above are ordered before the re-read of `seq`
        // (pairs with the Release fence in `write`).
        fence(Ordering::Acquire);
        (self.seq.load(Ordering::Relaxed) == s1).then_some(v)
    }
}

static REGISTRY: [Entry; REGISTRY_CAPACITY] = [const { Entry::new() }; REGISTRY_CAPACITY];
/// Entries reserved or claimed (at most `REGISTRY_CAPACITY`).
static USED: AtomicUsize = AtomicUsize::new(0);
/// Where the next claim starts looking (a hint; any value works).
static HINT: AtomicUsize = AtomicUsize::new(0);

/// Registers the guard region `[lo, hi)` of a stack with `size` usable bytes; the index
/// of its entry, or `None` if the registry is full (overflow rule 3).
pub(crate) fn register(lo: usize, hi: usize, size: usize) -> Option<usize> {
    // Relaxed: `USED` only bounds the number of claimers; the entries are synchronised
    // by their own `claimed` CAS.
    USED.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < REGISTRY_CAPACITY).then_some(n + 1)).ok()?;
    // Relaxed: a hint.
    let start = HINT.load(Ordering::Relaxed);
    for k in 0..REGISTRY_CAPACITY {
        let i = (start + k) % REGISTRY_CAPACITY;
        let e = &REGISTRY[i];
        // Acquire: sees the previous claimer's clearing of the fields (its Release in
        // `unregister`). Relaxed on failure: nothing is read.
        if e.claimed.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            e.write(lo, hi, size);
            HINT.store(i + 1, Ordering::Relaxed);
            return Some(i);
        }
    }
    // Every entry was taken while we looked (releases and claims raced with the scan).
    USED.fetch_sub(1, Ordering::Relaxed);
    None
}

/// Records that the stack of entry `index` now runs task `id` (overflow rule 4).
pub(crate) fn set_task(index: usize, id: u32) {
    if let Some(e) = REGISTRY.get(index) {
        // Relaxed: read only by the handler on this same thread (overflow rule 4).
        e.task.store(id, Ordering::Relaxed);
    }
}

/// Gives entry `index` up; called before its stack is unmapped, so no stale range ever
/// matches memory mapped again at the same address.
pub(crate) fn unregister(index: usize) {
    let Some(e) = REGISTRY.get(index) else { return };
    e.write(0, 0, 0);
    // Release: pairs with the next claimer's Acquire CAS.
    e.claimed.store(false, Ordering::Release);
    USED.fetch_sub(1, Ordering::Relaxed);
}

/// Guard regions registered right now, out of [`REGISTRY_CAPACITY`] (a snapshot).
pub fn registered_stacks() -> usize {
    // Relaxed: a statistic.
    USED.load(Ordering::Relaxed)
}

/// `(task id, stack size)` of the registered guard region holding `addr`. One pass over
/// the registry, no writes (async-signal-safe).
pub(super) fn lookup(addr: usize) -> Option<(u32, usize)> {
    REGISTRY.iter().find_map(|e| match e.read() {
        Some((lo, hi, size, task)) if lo <= addr && addr < hi => Some((task, size)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test for the whole registry: unit tests run in parallel and share it.
    #[test]
    fn registered_ranges_are_found_until_unregistered_and_a_full_registry_says_none() {
        let i = register(0x1000_0000, 0x1000_1000, 65536).expect("registry full");
        assert_eq!(lookup(0x1000_0000), Some((0, 65536)), "no task yet");
        set_task(i, 42);
        assert_eq!(lookup(0x1000_0000), Some((42, 65536)));
        assert_eq!(lookup(0x1000_0fff), Some((42, 65536)));
        assert_eq!(lookup(0x0fff_ffff), None);
        assert_eq!(lookup(0x1000_1000), None);
        unregister(i);
        assert_eq!(lookup(0x1000_0000), None);

        let page = 0x1000;
        let all: Vec<usize> = (0..REGISTRY_CAPACITY)
            .map(|k| register(0x2000_0000 + 2 * k * page, 0x2000_0000 + (2 * k + 1) * page, k).expect("room"))
            .collect();
        assert_eq!(registered_stacks(), REGISTRY_CAPACITY);
        assert_eq!(register(0x1000, 0x2000, 1), None, "full");
        for (k, &i) in all.iter().enumerate() {
            set_task(i, k as u32 + 1);
        }
        for k in [0, 1, REGISTRY_CAPACITY / 2, REGISTRY_CAPACITY - 1] {
            assert_eq!(lookup(0x2000_0000 + 2 * k * page + 8), Some((k as u32 + 1, k)));
            assert_eq!(lookup(0x2000_0000 + (2 * k + 1) * page + 8), None, "between guards");
        }
        unregister(all[7]);
        let again = register(0x1000, 0x2000, 1).expect("a freed entry is reused");
        assert_eq!(again, all[7]);
        unregister(again);
        for (k, &i) in all.iter().enumerate() {
            if k != 7 {
                unregister(i);
            }
        }
        assert_eq!(registered_stacks(), 0);
        assert_eq!(lookup(0x2000_0000 + 8), None);
    }
}
