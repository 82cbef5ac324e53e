//! Non-blocking framing over byte streams: a bounded frame reader and a resumable writer.

use std::io::{self, Read, Write};

use crate::frame::{FrameError, Header, HEADER_LEN};

/// Reads frames from a non-blocking stream into one buffer sized for the largest allowed frame.
#[derive(Debug)]
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max_body: usize,
    received: u64,
}

/// What [`FrameReader::fill`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// Bytes arrived.
    Data(usize),
    /// Nothing more for now.
    WouldBlock,
    /// The peer closed the stream.
    Eof,
}

impl FrameReader {
    /// A reader accepting bodies of at most `max_body` bytes.
    pub fn new(max_body: usize) -> FrameReader {
        FrameReader {
            buf: vec![0u8; HEADER_LEN + max_body],
            start: 0,
            end: 0,
            max_body,
            received: 0,
        }
    }

    /// A reader with no buffer, standing in while the real one is borrowed out of a connection.
    pub fn detached() -> FrameReader {
        FrameReader {
            buf: Vec::new(),
            start: 0,
            end: 0,
            max_body: 0,
            received: 0,
        }
    }

    /// The largest body this reader accepts.
    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// Accept bodies of up to `max_body` bytes from now on, keeping what is buffered: a
    /// connection starts with a small reader and gets the full one only once its peer has
    /// proved it holds the cluster key. The buffer never shrinks below what it holds.
    pub fn set_max_body(&mut self, max_body: usize) {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        self.buf.resize((HEADER_LEN + max_body).max(self.end), 0);
        self.max_body = max_body;
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Bytes read so far (wrapping): it moves while the peer's stream gets through, however
    /// slowly, even while no frame completes.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Read once from `src` into free space.
    pub fn fill(&mut self, src: &mut impl Read) -> io::Result<Fill> {
        if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            // A whole frame is buffered; the caller must take it first.
            return Ok(Fill::Data(0));
        }
        match src.read(&mut self.buf[self.end..]) {
            Ok(0) => Ok(Fill::Eof),
            Ok(n) => {
                self.end += n;
                self.received = self.received.wrapping_add(n as u64);
                Ok(Fill::Data(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Fill::WouldBlock),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Fill::Data(0)),
            Err(e) => Err(e),
        }
    }

    /// The next complete frame (header checked, CRC/MAC not yet), or `None` if more bytes are
    /// needed. An error means the stream is unusable and must be dropped.
    pub fn next_frame(&mut self) -> Result<Option<(Header, &[u8])>, FrameError> {
        let avail = self.end - self.start;
        if avail < HEADER_LEN {
            self.compact_if_empty();
            return Ok(None);
        }
        let h = Header::parse(&self.buf[self.start..self.end], self.max_body)?;
        let len = h.frame_len();
        if avail < len {
            return Ok(None);
        }
        let s = self.start;
        self.start += len;
        Ok(Some((h, &self.buf[s..s + len])))
    }

    fn compact_if_empty(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }
}

/// Write `buf[*pos..]` until done or the stream would block; returns whether all is written.
pub fn write_some(w: &mut impl Write, buf: &[u8], pos: &mut usize) -> io::Result<bool> {
    while *pos < buf.len() {
        match w.write(&buf[*pos..]) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "peer closed")),
            Ok(n) => *pos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// A bounded outgoing byte queue for small frames (acks, hellos, replies).
#[derive(Debug)]
pub struct OutQueue {
    buf: Vec<u8>,
    pos: usize,
    limit: usize,
}

impl OutQueue {
    /// A queue holding at most `limit` unsent bytes.
    pub fn new(limit: usize) -> OutQueue {
        OutQueue {
            buf: Vec::new(),
            pos: 0,
            limit,
        }
    }

    /// Append bytes; `false` if that would exceed the limit (nothing is appended).
    pub fn push(&mut self, b: &[u8]) -> bool {
        if self.pending() + b.len() > self.limit {
            return false;
        }
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        self.buf.extend_from_slice(b);
        true
    }

