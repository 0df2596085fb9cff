use super::*;
use io_uring::{opcode, types};

#[test]
fn a_nop_completes_through_the_cq_at_the_next_enter() {
    let mut e = engine(0);
    push(&mut e, &[opcode::Nop::new().build().user_data(7)]);
    assert!(e.cq_is_empty(), "a CQE before any enter");
    assert_eq!(e.sq_len(), 1);
    assert_eq!(poll(&mut e), vec![(7, 0, 0)]);
    assert_eq!((e.sq_len(), e.in_flight()), (0, 0));
}

#[test]
fn a_full_sq_refuses_a_push() {
    let mut e = Engine::new(2, 2, EngineConfig { file_threads: 0 }).unwrap();
    let nop = opcode::Nop::new().build();
    // SAFETY: a NOP names no memory.
    unsafe {
        assert!(e.push(&nop) && e.push(&nop));
        assert!(!e.push(&nop), "a third SQE in an SQ of 2");
    }
    assert_eq!(e.sq_capacity(), 2);
    assert_eq!(poll(&mut e).len(), 2);
    // SAFETY: as above.
    assert!(unsafe { e.push(&nop) }, "the SQ has room again after an enter");
}

#[test]
fn what_the_engine_does_not_perform_completes_with_eopnotsupp() {
    let mut e = engine(2);
    let (r, _w) = pipe();
    let fd = types::Fd(r.as_raw_fd());
    let mut buf = [0u8; 8];
    let sqes = [
        opcode::ReadFixed::new(fd, buf.as_mut_ptr(), 8, 0).build().user_data(1),
        opcode::Read::new(types::Fixed(0), buf.as_mut_ptr(), 8).build().user_data(2),
        opcode::Read::new(fd, buf.as_mut_ptr(), 8).build().flags(squeue::Flags::BUFFER_SELECT).user_data(3),
        opcode::RecvMulti::new(fd, 0).build().user_data(4),
        opcode::AcceptMulti::new(fd).allocate_file_index(true).build().user_data(5),
        opcode::SendZc::new(fd, buf.as_ptr(), 8).build().user_data(6),
        opcode::ReadMulti::new(fd, 8, 0).build().user_data(7),
        opcode::PollAdd::new(fd, libc::POLLIN as u32).multi(true).build().flags(squeue::Flags::IO_LINK).user_data(8),
        opcode::Nop::new().build().flags(squeue::Flags::IO_DRAIN).user_data(9),
        opcode::MsgRingData::new(fd, 0, 0, None).build().user_data(10),
    ];
    push(&mut e, &sqes);
    let got = poll(&mut e);
    // A multishot poll may not link (8): refused, and what it linked to (9) is cancelled.
    let want = |u| if u == 9 { -libc::ECANCELED } else { -libc::EOPNOTSUPP };
    assert_eq!(got, (1..=10).map(|u| (u, want(u), 0)).collect::<Vec<_>>());
    for code in [opcode::ReadFixed::CODE, opcode::WriteFixed::CODE, opcode::SendZc::CODE, opcode::ReadMulti::CODE] {
        assert!(!Engine::supports(code), "supports({code})");
    }
    for code in [opcode::Read::CODE, opcode::Accept::CODE, opcode::Timeout::CODE, opcode::AsyncCancel::CODE] {
        assert!(Engine::supports(code), "supports({code})");
    }
}

#[test]
fn a_relative_timeout_fires_with_etime_and_not_before_its_time() {
    let mut e = engine(0);
    let ts = ms(20);
    let t0 = super::super::timers::now();
    push(&mut e, &[opcode::Timeout::new(&*ts).build().user_data(3)]);
    assert_eq!(poll(&mut e), vec![]);
    assert_eq!(wait(&mut e, 1), vec![(3, -libc::ETIME, 0)]);
    assert!(super::super::timers::now() - t0 >= 20_000_000, "fired early");
}

#[test]
fn an_absolute_timeout_fires_at_its_instant() {
    let mut e = engine(0);
    let at = super::super::timers::now() + 15_000_000;
    let ts = Box::new(types::Timespec::new().sec(at / 1_000_000_000).nsec((at % 1_000_000_000) as u32));
    push(&mut e, &[opcode::Timeout::new(&*ts).flags(types::TimeoutFlags::ABS).build().user_data(4)]);
    assert_eq!(wait(&mut e, 1), vec![(4, -libc::ETIME, 0)]);
    assert!(super::super::timers::now() >= at, "fired early");
}

#[test]
fn enter_returns_at_its_deadline_without_cqes_and_at_once_when_cqes_are_ready() {
    let mut e = engine(0);
    let (r, _w) = pipe();
    let mut buf = [0u8; 4];
    push(&mut e, &[opcode::Read::new(types::Fd(r.as_raw_fd()), buf.as_mut_ptr(), 4).build().user_data(1)]);
    let d = super::super::timers::now() + 5_000_000;
    e.enter(1, Some(keel_core::Instant::from_nanos(d))).unwrap();
    assert!(super::super::timers::now() >= d && e.cq_is_empty());
    push(&mut e, &[opcode::Nop::new().build().user_data(2)]);
    e.enter(1, None).unwrap(); // a NOP is ready: no wait, or this test hangs
    assert_eq!(take(&mut e), vec![(2, 0, 0)]);
    assert_eq!(e.in_flight(), 1, "the read still waits");
}

#[test]
fn a_drain_and_a_counting_timeout_are_not_performed() {
    let mut e = engine(0);
    let ts = ms(1);
    push(
        &mut e,
        &[
            opcode::Nop::new().build().flags(squeue::Flags::IO_DRAIN).user_data(1),
            opcode::Timeout::new(&*ts).count(2).build().user_data(2),
        ],
    );
    assert_eq!(poll(&mut e), vec![(1, -libc::EOPNOTSUPP, 0), (2, -libc::EOPNOTSUPP, 0)]);
}
