//! Fuzz harness: task-slot lifecycle API sequences on the simulated driver. A byte string
//! is read as a sequence of calls on four reused `'static` slots and one executor:
//! create, attach (a body that returns at once, yields, waits for a wake, sleeps, or does
//! one scripted i/o), cancel, destroy, result, both wakes, runs with and without a
//! timeout, calls through stale handles, and submission faults. The harness keeps its own
//! view of each slot and checks every answer against it:
//! - no panic, and every refusal is the typed error the task's state calls for (its
//!   Display non-empty); a stale handle changes nothing;
//! - a body handed back by a refused attach is dropped once and never ran;
//! - results are delivered exactly once: every body is dropped exactly once, returns at
//!   most once, and the run's result is what it returned, or `Cancelled` if it never
//!   returned (and then only if it was cancelled); a body that was not cancelled returns
//!   what its script says (an i/o result as scripted);
//! - at the end, either every task is cancelled and run down, or the executor is dropped
//!   with tasks attached (teardown); then every slot is destroyed, the executor's counters
//!   are back at zero (nothing attached, ready, armed or in flight; submitted equals
//!   completed), and every slot can be created and destroyed again (the baseline).
//!
//! Used by the cargo-fuzz target `slot_lifecycle` (fuzz/) and its proptest twin
//! (core/tests/fuzz_slot_lifecycle.rs).
//!
//! Past 400 lines on purpose: the calls, the per-slot view they check and the end checks
//! share one state and read best together.

use super::bytes::Bytes;
use core::pin::pin;
use core::time::Duration;
use keel_core::sim::{SimDriverN, SimOp};
use keel_core::{
    AttachError, CancelError, CancelOutcome, Config, DestroyError, Driver, Errno, Executor, InitiateError, IoResult,
    IoStatus, Priorities, Priority, RunError, StaleHandle, TaskAttrs, TaskError, TaskHandle, TaskResult, TaskSlot,
    TaskState, initiate, rt, suspend_until_completed_io,
};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

pub type D = SimDriverN<16, 64>;
type Ex = Executor<D>;
type Slot = TaskSlot<512>;
/// Slots a program uses (reused from program to program on a thread).
pub const SLOTS: usize = 4;
/// Calls a program makes at most (the rest of a long input is ignored).
pub const MAX_CALLS: usize = 256;

thread_local! {
    static POOL: RefCell<[&'static Slot; SLOTS]> =
        RefCell::new(core::array::from_fn(|_| &*Box::leak(Box::new(Slot::new()))));
}

fn slot(i: usize) -> &'static Slot {
    POOL.with(|p| p.borrow()[i])
}

thread_local! {
    /// False while a program runs: still false at the next start if it failed midway.
    static CLEAN: Cell<bool> = const { Cell::new(true) };
}

/// A program that failed midway left its slots as they were: the next one (a shrinking
/// step) starts from fresh slots, so it fails only for its own calls.
fn begin() {
    if !CLEAN.with(|c| c.replace(false)) {
        POOL.with(|p| p.borrow_mut().iter_mut().for_each(|s| *s = Box::leak(Box::new(Slot::new()))));
    }
}

/// What one attached body does.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Body {
    Return(u32),
    Yields(u8),
    Wait,
    Sleep(u16),
    Io { latency_us: u16, result: IoResult },
}

const ERRNOS: [Errno; 5] = [Errno::EIO, Errno::EAGAIN, Errno::EINTR, Errno::ECANCELED, Errno(28)];

fn body_from(b: &mut Bytes) -> Body {
    match b.below(5) {
        0 => Body::Return(b.u8() as u32),
        1 => Body::Yields(b.u8() % 4),
        2 => Body::Wait,
        3 => Body::Sleep(b.u16() % 2000),
        _ => {
            let latency_us = b.u16() % 2000;
            let result = if b.u8().is_multiple_of(3) { Err(ERRNOS[b.below(ERRNOS.len())]) } else { Ok(b.u16() as u32) };
            Body::Io { latency_us, result }
        }
    }
}

