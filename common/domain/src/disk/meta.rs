//! The metadata file beside an image (`IMAGE.meta`): which lineage the image belongs to, the
//! checkpoint it holds, whether it was being written when it stopped, and (a primary) the
//! activity log of extents it may have written since.
//!
//! ```text
//!  0         8192       16384
//!  +---------+----------+--------------------------------------------+
//!  | slot 0  |  slot 1  | table: magic, seq, horizon, n, CRC, n × u64 |
//!  +---------+----------+--------------------------------------------+
//! ```
//! A record goes to slot `seq % 2` with a sequence number and a CRC, then `fdatasync`: a torn
//! write spoils only the slot being written, and the other (older) one is read instead. The
//! table (the last checkpoint that wrote each track) is written only at clean transitions (a
//! hand-over, a step-down, a stop), tagged with the sequence number of the record written right
//! after it: it is believed only while that record is the newest, since any later record means
//! the disk moved on without it.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use hsb_common::msg::{DiskGen, Fork, DISK_HISTORY};

use super::image::io_err;
use super::DiskError;

/// Bytes of one record slot.
pub const SLOT: u64 = 8192;
/// Where the table starts.
pub const TABLE_OFF: u64 = 2 * SLOT;
const SLOT_MAGIC: &[u8; 8] = b"HSBDSK03";
const TABLE_MAGIC: &[u8; 8] = b"HSBTBL02";
const HEAD: usize = 24;

/// The lineage of a disk created by hsb and never written: all zeros at checkpoint 0.
pub const BLANK: DiskGen = [0; 16];

/// What the disk is to its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A replica: written only by applied checkpoints and resynchronisations.
    Replica,
    /// The primary's disk: written by its guest; the activity log covers its writes.
    Primary,
}

/// Whether the image holds exactly its base checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Exactly `base` (a primary: except for the activity log's extents).
    Clean,
    /// Checkpoints after `base` were being applied: some of their writes may be there.
    Applying,
    /// A resynchronisation was writing into the image: it is at `base` plus some of the
    /// primary's tracks, not a checkpoint at all.
    Resyncing,
}

/// The metadata record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Image size.
    pub size: u64,
    /// Lineage.
    pub gen: DiskGen,
    /// The lineage's forks, newest first.
    pub history: Vec<Fork>,
    /// The checkpoint of `gen` the image holds (see [`State`]).
    pub base: u64,
    /// See [`State`].
    pub state: State,
    /// Not `Clean`: the lineage whose writes may be there beyond `base` ([`BLANK`]: unknown).
    pub toward: DiskGen,
    /// See [`Role`].
    pub role: Role,
    /// Activity log: extents written (or about to be) since `base` (words of a bitmap).
    pub al: Vec<u64>,
}

impl Meta {
    /// A fresh image: all zeros, lineage [`BLANK`] at checkpoint 0.
    pub fn blank(size: u64) -> Meta {
        Meta {
            size,
            gen: BLANK,
            history: Vec::new(),
            base: 0,
            state: State::Clean,
            toward: BLANK,
            role: Role::Replica,
            al: Vec::new(),
        }
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), DiskError> {
        out.extend_from_slice(&self.size.to_le_bytes());
        out.push(match self.role {
            Role::Replica => 0,
            Role::Primary => 1,
        });
        out.push(match self.state {
            State::Clean => 0,
            State::Applying => 1,
            State::Resyncing => 2,
        });
        out.extend_from_slice(&self.base.to_le_bytes());
        out.extend_from_slice(&self.gen);
        out.extend_from_slice(&self.toward);
        let hist = &self.history[..self.history.len().min(DISK_HISTORY)];
        out.push(hist.len() as u8);
        for f in hist {
            out.extend_from_slice(&f.gen);
            out.extend_from_slice(&f.at.to_le_bytes());
        }
        out.extend_from_slice(&(self.al.len() as u32).to_le_bytes());
        for w in &self.al {
            out.extend_from_slice(&w.to_le_bytes());
        }
        if HEAD + out.len() > SLOT as usize {
            return Err(DiskError::Invalid(
                "disk metadata record too large (activity log)".into(),
            ));
        }
        Ok(())
    }

