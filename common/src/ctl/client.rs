//! The client side of the control socket: [`request`] sends one command and reads the
//! answer, and the CLIs' `hsb-X activate`, `hsb-X status [--json]` and friends find the socket
//! and turn the answer into an exit status.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{status, Health, Status, MAX_ANSWER};

/// Send one command and read the whole answer (blocking, with a timeout). Used by the CLIs.
/// A daemon that refuses us may answer and close before it reads the command: its answer is
/// still returned.
pub fn request(path: &Path, command: &str, timeout: Duration) -> io::Result<String> {
    let mut s = UnixStream::connect(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot reach the daemon's control socket {}: {e} (is it running?)",
                path.display()
            ),
        )
    })?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let sent = s.write_all(format!("{command}\n").as_bytes());
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while (answer.len() as u64) < MAX_ANSWER {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Closed with our command unread: what came before the reset is the answer.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && !answer.is_empty() => break,
            Err(e) => return Err(sent.err().unwrap_or(e)),
        }
    }
    if answer.is_empty() {
        sent?;
    }
    answer.truncate(MAX_ANSWER as usize);
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// The control socket of a daemon whose control path is derived from its configuration
/// (`resolve`, e.g. from its id) and whose default needs looking for (`default`, called only
/// without `--control` and without a usable `control` in the configuration).
fn control_path_with(
    args: &crate::cli::Args,
    schema: &'static [crate::config::KeySpec],
    resolve: impl Fn(&crate::config::Config) -> Result<PathBuf, crate::config::ConfigError>,
    default: impl FnOnce() -> Result<PathBuf, String>,
) -> Result<PathBuf, String> {
    match &args.control {
        Some(p) => Ok(p.clone()),
        None => match crate::config::Config::load(schema, args.config.as_deref(), &args.sets) {
            Ok(c) => resolve(&c).or_else(|_| default()),
            Err(_) if args.config.is_none() => default(),
            Err(e) => Err(e.to_string()),
        },
    }
}

/// The CLI side of `hsb-standby activate` and friends: find the control socket (`--control`,
/// else the configuration's `control` key, else `default`), send `command`, print the answer.
/// Returns the process exit status: 0 on an answer that is not an `error:`, else 1.
pub fn cli(
    daemon: &str,
    args: &crate::cli::Args,
    schema: &'static [crate::config::KeySpec],
    default: &str,
    command: &str,
) -> u8 {
    cli_with(
        daemon,
        args,
        schema,
        |c| c.path("control"),
        || Ok(default.into()),
        command,
    )
}

/// Like [`cli`], for a daemon whose control path is derived from its configuration (see
/// [`control_path_with`]).
pub fn cli_with(
    daemon: &str,
    args: &crate::cli::Args,
    schema: &'static [crate::config::KeySpec],
    resolve: impl Fn(&crate::config::Config) -> Result<PathBuf, crate::config::ConfigError>,
    default: impl FnOnce() -> Result<PathBuf, String>,
    command: &str,
) -> u8 {
    let path = match control_path_with(args, schema, resolve, default) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{daemon}: {e}");
            return 1;
        }
    };
    match request(&path, command, Duration::from_secs(10)) {
        Ok(out) => {
            print!("{out}");
            // An operator's request refused, or not finished yet, is not a success either.
            u8::from(
                out.starts_with("error")
                    || out.starts_with("refused")
                    || out.starts_with("in progress")
                    || out.is_empty(),
            )
        }
        Err(e) => {
            eprintln!("{daemon}: {e}");
            1
        }
    }
}

/// The CLI side of `hsb-X status [--json]`: print the daemon's status (as one JSON object with
/// `--json`) and return its [`Health`] as the exit status: 0 healthy, 1 degraded or
/// unprotected, 2 fenced, stepped down or down, 3 no status (the control socket cannot be
/// reached, or refuses us), [`status::USAGE_EXIT`] for a configuration that cannot be read.
pub fn status_cli(
    daemon: &str,
    args: &crate::cli::Args,
    schema: &'static [crate::config::KeySpec],
    default: &str,
) -> u8 {
    status_cli_with(
        daemon,
        args,
        schema,
        |c| c.path("control"),
        || Ok(default.into()),
    )
}

/// Like [`status_cli`], for a daemon whose control path is derived from its configuration
/// (see [`control_path_with`]).
pub fn status_cli_with(
    daemon: &str,
    args: &crate::cli::Args,
    schema: &'static [crate::config::KeySpec],
    resolve: impl Fn(&crate::config::Config) -> Result<PathBuf, crate::config::ConfigError>,
    default: impl FnOnce() -> Result<PathBuf, String>,
) -> u8 {
    status_cli_at(
        daemon,
        args,
        control_path_with(args, schema, resolve, default),
        "status",
    )
}

/// Like [`status_cli`], with the control socket already found (or why it could not be) and
/// the status command to send (`status`, or e.g. `status GUEST` to a witness).
pub fn status_cli_at(
    daemon: &str,
    args: &crate::cli::Args,
    path: Result<PathBuf, String>,
    command: &str,
) -> u8 {
    let path = match path {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{daemon}: {e}");
            return status::USAGE_EXIT;
        }
    };
    let text = match request(&path, command, Duration::from_secs(10)) {
        Ok(t) if !t.starts_with("error") && !t.trim().is_empty() => t,
        Ok(t) => {
            eprintln!(
                "{daemon}: {} gave no status: {}",
                path.display(),
                if t.trim().is_empty() {
                    "it closed the connection"
                } else {
                    t.trim()
                }
            );
            return Health::Unreachable.code();
        }
        Err(e) => {
            eprintln!("{daemon}: {e}");
            return Health::Unreachable.code();
        }
    };
    let st = Status::parse(&text);
    if args.flag("json") {
        print!("{}", st.to_json());
    } else {
        print!("{text}");
    }
    Health::of(&st, daemon.strip_prefix("hsb-").unwrap_or(daemon)).code()
}