/// What a body reports about itself.
#[derive(Default)]
struct Probe {
    drops: Cell<u32>,
    returns: Cell<u32>,
    returned: Cell<Option<TaskResult>>,
    ran: Cell<bool>,
    fail: RefCell<Option<String>>,
}

/// Lives in the body (captured), so it counts every drop, polled or not.
struct DropCount(Rc<Probe>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.drops.set(self.0.drops.get() + 1);
    }
}

fn make_body(kind: Body, probe: Rc<Probe>, label: u32) -> impl Future<Output = TaskResult> + 'static {
    let guard = DropCount(probe);
    async move {
        let probe = guard.0.clone();
        probe.ran.set(true);
        let r = play(kind, &probe, label).await;
        probe.returns.set(probe.returns.get() + 1);
        probe.returned.set(Some(r));
        drop(guard);
        r
    }
}

async fn play(kind: Body, probe: &Probe, label: u32) -> TaskResult {
    match kind {
        Body::Return(v) => Ok(v as u64),
        Body::Yields(n) => {
            for _ in 0..n {
                rt::yield_now().await?;
            }
            Ok(100 + n as u64)
        }
        Body::Wait => rt::wait().await.map(|()| 200).map_err(Into::into),
        Body::Sleep(us) => rt::sleep(Duration::from_micros(us as u64)).await.map(|()| 300).map_err(Into::into),
        Body::Io { latency_us, result } => {
            let st = pin!(IoStatus::new());
            let op = SimOp::new(label).after(Duration::from_micros(latency_us as u64)).with_result(result);
            match initiate::<D>(st.as_ref(), op).await {
                Ok(()) => {}
                Err(InitiateError::Refused(_, errno)) => return Err(TaskError::Failed(-(errno.0 as i64))),
                Err(InitiateError::Cancelled(_)) => return Err(TaskError::Cancelled),
                Err(other) => {
                    *probe.fail.borrow_mut() = Some(format!("initiate failed with {other:?}"));
                    return Err(TaskError::Failed(-1));
                }
            }
            if suspend_until_completed_io(1).await? != 1 {
                *probe.fail.borrow_mut() = Some("no completion taken for the one operation".into());
            }
            match st.result() {
                Some(got) if got == result || got == Err(Errno::ECANCELED) => {
                    got.map(u64::from).map_err(|e| TaskError::Failed(e.0 as i64))
                }
                other => {
                    *probe.fail.borrow_mut() = Some(format!("i/o came back as {other:?}, scripted {result:?}"));
                    Err(TaskError::Failed(-2))
                }
            }
        }
    }
}

/// One attach of a slot, as the harness saw it.
struct Run {
    handle: TaskHandle,
    kind: Body,
    probe: Rc<Probe>,
    cancelled: bool,
}

#[derive(Default)]
struct SlotView {
    /// The current handle (the creation's, or the latest attach's), `None` if destroyed.
    handle: Option<TaskHandle>,
    run: Option<Run>,
    /// Attached since its creation: owned by the executor (a created task is unowned, so
    /// `state` and `result` do not know it).
    owned: bool,
    /// Handles made stale by an attach or a destroy.
    old: Vec<TaskHandle>,
}

/// What a program did: its driver trace hash (equal for equal inputs), the calls made,
/// and counts of what it reached.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub hash: u64,
    pub calls: usize,
    pub completed_runs: u64,
    pub cancels: u64,
    pub refusals: u64,
    pub teardowns: u64,
}

fn is_attached(s: TaskState) -> bool {
    s.is_attached()
}

fn typed<E: core::fmt::Display + core::fmt::Debug>(e: &E) -> Result<(), String> {
    if e.to_string().is_empty() { Err(format!("{e:?} has an empty Display")) } else { Ok(()) }
}

