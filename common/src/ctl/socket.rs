//! The control socket's file: why it could not be set up ([`CtlError`]), its private
//! directories, its mode and group, and what else may be found at its path.

use std::fmt;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::ControlGroup;

/// Why the control socket could not be set up.
#[derive(Debug)]
pub enum CtlError {
    /// Something that is not a socket is at the path: it is never replaced.
    NotASocket {
        /// The control path.
        path: PathBuf,
        /// What is there, e.g. `a regular file`.
        found: &'static str,
    },
    /// A running daemon answers on the socket.
    InUse {
        /// The control path.
        path: PathBuf,
    },
    /// A file-system or socket operation failed.
    Io {
        /// What was being done, e.g. `cannot bind`.
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The error.
        err: io::Error,
    },
}

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CtlError::NotASocket { path, found } => write!(
                f,
                "{} exists and is {found}, not a socket: refusing to replace it (move it away or choose another `control` path)",
                path.display()
            ),
            CtlError::InUse { path } => {
                write!(f, "{} is in use by a running daemon", path.display())
            }
            CtlError::Io { op, path, err } => write!(f, "{op} {}: {err}", path.display()),
        }
    }
}

impl std::error::Error for CtlError {}
pub(super) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> CtlError + 'a {
    move |err| CtlError::Io {
        op,
        path: path.to_path_buf(),
        err,
    }
}

/// Create the missing directories of `dir` (and only those) private: 0700, or 0710 in `group`
/// so its members can reach the socket. Existing directories are left as they are.
pub(super) fn create_private_dirs(
    dir: &Path,
    group: Option<&ControlGroup>,
) -> Result<(), CtlError> {
    let mut missing = Vec::new();
    for d in dir.ancestors().filter(|d| !d.as_os_str().is_empty()) {
        match std::fs::metadata(d) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(d),
            Err(e) => return Err(io_err("cannot inspect", d)(e)),
        }
    }
    for d in missing.into_iter().rev() {
        match std::fs::DirBuilder::new().mode(0o700).create(d) {
            Ok(()) => {}
            // Made by someone else meanwhile: not ours to change.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err("cannot create the directory", d)(e)),
        }
        let mode = match group {
            Some(g) => {
                std::os::unix::fs::chown(d, None, Some(g.gid))
                    .map_err(io_err("cannot give control_group the directory", d))?;
                0o710
            }
            None => 0o700,
        };
        // Exactly this mode, whatever the umask took away.
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode))
            .map_err(io_err("cannot set the mode of the directory", d))?;
    }
    Ok(())
}

/// Give the socket at `path` its mode (and group), whatever the umask made of it.
pub(super) fn restrict(path: &Path, group: Option<&ControlGroup>) -> Result<(), CtlError> {
    let mode = match group {
        Some(g) => {
            std::os::unix::fs::chown(path, None, Some(g.gid))
                .map_err(io_err("cannot give control_group the socket", path))?;
            0o660
        }
        None => 0o600,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_err("cannot set the mode of the socket", path))
}

pub(super) fn describe(t: std::fs::FileType) -> &'static str {
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "something else"
    }
}
