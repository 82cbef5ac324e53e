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
mod tests {
    use super::*;
    use crate::decision::json;
    use crate::decision::standby::Input as SInput;

    #[test]
    fn wall_clock_stamps_are_rfc3339_utc_milliseconds() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_868_799_999), "2000-02-29T23:59:59.999Z");
        assert_eq!(
            rfc3339_millis(1_700_000_000_123),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(
            rfc3339_millis(4_102_444_799_999),
            "2099-12-31T23:59:59.999Z"
        );
        assert_eq!(
            rfc3339_millis(4_107_542_400_000),
            "2100-03-01T00:00:00.000Z"
        );
        let now = wall_clock_rfc3339();
        assert!(
            now.len() == 24 && now.ends_with('Z') && now > "2024".into(),
            "{now}"
        );
    }

    #[test]
    fn the_stamp_goes_after_t() {
        assert_eq!(
            stamped("{\"k\":\"input\",\"t\":5,\"role\":\"x\"}", "W", ""),
            "{\"k\":\"input\",\"t\":5,\"wall\":\"W\",\"role\":\"x\"}"
        );
        assert_eq!(
            stamped("{\"k\":\"config\",\"t\":5}", "W", ",\"continued\":true"),
            "{\"k\":\"config\",\"t\":5,\"wall\":\"W\",\"continued\":true}"
        );
        assert_eq!(stamped("{\"a\":1}", "W", ""), "{\"wall\":\"W\",\"a\":1}");
        assert_eq!(stamped("{}", "W", ""), "{\"wall\":\"W\"}");
        assert_eq!(stamped("x", "W", ""), "x");
    }

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "hsb-recorder-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        d
    }

    fn open(path: &Path, rotation: Rotation) -> Recorder {
        Recorder::open(
            path,
            rotation,
            Nanos(0),
            Role::Standby,
            Epoch(1),
            &Config::default(),
            Start {
                replica: Some(0),
                ..Start::default()
            },
        )
        .expect("open")
    }

    fn heartbeat(r: &mut Recorder, i: u64) {
        r.input(
            Nanos::from_millis(i),
            AnyInput::Standby(SInput::Heartbeat {
                link: 0,
                epoch: Epoch(1),
            }),
        );
    }

    fn lines(p: &Path) -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    /// Every record carries the wall clock, and the replay still reads the log.
    #[test]
    fn records_carry_the_wall_clock_and_replay() {
        let d = scratch("wall");
        let p = d.join("decisions");
        let mut r = open(&p, Rotation::default());
        for i in 0..10 {
            heartbeat(&mut r, i * 10);
        }
        r.flush();
        let l = lines(&p);
        assert_eq!(l.len(), 11);
        for line in &l {
            let v = json::parse(line).expect("json");
            let wall = v.get("wall").and_then(json::Value::as_text).expect("wall");
            assert!(wall.len() == 24 && wall.ends_with('Z'), "{wall}");
        }
        crate::decision::replay(
            l.iter().map(String::as_str),
            crate::decision::Policy::ClientOriented,
        )
        .expect("replays");
        assert_eq!(r.stats().records, 11);
        std::fs::remove_dir_all(&d).expect("cleanup");
    }

    /// Regression: the log stopped for good at 256 MiB (one warning). It now rotates: the newest
    /// records are in FILE, older ones in FILE.1 .. FILE.keep, nothing past keep, and each file
    /// starts with a config record, so each replays on its own and together they replay as one.
    #[test]
    fn the_log_rotates_and_keeps_n_files() {
        let d = scratch("rotate");
        let p = d.join("decisions");
        let rot = Rotation {
            max_bytes: MIN_MAX_BYTES,
            keep: 2,
        };
        let mut r = open(&p, rot);
        let mut i = 0;
        while r.stats().rotations < 4 {
            heartbeat(&mut r, i);
            i += 1;
            r.flush();
            assert!(i < 100_000, "never rotated");
        }
        heartbeat(&mut r, i);
        r.flush();
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", p.display()));
        assert!(numbered(1).exists() && numbered(2).exists());
        assert!(!numbered(3).exists(), "keeps 2");
        let mut all = Vec::new();
        for f in [numbered(2), numbered(1), p.clone()] {
            let size = std::fs::metadata(&f).expect("file").len();
            assert!(size <= MIN_MAX_BYTES, "{} is {size} bytes", f.display());
            let l = lines(&f);
            assert!(l[0].contains("\"k\":\"config\""), "{}", l[0]);
            assert!(l[0].contains("\"continued\":true"), "{}", l[0]);
            crate::decision::replay(
                l.iter().map(String::as_str),
                crate::decision::Policy::ClientOriented,
            )
            .expect("a rotated file replays alone");
            all.extend(l);
        }
        crate::decision::replay(
            all.iter().map(String::as_str),
            crate::decision::Policy::ClientOriented,
        )
        .expect("the files replay together");
        // The last record is the last heartbeat; none is missing between the files kept.
        let last = json::parse(all.last().expect("records")).expect("json");
        assert_eq!(
            last.get("t").and_then(json::Value::as_text),
            Some(Nanos::from_millis(i).0.to_string())
        );
        let stats = r.stats();
        assert_eq!((stats.errors, stats.lost, stats.rotations), (0, 0, 4));
        // keep = 0: the log starts over.
        let q = d.join("small");
        let mut r = open(
            &q,
            Rotation {
                max_bytes: MIN_MAX_BYTES,
                keep: 0,
            },
        );
        while r.stats().rotations < 2 {
            heartbeat(&mut r, 0);
            r.flush();
        }
        assert!(!PathBuf::from(format!("{}.1", q.display())).exists());
        assert!(std::fs::metadata(&q).expect("file").len() <= MIN_MAX_BYTES);
        std::fs::remove_dir_all(&d).expect("cleanup");
    }

    /// logrotate's way: rename the file, then SIGHUP (reopen): new records go to a new file at
    /// the configured path, and what was taken before goes to the renamed one.
    #[test]
    fn reopen_starts_a_new_file_at_the_path() {
        let d = scratch("reopen");
        let p = d.join("decisions");
        let mut r = open(&p, Rotation::default());
        heartbeat(&mut r, 1);
        let old = d.join("decisions.old");
        std::fs::rename(&p, &old).expect("rename");
        r.reopen(Nanos::from_millis(2)).expect("reopen");
        heartbeat(&mut r, 3);
        r.flush();
        assert_eq!(lines(&old).len(), 2, "config and the first heartbeat");
        let new = lines(&p);
        assert_eq!(new.len(), 2, "{new:?}");
        assert!(new[0].contains("\"continued\":true"));
        assert_eq!(r.stats().reopens, 1);
        std::fs::remove_dir_all(&d).expect("cleanup");
    }

    /// A failing file is counted, records wait (bounded) and go out once it works again; while
    /// the file cannot be opened at all, opening is tried again.
    #[test]
    fn failures_are_counted_and_retried() {
        let d = scratch("fail");
        let p = d.join("sub").join("decisions");
        let mut r = open(&p, Rotation::default());
        // The directory goes away and a file takes its place: reopening fails.
        std::fs::remove_dir_all(d.join("sub")).expect("rm");
        std::fs::write(d.join("sub"), b"not a directory").expect("file");
        assert!(r.reopen(Nanos::from_millis(1)).is_err());
        heartbeat(&mut r, 2);
        r.flush();
        let s = r.stats();
        assert!(s.errors >= 1, "{s:?}");
        assert_eq!(s.lost, 0);
        // Fixed: the next attempt after RETRY opens it and the waiting record is written.
        std::fs::remove_file(d.join("sub")).expect("rm");
        if let Some(l) = r.log.as_mut() {
            l.retry_at = None;
        }
        r.flush();
        let l = lines(&p);
        assert!(
            l.iter().any(|l| l.contains("\"in\":\"heartbeat\"")),
            "{l:?}"
        );
        // Writes to a full device fail, are counted, and records beyond the buffer are lost
        // and counted, never silently dropped.
        if Path::new("/dev/full").exists() {
            let mut r = open(Path::new("/dev/full"), Rotation::default());
            for i in 0..40_000 {
                heartbeat(&mut r, i);
            }
            r.flush();
            let s = r.stats();
            assert!(s.errors >= 1, "{s:?}");
            assert!(s.lost >= 1, "{s:?}");
            assert_eq!(s.records + s.lost, 40_001, "{s:?}");
        }
        std::fs::remove_dir_all(&d).expect("cleanup");
    }
}
