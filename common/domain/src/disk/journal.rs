//! The write journal of the open epoch: every guest write since the last checkpoint, in the
//! order the guest issued it, split into pieces of at most [`DISK_PIECE`] bytes (one `Disk`
//! frame each). Bounded: its cost (data plus one frame's overhead per piece, exactly what the
//! pieces take in the staging buffer) never exceeds the configured limit, and its buffers are
//! allocated once. A write that does not fit is refused whole, before it touches the image: the
//! caller ends the epoch early or lets the write wait.

use hsb_common::frame::HEADER_LEN;
use hsb_common::msg::{DISK_HEAD_MAX, DISK_PIECE};

use super::DiskError;

/// Staging bytes a piece costs beyond its data: a frame header and the `Disk` body's head.
pub const PIECE_OVERHEAD: usize = HEADER_LEN + DISK_HEAD_MAX;

/// One piece of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Piece {
    offset: u64,
    start: usize,
    len: usize,
}

/// The open epoch's writes.
#[derive(Debug)]
pub struct Journal {
    limit: usize,
    data: Vec<u8>,
    pieces: Vec<Piece>,
    cost: usize,
}

impl Journal {
    /// A journal whose cost stays within `limit` bytes (allocated now).
    pub fn new(limit: usize) -> Journal {
        Journal {
            limit,
            data: Vec::with_capacity(limit),
            pieces: Vec::with_capacity(limit / PIECE_OVERHEAD + 1),
            cost: 0,
        }
    }

    /// What a write of `len` bytes costs.
    pub fn cost_of(len: usize) -> usize {
        len + len.div_ceil(DISK_PIECE).max(1) * PIECE_OVERHEAD
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Cost so far.
    pub fn cost(&self) -> usize {
        self.cost
    }

    /// Data bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Pieces held.
    pub fn pieces(&self) -> usize {
        self.pieces.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// Whether a write of `len` bytes fits now; `Err` if it never could.
    pub fn check(&self, len: usize) -> Result<(), DiskError> {
        let need = Journal::cost_of(len);
        if need > self.limit {
            return Err(DiskError::TooLarge {
                len,
                max: self.limit,
            });
        }
        if self.cost + need > self.limit {
            return Err(DiskError::JournalFull {
                need,
                room: self.limit - self.cost,
            });
        }
        Ok(())
    }

    /// Append a write (checked with [`Journal::check`] first; refused whole otherwise).
    pub fn push(&mut self, offset: u64, data: &[u8]) -> Result<(), DiskError> {
        self.check(data.len())?;
        if data.is_empty() {
            return Ok(());
        }
        for (k, chunk) in data.chunks(DISK_PIECE).enumerate() {
            self.pieces.push(Piece {
                offset: offset + (k * DISK_PIECE) as u64,
                start: self.data.len(),
                len: chunk.len(),
            });
            self.data.extend_from_slice(chunk);
        }
        self.cost += Journal::cost_of(data.len());
        debug_assert!(self.cost <= self.limit && self.data.len() <= self.limit);
        Ok(())
    }

    /// Piece `i`: its offset and data.
    pub fn piece(&self, i: usize) -> (u64, &[u8]) {
        let p = self.pieces[i];
        (p.offset, &self.data[p.start..p.start + p.len])
    }

    /// Every piece in order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        (0..self.pieces.len()).map(|i| self.piece(i))
    }

    /// Empty it (its writes went into a checkpoint, or the session they were for is gone).
    pub fn clear(&mut self) {
        self.data.clear();
        self.pieces.clear();
        self.cost = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_keep_their_order_and_large_ones_are_split() {
        let mut j = Journal::new(4 << 20);
        j.push(4096, &[1; 100]).unwrap();
        let big = vec![2u8; DISK_PIECE * 2 + 5];
        j.push(1 << 20, &big).unwrap();
        j.push(0, &[3; 10]).unwrap();
        let got: Vec<(u64, usize, u8)> = j.iter().map(|(o, d)| (o, d.len(), d[0])).collect();
        assert_eq!(
            got,
            vec![
                (4096, 100, 1),
                (1 << 20, DISK_PIECE, 2),
                ((1 << 20) + DISK_PIECE as u64, DISK_PIECE, 2),
                ((1 << 20) + 2 * DISK_PIECE as u64, 5, 2),
                (0, 10, 3),
            ]
        );
        assert_eq!(j.bytes(), 100 + big.len() + 10);
        assert_eq!(j.cost(), j.bytes() + 5 * PIECE_OVERHEAD);
        j.clear();
        assert!(j.is_empty() && j.cost() == 0);
    }

    #[test]
    fn the_limit_holds_and_a_refused_write_leaves_nothing() {
        let mut j = Journal::new(10_000);
        j.push(0, &[0; 4096]).unwrap();
        j.push(0, &[0; 4096]).unwrap();
        let before = (j.bytes(), j.pieces(), j.cost());
        assert!(matches!(
            j.push(0, &[0; 4096]),
            Err(DiskError::JournalFull { .. })
        ));
        assert_eq!((j.bytes(), j.pieces(), j.cost()), before);
        assert!(matches!(
            j.push(0, &[0; 10_000]),
            Err(DiskError::TooLarge { .. })
        ));
        assert!(j.cost() <= j.limit());
        let cap = (j.data.capacity(), j.pieces.capacity());
        for _ in 0..1000 {
            j.clear();
            while j.push(7, &[1; 3]).is_ok() {}
        }
        assert_eq!((j.data.capacity(), j.pieces.capacity()), cap, "never grows");
    }
}
