//! Where a disk's changes are: its geometry (tracks, activity-log extents), bitmaps, and the
//! per-track table of the last checkpoint that wrote each track. No I/O.
//!
//! A **track** is the unit of change tracking and of resynchronisation copies: 4 KiB, or a
//! larger power of two for images beyond [`MAX_TRACKS`] × 4 KiB (16 GiB), so the table stays
//! bounded (8 bytes a track, 32 MiB at most). An **extent** (4 MiB or more) is the unit of the
//! activity log persisted before a primary writes (see [`super`]).

use super::DiskError;

/// The smallest unit a disk image is sized in, and the smallest track.
pub const BLOCK: u64 = 4096;
/// Most tracks an image is divided into.
pub const MAX_TRACKS: u64 = 1 << 22;
/// Largest track (a copy of one track fits a `DiskSync` frame).
pub const MAX_TRACK: u64 = hsb_common::msg::DISK_PIECE as u64;
/// Largest image: [`MAX_TRACKS`] tracks of [`MAX_TRACK`] bytes (1 TiB).
pub const MAX_DISK: u64 = MAX_TRACKS * MAX_TRACK;
/// Smallest activity-log extent.
pub const MIN_EXTENT: u64 = 4 << 20;
/// Most extents (their bitmap fits the metadata record: 4 KiB).
pub const MAX_EXTENTS: u64 = 32768;

/// How an image of a given size is divided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Image size in bytes (a multiple of [`BLOCK`]).
    pub size: u64,
    /// log2 of the track size.
    pub track_shift: u32,
    /// Number of tracks (the last may be shorter).
    pub tracks: u64,
    /// log2 of the extent size.
    pub extent_shift: u32,
    /// Number of extents.
    pub extents: u64,
}

impl Geometry {
    /// The geometry of an image of `size` bytes.
    pub fn new(size: u64) -> Result<Geometry, DiskError> {
        if size == 0 || !size.is_multiple_of(BLOCK) || size > MAX_DISK {
            return Err(DiskError::Invalid(format!(
                "a disk image of {size} bytes: expected a multiple of 4KiB from 4KiB to 1TiB"
            )));
        }
        let mut track_shift = BLOCK.trailing_zeros();
        while size.div_ceil(1 << track_shift) > MAX_TRACKS {
            track_shift += 1;
        }
        let mut extent_shift = MIN_EXTENT.trailing_zeros().max(track_shift);
        while size.div_ceil(1 << extent_shift) > MAX_EXTENTS {
            extent_shift += 1;
        }
        Ok(Geometry {
            size,
            track_shift,
            tracks: size.div_ceil(1 << track_shift),
            extent_shift,
            extents: size.div_ceil(1 << extent_shift),
        })
    }

    /// Track size in bytes.
    pub fn track(&self) -> u64 {
        1 << self.track_shift
    }

    /// Tracks touched by `len` bytes at `offset` (`len` > 0, in bounds).
    pub fn tracks_of(&self, offset: u64, len: u64) -> std::ops::Range<u64> {
        (offset >> self.track_shift)..((offset + len - 1) >> self.track_shift) + 1
    }

    /// Extents touched by `len` bytes at `offset` (`len` > 0, in bounds).
    pub fn extents_of(&self, offset: u64, len: u64) -> std::ops::Range<u64> {
        (offset >> self.extent_shift)..((offset + len - 1) >> self.extent_shift) + 1
    }

    /// The extent of a track.
    pub fn extent_of_track(&self, t: u64) -> u64 {
        t >> (self.extent_shift - self.track_shift)
    }

    /// The tracks of an extent.
    pub fn tracks_of_extent(&self, e: u64) -> std::ops::Range<u64> {
        let per = 1u64 << (self.extent_shift - self.track_shift);
        (e * per)..((e + 1) * per).min(self.tracks)
    }

    /// Byte offset and length of `n` tracks from track `t` (the last track may be shorter).
    pub fn span(&self, t: u64, n: u64) -> (u64, u64) {
        let off = t << self.track_shift;
        let end = ((t + n) << self.track_shift).min(self.size);
        (off, end - off)
    }

    /// Whether `len` bytes at `offset` are inside the image.
    pub fn contains(&self, offset: u64, len: u64) -> bool {
        offset.checked_add(len).is_some_and(|end| end <= self.size)
    }
}

/// A fixed-size bitmap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap {
    words: Vec<u64>,
    bits: u64,
}

impl Bitmap {
    /// `bits` bits, all clear.
    pub fn new(bits: u64) -> Bitmap {
        Bitmap {
            words: vec![0; bits.div_ceil(64) as usize],
            bits,
        }
    }

    /// From words (bits beyond `bits` are dropped).
    pub fn from_words(mut words: Vec<u64>, bits: u64) -> Bitmap {
        words.resize(bits.div_ceil(64) as usize, 0);
        let mut b = Bitmap { words, bits };
        b.trim();
        b
    }

