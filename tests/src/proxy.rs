//! A frame-aware TCP proxy between hsb-primary and hsb-standby that injects hostile frames:
//! corrupted, forged (valid CRC, wrong MAC), truncated, oversized, replayed, unknown kinds.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hsb_common::frame::{field, HEADER_LEN};

/// What to do to the next `Pages` frame from the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Flip one body byte (CRC mismatch).
    Corrupt,
    /// Flip one body byte and fix the CRC (only the MAC catches it).
    Forge,
    /// Send half the frame, then close the connection.
    Truncate,
    /// Send a header announcing a 2 MiB body instead.
    Oversized,
    /// Send the frame twice.
    Replay,
    /// Change the kind byte to an unknown kind.
    UnknownKind,
}

/// The proxy. Dropping it stops accepting; open connections end with their peers.
pub struct FaultProxy {
    pub addr: SocketAddr,
    pending: Arc<Mutex<Option<Fault>>>,
    injected: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    /// Listen on a free loopback port, forwarding to `target`.
    pub fn start(target: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let pending = Arc::new(Mutex::new(None));
        let injected = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, i, st) = (pending.clone(), injected.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        let Ok(server) = TcpStream::connect(target) else {
                            let _ = client.shutdown(Shutdown::Both);
                            continue;
                        };
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        let (c2, s2) = (
                            client.try_clone().expect("clone"),
                            server.try_clone().expect("clone"),
                        );
                        std::thread::spawn(move || back(s2, c2));
                        let (p, i) = (p.clone(), i.clone());
                        std::thread::spawn(move || forward(client, server, p, i));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultProxy {
            addr,
            pending,
            injected,
            stop,
        }
    }

    /// Inject `f` into the next `Pages` frame.
    pub fn inject(&self, f: Fault) {
        *self.pending.lock().expect("lock") = Some(f);
    }

    /// Faults injected so far.
    pub fn injected(&self) -> usize {
        self.injected.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// standby → primary: bytes as they come.
fn back(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16384];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// primary → standby, frame by frame, with the pending fault applied to the next Pages frame.
fn forward(
    mut from: TcpStream,
    mut to: TcpStream,
    pending: Arc<Mutex<Option<Fault>>>,
    injected: Arc<AtomicUsize>,
) {
    let mut head = [0u8; HEADER_LEN];
    loop {
        if from.read_exact(&mut head).is_err() {
            break;
        }
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        if len > 4 << 20 {
            break;
        }
        let mut frame = head.to_vec();
        frame.resize(HEADER_LEN + len, 0);
        if from.read_exact(&mut frame[HEADER_LEN..]).is_err() {
            break;
        }
        let fault = if head[field::KIND] == 3 && len > 0 {
            pending.lock().expect("lock").take()
        } else {
            None
        };
        let ok = match fault {
            None => to.write_all(&frame).is_ok(),
            Some(f) => {
                injected.fetch_add(1, Ordering::Relaxed);
                let mid = HEADER_LEN + len / 2;
                match f {
                    Fault::Corrupt => {
                        frame[mid] ^= 0x01;
                        to.write_all(&frame).is_ok()
                    }
                    Fault::Forge => {
                        frame[mid] ^= 0x01;
                        let mut h = crc32fast::Hasher::new();
                        h.update(&frame[..field::CRC.start]);
                        h.update(&frame[HEADER_LEN..]);
                        frame[field::CRC].copy_from_slice(&h.finalize().to_le_bytes());
                        to.write_all(&frame).is_ok()
                    }
                    Fault::Truncate => {
                        let _ = to.write_all(&frame[..mid]);
                        false
                    }
                    Fault::Oversized => {
                        frame[4..8].copy_from_slice(&(2u32 << 20).to_le_bytes());
                        to.write_all(&frame[..HEADER_LEN]).is_ok()
                    }
                    Fault::Replay => to.write_all(&frame).is_ok() && to.write_all(&frame).is_ok(),
                    Fault::UnknownKind => {
                        frame[field::KIND] = 99;
                        to.write_all(&frame).is_ok()
                    }
                }
            }
        };
        if !ok {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
