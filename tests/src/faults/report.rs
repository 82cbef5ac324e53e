//! The suite's report: the outcome of each case as markdown and JSON, written to
//! `target/faults/`.

use super::Fault;

/// What a case showed.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub fault: Fault,
    pub policy: String,
    pub failed_over: bool,
    pub correct: bool,
    pub decide_ms: Option<u64>,
    pub unavailable_ms: u64,
    pub split_ms: u64,
    pub acked: u64,
    pub lost: u64,
    pub doubled: u64,
    /// PUTs (keys logged on the guest's disk) acknowledged.
    pub puts_acked: u64,
    /// Of them, read back at the end missing, with another value, or not at all.
    pub puts_bad: u64,
    /// Of them, absent from the PUT log of the serving copy's disk image (and of the protecting
    /// copy's after a healing); `None` where an image could not be read.
    pub puts_off_disk: Option<u64>,
    /// F12 after this fault: `Some(ms)` if, that long after healing, one copy served protected by
    /// the other, which it had synchronised from scratch; `None` if not within the bound; not
    /// checked (`healable == false`) where host A stays down.
    pub healed_ms: Option<u64>,
    pub healable: bool,
    pub note: String,
}

impl Outcome {
    /// The healing column: `yes, N ms`, `**no**`, or `-` where host A stays down.
    pub fn healed(&self) -> String {
        match (self.healable, self.healed_ms) {
            (false, _) => "-".into(),
            (true, Some(ms)) => format!("yes, {ms} ms"),
            (true, None) => "**no**".into(),
        }
    }
}

/// A markdown table of outcomes.
pub fn markdown(outcomes: &[Outcome]) -> String {
    let mut s = String::from("| fault | policy | decision | correct | time to decide | longest unavailability | split brain | acked writes | acked lost | applied twice | acked PUTs | PUTs missing or wrong | PUTs off disk | healed (F12) | note |\n|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n");
    for o in outcomes {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} ms | {} ms | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            o.fault.name(),
            o.policy,
            if o.failed_over { "failover" } else { "stay" },
            if o.correct { "yes" } else { "**no**" },
            o.decide_ms.map_or("-".into(), |m| format!("{m} ms")),
            o.unavailable_ms,
            o.split_ms,
            o.acked,
            o.lost,
            o.doubled,
            o.puts_acked,
            o.puts_bad,
            match (o.puts_acked, o.puts_off_disk) {
                (0, None) => "-".into(),
                (_, None) => "unread".into(),
                (_, Some(m)) => m.to_string(),
            },
            o.healed(),
            o.note
        ));
    }
    s
}

/// The outcomes as a JSON array.
pub fn json(outcomes: &[Outcome]) -> String {
    let items: Vec<String> = outcomes
        .iter()
        .map(|o| {
            format!(
                "{{\"fault\":\"{}\",\"policy\":\"{}\",\"failed_over\":{},\"correct\":{},\"decide_ms\":{},\"unavailable_ms\":{},\"split_brain_ms\":{},\"acked\":{},\"acked_lost\":{},\"applied_twice\":{},\"puts_acked\":{},\"puts_missing_or_wrong\":{},\"puts_off_disk\":{},\"healable\":{},\"healed_ms\":{},\"note\":\"{}\"}}",
                o.fault.name(),
                o.policy,
                o.failed_over,
                o.correct,
                o.decide_ms.map_or("null".into(), |m| m.to_string()),
                o.unavailable_ms,
                o.split_ms,
                o.acked,
                o.lost,
                o.doubled,
                o.puts_acked,
                o.puts_bad,
                o.puts_off_disk.map_or("null".into(), |m| m.to_string()),
                o.healable,
                o.healed_ms.map_or("null".into(), |m| m.to_string()),
                o.note.replace('"', "'")
            )
        })
        .collect();
    format!("[\n  {}\n]\n", items.join(",\n  "))
}

/// Write `target/faults/report.{md,json}` next to the running executable's target directory.
pub fn write_report(outcomes: &[Outcome]) -> std::io::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let target = exe
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "target"))
        .map(|p| p.to_path_buf())
        .unwrap_or_else(std::env::temp_dir);
    let dir = target.join("faults");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("report.md"), markdown(outcomes))?;
    std::fs::write(dir.join("report.json"), json(outcomes))?;
    Ok(dir)
}