    fn trim(&mut self) {
        let tail = self.bits % 64;
        if tail != 0 {
            if let Some(w) = self.words.last_mut() {
                *w &= (1u64 << tail) - 1;
            }
        }
    }

    /// Number of bits.
    pub fn len(&self) -> u64 {
        self.bits
    }

    /// Whether it has no bits at all.
    pub fn is_empty(&self) -> bool {
        self.bits == 0
    }

    /// The words.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Set bit `i` (ignored beyond the end).
    pub fn set(&mut self, i: u64) {
        if i < self.bits {
            self.words[(i / 64) as usize] |= 1 << (i % 64);
        }
    }

    /// Set bits `r`.
    pub fn set_range(&mut self, r: std::ops::Range<u64>) {
        for i in r {
            self.set(i);
        }
    }

    /// Clear bit `i`.
    pub fn clear(&mut self, i: u64) {
        if i < self.bits {
            self.words[(i / 64) as usize] &= !(1 << (i % 64));
        }
    }

    /// Bit `i` (false beyond the end).
    pub fn get(&self, i: u64) -> bool {
        i < self.bits && self.words[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    /// Set every bit.
    pub fn fill(&mut self) {
        for w in self.words.iter_mut() {
            *w = !0;
        }
        self.trim();
    }

    /// Clear every bit.
    pub fn clear_all(&mut self) {
        for w in self.words.iter_mut() {
            *w = 0;
        }
    }

    /// Bits set.
    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| w.count_ones() as u64).sum()
    }

    /// Set every bit set in `other` (of the same length).
    pub fn union(&mut self, other: &Bitmap) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= b;
        }
    }

    /// The first set bit at or after `from`.
    pub fn next_set(&self, from: u64) -> Option<u64> {
        if from >= self.bits {
            return None;
        }
        let mut wi = (from / 64) as usize;
        let mut w = self.words[wi] & (!0u64 << (from % 64));
        loop {
            if w != 0 {
                let i = wi as u64 * 64 + w.trailing_zeros() as u64;
                return (i < self.bits).then_some(i);
            }
            wi += 1;
            if wi >= self.words.len() {
                return None;
            }
            w = self.words[wi];
        }
    }

    /// Every set bit, ascending.
    pub fn ones(&self) -> impl Iterator<Item = u64> + '_ {
        let mut next = self.next_set(0);
        std::iter::from_fn(move || {
            let i = next?;
            next = self.next_set(i + 1);
            Some(i)
        })
    }

    /// Bytes `first_byte..` of the bitmap, LSB first (for `DiskDirty` frames).
    pub fn bytes(&self, first_byte: usize, out: &mut [u8]) -> usize {
        let total = self.bits.div_ceil(8) as usize;
        let n = out.len().min(total.saturating_sub(first_byte));
        for (k, o) in out[..n].iter_mut().enumerate() {
            let b = first_byte + k;
            *o = (self.words[b / 8] >> ((b % 8) * 8)) as u8;
        }
        n
    }

    /// Set the bits of `bits` (LSB first) from bit `first` on; bits beyond the end are ignored.
    pub fn or_bytes(&mut self, first: u64, bits: &[u8]) {
        for (k, &byte) in bits.iter().enumerate() {
            let mut b = byte;
            while b != 0 {
                let j = b.trailing_zeros() as u64;
                b &= b - 1;
                if let Some(i) = first.checked_add(k as u64 * 8 + j) {
                    self.set(i);
                }
            }
        }
    }
}

/// The last checkpoint that wrote each track, since a horizon.
///
/// For any checkpoint `x >= horizon` of this disk's lineage, the tracks that differ between the
/// disk at `x` and the disk now are among `{t : lw[t] > x}`. A disk whose history is unknown
/// has the horizon `u64::MAX`: nothing can be computed from it, every peer gets a full copy.
#[derive(Debug, Clone)]
pub struct Tracks {
    geo: Geometry,
    lw: Vec<u64>,
    horizon: u64,
    /// The largest `lw` in each extent.
    ext_lw: Vec<u64>,
}

impl Tracks {
    /// Nothing written since `horizon`.
    pub fn new(geo: Geometry, horizon: u64) -> Tracks {
        Tracks {
            geo,
            lw: vec![0; geo.tracks as usize],
            horizon,
            ext_lw: vec![0; geo.extents as usize],
        }
    }

    /// A table read back from the metadata file (`lw` must have a value per track).
    pub fn from_table(geo: Geometry, horizon: u64, lw: Vec<u64>) -> Tracks {
        let mut t = Tracks::new(geo, horizon);
        for (i, v) in lw.into_iter().enumerate().take(geo.tracks as usize) {
            t.mark(i as u64..i as u64 + 1, v);
        }
        t
    }

