//! Task storage: the hot header, the cold trailer, and the body bytes.
//!
//! ```text
//! TaskSlot<N>  (#[repr(C)], 'static, never freed)
//! ┌──────────────────────────── TaskCore ─────────────────────────────┐
//! │ Header (64 B, one cache line, align 64)  │ Trailer (cold)         │ body: N bytes, align 16
//! │ notify gen owner inbox | state prio flags │ timer, i/o lists,      │ (the future or fiber
//! │ run_links body_vt                        │ result, name, stats    │  closure of this run)
//! └──────────────────────────────────────────┴────────────────────────┘
//! ```
//!
//! `Header` must be the first field of `TaskCore`, and `TaskCore` the first of
//! `TaskSlot`: a `NonNull<Header>` is cast to the core and offset to the body. The body
//! starts at `size_of::<TaskCore>()` whatever `N` is (asserted below), which is how
//! type-erased code finds it.
//!
//! Where a task pointer may reach (provenance rules, cited as "provenance rule N"). A
//! reference's provenance covers only the bytes of its pointee, so a pointer made from a
//! `&Header` may not step out to the trailer or the body (undefined behaviour under
//! Stacked Borrows; Tree Borrows too for writes). So, as embassy's `TaskRef` does:
//! 1. Every `NonNull<Header>` in keel is made by [`TaskSlot::header`], a cast of
//!    `NonNull::from(&'static TaskSlot<N>)`: its provenance covers the whole slot
//!    (header, trailer and body). It is only ever copied, or cast to an integer and back
//!    (rule 5), never re-made from a reference.
//! 2. From a task pointer, the trailer, the body bytes, the timer node and the inbox
//!    node are reached only through [`SlotPtr`], by a place projection of the raw pointer
//!    (`&(*core).trailer`, `&raw mut (*core).trailer.timer`: no `&Header` or `&TaskCore`
//!    is made on the way) or a byte offset (`byte_add`), never from a `&Header`.
//!    A `&Header` (`SlotPtr::hdr`, `as_ref`) is made only to read and write the header's
//!    own fields; a `&Trailer` only for the trailer's own fields.
//! 3. The container-of steps (timer node to header: [`Header::from_timer`]; inbox node
//!    to header: [`Header::from_inbox`]) start from node pointers made by rule 2 from a
//!    whole-slot pointer (`SlotPtr::timer`, `SlotPtr::inbox_node`), so they keep the
//!    whole slot's provenance and stepping back stays inside it.
//! 4. The list links in the trailer (`owned_links`, `submit_links`) are projected from
//!    the whole-slot pointer as well; the lists store the header pointers they are given
//!    (rule 1), never compute them from a link's address.
//! 5. Where the address travels as an integer (an [`IoToken`](crate::driver::IoToken)
//!    through the driver, the tagged data of a keel waker, a dispatcher level's tagged
//!    top), the integer is made from a rule 1 pointer (`as usize`), which exposes the
//!    whole slot's provenance, and the pointer made back from it (`as *mut Header`, an
//!    exposed-provenance cast) may take that provenance: the accesses of rules 2-3
//!    through it are those a rule 1 pointer may make.
//! 6. Every byte a shared slot pointer writes is inside an `UnsafeCell` (`Cell`s,
//!    atomics, the body's `Cell<[MaybeUninit<u8>; N]>`), so writes through a pointer
//!    made from `&'static TaskSlot` are allowed.
//!
//! The unit test `provenance::provenance_rule_2_pointers_agree` checks, for every accessor, that the
//! pointers made from a handle equal those a `&TaskSlot` names directly (the numbers
//! agree; the rules above are what make the provenance right).
//! Who touches what (header rules, cited as "header rule N"):
//! 1. `notify`, `gen`, `owner` and `inbox` are atomics any thread may read; their
//!    writers and orderings are the wake protocol of the mailbox module.
//! 2. Everything in `Cell`s (header and trailer, and the resume `Context` of rt rule 1)
//!    belongs to the executor that owns the task (`owner`), and only that executor's
//!    thread touches it. A task with no owner
//!    is touched only by the thread that claims it.
//! 3. The body bytes are written at attach and dropped at completion or cancellation,
//!    by the owner, never while a resume of the body is on the stack.
//! 4. The trailer's `id` is a label any thread may read (`TaskHandle::id`, also through
//!    a stale handle while another thread creates the slot again): a plain `core` atomic,
//!    written with `Relaxed` by `create` and read with `Relaxed`. Nothing is published
//!    through it, so no ordering is needed; it only must not be a data race. (`core`,
//!    not loom's: loom need not model a label.)
//!
//! Over the house ~400 lines on purpose: the layout, the provenance rules and the
//! accessors that enforce them (`SlotPtr`) must be read together, and their tests (layout
//! and provenance assertions) sit beside them.

