//! The rollback guard on disk, and the order that keeps it (DESIGN.md rule 3 across crashes).
//!
//! A takeover vote comes with a promise (lease nothing older than the epoch voted for) that must
//! outlive a crash or a power loss: the witness core's new state is written to a temporary file,
//! fsynced, renamed over the state file and the directory fsynced, and only then do the core's
//! answers leave. If the state cannot be saved, no grant leaves (votes or leases): the standby or
//! the primary hears nothing from this witness, as if it were unreachable, which is always safe.
//! Refusals still go (they promise nothing). The save is retried at the next step.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use hsb_common::decision::witness::{Action, Persisted, StaleMark};
use hsb_common::decision::{Epoch, WitnessCore};

/// Longest state file read (it holds two short lines).
pub const MAX_STATE_FILE: u64 = 4096;

/// The state file's text.
pub fn encode(p: &Persisted) -> String {
    let promised = p.promised.map_or("none".to_string(), |e| e.0.to_string());
    let mark = p.mark.map_or("none".to_string(), |m| {
        format!("{} {} {}", m.epoch.0, m.after, m.upto)
    });
    format!(
        "epoch_seen {}\npromised {promised}\nmark {mark}\n",
        p.epoch_seen.0
    )
}

/// Read the state file's text; what is wrong with it, if anything.
pub fn parse(text: &str) -> Result<Persisted, String> {
    let mut epoch_seen = None;
    let mut promised = None;
    // Absent in files written before the mark was kept: no mark.
    let mut mark = None;
    for (i, line) in text.lines().enumerate() {
        let bad = |what: &str| format!("line {}: {what}, got {line:?}", i + 1);
        match line.split_once(' ') {
            Some(("epoch_seen", v)) => {
                let n = v.trim().parse().map_err(|_| bad("expected an epoch"))?;
                epoch_seen = Some(Epoch(n));
            }
            Some(("promised", v)) if v.trim() == "none" => promised = Some(None),
            Some(("promised", v)) => {
                let n = v
                    .trim()
                    .parse()
                    .map_err(|_| bad("expected an epoch or none"))?;
                promised = Some(Some(Epoch(n)));
            }
            Some(("mark", v)) if v.trim() == "none" => mark = None,
            Some(("mark", v)) => {
                let n: Vec<u64> = v
                    .split_whitespace()
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .map_err(|_| bad("expected `mark EPOCH AFTER UPTO` or `mark none`"))?;
                let [epoch, after, upto] = n[..] else {
                    return Err(bad("expected `mark EPOCH AFTER UPTO` or `mark none`"));
                };
                mark = Some(StaleMark {
                    epoch: Epoch(epoch),
                    after,
                    upto,
                });
            }
            _ if line.trim().is_empty() => {}
            _ => {
                return Err(bad(
                    "expected `epoch_seen N`, `promised N|none` or `mark ...`",
                ))
            }
        }
    }
    match (epoch_seen, promised) {
        (Some(epoch_seen), Some(promised)) => Ok(Persisted {
            epoch_seen,
            promised,
            mark,
        }),
        _ => Err("expected both `epoch_seen` and `promised`".into()),
    }
}

/// The saved rollback guard: `None` if there is no state file (a first start). A file that
/// cannot be read or does not parse is an error: starting without the promise it may hold
/// could break rule 3, so the operator must look.
pub fn load(path: &Path) -> io::Result<Option<Persisted>> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut text = String::new();
    f.take(MAX_STATE_FILE + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_STATE_FILE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("longer than {MAX_STATE_FILE} bytes"),
        ));
    }
    parse(&text)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Where the core's state is made durable.
pub trait Store {
    /// Save `p` durably: when this returns `Ok`, a crash or a power loss cannot lose it.
    fn save(&mut self, p: &Persisted) -> io::Result<()>;
}

/// The state file.
#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    pub fn new(path: &Path) -> FileStore {
        FileStore {
            path: path.to_path_buf(),
        }
    }
}

impl Store for FileStore {
    /// Temporary file, fsync, rename over the state file, fsync the directory.
    fn save(&mut self, p: &Persisted) -> io::Result<()> {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&dir)?;
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(encode(p).as_bytes())?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, &self.path)?;
        File::open(&dir)?.sync_all()
    }
}

