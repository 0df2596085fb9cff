//! The debugger descriptor and the registry of live executors (`exec/debug.rs`): what
//! the GDB script reads, read here the way it does, from raw addresses and offsets.
//!
//! One test function: the registry is process-wide, so its counts are checked with no
//! other test's executors alive.

use core::pin::pin;
use core::sync::atomic::Ordering;
use keel_core::exec::debug::{KeelDebug, LAYOUT_VERSION, REGISTRY_SLOTS, keel_debug};
use keel_core::sim::SimDriver;
use keel_core::{Config, Executor, Priorities, Priority, TaskAttrs, TaskSlot};

fn listed() -> Vec<usize> {
    keel_debug.executors.iter().map(|s| s.load(Ordering::Relaxed) as usize).filter(|&p| p != 0).collect()
}

fn byte(addr: usize) -> u8 {
    // SAFETY: the callers pass addresses inside a live task slot or executor.
    unsafe { *(addr as *const u8) }
}

fn word(addr: usize) -> usize {
    // SAFETY: as for `byte`; the offsets come from the descriptor, so aligned.
    unsafe { *(addr as *const usize) }
}

#[test]
fn registry_rules_1_and_2_and_the_descriptor_reads_a_tasks_fields() {
    let d: &KeelDebug = &keel_debug;
    assert_eq!(&d.magic, b"keel-dbg");
    assert_eq!(d.version, LAYOUT_VERSION);
    assert_eq!(d.slots as usize, REGISTRY_SLOTS);
    assert!(listed().is_empty(), "an executor is listed before any was made");

    // Rule 1: listed once used pinned, off the list after its drop.
    {
        let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
        let ex = ex.into_ref();
        let slot: &'static TaskSlot = Box::leak(Box::new(TaskSlot::new()));
        let prio = Priorities { cpu: Priority::Low, io: Priority::High };
        let h = slot.create(TaskAttrs { priority: prio, name: "probe" }).unwrap();
        let run = ex.attach(h, async { keel_core::rt::sleep(core::time::Duration::from_secs(1)).await }).unwrap();
        assert_eq!(ex.run(1, None), Ok(1));
        let execs = listed();
        assert_eq!(execs.len(), 1, "the pinned executor is not listed once");
        let sched = execs[0];

        // The task, found as the script finds it: the executor's owned list, then its fields.
        let s = &d.sched;
        let t = &d.task;
        assert_eq!(word(sched + s.attached as usize), 1);
        let hdr = word(sched + s.owned as usize + s.list_head as usize);
        assert_eq!(hdr, slot as *const TaskSlot as usize, "the owned list's head is not the task's slot");
        assert_eq!(word(hdr + t.owned_links as usize + s.links_next as usize), 0, "one task, no next");
        assert_eq!(byte(hdr + t.state as usize), d.state_codes[4], "not Suspended(Timer)");
        assert_eq!((byte(hdr + t.prio_cpu as usize), byte(hdr + t.prio_io as usize)), (2, 0));
        // SAFETY: the id is a u32 at its offset in the live slot.
        assert_eq!(unsafe { *((hdr + t.id as usize) as *const u32) }, h.id());
        let (name, len) = (word(hdr + t.name as usize), word(hdr + t.name as usize + 8));
        // SAFETY: the name's pointer and length, as a `&'static str` stores them.
        assert_eq!(unsafe { core::slice::from_raw_parts(name as *const u8, len) }, b"probe");
        let vt = word(hdr + t.body_vt as usize);
        assert_eq!(byte(vt + t.vt_kind as usize), d.kind_codes[0], "a future's body is not Stackless");
        assert_eq!(word(sched + s.stats[0] as usize), 1, "resumed once");
        assert!(run.is_current());
    }
    assert!(listed().is_empty(), "a dropped executor is still listed");

    // Rule 2: more executors than slots: the rest are counted, and leave the count.
    std::thread::scope(|scope| {
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let wait = std::sync::Arc::new(std::sync::Mutex::new(wait));
        let (ready, all_ready) = std::sync::mpsc::channel::<()>();
        for _ in 0..REGISTRY_SLOTS + 3 {
            let (wait, ready) = (wait.clone(), ready.clone());
            scope.spawn(move || {
                let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
                let ex = ex.into_ref();
                // Any answer: the call pins it into use (registry rule 1).
                let _ = ex.run(1, Some(core::time::Duration::ZERO));
                ready.send(()).unwrap();
                let _ = wait.lock().unwrap().recv();
            });
        }
        for _ in 0..REGISTRY_SLOTS + 3 {
            all_ready.recv_timeout(core::time::Duration::from_secs(60)).expect("an executor thread failed");
        }
        assert_eq!(listed().len(), REGISTRY_SLOTS);
        assert_eq!(d.unlisted.load(Ordering::Relaxed), 3);
        drop(go);
    });
    assert!(listed().is_empty());
    assert_eq!(d.unlisted.load(Ordering::Relaxed), 0);
}
