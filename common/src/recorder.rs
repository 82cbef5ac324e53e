//! The decision log of a daemon: a config record, every input fed to its core, and every
//! decision's evidence, one JSON line each (DESIGN.md rule 7). `hsb-standby replay FILE` feeds it
//! back through the decision core under any policy.
//!
//! Every record carries `wall`, the wall clock in RFC 3339 UTC with milliseconds, beside its
//! monotonic `t`, so a person can match records with other logs. It is written, never read back:
//! decisions use monotonic time only (F11), and the replay skips it.
//!
//! The log never stops recording silently:
//! - Size: past `decision_log_max` bytes the file is rotated (`FILE` becomes `FILE.1`, `FILE.1`
//!   becomes `FILE.2`, ... up to `decision_log_keep` files; the oldest is removed) and a new
//!   `FILE` is started.
//! - `SIGHUP` ([`Recorder::reopen`]): the file is reopened at its path, for logrotate (rename the
//!   file, then send SIGHUP).
//! - Each new file starts with the config record again, marked `"continued":true`, so a file
//!   replays on its own; the replay of files put back together in order skips such a record
//!   when the role's core already runs, and so decides exactly as the daemon did.
//! - A failed write is counted ([`RecorderStats`], in `status`), logged at most a few times a
//!   minute, and tried again: the bytes wait in a bounded buffer ([`PENDING_MAX`]); records that
//!   do not fit in it are counted as lost. A file that cannot be opened or rotated is tried
//!   again every [`RETRY`].

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{Config as FileConfig, ConfigError, KeySpec, ValueKind};
use crate::decision::record::{config_line, AnyInput, Start};
use crate::decision::{Config, Epoch, Evidence, Nanos, Role};
use crate::logging::LogLimiter;
use crate::time::Clock;

/// Default size at which the log is rotated.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// Smallest `decision_log_max` accepted (a few hundred records).
pub const MIN_MAX_BYTES: u64 = 64 << 10;
/// Most rotated files kept.
pub const MAX_KEEP: u32 = 100;
/// Most bytes waiting for the file while writes fail; records beyond are lost (and counted).
pub const PENDING_MAX: usize = 1 << 20;
/// Bytes waiting before they are written without waiting for the loop's flush.
const FLUSH_AT: usize = 64 << 10;
/// Time between two attempts to open or rotate the file after one failed.
pub const RETRY: Duration = Duration::from_secs(1);

/// The `decision_log_max` key.
pub const MAX_KEY: KeySpec = KeySpec {
    key: "decision_log_max",
    kind: ValueKind::Size,
    default: Some("64MiB"),
    help: "size at which the decision log is rotated (FILE to FILE.1 and so on; at least 64KiB)",
};

/// The `decision_log_keep` key.
pub const KEEP_KEY: KeySpec = KeySpec {
    key: "decision_log_keep",
    kind: ValueKind::Int { min: 0, max: 100 },
    default: Some("3"),
    help: "rotated decision logs kept (FILE.1 newest ... FILE.N oldest); 0: the log starts over at decision_log_max",
};

/// Size-based rotation of the decision log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate before a record would take the file past this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept (`FILE.1` .. `FILE.keep`).
    pub keep: u32,
}

impl Default for Rotation {
    fn default() -> Rotation {
        Rotation {
            max_bytes: DEFAULT_MAX_BYTES,
            keep: 3,
        }
    }
}

impl Rotation {
    /// From the `decision_log_max` and `decision_log_keep` keys.
    pub fn from_config(c: &FileConfig) -> Result<Rotation, ConfigError> {
        let max_bytes = c.size(MAX_KEY.key)?;
        if max_bytes < MIN_MAX_BYTES {
            return Err(c.error_at(
                MAX_KEY.key,
                &format!("expected at least 64KiB, got {max_bytes} bytes"),
            ));
        }
        let keep = u32::try_from(c.int(KEEP_KEY.key)?)
            .ok()
            .filter(|k| *k <= MAX_KEEP)
            .ok_or_else(|| c.error_at(KEEP_KEY.key, "expected from 0 to 100"))?;
        Ok(Rotation { max_bytes, keep })
    }
}

/// What the log did, for `status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecorderStats {
    /// Records taken (written or waiting to be).
    pub records: u64,
    /// Writes, opens and rotations that failed.
    pub errors: u64,
    /// Records dropped because writes kept failing and the buffer was full.
    pub lost: u64,
    /// Rotations done.
    pub rotations: u64,
    /// Reopens done (SIGHUP).
    pub reopens: u64,
}

