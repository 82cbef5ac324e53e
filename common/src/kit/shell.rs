//! What every daemon's shell has around its node, kept in one place: the operator's surface
//! (the control socket, the Prometheus responder, systemd's notifications and the pacing of
//! systemd's `STATUS=`), the loop itself, the token plan, and the common part of a SIGHUP
//! reload. Each daemon keeps only what is its own: the commands it answers, the
//! summary it gives, the keys it applies at run time.
//!
//! The token plan, one for the three daemons (their `Poll`s' tokens):
//!
//! | tokens | whose |
//! |---|---|
//! | 0 | the signals ([`SIGNALS`]) |
//! | 1 ..= 9 | the daemon's own sockets, one token each |
//! | 10 ..= 18 | the control socket: listener and connections ([`CTL_BASE`]) |
//! | 19 ..= 29 | the daemon's own (the standby's heartbeat links) |
//! | 30 ..= 34 | the metrics responder: listener and connections ([`METRICS_BASE`]) |
//! | 35 and up | the daemon's own (witness guests, probes, replication connections, the model service) |
//!
//! Each daemon checks at compile time that its own tokens stay off the kit's ([`own`]).

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use mio::{Events, Poll, Registry, Token};

use crate::config::{Config, ConfigError, KeySpec};
use crate::ctl::ControlGroup;
use crate::ctl::CtlServer;
use crate::kit::http::MetricsServer;
use crate::kit::metrics::{build_info, Exposition};
use crate::kit::notify::Notifier;
use crate::kit::turns::Turns;
use crate::recorder::Recorder;
use crate::signals::{Request, SignalHandler};
use crate::time::Nanos;

/// How often systemd's STATUS is brought up to date (when it changed).
pub const NOTIFY_STATUS_EVERY: Duration = Duration::from_secs(1);

/// The operator's surface of a daemon: its control socket, its metrics responder (when
/// `metrics_listen` is set) and systemd's notifier, each on the loop's tokens and deadlines.
pub struct Surface {
    pub ctl: CtlServer,
    pub metrics: Option<MetricsServer>,
    pub notify: Notifier,
    /// How long the loop's turns take ([`super::turns`]).
    pub turns: Turns,
    next_status: Nanos,
}

/// The signals' token, the same in every daemon (see the token plan above).
pub const SIGNALS: Token = Token(0);
/// The control socket's tokens: `CTL_BASE ..= CTL_BASE + ctl::MAX_CONNS`.
pub const CTL_BASE: usize = 10;
/// The metrics responder's tokens: `METRICS_BASE ..= METRICS_BASE + http::MAX_CONNS`.
pub const METRICS_BASE: usize = 30;

const _: () = assert!(CTL_BASE + crate::ctl::MAX_CONNS < METRICS_BASE);

/// Whether tokens `first .. first + n` are free for a daemon's own use in the token plan: not
/// the signals', the control socket's or the metrics responder's.
pub const fn own(first: usize, n: usize) -> bool {
    first > SIGNALS.0
        && clear_of(first, n, CTL_BASE, crate::ctl::MAX_CONNS)
        && clear_of(first, n, METRICS_BASE, crate::kit::http::MAX_CONNS)
}

/// Whether `first .. first + n` misses a server's `base ..= base + conns`.
const fn clear_of(first: usize, n: usize, base: usize, conns: usize) -> bool {
    first + n <= base || first > base + conns
}

