//! What a primary or standby host keeps across restarts (DESIGN.md rule 10): the newest epoch it
//! knows, the role it had in it, how far its checkpoint numbers may have gone, and its datagram
//! incarnation. One file per host and protected guest, shared by the host's hsb-primary and
//! hsb-standby (a hand-over by exec passes its path on), written durably before the daemon acts
//! on what it says: temporary file, fsync, rename, fsync of the directory.
//!
//! [`primary_start`] and [`standby_start`] are the restart rules as pure functions: what a
//! daemon starting on a host may do, given what the host remembers.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::decision::Epoch;

/// Longest state file read.
pub const MAX_STATE_FILE: u64 = 4096;

/// Checkpoint numbers a primary reserves at a time: the state file is written when a primary
/// starts and once per this many checkpoints (every ~40 min at 40 checkpoints/s), and a
/// restarted primary continues above the reservation, so numbers never go back.
pub const CHECKPOINT_BLOCK: u64 = 100_000;

/// The role a host had in [`NodeState::epoch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRole {
    /// It ran the primary of that epoch.
    Primary,
    /// It ran (or was about to run) a standby in that epoch.
    Standby,
    /// Its primary learned of that newer epoch and stepped down: it is not active, ever, in any
    /// epoch up to this one.
    SteppedDown,
}

impl NodeRole {
    /// The file's word.
    pub fn name(self) -> &'static str {
        match self {
            NodeRole::Primary => "primary",
            NodeRole::Standby => "standby",
            NodeRole::SteppedDown => "stepped-down",
        }
    }

    fn parse(s: &str) -> Option<NodeRole> {
        match s {
            "primary" => Some(NodeRole::Primary),
            "standby" => Some(NodeRole::Standby),
            "stepped-down" => Some(NodeRole::SteppedDown),
            _ => None,
        }
    }
}

/// A host's persistent state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeState {
    /// Newest activation epoch this host knows.
    pub epoch: Epoch,
    /// Its role in that epoch.
    pub role: NodeRole,
    /// Checkpoint numbers up to this may have been used (a primary's reservation, or the
    /// replica's checkpoint when a standby activated).
    pub checkpoint: u64,
    /// The last datagram incarnation a process of this host used.
    pub incarnation: u64,
    /// The operator paused automatic takeovers here (maintenance mode): a restarted standby
    /// stays paused.
    pub maintenance: bool,
}

impl NodeState {
    /// The file's text.
    pub fn encode(&self) -> String {
        format!(
            "epoch {}\nrole {}\ncheckpoint {}\nincarnation {}\nmaintenance {}\n",
            self.epoch.0,
            self.role.name(),
            self.checkpoint,
            self.incarnation,
            if self.maintenance { "on" } else { "off" }
        )
    }

    /// Read the file's text; what is wrong with it, if anything.
    pub fn parse(text: &str) -> Result<NodeState, String> {
        let (mut epoch, mut role, mut checkpoint, mut incarnation) = (None, None, None, None);
        let mut maintenance = false;
        for (i, line) in text.lines().enumerate() {
            let bad = |what: &str| format!("line {}: {what}, got {line:?}", i + 1);
            let Some((k, v)) = line.trim().split_once(' ') else {
                if line.trim().is_empty() {
                    continue;
                }
                return Err(bad("expected `key value`"));
            };
            let num = || {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| bad("expected a number"))
            };
            match k {
                "epoch" => epoch = Some(Epoch(num()?)),
                "role" => {
                    role = Some(
                        NodeRole::parse(v.trim())
                            .ok_or_else(|| bad("expected primary, standby or stepped-down"))?,
                    )
                }
                "checkpoint" => checkpoint = Some(num()?),
                "incarnation" => incarnation = Some(num()?),
                "maintenance" => {
                    maintenance = match v.trim() {
                        "on" => true,
                        "off" => false,
                        _ => return Err(bad("expected on or off")),
                    }
                }
                _ => return Err(bad("unknown key")),
            }
        }
        match (epoch, role, checkpoint, incarnation) {
            (Some(epoch), Some(role), Some(checkpoint), Some(incarnation)) => Ok(NodeState {
                epoch,
                role,
                checkpoint,
                incarnation,
                maintenance,
            }),
            _ => Err("expected epoch, role, checkpoint and incarnation".into()),
        }
    }

    /// The saved state at `path`: `None` if there is no file (a first start). A file that
    /// cannot be read or does not parse is an error, naming the file: starting without what it
    /// says could make an old primary active again, so the operator must look.
    pub fn load(path: &Path) -> io::Result<Option<NodeState>> {
        let Some(text) = read_bounded(path, MAX_STATE_FILE)? else {
            return Ok(None);
        };
        NodeState::parse(&text).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })
    }

    /// Save durably at `path` (see [`save_durably`]).
    pub fn save(&self, path: &Path) -> io::Result<()> {
        save_durably(path, self.encode().as_bytes())
    }
}

