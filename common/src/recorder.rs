//! The decision log of a daemon: a config record, every input fed to its core, and every
//! decision's evidence, one JSON line each (DESIGN.md rule 7). `hsb-standby replay FILE` feeds it
//! back through the decision core under any policy.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::decision::record::{config_line, AnyInput, Start};
use crate::decision::{Config, Epoch, Evidence, Nanos, Role};

/// Bytes written before the log stops growing (with one warning).
pub const MAX_LOG_BYTES: u64 = 256 << 20;

/// Appends decision records to a file (or nowhere).
pub struct Recorder {
    out: Option<BufWriter<File>>,
    written: u64,
}

impl Recorder {
    /// A recorder writing to `path` (empty path: record nothing); starts with the config record.
    pub fn open(
        path: &Path,
        t: Nanos,
        role: Role,
        epoch: Epoch,
        cfg: &Config,
        start: Start,
    ) -> std::io::Result<Recorder> {
        if path.as_os_str().is_empty() {
            return Ok(Recorder {
                out: None,
                written: 0,
            });
        }
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let mut r = Recorder {
            out: Some(BufWriter::new(f)),
            written: 0,
        };
        r.line(&config_line(t, role, epoch, cfg, start));
        Ok(r)
    }

    fn line(&mut self, l: &str) {
        let Some(out) = self.out.as_mut() else { return };
        if self.written + l.len() as u64 + 1 > MAX_LOG_BYTES {
            log::warn!(
                "decision log reached {} MiB; no further records",
                MAX_LOG_BYTES >> 20
            );
            self.out = None;
            return;
        }
        self.written += l.len() as u64 + 1;
        let _ = writeln!(out, "{l}");
    }

    /// Record an input.
    pub fn input(&mut self, t: Nanos, input: AnyInput) {
        if self.out.is_some() {
            self.line(&input.to_json_line(t));
        }
    }

    /// Record a decision's evidence (also logged by the caller).
    pub fn evidence(&mut self, e: &Evidence) {
        if self.out.is_some() {
            self.line(&e.to_json_line());
        }
    }

    /// Flush to disk (called once per loop iteration at most).
    pub fn flush(&mut self) {
        if let Some(o) = self.out.as_mut() {
            let _ = o.flush();
        }
    }
}
