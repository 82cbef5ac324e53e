//! Unit tests of `ctl`.

use super::*;
use crate::time::Nanos;
use mio::{Events, Poll, Token};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory for one test.
fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "hsb-ctl-{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

/// A server in its own poll, answering every command with `answer COMMAND`.
struct Rig {
    poll: Poll,
    events: Events,
    server: CtlServer,
    path: PathBuf,
    commands: Vec<String>,
}

impl Rig {
    fn new(tag: &str) -> Rig {
        let path = tmp(tag).join("c.sock");
        let poll = Poll::new().unwrap();
        let server = CtlServer::bind(&path, None, poll.registry(), 10).unwrap();
        Rig {
            poll,
            events: Events::with_capacity(64),
            server,
            path,
            commands: Vec::new(),
        }
    }

    /// Poll and handle events, a few turns, at the time `now`.
    fn turn(&mut self, now: Nanos) {
        for _ in 0..3 {
            self.poll
                .poll(&mut self.events, Some(Duration::from_millis(30)))
                .unwrap();
            let tokens: Vec<Token> = self.events.iter().map(|e| e.token()).collect();
            for t in tokens {
                assert!(self.server.owns(t));
                if let Some((conn, cmd)) = self.server.on_event(self.poll.registry(), t, now) {
                    self.server
                        .answer(self.poll.registry(), conn, &format!("answer {cmd}\n"));
                    self.commands.push(cmd);
                }
            }
        }
    }

