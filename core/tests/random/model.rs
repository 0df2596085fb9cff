//! What the checker knows while a program runs: each task's model, the resume log, the
//! driver's operations by label (from the simulated driver's trace), and the checks a
//! task body makes at its own resume points.
//!
//! The checks, each against what keel promises:
//! - priority: when a body resumes, no task of a higher CPU priority is ready
//!   (`ExecStats::ready`, read from inside the resume);
//! - timers: a sleep returns exactly at its deadline in virtual time (never early; the
//!   clock only moves when nothing is ready, so never late either), and timers fire in
//!   (deadline, arming) order;
//! - i/o: each operation is submitted once and completes once, at its submission time
//!   plus its latency with its scripted result (or earlier with `ECANCELED` after a
//!   cancel), and each status a body initiated comes back exactly once with that result.

use super::program::IoSpec;
use core::time::Duration;
use keel_core::sim::SimEvent;
use keel_core::{Errno, Instant, IoResult, TaskHandle};
use std::collections::HashMap;

/// A deliberate error in the checker's expectations, to show the checks catch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plant {
    None,
    /// Expects the lowest CPU priority first.
    ReversePriority,
    /// Expects every sleep to end one microsecond before its deadline.
    EarlyTimer,
    /// Expects every successful transfer one byte longer than scripted.
    WrongResult,
    /// Expects timers to fire in reverse (deadline, arming) order.
    ReverseTimers,
}

/// What a task is doing, as far as the checker is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cur {
    Other,
    Sleep,
    Wait,
}

pub struct TaskModel {
    /// Its current run once attached (`None` before: a child not yet spawned).
    pub handle: Option<TaskHandle>,
    /// Its slot's handle from `create` (what a wake before it is attached names).
    pub created: TaskHandle,
    /// 0 high, 1 normal, 2 low.
    pub prio: usize,
    pub cancel_requested: bool,
    pub cur: Cur,
    /// Something other than its timer woke it during the current sleep.
    pub disturbed: bool,
    /// The harness action after which it last went to its queue during the current sleep.
    pub sleep_ready_at: Option<u64>,
    pub next_label: u32,
    pub completed_checked: bool,
    /// `ExecStats::resumed` when its body last reached an operation.
    pub last_resume: Option<u64>,
    /// `TaskTimesSnapshot::resumptions` when it was attached.
    pub attach_resumptions: u64,
    /// The harness action its current sleep started in.
    pub armed_in: u64,
    /// `last_resume` when it last woke itself.
    pub self_woken_in: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LabelState {
    Refused,
    InFlight { at: Instant, cancelled: bool },
    Done,
}

pub struct Shared {
    pub plant: Plant,
    pub tasks: Vec<TaskModel>,
    pub violations: Vec<String>,
    /// (harness action, task) for each resume a body saw.
    pub resumes: Vec<(u64, usize)>,
    /// The number of the harness action under way.
    pub epoch: u64,
    pub arm_seq: u64,
    /// (deadline, arming seq, action it was first seen ready after, task) per timer fired.
    pub fired: Vec<(Instant, u64, u64, usize)>,
    pub steps: u64,
    /// How often each thing worth covering happened (`Seen`).
    pub seen: [u64; SEEN],
    /// Attaches a child task (`Op::Spawn`), set by the harness for the program's length.
    pub spawner: Option<std::rc::Rc<dyn Fn(usize)>>,
    /// Per task, how many times its body was dropped.
    pub drops: std::rc::Rc<Vec<std::cell::Cell<u32>>>,
    specs: HashMap<u32, IoSpec>,
    labels: HashMap<u32, LabelState>,
    trace_seen: u64,
    /// Per task, the label of its last completed operation.
    last_complete: HashMap<usize, u32>,
}

pub const LABELS_PER_TASK: u32 = 100_000;

/// Things worth covering, counted per program (`Shared::seen`).
#[derive(Clone, Copy, Debug)]
pub enum Seen {
    Submitted,
    Refused,
    DriverCancel,
    ErrorResult,
    ShortResult,
    OutOfOrder,
    TimerFired,
    HarnessCancel,
    StallCancel,
    SelectIoWon,
    SelectSleepWon,
    Joined,
    RoomWait,
    Spawned,
    Shutdown,
    Dropped,
    NextCompleted,
    NextTimedOut,
    DestroyRetried,
}
pub const SEEN: usize = 19;

impl Shared {
    pub fn new(plant: Plant) -> Self {
        Shared {
            plant,
            tasks: Vec::new(),
            violations: Vec::new(),
            resumes: Vec::new(),
            epoch: 0,
            arm_seq: 0,
            fired: Vec::new(),
            steps: 0,
            seen: [0; SEEN],
            spawner: None,
            drops: std::rc::Rc::new((0..super::program::MAX_TASKS).map(|_| std::cell::Cell::new(0)).collect()),
            specs: HashMap::new(),
            labels: HashMap::new(),
            trace_seen: 0,
            last_complete: HashMap::new(),
        }
    }

