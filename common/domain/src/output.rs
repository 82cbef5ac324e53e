//! Output commit bookkeeping (DESIGN.md §2): output produced while checkpoint N is open is held
//! until ack(N). This is the user-space buffer the model domain uses; the xen backend uses the
//! `plug` qdisc for the same rule.

use std::collections::VecDeque;

/// Held output of one client.
#[derive(Debug)]
pub struct Held<C> {
    /// Checkpoint whose ack releases it.
    pub ckpt: u64,
    /// The client it goes to.
    pub client: C,
    /// The bytes.
    pub data: Vec<u8>,
}

/// Output held under commit, bounded in bytes.
#[derive(Debug)]
pub struct OutputCommit<C> {
    held: VecDeque<Held<C>>,
    bytes: usize,
    limit: usize,
    open: u64,
}

impl<C: Copy + PartialEq> OutputCommit<C> {
    /// Hold at most `limit` bytes; the first checkpoint to close is `first_ckpt`.
    pub fn new(limit: usize, first_ckpt: u64) -> OutputCommit<C> {
        OutputCommit {
            held: VecDeque::new(),
            bytes: 0,
            limit,
            open: first_ckpt,
        }
    }

    /// The checkpoint whose ack will release output produced now.
    pub fn open_ckpt(&self) -> u64 {
        self.open
    }

    /// Bytes held.
    pub fn held_bytes(&self) -> usize {
        self.bytes
    }

    /// Whether the buffer is full (the caller stops taking requests until acks release output).
    pub fn full(&self) -> bool {
        self.bytes >= self.limit
    }

    /// Hold output for `client`, released by the ack of the open checkpoint.
    pub fn hold(&mut self, client: C, data: &[u8]) {
        self.bytes += data.len();
        if let Some(last) = self.held.back_mut() {
            if last.ckpt == self.open && last.client == client {
                last.data.extend_from_slice(data);
                return;
            }
        }
        self.held.push_back(Held {
            ckpt: self.open,
            client,
            data: data.to_vec(),
        });
    }

    /// Close the open checkpoint (it is being captured as `ckpt`); later output waits for the
    /// next one.
    pub fn close(&mut self, ckpt: u64) {
        debug_assert_eq!(ckpt, self.open, "checkpoints close in order");
        self.open = ckpt + 1;
    }

    /// Renumber after a resynchronisation: held output keeps its order, and the next checkpoint
    /// to close is `next`. Output held for checkpoints that will never be acked (the session was
    /// lost) is moved to the open checkpoint, so it leaves only after a later ack.
    pub fn rebase(&mut self, next: u64) {
        for h in self.held.iter_mut() {
            h.ckpt = next;
        }
        self.open = next;
    }

    /// Release everything acked by ack(`ckpt`), in order.
    pub fn release(&mut self, ckpt: u64, mut out: impl FnMut(Held<C>)) {
        while self.held.front().is_some_and(|h| h.ckpt <= ckpt) {
            if let Some(h) = self.held.pop_front() {
                self.bytes -= h.data.len();
                out(h);
            }
        }
    }

    /// Whether any output is held for `client`.
    pub fn holds(&self, client: C) -> bool {
        self.held.iter().any(|h| h.client == client)
    }

    /// Drop held output of a client that went away.
    pub fn forget(&mut self, client: C) {
        let mut freed = 0;
        self.held.retain(|h| {
            if h.client == client {
                freed += h.data.len();
                false
            } else {
                true
            }
        });
        self.bytes -= freed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_leaves_only_after_its_ack() {
        let mut o = OutputCommit::<u32>::new(1 << 20, 1);
        o.hold(7, b"a");
        o.hold(7, b"b");
        o.close(1);
        o.hold(8, b"c");
        let mut got = vec![];
        o.release(0, |h| got.push(h.data));
        assert!(got.is_empty());
        o.release(1, |h| got.push(h.data));
        assert_eq!(got, vec![b"ab".to_vec()]);
        o.close(2);
        o.forget(8);
        assert_eq!(o.held_bytes(), 0);
    }

    #[test]
    fn rebase_holds_unacked_output_for_the_next_checkpoint() {
        let mut o = OutputCommit::<u32>::new(4, 1);
        o.hold(1, b"xyzw");
        assert!(o.full());
        o.close(1);
        o.rebase(10);
        let mut n = 0;
        o.release(9, |_| n += 1);
        assert_eq!(n, 0);
        o.close(10);
        o.release(10, |_| n += 1);
        assert_eq!(n, 1);
    }
}
