//! The disk's part of a case's verdict: the PUT client's acknowledged keys read back from the
//! serving copy and found in the PUT logs of the disk images (the serving copy's, and after a
//! healing the protecting copy's), the activated replica's own check of its disk, and the
//! healing's disk resynchronisation (it happened, and copied only what can differ).

use std::collections::HashMap;

use crate::num;

use super::nodes::Nodes;
use super::puts::{check_puts, missing_on_disk, read_back, Put, PutCheck};

/// A standby's disk resynchronisation counters (its status).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Resyncs {
    /// Resynchronisations begun.
    pub(super) begun: u64,
    /// Of them, full copies.
    pub(super) full: u64,
}

impl Resyncs {
    pub(super) fn of(st: &HashMap<String, String>) -> Resyncs {
        Resyncs {
            begun: num(st, "disk_resyncs"),
            full: num(st, "disk_full_copies"),
        }
    }
}

/// How the case ended, for the disk's verdict.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ending {
    /// B's copy took over (it serves, A's is its standby once healed).
    pub(super) took_over: bool,
    /// One copy serves protected by the other, synchronised after the fault.
    pub(super) healed: bool,
    /// The healed pair had a full synchronisation after the fault (a new session).
    pub(super) resynchronised: bool,
    /// B's standby's counters before the fault.
    pub(super) b_before: Resyncs,
}

/// What the disk showed.
#[derive(Debug, Clone, Default)]
pub(super) struct DiskVerdict {
    pub(super) puts: PutCheck,
    /// Acknowledged PUTs absent (or with another value) from the serving copy's disk log, plus
    /// those absent from the protecting copy's after a healing; `None` where an image could not
    /// be read.
    pub(super) off_disk: Option<u64>,
    /// An activated replica said its disk and memory disagree.
    pub(super) disagree: bool,
    /// The healing's disk resynchronisation: not seen where one was due, or a full copy.
    pub(super) resync_bad: bool,
}

impl DiskVerdict {
    /// Nothing acknowledged is missing anywhere, and the disk's checks held.
    pub(super) fn ok(&self) -> bool {
        self.puts.bad() == 0 && self.off_disk == Some(0) && !self.disagree && !self.resync_bad
    }
}

/// The disk's verdict at the end of a case (the PUT client stopped), with what it saw for the note.
pub(super) fn verdict(n: &Nodes, end: Ending, puts: &[Put], note: &mut String) -> DiskVerdict {
    let mut v = DiskVerdict {
        puts: check_puts(puts, &read_back(n.service, puts)),
        ..DiskVerdict::default()
    };
    let p = &v.puts;
    note.push_str(&format!(
        "PUTs {} sent, {} acknowledged, read back: {} missing, {} wrong, {} unread",
        puts.len(),
        p.acked,
        p.missing,
        p.wrong,
        p.unread
    ));
    let (serving, standby) = if end.took_over {
        ("b.state.disk", "a.state.disk")
    } else {
        ("a.state.disk", "b.state.disk")
    };
    let mut images = vec![(serving, "serving")];
    if end.healed {
        images.push((standby, "standby"));
    }
    let mut off = Some(0);
    for (image, role) in images {
        match missing_on_disk(&n.dir.path(image), puts) {
            Ok(m) => {
                off = off.map(|o| o + m);
                note.push_str(&format!("; {m} missing from the {role} copy's disk log"));
            }
            Err(e) => {
                off = None;
                note.push_str(&format!("; the {role} copy's disk unread: {e}"));
            }
        }
    }
    v.off_disk = off;
    for log in ["b.log", "a.log", "a-restarted.log"] {
        let text = std::fs::read_to_string(n.dir.path(log)).unwrap_or_default();
        for l in text.lines() {
            if l.contains("disk and memory disagree") {
                v.disagree = true;
                note.push_str(&format!("; {log}: {}", l.trim()));
            } else if let Some(said) = l.split("disk: the PUT log agrees").nth(1) {
                // The activated replica's own check of its disk against its memory.
                note.push_str(&format!(
                    "; activated: the PUT log agrees{}",
                    said.trim_end()
                ));
            }
        }
    }
    note.push_str("; ");
    if end.healed {
        v.resync_bad = resync_note(n, end, note);
    }
    v
}

/// The healing's disk resynchronisation, from the protecting standby's and its primary's status;
/// whether it was wrong (due and not seen, or a full copy).
fn resync_note(n: &Nodes, end: Ending, note: &mut String) -> bool {
    let (standby, primary, before) = if end.took_over {
        (
            n.handle("rejoined standby (host A)", "rejoined.sock", "a.log"),
            n.handle("promoted primary (host B)", "promoted.sock", "b.log"),
            Resyncs::default(),
        )
    } else {
        (
            n.handle("hsb-standby (host B)", "b.sock", "b.log"),
            n.handle("hsb-primary (host A)", "a.sock", "a.log"),
            end.b_before,
        )
    };
    let (s, p) = (standby.status(), primary.status());
    let now = Resyncs::of(&s);
    let (begun, full) = (
        now.begun.saturating_sub(before.begun),
        now.full.saturating_sub(before.full),
    );
    let tracks = num(&s, "disk_size") / 4096;
    if !end.resynchronised {
        note.push_str(&format!(
            "disk: same session, no resynchronisation ({begun} begun); "
        ));
        return false;
    }
    note.push_str(&format!(
        "disk resync on healing: {begun} begun, {full} full; the last copied {} of {tracks} tracks ({} KiB), {} planned by the primary; ",
        num(&s, "disk_resync_tracks"),
        num(&s, "disk_resync_bytes") / 1024,
        num(&p, "disk_resync_planned_tracks")
    ));
    begun == 0 || full > 0
}