    pub fn count(&mut self, what: Seen) {
        self.seen[what as usize] += 1;
    }

    pub fn fail(&mut self, why: String) {
        if self.violations.len() < 16 {
            self.violations.push(why);
        }
    }

    /// A body resumed: log it and check that no higher CPU priority is ready.
    pub fn on_resume(&mut self, t: usize, resumed: u64, ready: [usize; 3]) {
        self.steps += 1;
        if self.tasks[t].last_resume == Some(resumed) {
            return;
        }
        self.tasks[t].last_resume = Some(resumed);
        self.resumes.push((self.epoch, t));
        let mine = self.tasks[t].prio;
        let higher = if self.plant == Plant::ReversePriority { mine + 1..3 } else { 0..mine };
        if higher.clone().any(|p| ready[p] > 0) {
            self.fail(format!("task {t} (cpu prio {mine}) resumed while {ready:?} were ready"));
        }
    }

    /// A new label for task `t`'s operation `spec`.
    pub fn label(&mut self, t: usize, spec: IoSpec) -> u32 {
        let label = t as u32 * LABELS_PER_TASK + self.tasks[t].next_label;
        self.tasks[t].next_label += 1;
        self.specs.insert(label, spec);
        label
    }

    /// The result a status of operation `spec` may come back with.
    pub fn result_ok(&self, t: usize, spec: IoSpec, got: Option<IoResult>) -> bool {
        let want = match (self.plant, spec.result) {
            (Plant::WrongResult, Ok(n)) => Ok(n + 1),
            (_, r) => r,
        };
        got == Some(want) || (self.tasks[t].cancel_requested && got == Some(Err(Errno::ECANCELED)))
    }

    /// A sleep until `deadline` starts.
    pub fn arm(&mut self, t: usize) -> u64 {
        let task = &mut self.tasks[t];
        task.cur = Cur::Sleep;
        task.armed_in = self.epoch;
        task.disturbed = task.self_woken_in.is_some() && task.self_woken_in == task.last_resume;
        task.sleep_ready_at = None;
        self.arm_seq += 1;
        self.arm_seq
    }

    /// The sleep returned `Ok` at `now`.
    pub fn slept(&mut self, t: usize, deadline: Instant, seq: u64, now: Instant, armed: bool) {
        let want = if self.plant == Plant::EarlyTimer {
            Instant::from_nanos(deadline.as_nanos().saturating_sub(1_000))
        } else {
            deadline
        };
        if now != want {
            self.fail(format!("task {t}: a sleep until {deadline:?} returned at {now:?}"));
        }
        self.count(Seen::TimerFired);
        let task = &mut self.tasks[t];
        task.cur = Cur::Other;
        if armed && !task.disturbed {
            let seen = task.sleep_ready_at.unwrap_or(self.epoch);
            self.fired.push((deadline, seq, seen, t));
        }
    }

    /// Task `t` is about to wake `target`.
    pub fn waking(&mut self, t: usize, target: usize) {
        if target == t {
            // Its own wake, while running: it lingers until its next suspension, which
            // then ends at once (a sleep re-arms, after timers armed in between).
            self.tasks[t].self_woken_in = self.tasks[t].last_resume;
        } else if self.tasks[target].cur != Cur::Wait {
            self.tasks[target].disturbed = true;
        }
    }

