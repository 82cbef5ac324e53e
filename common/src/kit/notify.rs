//! systemd's notification protocol, without libsystemd: `READY=1`, `STATUS=...`, `STOPPING=1`
//! and `WATCHDOG=1` as datagrams to the unix socket named by `$NOTIFY_SOCKET` (a path, or an
//! abstract socket written `@name`), for units of `Type=notify` with `WatchdogSec=`.
//!
//! The watchdog is kept from the daemon's loop: [`Notifier::next_deadline`] is one of the loop's
//! deadlines, and [`Notifier::tick`] sends `WATCHDOG=1` when it is due, every half of
//! `$WATCHDOG_USEC`, as sd_notify(3) advises. A loop that hangs stops petting the watchdog, and
//! systemd restarts the unit. Without `$NOTIFY_SOCKET` (not under systemd) everything here does
//! nothing. The variables are left in the environment on purpose: a hand-over execs the other
//! role in the same process (the same main PID for systemd), which then notifies too.
//!
//! Sends never block the loop (the socket is non-blocking); a failed send is counted and logged
//! a few times a minute, and changes nothing else.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use crate::logging::LogLimiter;
use crate::time::Nanos;

/// Longest STATUS text sent (longer text is cut at a character boundary).
pub const MAX_STATUS: usize = 200;
/// Shortest watchdog period honoured (a smaller `$WATCHDOG_USEC` is raised to twice this).
pub const MIN_WATCHDOG: Duration = Duration::from_millis(10);

/// Why the environment's notification settings were not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyError {
    /// `$NOTIFY_SOCKET` is neither an absolute path nor `@name`.
    Address(String),
    /// `$WATCHDOG_USEC` is not a positive number of microseconds.
    Watchdog(String),
    /// The socket could not be made.
    Socket(String),
}

impl std::fmt::Display for NotifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotifyError::Address(a) => write!(
                f,
                "NOTIFY_SOCKET={a:?}: expected an absolute path or @name (an abstract socket)"
            ),
            NotifyError::Watchdog(w) => write!(
                f,
                "WATCHDOG_USEC={w:?}: expected a positive number of microseconds"
            ),
            NotifyError::Socket(e) => write!(f, "cannot make the notification socket: {e}"),
        }
    }
}

impl std::error::Error for NotifyError {}

/// Where notifications go and when the watchdog is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifySettings {
    /// The socket: a path, or an abstract name (without its `@`).
    pub target: Target,
    /// How often `WATCHDOG=1` is sent (half of `$WATCHDOG_USEC`), if the watchdog is on and
    /// meant for this process.
    pub watchdog: Option<Duration>,
}

/// A notification socket's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A socket file.
    Path(std::path::PathBuf),
    /// An abstract socket (`@name` in `$NOTIFY_SOCKET`).
    Abstract(Vec<u8>),
}

/// Read the notification settings from the variables' values: `None` when `notify_socket` is
/// unset or empty (not under systemd). The watchdog is on when `watchdog_usec` is set and
/// `watchdog_pid`, if set, names `my_pid`.
pub fn settings(
    notify_socket: Option<&str>,
    watchdog_usec: Option<&str>,
    watchdog_pid: Option<&str>,
    my_pid: u32,
) -> Result<Option<NotifySettings>, NotifyError> {
    let Some(sock) = notify_socket.filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let target = if let Some(name) = sock.strip_prefix('@') {
        if name.is_empty() || name.len() > 107 {
            return Err(NotifyError::Address(sock.into()));
        }
        Target::Abstract(name.as_bytes().to_vec())
    } else if sock.starts_with('/') && sock.len() <= 107 {
        Target::Path(sock.into())
    } else {
        return Err(NotifyError::Address(sock.into()));
    };
    let for_me = watchdog_pid.is_none_or(|p| p.trim().parse::<u32>().ok() == Some(my_pid));
    let watchdog = match watchdog_usec.filter(|_| for_me) {
        None => None,
        Some(w) => match w.trim().parse::<u64>() {
            Ok(us) if us > 0 => Some((Duration::from_micros(us) / 2).max(MIN_WATCHDOG)),
            _ => return Err(NotifyError::Watchdog(w.into())),
        },
    };
    Ok(Some(NotifySettings { target, watchdog }))
}

/// The daemon's notifier.
#[derive(Debug)]
pub struct Notifier {
    out: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
    next_watchdog: Option<Nanos>,
    last_status: String,
    /// Notifications that could not be sent.
    pub errors: u64,
    /// `WATCHDOG=1` sent.
    pub watchdogs: u64,
    logs: LogLimiter<1>,
}

impl Notifier {
    /// A notifier that does nothing (not under systemd).
    pub fn off() -> Notifier {
        Notifier {
            out: None,
            watchdog: None,
            next_watchdog: None,
            last_status: String::new(),
            errors: 0,
            watchdogs: 0,
            logs: LogLimiter::new(3, Duration::from_secs(60)),
        }
    }