    fn connect(&self) -> UnixStream {
        let s = UnixStream::connect(&self.path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s
    }
}

fn read_all(s: &mut UnixStream) -> String {
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// At a clean exit the socket file goes, but only the one this server bound.
#[test]
fn the_socket_file_is_removed_at_exit_if_it_is_ours() {
    let rig = Rig::new("remove");
    assert_eq!(rig.server.path(), rig.path.as_path());
    assert!(rig.server.remove_socket().unwrap());
    assert!(!rig.path.exists());
    assert!(!rig.server.remove_socket().unwrap(), "already gone");
    // Another file at the path since (a newer daemon's socket, or not a socket): kept.
    let other = std::os::unix::net::UnixListener::bind(&rig.path).unwrap();
    assert!(!rig.server.remove_socket().unwrap());
    assert!(rig.path.exists());
    drop(other);
    std::fs::remove_file(&rig.path).unwrap();
    std::fs::write(&rig.path, b"x").unwrap();
    assert!(!rig.server.remove_socket().unwrap());
    assert!(rig.path.exists());
}

#[test]
fn command_lines_parse() {
    use CommandError::*;
    let p = parse_command;
    assert_eq!(p(b"status\n", false), Ok(Line::Command("status")));
    assert_eq!(p(b"  status \r\nrest", false), Ok(Line::Command("status")));
    assert_eq!(p(b"\n", false), Ok(Line::Command("")));
    assert_eq!(p(b"stat", false), Ok(Line::Incomplete));
    assert_eq!(p(b"stat", true), Ok(Line::Command("stat")));
    assert_eq!(p(b"", true), Ok(Line::Incomplete));
    assert_eq!(p(b"\tstatus\t\n", false), Ok(Line::Command("status")));
    let mut long = vec![b'a'; MAX_COMMAND];
    assert_eq!(p(&long, false), Ok(Line::Incomplete));
    long.push(b'\n');
    assert_eq!(
        p(&long, false),
        Ok(Line::Command(&"a".repeat(MAX_COMMAND)[..]))
    );
    long.insert(0, b'a');
    assert_eq!(p(&long, false), Err(TooLong));
    assert_eq!(p(&long, true), Err(TooLong));
    assert_eq!(p(b"st\xffatus\n", false), Err(NotUtf8));
    assert_eq!(p(b"sta\x1btus\n", false), Err(ControlCharacter));
    assert_eq!(p(b"sta\rtus\n", false), Err(ControlCharacter));
    assert_eq!(p(b"sta\x00", true), Err(ControlCharacter));
}

/// Issue 10 item 5: under umask 000 the socket was mode 0777 and anyone could activate.
#[test]
fn the_socket_is_private_whatever_the_umask() {
    use rustix::fs::Mode;
    let dir = tmp("umask");
    let existing = dir.join("existing");
    std::fs::create_dir(&existing).unwrap();
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o755)).unwrap();
    let created = dir.join("run/hsb");
    let poll = Poll::new().unwrap();
    let egid = rustix::process::getegid().as_raw();
    let group = ControlGroup {
        name: egid.to_string(),
        gid: egid,
        members: vec![],
    };
    let grouped = dir.join("grouped/g.sock");
    let old = rustix::process::umask(Mode::empty());
    let a = CtlServer::bind(&existing.join("a.sock"), None, poll.registry(), 10);
    let b = CtlServer::bind(&created.join("b.sock"), None, poll.registry(), 20);
    let c = CtlServer::bind(&grouped, Some(&group), poll.registry(), 30);
    rustix::process::umask(old);
    let (_a, _b, _c) = (a.unwrap(), b.unwrap(), c.unwrap());
    assert_eq!(mode(&existing.join("a.sock")), 0o600);
    assert_eq!(mode(&created.join("b.sock")), 0o600);
    // Directories it created are private; an existing one is left as it was.
    assert_eq!(mode(&created), 0o700);
    assert_eq!(mode(&dir.join("run")), 0o700);
    assert_eq!(mode(&existing), 0o755);
    // With control_group: 0660 in that group, the directory searchable by it.
    assert_eq!(mode(&grouped), 0o660);
    assert_eq!(std::fs::metadata(&grouped).unwrap().gid(), egid);
    assert_eq!(mode(grouped.parent().unwrap()), 0o710);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 11 item 7: a regular file at the `control` path was deleted and replaced.
#[test]
fn a_path_that_is_not_a_socket_is_never_replaced() {
    let dir = tmp("notsock");
    let poll = Poll::new().unwrap();
    let file = dir.join("control");
    std::fs::write(&file, "precious\n").unwrap();
    let e = CtlServer::bind(&file, None, poll.registry(), 10)
        .err()
        .expect("a regular file is refused");
    assert!(
        matches!(
            e,
            CtlError::NotASocket {
                found: "a regular file",
                ..
            }
        ),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains(&file.display().to_string()) && msg.contains("not a socket"),
        "{msg}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious\n");
    // Nor a directory, nor a symbolic link (even to a socket).
    assert!(matches!(
        CtlServer::bind(&dir, None, poll.registry(), 10),
        Err(CtlError::NotASocket {
            found: "a directory",
            ..
        })
    ));
    let sock = dir.join("real.sock");
    let live = CtlServer::bind(&sock, None, poll.registry(), 10).unwrap();
    let link = dir.join("link.sock");
    std::os::unix::fs::symlink(&sock, &link).unwrap();
    assert!(matches!(
        CtlServer::bind(&link, None, poll.registry(), 20),
        Err(CtlError::NotASocket {
            found: "a symbolic link",
            ..
        })
    ));
    // A live daemon's socket is not stolen; a stale one is replaced.
    assert!(matches!(
        CtlServer::bind(&sock, None, poll.registry(), 20),
        Err(CtlError::InUse { .. })
    ));
    drop(live);
    assert!(CtlServer::bind(&sock, None, poll.registry(), 20).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 11 item 7: eight idle connections locked out `status` and `activate`.
#[test]
fn idle_connections_cannot_lock_out_a_command() {
    let mut rig = Rig::new("evict");
    let t0 = Nanos::from_millis(1000);
    let mut idle: Vec<UnixStream> = (0..MAX_CONNS).map(|_| rig.connect()).collect();
    rig.turn(t0);
    assert_eq!(rig.server.connections(), MAX_CONNS);
    let mut s = rig.connect();
    s.write_all(b"status\n").unwrap();
    rig.turn(t0.plus(Duration::from_millis(10)));
    assert_eq!(read_all(&mut s), "answer status\n");
    assert_eq!(rig.commands, vec!["status"]);
    // The oldest idle connection made room; the others are still open.
    assert_eq!(read_all(&mut idle[0]), "");
    assert_eq!(rig.server.connections(), MAX_CONNS - 1);
    for (n, s) in idle.iter_mut().enumerate().skip(1) {
        s.write_all(format!("c{n}\n").as_bytes()).unwrap();
    }
    rig.turn(t0.plus(Duration::from_millis(20)));
    for (n, s) in idle.iter_mut().enumerate().skip(1) {
        assert_eq!(read_all(s), format!("answer c{n}\n"));
    }
    assert_eq!(rig.server.connections(), 0);
}

#[test]
fn deadlines_close_silent_and_slow_connections() {
    let mut rig = Rig::new("deadline");
    let t0 = Nanos::from_millis(5000);
    assert_eq!(rig.server.next_deadline(), None);
    let mut silent = rig.connect();
    let mut partial = rig.connect();
    partial.write_all(b"stat").unwrap();
    rig.turn(t0);
    assert_eq!(rig.server.connections(), 2);
    assert_eq!(rig.server.next_deadline(), Some(t0.plus(COMMAND_TIMEOUT)));
    rig.server.tick(
        rig.poll.registry(),
        t0.plus(COMMAND_TIMEOUT - Duration::from_millis(1)),
    );
    assert_eq!(rig.server.connections(), 2);
    rig.server
        .tick(rig.poll.registry(), t0.plus(COMMAND_TIMEOUT));
    assert_eq!(rig.server.connections(), 0);
    assert_eq!(rig.server.next_deadline(), None);
    assert_eq!(read_all(&mut silent), "");
    assert_eq!(read_all(&mut partial), "");
    assert!(rig.commands.is_empty());
}

#[test]
fn bad_command_lines_get_a_one_line_error() {
    let mut rig = Rig::new("bad");
    let mut long = rig.connect();
    long.write_all(&[b'x'; 600]).unwrap();
    let mut ctrl = rig.connect();
    ctrl.write_all(b"activate\x00\n").unwrap();
    let mut eof = rig.connect();
    eof.write_all(b"status").unwrap();
    eof.shutdown(std::net::Shutdown::Write).unwrap();
    rig.turn(Nanos::from_millis(1));
    assert_eq!(
        read_all(&mut long),
        format!("error: command too long (at most {MAX_COMMAND} bytes)\n")
    );
    assert_eq!(
        read_all(&mut ctrl),
        "error: command contains control characters\n"
    );
    // A last line without its newline still counts.
    assert_eq!(read_all(&mut eof), "answer status\n");
    assert_eq!(rig.commands, vec!["status"]);
}

#[test]
fn request_reads_the_answer_of_a_server_that_closes_early() {
    let dir = tmp("early");
    let path = dir.join("s.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(b"error: permission denied\n").unwrap();
    });
    let answer = request(&path, "status", Duration::from_secs(2)).unwrap();
    t.join().unwrap();
    assert_eq!(answer, "error: permission denied\n");
    let _ = std::fs::remove_dir_all(&dir);
}
