//! The case registry: one module per case group, one [`Case`] per case.
//!
//! To add a case, write a module whose `CASE` (or cases) lists its impls, and add it to
//! [`ALL`]. Shared set-up for keel and tokio lives here.

mod backends;
mod c_api;
mod c_suspend_io;
mod c_yield;
mod dispatch;
mod echo;
mod echo_pair;
mod fiber_spawn;
mod fiber_yield;
mod join;
mod may_peer;
mod mem_conn;
mod memory;
mod nop;
mod read1;
mod read4k;
mod read4k_peers;
mod remote_attach;
mod scale;
mod scale_io;
mod semaphore_handoff;
mod spawn;
mod switch;
mod switch_mixed;
mod uring;
mod yield_;

use crate::goals::{Curve, Goal};
use crate::harness::Case;
use core::pin::Pin;
use keel_core::{Config, Executor, FiberAttrs, RegionStacks, StackProvider, TaskAttrs, TaskHandle, TaskSlot};
use keel_linux::SleepDriver;

/// Every case, in the order a full run prints them.
pub const ALL: &[Case] = &[
    spawn::CASE,
    join::CASE,
    yield_::CASE,
    switch::CASE,
    fiber_yield::CASE,
    fiber_spawn::CASE,
    semaphore_handoff::CASE,
    c_yield::CASE,
    switch_mixed::CASE,
    nop::B1,
    nop::B8,
    nop::B32,
    c_suspend_io::CASE,
    read1::B1,
    read1::B8,
    read1::B32,
    read4k::CASE,
    remote_attach::P50,
    remote_attach::P99,
    dispatch::W1,
    dispatch::W2,
    echo::ECHO_MSGS,
    echo::ECHO_P50,
    echo::ECHO_P99,
    echo::ECHO_CPU,
    echo::ECHO_CPU_C1,
    echo::ECHO_CPU_C64,
    echo::ECHO_CPU_C512,
    echo::ECHO_CPU_C2048,
    echo::ECHO_CPU_C4096,
    echo::ECHO_P99_C1,
    echo::ECHO_P99_C64,
    echo::ECHO_P99_C512,
    echo::ECHO_P99_C2048,
    echo::ECHO_P99_C4096,
    memory::CASE,
    mem_conn::CASE,
    scale::YIELD_N1,
    scale::YIELD_N1000,
    scale::YIELD_N100000,
    scale::TIMER_N1,
    scale::TIMER_N1000,
    scale::TIMER_N100000,
    scale::FIBER_YIELD_N1,
    scale::FIBER_YIELD_N1000,
    scale::FIBER_YIELD_N10000,
    scale::FIBER_SPAWN_N1,
    scale::FIBER_SPAWN_N1000,
    scale::FIBER_SPAWN_N10000,
    scale_io::NOP_Q1,
    scale_io::NOP_Q64,
    scale_io::NOP_Q1024,
    backends::SPAWN,
    backends::YIELD,
    backends::TIMER,
    echo_pair::CASE,
];

/// If this process is a memory child (`memory::CHILD_ENV` set), does its work and
/// returns what to print; `None` otherwise.
pub fn memory_child() -> Option<Result<f64, String>> {
    std::env::var(memory::CHILD_ENV).ok().map(|kind| match kind.strip_prefix(mem_conn::PREFIX) {
        Some(server) => mem_conn::child(server),
        None => memory::child(&kind),
    })
}

/// Every scaling curve.
pub fn curves() -> Vec<Curve> {
    [scale::CURVES, scale_io::CURVES, echo::CURVES].concat()
}

/// Every goal, case by case in [`ALL`]'s order.
pub fn goals() -> Vec<Goal> {
    [
        spawn::GOALS,
        join::GOALS,
        yield_::GOALS,
        switch::GOALS,
        fiber_yield::GOALS,
        fiber_spawn::GOALS,
        semaphore_handoff::GOALS,
        nop::GOALS,
        read4k::GOALS,
        remote_attach::GOALS,
        dispatch::GOALS,
        echo::GOALS,
        memory::GOALS,
        backends::GOALS,
        echo_pair::GOALS,
    ]
    .concat()
}

