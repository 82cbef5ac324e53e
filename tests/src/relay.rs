//! Loopback partitions for tests: a TCP proxy and a UDP relay that can be cut and healed.
//!
//! A cut black-holes traffic the way a broken link does: the TCP proxy stops moving bytes
//! without closing anything (senders see silence, then backpressure), the UDP relay drops
//! datagrams. Healing resumes forwarding. For real namespaces and nftables see the fault suite.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A cut switch shared by relays.
#[derive(Clone, Default)]
pub struct Link(Arc<AtomicBool>);

impl Link {
    pub fn cut(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn heal(&self) {
        self.0.store(false, Ordering::SeqCst);
    }
    pub fn is_cut(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Stops its threads when dropped.
struct Stop(Arc<AtomicBool>);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A TCP proxy to `target` controlled by `link`.
pub struct TcpRelay {
    pub addr: SocketAddr,
    _stop: Stop,
}

impl TcpRelay {
    pub fn start(target: SocketAddr, link: Link) -> TcpRelay {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        l.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((a, _)) if !link.is_cut() => {
                        let Ok(b) = TcpStream::connect(target) else {
                            continue;
                        };
                        for (x, y) in [(&a, &b), (&b, &a)] {
                            let (x, y) =
                                (x.try_clone().expect("clone"), y.try_clone().expect("clone"));
                            let (link, st) = (link.clone(), st.clone());
                            std::thread::spawn(move || pump(x, y, link, st));
                        }
                    }
                    // While cut, a connection attempt goes unanswered (dropped SYN): close it.
                    Ok((a, _)) => drop(a),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        TcpRelay {
            addr,
            _stop: Stop(stop),
        }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, link: Link, stop: Arc<AtomicBool>) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buf = vec![0u8; 256 * 1024];
    while !stop.load(Ordering::SeqCst) {
        if link.is_cut() {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// A bidirectional UDP relay: datagrams to `addr` go to `target`; replies come back to the last
/// sender. Several links may control it: it drops while any of them is cut.
pub struct UdpRelay {
    pub addr: SocketAddr,
    _stop: Stop,
}

impl UdpRelay {
    pub fn start(target: SocketAddr, links: Vec<Link>) -> UdpRelay {
        let front = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let back = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = front.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let peer: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let cut = move || links.iter().any(Link::is_cut);
        let cut2 = cut.clone();
        for s in [&front, &back] {
            s.set_read_timeout(Some(Duration::from_millis(20)))
                .expect("timeout");
        }
        let (f2, b2) = (
            front.try_clone().expect("clone"),
            back.try_clone().expect("clone"),
        );
        let (st1, st2) = (stop.clone(), stop.clone());
        let p1 = peer.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !st1.load(Ordering::SeqCst) {
                if let Ok((n, from)) = front.recv_from(&mut buf) {
                    *p1.lock().expect("lock") = Some(from);
                    if !cut() {
                        let _ = back.send_to(&buf[..n], target);
                    }
                }
            }
        });
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !st2.load(Ordering::SeqCst) {
                if let Ok((n, _)) = b2.recv_from(&mut buf) {
                    let to = *peer.lock().expect("lock");
                    if let (Some(to), false) = (to, cut2()) {
                        let _ = f2.send_to(&buf[..n], to);
                    }
                }
            }
        });
        UdpRelay {
            addr,
            _stop: Stop(stop),
        }
    }
}
