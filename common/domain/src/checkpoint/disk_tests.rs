//! Checkpoints of a domain with a disk: the resynchronisation stream, `Disk` frames,
//! and what torn or corrupt disk frames leave.

use super::*;
use crate::disk::{Disk, DiskConfig, Report};
use crate::model::{ModelDomain, MIN_PAGES};
use hsb_common::decision::Epoch;
use hsb_common::key::ClusterKey;
use hsb_common::rng::SplitMix64;
use hsb_common::session::Side;
use hsb_common::time::Nanos;

fn sessions() -> (Session, Session) {
    let k = ClusterKey::from_bytes([3; 32]);
    (
        Session::new(&k, &[1; 16], &[2; 16], Side::Initiator),
        Session::new(&k, &[1; 16], &[2; 16], Side::Responder),
    )
}

/// A model domain with a disk beside it (the disk module's own test double).
struct WithDisk {
    d: ModelDomain,
    disk: Disk,
}

impl CheckpointSource for WithDisk {
    fn pages(&self) -> u64 {
        self.d.page_count()
    }
    fn suspend(&mut self) -> Result<(), DomainError> {
        self.d.suspend()
    }
    fn resume(&mut self) -> Result<(), DomainError> {
        self.d.resume()
    }
    fn take_dirty(&mut self, full: bool, out: &mut Vec<u64>) -> Result<(), DomainError> {
        self.d.take_dirty(full, out)
    }
    fn read_pages(&mut self, pfns: &[u64], dst: &mut [u8]) -> Result<(), DomainError> {
        self.d.read_pages(pfns, dst)
    }
    fn save_state(&mut self, dst: &mut [u8]) -> Result<usize, DomainError> {
        self.d.save_state(dst)
    }
    fn disk(&mut self) -> Option<&mut Disk> {
        Some(&mut self.disk)
    }
}

impl Replica for WithDisk {
    fn pages(&self) -> u64 {
        self.d.page_count()
    }
    fn write_pages(&mut self, pfns: &[u64], data: &[u8]) -> Result<(), DomainError> {
        self.d.write_pages(pfns, data)
    }
    fn read_back(&mut self, pfns: &[u64], dst: &mut [u8]) -> Result<(), DomainError> {
        Replica::read_back(&mut self.d, pfns, dst)
    }
    fn load_state(&mut self, state: &[u8]) -> Result<(), DomainError> {
        self.d.load_state(state)
    }
    fn disk(&mut self) -> Option<&mut Disk> {
        Some(&mut self.disk)
    }
}

const DISK: u64 = 16 << 20;
const JOURNAL: usize = 4 << 20;