    fn decode(b: &[u8]) -> Option<Meta> {
        let mut r = Reader(b);
        let size = r.u64()?;
        let role = match r.u8()? {
            0 => Role::Replica,
            1 => Role::Primary,
            _ => return None,
        };
        let state = match r.u8()? {
            0 => State::Clean,
            1 => State::Applying,
            2 => State::Resyncing,
            _ => return None,
        };
        let base = r.u64()?;
        let gen = r.gen()?;
        let toward = r.gen()?;
        let n = r.u8()? as usize;
        if n > DISK_HISTORY {
            return None;
        }
        let mut history = Vec::with_capacity(n);
        for _ in 0..n {
            history.push(Fork {
                gen: r.gen()?,
                at: r.u64()?,
            });
        }
        let words = r.u32()? as usize;
        if words > SLOT as usize / 8 {
            return None;
        }
        let mut al = Vec::with_capacity(words);
        for _ in 0..words {
            al.push(r.u64()?);
        }
        Some(Meta {
            size,
            gen,
            history,
            base,
            state,
            toward,
            role,
            al,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Some(u32::from_le_bytes(a))
    }
    fn u64(&mut self) -> Option<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Some(u64::from_le_bytes(a))
    }
    fn gen(&mut self) -> Option<DiskGen> {
        let mut a = [0u8; 16];
        a.copy_from_slice(self.take(16)?);
        Some(a)
    }
}

/// A table read back: its horizon and a value per track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// See [`super::tracks::Tracks`].
    pub horizon: u64,
    /// Last checkpoint that wrote each track.
    pub lw: Vec<u64>,
}

/// The open metadata file.
#[derive(Debug)]
pub struct MetaFile {
    file: File,
    path: PathBuf,
    seq: u64,
}

/// What [`MetaFile::open`] found.
#[derive(Debug)]
pub struct Found {
    /// The newest valid record, if any.
    pub meta: Option<Meta>,
    /// The table, if it belongs to that record.
    pub table: Option<Table>,
}

impl MetaFile {
    /// Open (or create) the metadata file at `path`, reading its newest valid record and,
    /// if it belongs to that record, its table of `tracks` values.
    pub fn open(path: &Path, tracks: u64) -> Result<(MetaFile, Found), DiskError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| io_err("open", path, e))?;
        let mut best: Option<(u64, Meta)> = None;
        let mut buf = vec![0u8; SLOT as usize];
        for i in 0..2 {
            buf.iter_mut().for_each(|b| *b = 0);
            let n = read_some(&file, &mut buf, i * SLOT).map_err(|e| io_err("read", path, e))?;
            if let Some((seq, m)) = parse_slot(&buf[..n]) {
                if !matches!(&best, Some((s, _)) if *s >= seq) {
                    best = Some((seq, m));
                }
            }
        }
        let seq = best.as_ref().map_or(0, |(s, _)| *s);
        let table = match &best {
            Some((s, _)) => read_table(&file, *s, tracks),
            None => None,
        };
        Ok((
            MetaFile {
                file,
                path: path.to_path_buf(),
                seq,
            },
            Found {
                meta: best.map(|(_, m)| m),
                table,
            },
        ))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write `m` durably as the newest record (the table, if any, stops being believed).
    pub fn write(&mut self, m: &Meta) -> Result<(), DiskError> {
        self.put(m)?;
        self.file
            .sync_data()
            .map_err(|e| io_err("sync", &self.path, e))
    }

    /// The file, for a sync of a record [`MetaFile::put`] wrote.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Write `m` as the newest record, not yet durable: a sync of [`MetaFile::file`] makes it
    /// so. Until then, the record before it may be what survives a power loss.
    pub fn put(&mut self, m: &Meta) -> Result<(), DiskError> {
        let mut body = Vec::with_capacity(512 + m.al.len() * 8);
        m.encode(&mut body)?;
        let seq = self.seq + 1;
        let mut slot = Vec::with_capacity(HEAD + body.len());
        slot.extend_from_slice(SLOT_MAGIC);
        slot.extend_from_slice(&seq.to_le_bytes());
        slot.extend_from_slice(&(body.len() as u32).to_le_bytes());
        slot.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        slot.extend_from_slice(&body);
        self.file
            .write_all_at(&slot, (seq % 2) * SLOT)
            .map_err(|e| io_err("write", &self.path, e))?;
        self.seq = seq;
        Ok(())
    }

    /// Write the table, then `m` as the newest record: the table is believed from then on,
    /// until the next record.
    pub fn write_with_table(
        &mut self,
        m: &Meta,
        horizon: u64,
        lw: &[u64],
    ) -> Result<(), DiskError> {
        let seq = self.seq + 1;
        let mut t = Vec::with_capacity(40 + lw.len() * 8);
        t.extend_from_slice(TABLE_MAGIC);
        t.extend_from_slice(&seq.to_le_bytes());
        t.extend_from_slice(&horizon.to_le_bytes());
        t.extend_from_slice(&(lw.len() as u64).to_le_bytes());
        let crc_at = t.len();
        t.extend_from_slice(&[0u8; 8]);
        let body = t.len();
        for v in lw {
            t.extend_from_slice(&v.to_le_bytes());
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&t[..crc_at]);
        h.update(&t[body..]);
        let crc = h.finalize();
        t[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
        self.file
            .write_all_at(&t, TABLE_OFF)
            .map_err(|e| io_err("write", &self.path, e))?;
        self.file
            .sync_data()
            .map_err(|e| io_err("sync", &self.path, e))?;
        self.write(m)
    }
}

