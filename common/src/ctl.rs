//! The control socket: a Unix stream socket taking one command line and answering with text.
//! `hsb-primary status`, `hsb-standby status`, `hsb-standby activate` talk to it.
//!
//! It is hostile input like any other (DESIGN.md §6): the socket is mode 0600 (0660 in the
//! `control_group`) whatever the umask, every connection's peer credentials are checked
//! ([`access`]), a connection has [`COMMAND_TIMEOUT`] to send its command and
//! [`ANSWER_TIMEOUT`] to take the answer, a full table makes room by closing the oldest
//! connection still waiting for a command, and a path that is not a socket is never replaced.
//! The daemon drives time: it calls [`CtlServer::tick`] and wakes for
//! [`CtlServer::next_deadline`].

pub mod access;
mod client;
mod server;
mod socket;
pub mod status;

use std::fmt;
use std::time::Duration;

pub use access::{control_group, peer_allowed, ControlGroup, CONTROL_GROUP_KEY};
pub use client::{cli, cli_with, request, status_cli, status_cli_at, status_cli_with};
pub use server::CtlServer;
pub use socket::CtlError;
pub use status::{Health, Status};

/// Longest command line accepted (without its newline).
pub const MAX_COMMAND: usize = 256;
/// Most control connections open at once.
pub const MAX_CONNS: usize = 8;
/// Time from accepting a connection to its complete command line.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Time from a complete command line to the whole answer written.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest answer a client reads.
pub const MAX_ANSWER: u64 = 1 << 20;

/// Why a command line is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandError {
    /// No newline within [`MAX_COMMAND`] bytes.
    TooLong,
    /// The line is not UTF-8.
    NotUtf8,
    /// The line holds control characters (other than a tab, or a final carriage return).
    ControlCharacter,
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::TooLong => write!(f, "command too long (at most {MAX_COMMAND} bytes)"),
            CommandError::NotUtf8 => f.write_str("command is not UTF-8"),
            CommandError::ControlCharacter => f.write_str("command contains control characters"),
        }
    }
}

impl std::error::Error for CommandError {}

/// What the bytes received so far on a control connection hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    /// No complete line yet.
    Incomplete,
    /// A complete command line, trimmed (empty means `status`, by the daemons' convention).
    Command(&'a str),
}

/// Parse the command line at the start of `buf`: up to the first newline, or all of `buf` once
/// the peer has finished sending (`eof`). Bytes after the newline are ignored (one command a
/// connection). Pure, so it is fuzzed (`hsb_testkit::fuzzing::control`).
pub fn parse_command(buf: &[u8], eof: bool) -> Result<Line<'_>, CommandError> {
    let window = &buf[..buf.len().min(MAX_COMMAND + 1)];
    let line = match window.iter().position(|&b| b == b'\n') {
        Some(nl) => &buf[..nl],
        None if buf.len() > MAX_COMMAND => return Err(CommandError::TooLong),
        None if eof && !buf.is_empty() => buf,
        None => return Ok(Line::Incomplete),
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = std::str::from_utf8(line).map_err(|_| CommandError::NotUtf8)?;
    if text.chars().any(|c| c.is_control() && c != '\t') {
        return Err(CommandError::ControlCharacter);
    }
    Ok(Line::Command(text.trim()))
}

#[cfg(test)]
#[path = "ctl_tests.rs"]
mod tests;