struct Rig {
    dir: std::path::PathBuf,
    p: WithDisk,
    r: WithDisk,
    st: Staging,
    rx: Receiver,
    tx: Session,
    rxs: Session,
    rs: ResyncSender,
    rng: SplitMix64,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rig(tag: &str) -> Rig {
    let dir = std::env::temp_dir().join(format!("hsb-ckpt-disk-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = |n: &str| DiskConfig {
        path: dir.join(n),
        size: DISK,
        journal_max: JOURNAL,
    };
    let pages = MIN_PAGES + 100;
    let mut pd = Disk::open(&cfg("p.img")).unwrap();
    pd.start_primary(1).unwrap();
    let (tx, rxs) = sessions();
    Rig {
        p: WithDisk {
            d: ModelDomain::new(pages, 2000, 4),
            disk: pd,
        },
        r: WithDisk {
            d: ModelDomain::blank(pages),
            disk: Disk::open(&cfg("r.img")).unwrap(),
        },
        st: Staging::with_disk(pages, JOURNAL),
        rx: Receiver::new(pages).with_disk(DISK, JOURNAL),
        tx,
        rxs,
        rs: ResyncSender::new(1 << 20),
        rng: SplitMix64::new(11),
        dir,
    }
}

impl Rig {
    /// The guest runs an epoch: memory and disk writes.
    fn run(&mut self, t: u64, writes: usize) {
        self.p.d.run(Nanos::from_millis(t));
        self.p.d.handle("INCR");
        for _ in 0..writes {
            let off = self.rng.below(DISK / 4096 - 4) * 4096 + self.rng.below(4096);
            let mut b = vec![0u8; 1 + self.rng.below(3 * 4096) as usize];
            self.rng.fill(&mut b);
            self.p.disk.write(off, &b, false).unwrap();
        }
    }

    /// A session: the standby's report, the primary's plan, the copies while the guest
    /// runs, then the full synchronisation `ckpt`; the bytes on the wire.
    fn full(&mut self, ckpt: u64, report: &Report) -> Vec<u8> {
        let plan = self.p.disk.plan(report, ckpt);
        let mut out = vec![0u8; 1024];
        let n = self.tx.write(Kind::DiskPlan, &plan, &mut out).unwrap();
        out.truncate(n);
        loop {
            let n = self.rs.fill(&mut self.p.disk, &mut self.tx).unwrap();
            out.extend_from_slice(self.rs.bytes());
            if n == 0 && self.p.disk.resync_ready() {
                break;
            }
            self.run(ckpt * 100 + out.len() as u64 % 97, 2);
        }
        self.capture(ckpt, true);
        out.extend_from_slice(self.st.bytes());
        out
    }

    fn capture(&mut self, ckpt: u64, full: bool) {
        self.p.suspend().unwrap();
        self.st.capture(&mut self.p, ckpt, 1, full).unwrap();
        self.p.resume().unwrap();
        self.st.put_disk(&mut self.p).unwrap();
        self.st.seal(&mut self.tx).unwrap();
        self.p.disk.set_open(ckpt + 1);
    }

    fn incremental(&mut self, ckpt: u64) -> Vec<u8> {
        self.capture(ckpt, false);
        self.st.bytes().to_vec()
    }

    /// Feed frames to the standby; the checkpoints applied, or the first error.
    fn feed(&mut self, bytes: &[u8]) -> Result<Vec<u64>, CheckpointError> {
        let mut pos = 0;
        let mut done = vec![];
        while pos < bytes.len() {
            let h = Header::parse(&bytes[pos..], frame::MAX_BODY_LEN)?;
            let end = pos + h.frame_len();
            if end > bytes.len() {
                return Err(FrameError::Truncated {
                    have: bytes.len() - pos,
                    need: h.frame_len(),
                }
                .into());
            }
            let hash = self.rxs.open(&bytes[pos..end])?;
            let body = &bytes[pos + HEADER_LEN..end];
            if self
                .rx
                .on_frame_to(h.kind, body, &hash, &mut self.r)?
                .is_some()
            {
                done.push(self.rx.apply(&mut self.r)?);
            }
            pos = end;
        }
        Ok(done)
    }

    /// A new session (after a refused frame the old one is gone).
    fn reconnect(&mut self) {
        let (tx, rxs) = sessions();
        self.tx = tx;
        self.rxs = rxs;
        self.rx.new_session();
        self.r.disk.abort_resync();
    }

    fn same(&self) -> bool {
        self.r.d.digest() == self.p.d.digest()
            && self.r.disk.digest().unwrap() == self.p.disk.digest().unwrap()
    }

    fn replica_digests(&self) -> (u32, u32) {
        (self.r.d.digest(), self.r.disk.digest().unwrap())
    }

    /// Seal a frame again with the primary's key at its own sequence number.
    fn reseal(&mut self, f: &mut [u8], h: &crc32fast::Hasher) {
        let k = ClusterKey::from_bytes([3; 32]);
        let mut s = Session::new(&k, &[1; 16], &[2; 16], Side::Initiator);
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&f[8..16]);
        for _ in 0..u64::from_le_bytes(seq) {
            s.seal_with(&mut [0u8; HEADER_LEN][..], &frame::body_crc(&[]));
        }
        s.seal_with(f, h);
    }
}

#[test]
fn disk_writes_travel_with_their_checkpoints_and_memory_and_disk_agree_at_each() {
    let mut g = rig("travel");
    g.run(1, 30);
    let rep = g.r.disk.report();
    let b = g.full(1, &rep);
    assert_eq!(g.feed(&b).unwrap(), vec![1]);
    assert!(g.same(), "after the full synchronisation");
    for n in 2..12u64 {
        g.run(n * 25, (n as usize % 4) * 7);
        // The same bytes written twice in one epoch: the later write wins, as at the
        // primary.
        g.p.disk.write(4096 * 9, &[n as u8; 100], false).unwrap();
        g.p.disk.write(4096 * 9 + 50, &[0xee; 100], false).unwrap();
        let b = g.incremental(n);
        assert!(g.st.disk_staged().0 >= 2);
        assert_eq!(g.feed(&b).unwrap(), vec![n]);
        assert!(g.same(), "checkpoint {n}");
    }
    assert_eq!(g.r.disk.applied(), Some(11));
}

/// A rig whose replica is at checkpoint 1, and checkpoint 2's stream (with disk writes),
/// not yet fed; the replica's memory and disk digests at 1; where checkpoint 2's Disk
/// frames are.
/// Memory and disk digests of a replica.
type Digests = (u32, u32);

fn at_one(tag: &str) -> (Rig, Vec<u8>, Digests, Vec<(usize, usize)>) {
    let mut g = rig(tag);
    g.run(1, 10);
    let rep = g.r.disk.report();
    let b = g.full(1, &rep);
    g.feed(&b).unwrap();
    let at_1 = g.replica_digests();
    g.run(30, 20);
    let b2 = g.incremental(2);
    let mut pos = 0;
    let mut disk_frames = vec![];
    while pos < b2.len() {
        let h = Header::parse(&b2[pos..], frame::MAX_BODY_LEN).unwrap();
        if h.kind == Kind::Disk {
            disk_frames.push((pos, h.frame_len()));
        }
        pos += h.frame_len();
    }
    assert!(disk_frames.len() >= 5);
    (g, b2, at_1, disk_frames)
}

#[test]
fn torn_or_corrupt_disk_frames_leave_memory_and_disk_at_the_previous_checkpoint() {
    let (_, b2, _, frames) = at_one("layout");
    let (fpos, flen) = frames[frames.len() / 2];
    // Torn before, inside and after a Disk frame, and just before the end.
    for cut in [fpos, fpos + flen / 2, fpos + flen, b2.len() - 1] {
        let (mut g, b2, at_1, _) = at_one(&format!("cut{cut}"));
        assert!(g.feed(&b2[..cut]).map_or(true, |d| d.is_empty()));
        assert_eq!(g.replica_digests(), at_1, "cut at {cut}");
        assert_eq!((g.rx.applied(), g.r.disk.applied()), (Some(1), Some(1)));
    }
    // One byte of a Disk frame's data corrupted: its CRC fails, the checkpoint goes.
    let (mut g, mut bad, at_1, frames) = at_one("corrupt");
    let (fpos, flen) = frames[1];
    bad[fpos + flen - 3] ^= 0x20;
    assert!(matches!(
        g.feed(&bad),
        Err(CheckpointError::Frame(FrameError::BadCrc { .. }))
    ));
    assert_eq!(g.replica_digests(), at_1);
    assert_eq!((g.rx.applied(), g.r.disk.applied()), (Some(1), Some(1)));
    // Disk frames moved out of order (still each authentic, resealed in the new order):
    // the end record's CRC no longer matches; nothing applied.
    let (mut g, b2, at_1, frames) = at_one("reorder");
    let mut frames_in: Vec<Vec<u8>> = vec![];
    let mut pos = 0;
    while pos < b2.len() {
        let h = Header::parse(&b2[pos..], frame::MAX_BODY_LEN).unwrap();
        frames_in.push(b2[pos..pos + h.frame_len()].to_vec());
        pos += h.frame_len();
    }
    let first = frames_in
        .iter()
        .position(|f| f[3] == Kind::Disk as u8)
        .unwrap();
    frames_in.swap(first, first + 1);
    assert!(frames_in.len() > frames.len() + 2);
    // Reseal in the receiving session's sequence (as a primary that sent them so would).
    let mut out = vec![];
    let seq0 = g.tx.tx_seq() - frames_in.len() as u64;
    for (k, mut f) in frames_in.into_iter().enumerate() {
        f[8..16].copy_from_slice(&(seq0 + k as u64).to_le_bytes());
        let h = frame::body_crc(&f[HEADER_LEN..]);
        g.reseal(&mut f, &h);
        out.extend_from_slice(&f);
    }
    let e = g.feed(&out).unwrap_err();
    assert!(e.to_string().contains("CRC does not match"), "{e}");
    assert_eq!(g.replica_digests(), at_1);
}

#[test]
fn a_replica_whose_image_fails_is_never_acknowledged_and_not_activatable() {
    let (mut g, b2, at_1, _) = at_one("fail");
    // The replica's image turns read-only: every write to it fails.
    g.r.disk.make_read_only_for_test().unwrap();
    let e = g.feed(&b2).unwrap_err();
    assert!(matches!(e, CheckpointError::Disk(_)), "{e}");
    assert_eq!(g.rx.applied(), None, "no ack, and nothing to activate");
    assert_eq!(g.r.d.digest(), at_1.0, "memory stays at checkpoint 1");
    assert!(g.r.disk.stats().errors >= 1);
}

#[test]
fn disk_frames_out_of_place_are_refused() {
    let (mut g, b2, _, _) = at_one("refuse");
    g.feed(&b2).unwrap();
    let mut buf = vec![0u8; 4096];
    // A disk write outside a checkpoint.
    let w = DiskWrite {
        ckpt: 3,
        offset: 0,
        data: &[1, 2, 3],
    };
    let n = g.tx.write(Kind::Disk, &w, &mut buf).unwrap();
    let e = g.feed(&buf[..n]).unwrap_err();
    assert!(e.to_string().contains("outside a checkpoint"), "{e}");
    // A copy without a plan.
    g.reconnect();
    let n = g.tx.write(Kind::DiskSync, &w, &mut buf).unwrap();
    let e = g.feed(&buf[..n]).unwrap_err();
    assert!(e.to_string().contains("without a disk plan"), "{e}");
    // A full synchronisation without its plan.
    g.reconnect();
    g.run(60, 3);
    g.p.disk.stop_journal();
    g.p.suspend().unwrap();
    g.st.capture(&mut g.p, 3, 1, true).unwrap();
    g.p.resume().unwrap();
    assert!(
        g.st.put_disk(&mut g.p).is_err(),
        "no resynchronisation planned"
    );
    g.st.disk_due = false;
    g.st.seal(&mut g.tx).unwrap();
    let b = g.st.bytes().to_vec();
    let e = g.feed(&b).unwrap_err();
    assert!(e.to_string().contains("without its disk plan"), "{e}");
    // A disk write beyond the image, inside a checkpoint.
    g.reconnect();
    let rep = g.r.disk.report();
    let b = g.full(4, &rep);
    g.feed(&b).unwrap();
    assert!(g.same());
    let n1 =
        g.tx.write(
            Kind::Begin,
            &Begin {
                ckpt: 5,
                full: false,
                pages: 0,
                epoch: Epoch(1),
            },
            &mut buf,
        )
        .unwrap();
    let w = DiskWrite {
        ckpt: 5,
        offset: DISK - 1,
        data: &[1, 2],
    };
    let n2 = g.tx.write(Kind::Disk, &w, &mut buf[n1..]).unwrap();
    let e = g.feed(&buf[..n1 + n2]).unwrap_err();
    assert!(e.to_string().contains("beyond the image"), "{e}");
    assert!(g.same(), "nothing applied");
}
