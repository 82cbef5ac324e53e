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

use hsb_common::datagram::Dest;
use hsb_common::decision::witness::{Persisted, StaleMark};
use hsb_common::wire::Dgram;

use crate::node::{Effect, Effects, To, WitnessNode};
use hsb_common::decision::{Epoch, Nanos};

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

/// Carry out a node step's effects: saves go to `store`, datagrams to `send(to, dest, msg)`,
/// in order. A grant leaves only if the state it needs is on disk: saved in this batch, or
/// known on disk before it (and not put in doubt by a failed save since); a failed save
/// is told to the node, and so is every grant withheld for it (the node saves again at its next
/// step). This is the one place where the order "promise on disk, then the grant" is kept.
pub fn carry_out(
    node: &mut WitnessNode,
    now: Nanos,
    effects: Effects,
    store: &mut impl Store,
    mut send: impl FnMut(To, Option<Dest>, Dgram),
) {
    // The state the disk holds (None: not known after a failed save). Before this batch's
    // saves, what the node knows to be on disk: a grant whose promise is there already (a
    // lease renewed while nothing changed) needs no save to leave.
    let mut durable = Some(node.on_disk());
    for e in effects {
        match e {
            Effect::Save(p) => {
                let r = store.save(&p).map_err(|e| e.to_string());
                // A failed save may have left either state behind: neither counts as durable.
                durable = r.is_ok().then_some(p);
                node.saved(now, p, r);
            }
            Effect::Send {
                to,
                dest,
                msg,
                needs,
            } => {
                if needs.is_some() && needs != durable {
                    node.withheld(now, &msg);
                } else {
                    send(to, dest, msg);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{Event, NodeSettings};
    use hsb_common::datagram::{Envelope, Sender};
    use hsb_common::decision::proto::{ProbeClass, VoteKind, VoteRequest};
    use hsb_common::decision::{Config, WitnessCore};
    use hsb_common::msg::Role;
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::time::Duration;

    fn ms(n: u64) -> Nanos {
        Nanos::from_millis(n)
    }

    /// A node whose witness saw the primary down and may vote (first boot: no quiet period).
    fn node_ready_to_vote() -> WitnessNode {
        let core = WitnessCore::first_boot(Config::default(), 1, ms(0));
        let p = core.persisted();
        let mut n = WitnessNode::new(
            NodeSettings {
                probe_interval: Duration::from_millis(10),
                probe_timeout: Duration::from_millis(30),
                report_interval: Duration::from_millis(50),
                guest: String::new(),
            },
            core,
            p,
            ms(0),
        );
        for t in (0..200).step_by(10) {
            n.step(
                ms(t),
                Event::AppProbe {
                    class: ProbeClass::Timeout,
                    took: Duration::ZERO,
                    detail: String::new(),
                },
            );
            crate::node::tests::tick_standby_answering(&mut n, t);
        }
        n
    }

    fn vote_request(epoch: u64, query: u32) -> Event {
        Event::Datagram {
            from: "127.0.0.1:9".parse().expect("addr"),
            env: Envelope {
                from: Sender {
                    role: Role::Standby,
                    id: 7,
                },
                incarnation: 1,
                epoch,
                to: None,
            },
            msg: Dgram::VoteRequest(VoteRequest {
                epoch: Epoch(epoch),
                query,
                kind: VoteKind::Takeover,
            }),
        }
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

    /// Carry out one step, recording what was sent.
    fn step(
        n: &mut WitnessNode,
        t: u64,
        ev: Event,
        store: &mut Journal,
        log: &Rc<RefCell<Vec<String>>>,
    ) {
        let fx = n.step(ms(t), ev);
        carry_out(n, ms(t), fx, store, |_, _, m| {
            if let Dgram::Vote(v) = m {
                log.borrow_mut()
                    .push(format!("send grant={}", v.verdict.granted()));
            }
        });
    }

    /// The promise is saved before the vote that makes it leaves.
    #[test]
    fn the_promise_is_saved_before_the_vote_leaves() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let mut store = Journal {
            log: log.clone(),
            fail: false,
        };
        let mut n = node_ready_to_vote();
        step(&mut n, 200, vote_request(1, 1), &mut store, &log);
        assert_eq!(*log.borrow(), ["save promised=Some(2)", "send grant=true"]);
        // Nothing changed: nothing saved again.
        step(&mut n, 201, Event::Tick, &mut store, &log);
        assert_eq!(log.borrow().len(), 2);
    }

    fn lease_request(req: u32, last_acked: u64, last_sent: u64) -> Event {
        Event::Datagram {
            from: "127.0.0.1:9".parse().expect("addr"),
            env: Envelope {
                from: Sender {
                    role: Role::Primary,
                    id: 5,
                },
                incarnation: 1,
                epoch: 1,
                to: None,
            },
            msg: Dgram::LeaseRequest(hsb_common::decision::proto::LeaseRequest {
                epoch: Epoch(1),
                req,
                last_acked,
                last_sent,
            }),
        }
    }

    /// A primary cut off from its standby renews its lease with the same request (its acked
    /// checkpoint does not move, so the rollback guard does not change and nothing is saved):
    /// the renewal's promise is on disk already, and the grant leaves. (Before, only a grant
    /// whose state was saved in the same step left, so the first renewal was withheld and the
    /// primary fenced itself half a lease later.)
    #[test]
    fn a_renewal_whose_promise_is_on_disk_already_leaves() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let mut store = Journal {
            log: log.clone(),
            fail: false,
        };
        let core = WitnessCore::first_boot(Config::default(), 1, ms(0));
        let p = core.persisted();
        let mut n = WitnessNode::new(
            NodeSettings {
                probe_interval: Duration::from_millis(10),
                probe_timeout: Duration::from_millis(30),
                report_interval: Duration::from_millis(50),
                guest: String::new(),
            },
            core,
            p,
            ms(0),
        );
        let mut leases = 0;
        for (t, req) in [(100u64, 1u32), (1100, 2), (2100, 3)] {
            let fx = n.step(ms(t), lease_request(req, 40, 45));
            carry_out(&mut n, ms(t), fx, &mut store, |_, _, m| {
                if matches!(m, Dgram::LeaseReply(r) if r.verdict.granted()) {
                    leases += 1;
                }
            });
        }
        assert_eq!(n.counters().grants_withheld, 0, "{:?}", log.borrow());
        assert_eq!(leases, 3, "saves: {:?}", log.borrow());
        assert!(
            log.borrow().len() <= 1,
            "saved again without a change: {:?}",
            log.borrow()
        );
    }

    /// A grant whose promise is already on disk (a second query of the same takeover, say, or
    /// the new primary's lease request after the vote for its epoch) leaves without a save.
    /// The fault suite's F1 caught this: every lease of a promoted primary was withheld ("its
    /// promise is not on disk"), and it fenced for good.
    #[test]
    fn a_grant_whose_promise_is_already_on_disk_leaves() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let mut store = Journal {
            log: log.clone(),
            fail: false,
        };
        let mut n = node_ready_to_vote();
        step(&mut n, 200, vote_request(1, 1), &mut store, &log);
        step(&mut n, 205, vote_request(1, 2), &mut store, &log);
        assert_eq!(
            *log.borrow(),
            [
                "save promised=Some(2)",
                "send grant=true",
                "send grant=true"
            ]
        );
        assert_eq!(n.counters().grants_withheld, 0);
    }

    /// A failing save withholds the grant; refusals still go; once the disk works the state is
    /// saved and grants leave again.
    #[test]
    fn a_grant_whose_promise_is_not_on_disk_is_withheld() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let mut store = Journal {
            log: log.clone(),
            fail: true,
        };
        let mut n = node_ready_to_vote();
        step(&mut n, 200, vote_request(1, 1), &mut store, &log);
        assert!(log.borrow().is_empty(), "sent {:?}", log.borrow());
        assert_eq!(n.counters().grants_withheld, 1);
        assert_eq!(n.counters().save_failures, 1);
        // A refusal (a stale epoch) still leaves while the disk lags; the save is retried.
        step(&mut n, 201, vote_request(0, 2), &mut store, &log);
        assert_eq!(*log.borrow(), ["send grant=false"]);
        assert_eq!(n.counters().save_failures, 2);
        store.fail = false;
        step(&mut n, 202, vote_request(1, 1), &mut store, &log);
        assert_eq!(
            *log.borrow(),
            [
                "send grant=false",
                "save promised=Some(2)",
                "send grant=true"
            ]
        );
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
        let mut n = node_ready_to_vote();
        let fx = n.step(ms(200), vote_request(1, 1));
        let mut grants = 0;
        carry_out(&mut n, ms(200), fx, &mut store, |_, _, m| {
            if matches!(m, Dgram::Vote(v) if v.verdict.granted()) {
                grants += 1;
            }
        });
        let _ = fs::remove_dir_all(&d);
        assert_eq!(grants, 0);
        assert_eq!(n.counters().grants_withheld, 1);
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
