//! A bounded, panic-free parser for HVM context blobs.
//!
//! This module owns the structure of what `XEN_DOMCTL_gethvmcontext` returns: a sequence of
//! records, each an 8-byte [`HvmSaveDescriptor`] (`typecode u16, instance u16, length u32`,
//! little-endian) followed by `length` bytes of data, ending with a zero-length `END` record
//! (typecode 0). Records are packed with no alignment padding (`_hvm_init_entry` in Xen). The
//! record types are in `xen/include/public/arch-x86/hvm/save.h` @RELEASE-4.17.0.
//!
//! The parser never indexes past the input and never allocates more than the caller's record
//! limit; malformed input yields a typed [`HvmContextError`].

use crate::abi::HvmSaveDescriptor;
use core::fmt;

/// Size of an [`HvmSaveDescriptor`] on the wire.
pub const DESCRIPTOR_SIZE: usize = 8;
/// `HVM_FILE_MAGIC`: first field of the `HEADER` record.
pub const HVM_FILE_MAGIC: u32 = 0x5438_1286;
/// `HVM_FILE_VERSION`.
pub const HVM_FILE_VERSION: u32 = 1;
/// A generous default bound on records per blob (a 128-vCPU guest has well under 2048).
pub const DEFAULT_MAX_RECORDS: usize = 4096;

/// HVM save record type codes (`HVM_SAVE_CODE(...)`, x86).
pub mod typecode {
    /// End of the blob (zero-length).
    pub const END: u16 = 0;
    /// `struct hvm_save_header`.
    pub const HEADER: u16 = 1;
    /// `struct hvm_hw_cpu` (1032 bytes), one per vCPU.
    pub const CPU: u16 = 2;
    /// 8259 PIC.
    pub const PIC: u16 = 3;
    /// IOAPIC.
    pub const IOAPIC: u16 = 4;
    /// Local APIC.
    pub const LAPIC: u16 = 5;
    /// Local APIC registers.
    pub const LAPIC_REGS: u16 = 6;
    /// PCI IRQ lines.
    pub const PCI_IRQ: u16 = 7;
    /// ISA IRQ lines.
    pub const ISA_IRQ: u16 = 8;
    /// PCI link routing.
    pub const PCI_LINK: u16 = 9;
    /// PIT.
    pub const PIT: u16 = 10;
    /// RTC.
    pub const RTC: u16 = 11;
    /// HPET.
    pub const HPET: u16 = 12;
    /// ACPI PM timer.
    pub const PMTIMER: u16 = 13;
    /// MTRRs.
    pub const MTRR: u16 = 14;
    /// Viridian domain state.
    pub const VIRIDIAN_DOMAIN: u16 = 15;
    /// XSAVE state (variable length).
    pub const CPU_XSAVE: u16 = 16;
    /// Viridian vCPU state.
    pub const VIRIDIAN_VCPU: u16 = 17;
    /// vMCE vCPU state.
    pub const VMCE_VCPU: u16 = 18;
    /// TSC_ADJUST MSR.
    pub const TSC_ADJUST: u16 = 19;
    /// Other MSRs (variable length).
    pub const CPU_MSR: u16 = 20;
}

/// Why an HVM context blob was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HvmContextError {
    /// Fewer than 8 bytes remain where a descriptor should start.
    TruncatedDescriptor {
        /// Offset of the descriptor.
        offset: usize,
        /// Bytes left.
        remaining: usize,
    },
    /// A descriptor's length runs past the end of the blob.
    LengthOverrun {
        /// Offset of the descriptor.
        offset: usize,
        /// Its typecode.
        typecode: u16,
        /// Its length field.
        length: u32,
        /// Bytes left after the descriptor.
        remaining: usize,
    },
    /// The `END` record has a non-zero length.
    NonEmptyEnd {
        /// Offset of the descriptor.
        offset: usize,
        /// Its length field.
        length: u32,
    },
    /// The blob ended without an `END` record.
    MissingEnd,
    /// Bytes follow the `END` record.
    TrailingBytes {
        /// Offset of the first trailing byte.
        offset: usize,
        /// How many.
        count: usize,
    },
    /// More records than the caller allows.
    TooManyRecords {
        /// The limit.
        limit: usize,
    },
    /// The `HEADER` record is missing, of the wrong size, or has a bad magic.
    BadHeader,
}