fn read_some(f: &File, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], off + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn parse_slot(b: &[u8]) -> Option<(u64, Meta)> {
    if b.len() < HEAD || &b[..8] != SLOT_MAGIC {
        return None;
    }
    let mut r = Reader(&b[8..HEAD]);
    let seq = r.u64()?;
    let len = r.u32()? as usize;
    let crc = r.u32()?;
    let body = b.get(HEAD..HEAD + len)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    Meta::decode(body).map(|m| (seq, m))
}

fn read_table(f: &File, seq: u64, tracks: u64) -> Option<Table> {
    let mut head = [0u8; 40];
    if read_some(f, &mut head, TABLE_OFF).ok()? != head.len() || &head[..8] != TABLE_MAGIC {
        return None;
    }
    let mut r = Reader(&head[8..]);
    let (tseq, horizon, n, crc) = (r.u64()?, r.u64()?, r.u64()?, r.u32()?);
    if tseq != seq || n != tracks {
        return None;
    }
    let mut body = vec![0u8; (n * 8) as usize];
    if read_some(f, &mut body, TABLE_OFF + 40).ok()? != body.len() {
        return None;
    }
    let mut h = crc32fast::Hasher::new();
    h.update(&head[..32]);
    h.update(&body);
    if h.finalize() != crc {
        return None;
    }
    let lw = body
        .chunks_exact(8)
        .map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            u64::from_le_bytes(a)
        })
        .collect();
    Some(Table { horizon, lw })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Meta {
        Meta {
            size: 1 << 26,
            gen: [9; 16],
            history: vec![
                Fork {
                    gen: [8; 16],
                    at: 40,
                },
                Fork { gen: BLANK, at: 0 },
            ],
            base: 77,
            state: State::Applying,
            toward: [7; 16],
            role: Role::Primary,
            al: vec![0b1011, 0, 1 << 63],
        }
    }

    #[test]
    fn records_alternate_slots_and_the_newest_valid_one_wins() {
        let dir = std::env::temp_dir().join(format!("hsb-meta-t-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("img.meta");
        let _ = std::fs::remove_file(&p);
        let (mut mf, found) = MetaFile::open(&p, 4).unwrap();
        assert!(found.meta.is_none() && found.table.is_none());
        let mut m = sample();
        mf.write(&m).unwrap();
        m.base = 78;
        mf.write(&m).unwrap();
        let (mut mf, found) = MetaFile::open(&p, 4).unwrap();
        assert_eq!(found.meta.as_ref(), Some(&m));
        // A torn write of the next record (slot 1 now) leaves the previous one.
        m.base = 79;
        mf.write(&m).unwrap();
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.write_all_at(&[0xff; 40], SLOT + 30).unwrap();
        let (_, found) = MetaFile::open(&p, 4).unwrap();
        assert_eq!(found.meta.map(|m| m.base), Some(78));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_table_is_believed_only_with_its_own_record() {
        let dir = std::env::temp_dir().join(format!("hsb-meta-tbl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("img.meta");
        let _ = std::fs::remove_file(&p);
        let (mut mf, _) = MetaFile::open(&p, 3).unwrap();
        let m = sample();
        mf.write_with_table(&m, 5, &[1, 0, 9]).unwrap();
        let (mut mf, found) = MetaFile::open(&p, 3).unwrap();
        assert_eq!(
            found.table,
            Some(Table {
                horizon: 5,
                lw: vec![1, 0, 9]
            })
        );
        // Another geometry: not believed.
        assert!(MetaFile::open(&p, 4).unwrap().1.table.is_none());
        // A later record: the disk moved on, the table is stale.
        mf.write(&m).unwrap();
        let (_, found) = MetaFile::open(&p, 3).unwrap();
        assert!(found.meta.is_some() && found.table.is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn garbage_is_no_record() {
        for b in [
            &[][..],
            &[0u8; 100][..],
            b"HSBDSK03\x01\0\0\0\0\0\0\0\xff\xff\0\0",
        ] {
            assert!(parse_slot(b).is_none());
        }
        let mut body = Vec::new();
        sample().encode(&mut body).unwrap();
        for cut in 0..body.len() {
            assert!(Meta::decode(&body[..cut]).is_none() || cut == body.len());
        }
        assert_eq!(Meta::decode(&body), Some(sample()));
    }
}
