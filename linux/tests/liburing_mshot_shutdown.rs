//! liburing's `mshot-shutdown-race.c` and `recv-multishot.c` (the stream's end): a
//! multishot receive into provided buffers that another task's `shutdown(2)` ends. The
//! data that came before arrives whole and in order, then the stream ends with end of
//! stream (`Ok(None)`). Fibers and futures, bounded
//! by a deadline (a stream never ended is `TIMED_OUT`). io_uring only (multishot
//! receives and provided buffers): says SKIPPED on the epoll backend.

#[path = "net_util/mod.rs"]
mod util;

use core::time::Duration;
use keel_core::{Errno, Fiber, rt};
use keel_linux::RingConfig;
use keel_linux::deadline::{self, Deadline, FiberDeadline};
use keel_linux::net::{self, FiberNet, Shutdown, Socket};
use std::cell::RefCell;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use util::{fattrs, run_all, task};

/// What the stream gave: its bytes, and how it ended.
type Got = Rc<RefCell<Option<(Vec<u8>, Result<(), Errno>)>>>;

fn bound() -> Deadline {
    Deadline::after(Duration::from_secs(5))
}

#[test]
fn a_multishot_receive_ended_by_shutdown_gives_its_data_then_end_of_stream() {
    if util::ring_only("multishot receive into provided buffers") {
        return;
    }
    for how in [Shutdown::Read, Shutdown::Both] {
        for fiber in [true, false] {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let mut peer = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let s = Rc::new(Socket::from(OwnedFd::from(l.accept().unwrap().0)));
            peer.write_all(b"before the shutdown").unwrap();
            let mut d = util::ring(RingConfig::default());
            util::provided_buffers(&mut d, 8, 64);
            let ex = util::executor_with(d);
            let ex = ex.as_ref();
            let got: Got = Rc::default();
            let (g, s1) = (got.clone(), s.clone());
            if fiber {
                ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
                    let mut data = Vec::new();
                    let end = f.within(bound(), |f| {
                        let mut m = f.recv_multi(&*s1)?;
                        while let Some(b) = f.next_recv(&mut m)? {
                            data.extend_from_slice(&b);
                        }
                        Ok(())
                    });
                    *g.borrow_mut() = Some((data, end));
                    0u64
                })
                .unwrap();
            } else {
                ex.attach(task(), async move {
                    let mut data = Vec::new();
                    let end = deadline::within(bound(), async {
                        let mut m = net::future::recv_multi(&*s1).await?;
                        while let Some(b) = net::future::next_recv(&mut m).await? {
                            data.extend_from_slice(&b);
                        }
                        Ok(())
                    })
                    .await;
                    *g.borrow_mut() = Some((data, end));
                    0u64
                })
                .unwrap();
            }
            ex.attach(task(), async move {
                rt::sleep(Duration::from_millis(30)).await.unwrap();
                net::future::shutdown(&*s, how).await.unwrap();
                0u64
            })
            .unwrap();
            run_all(ex);
            let (data, end) = got.take().expect("the receiving task finished");
            assert_eq!(end, Ok(()), "{how:?} fiber {fiber}: the stream ends with end of stream (TIMED_OUT 62: never)");
            assert_eq!(data, b"before the shutdown", "{how:?} fiber {fiber}: the data before it, whole");
        }
    }
}