use crate::io_status::block::{IoLink, IoStatus};
use crate::list::{Link, Links, List};
use crate::mailbox::Mailbox;
use crate::mailbox::inbox::InboxNode;
use crate::mailbox::notify::AtomicNotify;
use crate::priority::Priorities;
use crate::sync::{AtomicPtr, AtomicU8, AtomicU32, maybe_const_fn};
use crate::task::body::BodyVTable;
use crate::task::state::{SuspendReason, TaskState};
use crate::timer::TimerNode;
use core::cell::Cell;
use core::mem::MaybeUninit;
use core::ptr::NonNull;

/// Marker for the run-queue links.
pub(crate) struct RunLink;
/// Marker for the links of the executor's lists of tasks waiting for room to submit
/// (their own links: a task may wait for room while it is ready, room rule 1, exec/submit.rs).
pub(crate) struct SubmitLink;
/// Marker for the links of the executor's list of tasks it owns.
pub(crate) struct OwnedLink;

/// `flags` bits (owner-local).
pub(crate) mod flag {
    /// Woken while running: requeue when it suspends (wake rule 1).
    pub const WOKEN_WHILE_RUNNING: u8 = 1 << 0;
    /// Cancel requested: every suspension point returns `Cancelled`.
    pub const CANCEL: u8 = 1 << 1;
    /// Granted room to submit ahead of the tasks still waiting (one submission).
    pub const GRANTED: u8 = 1 << 2;
    /// Attached from another thread: released by its executor once it completes.
    pub const RELEASE_ON_COMPLETE: u8 = 1 << 3;
    /// Completed, to be released once no wake is in flight to it.
    pub const RELEASE_PENDING: u8 = 1 << 4;
    /// Came from a dispatcher: count its completion there (dispatch rule 3).
    pub const DISPATCHED: u8 = 1 << 5;
    /// Linked in its I/O priority's list of tasks waiting for room (room rule 1).
    pub const QUEUED_FOR_ROOM: u8 = 1 << 6;
    /// A suspension point of the current poll asked for room (room rule 2).
    pub const ASKED_ROOM: u8 = 1 << 7;
}

/// The hot part of a task: fits one cache line in release builds.
#[repr(C, align(64))]
pub(crate) struct Header {
    /// Notify bits and the newest woken generation (wake rules, `mailbox::notify`).
    pub(crate) notify: AtomicNotify,
    /// The current run's generation; the owner writes, anyone reads.
    pub(crate) generation: AtomicU32,
    /// The mailbox of the executor that owns the task (its identity), null if none; a
    /// sentinel while an attacher claims it or a dispatcher holds it (remote rule 2).
    pub(crate) owner: AtomicPtr<Mailbox>,
    /// The link in an executor's inbox.
    pub(crate) inbox: InboxNode,
    pub(crate) state: Cell<TaskState>,
    pub(crate) prio: Cell<Priorities>,
    pub(crate) flags: Cell<u8>,
    /// Why it will be suspended if its body returns `Pending` now.
    pub(crate) reason: Cell<SuspendReason>,
    pub(crate) run_links: Links<Header>,
    pub(crate) body: Cell<Option<&'static BodyVTable>>,
}