/// Causes of rate-limited log lines.
mod cause {
    pub const WRITE: usize = 0;
    pub const OPEN: usize = 1;
    pub const ROTATE: usize = 2;
    pub const LOST: usize = 3;
    pub const COUNT: usize = 4;
}

/// Appends decision records to a file (or nowhere).
pub struct Recorder {
    log: Option<Log>,
}

struct Log {
    path: PathBuf,
    rotation: Rotation,
    file: Option<File>,
    /// Bytes in the current file (what was there when it was opened, and what we wrote).
    written: u64,
    /// Records not yet written, oldest first (at most [`PENDING_MAX`] bytes in all).
    pending: VecDeque<Pending>,
    pending_bytes: usize,
    /// Bytes of the oldest pending record already written (a write stopped inside it).
    partial: usize,
    /// For the config record that starts every file.
    role: Role,
    epoch: Epoch,
    cfg: Config,
    start: Start,
    /// The latest record time seen.
    last_t: Nanos,
    /// No attempt to open or rotate before this time, after one failed.
    retry_at: Option<Nanos>,
    clock: Clock,
    limits: LogLimiter<{ cause::COUNT }>,
    stats: RecorderStats,
}

/// A record waiting to be written: its time, and its line with the newline.
struct Pending {
    t: Nanos,
    bytes: Vec<u8>,
}

impl Recorder {
    /// A recorder that records nothing (no `decision_log`).
    pub fn off() -> Recorder {
        Recorder { log: None }
    }

    /// A recorder writing to `path` (empty path: record nothing); starts with the config record.
    /// A file that cannot be opened at start is an error (the daemon refuses to start); later,
    /// files are rotated past `rotation.max_bytes` and failures are retried.
    pub fn open(
        path: &Path,
        rotation: Rotation,
        t: Nanos,
        role: Role,
        epoch: Epoch,
        cfg: &Config,
        start: Start,
    ) -> io::Result<Recorder> {
        if path.as_os_str().is_empty() {
            return Ok(Recorder { log: None });
        }
        let mut log = Log {
            path: path.to_path_buf(),
            rotation,
            file: None,
            written: 0,
            pending: VecDeque::new(),
            pending_bytes: 0,
            partial: 0,
            role,
            epoch,
            cfg: cfg.clone(),
            start,
            last_t: t,
            retry_at: None,
            clock: Clock::new(),
            limits: LogLimiter::new(3, Duration::from_secs(60)),
            stats: RecorderStats::default(),
        };
        log.open_file(false)?;
        Ok(Recorder { log: Some(log) })
    }

    /// Record an input.
    pub fn input(&mut self, t: Nanos, input: AnyInput) {
        if let Some(l) = self.log.as_mut() {
            l.record(t, &input.to_json_line(t));
        }
    }

    /// Record a decision's evidence (also logged by the caller).
    pub fn evidence(&mut self, e: &Evidence) {
        if let Some(l) = self.log.as_mut() {
            // A new file's config record names the latest epoch, not the first.
            l.epoch = l.epoch.max(e.epoch);
            if let Some(n) = e.new_epoch {
                l.epoch = l.epoch.max(n);
            }
            l.record(e.at, &e.to_json_line());
        }
    }

    /// Write what waits (called once per loop iteration at most); a file that could not be
    /// opened is tried again here.
    pub fn flush(&mut self) {
        if let Some(l) = self.log.as_mut() {
            if l.file.is_none() && l.due() {
                let _ = l.open_file(true);
            }
            l.write_pending();
        }
    }

    /// Reopen the file at its path (SIGHUP, after logrotate renamed it): what waits goes to the
    /// old file first, then records go to a new file at the configured path (created if
    /// missing), which starts with the config record. `Ok` also when there is no log.
    pub fn reopen(&mut self, now: Nanos) -> io::Result<()> {
        let Some(l) = self.log.as_mut() else {
            return Ok(());
        };
        l.last_t = l.last_t.max(now);
        l.write_pending();
        l.file = None;
        l.stats.reopens += 1;
        l.open_file(true)
    }

