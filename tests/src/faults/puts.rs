//! The suite's second client, for the guest's disk: sequential `PUT`s of keys of its own, each a
//! new key with its own value, recorded with whether it was acknowledged. At the end of a case
//! (after the decision and the healing) every acknowledged key is read back with `GET` from
//! whichever copy serves then, and looked up in the PUT log on the disk images of the serving
//! copy and of the copy protecting it (the model's `PUT` appends its record to the disk before
//! the reply is produced): an acknowledged PUT missing or with another value is lost.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::Client;

/// Most PUTs a case sends (the model's table has 2048 slots, its disk log 4096 records: both
/// hold every key of a case).
pub const MAX_PUTS: usize = 1500;
/// A PUT starts at most this often (a copy serving without output commit answers at once).
const PUT_EVERY: Duration = Duration::from_millis(20);
/// GETs sent before their replies are read (replies wait for a checkpoint's acknowledgement).
const READ_BATCH: usize = 50;
/// How long the read-back may try (connections, retries of keys not read).
const READ_FOR: Duration = Duration::from_secs(15);

/// One PUT of the client's history.
#[derive(Debug, Clone)]
pub struct Put {
    pub start: Instant,
    pub end: Instant,
    /// Sequence number of the PUT (its key is `key(n)`, its value `value(n)`).
    pub n: usize,
    /// The reply was `OK`.
    pub acked: bool,
}

/// The key of PUT `n` (distinct per PUT, well within the model's 40 bytes).
pub fn key(n: usize) -> String {
    format!("fk{n}")
}

/// The value of PUT `n`.
pub fn value(n: usize) -> String {
    format!("v{n}x{}", n.wrapping_mul(2_654_435_761) % 1_000_003)
}

/// A sequential PUT client of the service address until `stop` (or [`MAX_PUTS`]), waiting up to
/// `timeout` for each reply.
pub fn put_client(
    svc: SocketAddr,
    stop: Arc<AtomicBool>,
    timeout: Duration,
) -> std::thread::JoinHandle<Vec<Put>> {
    std::thread::spawn(move || {
        let mut history = vec![];
        let mut c: Option<Client> = None;
        while !stop.load(Ordering::Relaxed) && history.len() < MAX_PUTS {
            let t0 = Instant::now();
            let n = history.len();
            if c.is_none() {
                c = Client::connect(svc, Duration::from_millis(300)).ok();
                if let Some(cl) = &c {
                    cl.set_timeout(timeout);
                }
            }
            let reply = c
                .as_mut()
                .and_then(|cl| cl.request(&format!("PUT {} {}", key(n), value(n))).ok());
            let acked = reply.as_deref() == Some("OK");
            if reply.is_none() {
                c = None;
                std::thread::sleep(Duration::from_millis(20));
            }
            history.push(Put {
                start: t0,
                end: Instant::now(),
                n,
                acked,
            });
            if let Some(rest) = PUT_EVERY.checked_sub(t0.elapsed()) {
                std::thread::sleep(rest);
            }
        }
        history
    })
}

/// What reading the acknowledged PUTs back found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutCheck {
    /// PUTs acknowledged.
    pub acked: u64,
    /// Of them, the key absent (`NIL`) at the end.
    pub missing: u64,
    /// Of them, the key with another value.
    pub wrong: u64,
    /// Of them, not read at all (no copy answered the `GET`).
    pub unread: u64,
}

impl PutCheck {
    /// Acknowledged PUTs not shown to be there: missing, wrong or unread.
    pub fn bad(&self) -> u64 {
        self.missing + self.wrong + self.unread
    }
}

/// Check the acknowledged PUTs of `puts` against `got`, each key's value read back (`None`: not
/// read; `Some("NIL")`: absent).
pub fn check_puts(puts: &[Put], got: &HashMap<String, Option<String>>) -> PutCheck {
    let mut c = PutCheck::default();
    for p in puts.iter().filter(|p| p.acked) {
        c.acked += 1;
        match got.get(&key(p.n)).cloned().flatten() {
            None => c.unread += 1,
            Some(v) if v == "NIL" => c.missing += 1,
            Some(v) if v != value(p.n) => c.wrong += 1,
            Some(_) => {}
        }
    }
    c
}

/// Read every acknowledged key back with `GET` from the service address (whichever copy serves
/// it now), in pipelined batches; keys not read are tried again until [`READ_FOR`].
pub fn read_back(svc: SocketAddr, puts: &[Put]) -> HashMap<String, Option<String>> {
    let mut got: HashMap<String, Option<String>> = puts
        .iter()
        .filter(|p| p.acked)
        .map(|p| (key(p.n), None))
        .collect();
    let t = Instant::now();
    let mut c: Option<Client> = None;
    while t.elapsed() < READ_FOR {
        let todo: Vec<String> = got
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.clone())
            .take(READ_BATCH)
            .collect();
        if todo.is_empty() {
            break;
        }
        if c.is_none() {
            c = Client::connect(svc, Duration::from_millis(500)).ok();
            if let Some(cl) = &c {
                cl.set_timeout(Duration::from_secs(3));
            }
        }
        let Some(cl) = c.as_mut() else {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        let sent = todo
            .iter()
            .try_for_each(|k| cl.send_only(&format!("GET {k}")));
        let mut ok = sent.is_ok();
        for k in &todo {
            match ok.then(|| cl.read_line()) {
                Some(Ok(v)) if !v.starts_with("ERR") => {
                    got.insert(k.clone(), Some(v));
                }
                _ => ok = false,
            }
        }
        if !ok {
            c = None;
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    got
}

/// Each key's newest value in the PUT log of the disk image at `image` (read from outside the
/// daemon that owns it), or why it could not be read.
pub fn disk_log(image: &Path) -> Result<HashMap<String, String>, String> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(image).map_err(|e| format!("{}: {e}", image.display()))?;
    let size = f
        .metadata()
        .map_err(|e| format!("{}: {e}", image.display()))?
        .len();
    let mut log = vec![0u8; hsb_domain::model::put_log_bytes(size) as usize];
    f.read_exact_at(&mut log, 0)
        .map_err(|e| format!("{}: {e}", image.display()))?;
    let mut newest: HashMap<String, (u64, String)> = HashMap::new();
    for (seq, k, v) in hsb_domain::model::put_log_records(&log) {
        if newest.get(&k).is_none_or(|(s, _)| *s < seq) {
            newest.insert(k, (seq, v));
        }
    }
    Ok(newest.into_iter().map(|(k, (_, v))| (k, v)).collect())
}

/// Acknowledged PUTs the disk image at `image` does not hold with their values (its PUT log read
/// again, a bounded number of times, while some are missing: a block being written as it is read
/// reads torn). `Err` if the image cannot be read.
pub fn missing_on_disk(image: &Path, puts: &[Put]) -> Result<u64, String> {
    let mut missing = 0;
    for attempt in 0..3 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(500));
        }
        let log = disk_log(image)?;
        missing = puts
            .iter()
            .filter(|p| p.acked && log.get(&key(p.n)) != Some(&value(p.n)))
            .count() as u64;
        if missing == 0 {
            break;
        }
    }
    Ok(missing)
}