/// Checks a finished run: its body dropped once and returned at most once; `result` is
/// what it returned, or `Cancelled` if it did not (only if cancelled).
fn check_run(run: &Run, result: Option<TaskResult>) -> Result<(), String> {
    let p = &run.probe;
    if let Some(why) = p.fail.borrow().as_ref() {
        return Err(format!("body {:?}: {why}", run.kind));
    }
    if p.drops.get() != 1 || p.returns.get() > 1 {
        return Err(format!("body {:?} dropped {} times, returned {} times", run.kind, p.drops.get(), p.returns.get()));
    }
    let Some(result) = result else { return Ok(()) };
    match p.returned.get() {
        Some(r) if r == result => {}
        None if result == Err(TaskError::Cancelled) && run.cancelled => {}
        other => {
            return Err(format!("body {:?} returned {other:?} but the run's result is {result:?}", run.kind));
        }
    }
    if !run.cancelled {
        let want = match run.kind {
            Body::Return(v) => Ok(v as u64),
            Body::Yields(n) => Ok(100 + n as u64),
            Body::Wait => Ok(200),
            Body::Sleep(_) => Ok(300),
            Body::Io { result: Ok(n), .. } => Ok(n as u64),
            Body::Io { result: Err(e), .. } => Err(TaskError::Failed(e.0 as i64)),
        };
        let refused = matches!(result, Err(TaskError::Failed(code)) if code < 0);
        if result != want && !(refused && matches!(run.kind, Body::Io { .. })) {
            return Err(format!("body {:?} not cancelled ended with {result:?}, want {want:?}", run.kind));
        }
    }
    Ok(())
}

struct Harness<'a> {
    ex: core::pin::Pin<&'a Ex>,
    slots: Vec<SlotView>,
    out: Outcome,
    label: u32,
}

