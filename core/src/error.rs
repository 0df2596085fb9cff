//! Small typed errors. Each `Display` says what the caller should change; a
//! capacity failure hands the rejected item back.
//!
//! One file over the house ~400 lines on purpose: every error type of the crate side by
//! side, each small, so their wording and their `Display` stay consistent.

use core::fmt;

/// A Linux errno value, carried as data (never `std::io::Error` on the hot path).
///
/// The constants use Linux's numbering on every target: the simulated driver
/// produces the same values the ring would.
#[derive(Copy, Clone, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    /// Operation not permitted.
    pub const EPERM: Errno = Errno(1);
    /// No such file or directory.
    pub const ENOENT: Errno = Errno(2);
    /// Interrupted system call.
    pub const EINTR: Errno = Errno(4);
    /// Input/output error.
    pub const EIO: Errno = Errno(5);
    /// Bad file descriptor.
    pub const EBADF: Errno = Errno(9);
    /// Try again.
    pub const EAGAIN: Errno = Errno(11);
    /// Out of memory.
    pub const ENOMEM: Errno = Errno(12);
    /// Device or resource busy.
    pub const EBUSY: Errno = Errno(16);
    /// Invalid argument.
    pub const EINVAL: Errno = Errno(22);
    /// Resource deadlock would occur (here: waiting for room inside a `with_driver`
    /// closure, which holds what the wait needs).
    pub const EDEADLK: Errno = Errno(35);
    /// Timer expired.
    pub const ETIME: Errno = Errno(62);
    /// No buffer space available.
    pub const ENOBUFS: Errno = Errno(105);
    /// Connection reset by peer.
    pub const ECONNRESET: Errno = Errno(104);
    /// Connection refused.
    pub const ECONNREFUSED: Errno = Errno(111);
    /// Operation canceled.
    pub const ECANCELED: Errno = Errno(125);

    /// The raw value.
    pub const fn raw(self) -> i32 {
        self.0
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Errno({})", self.0)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "errno {}", self.0)
    }
}

/// How a task's run ended when it did not succeed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskError {
    /// The task was cancelled (by `cancel`, or by its executor going away).
    Cancelled,
    /// The task body reported a failure with this code.
    Failed(i64),
    /// The task body panicked; the message names where (fiber tasks, keel-linux).
    Panicked(&'static str),
    /// A fiber left MXCSR's control bits or the x87 control word changed when it switched
    /// back to its executor (at a suspension, or at its return) without
    /// `FiberAttrs::save_fp_control`; the executor loaded its own values back, so the
    /// fiber ran on with the executor's (fiber rule 6). The values are the fiber's at the
    /// first such switch; the task's own result is discarded.
    FpControlChanged {
        /// The task's id (`TaskHandle::id`).
        task: u32,
        /// The MXCSR the fiber left.
        mxcsr: u32,
        /// The x87 control word the fiber left.
        x87_cw: u16,
    },
    /// A fiber attached from another thread could get no stack from its executor's
    /// pool when it was first to run (fiber rule 8); its body was dropped without
    /// running.
    NoStack {
        /// What the stack provider said.
        errno: i32,
        /// The stack size asked for (`FiberAttrs::stack_size`).
        wanted: usize,
    },
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskError::Cancelled => f.write_str("the task was cancelled"),
            TaskError::Failed(code) => write!(f, "the task failed with code {code}"),
            TaskError::Panicked(msg) => write!(f, "the task panicked: {msg}"),
            TaskError::FpControlChanged { task, mxcsr, x87_cw } => write!(
                f,
                "fiber task {task} switched out with MXCSR {mxcsr:#06x} / x87 control word {x87_cw:#06x} changed from the executor's (the executor restored its own): \
                 restore the rounding mode and exception masks before each suspension point and before returning, \
                 or attach the fiber with FiberAttrs {{ save_fp_control: true, .. }} to keep its own across suspensions"
            ),
            TaskError::NoStack { errno, wanted } => write!(
                f,
                "the fiber got no {wanted}-byte stack from its executor's pool (errno {errno}): \
                 ask for a smaller stack_size, or give the executor a provider with room"
            ),
        }
    }
}

/// The value a task run ends with.
pub type TaskResult = Result<u64, TaskError>;

/// Returned by a suspension point once the task has been cancelled.
///
/// Propagate it with `?`: it converts into [`TaskError::Cancelled`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Cancelled;

impl From<Cancelled> for TaskError {
    fn from(_: Cancelled) -> Self {
        TaskError::Cancelled
    }
}

impl fmt::Display for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the task was cancelled at this suspension point; return and let it complete")
    }
}

/// A handle named a task run that no longer exists: the task has since been
/// re-attached (a newer run) or destroyed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct StaleHandle;