/// The cold part of a task.
///
/// Field order is cache-line order (`repr(C)`; the trailer starts on a line, right after
/// the 64-byte header): what every i/o operation touches (its two status lists and two
/// counters) fills the first line, so an operation touches the header's line and this
/// one; the resumption counter and the rest follow. Spread over more lines,
/// an operation would miss in cache more often when the kernel's socket work evicts them
/// between every two messages of an echo server.
#[repr(C)]
pub(crate) struct Trailer {
    pub(crate) initiated: List<IoStatus, IoLink>,
    pub(crate) completed: List<IoStatus, IoLink>,
    pub(crate) stats: TaskStatsCells,
    /// The `Context` (and the waker it names) the owner polls the body with (rt rule 1),
    /// right after `resumptions`, in the line a resume touches anyway.
    pub(crate) resume: crate::task::wake::ResumeCx,
    pub(crate) timer: TimerNode,
    /// Operations whose status block was dropped while they were in flight.
    pub(crate) orphans: Cell<u32>,
    pub(crate) owned_links: Links<Header>,
    /// Links in a list of tasks waiting for room to submit (`flag::QUEUED_FOR_ROOM`).
    pub(crate) submit_links: Links<Header>,
    /// The task's id: written by `create` (header rule 4), read from any thread.
    id: core::sync::atomic::AtomicU32,
    pub(crate) name: Cell<&'static str>,
    /// Whether the slot holds a created task (`task/mod.rs`).
    pub(crate) live: AtomicU8,
    pub(crate) body_capacity: Cell<usize>,
    /// A finished fiber's stack, held while the task drains (fiber rule 4).
    pub(crate) pending_stack: Cell<Option<crate::stack::Stack>>,
    pub(crate) times: crate::acct::TaskTimes,
    /// The last completed run's result, for joins from any thread (join rules 1-2).
    pub(crate) record: crate::task::join::JoinRecord,
    /// Same-executor joins waiting for this run (join rule 3).
    pub(crate) joiners: List<crate::task::join::JoinNode, crate::task::join::JoinLink>,
}

/// Per-task counters (owner-local); the i/o ones first (see `Trailer`).
#[derive(Default)]
#[repr(C)]
pub(crate) struct TaskStatsCells {
    pub(crate) io_initiated: Cell<u64>,
    pub(crate) io_completed: Cell<u64>,
    pub(crate) resumptions: Cell<u64>,
}

#[repr(C)]
pub(crate) struct TaskCore {
    pub(crate) header: Header,
    pub(crate) trailer: Trailer,
}

#[repr(C, align(16))]
pub(crate) struct BodyStorage<const N: usize>(pub(crate) Cell<[MaybeUninit<u8>; N]>);

/// Alignment every body gets.
pub(crate) const BODY_ALIGN: usize = 16;

/// Storage for one task, declared by the user as a `static` (or leaked): it outlives
/// every handle and waker that can name it. `N` is the body capacity in bytes (the
/// largest future or fiber closure this slot can run).
#[repr(C)]
pub struct TaskSlot<const N: usize = 256> {
    pub(crate) core: TaskCore,
    pub(crate) body: BodyStorage<N>,
}

// SAFETY: per header rules 1-3, the `Cell` fields are touched only by the owning
// executor's thread (or the one claiming an unowned task), and every field other
// threads touch is atomic.
unsafe impl<const N: usize> Sync for TaskSlot<N> {}
// SAFETY: as for `Sync`; a slot holds no thread-bound data of its own (a body that is
// not `Send` is only ever attached, run and dropped on one executor's thread).
unsafe impl<const N: usize> Send for TaskSlot<N> {}

impl<const N: usize> TaskSlot<N> {
    maybe_const_fn! {
        /// An empty slot, not yet created.
        pub fn new() -> Self {
            TaskSlot {
                core: TaskCore {
                    header: Header {
                        notify: AtomicNotify::new_unowned(),
                        generation: AtomicU32::new(0),
                        owner: AtomicPtr::new(core::ptr::null_mut()),
                        inbox: InboxNode::new(),
                        state: Cell::new(TaskState::Idle),
                        prio: Cell::new(Priorities { cpu: crate::Priority::Normal, io: crate::Priority::Normal }),
                        flags: Cell::new(0),
                        reason: Cell::new(SuspendReason::Wait),
                        run_links: Links::new(),
                        body: Cell::new(None),
                    },
                    trailer: Trailer {
                        timer: TimerNode::new(),
                        initiated: List::new(),
                        completed: List::new(),
                        resume: crate::task::wake::ResumeCx::new(),
                        orphans: Cell::new(0),
                        owned_links: Links::new(),
                        submit_links: Links::new(),
                        id: core::sync::atomic::AtomicU32::new(0),
                        name: Cell::new(""),
                        live: AtomicU8::new(0),
                        body_capacity: Cell::new(N),
                        stats: TaskStatsCells {
                            resumptions: Cell::new(0),
                            io_initiated: Cell::new(0),
                            io_completed: Cell::new(0),
                        },
                        pending_stack: Cell::new(None),
                        times: crate::acct::TaskTimes {
                            running: Cell::new(0),
                            suspended: Cell::new(0),
                            ready_wait: Cell::new(0),
                            longest_run: Cell::new(0),
                            since: Cell::new(0),
                        },
                        record: crate::task::join::JoinRecord::new(),
                        joiners: List::new(),
                    },
                },
                body: BodyStorage(Cell::new([MaybeUninit::uninit(); N])),
            }
        }
    }