impl fmt::Display for HvmContextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TruncatedDescriptor { offset, remaining } => write!(
                f,
                "descriptor at offset {offset} truncated: {remaining} of 8 bytes"
            ),
            Self::LengthOverrun {
                offset,
                typecode,
                length,
                remaining,
            } => write!(
                f,
                "record type {typecode} at offset {offset} claims {length} bytes, \
                 only {remaining} remain"
            ),
            Self::NonEmptyEnd { offset, length } => {
                write!(f, "END record at offset {offset} has length {length}")
            }
            Self::MissingEnd => f.write_str("no END record"),
            Self::TrailingBytes { offset, count } => {
                write!(f, "{count} bytes after the END record at offset {offset}")
            }
            Self::TooManyRecords { limit } => write!(f, "more than {limit} records"),
            Self::BadHeader => f.write_str("missing or invalid HEADER record"),
        }
    }
}

impl std::error::Error for HvmContextError {}

/// One record of an HVM context blob, borrowing its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HvmRecord<'a> {
    /// The record's descriptor.
    pub descriptor: HvmSaveDescriptor,
    /// Offset of the descriptor within the blob.
    pub offset: usize,
    /// The `descriptor.length` bytes after the descriptor.
    pub data: &'a [u8],
}

impl HvmRecord<'_> {
    /// Record type.
    pub fn typecode(&self) -> u16 {
        self.descriptor.typecode
    }
    /// Instance (vCPU index for per-vCPU records).
    pub fn instance(&self) -> u16 {
        self.descriptor.instance
    }
}

/// Read a little-endian u16/u32/u64 at `at` from a slice already known to be long enough.
fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from(le_u32(b, at)) | (u64::from(le_u32(b, at + 4)) << 32)
}

/// Iterator over the records of a blob, up to and including `END`.
///
/// Yields `Err` once on malformed input and then stops. It does not check what follows `END`;
/// [`parse_hvm_context`] does.
#[derive(Clone, Debug)]
pub struct HvmRecords<'a> {
    blob: &'a [u8],
    offset: usize,
    done: bool,
}

impl<'a> HvmRecords<'a> {
    /// Iterate over the records of `blob`.
    pub fn new(blob: &'a [u8]) -> Self {
        Self {
            blob,
            offset: 0,
            done: false,
        }
    }

    /// Offset just past the last record yielded.
    pub fn offset(&self) -> usize {
        self.offset
    }

    fn next_record(&mut self) -> Result<Option<HvmRecord<'a>>, HvmContextError> {
        let offset = self.offset;
        let rest = self.blob.get(offset..).unwrap_or(&[]);
        if rest.is_empty() {
            return Err(HvmContextError::MissingEnd);
        }
        if rest.len() < DESCRIPTOR_SIZE {
            return Err(HvmContextError::TruncatedDescriptor {
                offset,
                remaining: rest.len(),
            });
        }
        let descriptor = HvmSaveDescriptor {
            typecode: le_u16(rest, 0),
            instance: le_u16(rest, 2),
            length: le_u32(rest, 4),
        };
        let body = &rest[DESCRIPTOR_SIZE..];
        let len = usize::try_from(descriptor.length).unwrap_or(usize::MAX);
        if len > body.len() {
            return Err(HvmContextError::LengthOverrun {
                offset,
                typecode: descriptor.typecode,
                length: descriptor.length,
                remaining: body.len(),
            });
        }
        if descriptor.typecode == typecode::END && len != 0 {
            return Err(HvmContextError::NonEmptyEnd {
                offset,
                length: descriptor.length,
            });
        }
        self.offset = offset + DESCRIPTOR_SIZE + len;
        Ok(Some(HvmRecord {
            descriptor,
            offset,
            data: &body[..len],
        }))
    }
}

