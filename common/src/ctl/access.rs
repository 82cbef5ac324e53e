//! Who may use a control socket (DESIGN.md §6): root, the daemon's own user and, when the
//! `control_group` key names one, that group. The socket's mode says it to the file system
//! (0600, or 0660 in the group); the peer-credential rule says it again for every connection, so
//! a socket whose mode was loosened by hand still answers nobody else.
//!
//! The group is resolved from `/etc/group` (and its listed members' uids from `/etc/passwd`)
//! once, when the configuration is loaded: both files are read whole but bounded, and groups
//! from other name services (LDAP, sssd) are reachable only by numeric gid.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigError, KeySpec, ValueKind};

/// Largest `/etc/group` or `/etc/passwd` read.
pub const MAX_ACCOUNT_FILE: u64 = 1 << 20;
/// Most listed members of the control group that are remembered.
pub const MAX_MEMBERS: usize = 1024;

/// The `control_group` key every daemon's schema carries.
pub const CONTROL_GROUP_KEY: KeySpec = KeySpec {
    key: "control_group",
    kind: ValueKind::Str,
    default: Some(""),
    help: "group that may use the control socket too (a name from /etc/group or a numeric gid): the socket is then mode 0660 in that group, and connections from its members (by primary gid or as listed in /etc/group) are accepted; empty: mode 0600, root and the daemon's own user only",
};

/// The configured control group: its gid and the uids `/etc/group` lists as its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlGroup {
    /// The name as configured (a numeric gid stays a number).
    pub name: String,
    /// The group id the socket is given.
    pub gid: u32,
    /// Uids of the members listed in `/etc/group` (at most [`MAX_MEMBERS`]).
    pub members: Vec<u32>,
}

/// Why a control group could not be resolved.
#[derive(Debug)]
pub enum GroupError {
    /// An account file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        err: std::io::Error,
    },
    /// An account file is larger than [`MAX_ACCOUNT_FILE`].
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// No group of that name.
    NoSuchGroup {
        /// The name looked for.
        name: String,
    },
}

impl fmt::Display for GroupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupError::Read { path, err } => write!(f, "cannot read {}: {err}", path.display()),
            GroupError::TooLarge { path } => write!(
                f,
                "{} is larger than {MAX_ACCOUNT_FILE} bytes",
                path.display()
            ),
            GroupError::NoSuchGroup { name } => write!(
                f,
                "no group '{name}' in /etc/group (give a group name from /etc/group or a numeric gid)"
            ),
        }
    }
}

impl std::error::Error for GroupError {}

impl ControlGroup {
    /// Resolve `spec` (a group name or a numeric gid) from `/etc/group` and `/etc/passwd`.
    pub fn resolve(spec: &str) -> Result<ControlGroup, GroupError> {
        let group = read_bounded(Path::new("/etc/group"))?;
        // Without /etc/passwd only the primary-gid rule admits members.
        let passwd = read_bounded(Path::new("/etc/passwd")).unwrap_or_default();
        ControlGroup::from_files(spec, &group, &passwd)
    }

    /// Resolve `spec` from the text of a group file and a passwd file.
    pub fn from_files(spec: &str, group: &str, passwd: &str) -> Result<ControlGroup, GroupError> {
        let numeric = spec.parse::<u32>().ok();
        let entry = group
            .lines()
            .filter_map(group_entry)
            .find(|e| match numeric {
                Some(gid) => e.gid == gid,
                None => e.name == spec,
            });
        let (gid, names) = match (entry, numeric) {
            (Some(e), _) => (e.gid, e.members),
            (None, Some(gid)) => (gid, ""),
            (None, None) => {
                return Err(GroupError::NoSuchGroup {
                    name: spec.to_string(),
                })
            }
        };
        let mut members: Vec<u32> = names
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .filter_map(|n| passwd.lines().find_map(|l| passwd_uid(l, n)))
            .take(MAX_MEMBERS)
            .collect();
        members.sort_unstable();
        members.dedup();
        Ok(ControlGroup {
            name: spec.to_string(),
            gid,
            members,
        })
    }
}

