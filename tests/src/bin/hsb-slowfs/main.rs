//! `hsb-slowfs BACKING_DIR MOUNTPOINT [--fsync-ms N]`: a FUSE passthrough of one directory
//! whose `fsync` and `fdatasync` take N milliseconds (default 400) before the backing file is
//! synced: storage whose syncs are as slow as an `fdatasync` under heavy writeback, for
//! `tests/slow_disk.rs`. Everything else goes straight to the backing files.
//!
//! Runs in the foreground: prints `hsb-slowfs: mounted ...` on stdout once the mount is there,
//! and unmounts on SIGTERM or SIGINT (or ends when someone else unmounts it). Each slow sync is
//! logged on stderr when it begins (`begin fsync N: FILE (KIND)`) and when it is answered
//! (`fsync N: FILE, KIND, MS ms`). Mounting needs root: as root fuser mounts with mount(2)
//! itself, no fusermount.
//!
//! Requests are served by several threads, and each sync sleeps on a thread of its own and
//! answers from there, so a sleeping sync holds up no other request of the file system (the
//! kernel itself still holds a file's inode lock while its fsync is in flight: a write to the
//! same file waits for the sync, as on any FUSE file system).

mod ops;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, Metadata, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{Config, Errno, FileAttr, FileHandle, FileType, INodeNo, MountOption, TimeOrNow};

/// How long the kernel may cache names and attributes.
const TTL: Duration = Duration::from_secs(1);
/// Threads reading requests from /dev/fuse.
const THREADS: usize = 4;
/// Linux's open(2) flags, as FUSE passes them.
const O_ACCMODE: i32 = 0o3;
const O_WRONLY: i32 = 0o1;
const O_RDWR: i32 = 0o2;
const O_EXCL: i32 = 0o200;
const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;

/// Inode numbers of this file system (1 is the root) and the backing paths they stand for,
/// keyed by the backing file's (device, inode).
#[derive(Default)]
struct Inodes {
    paths: HashMap<u64, PathBuf>,
    by_backing: HashMap<(u64, u64), u64>,
    next: u64,
}

struct SlowFs {
    fsync_delay: Duration,
    inodes: Mutex<Inodes>,
    files: Mutex<HashMap<u64, Arc<File>>>,
    next_fh: AtomicU64,
    syncs: Arc<AtomicU64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn errno(e: std::io::Error) -> Errno {
    Errno::from(e)
}

fn attr(ino: u64, m: &Metadata) -> FileAttr {
    let time = |s: i64, ns: i64| {
        UNIX_EPOCH
            + Duration::from_secs(s.max(0).unsigned_abs())
            + Duration::from_nanos(ns.max(0).unsigned_abs())
    };
    FileAttr {
        ino: INodeNo(ino),
        size: m.size(),
        blocks: m.blocks(),
        atime: time(m.atime(), m.atime_nsec()),
        mtime: time(m.mtime(), m.mtime_nsec()),
        ctime: time(m.ctime(), m.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind: FileType::from_std(m.file_type()).unwrap_or(FileType::RegularFile),
        perm: (m.mode() & 0o7777) as u16,
        nlink: m.nlink() as u32,
        uid: m.uid(),
        gid: m.gid(),
        rdev: m.rdev() as u32,
        blksize: 4096,
        flags: 0,
    }
}

/// Read and write access of open(2) flags.
fn access(o: &mut OpenOptions, flags: i32) {
    match flags & O_ACCMODE {
        O_WRONLY => o.write(true),
        O_RDWR => o.read(true).write(true),
        _ => o.read(true),
    };
}

impl SlowFs {
    fn path(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        lock(&self.inodes)
            .paths
            .get(&ino.0)
            .cloned()
            .ok_or(Errno::ENOENT)
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.path(parent)?.join(name))
    }

    /// `mknod` and `mkdir`: `create` the backing entry, and answer with its attributes.
    fn make(
        &self,
        parent: INodeNo,
        name: &OsStr,
        reply: fuser::ReplyEntry,
        create: impl FnOnce(&Path) -> std::io::Result<()>,
    ) {
        let r = self.child(parent, name).and_then(|p| {
            create(&p).map_err(errno)?;
            self.entry(&p)
        });
        match r {
            Ok(a) => reply.entry(&TTL, &a, fuser::Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    /// `unlink` and `rmdir`: `remove` the backing entry.
    fn remove(
        &self,
        parent: INodeNo,
        name: &OsStr,
        reply: fuser::ReplyEmpty,
        remove: fn(&Path) -> std::io::Result<()>,
    ) {
        match self
            .child(parent, name)
            .and_then(|p| remove(&p).map_err(errno))
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    /// This file system's inode number for the backing file at `path`, as `m` describes it.
    fn ino_of(&self, path: &Path, m: &Metadata) -> u64 {
        let mut i = lock(&self.inodes);
        let next = i.next;
        let ino = *i.by_backing.entry((m.dev(), m.ino())).or_insert(next);
        if ino == next {
            i.next += 1;
        }
        i.paths.insert(ino, path.to_path_buf());
        ino
    }

    fn entry(&self, path: &Path) -> Result<FileAttr, Errno> {
        let m = std::fs::symlink_metadata(path).map_err(errno)?;
        Ok(attr(self.ino_of(path, &m), &m))
    }

    fn file(&self, fh: FileHandle) -> Result<Arc<File>, Errno> {
        lock(&self.files).get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    fn keep(&self, f: File) -> FileHandle {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.files).insert(fh, Arc::new(f));
        FileHandle(fh)
    }

    fn attr_now(&self, ino: INodeNo, fh: Option<FileHandle>) -> Result<FileAttr, Errno> {
        let m = match fh.and_then(|fh| self.file(fh).ok()) {
            Some(f) => f.metadata(),
            None => std::fs::symlink_metadata(self.path(ino)?),
        }
        .map_err(errno)?;
        Ok(attr(ino.0, &m))
    }

    #[allow(clippy::too_many_arguments)]
    fn set_attr(
        &self,
        ino: INodeNo,
        fh: Option<FileHandle>,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
    ) -> Result<FileAttr, Errno> {
        let path = self.path(ino)?;
        if let Some(mode) = mode {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7777))
                .map_err(errno)?;
        }
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::lchown(&path, uid, gid).map_err(errno)?;
        }
        if let Some(size) = size {
            match fh.and_then(|fh| self.file(fh).ok()) {
                Some(f) => f.set_len(size),
                None => OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(size)),
            }
            .map_err(errno)?;
        }
        if atime.is_some() || mtime.is_some() {
            let at = |t: TimeOrNow| match t {
                TimeOrNow::SpecificTime(t) => t,
                TimeOrNow::Now => SystemTime::now(),
            };
            let mut times = std::fs::FileTimes::new();
            if let Some(t) = atime {
                times = times.set_accessed(at(t));
            }
            if let Some(t) = mtime {
                times = times.set_modified(at(t));
            }
            File::open(&path)
                .and_then(|f| f.set_times(times))
                .map_err(errno)?;
        }
        self.attr_now(ino, fh)
    }

    fn read_at(&self, fh: FileHandle, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let f = self.file(fh)?;
        let mut buf = vec![0u8; size as usize];
        let mut got = 0;
        while got < buf.len() {
            match f.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(errno(e)),
            }
        }
        buf.truncate(got);
        Ok(buf)
    }

