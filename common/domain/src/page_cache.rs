//! The primary's cache of recently sent pages: for each page in it, the exact bytes the standby's
//! replica holds, so the next version of the page can be sent as the words that changed
//! ([`crate::page_codec`]). Bounded: a fixed number of page slots allocated once, the index
//! reserved for that many entries; when full, the CLOCK hand (second chance) picks the slot of a
//! page not looked up since its last pass. No I/O.
//!
//! The cache is only right while every page it holds is what the standby has: it is cleared at
//! each full synchronisation (a new session), and a page sent any other way than through
//! [`PageCache::store`] must be [`PageCache::forget`]ten.

use std::collections::HashMap;

use crate::PAGE_SIZE;

/// A bounded page cache.
#[derive(Debug)]
pub struct PageCache {
    slots: Vec<u8>,
    /// The page in each slot (`u64::MAX`: free).
    owner: Vec<u64>,
    /// Looked up since the hand last passed.
    referenced: Vec<bool>,
    index: HashMap<u64, u32>,
    hand: usize,
    free: Vec<u32>,
}

const FREE: u64 = u64::MAX;

impl PageCache {
    /// A cache of `pages` pages (0: a cache that holds nothing).
    pub fn new(pages: usize) -> PageCache {
        assert!(pages < u32::MAX as usize, "page cache of {pages} pages");
        PageCache {
            slots: vec![0u8; pages * PAGE_SIZE],
            owner: vec![FREE; pages],
            referenced: vec![false; pages],
            index: HashMap::with_capacity(pages),
            hand: 0,
            free: (0..pages as u32).rev().collect(),
        }
    }

    /// Slots.
    pub fn capacity(&self) -> usize {
        self.owner.len()
    }

    /// Pages held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Bytes allocated for page slots.
    pub fn bytes(&self) -> usize {
        self.slots.len()
    }

    /// The standby's version of page `pfn`, if held.
    pub fn get(&mut self, pfn: u64) -> Option<&[u8]> {
        let s = *self.index.get(&pfn)? as usize;
        self.referenced[s] = true;
        Some(&self.slots[s * PAGE_SIZE..(s + 1) * PAGE_SIZE])
    }

    /// Page `pfn` was sent as `page`: hold it (evicting another when full).
    pub fn store(&mut self, pfn: u64, page: &[u8]) {
        debug_assert_eq!(page.len(), PAGE_SIZE);
        if self.owner.is_empty() || pfn == FREE {
            return;
        }
        let s = match self.index.get(&pfn) {
            Some(&s) => s as usize,
            None => {
                let s = match self.free.pop() {
                    Some(s) => s as usize,
                    None => self.evict(),
                };
                self.owner[s] = pfn;
                self.referenced[s] = false;
                self.index.insert(pfn, s as u32);
                s
            }
        };
        self.slots[s * PAGE_SIZE..(s + 1) * PAGE_SIZE].copy_from_slice(page);
        debug_assert!(self.index.len() <= self.owner.len());
    }

    /// Page `pfn` was sent without being stored: whatever is held for it is stale.
    pub fn forget(&mut self, pfn: u64) {
        if let Some(s) = self.index.remove(&pfn) {
            self.owner[s as usize] = FREE;
            self.free.push(s);
        }
    }

    /// Hold nothing (a full synchronisation starts: the standby's replica is rewritten).
    pub fn clear(&mut self) {
        self.index.clear();
        self.owner.fill(FREE);
        self.referenced.fill(false);
        self.free.clear();
        self.free.extend((0..self.owner.len() as u32).rev());
        self.hand = 0;
    }

    /// A slot to reuse: the first one past the hand not referenced since its last pass (at most
    /// two turns: the first clears every mark).
    fn evict(&mut self) -> usize {
        let n = self.owner.len();
        loop {
            let s = self.hand;
            self.hand = (self.hand + 1) % n;
            if self.referenced[s] {
                self.referenced[s] = false;
                continue;
            }
            if self.owner[s] != FREE {
                self.index.remove(&self.owner[s]);
                self.owner[s] = FREE;
            }
            return s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(v: u8) -> Vec<u8> {
        vec![v; PAGE_SIZE]
    }

    #[test]
    fn holds_what_was_stored_and_forgets() {
        let mut c = PageCache::new(4);
        assert!(c.get(7).is_none());
        c.store(7, &page(1));
        assert_eq!(c.get(7).unwrap(), &page(1)[..]);
        c.store(7, &page(2));
        assert_eq!(c.get(7).unwrap(), &page(2)[..]);
        assert_eq!(c.len(), 1);
        c.forget(7);
        assert!(c.get(7).is_none());
        assert!(c.is_empty());
        c.forget(7);
        c.store(8, &page(3));
        c.clear();
        assert!(c.get(8).is_none());
        assert_eq!(c.free.len(), 4);
    }

    #[test]
    fn bounded_and_second_chance() {
        let mut c = PageCache::new(3);
        for p in 0..3 {
            c.store(p, &page(p as u8));
        }
        // Page 0 is looked up, so it survives the next eviction.
        assert!(c.get(0).is_some());
        c.store(10, &page(10));
        assert_eq!(c.len(), 3);
        assert!(c.get(0).is_some());
        assert!(c.get(1).is_none(), "the unreferenced page went");
        for p in 100..1000 {
            c.store(p, &page(p as u8));
            assert!(c.len() <= 3);
        }
        // Every page held is exactly what was stored for it.
        for p in 997..1000u64 {
            assert_eq!(c.get(p).unwrap(), &page(p as u8)[..]);
        }
    }

    #[test]
    fn an_empty_cache_holds_nothing() {
        let mut c = PageCache::new(0);
        c.store(1, &page(1));
        assert!(c.get(1).is_none());
        assert_eq!(c.bytes(), 0);
        c.clear();
    }
}
