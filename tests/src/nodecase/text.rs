//! An effect's text, as the cases state it.

/// An effect's text from its `Debug` form: the variant in kebab-case, then `key=value` for each
/// field, nested structures flattened (a nested message's key names its variant), wrappers
/// such as `Epoch(2)`, `Some(3)` or `Box(..)` unwrapped, a string's spaces turned into dashes,
/// and the cluster's addresses named.
/// A node's [`Talk`] as the node case files show it: `evidence ...`, `record ...`, and the
/// others flattened (`send to=... dest=... msg=...`, `set-epoch N`).
pub fn talk_text(t: &hsb_common::kit::talk::Talk) -> String {
    use hsb_common::kit::talk::Talk;
    match t {
        Talk::Evidence { evidence, .. } => format!("evidence {evidence}"),
        Talk::Record(i) => format!("record {}", i.to_text()),
        t => flat(&format!("{t:?}")),
    }
}

pub fn flat(debug: &str) -> String {
    #[derive(Debug, PartialEq)]
    enum Tok {
        Word(String),
        Key(String),
        Open,
        Close,
    }
    let mut toks = Vec::new();
    let mut cur = String::new();
    let mut chars = debug.chars().peekable();
    let push = |cur: &mut String, toks: &mut Vec<Tok>| {
        if !cur.is_empty() {
            toks.push(Tok::Word(std::mem::take(cur)));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                push(&mut cur, &mut toks);
                let mut s = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => match chars.next() {
                            Some('n' | 't' | 'r') => s.push('-'),
                            Some(e) => s.push(e),
                            None => {}
                        },
                        ' ' => s.push('-'),
                        c => s.push(c),
                    }
                }
                toks.push(Tok::Word(s.trim_matches('-').to_string()));
            }
            '{' | '(' | '[' => {
                push(&mut cur, &mut toks);
                toks.push(Tok::Open);
            }
            '}' | ')' | ']' => {
                push(&mut cur, &mut toks);
                toks.push(Tok::Close);
            }
            ',' => push(&mut cur, &mut toks),
            ':' if chars.peek() == Some(&' ') => {
                toks.push(Tok::Key(std::mem::take(&mut cur)));
            }
            c if c.is_whitespace() => push(&mut cur, &mut toks),
            c => cur.push(c),
        }
    }
    push(&mut cur, &mut toks);
    let mut out: Vec<String> = Vec::new();
    let mut key: Option<String> = None;
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Tok::Key(k) => key = Some(kebab(k)),
            Tok::Word(w) => {
                let wraps = toks.get(i + 1) == Some(&Tok::Open);
                let transparent = matches!(w.as_str(), "Some" | "Epoch" | "Nanos" | "Box");
                match (key.take(), wraps) {
                    (None, _) if out.is_empty() => out.push(kebab(w)),
                    (None, true) => {}
                    // A tuple variant's plain value.
                    (None, false) => out.push(value(w)),
                    (Some(k), true) if transparent => key = Some(k),
                    (Some(k), true) => out.push(format!("{k}={}", kebab(w))),
                    (Some(k), false) => out.push(format!("{k}={}", value(w))),
                }
            }
            Tok::Open | Tok::Close => {}
        }
        i += 1;
    }
    names(&out.join(" "))
}

fn value(w: &str) -> String {
    if w.chars().next().is_some_and(char::is_uppercase) && !w.contains('.') {
        kebab(w)
    } else {
        w.to_string()
    }
}

/// `LeaseRequest` → `lease-request`, `last_ckpt` → `last-ckpt`.
fn kebab(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('-');
            }
            out.extend(c.to_lowercase());
        } else if c == '_' {
            out.push('-');
        } else {
            out.push(c);
        }
    }
    out
}

/// The cluster's addresses by name.
fn names(s: &str) -> String {
    let mut s = s.to_string();
    for (a, n) in [
        ("10.0.0.1:7001", "primary"),
        ("10.0.0.2:7000", "standby-repl"),
        ("10.0.0.2:7001", "standby"),
        ("10.0.0.2:7002", "standby-hb"),
        ("10.0.1.1:7400", "w1"),
        ("10.0.1.2:7400", "w2"),
        ("10.0.1.3:7400", "w3"),
        ("10.0.2.1:22", "ping-node"),
    ] {
        s = s.replace(a, n);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::flat;

    #[test]
    fn effects_read_flat() {
        assert_eq!(
            flat("Send { to: 10.0.0.2:7002, dest: Dest { role: Standby, id: Some(4) }, msg: Heartbeat { link: 0, acked: 3 } }"),
            "send to=standby-hb dest=dest role=standby id=4 msg=heartbeat link=0 acked=3"
        );
        assert_eq!(
            flat("Reserve(NodeState { epoch: Epoch(1), role: Primary, checkpoint: 100001, incarnation: 7, maintenance: false })"),
            "reserve epoch=1 role=primary checkpoint=100001 incarnation=7 maintenance=false"
        );
        assert_eq!(
            flat("Disconnect { why: \"no ack, at all\", frame_error: None, streaming: Some((3, 1)) }"),
            "disconnect why=no-ack,-at-all frame-error=none streaming=3 1"
        );
        assert_eq!(flat("Suspend"), "suspend");
        assert_eq!(flat("SetEpoch(Epoch(2))"), "set-epoch 2");
    }
}
