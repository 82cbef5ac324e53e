//! Unit tests of `run`.

use super::*;

fn http(status: u16) -> ProbeKind {
    ProbeKind::Http {
        addr: "127.0.0.1:1".parse().unwrap(),
        method: "GET".into(),
        path: "/".into(),
        status,
    }
}

#[test]
fn http_status_lines() {
    assert_eq!(http_status(b"HTTP/1.1 200 OK"), Some(200));
    assert_eq!(http_status(b"HTTP/1.0 404"), Some(404));
    assert_eq!(http_status(b"HTTP/2 503 Service Unavailable"), Some(503));
    assert_eq!(http_status(b"HTTP/1.1 20 OK"), None);
    assert_eq!(http_status(b"HTTP/1.1 2000 OK"), None);
    assert_eq!(http_status(b"HTTP/1.1  200 OK"), None);
    assert_eq!(http_status(b"HTTP/x 200 OK"), None);
    assert_eq!(http_status(b"SSH-2.0-OpenSSH_9.6"), None);
    assert_eq!(http_status(b""), None);
}

#[test]
fn judging_replies() {
    assert_eq!(judge(&http(200), b"HTTP/1.1 200 OK", false).0, Class::Ok);
    assert_eq!(
        judge(&http(200), b"HTTP/1.1 503 Unavailable", false),
        (
            Class::AppError,
            "status 503, expected 200: HTTP/1.1 503 Unavailable".into()
        )
    );
    assert_eq!(
        judge(&http(200), b"", true),
        (Class::AppError, "closed without a status line".into())
    );
    let line = ProbeKind::Line {
        addr: "127.0.0.1:1".parse().unwrap(),
        request: "PING".into(),
        expect: "PONG".into(),
    };
    assert_eq!(judge(&line, b"PONG 3", false).0, Class::Ok);
    assert_eq!(
        judge(&line, b"PANG", false),
        (Class::AppError, "reply 'PANG', expected 'PONG...'".into())
    );
}

#[test]
fn first_lines() {
    assert_eq!(first_line(b"\n  OK - all good \nmore\n"), "OK - all good");
    assert_eq!(first_line(b""), "");
    assert_eq!(first_line(b"\xffbad"), "\u{fffd}bad");
}
