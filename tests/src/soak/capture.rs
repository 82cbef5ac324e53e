//! Captured datagrams, replayed later: what an attacker on the networks could do.
//!
//! A sniffer runs in each host's namespace (`hsb-soak sniff`, started with `ip netns exec`): a
//! raw IPv4 socket that receives a copy of every UDP datagram delivered to that host, of which it
//! prints the hsb ones (heartbeats to port 7200, datagrams to the daemons' witness sockets on
//! 7300 and to the witnesses on 7400) as hex lines, at most a few a second per flow. The soak
//! keeps, per flow, the first datagrams it ever saw (earlier incarnations of restarted daemons
//! and witnesses) and the latest ones, and replays a mix of them, byte for byte: the whole IPv4
//! packet through a raw socket in the root namespace, so it arrives with its original source
//! address and port, MAC, sequence number and incarnation.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};

use hsb_common::rng::SplitMix64;

use crate::netns::{Host, Topology};

/// Destination ports whose datagrams are captured: heartbeats, the daemons' witness sockets,
/// the witnesses.
pub const PORTS: [u16; 3] = [7200, 7300, 7400];
/// Datagrams a sniffer passes on per flow and second at most.
const PER_FLOW_PER_SECOND: u32 = 4;
/// The first datagrams of a flow kept for good, and the latest ones.
const FIRST_KEPT: usize = 4;
const LATEST_KEPT: usize = 8;
/// Flows kept at most (the rest are ignored).
const MAX_FLOWS: usize = 512;
/// The longest packet kept.
const MAX_PACKET: usize = 1500;

/// `hsb-soak sniff`: print captured hsb datagrams (whole IPv4 packets) as hex lines on stdout
/// until stdout closes. Runs inside a host's namespace.
pub fn sniff_main() -> Result<(), String> {
    use rustix::net::{ipproto, recv, socket, AddressFamily, RecvFlags, SocketType};
    let fd = socket(AddressFamily::INET, SocketType::RAW, Some(ipproto::UDP))
        .map_err(|e| format!("raw socket: {e} (needs root)"))?;
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 65536];
    let mut rate: HashMap<(u32, u16, u32, u16), (u64, u32)> = HashMap::new();
    let start = std::time::Instant::now();
    loop {
        let (_, n) =
            recv(&fd, &mut buf[..], RecvFlags::empty()).map_err(|e| format!("raw socket: {e}"))?;
        let Some(p) = buf.get(..n) else { continue };
        let Some(flow) = udp_flow(p) else { continue };
        if !PORTS.contains(&flow.3) || p.len() > MAX_PACKET {
            continue;
        }
        let second = start.elapsed().as_secs();
        if rate.len() > 4 * MAX_FLOWS {
            rate.clear();
        }
        let r = rate.entry(flow).or_insert((second, 0));
        if r.0 != second {
            *r = (second, 0);
        }
        r.1 += 1;
        if r.1 > PER_FLOW_PER_SECOND {
            continue;
        }
        let mut line = hex(p);
        line.push('\n');
        if out
            .write_all(line.as_bytes())
            .and_then(|_| out.flush())
            .is_err()
        {
            return Ok(());
        }
    }
}