    /// SIGHUP: [`Recorder::reopen`], with a log line saying what happened.
    pub fn sighup(&mut self, now: Nanos) {
        let Some(path) = self.path().map(Path::to_path_buf) else {
            return;
        };
        match self.reopen(now) {
            Ok(()) => log::info!("SIGHUP: decision log reopened at {}", path.display()),
            Err(e) => log::error!(
                "SIGHUP: decision log {}: cannot reopen: {e}; records wait and opening is retried",
                path.display()
            ),
        }
    }

    /// `key value` pairs for the daemon's `status` (none without a log).
    pub fn status(&self) -> Vec<(&'static str, String)> {
        let Some(l) = self.log.as_ref() else {
            return Vec::new();
        };
        let s = l.stats;
        vec![
            ("decision_log_records", s.records.to_string()),
            ("decision_log_errors", s.errors.to_string()),
            ("decision_log_lost", s.lost.to_string()),
            ("decision_log_rotations", s.rotations.to_string()),
            ("decision_log_waiting_bytes", l.pending_bytes.to_string()),
        ]
    }

    /// The file recorded to, if any.
    pub fn path(&self) -> Option<&Path> {
        self.log.as_ref().map(|l| l.path.as_path())
    }

    /// What the log did.
    pub fn stats(&self) -> RecorderStats {
        self.log
            .as_ref()
            .map_or_else(RecorderStats::default, |l| l.stats)
    }
}

impl Log {
    fn due(&self) -> bool {
        self.retry_at.is_none_or(|r| self.clock.now() >= r)
    }

    fn failed(&mut self, c: usize, what: &str, e: &io::Error) {
        self.stats.errors += 1;
        let now = self.clock.now();
        self.retry_at = Some(now.plus(RETRY));
        if let Some(n) = self.limits.allow(c, now) {
            log::error!(
                "decision log {}: {what}: {e}; retrying (errors so far {}, records lost {}){}",
                self.path.display(),
                self.stats.errors,
                self.stats.lost,
                LogLimiter::<{ cause::COUNT }>::note(n)
            );
        }
    }