impl fmt::Display for StaleHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "stale task handle: the task was re-attached or destroyed since; use the handle the latest attach returned",
        )
    }
}

/// Why an attach was refused. The body is handed back in every case.
#[derive(PartialEq, Eq)]
#[non_exhaustive]
pub enum AttachError<B> {
    /// The handle is stale (see [`StaleHandle`]).
    Stale(B),
    /// The task is attached already; wait for it to complete (or cancel it) first.
    AlreadyAttached(B),
    /// The task belongs to another executor; `release` it there first.
    OwnedElsewhere(B),
    /// The body is larger than the task slot's body storage.
    BodyTooLarge {
        /// The body that did not fit.
        body: B,
        /// Bytes it needs.
        needed: usize,
        /// Bytes the slot has: declare the slot with at least `needed`.
        capacity: usize,
    },
    /// The body needs stricter alignment than body storage gives (16 bytes).
    BodyOverAligned {
        /// The body that did not fit.
        body: B,
        /// Alignment it needs.
        align: usize,
    },
    /// The fiber's stack size is below the minimum.
    StackTooSmall {
        /// The body.
        body: B,
        /// The minimum, in bytes.
        min: usize,
    },
    /// The executor a handle named is gone (dropped, or its slot re-bound).
    ExecutorGone(B),
    /// No stack could be had for the fiber (the provider is out, or there is none).
    NoStack {
        /// The body.
        body: B,
        /// The provider's reason.
        errno: Errno,
    },
    /// This CPU lacks `cmpxchg16b`, which the work dispatcher needs (dispatch rule 1).
    Unsupported(B),
}

impl<B> AttachError<B> {
    /// The body that was not attached.
    pub fn into_body(self) -> B {
        match self {
            AttachError::Stale(b)
            | AttachError::AlreadyAttached(b)
            | AttachError::OwnedElsewhere(b)
            | AttachError::BodyTooLarge { body: b, .. }
            | AttachError::BodyOverAligned { body: b, .. }
            | AttachError::StackTooSmall { body: b, .. }
            | AttachError::ExecutorGone(b)
            | AttachError::Unsupported(b)
            | AttachError::NoStack { body: b, .. } => b,
        }
    }

    /// The error without its body, and the body.
    pub fn split(self) -> (AttachError<()>, B) {
        match self {
            AttachError::Stale(b) => (AttachError::Stale(()), b),
            AttachError::AlreadyAttached(b) => (AttachError::AlreadyAttached(()), b),
            AttachError::OwnedElsewhere(b) => (AttachError::OwnedElsewhere(()), b),
            AttachError::BodyTooLarge { body, needed, capacity } => {
                (AttachError::BodyTooLarge { body: (), needed, capacity }, body)
            }
            AttachError::BodyOverAligned { body, align } => (AttachError::BodyOverAligned { body: (), align }, body),
            AttachError::StackTooSmall { body, min } => (AttachError::StackTooSmall { body: (), min }, body),
            AttachError::NoStack { body, errno } => (AttachError::NoStack { body: (), errno }, body),
            AttachError::ExecutorGone(b) => (AttachError::ExecutorGone(()), b),
            AttachError::Unsupported(b) => (AttachError::Unsupported(()), b),
        }
    }
}

impl AttachError<()> {
    /// The same error carrying `body`.
    pub fn with_body<B>(self, body: B) -> AttachError<B> {
        match self {
            AttachError::Stale(()) => AttachError::Stale(body),
            AttachError::AlreadyAttached(()) => AttachError::AlreadyAttached(body),
            AttachError::OwnedElsewhere(()) => AttachError::OwnedElsewhere(body),
            AttachError::BodyTooLarge { needed, capacity, .. } => AttachError::BodyTooLarge { body, needed, capacity },
            AttachError::BodyOverAligned { align, .. } => AttachError::BodyOverAligned { body, align },
            AttachError::StackTooSmall { min, .. } => AttachError::StackTooSmall { body, min },
            AttachError::NoStack { errno, .. } => AttachError::NoStack { body, errno },
            AttachError::ExecutorGone(()) => AttachError::ExecutorGone(body),
            AttachError::Unsupported(()) => AttachError::Unsupported(body),
        }
    }
}

