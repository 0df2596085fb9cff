//! What a debugger needs to find keel's executors and read their tasks without type
//! information: the descriptor [`KeelDebug`], exported as the symbol `keel_debug`, which
//! holds the registry of live executors and the layout of everything the GDB script
//! (`gdb/keel.py`) reads.
//!
//! # The descriptor
//!
//! `#[repr(C)]`, every field a `u32` offset or size (or a byte code) from a fixed start,
//! so a debugger reads it with the byte layout below whatever the build: the release
//! profile's debug info (`debug = 1`) has line tables but no type layouts, and Rust's
//! own layout of `Sched`, the task header and the fiber body may change between builds.
//! A change to what the descriptor says bumps [`LAYOUT_VERSION`]; the script refuses a
//! version it does not know. The offsets are computed by the compiler (`offset_of!`), so
//! they are right for the build they are in; the byte codes of `TaskState`,
//! `SwitcherKind` and the fiber's state likewise.
//!
//! # The registry (cited as "registry rule N")
//!
//! 1. An executor enters the registry the first time it is used pinned (sched rule 1's
//!    first `ensure_init`, off the hot path: that branch runs once per executor) and
//!    leaves it first thing in its drop, before teardown, so the registry names only
//!    executors that are alive and pinned.
//! 2. Entering takes the first null slot of [`REGISTRY_SLOTS`] by compare-exchange;
//!    leaving stores null into the slot holding the executor. Both are lock-free and
//!    bounded by `REGISTRY_SLOTS` steps; nothing allocates. With every slot taken the
//!    executor is counted in `unlisted` instead and the debugger says so.
//! 3. The only reader is a debugger, with the process stopped. Threads only race each
//!    other for slots, which the compare-exchange's atomicity settles, so every access is
//!    `Relaxed`. The atomics are `core`'s, not the `sync` facade's: loom need not model a
//!    debugger's list, and a `static` needs `const` constructors (under `keel_loom` the
//!    registry does nothing).
//!
//! The descriptor lives in one `static` with the registry in it: every program that pins
//! an executor references it (rule 1), so the linker keeps it, and `#[used]` keeps it
//! through the compiler.

use crate::exec::sched::Sched;
use crate::list::{Links, List};
use crate::stack::pool::StackPool;
use crate::task::header::{Header, OwnedLink, RunLink, TaskCore, Trailer};
use crate::task::state::{SuspendReason, TaskState};
use core::mem::{offset_of, size_of};
use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

/// The version of the descriptor's layout and meaning; the GDB script checks it.
pub const LAYOUT_VERSION: u32 = 2;

/// How many executors the registry lists at once (registry rule 2).
pub const REGISTRY_SLOTS: usize = 64;

/// The debugger descriptor (see the module doc); exported as `keel_debug`.
#[repr(C)]
#[derive(Debug)]
pub struct KeelDebug {
    /// `b"keel-dbg"`.
    pub magic: [u8; 8],
    /// [`LAYOUT_VERSION`].
    pub version: u32,
    /// Size of a pointer (8).
    pub ptr_size: u32,
    /// Offsets into `Sched`, whose address is what the registry holds.
    pub sched: SchedLayout,
    /// Offsets into a task slot, from its header (the address a list link holds).
    pub task: TaskLayout,
    /// Offsets into a fiber task's body, from the body's start.
    pub fiber: FiberLayout,
    /// `TaskState` byte codes: Idle, Attached, Ready, Running, Suspended(Timer, Io,
    /// Wait, SqSlot), Cancelling, Draining, Completed.
    pub state_codes: [u8; 12],
    /// `SwitcherKind` byte codes: Stackless, Fiber, Custom.
    pub kind_codes: [u8; 4],
    /// How many slots `executors` has.
    pub slots: u32,
    /// Executors that found no free slot (registry rule 2).
    pub unlisted: AtomicU32,
    /// Zero (keeps `executors` 8-aligned with no implicit padding).
    pub reserved: u32,
    /// The registry: each slot null or a live, pinned executor's `Sched`.
    pub executors: [AtomicPtr<()>; REGISTRY_SLOTS],
}

/// Where the debugger finds an executor's state (see [`KeelDebug`]).
#[repr(C)]
#[derive(Debug)]
pub struct SchedLayout {
    /// The list of tasks it owns (a `List`).
    pub owned: u32,
    /// The three run-queue levels (`List`s, `list_size` apart), High first.
    pub ready: u32,
    /// Tasks attached (a `usize`).
    pub attached: u32,
    /// Inside `run` (a `bool`).
    pub running: u32,
    /// Counters (`u64`s): resumed, completed, timers fired, inbox taken, i/o submitted,
    /// i/o completed, parks.
    pub stats: [u32; 7],
    /// The stack pool's `StackStats` (`u64`s: created, reused, released, high_water,
    /// in_use, spares, in that order from this offset, 8 apart).
    pub stack_stats: u32,
    /// Accounting: on (a `bool`), then ticks (`u64`s) in tasks, parked, in run.
    pub times: [u32; 4],
    /// In a `List`: its head (a header pointer or null) and its length (a `usize`).
    pub list_head: u32,
    /// See `list_head`.
    pub list_len: u32,
    /// The size of a `List`.
    pub list_size: u32,
    /// In a `Links`: the next header pointer (or null).
    pub links_next: u32,
    /// The driver's [`DriverDebug`](crate::driver_debug::DriverDebug) (`#[repr(C)]`), and
    /// its size.
    pub driver: u32,
    /// See `driver`.
    pub driver_size: u32,
}