/// What one core step's actions come to once its state was (or could not be) saved.
#[derive(Debug)]
pub struct Released {
    /// Send these, in order.
    pub send: Vec<Action>,
    /// Grants the core made that must not leave: their promise is not on disk.
    pub withheld: Vec<Action>,
    /// Why the state could not be saved, if it could not.
    pub error: Option<io::Error>,
}

/// Keeps track of what is on disk, and lets a grant leave only when the core's state is.
#[derive(Debug, Clone, Copy)]
pub struct Guard {
    on_disk: Persisted,
}

impl Guard {
    /// `on_disk`: what the state file holds now.
    pub fn new(on_disk: Persisted) -> Guard {
        Guard { on_disk }
    }

    /// After a core step: save the core's state if it differs from what is on disk, then hand
    /// back what of the step's `actions` may be sent. Grants leave only if the disk holds the
    /// core's state; otherwise they are withheld and the save is tried again at the next step.
    pub fn release(
        &mut self,
        store: &mut impl Store,
        core: &WitnessCore,
        actions: impl IntoIterator<Item = Action>,
    ) -> Released {
        let current = core.persisted();
        let mut error = None;
        if current != self.on_disk {
            match store.save(&current) {
                Ok(()) => self.on_disk = current,
                Err(e) => error = Some(e),
            }
        }
        let durable = current == self.on_disk;
        let (send, withheld) = actions.into_iter().partition(|a| durable || !is_grant(a));
        Released {
            send,
            withheld,
            error,
        }
    }
}