    /// The horizon.
    pub fn horizon(&self) -> u64 {
        self.horizon
    }

    /// The per-track values (for persisting).
    pub fn values(&self) -> &[u64] {
        &self.lw
    }

    /// Start over: nothing known before `horizon`, nothing written since.
    pub fn reset(&mut self, horizon: u64) {
        self.horizon = horizon;
        self.lw.iter_mut().for_each(|v| *v = 0);
        self.ext_lw.iter_mut().for_each(|v| *v = 0);
    }

    /// Tracks `r` were written in checkpoint `ckpt`.
    pub fn mark(&mut self, r: std::ops::Range<u64>, ckpt: u64) {
        for t in r {
            let Some(v) = self.lw.get_mut(t as usize) else {
                return;
            };
            *v = (*v).max(ckpt);
            let e = self.geo.extent_of_track(t) as usize;
            self.ext_lw[e] = self.ext_lw[e].max(ckpt);
        }
    }

    /// The latest checkpoint that wrote a track of extent `e`.
    pub fn extent_lw(&self, e: u64) -> u64 {
        self.ext_lw.get(e as usize).copied().unwrap_or(0)
    }

    /// Set in `out` the tracks that can differ from the disk at checkpoint `base`; false if
    /// `base` is older than the horizon (unknown: the caller copies everything).
    pub fn changed_since(&self, base: u64, out: &mut Bitmap) -> bool {
        if base < self.horizon {
            return false;
        }
        for (t, &v) in self.lw.iter().enumerate() {
            if v > base {
                out.set(t as u64);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_scales_tracks_and_extents_with_the_image() {
        let g = Geometry::new(64 << 20).unwrap();
        assert_eq!((g.track(), g.tracks, g.extents), (4096, 16384, 16));
        let g = Geometry::new(1 << 30).unwrap();
        assert_eq!((g.track(), g.tracks, g.extents), (4096, 262144, 256));
        let g = Geometry::new(64 << 30).unwrap();
        assert_eq!((g.track(), g.tracks), (16384, 1 << 22));
        let g = Geometry::new(MAX_DISK).unwrap();
        assert_eq!(
            (g.track(), g.tracks, g.extents),
            (MAX_TRACK, MAX_TRACKS, MAX_EXTENTS)
        );
        assert!(Geometry::new(0).is_err());
        assert!(Geometry::new(4097).is_err());
        assert!(Geometry::new(MAX_DISK + BLOCK).is_err());
        let g = Geometry::new(10 * 4096).unwrap();
        assert_eq!(g.tracks_of(4095, 2), 0..2);
        assert_eq!(g.span(9, 3), (9 * 4096, 4096));
        assert!(g.contains(0, 40960) && !g.contains(1, 40960) && !g.contains(u64::MAX, 2));
        assert_eq!(g.tracks_of_extent(0), 0..10);
    }

    #[test]
    fn bitmap_bits_runs_and_bytes() {
        let mut b = Bitmap::new(130);
        for i in [0, 63, 64, 129, 500] {
            b.set(i);
        }
        assert_eq!(b.count(), 4);
        assert_eq!(b.ones().collect::<Vec<_>>(), vec![0, 63, 64, 129]);
        assert_eq!(b.next_set(65), Some(129));
        assert_eq!(b.next_set(130), None);
        let mut bytes = [0u8; 17];
        assert_eq!(b.bytes(0, &mut bytes), 17);
        let mut c = Bitmap::new(130);
        c.or_bytes(0, &bytes);
        assert_eq!(b, c);
        let mut d = Bitmap::new(130);
        d.or_bytes(64, &bytes[8..]);
        d.or_bytes(0, &bytes[..8]);
        assert_eq!(b, d);
        b.fill();
        assert_eq!(b.count(), 130);
        b.clear(5);
        assert!(!b.get(5) && b.get(6));
    }

    #[test]
    fn changed_since_answers_only_from_the_horizon_on() {
        let g = Geometry::new(1 << 24).unwrap();
        let mut t = Tracks::new(g, 10);
        t.mark(3..5, 12);
        t.mark(4..5, 15);
        t.mark(2000..2001, 11);
        let mut out = Bitmap::new(g.tracks);
        assert!(t.changed_since(11, &mut out));
        assert_eq!(out.ones().collect::<Vec<_>>(), vec![3, 4]);
        let mut out = Bitmap::new(g.tracks);
        assert!(t.changed_since(10, &mut out));
        assert_eq!(out.count(), 3);
        assert!(!t.changed_since(9, &mut Bitmap::new(g.tracks)));
        assert_eq!(t.extent_lw(0), 15);
        assert_eq!(t.extent_lw(1), 11);
        let back = Tracks::from_table(g, t.horizon(), t.values().to_vec());
        assert_eq!(back.values(), t.values());
        assert_eq!(back.extent_lw(0), 15);
    }
}
