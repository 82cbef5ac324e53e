//! The service of the Xen test rig's guest: an in-RAM counter on a TCP port, speaking the same line
//! protocol as the model service's counter (`INCR` replies the new value, `GET` the current one,
//! `PING` replies `PONG`). Its state lives only in the guest's memory, so after a failover the value a
//! client reads shows whether the checkpoint carried it. std only, built static for the guest's
//! busybox initramfs: `hsb-guest-counter [ADDR] [--records FILE]` (default `0.0.0.0:7000`).
//!
//! With `--records FILE` (the guest's init passes `/data/records` when its data disk is mounted)
//! it also keeps durable records, one `key value` line each, appended to FILE:
//! `PUT key value` appends a line and fsyncs the file (and, when the file was just created, its
//! directory) before it replies `OK`; `GETK key` replies the key's last value or `NONE`;
//! `RECORDS` replies how many records the file holds. At start the file is read back; a torn last
//! line (no newline: a write cut short by a crash) is reported and cut off, malformed lines are
//! reported and skipped. Without a records file PUT, GETK and RECORDS answer an `ERR` line.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// Longest request line accepted; a longer one closes the connection.
const MAX_LINE: usize = 256;
/// Longest key and value of a record (bytes; printable ASCII without spaces).
const MAX_KEY: usize = 64;
const MAX_VALUE: usize = 128;
/// Most records a file may hold (about 19 MiB at the longest): PUT answers `ERR full` beyond.
const MAX_RECORDS: u64 = 100_000;
/// Largest records file read at start.
const MAX_FILE: u64 = 32 << 20;

/// A token allowed as a key or value: 1..=max bytes of printable ASCII, no spaces.
fn valid_token(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_graphic())
}

/// The records file and what it holds.
struct Records {
    path: PathBuf,
    file: File,
    last: HashMap<String, String>,
    count: u64,
    /// Set when a write or fsync failed: what is on disk is then unknown, so no more PUTs.
    broken: Option<String>,
}

impl Records {
    /// Opens (or creates) the records file and reads it back. Problems found in it (a torn last
    /// line, malformed lines) are returned as notes for the console; a torn tail is cut off so the
    /// next record starts on a line of its own.
    fn open(path: &Path) -> std::io::Result<(Records, Vec<String>)> {
        let mut notes = Vec::new();
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        if !existed {
            file.sync_all()?;
            sync_dir(path)?;
            notes.push(format!("created {}", path.display()));
        }
        let len = file.metadata()?.len();
        if len > MAX_FILE {
            return Err(std::io::Error::other(format!(
                "{} is {len} bytes, more than the {MAX_FILE} this reads",
                path.display()
            )));
        }
        let mut data = Vec::with_capacity(len as usize);
        file.seek(SeekFrom::Start(0))?;
        file.read_to_end(&mut data)?;
        let whole = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if whole < data.len() {
            notes.push(format!(
                "torn last line ignored and cut off ({} bytes after offset {whole}: {:?})",
                data.len() - whole,
                String::from_utf8_lossy(&data[whole..data.len().min(whole + 80)])
            ));
            file.set_len(whole as u64)?;
            file.sync_all()?;
        }
        let mut last = HashMap::new();
        let mut count = 0;
        // The complete lines: the bytes before the last newline, split at the others.
        let lines = data[..whole.saturating_sub(1)].split(|&b| b == b'\n');
        for (i, line) in lines.enumerate().take_while(|_| whole > 0) {
            match parse_record(line) {
                Some((k, v)) => {
                    last.insert(k.to_string(), v.to_string());
                    count += 1;
                }
                None => notes.push(format!(
                    "line {} malformed, skipped: {:?}",
                    i + 1,
                    String::from_utf8_lossy(&line[..line.len().min(80)])
                )),
            }
        }
        let records = Records {
            path: path.to_path_buf(),
            file,
            last,
            count,
            broken: None,
        };
        Ok((records, notes))
    }