impl<B> fmt::Display for AttachError<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttachError::Stale(_) => StaleHandle.fmt(f),
            AttachError::AlreadyAttached(_) => f.write_str("the task is attached already: wait for it to complete or cancel it before attaching it again"),
            AttachError::OwnedElsewhere(_) => f.write_str("the task belongs to another executor: release it there before attaching it here"),
            AttachError::BodyTooLarge { needed, capacity, .. } => write!(f, "the task body needs {needed} bytes but the slot holds {capacity}: declare the slot as TaskSlot<{needed}> or larger"),
            AttachError::BodyOverAligned { align, .. } => write!(f, "the task body needs {align}-byte alignment; task slots align bodies to 16 bytes: box or wrap the over-aligned part"),
            AttachError::StackTooSmall { min, .. } => write!(f, "the fiber's stack size is below the minimum of {min} bytes: ask for more"),
            AttachError::NoStack { errno, .. } => write!(f, "no stack for the fiber ({errno}): give the executor a stack provider, or free stacks"),
            AttachError::ExecutorGone(_) => f.write_str("the executor this handle names is gone: get a handle to a live executor"),
            AttachError::Unsupported(_) => f.write_str(
                "this CPU lacks cmpxchg16b, which the work dispatcher needs: attach through an ExecutorHandle instead, or run on a CPU that has it (every x86_64 CPU since about 2006)",
            ),
        }
    }
}

/// The driver is lent to a `with_driver` closure already (driver rule 1, exec/lend.rs):
/// a nested `with_driver` would hand out a second live reference to it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct DriverBusy;

impl fmt::Display for DriverBusy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the driver is lent to a with_driver closure already: use the driver that closure was given, or call after it returns")
    }
}

/// Why task code could not reach its executor's driver.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DriverError {
    /// Not called from inside a keel task (or not from the task being resumed).
    NotInTask,
    /// The task's executor runs a different driver type.
    WrongDriver,
    /// The driver is lent to a `with_driver` closure already (see [`DriverBusy`]).
    Busy,
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriverError::NotInTask => f.write_str("the driver can only be reached from inside a keel task"),
            DriverError::WrongDriver => f.write_str("the task's executor runs a different driver type"),
            DriverError::Busy => DriverBusy.fmt(f),
        }
    }
}

/// Why a cancel did nothing.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelError {
    /// The handle is stale (see [`StaleHandle`]).
    Stale,
    /// The task is not attached: there is nothing to cancel.
    NotAttached,
    /// The body has returned already (draining its i/o, or completed): too late to cancel.
    TooLate,
    /// The task belongs to another executor: cancel it through that one.
    OwnedElsewhere,
}

impl fmt::Display for CancelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CancelError::Stale => StaleHandle.fmt(f),
            CancelError::NotAttached => f.write_str("the task is not attached: there is nothing to cancel"),
            CancelError::TooLate => {
                f.write_str("the task body has returned already: too late to cancel; read its result instead")
            }
            CancelError::OwnedElsewhere => {
                f.write_str("the task belongs to another executor: cancel it through that executor")
            }
        }
    }
}

/// Why a task could not be destroyed or released.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DestroyError {
    /// The handle is stale (see [`StaleHandle`]).
    Stale,
    /// The task is attached: wait for it to complete, or cancel it, then destroy it.
    Attached,
    /// The task belongs to another executor: destroy or release it through that one.
    OwnedElsewhere,
    /// A wake from another thread is in flight to this executor; run it once and retry.
    WakeInFlight,
}

impl fmt::Display for DestroyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DestroyError::Stale => StaleHandle.fmt(f),
            DestroyError::Attached => f.write_str("the task is attached: wait for it to complete or cancel it first"),
            DestroyError::OwnedElsewhere => {
                f.write_str("the task belongs to another executor: destroy or release it through that executor")
            }
            DestroyError::WakeInFlight => {
                f.write_str("a wake from another thread is still on its way: run the executor once and retry")
            }
        }
    }
}

/// Why `run` returned without doing work.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunError {
    /// `max_items` was zero: ask for at least one item of work.
    ZeroMaxItems,
    /// The timeout passed with no work done (the C executor's `ETIME`).
    TimedOut,
    /// Every task is blocked and nothing (timer, i/o, other thread) is scheduled that
    /// could wake one: waiting would never end. Give a timeout, or attach work.
    Stalled,
    /// The driver failed while parking or reaping.
    Driver(Errno),
    /// `run` was called from inside a task of the same executor: return from the task
    /// (or yield) instead.
    Reentrant,
    /// This executor took one of its dispatcher's quit tokens: leave the worker loop.
    Quit,
    /// The driver is lent to a `with_driver` closure (driver rule 1, exec/lend.rs): run
    /// from outside it, and do not suspend a fiber inside one.
    DriverBusy,
    /// More operations were cancelled or orphaned while the driver was lent than the
    /// executor can hold back (`DEFERRED_DRIVER_OPS`): it cannot route their
    /// completions any more and no longer reaps (driver rule 3). Drop fewer in-flight
    /// status blocks inside one `with_driver` closure.
    Poisoned,
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::ZeroMaxItems => f.write_str("run(max_items = 0) can do nothing: pass at least 1"),
            RunError::TimedOut => f.write_str("the timeout passed with no work done"),
            RunError::Stalled => f.write_str("every task is blocked and nothing can wake one: pass a timeout or attach work"),
            RunError::Driver(e) => write!(f, "the driver failed: {e}"),
            RunError::Reentrant => f.write_str("run was called from inside one of its own tasks: yield or return instead"),
            RunError::Quit => f.write_str("the dispatcher asked this executor to quit: leave the worker loop"),
            RunError::DriverBusy => f.write_str("the driver is lent to a with_driver closure: run from outside it (and do not suspend a fiber inside one)"),
            RunError::Poisoned => f.write_str("too many operations were cancelled or orphaned inside with_driver closures: this executor stopped reaping; drop fewer in-flight status blocks inside one closure"),
        }
    }
}