    /// The task pointer every handle, waker, token and list holds: the whole slot's
    /// address and provenance, typed as its header (provenance rule 1).
    #[inline(always)]
    pub(crate) fn header(&'static self) -> NonNull<Header> {
        NonNull::from(self).cast::<Header>()
    }
}

impl<const N: usize> Default for TaskSlot<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl Trailer {
    /// Where the id is, for debuggers (`exec/debug.rs`).
    pub(crate) const DEBUG_ID: usize = core::mem::offset_of!(Self, id);

    /// The task's id (header rule 4).
    #[inline]
    pub(crate) fn id(&self) -> u32 {
        // Relaxed: header rule 4 (a label; it orders nothing).
        self.id.load(core::sync::atomic::Ordering::Relaxed)
    }

    /// Sets the task's id (`create`, header rule 4).
    pub(crate) fn set_id(&self, id: u32) {
        // Relaxed: header rule 4.
        self.id.store(id, core::sync::atomic::Ordering::Relaxed);
    }
}

/// Access to a task through a pointer with whole-slot provenance (provenance rules 1-3).
///
/// Implemented for the `NonNull<Header>` that [`TaskSlot::header`] makes (every one in
/// keel is such a copy): the trailer, body, timer node and inbox node are projected from
/// the raw pointer, never from a `&Header`.
pub(crate) trait SlotPtr: Copy {
    /// The header's own fields.
    fn hdr(self) -> &'static Header;
    /// The trailer of the task this pointer names.
    fn trailer(self) -> &'static Trailer;
    /// The first byte of the body storage.
    fn body_ptr(self) -> *mut u8;
    /// The trailer's timer node, with whole-slot provenance (for `Header::from_timer`).
    fn timer(self) -> NonNull<TimerNode>;
    /// The header's inbox node, with whole-slot provenance (for `Header::from_inbox`).
    fn inbox_node(self) -> NonNull<InboxNode>;
    /// Operations in flight (linked and orphaned).
    fn io_in_flight(self) -> usize;
}

impl SlotPtr for NonNull<Header> {
    #[inline(always)]
    fn hdr(self) -> &'static Header {
        // SAFETY: provenance rule 1: a header in a `'static` slot; the reference covers
        // only the header's bytes (provenance rule 2).
        unsafe { &*self.as_ptr() }
    }

    #[inline(always)]
    fn trailer(self) -> &'static Trailer {
        // SAFETY: provenance rules 1-2: `self` points at the `TaskCore` that starts every
        // `#[repr(C)]` `TaskSlot` (asserted below) with the whole slot's provenance, so
        // the projection stays inside what it may reach; the slot is `'static`.
        unsafe { &(*self.as_ptr().cast::<TaskCore>()).trailer }
    }

    #[inline(always)]
    fn body_ptr(self) -> *mut u8 {
        // SAFETY: provenance rules 1-2: the body follows the core at
        // `size_of::<TaskCore>()` in every `TaskSlot<N>` (asserted below), inside the
        // slot `self` may reach.
        unsafe { self.as_ptr().cast::<u8>().byte_add(core::mem::size_of::<TaskCore>()) }
    }

    fn timer(self) -> NonNull<TimerNode> {
        // SAFETY: as for `trailer`: a raw projection inside the slot, non-null.
        unsafe { NonNull::new_unchecked(&raw mut (*self.as_ptr().cast::<TaskCore>()).trailer.timer) }
    }

    #[inline(always)]
    fn inbox_node(self) -> NonNull<InboxNode> {
        // SAFETY: a raw projection of the header's own field, non-null (provenance rule 2).
        unsafe { NonNull::new_unchecked(&raw mut (*self.as_ptr()).inbox) }
    }

    fn io_in_flight(self) -> usize {
        let trailer = self.trailer();
        trailer.initiated.len() + trailer.orphans.get() as usize
    }
}