    fn put(&mut self, key: &str, value: &str) -> String {
        if let Some(why) = &self.broken {
            return format!("ERR records disabled after a failed write: {why}");
        }
        if self.count >= MAX_RECORDS {
            return format!("ERR full: {MAX_RECORDS} records");
        }
        let line = format!("{key} {value}\n");
        let res = self
            .file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.sync_all());
        match res {
            Ok(()) => {
                self.last.insert(key.to_string(), value.to_string());
                self.count += 1;
                "OK".into()
            }
            Err(e) => {
                let why = format!("{}: {e}", self.path.display());
                eprintln!("hsb-guest-counter: records: write failed, no more PUTs: {why}");
                self.broken = Some(why.clone());
                format!("ERR write failed: {why}")
            }
        }
    }
}

/// `key value` (two valid tokens, one space), or None.
fn parse_record(line: &[u8]) -> Option<(&str, &str)> {
    let s = std::str::from_utf8(line).ok()?;
    let (k, v) = s.split_once(' ')?;
    (valid_token(k, MAX_KEY) && valid_token(v, MAX_VALUE)).then_some((k, v))
}

/// fsync the directory holding `path`, so a newly created file's name is durable too.
fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// The guest's state: the counter, and the records when a file was given (or why not).
struct State {
    counter: AtomicU64,
    records: Result<Mutex<Records>, String>,
}

const NO_RECORDS: &str = "ERR no records file (start with --records FILE)";

fn answer(st: &State, line: &str) -> String {
    let mut it = line.split_ascii_whitespace();
    let cmd = it.next().unwrap_or("").to_ascii_uppercase();
    let args: Vec<&str> = it.take(3).collect();
    let records = || match &st.records {
        Ok(r) => Ok(r.lock().unwrap_or_else(|p| p.into_inner())),
        Err(why) => Err(why.clone()),
    };
    match (cmd.as_str(), args.as_slice()) {
        ("PING", []) => "PONG".into(),
        ("INCR", []) => (st.counter.fetch_add(1, Ordering::SeqCst).wrapping_add(1)).to_string(),
        ("GET", []) => st.counter.load(Ordering::SeqCst).to_string(),
        ("PUT", [k, v]) => {
            if !valid_token(k, MAX_KEY) || !valid_token(v, MAX_VALUE) {
                return format!(
                    "ERR bad record: key up to {MAX_KEY} and value up to {MAX_VALUE} bytes of printable ASCII, no spaces"
                );
            }
            match records() {
                Ok(mut r) => r.put(k, v),
                Err(why) => why,
            }
        }
        ("GETK", [k]) => match records() {
            Ok(r) => r.last.get(*k).cloned().unwrap_or_else(|| "NONE".into()),
            Err(why) => why,
        },
        ("RECORDS", []) => match records() {
            Ok(r) => r.count.to_string(),
            Err(why) => why,
        },
        ("", _) => "ERR empty request".into(),
        _ => "ERR unknown request; use PING, INCR, GET, PUT key value, GETK key, RECORDS".into(),
    }
}

fn serve(stream: TcpStream, st: &State) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_line(&mut line)?;
        if n == 0 || line.len() > MAX_LINE {
            return Ok(());
        }
        let reply = answer(st, line.trim_end_matches(['\r', '\n']));
        out.write_all(format!("{reply}\n").as_bytes())?;
    }
}

fn usage() -> ! {
    eprintln!("usage: hsb-guest-counter [ADDR] [--records FILE]   (ADDR default 0.0.0.0:7000)");
    std::process::exit(2);
}