impl<'a> Iterator for HvmRecords<'a> {
    type Item = Result<HvmRecord<'a>, HvmContextError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = self.next_record();
        match &r {
            Ok(Some(rec)) if rec.typecode() != typecode::END => {}
            _ => self.done = true,
        }
        r.transpose()
    }
}

/// Parse a whole blob into its records (without the final `END`), requiring a well-formed
/// `END` record as the very last bytes and at most `max_records` records.
pub fn parse_hvm_context(
    blob: &[u8],
    max_records: usize,
) -> Result<Vec<HvmRecord<'_>>, HvmContextError> {
    let mut records = Vec::new();
    let mut iter = HvmRecords::new(blob);
    for rec in iter.by_ref() {
        let rec = rec?;
        if rec.typecode() == typecode::END {
            let end = iter.offset();
            if end != blob.len() {
                return Err(HvmContextError::TrailingBytes {
                    offset: end,
                    count: blob.len() - end,
                });
            }
            return Ok(records);
        }
        if records.len() == max_records {
            return Err(HvmContextError::TooManyRecords { limit: max_records });
        }
        records.push(rec);
    }
    // The iterator yields END or an error before it stops.
    Err(HvmContextError::MissingEnd)
}

/// `struct hvm_save_header`: the data of the `HEADER` record (24 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HvmSaveHeader {
    /// Must be [`HVM_FILE_MAGIC`].
    pub magic: u32,
    /// File format version ([`HVM_FILE_VERSION`]).
    pub version: u32,
    /// Xen changeset that saved the blob.
    pub changeset: u64,
    /// `CPUID[1].EAX` of the saving machine.
    pub cpuid: u32,
    /// Guest TSC frequency in kHz.
    pub gtsc_khz: u32,
}

impl HvmSaveHeader {
    /// Size of the record data.
    pub const SIZE: usize = 24;