    fn list(&self, ino: INodeNo) -> Result<Vec<(u64, FileType, std::ffi::OsString)>, Errno> {
        let path = self.path(ino)?;
        let mut v = vec![
            (ino.0, FileType::Directory, ".".into()),
            (ino.0, FileType::Directory, "..".into()),
        ];
        let mut names: Vec<_> = std::fs::read_dir(&path)
            .map_err(errno)?
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        names.sort();
        for name in names {
            let p = path.join(&name);
            if let Ok(m) = std::fs::symlink_metadata(&p) {
                let kind = FileType::from_std(m.file_type()).unwrap_or(FileType::RegularFile);
                v.push((self.ino_of(&p, &m), kind, name));
            }
        }
        Ok(v)
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: hsb-slowfs BACKING_DIR MOUNTPOINT [--fsync-ms N]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut dirs, mut fsync_ms) = (vec![], 400u64);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--fsync-ms" => match it.next().and_then(|v| v.parse().ok()) {
                Some(ms) => fsync_ms = ms,
                None => return usage(),
            },
            _ if a.starts_with('-') => return usage(),
            _ => dirs.push(PathBuf::from(a)),
        }
    }
    let [backing, mountpoint] = dirs.as_slice() else {
        return usage();
    };
    let backing = match backing.canonicalize() {
        Ok(b) if b.is_dir() => b,
        _ => {
            eprintln!("hsb-slowfs: {}: not a directory", backing.display());
            return ExitCode::from(2);
        }
    };
    let mut inodes = Inodes {
        next: 2,
        ..Inodes::default()
    };
    inodes.paths.insert(INodeNo::ROOT.0, backing.clone());
    if let Ok(m) = std::fs::metadata(&backing) {
        inodes
            .by_backing
            .insert((m.dev(), m.ino()), INodeNo::ROOT.0);
    }
    let syncs = Arc::new(AtomicU64::new(0));
    let fs = SlowFs {
        fsync_delay: Duration::from_millis(fsync_ms),
        inodes: Mutex::new(inodes),
        files: Mutex::new(HashMap::new()),
        next_fh: AtomicU64::new(1),
        syncs: syncs.clone(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("hsb-slowfs: signal handler: {e}");
            return ExitCode::FAILURE;
        }
    }
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("hsb-slowfs".into()),
        MountOption::Subtype("hsb-slowfs".into()),
        MountOption::DefaultPermissions,
    ];
    config.n_threads = Some(THREADS);
    let session = match fuser::spawn_mount(fs, mountpoint, &config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hsb-slowfs: cannot mount {}: {e}", mountpoint.display());
            return ExitCode::FAILURE;
        }
    };
    println!(
        "hsb-slowfs: mounted {} at {} (fsync {fsync_ms} ms)",
        backing.display(),
        mountpoint.display()
    );
    let _ = std::io::stdout().flush();
    while !stop.load(Ordering::Relaxed) && !session.guard.is_finished() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let n = || syncs.load(Ordering::Relaxed);
    if session.guard.is_finished() {
        let _ = session.join();
        eprintln!(
            "hsb-slowfs: unmounted by someone else, after {} slow syncs begun",
            n()
        );
        return ExitCode::SUCCESS;
    }
    match session.umount_and_join() {
        Ok(()) => {
            eprintln!("hsb-slowfs: unmounted, after {} slow syncs begun", n());
            ExitCode::SUCCESS
        }
        Err(e) => {
            // Still in use (a process has a file open): detached, so that no mount is left
            // behind; it goes once the last file is closed.
            let lazy = rustix::mount::unmount(mountpoint, rustix::mount::UnmountFlags::DETACH);
            eprintln!(
                "hsb-slowfs: unmounting {}: {e}; detached instead: {lazy:?}",
                mountpoint.display()
            );
            ExitCode::FAILURE
        }
    }
}