    /// Reads the driver's events since the last call (`events` is the driver's whole
    /// count, `recent` its kept tail, oldest first).
    pub fn consume(&mut self, events: u64, recent: &[SimEvent]) {
        let new = (events - self.trace_seen) as usize;
        self.trace_seen = events;
        if new > recent.len() {
            self.fail(format!("{new} driver events in one step: more than the trace keeps"));
            return;
        }
        for event in &recent[recent.len() - new..] {
            match *event {
                SimEvent::Submit { label, at } => match self.labels.get(&label) {
                    None | Some(LabelState::Refused) => {
                        self.labels.insert(label, LabelState::InFlight { at, cancelled: false });
                    }
                    Some(state) => self.fail(format!("label {label} submitted again ({state:?})")),
                },
                SimEvent::Refuse { label, errno } => {
                    self.count(if errno == Errno::EBUSY { Seen::RoomWait } else { Seen::Refused });
                    self.labels.insert(label, LabelState::Refused);
                }
                SimEvent::Cancel { label, .. } => match self.labels.get(&label).copied() {
                    Some(LabelState::InFlight { at, .. }) => {
                        self.labels.insert(label, LabelState::InFlight { at, cancelled: true });
                        self.count(Seen::DriverCancel);
                    }
                    other => self.fail(format!("label {label} cancelled while {other:?}")),
                },
                SimEvent::Complete { label, at, result } => {
                    let spec = self.specs[&label];
                    match self.labels.get(&label).copied() {
                        Some(LabelState::InFlight { at: from, cancelled }) => {
                            let due = from.saturating_add(spec.latency());
                            let on_time = at == due && result == spec.result;
                            let cut_short = cancelled && at <= due && result == Err(Errno::ECANCELED);
                            if !(on_time || cut_short) {
                                self.fail(format!(
                                    "label {label} ({spec:?}) submitted at {from:?} completed at {at:?} with {result:?}"
                                ));
                            }
                            self.labels.insert(label, LabelState::Done);
                            self.count(match result {
                                Err(_) => Seen::ErrorResult,
                                Ok(n) if n < 4096 => Seen::ShortResult,
                                Ok(_) => Seen::Submitted,
                            });
                            // Out of order: after a later operation of the same task.
                            let task = (label / LABELS_PER_TASK) as usize;
                            if self.last_complete.get(&task).is_some_and(|&last| label < last) {
                                self.count(Seen::OutOfOrder);
                            }
                            self.last_complete.insert(task, label);
                        }
                        other => self.fail(format!("label {label} completed while {other:?}")),
                    }
                }
                SimEvent::Advance { .. } => {}
            }
        }
    }

    /// Whether task `t` has an operation in flight at the driver.
    pub fn in_flight(&self, t: usize) -> Option<u32> {
        self.labels
            .iter()
            .find(|(l, s)| **l / LABELS_PER_TASK == t as u32 && matches!(s, LabelState::InFlight { .. }))
            .map(|(l, _)| *l)
    }

    /// End of the program: every submitted operation completed once, and timers fired
    /// in (deadline, arming) order.
    pub fn finish(&mut self) {
        let mut open: Vec<u32> =
            self.labels.iter().filter(|(_, s)| matches!(s, LabelState::InFlight { .. })).map(|(l, _)| *l).collect();
        open.sort();
        if !open.is_empty() {
            self.fail(format!("operations never completed: {open:?}"));
        }
        let mut fired = self.fired.clone();
        fired.sort_by_key(|&(deadline, seq, _, _)| (deadline, seq));
        if self.plant == Plant::ReverseTimers {
            fired.reverse();
        }
        for pair in fired.windows(2) {
            let ((d1, s1, seen1, t1), (d2, s2, seen2, t2)) = (pair[0], pair[1]);
            if seen1 > seen2 {
                self.fail(format!(
                    "timer of task {t1} ({d1:?}, armed #{s1}) fired after step {seen1}, \
                     later than task {t2}'s ({d2:?}, armed #{s2}) after step {seen2}"
                ));
            }
        }
    }
}

/// Microseconds as a duration.
pub fn us(n: u32) -> Duration {
    Duration::from_micros(n as u64)
}
