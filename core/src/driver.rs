//! The one boundary between the core and a platform.
//!
//! A driver submits operations, reaps their completions, parks the executor's thread
//! until a deadline (or, later, an unpark from another thread) and reads the clock.
//! The simulated driver (`sim.rs`) is the first platform; keel-linux adds a sleeping
//! driver with no ring and the io_uring driver.
//!
//! Tokens: each operation carries an [`IoToken`] the core chose. The driver gives it
//! back with the result. Until then the driver keeps the operation (and whatever it
//! owns) in a slot of its own, so the core can retarget a token when the status block
//! it named goes away (io_status rule 4) and a completion can never reach memory
//! that was handed back.

use crate::clock::Instant;
use crate::error::Errno;

/// An operation's identity inside its driver (slot and generation, driver-defined).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct OpId(pub u64);

/// The core's name for the receiver of a completion; opaque to drivers.
///
/// Three kinds (io_status rules 3-4): a status block's address; an orphaned
/// operation's task (bit 0); a task run to wake (bit 1, with the run's generation), for
/// operations whose state the driver keeps itself (owned-buffer operations of futures).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct IoToken {
    pub(crate) addr: usize,
    pub(crate) generation: u32,
}

impl IoToken {
    pub(crate) const ORPHAN: usize = 1;
    pub(crate) const WAKE: usize = 2;

    pub(crate) fn status(addr: usize) -> Self {
        IoToken { addr, generation: 0 }
    }

    /// The token in 48 bits, for drivers that carry it in the operation itself (an
    /// io_uring `user_data`) instead of a table: `Some` for tokens with no generation
    /// (status blocks and orphans, the hot ones) whose address fits in 48 bits.
    #[inline(always)]
    pub fn pack(self) -> Option<u64> {
        let bits = self.addr as u64;
        (self.generation == 0 && bits >> 48 == 0).then_some(bits)
    }

    /// The token [`pack`](Self::pack) gave `bits` for.
    ///
    /// # Safety
    /// `bits` came from `pack` of a token this driver was given and that has not been
    /// retargeted since: the core dereferences what a token names.
    #[inline(always)]
    pub unsafe fn unpack(bits: u64) -> Self {
        IoToken { addr: bits as usize, generation: 0 }
    }
}

/// The result of an operation: a byte count or value, or an errno.
pub type IoResult = Result<u32, Errno>;

/// What parking ended with.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Park {
    /// Time passed, a completion arrived, or another thread unparked us: look again.
    Woke,
    /// Nothing is scheduled that could ever wake the executor (no deadline, no
    /// operation in flight, no other thread able to unpark it).
    Stalled,
}