    /// Open `path` for appending. The file starts with the config record (marked continued
    /// after a rotation or reopen), stamped with the time of the oldest record still waiting,
    /// so times never go back within a file. A record a failed write left half in the old file
    /// is written whole to the new one.
    fn open_file(&mut self, continued: bool) -> io::Result<()> {
        let opened = (|| {
            if let Some(dir) = self.path.parent() {
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir)?;
                }
            }
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            let len = f.metadata()?.len();
            Ok::<_, io::Error>((f, len))
        })();
        match opened {
            Ok((f, len)) => {
                self.file = Some(f);
                self.written = len;
                self.retry_at = None;
                self.partial = 0;
                let t = self.pending.front().map_or(self.last_t, |p| p.t);
                let config = config_line(t, self.role, self.epoch, &self.cfg, self.start);
                let extra = if continued { ",\"continued\":true" } else { "" };
                let mut bytes = stamped(&config, &wall_clock_rfc3339(), extra).into_bytes();
                bytes.push(b'\n');
                self.stats.records += 1;
                self.pending_bytes += bytes.len();
                self.pending.push_front(Pending { t, bytes });
                Ok(())
            }
            Err(e) => {
                self.failed(cause::OPEN, "cannot open", &e);
                Err(e)
            }
        }
    }

    /// Take one record at time `t`: stamped with the wall clock, after what waits (rotating
    /// first if it would take the file past its size).
    fn record(&mut self, t: Nanos, line: &str) {
        self.last_t = self.last_t.max(t);
        let mut bytes = stamped(line, &wall_clock_rfc3339(), "").into_bytes();
        bytes.push(b'\n');
        let size = self.written + self.pending_bytes as u64;
        if self.file.is_some()
            && size > 0
            && size + bytes.len() as u64 > self.rotation.max_bytes
            && self.due()
        {
            self.rotate();
        }
        if self.pending_bytes + bytes.len() > PENDING_MAX {
            self.stats.lost += 1;
            if let Some(n) = self.limits.allow(cause::LOST, self.clock.now()) {
                log::error!(
                    "decision log {}: {} records lost so far: writes keep failing and {} KiB wait{}",
                    self.path.display(),
                    self.stats.lost,
                    self.pending_bytes >> 10,
                    LogLimiter::<{ cause::COUNT }>::note(n)
                );
            }
            return;
        }
        self.stats.records += 1;
        self.pending_bytes += bytes.len();
        self.pending.push_back(Pending { t, bytes });
        // Between the loop's flushes; after a failure only the loop's flush tries again (one
        // system call a turn), not every record.
        if self.pending_bytes >= FLUSH_AT && self.due() {
            self.write_pending();
        }
    }

    /// Write what waits to the open file (up to 64 records a system call); what a failed write
    /// left stays for the next try.
    fn write_pending(&mut self) {
        let Some(f) = self.file.as_mut() else { return };
        while !self.pending.is_empty() {
            let slices: Vec<IoSlice<'_>> = self
                .pending
                .iter()
                .take(64)
                .enumerate()
                .map(|(i, p)| IoSlice::new(&p.bytes[if i == 0 { self.partial } else { 0 }..]))
                .collect();
            let mut n = match f.write_vectored(&slices) {
                Ok(0) => {
                    let e = io::Error::new(io::ErrorKind::WriteZero, "wrote nothing");
                    return self.failed(cause::WRITE, "write failed", &e);
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.failed(cause::WRITE, "write failed", &e),
            };
            self.written += n as u64;
            while n > 0 {
                let Some(front) = self.pending.front() else {
                    break;
                };
                let left = front.bytes.len() - self.partial;
                if n >= left {
                    n -= left;
                    self.pending_bytes -= front.bytes.len();
                    self.pending.pop_front();
                    self.partial = 0;
                } else {
                    self.partial += n;
                    n = 0;
                }
            }
        }
    }

    /// `FILE.(keep-1)` to `FILE.keep`, ..., `FILE` to `FILE.1`, then a new `FILE`. If the
    /// current file cannot be renamed, records go on into it, and the rotation is tried again
    /// after [`RETRY`].
    fn rotate(&mut self) {
        self.write_pending();
        let path = self.path.clone();
        let numbered = |i: u32| {
            let mut p = path.clone().into_os_string();
            p.push(format!(".{i}"));
            PathBuf::from(p)
        };
        let moved = if self.rotation.keep == 0 {
            std::fs::remove_file(&self.path)
        } else {
            let mut r = Ok(());
            for i in (1..self.rotation.keep).rev() {
                match std::fs::rename(numbered(i), numbered(i + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => r = Err(e),
                    _ => {}
                }
            }
            // The oldest rotated file is overwritten by the rename; an error above only means
            // one more old file is lost, never the current one.
            if let Err(e) = r {
                self.failed(cause::ROTATE, "cannot shift the rotated files", &e);
            }
            std::fs::rename(&self.path, numbered(1))
        };
        if let Err(e) = moved {
            self.failed(cause::ROTATE, "cannot rotate", &e);
            return;
        }
        self.stats.rotations += 1;
        self.file = None;
        let _ = self.open_file(true);
    }
}

/// `line` (a JSON object as the record writers make it, `t` its second member) with
/// `"wall":"..."` and then `extra` (`,"key":value...` or empty) after `t`; a line of another
/// shape gets them first. The writers put `t` second, so `,"t":` first occurs there, and its
/// value is a number (no comma or brace inside).
fn stamped(line: &str, wall: &str, extra: &str) -> String {
    let insert = format!("\"wall\":\"{wall}\"{extra}");
    let after_t = line.find(",\"t\":").and_then(|i| {
        let v = i + ",\"t\":".len();
        line[v..].find([',', '}']).map(|j| v + j)
    });
    match after_t {
        Some(at) => format!("{},{insert}{}", &line[..at], &line[at..]),
        None => match line.strip_prefix('{') {
            Some(rest) if rest.trim_start().starts_with('}') => format!("{{{insert}{rest}"),
            Some(rest) => format!("{{{insert},{rest}"),
            None => line.to_string(),
        },
    }
}

/// The wall clock as RFC 3339 UTC with milliseconds, for the `wall` field. The decision log's
/// one wall-clock read: it goes into the record's text and nowhere else, never into a decision
/// (tests/faults.rs `daemons_never_read_the_wall_clock` allows exactly this function).
pub fn wall_clock_rfc3339() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    rfc3339_millis(ms)
}

/// Milliseconds since 1970 as RFC 3339 UTC, e.g. `2023-11-14T22:13:20.123Z` (the proleptic
/// Gregorian calendar, from days to civil dates as in H. Hinnant's `civil_from_days`).
pub fn rfc3339_millis(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = secs / 86_400;
    let sod = secs % 86_400;
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        unix_ms % 1000
    )
}

#[cfg(test)]
#[path = "recorder_tests.rs"]
mod tests;