/// Read a small file whole: `None` if it does not exist; an error if it is longer than `max`
/// bytes or not text.
pub fn read_bounded(path: &Path, max: u64) -> io::Result<Option<String>> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    let mut text = String::new();
    f.take(max + 1).read_to_string(&mut text)?;
    if text.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is longer than {max} bytes", path.display()),
        ));
    }
    Ok(Some(text))
}

/// Write `bytes` to `path` so that once this returns, a crash or a power loss cannot lose
/// them or leave half of them: a temporary file beside it, fsync, rename over it, fsync of the
/// directory. Missing directories are made.
pub fn save_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir)?;
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    File::open(&dir)?.sync_all()
}

/// What an hsb-primary starting on a host may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrimaryStart {
    /// Run as the primary of `epoch`, numbering checkpoints from `first_checkpoint`.
    Run {
        /// The epoch.
        epoch: Epoch,
        /// Its first checkpoint number.
        first_checkpoint: u64,
    },
    /// Not the primary: this host is a standby (or stepped down) in `epoch`; it must rejoin as
    /// the standby, never serve. `why` says so for the log.
    Rejoin {
        /// The newest epoch the host knows.
        epoch: Epoch,
        /// Why, for the operator.
        why: String,
    },
}

/// How the daemon was started, beside what the host remembers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrimaryArgs {
    /// `start_epoch` (a promoting standby passes its new epoch).
    pub start_epoch: u64,
    /// `start_checkpoint` (a promoting standby passes its replica's checkpoint).
    pub start_checkpoint: u64,
    /// A promoting standby handed over its domain (model: `start_image`); the domain this
    /// process serves is the one the host's state speaks of.
    pub handed_over: bool,
    /// The domain outlives the daemon (xen: the guest runs in the hypervisor and a restarted
    /// daemon attaches to it again). The model domain lives in the daemon's process: when the
    /// process stopped, the domain of its epoch stopped with it.
    pub domain_survives: bool,
}

/// The restart rule of hsb-primary (README: the restart matrix).
pub fn primary_start(saved: Option<NodeState>, a: PrimaryArgs) -> PrimaryStart {
    let run = |epoch: Epoch, after: u64| PrimaryStart::Run {
        epoch,
        first_checkpoint: after.saturating_add(1),
    };
    let Some(s) = saved else {
        return run(Epoch(a.start_epoch), a.start_checkpoint);
    };
    let after = a.start_checkpoint.max(s.checkpoint);
    if a.start_epoch > s.epoch.0 {
        // A newer epoch than the host knows: a promotion whose state was not written, or an
        // operator starting a new epoch by hand; numbers still go on from the host's.
        return run(Epoch(a.start_epoch), after);
    }
    match s.role {
        NodeRole::Primary if a.handed_over && a.start_epoch == s.epoch.0 => run(s.epoch, after),
        NodeRole::Primary if a.domain_survives => run(s.epoch, after),
        NodeRole::Primary => PrimaryStart::Rejoin {
            epoch: s.epoch,
            why: format!(
                "this host ran the primary of epoch {} and its daemon stopped; the model domain lived in that process and is gone, so serving a fresh one would roll back what clients saw",
                s.epoch
            ),
        },
        NodeRole::Standby => PrimaryStart::Rejoin {
            epoch: s.epoch,
            why: format!(
                "this host is a standby in epoch {} (its primary runs elsewhere); use `hsb-standby activate` or a switchover to move the active role here",
                s.epoch
            ),
        },
        NodeRole::SteppedDown => PrimaryStart::Rejoin {
            epoch: s.epoch,
            why: format!(
                "this host's primary stepped down: epoch {} is active elsewhere",
                s.epoch
            ),
        },
    }
}

