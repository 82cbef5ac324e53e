//! All guest RAM of one domain, mapped once at start-up in chunks of [`CHUNK_PFNS`] frames:
//! read-only on the primary, writable on the standby (where missing frames are populated).
//! Mapping a large guest takes a while (seconds for many GiB; 6 s for the rig's small guest
//! under TCG): the caller's `between` runs after each chunk, so a daemon goes on serving its
//! guest's disk meanwhile (a running guest's I/O must not stall while hsb-primary attaches).

use std::time::Instant;

use xen_sys::{DomId, ForeignMap, Privcmd, Prot};

use super::{err, CHUNK_PFNS, MAX_P2M};
use crate::domain::DomainError;

/// Frames the standby may populate in a replica (beyond what it had at start-up).
pub const MAX_POPULATED: usize = 4096;

/// All guest RAM of one domain, mapped once.
#[derive(Debug)]
pub(super) struct GuestMemory {
    chunks: Vec<Option<ForeignMap>>,
    pub(super) populated: Vec<u64>,
    pub(super) p2m: u64,
    /// Replica frames populated after start-up (the primary has RAM there), one map each.
    extra: std::collections::BTreeMap<u64, ForeignMap>,
}

impl GuestMemory {
    pub(super) fn map(
        xc: &mut Privcmd,
        domid: DomId,
        prot: Prot,
        between: &mut dyn FnMut(),
    ) -> Result<GuestMemory, DomainError> {
        let max = xc
            .maximum_gpfn(domid)
            .map_err(|e| err("map guest memory", e))?;
        let p2m = max + 1;
        if p2m > MAX_P2M {
            return Err(err(
                "map guest memory",
                format!("p2m of {p2m} frames is larger than the {MAX_P2M} supported"),
            ));
        }
        let t0 = Instant::now();
        let mut chunks = Vec::new();
        let mut populated = Vec::new();
        let mut gfns = Vec::with_capacity(CHUNK_PFNS as usize);
        let mut first = 0;
        while first < p2m {
            let end = (first + CHUNK_PFNS).min(p2m);
            gfns.clear();
            gfns.extend(first..end);
            let m =
                ForeignMap::map(xc, domid, &gfns, prot).map_err(|e| err("map guest memory", e))?;
            let before = populated.len();
            populated.extend(
                gfns.iter()
                    .enumerate()
                    .filter(|(i, _)| m.page_error(*i).is_none())
                    .map(|(_, &g)| g),
            );
            chunks.push((populated.len() > before).then_some(m));
            first = end;
            between();
        }
        log::info!(
            "domain {domid}: {} of {p2m} guest frames are RAM, mapped {} in {} ms",
            populated.len(),
            if prot == Prot::Read {
                "read-only"
            } else {
                "read-write"
            },
            t0.elapsed().as_millis()
        );
        if populated.is_empty() {
            return Err(err("map guest memory", "no guest frame could be mapped"));
        }
        Ok(GuestMemory {
            chunks,
            populated,
            p2m,
            extra: std::collections::BTreeMap::new(),
        })
    }

    fn locate(&self, pfn: u64) -> Option<(&ForeignMap, usize)> {
        let m = self.chunks.get((pfn / CHUNK_PFNS) as usize)?.as_ref()?;
        let i = (pfn % CHUNK_PFNS) as usize;
        m.page_error(i).is_none().then_some((m, i))
    }

    pub(super) fn is_ram(&self, pfn: u64) -> bool {
        self.locate(pfn).is_some()
    }

    pub(super) fn read(&self, pfn: u64, dst: &mut [u8]) -> Result<(), DomainError> {
        let (m, i) = self
            .locate(pfn)
            .ok_or_else(|| err("read_pages", format!("frame {pfn:#x} is not mapped RAM")))?;
        m.read_pages(i, dst).map_err(|e| err("read_pages", e))
    }

    /// Write a run of consecutive frames of one chunk in one copy; `false` (nothing written)
    /// if any of them is not mapped there.
    pub(super) fn write_run(&mut self, first: u64, src: &[u8]) -> bool {
        let i = (first % CHUNK_PFNS) as usize;
        self.chunks
            .get_mut((first / CHUNK_PFNS) as usize)
            .and_then(|c| c.as_mut())
            .is_some_and(|m| m.write_pages(i, src).is_ok())
    }

    /// Write one frame of the replica. A frame the primary has as RAM but the replica does
    /// not (for example one the guest mapped its grant table or shared info into) is first
    /// populated, as libxc's restore does (`populate_pfns`), at most [`MAX_POPULATED`] of them.
    pub(super) fn write(
        &mut self,
        xc: &mut Privcmd,
        domid: DomId,
        pfn: u64,
        src: &[u8],
    ) -> Result<(), DomainError> {
        if pfn >= self.p2m {
            return Err(err(
                "write_pages",
                format!(
                    "frame {pfn:#x} is beyond the replica's p2m ({} frames)",
                    self.p2m
                ),
            ));
        }
        let i = (pfn % CHUNK_PFNS) as usize;
        if let Some(m) = self
            .chunks
            .get_mut((pfn / CHUNK_PFNS) as usize)
            .and_then(|c| c.as_mut())
            .filter(|m| m.page_error(i).is_none())
        {
            return m.write_pages(i, src).map_err(|e| err("write_pages", e));
        }
        if !self.extra.contains_key(&pfn) {
            if self.extra.len() >= MAX_POPULATED {
                return Err(err(
                    "write_pages",
                    format!("frame {pfn:#x}: more than {MAX_POPULATED} frames missing from the replica (was it restored from the same guest?)"),
                ));
            }
            xc.populate_physmap(domid, &[pfn])
                .map_err(|e| err("write_pages", format!("populate frame {pfn:#x}: {e}")))?;
            let m = ForeignMap::map(xc, domid, &[pfn], Prot::ReadWrite)
                .map_err(|e| err("write_pages", format!("map frame {pfn:#x}: {e}")))?;
            if let Some(e) = m.page_error(0) {
                return Err(err(
                    "write_pages",
                    format!("frame {pfn:#x} does not map after populating it (errno {e})"),
                ));
            }
            log::info!(
                "replica frame {pfn:#x} was not RAM: populated it ({} so far)",
                self.extra.len() + 1
            );
            self.extra.insert(pfn, m);
        }
        match self.extra.get_mut(&pfn) {
            Some(m) => m.write_pages(0, src).map_err(|e| err("write_pages", e)),
            None => Err(err(
                "write_pages",
                format!("frame {pfn:#x} lost its mapping"),
            )),
        }
    }

    /// Read one frame of the replica as [`GuestMemory::write`] left it (mapped at start-up or
    /// populated since).
    pub(super) fn read_back(&self, pfn: u64, dst: &mut [u8]) -> Result<(), DomainError> {
        if let Some((m, i)) = self.locate(pfn) {
            return m.read_pages(i, dst).map_err(|e| err("read_back", e));
        }
        match self.extra.get(&pfn) {
            Some(m) => m.read_pages(0, dst).map_err(|e| err("read_back", e)),
            None => Err(err(
                "read_back",
                format!("frame {pfn:#x} was never written"),
            )),
        }
    }
}
