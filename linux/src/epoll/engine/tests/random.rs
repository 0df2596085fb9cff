//! Random batches of SQEs (NOPs, failing closes, receives that wait, timeouts, link
//! timeouts, cancels, links between them): every SQE gets exactly one CQE, a chain's
//! CQEs come in chain order, and nothing is left in flight after a cancel of everything.

use super::*;
use io_uring::{opcode, types};
use squeue::Flags;
use std::collections::HashMap;

/// xorshift64: reproducible without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn every_sqe_gets_one_cqe_and_chains_complete_in_order() {
    let (a, _b) = socketpair(libc::SOCK_STREAM);
    let ts = [ms(0), ms(1), ms(2)];
    let mut buf = [0u8; 4];
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut e = engine(0);
        let mut ud = 0u64;
        // (user_data of a chain's members, in order), to check CQE order.
        let mut chains: Vec<Vec<u64>> = Vec::new();
        let mut sent = 0usize;
        for _batch in 0..4 {
            let mut sqes = Vec::new();
            let mut chain = Vec::new();
            for _ in 0..(1 + rng.below(12)) {
                if sqes.len() + 2 > e.sq_capacity() {
                    break;
                }
                ud += 1;
                let sqe = match rng.below(6) {
                    0 => opcode::Nop::new().build(),
                    1 => opcode::Close::new(types::Fd(-1)).build(),
                    2 => opcode::Recv::new(types::Fd(a.as_raw_fd()), buf.as_mut_ptr(), 4).build(),
                    3 => opcode::Timeout::new(&*ts[rng.below(3) as usize]).build(),
                    4 if ud > 1 => opcode::AsyncCancel::new(1 + rng.below(ud - 1)).build(),
                    _ => opcode::Nop::new().build(),
                };
                let link = rng.below(3) == 0;
                let sqe = sqe.user_data(ud).flags(if link { Flags::IO_LINK } else { Flags::empty() });
                sqes.push(sqe);
                chain.push(ud);
                if link && rng.below(2) == 0 {
                    ud += 1;
                    let t = opcode::LinkTimeout::new(&*ts[rng.below(3) as usize]).build().user_data(ud);
                    if rng.below(2) == 0 {
                        sqes.push(t.flags(Flags::IO_LINK)); // the chain goes on after the op
                    } else {
                        sqes.push(t); // the chain ends with the op
                        chains.push(std::mem::take(&mut chain));
                        continue;
                    }
                }
                if !link {
                    chains.push(std::mem::take(&mut chain));
                }
            }
            chains.push(chain);
            sent += sqes.len();
            push(&mut e, &sqes);
            e.enter(0, None).unwrap();
        }
        push(&mut e, &[opcode::AsyncCancel2::new(types::CancelBuilder::any()).build().user_data(u64::MAX)]);
        let mut got = wait(&mut e, sent + 1);
        got.extend(take(&mut e));
        let mut seen: HashMap<u64, usize> = HashMap::new();
        for (k, c) in got.iter().enumerate() {
            assert!(seen.insert(c.0, k).is_none(), "seed {seed}: two CQEs for {}: {got:?}", c.0);
        }
        assert_eq!(seen.len(), sent + 1, "seed {seed}: CQEs missing: {got:?}");
        assert_eq!(e.in_flight(), 0, "seed {seed}");
        for ch in chains.iter().filter(|c| c.len() > 1) {
            let at: Vec<usize> = ch.iter().map(|u| seen[u]).collect();
            assert!(at.windows(2).all(|w| w[0] < w[1]), "seed {seed}: chain {ch:?} out of order: {got:?}");
        }
    }
}
