//! The machine the benchmarks run on: the report's header, CPU use by other processes, the
//! load average, the date, and the resident memory of processes.

use std::process::Command;
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

use hsb_tests::Daemon;

use super::stats::table;

pub fn header() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']))
        })
        .unwrap_or("unknown")
        .to_string();
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let avail = thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let rustc = Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    let sysctl = |n: &str| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/{n}"))
            .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "?".into())
    };
    let rows = vec![
        vec!["CPU".into(), cpu],
        vec![
            "Cores".into(),
            format!("{cores} online, {avail} available to this process"),
        ],
        vec![
            "Memory".into(),
            format!("{:.1} GiB", mem_kb as f64 / (1 << 20) as f64),
        ],
        vec!["Kernel".into(), kernel],
        vec!["rustc".into(), rustc],
        vec!["Date".into(), utc_now()],
        vec!["Load average at start".into(), loadavg()],
        vec![
            "TCP buffers".into(),
            format!(
                "tcp_wmem `{}`, tcp_rmem `{}` (kernel autotuning; every socket here is set up the same way)",
                sysctl("tcp_wmem"),
                sysctl("tcp_rmem")
            ),
        ],
        vec![
            "Backend".into(),
            "model domain (the hypervisor test double), 64 MiB, on loopback; release build".into(),
        ],
    ];
    format!(
        "# hsb benchmark results\n\n{}",
        table(&["Machine", ""], &rows)
    )
}

/// CPU ticks: the machine's busy and total, and this process's own (with reaped children).
#[derive(Clone, Copy, Default)]
pub struct Cpu {
    pub busy: u64,
    pub total: u64,
    pub ours: u64,
}

impl Cpu {
    pub fn now() -> Cpu {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let f: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let g = |i: usize| f.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal
        let busy = g(0) + g(1) + g(2) + g(5) + g(6) + g(7);
        let total = busy + g(3) + g(4);
        let me = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let ours = me.rsplit_once(')').map_or(0, |(_, r)| {
            // After the name: state is field 3; utime, stime, cutime, cstime are fields 14..=17.
            r.split_whitespace()
                .skip(11)
                .take(4)
                .filter_map(|x| x.parse::<u64>().ok())
                .sum()
        });
        Cpu { busy, total, ours }
    }

    /// Share of the machine's CPU used by other processes since `earlier`, in percent.
    pub fn others_since(&self, earlier: &Cpu) -> f64 {
        let busy = self.busy.saturating_sub(earlier.busy);
        let ours = self.ours.saturating_sub(earlier.ours);
        let total = self.total.saturating_sub(earlier.total).max(1);
        busy.saturating_sub(ours) as f64 * 100.0 / total as f64
    }
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// VmRSS and VmHWM of a process, in KiB.
pub fn mem_of(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        s.lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

pub fn daemon_mem(d: &Daemon, phase: &str) -> Vec<String> {
    let m = d.child.as_ref().and_then(|c| mem_of(c.id()));
    let f = |kb: u64| format!("{:.1}", kb as f64 / 1024.0);
    match m {
        Some((rss, hwm)) => vec![d.name.clone(), phase.into(), f(rss), f(hwm)],
        None => vec![d.name.clone(), phase.into(), "?".into(), "?".into()],
    }
}