/// A configuration value that cannot work.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// This bound must be at least 1.
    Zero(&'static str),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Zero(name) => {
                write!(f, "configuration `{name}` is 0: it bounds a loop or a capacity and must be at least 1")
            }
        }
    }
}

/// Why an i/o operation could not be initiated. The operation is handed back.
#[derive(PartialEq, Eq)]
#[non_exhaustive]
pub enum InitiateError<Op> {
    /// The calling code is not running inside a keel task.
    NotInTask(Op),
    /// The task's executor runs a different driver than this operation is for.
    WrongDriver(Op),
    /// The status block is already in use by an operation in flight or not yet reaped.
    StatusBusy(Op),
    /// The driver refused the operation (its queue is full, or it cannot do i/o).
    Refused(Op, Errno),
    /// The task has been cancelled: initiate no more i/o, return.
    Cancelled(Op),
    /// The driver is lent to a `with_driver` closure: initiate outside it.
    DriverBusy(Op),
}

impl InitiateError<()> {
    /// The same error carrying `op`.
    pub(crate) fn with_op<Op>(self, op: Op) -> InitiateError<Op> {
        match self {
            InitiateError::NotInTask(()) => InitiateError::NotInTask(op),
            InitiateError::WrongDriver(()) => InitiateError::WrongDriver(op),
            InitiateError::StatusBusy(()) => InitiateError::StatusBusy(op),
            InitiateError::Refused((), errno) => InitiateError::Refused(op, errno),
            InitiateError::Cancelled(()) => InitiateError::Cancelled(op),
            InitiateError::DriverBusy(()) => InitiateError::DriverBusy(op),
        }
    }
}

impl<Op> fmt::Display for InitiateError<Op> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitiateError::NotInTask(_) => f.write_str("i/o can only be initiated from inside a keel task"),
            InitiateError::WrongDriver(_) => {
                f.write_str("this operation belongs to a different driver than the task's executor runs")
            }
            InitiateError::StatusBusy(_) => {
                f.write_str("the status block is in use: reap its completion (or use another block) first")
            }
            InitiateError::Refused(_, e) => write!(f, "the driver refused the operation ({e})"),
            InitiateError::Cancelled(_) => Cancelled.fmt(f),
            InitiateError::DriverBusy(_) => DriverBusy.fmt(f),
        }
    }
}

impl<B> fmt::Debug for AttachError<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            AttachError::Stale(_) => "Stale",
            AttachError::AlreadyAttached(_) => "AlreadyAttached",
            AttachError::OwnedElsewhere(_) => "OwnedElsewhere",
            AttachError::BodyTooLarge { .. } => "BodyTooLarge",
            AttachError::BodyOverAligned { .. } => "BodyOverAligned",
            AttachError::StackTooSmall { .. } => "StackTooSmall",
            AttachError::NoStack { .. } => "NoStack",
            AttachError::ExecutorGone(_) => "ExecutorGone",
            AttachError::Unsupported(_) => "Unsupported",
        };
        write!(f, "AttachError::{name}({self})")
    }
}

impl<Op> fmt::Debug for InitiateError<Op> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            InitiateError::NotInTask(_) => "NotInTask",
            InitiateError::WrongDriver(_) => "WrongDriver",
            InitiateError::StatusBusy(_) => "StatusBusy",
            InitiateError::Refused(..) => "Refused",
            InitiateError::Cancelled(_) => "Cancelled",
            InitiateError::DriverBusy(_) => "DriverBusy",
        };
        write!(f, "InitiateError::{name}({self})")
    }
}

/// Why [`try_submit_from`](crate::io_status::try_submit_from) did not submit; the operation stays where it was.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SubmitRefused {
    /// No room now: the task is queued for room (by I/O priority) and will be woken.
    Wait,
    /// The operation cannot be submitted now (`EBUSY` with no room when not waiting), or
    /// at all (not in a task, wrong driver, cancelled, or the driver refused it).
    Failed(crate::Errno),
}