    /// Unsent bytes.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Write as much as possible; returns whether the queue is empty.
    pub fn flush(&mut self, w: &mut impl Write) -> io::Result<bool> {
        let done = write_some(w, &self.buf, &mut self.pos)?;
        if done {
            self.buf.clear();
            self.pos = 0;
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{seal, Kind, MacKey};

    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        step: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            if self.pos == self.data.len() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = self.step.min(b.len()).min(self.data.len() - self.pos);
            b[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    fn frame(len: usize, seq: u64) -> Vec<u8> {
        let mut f = vec![0x5au8; HEADER_LEN + len];
        Header {
            kind: Kind::Pages,
            body_len: len as u32,
            seq,
        }
        .emit(&mut f);
        seal(&mut f, &MacKey([0; 32]));
        f
    }

    #[test]
    fn frames_survive_any_fragmentation() {
        let mut stream = vec![];
        for (i, len) in [0usize, 1, 100, 4000, 65536].iter().enumerate() {
            stream.extend(frame(*len, i as u64));
        }
        for step in [1usize, 7, 36, 1000, 1 << 20] {
            let mut r = FrameReader::new(70_000);
            let mut src = Trickle {
                data: stream.clone(),
                pos: 0,
                step,
            };
            let mut seqs = vec![];
            loop {
                while let Some((h, _)) = r.next_frame().unwrap() {
                    seqs.push(h.seq);
                }
                if r.fill(&mut src).unwrap() == Fill::WouldBlock {
                    break;
                }
            }
            assert_eq!(seqs, vec![0, 1, 2, 3, 4], "step {step}");
            // Every byte counted, whatever the pieces it came in.
            assert_eq!(r.received(), stream.len() as u64, "step {step}");
        }
    }

    #[test]
    fn oversized_header_is_rejected_before_reading_the_body() {
        let mut r = FrameReader::new(100);
        let mut src = Trickle {
            data: frame(101, 0),
            pos: 0,
            step: 1 << 20,
        };
        r.fill(&mut src).unwrap();
        assert!(matches!(
            r.next_frame(),
            Err(FrameError::Oversized { len: 101, max: 100 })
        ));
    }

    #[test]
    fn a_small_reader_grows_without_losing_what_it_buffered() {
        let mut stream = frame(10, 0);
        stream.extend(frame(4000, 1));
        for grow in [false, true] {
            let mut r = FrameReader::new(16);
            let mut src = Trickle {
                data: stream.clone(),
                pos: 0,
                step: 1 << 20,
            };
            // One read fills the small buffer: the first frame and the start of the second.
            assert_eq!(r.fill(&mut src).unwrap(), Fill::Data(HEADER_LEN + 16));
            assert_eq!(r.next_frame().unwrap().unwrap().0.seq, 0);
            if !grow {
                // The second frame's header announces 4000 bytes: too big for this reader.
                r.fill(&mut src).unwrap();
                assert!(matches!(
                    r.next_frame(),
                    Err(FrameError::Oversized { len: 4000, .. })
                ));
                continue;
            }
            r.set_max_body(4096);
            assert_eq!(r.max_body(), 4096);
            let got = loop {
                if let Some((h, f)) = r.next_frame().unwrap() {
                    break (h.seq, f.len());
                }
                assert_ne!(r.fill(&mut src).unwrap(), Fill::WouldBlock);
            };
            assert_eq!(got, (1, HEADER_LEN + 4000));
        }
    }

    #[test]
    fn out_queue_is_bounded() {
        let mut q = OutQueue::new(4);
        assert!(q.push(b"abc"));
        assert!(!q.push(b"de"));
        let mut sink = vec![];
        assert!(q.flush(&mut sink).unwrap());
        assert_eq!(sink, b"abc");
    }
}