/// A vote or lease that grants something.
pub fn is_grant(a: &Action) -> bool {
    match a {
        Action::Vote(v) => v.verdict.granted(),
        Action::LeaseReply(r) => r.verdict.granted(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hsb_common::decision::proto::{ProbeClass, ProbeTarget, VoteKind, VoteRequest};
    use hsb_common::decision::witness::Input;
    use hsb_common::decision::{Config, Nanos};
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::time::Duration;

    fn ms(n: u64) -> Nanos {
        Nanos::from_millis(n)
    }

    /// A witness that sees the primary down for 200 ms and is asked for a vote: the core grants.
    fn core_ready_to_vote() -> WitnessCore {
        let mut w = WitnessCore::first_boot(Config::default(), 1, ms(0));
        for t in (0..200).step_by(10) {
            for target in [ProbeTarget::PrimaryApp, ProbeTarget::PrimaryHost] {
                w.step(
                    ms(t),
                    Input::Probe {
                        target,
                        class: ProbeClass::Timeout,
                        took: Duration::ZERO,
                    },
                );
            }
        }
        w
    }

    fn vote_request(query: u32) -> Input {
        Input::VoteRequest(VoteRequest {
            epoch: Epoch(1),
            query,
            kind: VoteKind::Takeover,
        })
    }

    /// A store that writes into a shared journal, or fails.
    struct Journal {
        log: Rc<RefCell<Vec<String>>>,
        fail: bool,
    }

    impl Store for Journal {
        fn save(&mut self, p: &Persisted) -> io::Result<()> {
            if self.fail {
                return Err(io::Error::other("disk on fire"));
            }
            self.log
                .borrow_mut()
                .push(format!("save promised={:?}", p.promised.map(|e| e.0)));
            Ok(())
        }
    }

    /// The daemon's order, with the sending observable: the promise is saved before the vote
    /// that makes it leaves.
    #[test]
    fn the_promise_is_saved_before_the_vote_leaves() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let mut store = Journal {
            log: log.clone(),
            fail: false,
        };
        let mut w = core_ready_to_vote();
        let mut guard = Guard::new(w.persisted());
        let actions = w.step(ms(200), vote_request(1));
        let out = guard.release(&mut store, &w, actions);
        assert!(out.error.is_none());
        assert!(out.withheld.is_empty());
        for a in &out.send {
            log.borrow_mut().push(format!("send grant={}", is_grant(a)));
        }
        assert_eq!(*log.borrow(), ["save promised=Some(2)", "send grant=true"]);
        // Nothing changed: nothing saved again.
        let actions = w.step(ms(201), Input::Tick);
        let out = guard.release(&mut store, &w, actions);
        assert!(out.send.is_empty() && out.error.is_none());
        assert_eq!(log.borrow().len(), 2);
    }

    /// A failing save withholds the grant; refusals still go; the next step that saves lets
    /// grants go again.
    #[test]
    fn a_grant_whose_promise_is_not_on_disk_is_withheld() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let mut store = Journal {
            log: log.clone(),
            fail: true,
        };
        let mut w = core_ready_to_vote();
        let mut guard = Guard::new(w.persisted());
        let actions = w.step(ms(200), vote_request(1));
        let out = guard.release(&mut store, &w, actions);
        assert!(out.error.is_some());
        assert!(out.send.is_empty(), "sent {:?}", out.send);
        assert_eq!(out.withheld.len(), 1);
        assert!(is_grant(&out.withheld[0]));
        // A refusal (a stale epoch) still leaves while the disk lags.
        let stale = Input::VoteRequest(VoteRequest {
            epoch: Epoch(0),
            query: 2,
            kind: VoteKind::Takeover,
        });
        let actions = w.step(ms(201), stale);
        let out = guard.release(&mut store, &w, actions);
        assert_eq!(out.send.len(), 1);
        assert!(!is_grant(&out.send[0]));
        assert!(out.error.is_some(), "the save is retried");
        // The disk works again: the state is saved at the next step, and grants leave.
        store.fail = false;
        let actions = w.step(ms(202), vote_request(1));
        let out = guard.release(&mut store, &w, actions);
        assert!(out.error.is_none());
        assert_eq!(*log.borrow(), ["save promised=Some(2)"]);
        assert!(out.send.iter().all(is_grant) && out.send.len() == 1);
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("hsb-witness-state-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).expect("temp dir");
        d
    }

    /// The state file in a place that cannot be created (its "directory" is a regular file, so
    /// even root cannot): the real store fails, and no granted vote leaves.
    #[test]
    fn an_uncreatable_state_file_lets_no_grant_leave() {
        let d = temp_dir("uncreatable");
        fs::write(d.join("file"), "not a directory").expect("write");
        let mut store = FileStore::new(&d.join("file/witness.state"));
        let mut w = core_ready_to_vote();
        let mut guard = Guard::new(w.persisted());
        let actions = w.step(ms(200), vote_request(1));
        let out = guard.release(&mut store, &w, actions);
        let _ = fs::remove_dir_all(&d);
        assert!(out.error.is_some());
        assert!(out.send.iter().all(|a| !is_grant(a)), "{:?}", out.send);
        assert_eq!(out.withheld.len(), 1);
    }

    #[test]
    fn the_state_file_round_trips_and_leaves_no_temporary_file() {
        let d = temp_dir("round-trip");
        let path = d.join("sub/witness-7.state");
        assert_eq!(load(&path).expect("no file is no error"), None);
        let mut store = FileStore::new(&path);
        for p in [
            Persisted {
                epoch_seen: Epoch(3),
                promised: Some(Epoch(4)),
                mark: None,
            },
            Persisted {
                epoch_seen: Epoch(4),
                promised: None,
                mark: Some(StaleMark {
                    epoch: Epoch(4),
                    after: 41,
                    upto: 45,
                }),
            },
        ] {
            store.save(&p).expect("save");
            assert_eq!(load(&path).expect("load"), Some(p));
        }
        let names: Vec<_> = fs::read_dir(d.join("sub"))
            .expect("dir")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["witness-7.state"]);
        // A damaged file is an error, not a fresh start that forgets a promise.
        fs::write(&path, "epoch_seen 4\npromised 5x\n").expect("write");
        assert_eq!(
            load(&path).map_err(|e| e.kind()),
            Err(io::ErrorKind::InvalidData)
        );
        fs::write(&path, "epoch_seen 4\n").expect("write");
        assert!(load(&path).is_err(), "the promise line is missing");
        fs::write(&path, "x".repeat(5000)).expect("write");
        assert!(load(&path).is_err());
        let _ = fs::remove_dir_all(&d);
    }
}