impl Harness<'_> {
    fn state(&self, i: usize, h: TaskHandle) -> Result<TaskState, String> {
        match self.ex.state(h) {
            Ok(s) if self.slots[i].owned => Ok(s),
            Err(StaleHandle) if !self.slots[i].owned => Ok(TaskState::Idle),
            r => Err(format!("state of slot {i}'s current handle (owned: {}): {r:?}", self.slots[i].owned)),
        }
    }

    fn create(&mut self, i: usize, cpu: Priority) -> Result<(), String> {
        let attrs = TaskAttrs { priority: Priorities { cpu, io: Priority::Normal }, name: "fuzz" };
        let r = slot(i).create(attrs);
        match (&self.slots[i].handle, r) {
            (None, Ok(h)) => {
                self.slots[i].handle = Some(h);
                self.slots[i].owned = false;
            }
            (Some(_), Err(e @ keel_core::CreateError::SlotInUse)) => typed(&e)?,
            (have, r) => return Err(format!("create of slot {i} (live: {}) gave {r:?}", have.is_some())),
        }
        Ok(())
    }

    fn attach(&mut self, i: usize, kind: Body) -> Result<(), String> {
        let Some(h) = self.slots[i].handle else { return Ok(()) };
        let before = self.state(i, h)?;
        let probe = Rc::new(Probe::default());
        self.label += 1;
        let last = if is_attached(before) { None } else { self.last_result(i)? };
        match self.ex.attach(h, make_body(kind, probe.clone(), self.label)) {
            Ok(new) if !is_attached(before) => {
                self.finish_run(i, last)?;
                let view = &mut self.slots[i];
                view.old.push(h);
                view.handle = Some(new);
                view.owned = true;
                view.run = Some(Run { handle: new, kind, probe, cancelled: false });
            }
            Err(e @ AttachError::AlreadyAttached(_)) if is_attached(before) => {
                typed(&e)?;
                drop(e.into_body());
                if probe.drops.get() != 1 || probe.ran.get() {
                    return Err("a body handed back by a refused attach ran or was not dropped once".into());
                }
                self.out.refusals += 1;
            }
            r => return Err(format!("attach to slot {i} in {before:?} gave {:?}", r.map_err(|e| e.to_string()))),
        }
        Ok(())
    }

    /// The result of the slot's last run, which must have completed (read before a
    /// destroy or an attach makes its handle stale).
    fn last_result(&self, i: usize) -> Result<Option<TaskResult>, String> {
        let Some(run) = self.slots[i].run.as_ref() else { return Ok(None) };
        match self.ex.result(run.handle) {
            Ok(Some(r)) => Ok(Some(r)),
            r => Err(format!("slot {i}'s run {:?} completed, its result: {r:?}", run.kind)),
        }
    }

    /// The slot's last run, checked against `result` and forgotten.
    fn finish_run(&mut self, i: usize, result: Option<TaskResult>) -> Result<(), String> {
        if let Some(run) = self.slots[i].run.take() {
            check_run(&run, result)?;
            self.out.completed_runs += 1;
        }
        Ok(())
    }

    fn cancel(&mut self, i: usize) -> Result<(), String> {
        let Some(h) = self.slots[i].handle else { return Ok(()) };
        let before = self.state(i, h)?;
        let r = self.ex.cancel(h);
        let ok = match (before, r) {
            (TaskState::Idle, Err(e @ CancelError::NotAttached)) => typed(&e).map(|()| false)?,
            (TaskState::Completed | TaskState::Draining, Err(e @ CancelError::TooLate)) => typed(&e).map(|()| false)?,
            (TaskState::Attached, Ok(CancelOutcome::Completed)) => {
                let run = self.slots[i].run.as_ref().ok_or("an attached slot without a run")?;
                if run.probe.drops.get() != 1 || run.probe.ran.get() {
                    return Err("a task cancelled before it started ran or was not dropped once".into());
                }
                if self.ex.result(h) != Ok(Some(Err(TaskError::Cancelled))) {
                    return Err(format!("cancelled before it started, the result is {:?}", self.ex.result(h)));
                }
                true
            }
            (TaskState::Ready | TaskState::Suspended(_), Ok(CancelOutcome::Resumes | CancelOutcome::CancellingIo)) => {
                true
            }
            (TaskState::Cancelling, Ok(CancelOutcome::AlreadyCancelling)) => true,
            (s, r) => return Err(format!("cancel of slot {i} in {s:?} gave {r:?}")),
        };
        if ok {
            self.out.cancels += 1;
            if let Some(run) = self.slots[i].run.as_mut() {
                run.cancelled = true;
            }
        }
        Ok(())
    }

    fn destroy(&mut self, i: usize) -> Result<(), String> {
        let Some(h) = self.slots[i].handle else { return Ok(()) };
        let before = self.state(i, h)?;
        let last = if is_attached(before) { None } else { self.last_result(i)? };
        match (is_attached(before), self.ex.destroy(h)) {
            (false, Ok(())) => {
                self.finish_run(i, last)?;
                let view = &mut self.slots[i];
                view.old.push(h);
                view.handle = None;
            }
            (false, Err(e @ DestroyError::WakeInFlight)) | (true, Err(e @ DestroyError::Attached)) => typed(&e)?,
            (_, r) => return Err(format!("destroy of slot {i} in {before:?} gave {r:?}")),
        }
        Ok(())
    }

    fn result(&mut self, i: usize) -> Result<(), String> {
        let Some(h) = self.slots[i].handle else { return Ok(()) };
        let state = self.state(i, h)?;
        if !self.slots[i].owned {
            return match self.ex.result(h) {
                Err(StaleHandle) => Ok(()),
                r => Err(format!("result of a created, unowned task gave {r:?}")),
            };
        }
        let r = self.ex.result(h).map_err(|e| format!("result of a current handle: {e:?}"))?;
        match (state, r, self.slots[i].run.as_ref()) {
            (TaskState::Completed, Some(r), Some(run)) => check_run(run, Some(r)),
            (TaskState::Completed, None, _) => Err(format!("slot {i} completed without a result")),
            (TaskState::Completed, Some(_), None) | (_, None, _) => Ok(()),
            (s, Some(r), _) => Err(format!("slot {i} in {s:?} has the result {r:?}")),
        }
    }

    /// Every call through a stale handle is refused and changes nothing.
    fn stale(&mut self, i: usize, pick: usize, what: u8) -> Result<(), String> {
        let view = &self.slots[i];
        let Some(&h) = view.old.get(pick % view.old.len().max(1)) else { return Ok(()) };
        if h.is_current() {
            return Err(format!("a stale handle of slot {i} says it is current"));
        }
        match what % 6 {
            0 => match self.ex.cancel(h) {
                Err(e @ (CancelError::Stale | CancelError::NotAttached)) => typed(&e)?,
                r => return Err(format!("cancel through a stale handle gave {r:?}")),
            },
            1 => match self.ex.destroy(h) {
                Err(e @ DestroyError::Stale) => typed(&e)?,
                r => return Err(format!("destroy through a stale handle gave {r:?}")),
            },
            2 => match self.ex.attach(h, async { 7u64 }) {
                Err(e @ AttachError::Stale(_)) => typed(&e)?,
                r => return Err(format!("attach through a stale handle gave {:?}", r.map_err(|e| e.to_string()))),
            },
            3 => {
                if self.ex.state(h) != Err(StaleHandle) || self.ex.result(h) != Err(StaleHandle) {
                    return Err("state or result through a stale handle was answered".into());
                }
            }
            4 => h.wake(),
            _ => self.ex.wake(h),
        }
        Ok(())
    }

    fn run(&mut self, max: usize, timeout: Option<Duration>) -> Result<(), String> {
        match self.ex.run(max, timeout) {
            Ok(_) | Err(RunError::Stalled | RunError::TimedOut) => {}
            Err(e) => return Err(format!("run gave {e:?}")),
        }
        let attached = self.slots.iter().filter(|v| v.handle.is_some_and(|h| self.ex.state(h).is_ok_and(is_attached)));
        let attached = attached.count();
        if attached != self.ex.attached() || self.ex.stats().attached != attached {
            return Err(format!("{attached} slots attached, the executor counts {}", self.ex.attached()));
        }
        Ok(())
    }

    fn step(&mut self, b: &mut Bytes) -> Result<(), String> {
        let i = b.below(SLOTS);
        match b.u8() % 12 {
            0 => self.create(i, [Priority::High, Priority::Normal, Priority::Low][b.below(3)]),
            1 | 2 => {
                let kind = body_from(b);
                self.attach(i, kind)
            }
            3 => self.cancel(i),
            4 => self.destroy(i),
            5 => self.result(i),
            6 => {
                self.slots[i].handle.inspect(|h| h.wake());
                Ok(())
            }
            7 => {
                self.slots[i].handle.inspect(|&h| self.ex.wake(h));
                Ok(())
            }
            8 => {
                let max = 1 + b.below(8);
                self.run(max, None)
            }
            9 => {
                let us = b.u16() as u64 % 3000;
                self.run(64, Some(Duration::from_micros(us)))
            }
            10 => {
                let (pick, what) = (b.u8() as usize, b.u8());
                self.stale(i, pick, what)
            }
            _ => {
                let (refuse, cap, errno) = (b.u8() as u32 % 3, 1 + b.below(16), ERRNOS[b.below(ERRNOS.len())]);
                let errno = if errno == Errno::ECANCELED { Errno::EBUSY } else { errno };
                self.ex
                    .with_driver(|d| {
                        d.fail_next_submits(refuse, errno);
                        d.limit_capacity(cap);
                    })
                    .map_err(|e| format!("with_driver outside a run: {e:?}"))
            }
        }
    }

    /// Cancels every attached task and runs them down; every run checked.
    fn wind_down(&mut self) -> Result<(), String> {
        self.ex.with_driver(|d| d.limit_capacity(usize::MAX)).map_err(|e| format!("{e:?}"))?;
        for i in 0..SLOTS {
            if self.slots[i].handle.is_some_and(|h| self.ex.state(h).is_ok_and(is_attached)) {
                self.cancel(i)?;
            }
        }
        for _ in 0..1000 {
            if self.ex.attached() == 0 {
                break;
            }
            match self.ex.run(1000, None) {
                Ok(_) => {}
                Err(RunError::Stalled) => return Err("stalled with every task cancelled: a stranded waiter".into()),
                Err(e) => return Err(format!("run gave {e:?}")),
            }
        }
        if self.ex.attached() != 0 {
            return Err(format!("{} tasks still attached after cancelling all", self.ex.attached()));
        }
        for i in 0..SLOTS {
            for _ in 0..4 {
                let Some(h) = self.slots[i].handle else { break };
                self.destroy(i)?;
                if self.slots[i].handle == Some(h) {
                    let _ = self.ex.run(1, None);
                }
            }
            if self.slots[i].handle.is_some() {
                return Err(format!("slot {i} could not be destroyed"));
            }
        }
        let st = self.ex.stats();
        let in_flight = self.ex.with_driver(|d| d.in_flight()).map_err(|e| format!("{e:?}"))?;
        if st.attached != 0 || st.ready != [0; 3] || st.timers_armed != 0 || in_flight != 0 {
            return Err(format!("not at baseline after the wind-down: {st:?}, {in_flight} in flight"));
        }
        if st.io_submitted != st.io_completed {
            return Err(format!("{} submitted, {} completed", st.io_submitted, st.io_completed));
        }
        Ok(())
    }
}

