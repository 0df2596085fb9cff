//! Random programs on the simulated driver: the generator (`program`), the checker's
//! model (`model`), the task bodies (`bodies`) and the harness here, which builds an
//! executor, attaches a program's tasks, plays its script and then runs it to the end,
//! checking after every harness action:
//! - the executor's own view agrees: `ExecStats::ready` equals the tasks in a run queue
//!   (`Attached` or `Ready`), so no task is in two queues or lost from one;
//! - FIFO within a priority: after a `run(1)` that resumed one task, no task that was
//!   ready before it at its priority (or at a higher one) was passed over;
//! - no task completes with an operation of its own in flight at the driver;
//! - a stall (`RunError::Stalled`) leaves only tasks waiting for a wake, which the
//!   harness then cancels: every waiter is woken or cancelled by the end;
//! - at the end: every task completed, as `Ok` or (when cancelled) `Cancelled`; the
//!   driver's operations all completed once; counters agree; no timer left armed.
//!
//! Each body checks priorities, timers and i/o results at its resume points (`model`).
//!
//! Past 400 lines on purpose: the harness loop and its per-step checks share each step's
//! observations (states before and after, resumes per task, ranks), so they stay in one
//! function rather than passing that state around.

#![allow(dead_code)]

pub mod bodies;
pub mod model;
pub mod program;

use bodies::{D, Model, attach_task, enter};
use keel_core::{
    CancelError, Config, Executor, Priorities, RegionStacks, RunError, SuspendReason, TaskAttrs, TaskError, TaskHandle,
    TaskSlot, TaskState,
};
use model::{Cur, Plant, Seen, Shared};
use program::{Action, Program};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// Fiber stacks: 32 KiB, and 256 KiB in an AddressSanitizer build, whose redzones make
/// frames several times larger (a 32 KiB stack overflows there; the region's gaps are
/// not guard pages, so the overflow is a stray write, then a fault past the region).
#[cfg(not(keel_asan))]
pub const STACK: usize = 32 * 1024;
/// See the other definition.
#[cfg(keel_asan)]
pub const STACK: usize = 256 * 1024;
const GUARD: usize = 4096;
/// Harness actions a program may take before it counts as a runaway.
const MAX_ACTIONS: u64 = 50_000;

/// What a run of a program gave: its trace hash, its resume log and how many steps
/// (operations the bodies reached, plus harness actions) it took.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub hash: u64,
    pub resumes: Vec<(u64, usize)>,
    pub steps: u64,
    pub seen: [u64; model::SEEN],
}

thread_local! {
    /// Task slots reused from program to program (destroyed at each program's end).
    /// With the handle of its last run when a dropped executor left it created but
    /// unowned (released: teardown rule 4), for the next executor to destroy.
    static SLOTS: RefCell<Vec<(&'static Slot, Option<TaskHandle>)>> = const { RefCell::new(Vec::new()) };
    /// One stack region per thread, handed to each program's executor in turn.
    static REGION: Cell<(*mut u8, usize)> = const { Cell::new((core::ptr::null_mut(), 0)) };
}

fn stacks() -> RegionStacks {
    let (ptr, len) = REGION.with(|r| {
        if r.get().0.is_null() {
            let len = program::MAX_TASKS * (STACK + GUARD) + 64;
            r.set((Vec::leak(vec![0u8; len]).as_mut_ptr(), len));
        }
        r.get()
    });
    // SAFETY: leaked, so it lives for `'static`; the one executor that used it before
    // has been dropped (programs run one at a time per thread, each executor dropped
    // before the next is built), so this is the only reference.
    let region = unsafe { core::slice::from_raw_parts_mut(ptr, len) };
    RegionStacks::new(region, STACK, GUARD).expect("stack region")
}

/// Room for the largest body (a future running a select holds two pinned futures and
/// four statuses).
type Slot = TaskSlot<4096>;

/// Slot `i` as a created task with `attrs`; a slot a dropped executor released is
/// destroyed by `ex` first (it claims it: the release let it go).
fn created(ex: core::pin::Pin<&bodies::Ex>, i: usize, attrs: TaskAttrs) -> Result<TaskHandle, String> {
    let (slot, left) = SLOTS.with(|s| {
        let mut s = s.borrow_mut();
        while s.len() <= i {
            s.push((Box::leak(Box::new(Slot::new())), None));
        }
        (s[i].0, s[i].1.take())
    });
    if let Some(h) = left {
        ex.destroy(h).map_err(|e| format!("destroy of a slot a dropped executor released: {e:?}"))?;
    }
    slot.create(attrs).map_err(|e| format!("create: {e:?}"))
}

fn catch(body: &mut dyn FnMut()) -> Result<(), &'static str> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).map_err(|_| "a fiber panicked")
}

