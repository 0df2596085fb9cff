//! Random task programs for the simulated driver: what they are, how one is drawn from a
//! seed, and how a failing one is made smaller.
//!
//! A program is a list of tasks (CPU and I/O priority, future or fiber, a list of
//! operations) and a harness script (run a few items, cancel a task, inject submission
//! refusals, limit the driver's room) played between the executor's items. Everything
//! is drawn from one `u64` seed with a small PRNG (splitmix64), so a seed names a
//! program on every host.

use core::time::Duration;
use keel_core::{Errno, IoResult, Priority};

/// splitmix64: small, fast, and the same everywhere. Or, for a fuzzer, a byte string read
/// front to back (`from_bytes`): each draw is the next two bytes, so one byte of the input
/// changes one decision of the program; past the end every draw is 0.
pub struct Rng(u64, Option<(Vec<u8>, usize)>);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed, None)
    }
    pub fn from_bytes(data: &[u8]) -> Self {
        Rng(0, Some((data.to_vec(), 0)))
    }
    pub fn next(&mut self) -> u64 {
        if let Some((data, at)) = &mut self.1 {
            let byte = |i: usize| data.get(i).copied().unwrap_or(0) as u64;
            let v = byte(*at) | byte(*at + 1) << 8;
            *at += 2;
            return v;
        }
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// One scripted operation: completes `latency_us` after submission with `result`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoSpec {
    pub latency_us: u32,
    pub result: IoResult,
}

impl IoSpec {
    pub fn latency(self) -> Duration {
        Duration::from_micros(self.latency_us as u64)
    }
}

/// What a task does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Yield,
    /// Sleep this many microseconds of virtual time.
    Sleep(u32),
    /// Wait for a wake (from another task, or a cancel from the harness).
    Wait,
    /// Wake task `0` (`TaskHandle::wake` if `1` is false, `Executor::wake` if true).
    Wake(usize, bool),
    /// Initiate these operations at once, then take completions until all are in.
    Io(Vec<IoSpec>),
    /// Futures only: poll an operation and a sleep together until the first is ready,
    /// then drop the other (a timeout; a lost operation is dropped in flight).
    Select(IoSpec, u32),
    /// Futures only: two sleeps polled together until both are ready.
    JoinSleeps(u32, u32),
    /// Attach task `0` (a child: not attached by the harness) from inside this one.
    Spawn(usize),
    /// Initiate these operations at once, then take them one by one with
    /// `next_completed_io`, each wait with a timeout of `1` microseconds (0: none).
    IoNext(Vec<IoSpec>, u32),
}

/// A task of the program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskProg {
    pub cpu: Priority,
    pub io: Priority,
    pub fiber: bool,
    /// Attached by another task's `Spawn`, not by the harness.
    pub child: bool,
    pub ops: Vec<Op>,
}

/// What the harness does between items.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `Executor::run(n, None)`.
    Run(usize),
    /// `Executor::cancel` of task `0`.
    Cancel(usize),
    /// `SimDriver::fail_next_submits(count, errno)`.
    Refuse(u32, Errno),
    /// `SimDriver::limit_capacity(count)`.
    Limit(usize),
    /// `Executor::shutdown`: every attached task cancelled and wound down.
    Shutdown,
    /// Drops the executor: the program ends here (teardown rules).
    Drop,
}

/// Executor settings a program runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batches {
    pub inbox: usize,
    pub timer: usize,
    pub reap: usize,
    pub resume: usize,
    pub max_io: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    pub seed: u64,
    pub batches: Batches,
    pub tasks: Vec<TaskProg>,
    pub script: Vec<Action>,
}

pub const MAX_TASKS: usize = 8;
const ERRNOS: [Errno; 5] = [Errno::EIO, Errno::EAGAIN, Errno::ECANCELED, Errno::EINTR, Errno::ENOMEM];
const PRIOS: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

fn io_spec(rng: &mut Rng) -> IoSpec {
    let latency_us = match rng.below(4) {
        0 => 0,
        1 => rng.below(4) as u32,
        _ => rng.below(400) as u32,
    };
    let result = match rng.below(10) {
        0..=3 => Ok(4096),
        4..=5 => Ok(rng.below(4096) as u32), // short
        _ => Err(rng.pick(&ERRNOS)),
    };
    IoSpec { latency_us, result }
}

fn sleep_us(rng: &mut Rng) -> u32 {
    if rng.chance(20) { 0 } else { rng.below(300) as u32 }
}

fn op(rng: &mut Rng, tasks: usize, fiber: bool) -> Op {
    match rng.below(if fiber { 14 } else { 17 }) {
        0..=1 => Op::Yield,
        2..=3 => Op::Sleep(sleep_us(rng)),
        4..=5 => Op::Wait,
        6..=7 => Op::Wake(rng.below(tasks as u64) as usize, rng.chance(50)),
        8..=10 => Op::Io((0..1 + rng.below(4)).map(|_| io_spec(rng)).collect()),
        11..=13 => Op::IoNext(
            (0..1 + rng.below(4)).map(|_| io_spec(rng)).collect(),
            if rng.chance(20) { 0 } else { 1 + rng.below(300) as u32 },
        ),
        14..=15 => Op::Select(io_spec(rng), sleep_us(rng)),
        _ => Op::JoinSleeps(sleep_us(rng), sleep_us(rng)),
    }
}

