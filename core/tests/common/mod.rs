//! Shared set-up for the simulated-driver tests.
#![allow(dead_code)]

use keel_core::{Priorities, Priority, TaskAttrs, TaskHandle, TaskSlot};
use std::cell::RefCell;
use std::rc::Rc;

/// A fresh `'static` slot (leaked: slots are never freed, by design).
pub fn slot() -> &'static TaskSlot {
    Box::leak(Box::new(TaskSlot::new()))
}

/// A created task with CPU priority `cpu`.
pub fn task(cpu: Priority, name: &'static str) -> TaskHandle {
    slot().create(TaskAttrs { priority: Priorities { cpu, io: Priority::Normal }, name }).unwrap()
}

/// A shared log the task bodies write to.
#[derive(Clone, Default)]
pub struct Log(Rc<RefCell<Vec<String>>>);

impl Log {
    pub fn push(&self, s: impl Into<String>) {
        self.0.borrow_mut().push(s.into());
    }
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.0.borrow_mut())
    }
}

/// Runs until nothing is attached, at most `limit` items.
#[macro_export]
macro_rules! run_all {
    ($ex:expr) => {{
        let mut n = 0usize;
        while $ex.attached() > 0 {
            n += $ex.run(1_000_000, None).expect("run");
            assert!(n < 100_000_000, "runaway");
        }
        n
    }};
}