/// A platform under an executor.
///
/// # Safety
///
/// The core dereferences what a completion's token names (a status block, a task header),
/// and frees or reuses memory once the driver says nothing names it any more, so an
/// implementation must keep this contract (a safe trait could not: a safe `impl` handing
/// one token back twice would let safe code corrupt a task's lists):
/// 1. Every token given to `submit`/`submit_from` for an operation that was accepted
///    (`Ok`) is handed to a `reap` sink exactly once, with that operation's result; after
///    `retarget(id, token)` the operation's completion carries `token` instead. No other
///    token is ever handed to a sink (a refused operation's token is dropped, never
///    reported).
/// 2. `in_flight` counts the operations accepted and not yet reaped: the executor frees
///    task storage and fiber stacks once it reads 0 after cancelling.
/// 3. An operation's memory (what its `Op` points at) is the driver's to keep until its
///    completion is reaped, or until the driver itself is dropped; a driver dropped with
///    operations in flight must not let them write into memory it hands back.
/// 4. `cancel`, `retarget` and `cancel_all` accept any id, including one already reaped
///    (they do nothing then); an id names one operation for its whole life.
/// 5. The [`Unparker`](crate::mailbox::Unparker) returned by `unparker` may be called from any
///    thread for as long as the driver lives; its `ctx` stays valid that long.
///
/// A driver written without `unsafe` does not compile:
///
/// ```compile_fail,E0200
/// use keel_core::driver::{Driver, IoResult, IoToken, OpId, Park};
/// use keel_core::{Errno, Instant};
/// struct Twice(Option<IoToken>);
/// impl Driver for Twice {
///     type Op = ();
///     fn now(&self) -> Instant { Instant::ZERO }
///     fn submit(&mut self, _: (), t: IoToken) -> Result<OpId, ((), Errno)> { self.0 = Some(t); Ok(OpId(1)) }
///     fn cancel(&mut self, _: OpId) {}
///     fn retarget(&mut self, _: OpId, _: IoToken) {}
///     // Would hand the same status block back on every reap.
///     fn reap<F: FnMut(IoToken, IoResult)>(&mut self, _: usize, sink: &mut F) -> usize {
///         self.0.map(|t| sink(t, Ok(0))).map_or(0, |_| 1)
///     }
///     fn in_flight(&self) -> usize { 0 }
///     fn park(&mut self, _: Option<Instant>) -> Result<Park, Errno> { Ok(Park::Stalled) }
/// }
/// ```
pub unsafe trait Driver: 'static {
    /// The operations this driver can perform.
    type Op;

    /// The current time on the driver's monotonic clock.
    fn now(&self) -> Instant;

    /// Starts `op`; its completion will carry `token`. On refusal the operation comes
    /// back with the reason.
    fn submit(&mut self, op: Self::Op, token: IoToken) -> Result<OpId, (Self::Op, Errno)>;

    /// `submit` from where the operation lies: taken (left `None`) when submitted, left
    /// in place when refused. Drivers with large operations override it to copy the
    /// operation once, straight into their queue (the default wraps `submit`).
    #[inline]
    fn submit_from(&mut self, op: &mut Option<Self::Op>, token: IoToken) -> Result<OpId, Errno> {
        let Some(taken) = op.take() else { return Err(Errno::EINVAL) };
        match self.submit(taken, token) {
            Ok(id) => Ok(id),
            Err((refused, errno)) => {
                *op = Some(refused);
                Err(errno)
            }
        }
    }

    /// Starts `first`, which links `second` (`IOSQE_IO_LINK` or the platform's like),
    /// and then `second`: both, or neither (`Err`: both left in place). The executor
    /// calls it only with room for both (`submit_capacity() >= 2`) and nothing in
    /// between. A driver may carry the pair as one unit (the ring driver completes a send
    /// that links a receive with one completion, `ring/pair.rs` in keel-linux); each
    /// token is still handed to a sink exactly once (rule 1 of the `# Safety`). The
    /// default submits one after the other.
    #[inline]
    fn submit_pair_from(
        &mut self,
        first: &mut Option<Self::Op>,
        first_token: IoToken,
        second: &mut Option<Self::Op>,
        second_token: IoToken,
    ) -> Result<(OpId, OpId), Errno> {
        let a = self.submit_from(first, first_token)?;
        match self.submit_from(second, second_token) {
            Ok(b) => Ok((a, b)),
            Err(e) => {
                panic!("keel bug: the second of a linked pair was refused ({e:?}) after room for both was checked")
            }
        }
    }

    /// Asks for `id` to complete early (with `ECANCELED` if it had not finished). It
    /// still completes exactly once.
    fn cancel(&mut self, id: OpId);

    /// From now on, `id`'s completion carries `token` instead.
    fn retarget(&mut self, id: OpId, token: IoToken);

    /// Hands the completions of at most `max` completion events to `sink`, in completion
    /// order; returns how many events. An event is one completion, or both of a pair that
    /// completes as one (`submit_pair_from`): at most `2 * max` calls of `sink`.
    fn reap<F: FnMut(IoToken, IoResult)>(&mut self, max: usize, sink: &mut F) -> usize;

    /// Operations submitted and not yet reaped.
    fn in_flight(&self) -> usize;

    /// How many more operations `submit` would take now. A refusal with `EBUSY` means
    /// "no room now": the executor queues the initiator (by I/O priority) until this
    /// grows. The default is unbounded.
    fn submit_capacity(&self) -> usize {
        usize::MAX
    }

    /// Blocks the thread until `deadline` (or a completion, or an unpark); `None` waits
    /// with no deadline.
    fn park(&mut self, deadline: Option<Instant>) -> Result<Park, Errno>;

    /// How other threads make `park` return (park rule 3, in the mailbox module). `park_word` is the
    /// executor's park word (for a futex); it lives as long as the driver is used by that
    /// executor. Called once, on the executor's thread, before any other thread can name
    /// the executor. `None` (the default): this driver cannot be unparked, and a foreign
    /// attach or wake waits for the executor's next pass.
    fn unparker(&mut self, park_word: *const u32) -> Option<crate::mailbox::Unparker> {
        let _ = park_word;
        None
    }

    /// The executor is going and has given up every task: cancel every operation still in
    /// flight, including those whose owner was moved out of its task (a future kept in
    /// `main`), so the executor's final drain ends. Each still completes exactly once. The
    /// default does nothing (the executor then waits for them to complete on their own).
    fn cancel_all(&mut self) {}

    /// What a debugger shows of this driver (`driver_debug`): asked once, on the
    /// executor's thread, when the executor is first used pinned; pointers in it must stay
    /// valid while the executor lives. The default says nothing.
    fn debug_descriptor(&self) -> crate::driver_debug::DriverDebug {
        crate::driver_debug::DriverDebug::NONE
    }
}

/// An executor's driver as a `with_driver` closure gets it (driver rules 1-2,
/// exec/lend.rs): it reads as `&D` (`Deref`), and it cannot be replaced, swapped, moved
/// out of, nor used to submit, reap, cancel or park behind the executor's back, since no
/// `&mut D` comes out of it in safe code. A driver offers mutation through methods of its
/// own on `DriverMut<'_, ItsType>` (the simulated driver's scripting: `sim.rs`), or, in
/// driver crates, through [`DriverMut::get_mut`] under its safety contract.
///
/// Its lifetime is invariant and it can be neither built nor cloned outside keel-core,
/// so it cannot leave the closure it was lent to.
pub struct DriverMut<'a, D> {
    ptr: core::ptr::NonNull<D>,
    _lent: core::marker::PhantomData<&'a mut D>,
    _invariant: core::marker::PhantomData<fn(&'a ()) -> &'a ()>,
}

