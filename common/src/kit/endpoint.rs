//! The sealed-datagram endpoint of a daemon: its identity (sender, incarnation, epoch), the
//! receiver's replay state, and sending and receiving on the daemon's UDP sockets with errors
//! counted and their log lines rate-limited. One for the three daemons.

use std::io;
use std::net::SocketAddr;

use mio::net::UdpSocket;

use crate::datagram::{log_rejected, Dest, Envelope, Inbox, Outbox, Sender, MAX_DATAGRAM};
use crate::key::ClusterKey;
use crate::msg::Role;
use crate::wire::{self, Dgram};

/// What one receive gave.
#[derive(Debug)]
pub enum Received {
    /// A datagram that passed every check.
    Datagram {
        /// Where it came from.
        from: SocketAddr,
        /// Its envelope (sender, incarnation, epoch, destination).
        env: Envelope,
        /// The message.
        msg: Dgram,
    },
    /// Dropped (counted and logged, rate-limited): read on.
    Rejected,
    /// Nothing more to read now.
    Empty,
}

/// Bind the UDP socket `what` (named in the error) at `addr` and register it for reading.
pub fn bind(
    what: &str,
    addr: SocketAddr,
    registry: &mio::Registry,
    token: mio::Token,
) -> io::Result<UdpSocket> {
    let mut udp = UdpSocket::bind(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("{what} {addr}: {e}")))?;
    registry.register(&mut udp, token, mio::Interest::READABLE)?;
    Ok(udp)
}

/// A daemon's datagram endpoint.
pub struct Endpoint {
    inbox: Inbox,
    outbox: Outbox,
    /// Datagrams dropped: forged, corrupt, replayed, misaddressed.
    pub rejected: u64,
    /// Datagrams that could not be sent (encoding, socket errors).
    pub send_errors: u64,
}

impl Endpoint {
    /// The endpoint of `me` (its incarnation: see [`crate::datagram::next_incarnation`]),
    /// speaking in `epoch`.
    pub fn new(key: &ClusterKey, me: Sender, incarnation: u64, epoch: u64) -> Endpoint {
        Endpoint {
            inbox: Inbox::new(key, me),
            outbox: Outbox::new(key, me, incarnation, epoch),
            rejected: 0,
            send_errors: 0,
        }
    }

    /// This node had role `role` before this process (a promoted standby, a primary that
    /// rejoined as standby): datagrams still on their way to that role are dropped quietly.
    pub fn with_former_role(mut self, role: Role) -> Endpoint {
        self.inbox.set_former(role);
        self
    }

    /// Who this endpoint is.
    pub fn me(&self) -> Sender {
        self.outbox.sender()
    }

    /// The epoch carried from now on.
    pub fn set_epoch(&mut self, epoch: u64) {
        self.outbox.set_epoch(epoch);
    }

    /// Speak and listen in another role from now on (an activated standby is the primary).
    pub fn set_role(&mut self, role: Role) {
        self.outbox.set_role(role);
        self.inbox.set_role(role);
    }

    /// Seal `m` for `dest` (only a ping may go unaddressed) and send it to `to` on `sock`.
    pub fn send(&mut self, sock: &UdpSocket, m: &Dgram, to: SocketAddr, dest: Option<Dest>) {
        let mut buf = [0u8; MAX_DATAGRAM];
        match wire::seal(&mut self.outbox, m, dest, &mut buf) {
            Ok(n) => {
                if let Err(e) = sock.send_to(&buf[..n], to) {
                    self.send_errors += 1;
                    if e.kind() != io::ErrorKind::WouldBlock {
                        log::debug!("send {} to {to}: {e}", m.name());
                    }
                }
            }
            Err(e) => {
                self.send_errors += 1;
                log::error!("cannot seal {}: {e}", m.name());
            }
        }
    }

    /// Receive one datagram from `sock`.
    pub fn recv(&mut self, sock: &UdpSocket) -> Received {
        let mut buf = [0u8; MAX_DATAGRAM];
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(v) => v,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Received::Empty,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Received::Rejected,
            Err(e) => {
                // ICMP errors surface here (a peer's port closed): nothing to read now.
                log::debug!("recv: {e}");
                return Received::Empty;
            }
        };
        match wire::open(&mut self.inbox, &buf[..n]) {
            Ok((env, msg)) => Received::Datagram { from, env, msg },
            Err(e) => {
                self.rejected += 1;
                log_rejected(self.rejected, from, &e);
                Received::Rejected
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_endpoints_talk_and_a_third_key_is_refused() {
        let key = ClusterKey::from_bytes([3; 32]);
        let a_id = Sender {
            role: Role::Primary,
            id: 1,
        };
        let b_id = Sender {
            role: Role::Standby,
            id: 2,
        };
        let mut a = Endpoint::new(&key, a_id, 10, 1);
        let mut b = Endpoint::new(&key, b_id, 20, 1);
        let sa = UdpSocket::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let sb = UdpSocket::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let to_b = sb.local_addr().expect("addr");
        a.send(
            &sa,
            &Dgram::Heartbeat { link: 0, acked: 5 },
            to_b,
            Some(Dest::node(b_id)),
        );
        let got = (0..200)
            .find_map(|_| match b.recv(&sb) {
                Received::Datagram { env, msg, .. } => Some((env, msg)),
                _ => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    None
                }
            })
            .expect("received");
        assert_eq!(got.0.from, a_id);
        assert_eq!(got.1, Dgram::Heartbeat { link: 0, acked: 5 });
        let mut c = Endpoint::new(&ClusterKey::from_bytes([4; 32]), a_id, 11, 1);
        c.send(
            &sa,
            &Dgram::Heartbeat { link: 0, acked: 6 },
            to_b,
            Some(Dest::node(b_id)),
        );
        let rejected = (0..200).any(|_| match b.recv(&sb) {
            Received::Rejected => true,
            _ => {
                std::thread::sleep(std::time::Duration::from_millis(5));
                false
            }
        });
        assert!(rejected);
        assert_eq!(b.rejected, 1);
        assert!(matches!(b.recv(&sb), Received::Empty));
    }
}