    /// From this process's environment; a setting that cannot be used is logged, and the
    /// notifier is off (a daemon runs on without systemd's view of it rather than not at all:
    /// with `Type=notify` systemd then fails the start, which says enough).
    pub fn from_env() -> Notifier {
        let var = |k: &str| std::env::var(k).ok();
        let s = settings(
            var("NOTIFY_SOCKET").as_deref(),
            var("WATCHDOG_USEC").as_deref(),
            var("WATCHDOG_PID").as_deref(),
            std::process::id(),
        );
        match s.and_then(|s| s.map(Notifier::new).transpose()) {
            Ok(Some(n)) => n,
            Ok(None) => Notifier::off(),
            Err(e) => {
                log::error!("systemd notification: {e}; not notifying");
                Notifier::off()
            }
        }
    }

    /// A notifier for `s`.
    pub fn new(s: NotifySettings) -> Result<Notifier, NotifyError> {
        let sock = UnixDatagram::unbound().map_err(|e| NotifyError::Socket(e.to_string()))?;
        sock.set_nonblocking(true)
            .map_err(|e| NotifyError::Socket(e.to_string()))?;
        let addr = match &s.target {
            Target::Path(p) => SocketAddr::from_pathname(p),
            Target::Abstract(n) => SocketAddr::from_abstract_name(n),
        }
        .map_err(|e| NotifyError::Socket(e.to_string()))?;
        let mut n = Notifier::off();
        n.out = Some((sock, addr));
        n.watchdog = s.watchdog;
        Ok(n)
    }

    /// Whether notifications go anywhere.
    pub fn enabled(&self) -> bool {
        self.out.is_some()
    }

    /// The watchdog period (half of `$WATCHDOG_USEC`), if on.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// The daemon is up (configuration checked, sockets bound): `READY=1` with its status.
    /// The watchdog starts from `now`.
    pub fn ready(&mut self, now: Nanos, status: &str) {
        let status = cut(status);
        self.send(&format!("READY=1\nSTATUS={status}\n"), now);
        self.last_status = status.to_string();
        if let Some(w) = self.watchdog {
            self.send("WATCHDOG=1\n", now);
            self.watchdogs += 1;
            self.next_watchdog = Some(now.plus(w));
        }
    }

    /// `STATUS=...`, sent only when it changed.
    pub fn status(&mut self, now: Nanos, status: &str) {
        let status = cut(status);
        if self.out.is_none() || status == self.last_status {
            return;
        }
        self.send(&format!("STATUS={status}\n"), now);
        self.last_status = status.to_string();
    }

    /// The daemon is stopping: `STOPPING=1` with a last status.
    pub fn stopping(&mut self, now: Nanos, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={}\n", cut(status)), now);
        self.next_watchdog = None;
    }

    /// This process is about to exec the other role (a hand-over keeps the main PID, and the
    /// new program notifies in its place): a last `STATUS=`, and `WATCHDOG=1` when the watchdog
    /// is on, so that the new program has a whole period to send its own `READY=1`. No
    /// `STOPPING=1`: for systemd the service goes on.
    pub fn before_exec(&mut self, now: Nanos, status: &str) {
        let status = cut(status);
        if let (Some(w), Some(_)) = (self.watchdog, self.next_watchdog) {
            self.send(&format!("STATUS={status}\nWATCHDOG=1\n"), now);
            self.watchdogs += 1;
            // Should the exec fail, this process goes on petting it.
            self.next_watchdog = Some(now.plus(w));
        } else {
            self.send(&format!("STATUS={status}\n"), now);
        }
        self.last_status = status.to_string();
    }

    /// When [`Notifier::tick`] next has something to do.
    pub fn next_deadline(&self) -> Option<Nanos> {
        self.next_watchdog
    }

    /// `WATCHDOG=1` if it is due at `now`.
    pub fn tick(&mut self, now: Nanos) {
        let (Some(at), Some(w)) = (self.next_watchdog, self.watchdog) else {
            return;
        };
        if now < at {
            return;
        }
        self.send("WATCHDOG=1\n", now);
        self.watchdogs += 1;
        self.next_watchdog = Some(now.plus(w));
    }

    fn send(&mut self, msg: &str, now: Nanos) {
        let Some((sock, addr)) = &self.out else {
            return;
        };
        if let Err(e) = sock.send_to_addr(msg.as_bytes(), addr) {
            self.errors += 1;
            if let Some(n) = self.logs.allow(0, now) {
                log::warn!(
                    "systemd notification {:?} not sent: {e}{}",
                    msg.lines().next().unwrap_or(""),
                    LogLimiter::<1>::note(n)
                );
            }
        }
    }
}