/// A keel executor on the real clock, as every keel impl uses it (pin it, then `into_ref`).
fn keel_executor() -> Result<Executor<SleepDriver>, String> {
    Executor::new(SleepDriver::new(), Config::default()).map_err(|e| e.to_string())
}

/// Usable bytes of every keel fiber stack in the bench.
const FIBER_STACK: usize = 64 * 1024;

/// How every keel fiber in the bench is attached.
const FIBER_ATTRS: FiberAttrs = FiberAttrs { stack_size: FIBER_STACK, ..FiberAttrs::DEFAULT };

/// A keel executor on the real clock whose fibers take their stacks from a region of
/// `stacks` stacks of [`FIBER_STACK`] bytes (no guard gap), as every keel fiber impl
/// uses it. The region is leaked (`RegionStacks` wants `'static` memory): a few
/// stacks per trial, a few MiB over a whole run.
fn keel_fiber_executor(stacks: usize) -> Result<Executor<SleepDriver, RegionStacks>, String> {
    Executor::with_stacks(SleepDriver::new(), region_stacks(stacks)?, Config::default()).map_err(|e| e.to_string())
}

/// `stacks` stacks of [`FIBER_STACK`] bytes carved out of a leaked region.
fn region_stacks(stacks: usize) -> Result<RegionStacks, String> {
    let mem: &'static mut [u8] = Vec::leak(vec![0u8; stacks * FIBER_STACK + 16]);
    RegionStacks::new(mem, FIBER_STACK, 0).map_err(|e| format!("region stacks: {e}"))
}

/// One leaked stack of [`FIBER_STACK`] bytes, for the bare switcher (no executor).
fn leaked_stack() -> Result<keel_core::Stack, String> {
    region_stacks(1)?.allocate(FIBER_STACK).map_err(|e| format!("stack: {e}"))
}

/// Creates a task in `slot` for one trial (destroy it with [`destroy_task`] at the end,
/// so the next trial can create it again).
fn create_task(slot: &'static TaskSlot, name: &'static str) -> Result<TaskHandle, String> {
    slot.create(TaskAttrs { name, ..TaskAttrs::default() }).map_err(|e| format!("create: {e}"))
}

/// Destroys the task a trial created, given its latest run's handle.
fn destroy_task<S: StackProvider>(ex: Pin<&Executor<SleepDriver, S>>, h: TaskHandle) -> Result<(), String> {
    ex.destroy(h).map_err(|e| format!("destroy: {e}"))
}

/// A current-thread tokio runtime with no driver enabled, as every tokio impl here uses
/// it: the fastest tokio for these cases (with `enable_time` its yield costs about 40 ns
/// more, since each one polls the timer driver), while keel's yield never reads its clock.
fn tokio_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread().build().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goals_name_registered_cases_and_impls() {
        for g in goals() {
            for (case, imp) in [(g.case, g.imp), (g.peer_case, g.peer)] {
                let c = ALL.iter().find(|c| c.name == case).unwrap_or_else(|| panic!("goal on unknown case {case}"));
                assert!(c.impls.iter().any(|i| i.name == imp), "goal on unknown impl {case} {imp}");
            }
            assert!(g.x > 0.0);
        }
    }

    #[test]
    fn names_are_unique_and_plain() {
        for (i, c) in ALL.iter().enumerate() {
            assert!(ALL[..i].iter().all(|d| d.name != c.name), "duplicate case {}", c.name);
            assert!(!c.name.is_empty() && !c.name.contains(char::is_whitespace));
            assert!(!c.impls.is_empty());
            for (j, imp) in c.impls.iter().enumerate() {
                assert!(c.impls[..j].iter().all(|o| o.name != imp.name), "duplicate impl {}", imp.name);
                assert!(!imp.name.is_empty() && !imp.name.contains(char::is_whitespace));
                assert!(!imp.name.contains([',', '"', ':']) && !c.name.contains([',', '"', ':']), "CSV-safe names");
            }
        }
    }
}