impl Header {
    /// The header of the task whose timer node this is (provenance rule 3).
    #[inline(always)]
    pub(crate) fn from_timer(timer: NonNull<TimerNode>) -> NonNull<Header> {
        let offset = core::mem::offset_of!(TaskCore, trailer) + core::mem::offset_of!(Trailer, timer);
        // SAFETY: timer nodes handed to the executor's heap are always the `timer` of a
        // task trailer, made by `SlotPtr::timer` with the whole slot's provenance
        // (provenance rule 3), so stepping back by its offset lands on that task's header
        // inside what the pointer may reach.
        unsafe { NonNull::new_unchecked(timer.as_ptr().byte_sub(offset).cast::<Header>()) }
    }

    /// The header of the task whose inbox node this is (provenance rule 3).
    ///
    /// # Safety
    /// `node` was made by `SlotPtr::inbox_node` (only task headers' inbox nodes are pushed
    /// to an executor's inbox or a dispatcher: wake rule 3).
    #[inline(always)]
    pub(crate) unsafe fn from_inbox(node: NonNull<InboxNode>) -> NonNull<Header> {
        let offset = core::mem::offset_of!(Header, inbox);
        // SAFETY: the caller's duty: `node` is a header's `inbox` with whole-slot
        // provenance, so stepping back stays inside the slot.
        unsafe { NonNull::new_unchecked(node.as_ptr().byte_sub(offset).cast::<Header>()) }
    }

    #[inline(always)]
    pub(crate) fn has_flag(&self, flag: u8) -> bool {
        self.flags.get() & flag != 0
    }

    #[inline(always)]
    pub(crate) fn set_flag(&self, flag: u8) {
        self.flags.set(self.flags.get() | flag);
    }

    #[inline(always)]
    pub(crate) fn clear_flag(&self, flag: u8) {
        self.flags.set(self.flags.get() & !flag);
    }
}

// SAFETY: `run_links` is used only for the run queues (RunLink).
unsafe impl Link<RunLink> for Header {
    fn links(this: NonNull<Self>) -> NonNull<Links<Self>> {
        // SAFETY: `this` is a valid header; the projection stays inside it.
        unsafe { NonNull::new_unchecked(&raw mut (*this.as_ptr()).run_links) }
    }
}

// SAFETY: `submit_links` (in the trailer) is used only for the lists of tasks waiting
// for room to submit.
unsafe impl Link<SubmitLink> for Header {
    fn links(this: NonNull<Self>) -> NonNull<Links<Self>> {
        // SAFETY: provenance rule 4: a raw projection from the whole-slot pointer.
        unsafe { NonNull::new_unchecked(&raw mut (*this.as_ptr().cast::<TaskCore>()).trailer.submit_links) }
    }
}

// SAFETY: `owned_links` (in the trailer) is used only for the owned-task list.
unsafe impl Link<OwnedLink> for Header {
    fn links(this: NonNull<Self>) -> NonNull<Links<Self>> {
        // SAFETY: provenance rule 4: a raw projection from the whole-slot pointer.
        unsafe { NonNull::new_unchecked(&raw mut (*this.as_ptr().cast::<TaskCore>()).trailer.owned_links) }
    }
}

#[cfg(not(keel_loom))]
mod layout {
    use super::*;
    use static_assertions::const_assert;
    use static_assertions::const_assert_eq;