/// (source address, source port, destination address, destination port) of an IPv4 UDP packet.
pub fn udp_flow(p: &[u8]) -> Option<(u32, u16, u32, u16)> {
    let first = *p.first()?;
    if first >> 4 != 4 || *p.get(9)? != 17 {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    let be32 = |i: usize| Some(u32::from_be_bytes(p.get(i..i + 4)?.try_into().ok()?));
    let be16 = |i: usize| Some(u16::from_be_bytes(p.get(i..i + 2)?.try_into().ok()?));
    Some((be32(12)?, be16(ihl)?, be32(16)?, be16(ihl + 2)?))
}

/// Set the UDP checksum of an IPv4 packet. A datagram captured as it arrived over a veth may
/// carry only the partial sum its sender's stack left for checksum offload; sent again as it
/// is, the receiving stack would drop it as corrupt before any hsb code saw it.
pub fn fix_udp_checksum(p: &mut [u8]) -> Option<()> {
    let ihl = usize::from(*p.first()? & 0x0f) * 4;
    let udp_len = usize::from(u16::from_be_bytes(
        p.get(ihl + 4..ihl + 6)?.try_into().ok()?,
    ));
    if udp_len < 8 || p.len() < ihl + udp_len {
        return None;
    }
    p[ihl + 6] = 0;
    p[ihl + 7] = 0;
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            let hi = u32::from(c[0]) << 8;
            sum += hi | c.get(1).map_or(0, |x| u32::from(*x));
        }
    };
    add(p.get(12..20)?);
    add(&[0, 17]);
    add(&(udp_len as u16).to_be_bytes());
    add(p.get(ihl..ihl + udp_len)?);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let c = match !(sum as u16) {
        0 => 0xffff,
        c => c,
    };
    p[ihl + 6..ihl + 8].copy_from_slice(&c.to_be_bytes());
    Some(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// What has been captured, per flow.
#[derive(Default)]
struct Pool {
    flows: HashMap<(u32, u16, u32, u16), Flow>,
    captured: u64,
}

#[derive(Default)]
struct Flow {
    first: Vec<Vec<u8>>,
    latest: VecDeque<Vec<u8>>,
}

impl Pool {
    fn add(&mut self, p: Vec<u8>) {
        let Some(key) = udp_flow(&p) else { return };
        if !self.flows.contains_key(&key) && self.flows.len() >= MAX_FLOWS {
            return;
        }
        self.captured += 1;
        let f = self.flows.entry(key).or_default();
        if f.first.len() < FIRST_KEPT {
            f.first.push(p);
            return;
        }
        if f.latest.len() >= LATEST_KEPT {
            f.latest.pop_front();
        }
        f.latest.push_back(p);
    }
}

/// Sniffers in some hosts' namespaces and the datagrams they captured.
pub struct Capture {
    children: Vec<Child>,
    pool: Arc<Mutex<Pool>>,
}

impl Capture {
    /// Start a sniffer (`sniffer` is the `hsb-soak` binary) in each of `hosts`.
    pub fn start(topo: &Topology, hosts: &[Host], sniffer: &std::path::Path) -> Capture {
        let pool = Arc::new(Mutex::new(Pool::default()));
        let mut children = vec![];
        for h in hosts {
            let child = topo
                .command(*h, sniffer)
                .arg("sniff")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn();
            let Ok(mut child) = child else { continue };
            if let Some(out) = child.stdout.take() {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(out).lines() {
                        let Ok(line) = line else { break };
                        if let (Some(p), Ok(mut pool)) = (unhex(&line), pool.lock()) {
                            pool.add(p);
                        }
                    }
                });
            }
            children.push(child);
        }
        Capture { children, pool }
    }

    /// Datagrams captured so far, and flows.
    pub fn counts(&self) -> (u64, usize) {
        self.pool
            .lock()
            .map(|p| (p.captured, p.flows.len()))
            .unwrap_or_default()
    }

    /// Up to `n` captured packets: each from a random flow, half of them among the first ever
    /// seen on it (older incarnations), half among the latest.
    pub fn pick(&self, rng: &mut SplitMix64, n: usize) -> Vec<Vec<u8>> {
        let Ok(pool) = self.pool.lock() else {
            return vec![];
        };
        let mut keys: Vec<_> = pool.flows.keys().copied().collect();
        keys.sort_unstable();
        if keys.is_empty() {
            return vec![];
        }
        let mut out = vec![];
        for _ in 0..n {
            let f = &pool.flows[&keys[rng.below(keys.len() as u64) as usize]];
            let from: Vec<&Vec<u8>> = if rng.below(2) == 0 || f.latest.is_empty() {
                f.first.iter().collect()
            } else {
                f.latest.iter().collect()
            };
            if !from.is_empty() {
                out.push(from[rng.below(from.len() as u64) as usize].clone());
            }
        }
        out
    }

    /// Send `packets` again, byte for byte, from the root namespace (a raw socket writes the
    /// captured IPv4 header: original source address and port). Returns how many went out.
    pub fn replay(packets: &[Vec<u8>]) -> Result<usize, String> {
        use rustix::net::{ipproto, sendto, socket, AddressFamily, SendFlags, SocketType};
        let fd = socket(AddressFamily::INET, SocketType::RAW, Some(ipproto::RAW))
            .map_err(|e| format!("raw socket: {e}"))?;
        let mut sent = 0;
        for p in packets {
            let Some((_, _, dst, _)) = udp_flow(p) else {
                continue;
            };
            let mut p = p.clone();
            if fix_udp_checksum(&mut p).is_none() {
                continue;
            }
            let to = SocketAddrV4::new(Ipv4Addr::from(dst), 0);
            if sendto(&fd, &p, SendFlags::empty(), &to).is_ok() {
                sent += 1;
            }
        }
        Ok(sent)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows_and_hex_round_trip() {
        // IPv4, IHL 5, UDP, 10.77.1.11:40000 -> 10.77.1.2:7300.
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[9] = 17;
        p[12..16].copy_from_slice(&[10, 77, 1, 11]);
        p[16..20].copy_from_slice(&[10, 77, 1, 2]);
        p[20..22].copy_from_slice(&40000u16.to_be_bytes());
        p[22..24].copy_from_slice(&7300u16.to_be_bytes());
        let f = udp_flow(&p).expect("udp");
        assert_eq!(Ipv4Addr::from(f.0), Ipv4Addr::new(10, 77, 1, 11));
        assert_eq!((f.1, f.3), (40000, 7300));
        assert_eq!(unhex(&hex(&p)).as_deref(), Some(&p[..]));
        assert!(udp_flow(&p[..21]).is_none(), "truncated");
        p[9] = 6;
        assert!(udp_flow(&p).is_none(), "not UDP");
        p[9] = 17;
        // UDP length 8 (no data), checksum as a sender with offload might leave it.
        p[24..26].copy_from_slice(&8u16.to_be_bytes());
        p[26..28].copy_from_slice(&[0x12, 0x34]);
        fix_udp_checksum(&mut p).expect("checksum");
        // 10.77.1.11 + 10.77.1.2 + 17 + 8 (pseudo header) + 40000 + 7300 + 8: folded, inverted.
        let words: u32 = [0x0a4d, 0x010b, 0x0a4d, 0x0102, 17, 8, 40000, 7300, 8]
            .iter()
            .sum();
        let folded = (words & 0xffff) + (words >> 16);
        assert_eq!(u16::from_be_bytes([p[26], p[27]]), !(folded as u16));
        let mut pool = Pool::default();
        for i in 0..20u8 {
            let mut q = p.clone();
            q.push(i);
            pool.add(q);
        }
        let flow = &pool.flows[&f];
        assert_eq!(
            (flow.first.len(), flow.latest.len()),
            (FIRST_KEPT, LATEST_KEPT)
        );
        assert_eq!(flow.first[0].last(), Some(&0));
        assert_eq!(flow.latest.back().and_then(|q| q.last()), Some(&19));
    }
}
