//! Signals for the daemons' mio loops: what each signal asks of a daemon, and the source that
//! delivers them to the loop.
//!
//! A signal handler may only do async-signal-safe things, so the handler (installed by
//! `signal-hook`) writes the signal to a self-pipe and the daemon's loop reads it like any other
//! event (`signal-hook-mio`). Installing a handler needs a raw `sigaction` call, which our
//! crates do not make (only sys crates may); those two crates keep it out of our code.
//!
//! What a signal asks ([`Request`]):
//! - `SIGTERM`, `SIGINT`, `SIGQUIT`: stop cleanly (log, flush the decision log, remove the
//!   control socket, exit 0). A primary releases no more output on its way out.
//! - `SIGHUP`: reopen the decision log and reload the configuration keys that can change at run
//!   time; the others are logged as needing a restart.
//! - Every other signal whose default action would end the process (`SIGUSR1`, `SIGUSR2`,
//!   `SIGALRM`, `SIGVTALRM`, `SIGPROF`, `SIGIO`, `SIGXCPU`, `SIGXFSZ`): logged and ignored, so
//!   no signal ends a daemon without a line in its log. (`SIGXFSZ` ignored makes a write past
//!   the file size limit fail with `EFBIG`, which the decision log counts, instead of killing.)
//! - `SIGPIPE` is ignored by the Rust runtime before `main` (a closed peer is an `EPIPE` error).
//! - Not caught: `SIGKILL` and `SIGSTOP` cannot be; the fault signals (`SIGSEGV`, `SIGBUS`,
//!   `SIGILL`, `SIGFPE`, `SIGTRAP`, `SIGSYS`, and `SIGABRT`, which a panic raises after printing
//!   its message) mean a bug and keep their default action, a core dump.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use mio::{Interest, Registry, Token};

use crate::config::{Config, ConfigError, KeySpec};
use crate::logging::LogLimiter;
use crate::time::Nanos;
use signal_hook::consts::signal::{
    SIGALRM, SIGHUP, SIGINT, SIGIO, SIGPROF, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGVTALRM,
    SIGXCPU, SIGXFSZ,
};
use signal_hook_mio::v1_0::Signals;

/// The signals a daemon stops on, cleanly.
pub const STOP: &[i32] = &[SIGTERM, SIGINT, SIGQUIT];

/// Signals logged and otherwise ignored (their default action would end the daemon).
pub const IGNORED: &[i32] = &[
    SIGUSR1, SIGUSR2, SIGALRM, SIGVTALRM, SIGPROF, SIGIO, SIGXCPU, SIGXFSZ,
];

/// What a signal asks of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Stop cleanly; the signal's name, for the log.
    Stop(&'static str),
    /// Reopen the log files and reload the configuration.
    Reload,
    /// Log and carry on; the signal's name.
    Ignore(&'static str),
}

/// The name of a signal this module handles (`SIG?` for any other).
pub fn name(sig: i32) -> &'static str {
    match sig {
        SIGTERM => "SIGTERM",
        SIGINT => "SIGINT",
        SIGQUIT => "SIGQUIT",
        SIGHUP => "SIGHUP",
        SIGUSR1 => "SIGUSR1",
        SIGUSR2 => "SIGUSR2",
        SIGALRM => "SIGALRM",
        SIGVTALRM => "SIGVTALRM",
        SIGPROF => "SIGPROF",
        SIGIO => "SIGIO",
        SIGXCPU => "SIGXCPU",
        SIGXFSZ => "SIGXFSZ",
        _ => "SIG?",
    }
}

/// What signal `sig` asks of a daemon.
pub fn request(sig: i32) -> Request {
    if STOP.contains(&sig) {
        Request::Stop(name(sig))
    } else if sig == SIGHUP {
        Request::Reload
    } else {
        Request::Ignore(name(sig))
    }
}

/// The requests of a batch of signals, most urgent first: a stop before a reload (a daemon
/// that is asked to stop does nothing else), each at most once.
pub fn order(signals: impl IntoIterator<Item = i32>) -> Vec<Request> {
    let mut out: Vec<Request> = Vec::new();
    for r in signals.into_iter().map(request) {
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out.sort_by_key(|r| match r {
        Request::Stop(_) => 0,
        Request::Reload => 1,
        Request::Ignore(_) => 2,
    });
    out
}

/// The signal source of one daemon, registered with its `Poll` under a token of its own.
pub struct SignalSource {
    signals: Signals,
    token: Token,
}

impl SignalSource {
    /// Install the handlers. Signals that arrive before [`SignalSource::register`] wait in the
    /// self-pipe, so a daemon can install them before its slow start-up and still hear a
    /// `SIGTERM` sent meanwhile.
    pub fn install() -> io::Result<SignalSource> {
        let all = STOP
            .iter()
            .chain(std::iter::once(&SIGHUP))
            .chain(IGNORED.iter());
        Ok(SignalSource {
            signals: Signals::new(all)?,
            token: Token(usize::MAX),
        })
    }

    /// Register with a daemon's poll under `token`.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(&mut self.signals, token, Interest::READABLE)?;
        self.token = token;
        Ok(())
    }

    /// Whether an event's token is this source's.
    pub fn owns(&self, t: Token) -> bool {
        t == self.token
    }

    /// The requests of the signals received since the last call, most urgent first (see
    /// [`order`]); bounded by the number of signals handled (a signal sent many times is
    /// delivered once).
    pub fn take(&mut self) -> Vec<Request> {
        order(self.signals.pending())
    }
}