    const_assert_eq!(core::mem::align_of::<Header>(), 64);
    #[cfg(not(debug_assertions))]
    const_assert_eq!(core::mem::size_of::<Header>(), 64);
    const_assert!(core::mem::size_of::<Header>() <= 128);
    const_assert_eq!(core::mem::offset_of!(TaskCore, header), 0);
    const_assert_eq!(core::mem::offset_of!(TaskSlot<0>, core), 0);
    const_assert_eq!(core::mem::offset_of!(TaskSlot<0>, body), core::mem::size_of::<TaskCore>());
    const_assert_eq!(core::mem::offset_of!(TaskSlot<1>, body), core::mem::size_of::<TaskCore>());
    const_assert_eq!(core::mem::offset_of!(TaskSlot<4000>, body), core::mem::size_of::<TaskCore>());
    const_assert_eq!(core::mem::align_of::<BodyStorage<1>>(), BODY_ALIGN);
    static_assertions::assert_impl_all!(TaskSlot<64>: Sync, Send);
    // An i/o operation's fields sit in the trailer's first line (see `Trailer`), right
    // after the one-line header.
    #[cfg(not(debug_assertions))]
    const_assert_eq!(core::mem::offset_of!(TaskCore, trailer), 64);
    const_assert!(core::mem::offset_of!(Trailer, completed) + core::mem::size_of::<List<IoStatus, IoLink>>() <= 64);
    const_assert!(core::mem::offset_of!(Trailer, stats) + core::mem::offset_of!(TaskStatsCells, resumptions) <= 64);
    // A resume writes it next to `resumptions`: the same line.
    #[cfg(not(debug_assertions))]
    const_assert_eq!(
        (core::mem::offset_of!(Trailer, resume) + core::mem::size_of::<crate::task::wake::ResumeCx>() - 1) / 64,
        (core::mem::offset_of!(Trailer, stats) + core::mem::offset_of!(TaskStatsCells, resumptions)) / 64
    );
}

#[cfg(all(test, not(keel_loom)))]
mod provenance {
    extern crate std;
    use super::*;
    use crate::task::TaskAttrs;
    use std::boxed::Box;

    const N: usize = 96;

    fn addr<T: ?Sized>(ptr: *const T) -> usize {
        ptr.cast::<u8>() as usize
    }

    /// Provenance rules 1-4: every accessor, from a handle's pointer, names the same bytes
    /// as the slot's own fields; the body is reachable to its last byte, the timer and
    /// inbox nodes step back to the same pointer.
    #[test]
    fn provenance_rule_2_pointers_agree() {
        let slot: &'static TaskSlot<N> = Box::leak(Box::new(TaskSlot::new()));
        let handle = slot.create(TaskAttrs::default()).unwrap();
        let task = handle.header();
        assert_eq!(task, slot.header());
        assert_eq!(addr(task.as_ptr()), addr(slot as *const TaskSlot<N>));
        assert_eq!(addr(task.hdr()), addr(&slot.core.header));
        assert_eq!(addr(task.trailer()), addr(&slot.core.trailer));
        assert_eq!(addr(task.body_ptr()), addr(slot.body.0.as_ptr()));
        assert_eq!(addr(task.timer().as_ptr()), addr(&slot.core.trailer.timer));
        assert_eq!(addr(task.inbox_node().as_ptr()), addr(&slot.core.header.inbox));
        assert_eq!(Header::from_timer(task.timer()), task);
        // SAFETY: made by `inbox_node`.
        assert_eq!(unsafe { Header::from_inbox(task.inbox_node()) }, task);
        assert_eq!(addr(<Header as Link<RunLink>>::links(task).as_ptr()), addr(&slot.core.header.run_links));
        assert_eq!(addr(<Header as Link<SubmitLink>>::links(task).as_ptr()), addr(&slot.core.trailer.submit_links));
        assert_eq!(addr(<Header as Link<OwnedLink>>::links(task).as_ptr()), addr(&slot.core.trailer.owned_links));
        // Reads and writes through them land in the slot's fields.
        assert_eq!(handle.id(), slot.core.trailer.id());
        assert_eq!(task.trailer().body_capacity.get(), N);
        task.trailer().orphans.set(2);
        assert_eq!(task.io_in_flight(), 2);
        task.trailer().orphans.set(0);
        assert_eq!(task.io_in_flight(), 0);
        assert!(!Header::from_timer(task.timer()).trailer().timer.is_armed());
        for i in [0, N / 2, N - 1] {
            // SAFETY: inside the body storage; nothing else uses it (no task attached).
            unsafe { task.body_ptr().add(i).write(i as u8 + 1) };
            // SAFETY: written just above.
            assert_eq!(unsafe { (*slot.body.0.as_ptr())[i].assume_init() }, i as u8 + 1);
        }
        // SAFETY: a node in the `'static` slot.
        assert!(unsafe { task.inbox_node().as_ref() }.next_load().is_null());
    }
}