fn main() {
    let mut addr = "0.0.0.0:7000".to_string();
    let mut records_path: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--records" => records_path = Some(args.next().unwrap_or_else(|| usage()).into()),
            "-h" | "--help" => usage(),
            _ if a.starts_with('-') => usage(),
            _ => addr = a,
        }
    }
    let records = match &records_path {
        None => Err(NO_RECORDS.to_string()),
        Some(p) => match Records::open(p) {
            Ok((r, notes)) => {
                for n in notes {
                    eprintln!("hsb-guest-counter: records {}: {n}", p.display());
                }
                eprintln!(
                    "hsb-guest-counter: records {}: {} records, {} keys",
                    p.display(),
                    r.count,
                    r.last.len()
                );
                Ok(Mutex::new(r))
            }
            Err(e) => {
                eprintln!(
                    "hsb-guest-counter: records {}: cannot use: {e}",
                    p.display()
                );
                Err(format!("ERR records file {} unusable: {e}", p.display()))
            }
        },
    };
    let listener = match TcpListener::bind(&addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("hsb-guest-counter: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("hsb-guest-counter: listening on {addr}");
    let st = Arc::new(State {
        counter: AtomicU64::new(0),
        records,
    });
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let st = Arc::clone(&st);
                thread::spawn(move || {
                    let _ = serve(stream, &st);
                });
            }
            Err(e) => eprintln!("hsb-guest-counter: accept: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_records() -> State {
        State {
            counter: AtomicU64::new(0),
            records: Err(NO_RECORDS.into()),
        }
    }

    /// A fresh directory under the system's temporary directory.
    fn tmpdir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("hsb-guest-counter-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn with_file(path: &Path) -> State {
        let (r, _) = Records::open(path).unwrap();
        State {
            counter: AtomicU64::new(0),
            records: Ok(Mutex::new(r)),
        }
    }

    #[test]
    fn protocol() {
        let c = no_records();
        assert_eq!(answer(&c, "PING"), "PONG");
        assert_eq!(answer(&c, "INCR"), "1");
        assert_eq!(answer(&c, "incr"), "2");
        assert_eq!(answer(&c, "GET"), "2");
        assert!(answer(&c, "PUT a b").starts_with("ERR no records file"));
        assert!(answer(&c, "GETK a").starts_with("ERR no records file"));
        assert!(answer(&c, "RECORDS").starts_with("ERR"));
        assert!(answer(&c, "PUT a").starts_with("ERR"));
        assert!(answer(&c, "GET x").starts_with("ERR"));
        assert!(answer(&c, "").starts_with("ERR"));
    }

    #[test]
    fn records_are_kept_and_read_back() {
        let d = tmpdir("kept");
        let f = d.join("records");
        let s = with_file(&f);
        assert_eq!(answer(&s, "RECORDS"), "0");
        assert_eq!(answer(&s, "GETK a"), "NONE");
        assert_eq!(answer(&s, "PUT a 1"), "OK");
        assert_eq!(answer(&s, "put b two"), "OK");
        assert_eq!(answer(&s, "PUT a 3"), "OK");
        assert_eq!(answer(&s, "GETK a"), "3");
        assert_eq!(answer(&s, "GETK b"), "two");
        assert_eq!(answer(&s, "RECORDS"), "3");
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "a 1\nb two\na 3\n");
        drop(s);
        let s = with_file(&f);
        assert_eq!(answer(&s, "RECORDS"), "3");
        assert_eq!(answer(&s, "GETK a"), "3");
        assert_eq!(answer(&s, "INCR"), "1");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn torn_last_line_is_cut_off_and_reported() {
        let d = tmpdir("torn");
        let f = d.join("records");
        std::fs::write(&f, b"a 1\nbad\xff line\nb 2\nc 3").unwrap();
        let (r, notes) = Records::open(&f).unwrap();
        assert_eq!(r.count, 2);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("torn last line"), "{notes:?}");
        assert!(notes[1].contains("line 2 malformed"), "{notes:?}");
        let s = State {
            counter: AtomicU64::new(0),
            records: Ok(Mutex::new(r)),
        };
        assert_eq!(answer(&s, "GETK c"), "NONE");
        assert_eq!(answer(&s, "PUT c 4"), "OK");
        assert_eq!(
            std::fs::read(&f).unwrap(),
            b"a 1\nbad\xff line\nb 2\nc 4\n".to_vec()
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn keys_and_values_are_checked() {
        let d = tmpdir("checked");
        let s = with_file(&d.join("records"));
        let long_key = "k".repeat(MAX_KEY + 1);
        let long_value = "v".repeat(MAX_VALUE + 1);
        assert!(answer(&s, &format!("PUT {long_key} 1")).starts_with("ERR bad record"));
        assert!(answer(&s, &format!("PUT k {long_value}")).starts_with("ERR bad record"));
        assert_eq!(answer(&s, &format!("PUT {} 1", "k".repeat(MAX_KEY))), "OK");
        assert!(answer(&s, "PUT a b c").starts_with("ERR unknown"));
        assert!(answer(&s, "PUT a\u{e9} b").starts_with("ERR bad record"));
        assert_eq!(answer(&s, "RECORDS"), "1");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