/// The `control_group` key of a loaded configuration: `None` when empty.
pub fn control_group(c: &Config) -> Result<Option<ControlGroup>, ConfigError> {
    let spec = c.str(CONTROL_GROUP_KEY.key)?;
    let spec = spec.trim();
    if spec.is_empty() {
        return Ok(None);
    }
    ControlGroup::resolve(spec)
        .map(Some)
        .map_err(|e| c.error_at(CONTROL_GROUP_KEY.key, &e.to_string()))
}

/// Whether a peer with credentials (`uid`, `gid`) may use the control socket of a daemon running
/// as `daemon_euid`: root, the daemon's own user, and members of the control group (by primary
/// gid, or listed in `/etc/group`).
pub fn peer_allowed(uid: u32, gid: u32, daemon_euid: u32, group: Option<&ControlGroup>) -> bool {
    uid == 0
        || uid == daemon_euid
        || group.is_some_and(|g| g.gid == gid || g.members.binary_search(&uid).is_ok())
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: &'a str,
}

/// One `/etc/group` line: `name:password:gid:member,member`.
fn group_entry(line: &str) -> Option<GroupEntry<'_>> {
    if line.starts_with('#') {
        return None;
    }
    let mut f = line.split(':');
    let name = f.next()?;
    let _password = f.next()?;
    let gid = f.next()?.trim().parse().ok()?;
    let members = f.next().unwrap_or("");
    Some(GroupEntry { name, gid, members })
}

/// The uid of `name` from one `/etc/passwd` line (`name:password:uid:...`).
fn passwd_uid(line: &str, name: &str) -> Option<u32> {
    let mut f = line.split(':');
    if f.next()? != name {
        return None;
    }
    let _password = f.next()?;
    f.next()?.trim().parse().ok()
}

fn read_bounded(path: &Path) -> Result<String, GroupError> {
    let read = |err| GroupError::Read {
        path: path.to_path_buf(),
        err,
    };
    let f = std::fs::File::open(path).map_err(read)?;
    let mut bytes = Vec::new();
    f.take(MAX_ACCOUNT_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > MAX_ACCOUNT_FILE {
        return Err(GroupError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUP: &str = "root:x:0:\n# a comment\nbroken line\nadm:x:4:syslog,alice\nhsbctl:x:990:alice, bob ,ghost\nnogroup:x:65534:\n";
    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\nbob:x:1001:1001::/home/bob:/bin/sh\n";

    #[test]
    fn groups_resolve_by_name_and_by_gid() {
        let g = ControlGroup::from_files("hsbctl", GROUP, PASSWD).unwrap();
        assert_eq!(g.gid, 990);
        // ghost has no passwd entry: left out.
        assert_eq!(g.members, vec![1000, 1001]);
        let g = ControlGroup::from_files("990", GROUP, PASSWD).unwrap();
        assert_eq!((g.gid, g.members.len()), (990, 2));
        // A gid without an entry is fine (another name service may know it).
        let g = ControlGroup::from_files("4242", GROUP, PASSWD).unwrap();
        assert_eq!((g.gid, g.members.len()), (4242, 0));
        let e = ControlGroup::from_files("wheel", GROUP, PASSWD).unwrap_err();
        assert!(e.to_string().contains("no group 'wheel'"), "{e}");
        assert!(ControlGroup::from_files("", GROUP, PASSWD).is_err());
    }

    #[test]
    fn peer_rule() {
        let daemon = 500;
        // No group: root and the daemon's own user only.
        assert!(peer_allowed(0, 0, daemon, None));
        assert!(peer_allowed(0, 12345, daemon, None));
        assert!(peer_allowed(daemon, 777, daemon, None));
        assert!(!peer_allowed(65534, 65534, daemon, None));
        assert!(!peer_allowed(1000, 990, daemon, None));
        // With a group: its gid, or a listed member.
        let g = ControlGroup::from_files("hsbctl", GROUP, PASSWD).unwrap();
        assert!(peer_allowed(2000, 990, daemon, Some(&g)));
        assert!(peer_allowed(1001, 1001, daemon, Some(&g)));
        assert!(!peer_allowed(65534, 65534, daemon, Some(&g)));
        assert!(!peer_allowed(2000, 4, daemon, Some(&g)));
        // A daemon running as root admits only root without a group.
        assert!(!peer_allowed(1000, 1000, 0, None));
    }
}