/// The epoch an hsb-standby starting on a host follows: the newest the host knows (heartbeats,
/// reports and sessions of older epochs are then stale at once).
pub fn standby_start(saved: Option<NodeState>) -> Epoch {
    saved.map_or(Epoch::FIRST, |s| s.epoch.max(Epoch::FIRST))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(epoch: u64, role: NodeRole, checkpoint: u64) -> Option<NodeState> {
        Some(NodeState {
            epoch: Epoch(epoch),
            role,
            checkpoint,
            incarnation: 7,
            maintenance: checkpoint == 3,
        })
    }

    fn args(start_epoch: u64, start_checkpoint: u64, handed_over: bool, xen: bool) -> PrimaryArgs {
        PrimaryArgs {
            start_epoch,
            start_checkpoint,
            handed_over,
            domain_survives: xen,
        }
    }

    fn run(epoch: u64, first: u64) -> PrimaryStart {
        PrimaryStart::Run {
            epoch: Epoch(epoch),
            first_checkpoint: first,
        }
    }

    /// The restart matrix of hsb-primary, one row a case.
    #[test]
    fn primary_restart_matrix() {
        use NodeRole::*;
        let rejoins = |p: PrimaryStart| matches!(p, PrimaryStart::Rejoin { .. });
        // First start of the cluster: the configuration's epoch.
        assert_eq!(primary_start(None, args(1, 0, false, false)), run(1, 1));
        // The hand-over of a promoting standby (it wrote its state first).
        assert_eq!(
            primary_start(st(2, Primary, 5000), args(2, 5000, true, false)),
            run(2, 5001)
        );
        // A promoted primary restarts. Xen: it attaches to its guest again and continues in
        // its epoch above its reservation; model: its domain died with it, so it rejoins.
        assert_eq!(
            primary_start(st(2, Primary, 105_000), args(1, 0, false, true)),
            run(2, 105_001)
        );
        assert!(rejoins(primary_start(
            st(2, Primary, 105_000),
            args(1, 0, false, false)
        )));
        // Even with the hand-over's arguments again (a unit restarted with the same command
        // line) a model primary whose epoch is not new comes back as standby, because the
        // image it would load was consumed at the hand-over.
        assert!(rejoins(primary_start(
            st(2, Primary, 105_000),
            args(2, 5000, false, false)
        )));
        // An old primary that stepped down, or a host that is a standby: never active.
        for xen in [false, true] {
            assert!(rejoins(primary_start(
                st(3, SteppedDown, 9),
                args(1, 0, false, xen)
            )));
            assert!(rejoins(primary_start(
                st(3, Standby, 9),
                args(3, 0, true, xen)
            )));
        }
        // A newer epoch than the host knows: run in it, numbers above the host's.
        assert_eq!(
            primary_start(st(3, Standby, 900), args(4, 800, true, false)),
            run(4, 901)
        );
    }

    #[test]
    fn standby_follows_the_newest_epoch_the_host_knows() {
        assert_eq!(standby_start(None), Epoch(1));
        assert_eq!(standby_start(st(4, NodeRole::SteppedDown, 0)), Epoch(4));
        assert_eq!(standby_start(st(0, NodeRole::Standby, 0)), Epoch(1));
    }

    #[test]
    fn the_file_round_trips_durably_and_bad_files_are_errors() {
        let dir = std::env::temp_dir().join(format!("hsb-node-state-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("sub/host.state");
        assert_eq!(NodeState::load(&path).expect("no file"), None);
        for s in [
            st(1, NodeRole::Primary, 100_000),
            st(9, NodeRole::SteppedDown, 0),
            st(2, NodeRole::Standby, 3),
        ] {
            let s = s.expect("state");
            s.save(&path).expect("save");
            assert_eq!(NodeState::load(&path).expect("load"), Some(s));
        }
        assert!(!dir.join("sub/host.state.tmp").exists());
        for bad in [
            "epoch 1\nrole primary\ncheckpoint 1\n",
            "epoch x\nrole primary\ncheckpoint 1\nincarnation 1\n",
            "epoch 1\nrole boss\ncheckpoint 1\nincarnation 1\n",
            "epoch 1\nrole primary\ncheckpoint 1\nincarnation 1\nextra 1\n",
            "junk",
        ] {
            fs::write(&path, bad).expect("write");
            let e = NodeState::load(&path).expect_err(bad);
            assert!(e.to_string().contains("host.state"), "{e}");
        }
        fs::write(&path, vec![b'a'; 5000]).expect("write");
        assert!(NodeState::load(&path).is_err());
        assert!(
            NodeState::load(&dir).is_err(),
            "a directory is not a state file"
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
