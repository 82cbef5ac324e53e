//! The PUT log's records as they lie on the model's disk: read by the guest (an activated
//! replica checks its log against its memory) and from outside it (the fault suite reads the
//! images).

use super::super::{MAX_KEY, MAX_VALUE};
use super::{BLOCK, MAX_LOG_BLOCKS, RECORD, RECORD_MAGIC};

/// A PUT log record: its sequence number, key and value, if it is one (magic and CRC).
pub(crate) fn parse_record(r: &[u8]) -> Option<(u64, &[u8], &[u8])> {
    if r.len() < RECORD || &r[..2] != RECORD_MAGIC {
        return None;
    }
    let (klen, vlen) = (r[2] as usize, r[3] as usize);
    let mut c = [0u8; 4];
    c.copy_from_slice(&r[4..8]);
    if klen > MAX_KEY || vlen > MAX_VALUE || crc32fast::hash(&r[8..RECORD]) != u32::from_le_bytes(c)
    {
        return None;
    }
    let mut s = [0u8; 8];
    s.copy_from_slice(&r[8..16]);
    Some((
        u64::from_le_bytes(s),
        &r[16..16 + klen],
        &r[16 + MAX_KEY..16 + MAX_KEY + vlen],
    ))
}

/// Bytes at the start of a model disk of `disk_size` bytes that hold its PUT log.
pub fn put_log_bytes(disk_size: u64) -> u64 {
    (disk_size / BLOCK / 4).clamp(1, MAX_LOG_BLOCKS) * BLOCK
}

/// The PUT log records in `log` (the first [`put_log_bytes`] of an image, read from outside the
/// guest, as the fault suite does): each record's sequence number, key and value, in the
/// ring's order. Slots that hold no valid record (never written, torn) are skipped.
pub fn put_log_records(log: &[u8]) -> Vec<(u64, String, String)> {
    log.chunks(RECORD)
        .filter_map(parse_record)
        .map(|(seq, k, v)| {
            (
                seq,
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect()
}
