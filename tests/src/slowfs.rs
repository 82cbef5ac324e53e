//! A mounted `hsb-slowfs` (`src/bin/hsb-slowfs.rs`): a directory whose files' `fsync` and
//! `fdatasync` take a set delay, for tests that put a disk image on slow storage. Unmounted
//! when dropped, also when the test panics.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::TempDir;

/// A mounted `hsb-slowfs`: files made under [`SlowFs::mnt`] live in [`SlowFs::backing`].
pub struct SlowFs {
    child: Option<Child>,
    /// The mount point.
    pub mnt: PathBuf,
    /// The directory behind it (read it to see what reached the backing files).
    pub backing: PathBuf,
    /// The tool's stderr: a `begin fsync N: FILE (KIND)` line when a slow sync begins, and
    /// `fsync N: FILE, KIND, MS ms` when it is answered.
    pub log: PathBuf,
    /// Holds the mount point, the backing directory and the log.
    pub dir: TempDir,
}

/// Whether `path` is a mount point now (from /proc/self/mountinfo).
pub fn mounted(path: &std::path::Path) -> bool {
    let want = path.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

impl SlowFs {
    /// Mount a fresh `hsb-slowfs` whose syncs take `fsync_ms`; `None` (and the test skipped, as
    /// [`crate::skip`] says: a failure under CI) where FUSE cannot be mounted here.
    pub fn mount(test: &str, fsync_ms: u64) -> Option<SlowFs> {
        if !std::path::Path::new("/dev/fuse").exists() {
            crate::skip(test, "no /dev/fuse (FUSE)");
            return None;
        }
        if !rustix::process::geteuid().is_root() {
            crate::skip(test, "mounting a FUSE file system needs root");
            return None;
        }
        let dir = TempDir::new("slowfs");
        let (backing, mnt, log) = (dir.path("backing"), dir.path("mnt"), dir.path("slowfs.log"));
        std::fs::create_dir_all(&backing).expect("backing dir");
        std::fs::create_dir_all(&mnt).expect("mount point");
        let child = Command::new(crate::bin("hsb-slowfs"))
            .arg(&backing)
            .arg(&mnt)
            .arg("--fsync-ms")
            .arg(fsync_ms.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn hsb-slowfs");
        let mut fs = SlowFs {
            child: Some(child),
            mnt,
            backing,
            log,
            dir,
        };
        // Its first line says it is mounted; EOF that it gave up.
        let out = fs.child.as_mut().and_then(|c| c.stdout.take());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            if let Some(out) = out {
                let _ = std::io::BufReader::new(out).read_line(&mut line);
            }
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        if !line.contains("mounted") || !mounted(&fs.mnt) {
            let why = format!(
                "hsb-slowfs could not mount a FUSE file system: {}",
                std::fs::read_to_string(&fs.log).unwrap_or_default().trim()
            );
            drop(fs);
            crate::skip(test, &why);
            return None;
        }
        Some(fs)
    }

    /// The slow syncs of `file` (relative to the backing directory) answered so far, each as
    /// the tool logged it (`fsync N: FILE, KIND, MS ms`).
    pub fn syncs(&self, file: &str) -> Vec<String> {
        self.lines("fsync ", file)
    }

    /// The slow syncs of `file` begun so far (`begin fsync N: FILE (KIND)`).
    pub fn begun(&self, file: &str) -> Vec<String> {
        self.lines("begin fsync ", file)
    }

    fn lines(&self, head: &str, file: &str) -> Vec<String> {
        let (a, b) = (format!(": {file},"), format!(": {file} ("));
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with(head) && (l.contains(&a) || l.contains(&b)))
            .map(str::to_string)
            .collect()
    }

    /// Wait (at most `timeout`) until more than `after` syncs of `file` have begun (`begun`
    /// true) or been answered; whether they have.
    pub fn wait_syncs(&self, file: &str, begun: bool, after: usize, timeout: Duration) -> bool {
        let t = Instant::now();
        loop {
            let n = if begun {
                self.begun(file)
            } else {
                self.syncs(file)
            }
            .len();
            if n > after {
                return true;
            }
            if t.elapsed() > timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for SlowFs {
    /// SIGTERM (the tool unmounts and exits), at most 10 s; then kill -9 and a lazy unmount, so
    /// that no mount is ever left behind.
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let t = Instant::now();
            while matches!(c.try_wait(), Ok(None)) && t.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if mounted(&self.mnt) {
            let _ = rustix::mount::unmount(&self.mnt, rustix::mount::UnmountFlags::DETACH);
        }
    }
}