/// Plays `data` as a program; `Err` says which check failed.
pub fn run(data: &[u8]) -> Result<Outcome, String> {
    begin();
    let mut b = Bytes::new(data);
    let teardown = b.u8().is_multiple_of(4);
    let (out, left) = {
        let ex = pin!(Executor::new(D::new(), Config::default()).map_err(|e| format!("{e:?}"))?);
        let mut h = Harness {
            ex: ex.into_ref(),
            slots: (0..SLOTS).map(|_| SlotView::default()).collect(),
            out: Outcome::default(),
            label: 0,
        };
        while !b.is_empty() && h.out.calls < MAX_CALLS {
            h.out.calls += 1;
            h.step(&mut b).map_err(|why| format!("call {}: {why}", h.out.calls))?;
        }
        h.out.hash = h.ex.with_driver(|d| d.trace_hash()).map_err(|e| format!("{e:?}"))?;
        if teardown {
            h.out.teardowns += 1;
        } else {
            h.wind_down()?;
        }
        let left: Vec<_> = h.slots.iter_mut().map(|v| (v.handle, v.run.take())).collect();
        (h.out, left)
        // The executor drops here: with `teardown`, tasks may still be attached.
    };
    for (h, run) in &left {
        if let Some(run) = run {
            check_run(run, None).map_err(|why| format!("after the executor dropped: {why}"))?;
        }
        let _ = h;
    }
    baseline(left.iter().map(|(h, _)| *h))?;
    CLEAN.with(|c| c.set(true));
    Ok(out)
}

/// A fresh executor destroys what the last one left created (released by its drop:
/// teardown rule 4), then every slot can be created and destroyed again.
fn baseline(left: impl Iterator<Item = Option<TaskHandle>>) -> Result<(), String> {
    let ex = pin!(Executor::new(D::new(), Config::default()).map_err(|e| format!("{e:?}"))?);
    let ex = ex.into_ref();
    for h in left.flatten() {
        ex.destroy(h).map_err(|e| format!("destroy after the executor dropped: {e:?}"))?;
    }
    for i in 0..SLOTS {
        let h = slot(i).create(TaskAttrs::default()).map_err(|e| format!("slot {i} not back at baseline: {e:?}"))?;
        ex.destroy(h).map_err(|e| format!("destroy of a fresh task: {e:?}"))?;
    }
    Ok(())
}