    /// Decode the first record of `records` as the header, checking type, size and magic.
    pub fn from_records(records: &[HvmRecord<'_>]) -> Result<Self, HvmContextError> {
        let rec = records.first().ok_or(HvmContextError::BadHeader)?;
        if rec.typecode() != typecode::HEADER || rec.data.len() != Self::SIZE {
            return Err(HvmContextError::BadHeader);
        }
        let d = rec.data;
        let header = Self {
            magic: le_u32(d, 0),
            version: le_u32(d, 4),
            changeset: le_u64(d, 8),
            cpuid: le_u32(d, 16),
            gtsc_khz: le_u32(d, 20),
        };
        if header.magic != HVM_FILE_MAGIC {
            return Err(HvmContextError::BadHeader);
        }
        Ok(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// HEADER (24 B) + one 4-byte PIT record (instance 0) + a 2-byte CPU-ish record
    /// (instance 1) + END.
    const VALID: &[u8] = &[
        // HEADER: typecode 1, instance 0, length 24
        0x01, 0x00, 0x00, 0x00, 0x18, 0x00, 0x00, 0x00, //
        0x86, 0x12, 0x38, 0x54, // magic 0x54381286
        0x01, 0x00, 0x00, 0x00, // version 1
        0xef, 0xbe, 0xad, 0xde, 0x00, 0x00, 0x00, 0x00, // changeset 0xdeadbeef
        0xa1, 0x06, 0x05, 0x00, // cpuid 0x000506a1
        0x80, 0x84, 0x1e, 0x00, // gtsc_khz 2_000_000
        // PIT: typecode 10, instance 0, length 4
        0x0a, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, //
        0xaa, 0xbb, 0xcc, 0xdd, //
        // typecode 2, instance 1, length 2
        0x02, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, //
        0x11, 0x22, //
        // END: typecode 0, instance 0, length 0
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn parses_valid_blob() {
        let recs = parse_hvm_context(VALID, DEFAULT_MAX_RECORDS).expect("valid");
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].typecode(), typecode::HEADER);
        assert_eq!(recs[1].typecode(), typecode::PIT);
        assert_eq!(recs[1].offset, 32);
        assert_eq!(recs[1].data, &[0xaa, 0xbb, 0xcc, 0xdd]);
        assert_eq!(recs[2].typecode(), typecode::CPU);
        assert_eq!(recs[2].instance(), 1);
        assert_eq!(recs[2].data, &[0x11, 0x22]);
        let h = HvmSaveHeader::from_records(&recs).expect("header");
        assert_eq!(
            h,
            HvmSaveHeader {
                magic: HVM_FILE_MAGIC,
                version: HVM_FILE_VERSION,
                changeset: 0xdead_beef,
                cpuid: 0x0005_06a1,
                gtsc_khz: 2_000_000,
            }
        );
    }

    #[test]
    fn zero_length_end_only_is_valid_and_empty() {
        let recs = parse_hvm_context(&[0; 8], 1).expect("just END");
        assert!(recs.is_empty());
        assert_eq!(
            HvmSaveHeader::from_records(&recs),
            Err(HvmContextError::BadHeader)
        );
    }

    #[test]
    fn empty_blob_has_no_end() {
        assert_eq!(parse_hvm_context(&[], 8), Err(HvmContextError::MissingEnd));
    }

    #[test]
    fn truncated_descriptor() {
        // Every strict prefix of VALID must fail with a typed error, never panic.
        for cut in 0..VALID.len() {
            assert!(parse_hvm_context(&VALID[..cut], 8).is_err(), "prefix {cut}");
        }
        assert_eq!(
            parse_hvm_context(&VALID[..VALID.len() - 3], 8),
            Err(HvmContextError::TruncatedDescriptor {
                offset: 54,
                remaining: 5
            })
        );
        // Stops right after the PIT record: END missing.
        assert_eq!(
            parse_hvm_context(&VALID[..44], 8),
            Err(HvmContextError::MissingEnd)
        );
    }

    #[test]
    fn truncated_record_body() {
        assert_eq!(
            parse_hvm_context(&VALID[..42], 8),
            Err(HvmContextError::LengthOverrun {
                offset: 32,
                typecode: typecode::PIT,
                length: 4,
                remaining: 2
            })
        );
    }

    #[test]
    fn oversized_length_field() {
        let blob = [0x02, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00];
        assert_eq!(
            parse_hvm_context(&blob, 8),
            Err(HvmContextError::LengthOverrun {
                offset: 0,
                typecode: typecode::CPU,
                length: u32::MAX,
                remaining: 2
            })
        );
    }

    #[test]
    fn end_with_length_is_rejected() {
        let blob = [0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00];
        assert_eq!(
            parse_hvm_context(&blob, 8),
            Err(HvmContextError::NonEmptyEnd {
                offset: 0,
                length: 2
            })
        );
    }

    #[test]
    fn trailing_bytes_after_end() {
        let mut blob = VALID.to_vec();
        blob.extend_from_slice(&[0x01, 0x02]);
        assert_eq!(
            parse_hvm_context(&blob, 8),
            Err(HvmContextError::TrailingBytes {
                offset: 62,
                count: 2
            })
        );
    }

    #[test]
    fn record_limit() {
        assert_eq!(
            parse_hvm_context(VALID, 2),
            Err(HvmContextError::TooManyRecords { limit: 2 })
        );
        assert!(parse_hvm_context(VALID, 3).is_ok());
    }

    #[test]
    fn bad_magic() {
        let mut blob = VALID.to_vec();
        blob[8] = 0;
        let recs = parse_hvm_context(&blob, 8).expect("structurally fine");
        assert_eq!(
            HvmSaveHeader::from_records(&recs),
            Err(HvmContextError::BadHeader)
        );
    }

    #[test]
    fn iterator_stops_after_error() {
        let mut it = HvmRecords::new(&VALID[..3]);
        assert!(matches!(
            it.next(),
            Some(Err(HvmContextError::TruncatedDescriptor { .. }))
        ));
        assert!(it.next().is_none());
    }

    #[test]
    fn error_display() {
        let e = HvmContextError::LengthOverrun {
            offset: 0,
            typecode: 2,
            length: 9,
            remaining: 2,
        };
        assert_eq!(
            e.to_string(),
            "record type 2 at offset 0 claims 9 bytes, only 2 remain"
        );
    }
}