/// Where the debugger finds a task's fields, from its header (see [`KeelDebug`]).
#[repr(C)]
#[derive(Debug)]
pub struct TaskLayout {
    /// `TaskState`, one byte (`state_codes`).
    pub state: u32,
    /// CPU and I/O priority bytes (0 High, 1 Normal, 2 Low).
    pub prio_cpu: u32,
    /// See `prio_cpu`.
    pub prio_io: u32,
    /// The body's vtable pointer (null: no body), and in the vtable the `SwitcherKind`
    /// byte (`kind_codes`).
    pub body_vt: u32,
    /// See `body_vt`.
    pub vt_kind: u32,
    /// The id (`u32`).
    pub id: u32,
    /// The name: a pointer then a length.
    pub name: u32,
    /// The links in the owner's list of tasks (`SchedLayout::owned`).
    pub owned_links: u32,
    /// The list of status blocks with i/o in flight (a `List`).
    pub initiated: u32,
    /// Counters (`u64`s): i/o initiated, i/o completed, resumptions.
    pub stats: [u32; 3],
    /// The body's start.
    pub body: u32,
    /// Accounting of the run (`u64` ticks, zero when the executor does not account):
    /// running, suspended, ready but waiting, the longest single run.
    pub times: [u32; 4],
}

/// Where the debugger finds a fiber's state, from its body (see [`KeelDebug`]).
#[repr(C)]
#[derive(Debug)]
pub struct FiberLayout {
    /// The stack's base (lowest address) and size in bytes.
    pub stack_base: u32,
    /// See `stack_base`.
    pub stack_size: u32,
    /// The fiber's state byte; its value once the fiber has a stack and has not run
    /// (before that the stack fields hold no stack), and once it has run (its regs hold
    /// where it resumes while it is not running).
    pub state: u32,
    /// See `state`.
    pub fresh_code: u32,
    /// See `state`.
    pub started_code: u32,
    /// The switcher's saved registers: for keel's switch `AsmRegs` (`sp`, then `link`);
    /// for keel-linux's ucontext switcher a pointer to the fiber's `ucontext_t`.
    pub regs: u32,
}

const fn u(v: usize) -> u32 {
    assert!(v <= u32::MAX as usize);
    v as u32
}

/// One byte of a one-byte `Copy` value (`TaskState`, `SwitcherKind`).
const fn code<T: Copy>(v: T) -> u8 {
    assert!(size_of::<T>() == 1);
    // SAFETY: `T` is one byte (asserted), and every byte of a value is initialised
    // (a one-byte enum has no padding).
    unsafe { *(&raw const v).cast::<u8>() }
}

const TRAILER: usize = offset_of!(TaskCore, trailer);
type OwnedList = List<Header, OwnedLink>;

