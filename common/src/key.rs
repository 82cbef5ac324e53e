//! The pre-shared cluster key: 32 random bytes, stored as 64 hex digits in a file only its owner
//! may read. Every frame and datagram is authenticated with keys derived from it.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigError};

/// Length of the cluster key in bytes.
pub const KEY_LEN: usize = 32;

/// Largest key file read (64 hex digits and some white space).
const MAX_KEY_FILE: u64 = 256;

/// The cluster key. Its `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey([u8; KEY_LEN]);

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

/// Why a key file could not be used.
#[derive(Debug)]
pub enum KeyError {
    /// The file could not be read or written.
    Io { path: PathBuf, err: std::io::Error },
    /// Group or others may read the file.
    TooOpen { path: PathBuf, mode: u32 },
    /// The contents are not 64 hex digits.
    Malformed { path: PathBuf, why: &'static str },
    /// The path names a directory, a device or a pipe, not a file.
    NotAFile { path: PathBuf, what: &'static str },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Io { path, err } => write!(f, "cluster key {}: {err}", path.display()),
            KeyError::TooOpen { path, mode } => write!(
                f,
                "cluster key {}: mode {:o} lets group or others read it; run `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            ),
            KeyError::Malformed { path, why } => write!(
                f,
                "cluster key {}: {why} (expected 64 hex digits, as written by `hsb-primary keygen`)",
                path.display()
            ),
            KeyError::NotAFile { path, what } => write!(
                f,
                "cluster key {}: is {what}, expected a file of 64 hex digits (mode 0600, as written by `hsb-primary keygen`)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for KeyError {}

impl ClusterKey {
    /// A key from raw bytes (tests and tools).
    pub fn from_bytes(b: [u8; KEY_LEN]) -> ClusterKey {
        ClusterKey(b)
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Parse 64 hex digits (surrounding white space allowed).
    pub fn parse_hex(text: &str) -> Result<ClusterKey, &'static str> {
        let t = text.trim();
        if t.len() != KEY_LEN * 2 {
            return Err("wrong length");
        }
        let mut out = [0u8; KEY_LEN];
        for (i, pair) in t.as_bytes().chunks(2).enumerate() {
            let hi = hex_val(pair[0]).ok_or("not hexadecimal")?;
            let lo = hex_val(pair[1]).ok_or("not hexadecimal")?;
            out[i] = hi << 4 | lo;
        }
        Ok(ClusterKey(out))
    }

    /// The key as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Load a key file, refusing one that group or others can read, and anything but a
    /// regular file (a directory's mode would otherwise be reported as too open).
    pub fn load(path: &Path) -> Result<ClusterKey, KeyError> {
        use std::io::Read;
        let io = |err| KeyError::Io {
            path: path.to_path_buf(),
            err,
        };
        // Looked at before opening: opening a pipe would block.
        let meta = std::fs::metadata(path).map_err(io)?;
        if !meta.is_file() {
            let t = meta.file_type();
            return Err(KeyError::NotAFile {
                path: path.to_path_buf(),
                what: if t.is_dir() {
                    "a directory"
                } else {
                    "not a regular file (a device, pipe or socket)"
                },
            });
        }
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(KeyError::TooOpen {
                path: path.to_path_buf(),
                mode,
            });
        }
        let too_large = || KeyError::Malformed {
            path: path.to_path_buf(),
            why: "file too large",
        };
        if meta.len() > MAX_KEY_FILE {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .map_err(io)?
            .take(MAX_KEY_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > MAX_KEY_FILE {
            return Err(too_large());
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| KeyError::Malformed {
            path: path.to_path_buf(),
            why: "not text",
        })?;
        ClusterKey::parse_hex(text).map_err(|why| KeyError::Malformed {
            path: path.to_path_buf(),
            why,
        })
    }

    /// Load the key file a configuration names under `key`, reporting any problem at that key
    /// (file, line, key), as every other configuration error is.
    pub fn load_configured(c: &Config, key: &str) -> Result<ClusterKey, ConfigError> {
        let path = c.path(key)?;
        if path.as_os_str().is_empty() {
            return Err(c.error_at(key, "expected the path of the cluster key file"));
        }
        ClusterKey::load(&path).map_err(|e| c.error_at(key, &e.to_string()))
    }

    /// Create a new random key file with mode 0600; never overwrites an existing file.
    pub fn generate(path: &Path) -> Result<ClusterKey, KeyError> {
        let io = |err| KeyError::Io {
            path: path.to_path_buf(),
            err,
        };
        let mut b = [0u8; KEY_LEN];
        crate::rng::os_random(&mut b).map_err(io)?;
        let key = ClusterKey(b);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        writeln!(f, "{}", key.to_hex()).map_err(io)?;
        Ok(key)
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_load_and_refuse_open_files() {
        let dir = std::env::temp_dir().join(format!("hsb-key-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("k");
        let k = ClusterKey::generate(&p).unwrap();
        assert_eq!(ClusterKey::load(&p).unwrap(), k);
        assert!(ClusterKey::generate(&p).is_err(), "never overwrites");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = ClusterKey::load(&p).unwrap_err();
        assert!(matches!(e, KeyError::TooOpen { .. }));
        assert!(e.to_string().contains("chmod 600"));
        let q = dir.join("bad");
        std::fs::write(&q, "zz").unwrap();
        std::fs::set_permissions(&q, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            ClusterKey::load(&q),
            Err(KeyError::Malformed { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Regression: a directory was reported as "mode 755 lets group or others read it; run
    /// `chmod 600`" (or, at mode 700, as "file too large").
    #[test]
    fn only_regular_files_are_keys() {
        let dir = std::env::temp_dir().join(format!("hsb-key-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for mode in [0o755, 0o700] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = ClusterKey::load(&dir).unwrap_err();
            assert!(matches!(e, KeyError::NotAFile { .. }), "{e}");
            assert_eq!(
                e.to_string(),
                format!(
                    "cluster key {}: is a directory, expected a file of 64 hex digits (mode 0600, as written by `hsb-primary keygen`)",
                    dir.display()
                )
            );
        }
        let e = ClusterKey::load(Path::new("/dev/null")).unwrap_err();
        assert!(e.to_string().contains("is not a regular file"), "{e}");
        // Located at the configuration key, as every configuration error is.
        static SCHEMA: &[crate::config::KeySpec] = &[crate::config::KeySpec {
            key: "cluster_key",
            kind: crate::config::ValueKind::Path,
            default: None,
            help: "",
        }];
        let c = Config::from_text(
            SCHEMA,
            "s.conf",
            &format!("cluster_key = {}\n", dir.display()),
            &[],
        )
        .unwrap();
        let e = ClusterKey::load_configured(&c, "cluster_key")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("s.conf:1: key 'cluster_key': cluster key "),
            "{e}"
        );
        assert!(e.contains("is a directory"), "{e}");
        let c = Config::from_text(SCHEMA, "s.conf", "cluster_key =\n", &[]).unwrap();
        let e = ClusterKey::load_configured(&c, "cluster_key")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "s.conf:1: key 'cluster_key': expected the path of the cluster key file"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hex_round_trip_and_debug_hides_secret() {
        let k = ClusterKey::from_bytes([0xab; 32]);
        assert_eq!(ClusterKey::parse_hex(&k.to_hex()).unwrap(), k);
        assert_eq!(format!("{k:?}"), "ClusterKey(..)");
        assert!(ClusterKey::parse_hex("xy").is_err());
    }
}
