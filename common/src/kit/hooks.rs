//! Commands a daemon runs on events (`on_activate`, `on_fence`): child processes watched by
//! the loop, never waited for in it. Each runs in its own process group, so a command that
//! starts others (a shell script) is killed whole when it overruns its time.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::time::Nanos;

/// Hooks that may run at once (a daemon runs one at a time per kind; the bound keeps a storm
/// of events from forking without end).
pub const MAX_HOOKS: usize = 4;

/// How a hook ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookEnd {
    /// Exit status 0.
    Done,
    /// Another exit status, or a signal.
    Failed(String),
    /// Still running at its deadline: killed with its process group.
    Killed,
    /// Could not be watched any more (an error of the system).
    Lost(String),
}

/// A finished hook: its name, how it ended and how long it ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The hook's name (`on_activate`, ...).
    pub name: &'static str,
    /// How it ended.
    pub end: HookEnd,
    /// How long it ran.
    pub took: Duration,
}

struct Running {
    name: &'static str,
    child: Child,
    started: Nanos,
    deadline: Nanos,
}

/// The hooks running now.
#[derive(Default)]
pub struct Hooks {
    running: Vec<Running>,
}

impl Hooks {
    /// None running.
    pub fn new() -> Hooks {
        Hooks::default()
    }

    /// Start `argv` (no shell) as hook `name` with `env` added, to be killed if it runs past
    /// `timeout`. Its standard input is /dev/null; its output goes where the daemon's does.
    pub fn spawn(
        &mut self,
        name: &'static str,
        argv: &[String],
        env: &[(&str, String)],
        now: Nanos,
        timeout: Duration,
    ) -> Result<u32, String> {
        let Some((prog, args)) = argv.split_first() else {
            return Err(format!("{name}: no command"));
        };
        if self.running.len() >= MAX_HOOKS {
            return Err(format!(
                "{name}: {MAX_HOOKS} hooks are running already; not started"
            ));
        }
        let mut cmd = Command::new(prog);
        cmd.args(args).stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .map_err(|e| format!("{name}: cannot run {prog}: {e}"))?;
        let pid = child.id();
        self.running.push(Running {
            name,
            child,
            started: now,
            deadline: now.plus(timeout),
        });
        Ok(pid)
    }

    /// Whether hook `name` is running.
    pub fn is_running(&self, name: &str) -> bool {
        self.running.iter().any(|r| r.name == name)
    }

    /// Whether any hook runs (the loop then wakes now and then to reap it).
    pub fn any(&self) -> bool {
        !self.running.is_empty()
    }

    /// The earliest kill deadline, if a hook runs.
    pub fn next_deadline(&self) -> Option<Nanos> {
        self.running.iter().map(|r| r.deadline).min()
    }

    /// Reap the hooks that ended, kill those past their deadline.
    pub fn poll(&mut self, now: Nanos) -> Vec<Finished> {
        let mut done = Vec::new();
        let mut i = 0;
        while i < self.running.len() {
            let r = &mut self.running[i];
            let end = match r.child.try_wait() {
                Ok(Some(s)) if s.success() => Some(HookEnd::Done),
                Ok(Some(s)) => Some(HookEnd::Failed(s.to_string())),
                Ok(None) if now >= r.deadline => {
                    // The group's leader is the child itself (process_group(0)).
                    if let Some(pid) = rustix::process::Pid::from_raw(r.child.id() as i32) {
                        let _ =
                            rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                    }
                    let _ = r.child.kill();
                    let _ = r.child.wait();
                    Some(HookEnd::Killed)
                }
                Ok(None) => None,
                Err(e) => Some(HookEnd::Lost(e.to_string())),
            };
            match end {
                Some(end) => {
                    let r = self.running.swap_remove(i);
                    done.push(Finished {
                        name: r.name,
                        end,
                        took: now.since(r.started),
                    });
                }
                None => i += 1,
            }
        }
        done
    }
}

impl Drop for Hooks {
    fn drop(&mut self) {
        // A daemon that exits leaves its hooks running: they are the operator's commands (a
        // half-moved service address is worse than a finished move).
        self.running.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_end(h: &mut Hooks, t0: std::time::Instant) -> Finished {
        loop {
            let now = Nanos::from_millis(t0.elapsed().as_millis() as u64);
            if let Some(f) = h.poll(now).pop() {
                return f;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "no end");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn argv(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn hooks_are_watched_not_waited_for() {
        let t0 = std::time::Instant::now();
        let mut h = Hooks::new();
        let long = Duration::from_secs(5);
        h.spawn("ok", &argv(&["true"]), &[], Nanos(0), long)
            .expect("spawn");
        assert!(h.is_running("ok"));
        let f = wait_end(&mut h, t0);
        assert_eq!((f.name, f.end), ("ok", HookEnd::Done));
        h.spawn("bad", &argv(&["false"]), &[], Nanos(0), long)
            .expect("spawn");
        assert!(matches!(wait_end(&mut h, t0).end, HookEnd::Failed(_)));
        // The environment reaches the command.
        h.spawn(
            "env",
            &argv(&["sh", "-c", "test \"$HSB_EPOCH\" = 7"]),
            &[("HSB_EPOCH", "7".into())],
            Nanos(0),
            long,
        )
        .expect("spawn");
        assert_eq!(wait_end(&mut h, t0).end, HookEnd::Done);
        assert!(h.spawn("none", &[], &[], Nanos(0), long).is_err());
        assert!(h
            .spawn("missing", &argv(&["/nonexistent/x"]), &[], Nanos(0), long)
            .is_err());
    }

    /// A hook that overruns is killed with everything it started (a shell's children too).
    #[test]
    fn an_overrunning_hook_is_killed_with_its_group() {
        let dir = std::env::temp_dir().join(format!("hsb-hook-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let marker = dir.join("late");
        let _ = std::fs::remove_file(&marker);
        let mut h = Hooks::new();
        let script = format!("sleep 0.5; touch {}", marker.display());
        let t0 = std::time::Instant::now();
        h.spawn(
            "slow",
            &argv(&["sh", "-c", &format!("({script}) & wait")]),
            &[],
            Nanos(0),
            Duration::from_millis(100),
        )
        .expect("spawn");
        assert_eq!(h.next_deadline(), Some(Nanos::from_millis(100)));
        let f = wait_end(&mut h, t0);
        assert_eq!(f.end, HookEnd::Killed);
        std::thread::sleep(Duration::from_millis(800));
        assert!(!marker.exists(), "the hook's child outlived it");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