fn queued(state: TaskState) -> bool {
    matches!(state, TaskState::Attached | TaskState::Ready)
}

thread_local! {
    /// Print each harness action with the states it left (`debug`).
    static DEBUG: Cell<bool> = const { Cell::new(false) };
}

/// Prints every harness action of the programs this thread runs from now on.
pub fn debug(on: bool) {
    DEBUG.with(|d| d.set(on));
}

thread_local! {
    /// Panics on this thread are caught and reported by `run_program`: not printed.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Installs, once, a panic hook that stays silent while `QUIET` is set on the panicking
/// thread and otherwise does what the previous hook did.
fn quiet_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Runs `p`; `Err` lists the violations (or the panic) it met.
pub fn run_program(p: &Program, plant: Plant) -> Result<Outcome, String> {
    quiet_hook();
    QUIET.with(|q| q.set(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_inner(p, plant)));
    QUIET.with(|q| q.set(false));
    if !matches!(r, Ok(Ok(_))) {
        // Its tasks may still hold their slots: take fresh ones next time.
        SLOTS.with(|s| s.borrow_mut().clear());
    }
    match r {
        Ok(r) => r,
        Err(panic) => Err(format!(
            "panicked: {}",
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
    }
}

fn run_inner(p: &Program, plant: Plant) -> Result<Outcome, String> {
    let b = p.batches;
    let cfg = Config {
        inbox_batch: b.inbox,
        timer_batch: b.timer,
        reap_batch: b.reap,
        resume_batch: b.resume,
        max_io_in_flight: b.max_io,
        fiber_panics: Some(catch),
        ..Config::default()
    };
    let exb = Box::pin(Executor::with_stacks(D::new(), stacks(), cfg).expect("executor"));
    let ex = exb.as_ref();
    let entered = enter(ex);
    let m: Model = Rc::new(RefCell::new(Shared::new(plant)));
    let n = p.tasks.len();
    for (t, task) in p.tasks.iter().enumerate() {
        let attrs = TaskAttrs { priority: Priorities { cpu: task.cpu, io: task.io }, name: "random" };
        let created = created(ex, t, attrs)?;
        m.borrow_mut().tasks.push(model::TaskModel {
            handle: None,
            created,
            prio: task.cpu as usize,
            cancel_requested: false,
            cur: Cur::Other,
            disturbed: false,
            sleep_ready_at: None,
            next_label: 0,
            completed_checked: false,
            last_resume: None,
            self_woken_in: None,
            armed_in: 0,
            attach_resumptions: 0,
        });
    }
    let spawner = {
        let (weak, tasks) = (Rc::downgrade(&m), p.tasks.clone());
        move |child: usize| {
            let Some(m) = weak.upgrade() else { return };
            let created = m.borrow().tasks[child].created;
            if let Err(why) = attach_task(&m, child, &tasks[child], created) {
                m.borrow_mut().fail(format!("spawn: {why}"));
            }
            m.borrow_mut().count(Seen::Spawned);
        }
    };
    m.borrow_mut().spawner = Some(Rc::new(spawner));
    for (t, task) in p.tasks.iter().enumerate() {
        if !task.child {
            let created = m.borrow().tasks[t].created;
            attach_task(&m, t, task, created)?;
        }
    }
    // Rank: the harness action after which a task was first seen in a run queue.
    let mut rank: Vec<Option<u64>> = vec![Some(0); n];
    // A child not spawned yet counts as `Idle`.
    let states = || -> Vec<TaskState> {
        let m = m.borrow();
        m.tasks.iter().map(|t| t.handle.map_or(TaskState::Idle, |h| ex.state(h).unwrap())).collect()
    };
    let handle = |t: usize| m.borrow().tasks[t].handle;
    let mut script = p.script.iter().copied();
    let mut limited = false;
    let mut epoch = 0u64;
    let mut dropping = false;
    loop {
        let before = states();
        if before.iter().all(|s| matches!(s, TaskState::Completed | TaskState::Idle)) {
            break;
        }
        epoch += 1;
        if epoch > MAX_ACTIONS {
            m.borrow_mut().fail("runaway: the program did not finish".into());
            break;
        }
        m.borrow_mut().epoch = epoch;
        m.borrow_mut().steps += 1;
        let action = script.next().unwrap_or_else(|| {
            if limited {
                limited = false;
                let _ = ex.with_driver(|d| {
                    d.limit_capacity(usize::MAX);
                    d.fail_next_submits(0, keel_core::Errno::EAGAIN);
                });
            }
            Action::Run(1)
        });
        // Not attached yet: counted from its attach (its slot counts across runs).
        let resumptions = || -> Vec<u64> {
            let m = m.borrow();
            m.tasks
                .iter()
                .map(|t| {
                    t.handle.and_then(|h| ex.task_times(h).ok()).map_or(0, |x| x.resumptions - t.attach_resumptions)
                })
                .collect()
        };
        let resumptions_before = resumptions();
        match action {
            Action::Run(items) => match ex.run(items, None) {
                Ok(_) => {}
                Err(RunError::Stalled) => {
                    let waiting: Vec<usize> =
                        (0..n).filter(|&t| !matches!(before[t], TaskState::Completed | TaskState::Idle)).collect();
                    for &t in &waiting {
                        let st = ex.state(handle(t).unwrap()).unwrap();
                        if st != TaskState::Suspended(SuspendReason::Wait) && !limited {
                            m.borrow_mut().fail(format!("stalled with task {t} {st:?}"));
                        }
                    }
                    if !limited {
                        for &t in &waiting {
                            m.borrow_mut().count(Seen::StallCancel);
                            m.borrow_mut().tasks[t].cancel_requested = true;
                            ex.cancel(handle(t).unwrap()).map_err(|e| format!("cancel {t} at a stall: {e:?}"))?;
                        }
                    }
                }
                Err(e) => m.borrow_mut().fail(format!("run: {e:?}")),
            },
            Action::Cancel(t) if handle(t).is_none() => {}
            Action::Cancel(t) => {
                m.borrow_mut().tasks[t].cancel_requested = true;
                if before[t] == TaskState::Suspended(SuspendReason::Timer) {
                    m.borrow_mut().tasks[t].disturbed = true;
                }
                match ex.cancel(handle(t).unwrap()) {
                    Ok(_) => m.borrow_mut().count(Seen::HarnessCancel),
                    Err(CancelError::TooLate) => {}
                    Err(e) => m.borrow_mut().fail(format!("cancel {t} ({:?}): {e:?}", before[t])),
                }
            }
            Action::Refuse(count, errno) => {
                ex.with_driver(|d| d.fail_next_submits(count, errno)).map_err(|e| format!("{e:?}"))?;
                limited = true;
            }
            Action::Limit(count) => {
                ex.with_driver(|d| d.limit_capacity(count)).map_err(|e| format!("{e:?}"))?;
                limited = true;
            }
            Action::Shutdown => {
                for t in 0..n {
                    m.borrow_mut().tasks[t].cancel_requested = true;
                }
                m.borrow_mut().count(Seen::Shutdown);
                match ex.shutdown() {
                    Ok(sd) if sd.leaked_fibers == 0 => {}
                    other => m.borrow_mut().fail(format!("shutdown: {other:?}")),
                }
            }
            Action::Drop => {
                m.borrow_mut().count(Seen::Dropped);
                dropping = true;
                break;
            }
        }
        let after = states();
        let mut mm = m.borrow_mut();
        // Which tasks the action resumed (`TaskTimesSnapshot::resumptions`, counted with
        // or without accounting), whether or not their bodies saw it.
        drop(mm);
        let now_resumptions = resumptions();
        mm = m.borrow_mut();
        let resumed: Vec<usize> = (0..n).filter(|&t| now_resumptions[t] > resumptions_before[t]).collect();
        if DEBUG.with(Cell::get) {
            eprintln!("step {epoch} {action:?} at {:?}: resumed {resumed:?} -> {after:?} ranks {rank:?}", ex.now());
        }
        // FIFO and priority across a `run(1)`, from the queues as seen before it.
        if action == Action::Run(1) && resumed.len() > 1 {
            mm.fail(format!("step {epoch}: run(1) resumed tasks {resumed:?}"));
        }
        if let (Action::Run(1), &[r]) = (action, &resumed[..]) {
            let pr = mm.tasks[r].prio;
            for x in (0..n).filter(|&x| x != r && queued(before[x])) {
                let px = mm.tasks[x].prio;
                let passed_over = px < pr
                    || (px == pr
                        && match (rank[r], queued(before[r])) {
                            (Some(rr), true) => rank[x].unwrap() < rr,
                            _ => true,
                        });
                if passed_over && mm.plant == Plant::None {
                    mm.fail(format!(
                        "step {epoch}: task {r} (prio {pr}, rank {:?}) resumed before task {x} (prio {px}, rank {:?})",
                        rank[r], rank[x]
                    ));
                }
            }
        }
        for t in 0..n {
            let requeued = resumed.contains(&t) || !queued(before[t]);
            rank[t] = match (queued(after[t]), requeued) {
                (true, true) => Some(epoch),
                (true, false) => rank[t],
                (false, _) => None,
            };
            if mm.tasks[t].cur == Cur::Sleep {
                // Resumed and still asleep: woken early, it armed its timer again (later
                // in arming order than what it had armed first).
                // (Not the resume that armed it: that one is in the action it armed in, and
                // there a second resume is needed.)
                let times = now_resumptions[t] - resumptions_before[t];
                if times > 1 || (times == 1 && mm.tasks[t].armed_in < epoch) {
                    mm.tasks[t].disturbed = true;
                }
                // Its timer fired when it last went to its queue (the clock does not move
                // while it is queued); if it fires and resumes in one action, that one.
                if !queued(after[t]) {
                    mm.tasks[t].sleep_ready_at = None;
                } else if requeued {
                    mm.tasks[t].sleep_ready_at = Some(epoch);
                }
            }
        }
        let ready_tasks = after.iter().filter(|s| queued(**s)).count();
        let stats = ex.stats();
        if stats.ready.iter().sum::<usize>() != ready_tasks {
            mm.fail(format!("step {epoch}: ExecStats::ready {:?} but {ready_tasks} tasks queued", stats.ready));
        }
        let (events, recent): (u64, Vec<_>) =
            ex.with_driver(|d| (d.trace_len(), d.trace().copied().collect())).map_err(|e| format!("{e:?}"))?;
        mm.consume(events, &recent);
        for (t, state) in after.iter().enumerate() {
            if *state == TaskState::Completed && !mm.tasks[t].completed_checked {
                mm.tasks[t].completed_checked = true;
                if let Some(label) = mm.in_flight(t) {
                    mm.fail(format!("step {epoch}: task {t} completed with operation {label} in flight"));
                }
            }
        }
        if !mm.violations.is_empty() {
            break;
        }
    }
    let attached: Vec<bool> = m.borrow().tasks.iter().map(|t| t.handle.is_some()).collect();
    let drops = m.borrow().drops.clone();
    let check_drops = |m: &Model| {
        for t in 0..n {
            let (want, got) = (attached[t] as u32, drops[t].get());
            if got != want {
                m.borrow_mut().fail(format!("task {t}'s body dropped {got} times"));
            }
        }
    };
    let hash = ex.with_driver(|d| d.trace_hash()).map_err(|e| format!("{e:?}"))?;
    if dropping {
        // Teardown rules: every body dropped once, every slot released (the next
        // program's executor destroys it: `created`).
        let last: Vec<TaskHandle> = m.borrow().tasks.iter().map(|t| t.handle.unwrap_or(t.created)).collect();
        drop(entered);
        drop(exb);
        check_drops(&m);
        SLOTS.with(|s| {
            for (t, h) in last.into_iter().enumerate() {
                s.borrow_mut()[t].1 = Some(h);
            }
        });
    } else {
        let mut mm = m.borrow_mut();
        if mm.violations.is_empty() {
            for t in 0..n {
                let Some(h) = mm.tasks[t].handle else { continue };
                match ex.result(h) {
                    Ok(Some(Ok(_))) => {}
                    Ok(Some(Err(TaskError::Cancelled))) if mm.tasks[t].cancel_requested => {}
                    other => mm.fail(format!("task {t} ended with {other:?}")),
                }
            }
            mm.finish();
            let s = ex.stats();
            if s.io_submitted != s.io_completed || s.attached != 0 || s.timers_armed != 0 {
                mm.fail(format!("at the end: {s:?}"));
            }
        }
        drop(mm);
        if m.borrow().violations.is_empty() {
            check_drops(&m);
            // Wakes of completed runs may still sit in the inbox: `destroy` drains at
            // most two batches of it, and `WakeInFlight` asks for a run and a retry.
            for t in 0..n {
                let h = m.borrow().tasks[t].handle.unwrap_or(m.borrow().tasks[t].created);
                let mut tries = 0;
                while let Err(e) = ex.destroy(h) {
                    tries += 1;
                    if e != keel_core::DestroyError::WakeInFlight || tries > 1 {
                        return Err(format!("destroy of task {t}: {e:?} (try {tries})"));
                    }
                    m.borrow_mut().count(Seen::DestroyRetried);
                    match ex.run(1, None) {
                        Err(RunError::Stalled) => {}
                        other => return Err(format!("a run with nothing attached gave {other:?}")),
                    }
                }
            }
        }
    }
    let mut mm = m.borrow_mut();
    mm.spawner = None;
    let violations = core::mem::take(&mut mm.violations);
    let outcome = Outcome { hash, resumes: core::mem::take(&mut mm.resumes), steps: mm.steps, seen: mm.seen };
    if violations.is_empty() { Ok(outcome) } else { Err(violations.join("\n")) }
}
