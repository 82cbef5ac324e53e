//! The service of the Xen test rig's guest: an in-RAM counter on a TCP port, speaking the same line
//! protocol as the model service's counter (`INCR` replies the new value, `GET` the current one,
//! `PING` replies `PONG`). Its state lives only in the guest's memory, so after a failover the value a
//! client reads shows whether the checkpoint carried it. std only, built static for the guest's
//! busybox initramfs: `hsb-guest-counter [ADDR]` (default `0.0.0.0:7000`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

/// Longest request line accepted; a longer one closes the connection.
const MAX_LINE: usize = 256;

fn answer(counter: &AtomicU64, line: &str) -> String {
    let mut it = line.split_ascii_whitespace();
    let cmd = it.next().unwrap_or("").to_ascii_uppercase();
    match (cmd.as_str(), it.next()) {
        ("PING", None) => "PONG".into(),
        ("INCR", None) => (counter.fetch_add(1, Ordering::SeqCst).wrapping_add(1)).to_string(),
        ("GET", None) => counter.load(Ordering::SeqCst).to_string(),
        ("", _) => "ERR empty request".into(),
        _ => "ERR unknown request; use PING, INCR, GET".into(),
    }
}

fn serve(stream: TcpStream, counter: &AtomicU64) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_line(&mut line)?;
        if n == 0 || line.len() > MAX_LINE {
            return Ok(());
        }
        let reply = answer(counter, line.trim_end_matches(['\r', '\n']));
        out.write_all(format!("{reply}\n").as_bytes())?;
    }
}

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "0.0.0.0:7000".into());
    let listener = match TcpListener::bind(&addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("hsb-guest-counter: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("hsb-guest-counter: listening on {addr}");
    let counter = Arc::new(AtomicU64::new(0));
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let counter = Arc::clone(&counter);
                thread::spawn(move || {
                    let _ = serve(stream, &counter);
                });
            }
            Err(e) => eprintln!("hsb-guest-counter: accept: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol() {
        let c = AtomicU64::new(0);
        assert_eq!(answer(&c, "PING"), "PONG");
        assert_eq!(answer(&c, "INCR"), "1");
        assert_eq!(answer(&c, "incr"), "2");
        assert_eq!(answer(&c, "GET"), "2");
        assert!(answer(&c, "PUT a b").starts_with("ERR"));
        assert!(answer(&c, "").starts_with("ERR"));
    }
}