impl Surface {
    /// Bind the control socket (key `control`, in `control_group`) and the metrics responder
    /// (`metrics_listen`), and read systemd's environment. An error names the key at fault.
    pub fn bind(
        (control, control_group): (&Path, Option<&ControlGroup>),
        metrics_listen: Option<SocketAddr>,
        registry: &Registry,
        now: Nanos,
    ) -> io::Result<Surface> {
        let ctl = CtlServer::bind(control, control_group, registry, CTL_BASE)
            .map_err(|e| io::Error::other(format!("control socket: {e}")))?;
        let metrics = match metrics_listen {
            None => None,
            Some(a) => {
                let m = MetricsServer::bind(a, registry, METRICS_BASE).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("metrics address {a} (key metrics_listen): {e}"),
                    )
                })?;
                log::info!("metrics at http://{}/metrics", m.local_addr()?);
                Some(m)
            }
        };
        Ok(Surface {
            ctl,
            metrics,
            notify: Notifier::from_env(),
            turns: Turns::default(),
            next_status: now,
        })
    }

    /// The surface's earliest deadline: a connection's, systemd's watchdog, the next STATUS.
    pub fn next_deadline(&self) -> Option<Nanos> {
        [
            self.ctl.next_deadline(),
            self.metrics.as_ref().and_then(MetricsServer::next_deadline),
            self.notify.next_deadline(),
            self.notify.enabled().then_some(self.next_status),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whether `t` is the metrics responder's.
    pub fn owns_metrics(&self, t: Token) -> bool {
        self.metrics.as_ref().is_some_and(|m| m.owns(t))
    }

    /// An event of the metrics responder's: the connection to answer with
    /// [`Surface::answer_scrape`] when a scrape is complete.
    pub fn scrape(&mut self, registry: &Registry, t: Token, now: Nanos) -> Option<usize> {
        self.metrics.as_mut()?.on_event(registry, t, now)
    }

    /// Answer a scrape with the exposition `text`.
    pub fn answer_scrape(&mut self, registry: &Registry, conn: usize, text: &str, now: Nanos) {
        if let Some(m) = &mut self.metrics {
            m.answer(registry, conn, text, now);
        }
    }

    /// The surface's turn, after the events: connections past their deadline close, systemd's
    /// watchdog is fed. True when systemd's STATUS is due: give it with [`Surface::status`].
    pub fn tick(&mut self, registry: &Registry, now: Nanos) -> bool {
        self.ctl.tick(registry, now);
        if let Some(m) = &mut self.metrics {
            m.tick(registry, now);
        }
        self.notify.tick(now);
        if now >= self.next_status {
            self.next_status = now.plus(NOTIFY_STATUS_EVERY);
            return true;
        }
        false
    }

    /// systemd's STATUS (sent when it changed).
    pub fn status(&mut self, now: Nanos, summary: &str) {
        self.notify.status(now, summary);
    }

    /// READY, with the first summary; the next STATUS is due a period later.
    pub fn ready(&mut self, now: Nanos, summary: &str) {
        self.notify.ready(now, summary);
        self.next_status = now.plus(NOTIFY_STATUS_EVERY);
    }

    /// The `metrics` line of `status`: where the responder listens and what it answered (none
    /// when `metrics_listen` is not set).
    pub fn metrics_status(&self) -> Option<String> {
        let m = self.metrics.as_ref()?;
        let st = m.stats();
        Some(format!(
            "{} ({} scrapes, {} refused)",
            m.local_addr().map_or("?".into(), |a| a.to_string()),
            st.scrapes,
            st.refused
        ))
    }

    /// An exposition begun with what every daemon's has first: its build and its uptime.
    pub fn exposition(daemon: &str, now: Nanos) -> Exposition {
        let mut e = Exposition::new();
        build_info(
            &mut e,
            daemon,
            env!("CARGO_PKG_VERSION"),
            crate::cli::COMMIT,
            crate::frame::VERSION,
        );
        e.gauge(
            "hsb_uptime_seconds",
            "time since the daemon started (monotonic)",
            now.as_duration().as_secs_f64(),
        );
        e
    }

    /// The surface's own families (scrapes, refusals, systemd's notification errors), and the
    /// exposition's text.
    pub fn finish_exposition(&self, mut e: Exposition) -> String {
        if let Some(m) = &self.metrics {
            let st = m.stats();
            e.counter(
                "hsb_metrics_scrapes_total",
                "scrapes answered (this one not counted yet)",
                st.scrapes,
            );
            e.counter(
                "hsb_metrics_refused_total",
                "metrics requests refused (malformed, another path or method, too large, no free connection)",
                st.refused,
            );
        }
        e.counter(
            "hsb_systemd_notify_errors_total",
            "notifications to systemd that could not be sent",
            self.notify.errors,
        );
        e.counter(
            "hsb_loop_long_turns_total",
            "turns of the daemon's loop longer than 50 ms (nothing else ran meanwhile)",
            self.turns.long,
        );
        e.gauge(
            "hsb_loop_turn_max_seconds",
            "the longest turn of the daemon's loop so far",
            self.turns.max.as_secs_f64(),
        );
        e.finish()
    }

    /// A stop: the decision log (if any) flushed, STOPPING for systemd, and the control
    /// socket's file removed.
    pub fn stopping(&mut self, now: Nanos, signal: &str, log: Option<&mut Recorder>) {
        if let Some(r) = log {
            r.flush();
        }
        self.notify.stopping(now, &format!("{signal}: stopping"));
        self.ctl.stopped(signal);
    }
}

/// A daemon's shell as the loop sees it: what it owns of the loop's parts, and what it does
/// at each point of a turn. The loop itself ([`run`]) is the same in every daemon.
pub trait Shell {
    /// The clock, read by the loop (a daemon may look at it for stalls here).
    fn now(&mut self) -> Nanos;
    /// The loop's poll.
    fn poll(&mut self) -> &mut Poll;
    /// The operator's surface and the registry its sockets are on.
    fn surface(&mut self) -> (&mut Surface, &Registry);
    /// When the loop must wake next: the earliest deadline (not before `now`).
    fn deadline(&mut self, now: Nanos) -> Nanos;
    /// systemd's STATUS line.
    fn summary(&self, now: Nanos) -> String;
    /// The metrics exposition.
    fn metrics_text(&self, now: Nanos) -> String;
    /// A control command on connection `conn`: answer it (now, or later through the node).
    fn command(&mut self, now: Nanos, conn: usize, cmd: &str);
    /// After the signals, before this turn's events.
    fn before_events(&mut self, _now: Nanos) {}
    /// An event of one of the daemon's own tokens.
    fn on_token(&mut self, now: Nanos, ev: &mio::event::Event);
    /// After the events and the surface's turn: timers, the node's own turn, flushes.
    fn after_events(&mut self, now: Nanos);
    /// SIGTERM, SIGINT or SIGQUIT: stop (the loop ends after this).
    fn stop(&mut self, now: Nanos, signal: &'static str);
    /// SIGHUP.
    fn reload(&mut self, now: Nanos, signals: &SignalHandler);
}

/// The loop, until a stop signal: READY for systemd, then turn after turn: sleep until the
/// earliest deadline; the signals first (a stop ends the loop before anything else of the turn
/// is done); the daemon's events, the control socket's and the metrics responder's; the
/// surface's turn (and systemd's STATUS); the daemon's own turn.
pub fn run(d: &mut impl Shell, mut signals: SignalHandler) -> io::Result<()> {
    signals.register(d.poll().registry(), SIGNALS)?;
    let mut events = Events::with_capacity(256);
    let now = d.now();
    let summary = d.summary(now);
    d.surface().0.ready(now, &summary);
    loop {
        let now = d.now();
        let timeout = d.deadline(now).since(now);
        match d.poll().poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        let now = d.now();
        let start = now;
        if signals_first(d, &events, &mut signals, now) {
            return Ok(());
        }
        d.before_events(now);
        let before = d.now();
        for ev in events.iter() {
            // Each event at the time it is handled: after a long one (a standby applying a
            // large checkpoint) the heartbeats that waited in their socket are heard now, not
            // at the turn's start, which would read as that long a silence. Times never go back.
            let now = d.now();
            let t = ev.token();
            let (surface, registry) = d.surface();
            if surface.ctl.owns(t) {
                if let Some((conn, cmd)) = surface.ctl.on_event(registry, t, now) {
                    d.command(now, conn, &cmd);
                }
            } else if surface.owns_metrics(t) {
                if let Some(conn) = surface.scrape(registry, t, now) {
                    let text = d.metrics_text(now);
                    let (surface, registry) = d.surface();
                    surface.answer_scrape(registry, conn, &text, now);
                }
            } else if !signals.owns(t) {
                d.on_token(now, ev);
            }
        }
        let now = d.now();
        let (surface, registry) = d.surface();
        if surface.tick(registry, now) {
            let summary = d.summary(now);
            d.surface().0.status(now, &summary);
        }
        d.after_events(now);
        let end = d.now();
        let parts = [
            ("before events", before.since(start)),
            ("events", now.since(before)),
            ("after events", end.since(now)),
        ];
        if let Some(line) = d.surface().0.turns.record(end, &parts) {
            log::warn!("{line}");
        }
    }
}

/// The signals of this turn of the loop, first, before anything else of the turn is done: a
/// stop before a reload. True when the daemon stopped: the loop ends.
fn signals_first(
    d: &mut impl Shell,
    events: &Events,
    signals: &mut SignalHandler,
    now: Nanos,
) -> bool {
    if !events.iter().any(|e| signals.owns(e.token())) {
        return false;
    }
    for r in signals.take(now) {
        match r {
            Request::Stop(name) => {
                d.stop(now, name);
                return true;
            }
            Request::Reload => d.reload(now, signals),
            Request::Ignore(_) => {}
        }
    }
    false
}

/// A daemon's settings as SIGHUP sees them: which keys it applies at run time, and how.
pub trait Reload: Sized {
    /// Keys a SIGHUP applies at run time; any other key that changed waits for a restart.
    const RELOADED: &'static [&'static str];
    /// Take the keys of [`Reload::RELOADED`] from `new`, logging each that changed.
    fn apply(&mut self, new: Self);
    /// Key `stats_interval`, which paces the periodic stats line.
    fn stats_interval(&self) -> Duration;
}

/// The SIGHUP of a primary and a standby: reopen the decision log, reload and check the
/// configuration, apply [`Reload::RELOADED`] to `running` (a changed `stats_interval` counts
/// from now) and log every other changed key as waiting for a restart. A configuration that
/// does not load or check changes nothing.
pub fn reload<S: Reload>(
    signals: &SignalHandler,
    now: Nanos,
    recorder: Option<&mut Recorder>,
    (running, next_stats): (&mut S, &mut Nanos),
    schema: &'static [KeySpec],
    parse: impl FnOnce(&Config) -> Result<S, ConfigError>,
) {
    log::info!(
        "SIGHUP: reopening the decision log and reloading the configuration from {}",
        signals.source()
    );
    if let Some(r) = recorder {
        r.sighup(now);
    }
    let Some((new, changed)) = signals.reload_logged(schema, parse) else {
        return;
    };
    let stats_before = running.stats_interval();
    running.apply(new);
    if running.stats_interval() != stats_before {
        *next_stats = now.plus(running.stats_interval());
    }
    let waiting = SignalHandler::restart_needed(&changed, S::RELOADED);
    log::info!("SIGHUP: configuration reloaded; {waiting} changed key(s) wait for a restart");
}

/// A key applied at run time: `running` takes `new`, logged when it changed.
pub fn reload_key<T: PartialEq + std::fmt::Debug>(key: &str, running: &mut T, new: T) {
    if new != *running {
        log::info!("SIGHUP: {key} {running:?} -> {new:?}");
        *running = new;
    }
}

/// A hook's command (`on_fence`, `on_activate`) applied at run time: used the next time the
/// hook runs, logged when it changed.
pub fn reload_hook(key: &str, running: &mut Vec<String>, new: Vec<String>) {
    if new != *running {
        log::info!("SIGHUP: {key} is now '{}'", new.join(" "));
        *running = new;
    }
}

/// Whether the periodic stats line is due at `now` (never with an interval of zero); when it
/// is, the next one is set an interval later.
pub fn stats_due(now: Nanos, interval: Duration, next: &mut Nanos) -> bool {
    if interval > Duration::ZERO && now >= *next {
        *next = now.plus(interval);
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_plan_keeps_a_daemon_s_own_tokens_off_the_kit_s() {
        assert!(!own(0, 1), "the signals'");
        assert!(own(1, 9));
        assert!(!own(5, 6), "runs into the control socket's");
        assert!(!own(CTL_BASE + crate::ctl::MAX_CONNS, 1));
        assert!(own(CTL_BASE + crate::ctl::MAX_CONNS + 1, 11));
        assert!(!own(25, 6), "runs into the metrics responder's");
        assert!(!own(METRICS_BASE + crate::kit::http::MAX_CONNS, 1));
        assert!(own(METRICS_BASE + crate::kit::http::MAX_CONNS + 1, 1000));
    }
}