/// A daemon's side of its signals: the source, and the configuration it started with (file
/// and `--set` overrides), to reload on SIGHUP.
pub struct SignalHandler {
    source: SignalSource,
    config: Option<PathBuf>,
    sets: Vec<String>,
    started: Config,
    ignored_log: LogLimiter<1>,
}

impl SignalHandler {
    /// For a daemon started with configuration file `config` and `--set` overrides `sets`
    /// (its configuration `started`), its signal handlers installed already
    /// ([`SignalSource::install`]).
    pub fn new(
        source: SignalSource,
        (config, sets): (Option<PathBuf>, Vec<String>),
        started: Config,
    ) -> SignalHandler {
        SignalHandler {
            source,
            config,
            sets,
            started,
            ignored_log: LogLimiter::new(3, Duration::from_secs(60)),
        }
    }

    /// Register with the daemon's poll under `token`.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        self.source.register(registry, token)
    }

    /// Whether an event's token is the signals'.
    pub fn owns(&self, t: Token) -> bool {
        self.source.owns(t)
    }

    /// The stops and reloads asked since the last call, a stop first; signals that ask
    /// nothing are logged here (at most 3 lines a minute) and left out.
    pub fn take(&mut self, now: Nanos) -> Vec<Request> {
        let mut out = self.source.take();
        out.retain(|r| match r {
            Request::Ignore(name) => {
                if let Some(n) = self.ignored_log.allow(0, now) {
                    log::warn!(
                        "{name} received and ignored: hsb stops on SIGTERM, SIGINT or SIGQUIT and reloads on SIGHUP{}",
                        LogLimiter::<1>::note(n)
                    );
                }
                false
            }
            _ => true,
        });
        out
    }

    /// Where the configuration is read from on SIGHUP, for logs.
    pub fn source(&self) -> String {
        self.config
            .as_ref()
            .map_or_else(|| "<defaults>".to_string(), |p| p.display().to_string())
    }

    /// The configuration file the daemon started with, if any.
    pub fn config_path(&self) -> Option<&std::path::Path> {
        self.config.as_deref()
    }

    /// The `--set` overrides the daemon started with.
    pub fn sets(&self) -> &[String] {
        &self.sets
    }

    /// SIGHUP: read the configuration again (the same file and `--set` overrides) and check
    /// it as at start (`parse`, the daemon's settings). The new settings and the keys whose
    /// values differ from those the daemon started with; an error leaves everything as it is.
    pub fn reload<S>(
        &self,
        schema: &'static [KeySpec],
        parse: impl FnOnce(&Config) -> Result<S, ConfigError>,
    ) -> Result<(S, Vec<&'static str>), ConfigError> {
        let cfg = Config::load(schema, self.config.as_deref(), &self.sets)?;
        let settings = parse(&cfg)?;
        Ok((settings, self.started.changed_keys(&cfg)))
    }

    /// [`Self::reload`] with its log lines: `None` (and an error line: the daemon runs on
    /// unchanged) if the configuration does not load or check.
    pub fn reload_logged<S>(
        &self,
        schema: &'static [KeySpec],
        parse: impl FnOnce(&Config) -> Result<S, ConfigError>,
    ) -> Option<(S, Vec<&'static str>)> {
        match self.reload(schema, parse) {
            Ok(v) => Some(v),
            Err(e) => {
                log::error!("SIGHUP: {e}; the configuration is not reloaded: running on unchanged");
                None
            }
        }
    }

    /// Log `SIGHUP: key X changed: restart to apply` for every changed key the daemon does not
    /// apply at run time (`applied`): it keeps running with the value it started with.
    pub fn restart_needed(changed: &[&'static str], applied: &[&str]) -> usize {
        let mut n = 0;
        for key in changed.iter().filter(|k| !applied.contains(k)) {
            log::warn!("SIGHUP: key {key} changed: restart to apply (the running value is kept)");
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_signal_asks_one_thing() {
        assert_eq!(request(SIGTERM), Request::Stop("SIGTERM"));
        assert_eq!(request(SIGINT), Request::Stop("SIGINT"));
        assert_eq!(request(SIGQUIT), Request::Stop("SIGQUIT"));
        assert_eq!(request(SIGHUP), Request::Reload);
        for s in IGNORED {
            assert!(
                matches!(request(*s), Request::Ignore(n) if n != "SIG?"),
                "{s}"
            );
        }
        // A stop wins over everything else of the same batch; duplicates go.
        assert_eq!(
            order([SIGUSR1, SIGHUP, SIGTERM, SIGHUP]),
            [
                Request::Stop("SIGTERM"),
                Request::Reload,
                Request::Ignore("SIGUSR1")
            ]
        );
    }

    /// A signal raised at this process arrives through the source, not as its default action.
    #[test]
    fn a_raised_signal_is_delivered_to_the_loop() {
        let mut poll = mio::Poll::new().expect("poll");
        let mut src = SignalSource::install().expect("install");
        src.register(poll.registry(), Token(3)).expect("register");
        signal_hook::low_level::raise(SIGUSR2).expect("raise");
        let mut events = mio::Events::with_capacity(4);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut got = Vec::new();
        while got.is_empty() && std::time::Instant::now() < deadline {
            match poll.poll(&mut events, Some(std::time::Duration::from_millis(100))) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("poll: {e}"),
            }
            if events.iter().any(|e| src.owns(e.token())) {
                got = src.take();
            }
        }
        assert_eq!(got, [Request::Ignore("SIGUSR2")]);
    }
}
