//! The control socket: a Unix stream socket taking one command line and answering with text.
//! `hsb-primary status`, `hsb-standby status`, `hsb-standby activate` talk to it.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mio::net::{UnixListener, UnixStream as MioUnixStream};
use mio::{Interest, Registry, Token};

/// Longest command line accepted.
pub const MAX_COMMAND: usize = 256;
/// Most control connections open at once.
pub const MAX_CONNS: usize = 8;

/// Send one command and read the whole answer (blocking, with a timeout). Used by the CLIs.
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
    s.write_all(command.as_bytes())?;
    s.write_all(b"\n")?;
    let mut out = String::new();
    s.take(1 << 20).read_to_string(&mut out)?;
    Ok(out)
}

struct CtlConn {
    stream: MioUnixStream,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    pos: usize,
    answered: bool,
}

/// The daemon side: a listener and a few connections, driven by the daemon's mio loop.
/// Tokens `base..base + 1 + MAX_CONNS` belong to it.
pub struct CtlServer {
    listener: UnixListener,
    conns: Vec<Option<CtlConn>>,
    base: usize,
}

impl CtlServer {
    /// Bind at `path` (replacing a stale socket file) and register with `registry`.
    pub fn bind(path: &Path, registry: &Registry, base: usize) -> io::Result<CtlServer> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
        if path.exists() {
            // Refuse to steal the socket of a live daemon.
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "control socket {} is in use by a running daemon",
                        path.display()
                    ),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let mut listener = UnixListener::bind(path)?;
        registry.register(&mut listener, Token(base), Interest::READABLE)?;
        Ok(CtlServer {
            listener,
            conns: (0..MAX_CONNS).map(|_| None).collect(),
            base,
        })
    }

    /// Whether a token is this server's.
    pub fn owns(&self, t: Token) -> bool {
        t.0 >= self.base && t.0 <= self.base + MAX_CONNS
    }

    /// Handle an event. Returns a complete command line received on connection `conn`, which the
    /// daemon executes and then answers with [`CtlServer::answer`] (so the answer reflects the
    /// command's effect).
    pub fn on_event(&mut self, registry: &Registry, t: Token) -> Option<(usize, String)> {
        if t.0 == self.base {
            loop {
                match self.listener.accept() {
                    Ok((mut stream, _)) => {
                        let Some(i) = self.conns.iter().position(Option::is_none) else {
                            log::warn!("control: too many connections, refusing one");
                            continue;
                        };
                        let tok = Token(self.base + 1 + i);
                        if registry
                            .register(&mut stream, tok, Interest::READABLE | Interest::WRITABLE)
                            .is_ok()
                        {
                            self.conns[i] = Some(CtlConn {
                                stream,
                                inbuf: Vec::new(),
                                out: Vec::new(),
                                pos: 0,
                                answered: false,
                            });
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        log::warn!("control: accept failed: {e}");
                        break;
                    }
                }
            }
            return None;
        }
        let i = t.0 - self.base - 1;
        self.service(registry, i)
    }

    /// Answer the command received on `conn`.
    pub fn answer(&mut self, registry: &Registry, conn: usize, text: &str) {
        if let Some(c) = self.conns.get_mut(conn).and_then(Option::as_mut) {
            c.out = text.as_bytes().to_vec();
            c.answered = true;
        }
        self.service(registry, conn);
    }

    fn service(&mut self, registry: &Registry, i: usize) -> Option<(usize, String)> {
        let c = self.conns.get_mut(i).and_then(Option::as_mut)?;
        let mut close = false;
        let mut command = None;
        if !c.answered {
            let mut b = [0u8; 512];
            loop {
                match c.stream.read(&mut b) {
                    Ok(0) => {
                        close = !c.inbuf.contains(&b'\n');
                        break;
                    }
                    Ok(n) => {
                        c.inbuf.extend_from_slice(&b[..n]);
                        if c.inbuf.len() > MAX_COMMAND {
                            c.out = b"error: command too long\n".to_vec();
                            c.answered = true;
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        close = true;
                        break;
                    }
                }
            }
            if !c.answered && !close {
                if let Some(nl) = c.inbuf.iter().position(|&x| x == b'\n') {
                    command = Some((
                        i,
                        String::from_utf8_lossy(&c.inbuf[..nl]).trim().to_string(),
                    ));
                    c.inbuf.clear();
                }
            }
        }
        if c.answered && !close {
            match crate::conn::write_some(&mut c.stream, &c.out, &mut c.pos) {
                Ok(true) | Err(_) => close = true,
                Ok(false) => {}
            }
        }
        if close {
            if let Some(mut c) = self.conns[i].take() {
                let _ = registry.deregister(&mut c.stream);
            }
            return None;
        }
        command
    }
}

/// The CLI side of `hsb-X status` and friends: find the control socket (`--control`, else the
/// configuration's `control` key, else `default`), send `command`, print the answer. Returns the
/// process exit status: 0 on an answer that is not an `error:`.
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

/// Like [`cli`], for a daemon whose control path is derived from its configuration (`resolve`,
/// e.g. from its id) and whose default needs looking for (`default`, called only without
/// `--control` and without a configuration file; its error is printed).
pub fn cli_with(
    daemon: &str,
    args: &crate::cli::Args,
    schema: &'static [crate::config::KeySpec],
    resolve: impl Fn(&crate::config::Config) -> Result<PathBuf, crate::config::ConfigError>,
    default: impl FnOnce() -> Result<PathBuf, String>,
    command: &str,
) -> u8 {
    let path = match &args.control {
        Some(p) => Ok(p.clone()),
        None => match crate::config::Config::load(schema, args.config.as_deref(), &args.sets) {
            Ok(c) => resolve(&c).or_else(|_| default()),
            Err(_) if args.config.is_none() => default(),
            Err(e) => Err(e.to_string()),
        },
    };
    let path = match path {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{daemon}: {e}");
            return 1;
        }
    };
    match request(&path, command, Duration::from_secs(10)) {
        Ok(out) => {
            print!("{out}");
            u8::from(out.starts_with("error"))
        }
        Err(e) => {
            eprintln!("{daemon}: {e}");
            1
        }
    }
}