/// The descriptor and the registry (module doc).
#[unsafe(no_mangle)]
#[used]
pub static keel_debug: KeelDebug = KeelDebug {
    magic: *b"keel-dbg",
    version: LAYOUT_VERSION,
    ptr_size: u(size_of::<usize>()),
    sched: SchedLayout {
        owned: u(offset_of!(Sched, owned)),
        ready: u(offset_of!(Sched, ready) + crate::exec::run_queue::RunQueue::DEBUG_LEVELS),
        attached: u(offset_of!(Sched, attached)),
        running: u(offset_of!(Sched, running)),
        stats: {
            use crate::exec::stats::StatsCells as St;
            let s = offset_of!(Sched, stats);
            [
                u(s + offset_of!(St, resumed)),
                u(s + offset_of!(St, completed)),
                u(s + offset_of!(St, timers_fired)),
                u(s + offset_of!(St, inbox_taken)),
                u(s + offset_of!(St, io_submitted)),
                u(s + offset_of!(St, io_completed)),
                u(s + offset_of!(St, parks)),
            ]
        },
        stack_stats: u(offset_of!(Sched, stacks) + StackPool::DEBUG_STATS),
        times: {
            use crate::acct::ExecTimes as T;
            let t = offset_of!(Sched, times);
            [
                u(t + offset_of!(T, on)),
                u(t + offset_of!(T, task)),
                u(t + offset_of!(T, parked)),
                u(t + offset_of!(T, in_run)),
            ]
        },
        list_head: u(OwnedList::DEBUG_HEAD_LEN[0]),
        list_len: u(OwnedList::DEBUG_HEAD_LEN[1]),
        list_size: u(size_of::<OwnedList>()),
        links_next: u(Links::<Header>::DEBUG_NEXT),
        driver: u(offset_of!(Sched, driver_debug)),
        driver_size: u(size_of::<crate::driver_debug::DriverDebug>()),
    },
    task: TaskLayout {
        state: u(offset_of!(Header, state)),
        prio_cpu: u(offset_of!(Header, prio) + offset_of!(crate::priority::Priorities, cpu)),
        prio_io: u(offset_of!(Header, prio) + offset_of!(crate::priority::Priorities, io)),
        body_vt: u(offset_of!(Header, body)),
        vt_kind: u(offset_of!(crate::task::body::BodyVTable, kind)),
        id: u(TRAILER + Trailer::DEBUG_ID),
        name: u(TRAILER + offset_of!(Trailer, name)),
        owned_links: u(TRAILER + offset_of!(Trailer, owned_links)),
        initiated: u(TRAILER + offset_of!(Trailer, initiated)),
        stats: {
            use crate::task::header::TaskStatsCells as St;
            let s = TRAILER + offset_of!(Trailer, stats);
            [
                u(s + offset_of!(St, io_initiated)),
                u(s + offset_of!(St, io_completed)),
                u(s + offset_of!(St, resumptions)),
            ]
        },
        body: u(size_of::<TaskCore>()),
        times: {
            use crate::acct::TaskTimes as T;
            let t = TRAILER + offset_of!(Trailer, times);
            [
                u(t + offset_of!(T, running)),
                u(t + offset_of!(T, suspended)),
                u(t + offset_of!(T, ready_wait)),
                u(t + offset_of!(T, longest_run)),
            ]
        },
    },
    fiber: {
        let f = crate::fiber::DEBUG_FIBER;
        FiberLayout {
            stack_base: u(f[0]),
            stack_size: u(f[1]),
            state: u(f[2]),
            fresh_code: u(f[3]),
            started_code: u(f[4]),
            regs: u(f[5]),
        }
    },
    state_codes: {
        use SuspendReason as R;
        use TaskState as S;
        [
            code(S::Idle),
            code(S::Attached),
            code(S::Ready),
            code(S::Running),
            code(S::Suspended(R::Timer)),
            code(S::Suspended(R::Io)),
            code(S::Suspended(R::Wait)),
            code(S::Suspended(R::SqSlot)),
            code(S::Cancelling),
            code(S::Draining),
            code(S::Completed),
            0xff,
        ]
    },
    kind_codes: {
        use crate::switch::SwitcherKind as K;
        [code(K::Stackless), code(K::Fiber), code(K::Custom), 0xff]
    },
    slots: u(REGISTRY_SLOTS),
    unlisted: AtomicU32::new(0),
    reserved: 0,
    executors: [const { AtomicPtr::new(core::ptr::null_mut()) }; REGISTRY_SLOTS],
};

// The GDB script reads the descriptor with this layout (`DESC_FMT` in core/gdb/keel.py).
static_assertions::const_assert_eq!(offset_of!(KeelDebug, sched), 16);
static_assertions::const_assert_eq!(offset_of!(KeelDebug, task), 104);
static_assertions::const_assert_eq!(offset_of!(KeelDebug, fiber), 172);
static_assertions::const_assert_eq!(offset_of!(KeelDebug, state_codes), 196);
static_assertions::const_assert_eq!(offset_of!(KeelDebug, unlisted), 216);
static_assertions::const_assert_eq!(offset_of!(KeelDebug, executors), 224);
// The GDB script reads a `DriverDebug` as `DRIVER_FMT`.
static_assertions::const_assert_eq!(size_of::<crate::driver_debug::DriverDebug>(), 40);

// The run queue's levels are `List<Header, RunLink>`s, read with the owned list's offsets.
static_assertions::const_assert_eq!(size_of::<List<Header, RunLink>>(), size_of::<OwnedList>());

/// Registry rule 1: lists `sched` (cold: once per executor).
#[cold]
#[inline(never)]
pub(crate) fn register(sched: &Sched) {
    if cfg!(keel_loom) {
        return;
    }
    let me = (sched as *const Sched).cast_mut().cast::<()>();
    for slot in &keel_debug.executors {
        // Relaxed: registry rule 3.
        if slot.compare_exchange(core::ptr::null_mut(), me, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            return;
        }
    }
    // Relaxed: registry rule 3.
    keel_debug.unlisted.fetch_add(1, Ordering::Relaxed);
}

/// Registry rule 1: takes `sched` off the list (from the executor's drop).
pub(crate) fn unregister(sched: &Sched) {
    if cfg!(keel_loom) {
        return;
    }
    let me = (sched as *const Sched).cast_mut().cast::<()>();
    for slot in &keel_debug.executors {
        // Relaxed: registry rule 3.
        if slot.compare_exchange(me, core::ptr::null_mut(), Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            return;
        }
    }
    // Relaxed: registry rule 3 (it was counted, not listed).
    keel_debug.unlisted.fetch_sub(1, Ordering::Relaxed);
}