impl<D> DriverMut<'_, D> {
    /// Lends `ptr`.
    ///
    /// # Safety
    /// `ptr` is the executor's driver, the executor's lend flag is set for as long as the
    /// value lives (driver rule 1), and nothing else forms a reference to the driver
    /// meanwhile.
    pub(crate) unsafe fn lend(ptr: *mut D) -> Self {
        DriverMut {
            // SAFETY: the executor's driver field is never null.
            ptr: unsafe { core::ptr::NonNull::new_unchecked(ptr) },
            _lent: core::marker::PhantomData,
            _invariant: core::marker::PhantomData,
        }
    }

    /// The driver, mutably: for a driver crate's own state (buffer rings, result slots,
    /// fault injection).
    ///
    /// # Safety
    /// Through the returned reference the caller must not replace the driver or move out
    /// of it (assign, `mem::swap`/`replace`/`take`), nor call the [`Driver`] methods the
    /// executor alone calls (`submit`, `submit_from`, `reap`, `park`, `unparker`) or
    /// `cancel`/`retarget` on an operation of a status block (the executor's
    /// bookkeeping and, for the ring, the kernel rely on them); cancelling an operation
    /// the driver crate keeps itself (a wake-token operation it owns) is its own
    /// business. And while the reference lives the caller runs no code that could reach
    /// the driver another way (user code, a drop of a value holding a driver pointer):
    /// keel-core's own paths find the driver lent and keep off it, but a driver crate's
    /// raw pointers do not.
    #[inline(always)]
    pub unsafe fn get_mut(&mut self) -> &mut D {
        // SAFETY: lent exclusively to this value (driver rule 1); the caller keeps the contract.
        unsafe { self.ptr.as_mut() }
    }
}

impl<D> core::ops::Deref for DriverMut<'_, D> {
    type Target = D;
    #[inline(always)]
    fn deref(&self) -> &D {
        // SAFETY: lent to this value (driver rule 1): while it lives the executor forms
        // no reference to the driver, and a `&mut` comes out only through `get_mut`,
        // which borrows this value mutably (so not while this `&D` lives).
        unsafe { self.ptr.as_ref() }
    }
}

impl<D> core::fmt::Debug for DriverMut<'_, D> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("DriverMut")
    }
}

/// A driver with no i/o, whose clock the caller advances by hand: for tests of the
/// core that need no scripted operations.
#[derive(Debug, Default)]
pub struct NoIo;

// SAFETY: it accepts no operation (its `Op` is uninhabited): nothing to report.
unsafe impl Driver for NoIo {
    type Op = core::convert::Infallible;
    fn now(&self) -> Instant {
        Instant::ZERO
    }
    fn submit(&mut self, op: Self::Op, _: IoToken) -> Result<OpId, (Self::Op, Errno)> {
        match op {}
    }
    fn cancel(&mut self, _: OpId) {}
    fn retarget(&mut self, _: OpId, _: IoToken) {}
    fn reap<F: FnMut(IoToken, IoResult)>(&mut self, _: usize, _: &mut F) -> usize {
        0
    }
    fn in_flight(&self) -> usize {
        0
    }
    fn park(&mut self, _: Option<Instant>) -> Result<Park, Errno> {
        Ok(Park::Stalled)
    }
}

/// Type-erased access to the driver for code that does not know its type (status
/// blocks dropping, task-side primitives). Built once per driver type.
pub(crate) struct DriverVt {
    pub(crate) now: unsafe fn(*mut ()) -> Instant,
    pub(crate) cancel: unsafe fn(*mut (), OpId),
    pub(crate) retarget: unsafe fn(*mut (), OpId, IoToken),
    pub(crate) type_id: core::any::TypeId,
    pub(crate) unparker: unsafe fn(*mut (), *const u32) -> Option<crate::mailbox::Unparker>,
    pub(crate) debug: unsafe fn(*mut ()) -> crate::driver_debug::DriverDebug,
}

pub(crate) struct VtFor<D>(core::marker::PhantomData<D>);

impl<D: Driver> VtFor<D> {
    // SAFETY (for the functions below): the executor stores a pointer to its own
    // `D` with this vtable and calls through it only on its thread, with no other borrow
    // of the driver live (sched rule 3).
    pub(crate) const VT: DriverVt = DriverVt {
        now: |driver| {
            // SAFETY: see above.
            unsafe { (*(driver as *const D)).now() }
        },
        cancel: |driver, id| {
            // SAFETY: see above.
            unsafe { (*(driver as *mut D)).cancel(id) }
        },
        retarget: |driver, id, token| {
            // SAFETY: see above.
            unsafe { (*(driver as *mut D)).retarget(id, token) }
        },
        type_id: core::any::TypeId::of::<D>(),
        unparker: |driver, park_word| {
            // SAFETY: see above.
            unsafe { (*(driver as *mut D)).unparker(park_word) }
        },
        debug: |driver| {
            // SAFETY: see above.
            unsafe { (*(driver as *const D)).debug_descriptor() }
        },
    };
}