/// `s` on one line, at most [`MAX_STATUS`] bytes.
fn cut(s: &str) -> &str {
    let s = s.lines().next().unwrap_or("");
    if s.len() <= MAX_STATUS {
        return s;
    }
    let mut end = MAX_STATUS;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_says_where_and_how_often() {
        assert_eq!(settings(None, Some("1000000"), None, 7), Ok(None));
        assert_eq!(settings(Some(""), None, None, 7), Ok(None));
        let s = settings(Some("/run/systemd/notify"), Some("10000000"), None, 7)
            .expect("ok")
            .expect("on");
        assert_eq!(s.target, Target::Path("/run/systemd/notify".into()));
        assert_eq!(
            s.watchdog,
            Some(Duration::from_secs(5)),
            "half of WatchdogSec"
        );
        let s = settings(Some("@hsb/notify"), None, None, 7)
            .expect("ok")
            .expect("on");
        assert_eq!(s.target, Target::Abstract(b"hsb/notify".to_vec()));
        assert_eq!(s.watchdog, None);
        // The watchdog of another process (WATCHDOG_PID) is not ours.
        let s = settings(Some("/n"), Some("1000000"), Some("8"), 7)
            .expect("ok")
            .expect("on");
        assert_eq!(s.watchdog, None);
        let s = settings(Some("/n"), Some("1000000"), Some("7"), 7)
            .expect("ok")
            .expect("on");
        assert_eq!(s.watchdog, Some(Duration::from_millis(500)));
        // A tiny watchdog is raised to the floor.
        let s = settings(Some("/n"), Some("2"), None, 7)
            .expect("ok")
            .expect("on");
        assert_eq!(s.watchdog, Some(MIN_WATCHDOG));
        for bad in ["relative/path", "@", "vsock:2:3"] {
            assert!(matches!(
                settings(Some(bad), None, None, 7),
                Err(NotifyError::Address(_))
            ));
        }
        let long = format!("/{}", "x".repeat(200));
        assert!(settings(Some(&long), None, None, 7).is_err());
        for bad in ["0", "-5", "soon"] {
            assert!(matches!(
                settings(Some("/n"), Some(bad), None, 7),
                Err(NotifyError::Watchdog(_))
            ));
        }
    }

    fn recv_all(sock: &UnixDatagram) -> Vec<String> {
        let mut got = vec![];
        let mut buf = [0u8; 512];
        while let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        got
    }

    #[test]
    fn notifications_reach_a_real_socket_with_the_watchdog_from_deadlines() {
        let dir = std::env::temp_dir().join(format!("hsb-notify-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("notify");
        let rx = UnixDatagram::bind(&path).expect("bind");
        rx.set_nonblocking(true).expect("nonblocking");
        let mut n = Notifier::new(
            settings(path.to_str(), Some("200000"), None, 1)
                .expect("ok")
                .expect("on"),
        )
        .expect("notifier");
        assert_eq!(n.watchdog(), Some(Duration::from_millis(100)));
        assert_eq!(n.next_deadline(), None, "no watchdog before READY");
        n.ready(Nanos::from_millis(0), "starting\nsecond line ignored");
        assert_eq!(n.next_deadline(), Some(Nanos::from_millis(100)));
        n.tick(Nanos::from_millis(99));
        n.status(Nanos::from_millis(99), "starting");
        n.status(Nanos::from_millis(99), "protected");
        n.tick(Nanos::from_millis(100));
        assert_eq!(n.next_deadline(), Some(Nanos::from_millis(200)));
        n.before_exec(Nanos::from_millis(120), "handing over");
        n.stopping(Nanos::from_millis(150), "SIGTERM");
        assert_eq!(n.next_deadline(), None);
        assert_eq!(
            recv_all(&rx),
            [
                "READY=1\nSTATUS=starting\n",
                "WATCHDOG=1\n",
                "STATUS=protected\n",
                "WATCHDOG=1\n",
                "STATUS=handing over\nWATCHDOG=1\n",
                "STOPPING=1\nSTATUS=SIGTERM\n"
            ]
        );
        assert_eq!((n.watchdogs, n.errors), (3, 0));
        // The socket goes away: sends fail, are counted, and nothing else happens.
        drop(rx);
        let _ = std::fs::remove_file(&path);
        n.status(Nanos::from_millis(200), "gone");
        assert_eq!(n.errors, 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_abstract_socket_is_reached() {
        let name = format!("hsb-notify-unit-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(
            &SocketAddr::from_abstract_name(name.as_bytes()).expect("addr"),
        )
        .expect("bind");
        rx.set_nonblocking(true).expect("nonblocking");
        let mut n = Notifier::new(
            settings(Some(&format!("@{name}")), None, None, 1)
                .expect("ok")
                .expect("on"),
        )
        .expect("notifier");
        n.ready(Nanos::ZERO, "up");
        assert_eq!(recv_all(&rx), ["READY=1\nSTATUS=up\n"]);
        assert_eq!(n.next_deadline(), None, "no watchdog asked");
    }

    #[test]
    fn status_text_is_one_bounded_line() {
        assert_eq!(cut("a\nb"), "a");
        let long = "é".repeat(150);
        assert!(cut(&long).len() <= MAX_STATUS && cut(&long).len() >= MAX_STATUS - 1);
        let mut off = Notifier::off();
        off.ready(Nanos::ZERO, "x");
        off.tick(Nanos::from_millis(10_000));
        assert!(!off.enabled() && off.errors == 0 && off.next_deadline().is_none());
    }
}
