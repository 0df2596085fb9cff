//! Two runs of one program on the simulated driver give the same trace.

mod common;
use common::*;
use core::pin::pin;
use core::time::Duration;
use keel_core::sim::{SimDriver, SimOp};
use keel_core::{Config, Errno, Executor, IoStatus, Priority, initiate, rt, suspend_until_completed_io};

fn program() -> (u64, Vec<String>, Vec<keel_core::sim::SimEvent>) {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let log = Log::default();
    for i in 0..20u32 {
        let log = log.clone();
        let prio = [Priority::High, Priority::Normal, Priority::Low][i as usize % 3];
        ex.attach(task(prio, "p"), async move {
            for k in 0..3u32 {
                let st = pin!(IoStatus::new());
                let latency = Duration::from_micros(((i * 7 + k * 13) % 11) as u64 * 100);
                let result = if (i + k) % 5 == 0 { Err(Errno::EIO) } else { Ok(i * 10 + k) };
                initiate::<SimDriver>(st.as_ref(), SimOp::new(i * 100 + k).after(latency).with_result(result))
                    .await
                    .unwrap();
                suspend_until_completed_io(1).await?;
                rt::sleep(Duration::from_micros((i % 4) as u64 * 50)).await?;
                rt::yield_now().await?;
                log.push(format!("{i}.{k}={:?}@{}", st.result(), rt::clock().await.unwrap().as_nanos()));
            }
            Ok(i as u64)
        })
        .unwrap();
    }
    run_all!(ex);
    let (hash, events) = ex.with_driver(|d| (d.trace_hash(), d.trace().copied().collect())).unwrap();
    (hash, log.take(), events)
}

#[test]
fn the_same_program_gives_the_same_trace_twice() {
    let a = program();
    let b = program();
    assert_eq!(a.1.len(), 60);
    assert_eq!(a.0, b.0);
    assert_eq!(a.1, b.1);
    assert_eq!(a.2, b.2);
    assert!(a.2.len() > 100);
}