/// The program seed `seed` names; `size` bounds its tasks' lengths.
pub fn generate(seed: u64, size: usize) -> Program {
    generate_with(Rng::new(seed), seed, size)
}

/// The program a byte string names (every byte string names one: a fuzzer's input);
/// `size` bounds its tasks' lengths.
pub fn from_bytes(data: &[u8], size: usize) -> Program {
    generate_with(Rng::from_bytes(data), 0, size)
}

fn generate_with(mut rng: Rng, seed: u64, size: usize) -> Program {
    let n = 1 + rng.below(MAX_TASKS as u64) as usize;
    let tasks = (0..n)
        .map(|_| {
            let fiber = rng.chance(35);
            let len = rng.below(size as u64 + 1) as usize;
            TaskProg {
                cpu: rng.pick(&PRIOS),
                io: rng.pick(&PRIOS),
                fiber,
                child: false,
                ops: (0..len).map(|_| op(&mut rng, n, fiber)).collect(),
            }
        })
        .collect::<Vec<TaskProg>>();
    let mut tasks = tasks;
    for t in 1..n {
        if rng.chance(30) {
            let parent = rng.below(t as u64) as usize;
            let at = rng.below(tasks[parent].ops.len() as u64 + 1) as usize;
            tasks[parent].ops.insert(at, Op::Spawn(t));
            tasks[t].child = true;
        }
    }
    let script = (0..rng.below(size as u64 * 3 + 1))
        .map(|_| match rng.below(200) {
            0 => Action::Shutdown,
            1 => Action::Drop,
            2..=119 => Action::Run(1),
            120..=139 => Action::Run(1 + rng.below(6) as usize),
            140..=159 => Action::Cancel(rng.below(n as u64) as usize),
            160..=179 => Action::Refuse(1 + rng.below(3) as u32, rng.pick(&ERRNOS)),
            _ => Action::Limit(rng.below(5) as usize),
        })
        .collect();
    let small = |rng: &mut Rng, big: usize| if rng.chance(50) { 1 + rng.below(3) as usize } else { big };
    let batches = Batches {
        inbox: small(&mut rng, 64),
        timer: small(&mut rng, 64),
        reap: small(&mut rng, 256),
        resume: small(&mut rng, 16),
        max_io: if rng.chance(25) { Some(1 + rng.below(4) as usize) } else { None },
    };
    Program { seed, batches, tasks, script }
}

/// Smaller programs than `p`, each one edit away: a task dropped (wakes of it dropped,
/// later indices moved down), an operation dropped, a harness action dropped, an
/// operation's list of i/o halved.
pub fn smaller(p: &Program) -> Vec<Program> {
    let mut out = Vec::new();
    for t in 0..p.tasks.len() {
        if p.tasks.len() == 1 {
            break;
        }
        let mut q = p.clone();
        q.tasks.remove(t);
        let remap = |i: usize| {
            if i > t {
                Some(i - 1)
            } else if i == t {
                None
            } else {
                Some(i)
            }
        };
        for task in &mut q.tasks {
            task.ops.retain_mut(|op| match op {
                Op::Wake(i, _) | Op::Spawn(i) => remap(*i).map(|j| *i = j).is_some(),
                _ => true,
            });
        }
        q.script.retain_mut(|a| match a {
            Action::Cancel(i) => remap(*i).map(|j| *i = j).is_some(),
            _ => true,
        });
        out.push(normalized(q));
    }
    for i in 0..p.script.len() {
        let mut q = p.clone();
        q.script.remove(i);
        out.push(q);
    }
    for t in 0..p.tasks.len() {
        for i in 0..p.tasks[t].ops.len() {
            let mut q = p.clone();
            q.tasks[t].ops.remove(i);
            out.push(normalized(q));
            if let Op::Io(specs) = &p.tasks[t].ops[i]
                && specs.len() > 1
            {
                let mut q = p.clone();
                q.tasks[t].ops[i] = Op::Io(specs[..specs.len() / 2].to_vec());
                out.push(q);
            }
        }
    }
    out
}

/// A child no `Spawn` names any more is attached by the harness instead.
fn normalized(mut p: Program) -> Program {
    let spawned: Vec<usize> = p
        .tasks
        .iter()
        .flat_map(|t| t.ops.iter())
        .filter_map(|op| if let Op::Spawn(c) = op { Some(*c) } else { None })
        .collect();
    for (t, task) in p.tasks.iter_mut().enumerate() {
        task.child = spawned.contains(&t);
    }
    p
}

/// Shrinks a failing program greedily: keeps any one-edit-smaller program that still
/// fails, for at most `budget` tries.
pub fn shrink(mut p: Program, mut fails: impl FnMut(&Program) -> Option<String>, budget: usize) -> (Program, String) {
    let mut why = fails(&p).unwrap_or_else(|| "the failure did not reproduce".into());
    let mut tries = 0;
    'outer: while tries < budget {
        for q in smaller(&p) {
            tries += 1;
            if let Some(w) = fails(&q) {
                p = q;
                why = w;
                continue 'outer;
            }
            if tries >= budget {
                break;
            }
        }
        break;
    }
    (p, why)
}
