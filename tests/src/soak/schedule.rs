//! The nemesis schedule: a sequence of steps drawn from a seed alone, so a seed replays the same
//! schedule (what happens, in which order, for how long). Targets are roles (the primary, the
//! standby), resolved when a step runs: the same schedule applies whichever host is primary.

use hsb_common::rng::SplitMix64;

/// One fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// kill -9 of the primary's daemon; the host restarts it after the hold.
    KillPrimary,
    /// The primary's host crashes: kill -9 and both links down; links up and restart after.
    CrashPrimaryHost,
    /// kill -9 of the standby's daemon; restarted after the hold.
    KillStandby,
    /// SIGSTOP of the primary's daemon for the hold (F6).
    StopPrimary,
    /// SIGSTOP of the standby's daemon for the hold.
    StopStandby,
    /// The primary's replication link down (F2).
    CutReplication,
    /// The standby drops everything arriving on its replication interface (F3).
    OneWayLoss,
    /// The primary's client link down, replication fine (F4: a rule-6 switchover is due).
    PrimaryOffClients,
    /// The guest application hangs: the primary's host drops TCP to the service port (F5).
    GuestHung,
    /// Both of the standby's links down (F7).
    StandbyIsolated,
    /// A and B cut off from each other, the witnesses split between them (F8); `alone` is the
    /// witness (0-2) on its own, on the standby's side when `standby_majority` is false.
    WitnessSplit { standby_majority: bool, alone: u8 },
    /// Every witness's link and the primary's replication link down (F9).
    WitnessesUnreachable,
    /// Random loss of what the standby (or the primary) receives on the replication network
    /// (F10).
    ReplicationLoss { percent: u8, at_standby: bool },
    /// Random loss of what a witness receives.
    ClientLoss { witness: u8, percent: u8 },
    /// kill -9 of a witness (3: all three), started again after the hold, with captured
    /// datagrams replayed at once (older incarnations' among them).
    WitnessRestart { witness: u8 },
    /// SIGSTOP of a witness for the hold.
    WitnessStop { witness: u8 },
    /// A witness's link down.
    WitnessIsolated { witness: u8 },
    /// Captured datagrams replayed, byte for byte, at the start and at the end of the hold.
    Replay { count: u16 },
    /// `hsb-standby switchover` on the standby: a planned hand-over.
    OperatorSwitchover,
    /// `hsb-standby activate` on the standby with the primary alive (rule 9).
    OperatorActivate,
    /// `hsb-standby maintenance on`, kill -9 of the primary, no takeover for the hold,
    /// `maintenance off` (the takeover is then due), the old primary's host restarted.
    MaintenanceKill,
    /// `hsb-standby switchover` on the standby and, `after_ms` into it, kill -9 of the primary
    /// (before it fenced, during its final checkpoint, or after it rejoined); restarted after
    /// the hold.
    SwitchoverKill { after_ms: u16 },
    /// The primary's client (or replication) link down and up again every `period_ms`, for
    /// the hold.
    LinkFlap { client: bool, period_ms: u16 },
}

impl Fault {
    /// A short name for reports.
    pub fn name(self) -> String {
        match self {
            Fault::KillPrimary => "kill -9 primary".into(),
            Fault::CrashPrimaryHost => "primary host crash".into(),
            Fault::KillStandby => "kill -9 standby".into(),
            Fault::StopPrimary => "SIGSTOP primary".into(),
            Fault::StopStandby => "SIGSTOP standby".into(),
            Fault::CutReplication => "replication link cut".into(),
            Fault::OneWayLoss => "one-way loss to standby".into(),
            Fault::PrimaryOffClients => "primary cut off from clients".into(),
            Fault::GuestHung => "guest application hung".into(),
            Fault::StandbyIsolated => "standby isolated".into(),
            Fault::WitnessSplit {
                standby_majority, ..
            } => format!(
                "witnesses split, majority with the {}",
                if standby_majority {
                    "standby"
                } else {
                    "primary"
                }
            ),
            Fault::WitnessesUnreachable => "witnesses unreachable + link cut".into(),
            Fault::ReplicationLoss {
                percent,
                at_standby,
            } => format!(
                "{percent}% loss to the {}",
                if at_standby { "standby" } else { "primary" }
            ),
            Fault::ClientLoss { witness, percent } => {
                format!("{percent}% loss to witness {}", witness + 1)
            }
            Fault::WitnessRestart { witness: 3 } => "all witnesses restarted".into(),
            Fault::WitnessRestart { witness } => format!("witness {} restarted", witness + 1),
            Fault::WitnessStop { witness } => format!("SIGSTOP witness {}", witness + 1),
            Fault::WitnessIsolated { witness } => format!("witness {} isolated", witness + 1),
            Fault::Replay { count } => format!("replay of {count} captured datagrams"),
            Fault::OperatorSwitchover => "operator switchover".into(),
            Fault::OperatorActivate => "operator activate".into(),
            Fault::MaintenanceKill => "maintenance + kill -9 primary".into(),
            Fault::SwitchoverKill { after_ms } => {
                format!("operator switchover, kill -9 primary {after_ms} ms into it")
            }
            Fault::LinkFlap { client, period_ms } => format!(
                "primary's {} link flapping every {period_ms} ms",
                if client { "client" } else { "replication" }
            ),
        }
    }

    /// The kind, without parameters (for counting).
    pub fn kind(self) -> &'static str {
        match self {
            Fault::KillPrimary => "kill -9 primary",
            Fault::CrashPrimaryHost => "primary host crash",
            Fault::KillStandby => "kill -9 standby",
            Fault::StopPrimary => "SIGSTOP primary",
            Fault::StopStandby => "SIGSTOP standby",
            Fault::CutReplication => "replication link cut",
            Fault::OneWayLoss => "one-way loss to standby",
            Fault::PrimaryOffClients => "primary cut off from clients",
            Fault::GuestHung => "guest application hung",
            Fault::StandbyIsolated => "standby isolated",
            Fault::WitnessSplit { .. } => "witnesses split",
            Fault::WitnessesUnreachable => "witnesses unreachable + link cut",
            Fault::ReplicationLoss { .. } => "loss on the replication network",
            Fault::ClientLoss { .. } => "loss to a witness",
            Fault::WitnessRestart { witness: 3 } => "all witnesses restarted",
            Fault::WitnessRestart { .. } => "witness restarted",
            Fault::WitnessStop { .. } => "SIGSTOP witness",
            Fault::WitnessIsolated { .. } => "witness isolated",
            Fault::Replay { .. } => "replay of captured datagrams",
            Fault::OperatorSwitchover => "operator switchover",
            Fault::OperatorActivate => "operator activate",
            Fault::MaintenanceKill => "maintenance + kill -9 primary",
            Fault::SwitchoverKill { .. } => "operator switchover + kill -9 primary",
            Fault::LinkFlap { client: true, .. } => "primary's client link flapping",
            Fault::LinkFlap { client: false, .. } => "replication link flapping",
        }
    }

    /// Whether the step must start from a whole cluster: a fault that takes a copy away needs
    /// the other one synchronised (two lost copies are not a fault hsb can survive: the model
    /// domain lives in its daemon), and operator commands are asked of a following standby.
    pub fn needs_whole(self) -> bool {
        matches!(
            self,
            Fault::KillPrimary
                | Fault::CrashPrimaryHost
                | Fault::KillStandby
                | Fault::MaintenanceKill
                | Fault::SwitchoverKill { .. }
                | Fault::OperatorSwitchover
                | Fault::OperatorActivate
        )
    }

    /// Whether the active role may move to the other host because of this fault: the primary
    /// dies, is cut off from its clients, is frozen, loses the witness majority, or the
    /// operator moves it. A takeover during any other fault is reported as unexpected.
    pub fn may_move_role(self) -> bool {
        matches!(
            self,
            Fault::KillPrimary
                | Fault::CrashPrimaryHost
                | Fault::StopPrimary
                | Fault::PrimaryOffClients
                | Fault::WitnessSplit {
                    standby_majority: true,
                    ..
                }
                | Fault::OperatorSwitchover
                | Fault::OperatorActivate
                | Fault::MaintenanceKill
                | Fault::SwitchoverKill { .. }
                | Fault::LinkFlap { client: true, .. }
        )
    }
}

/// One step of the nemesis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub main: Fault,
    /// An overlapping fault, started this long (ms) after the main one.
    pub extra: Option<(Fault, u64)>,
    /// How long the fault lasts before it is healed, ms.
    pub hold_ms: u64,
    /// Wait for a whole cluster first (always for faults that [`Fault::needs_whole`]); when
    /// false, the step starts right after the previous one healed.
    pub wait_whole: bool,
    /// Pause after healing, ms.
    pub gap_ms: u64,
}

impl Step {
    /// One line: `kill -9 primary for 2.3 s (+ witness 2 restarted at 0.4 s)`.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} for {:.1} s",
            self.main.name(),
            self.hold_ms as f64 / 1e3
        );
        if let Some((f, at)) = self.extra {
            s.push_str(&format!(" (+ {} at {:.1} s)", f.name(), at as f64 / 1e3));
        }
        if !self.wait_whole && !self.main.needs_whole() {
            s.push_str(", without waiting for a whole cluster");
        }
        s
    }
}

/// Weighted main faults: about half move the active role.
const MAIN: [(u64, u8); 23] = [
    (14, 0),  // KillPrimary
    (6, 1),   // CrashPrimaryHost
    (6, 2),   // KillStandby
    (5, 3),   // StopPrimary
    (3, 4),   // StopStandby
    (5, 5),   // CutReplication
    (3, 6),   // OneWayLoss
    (7, 7),   // PrimaryOffClients
    (2, 8),   // GuestHung
    (4, 9),   // StandbyIsolated
    (5, 10),  // WitnessSplit
    (2, 11),  // WitnessesUnreachable
    (4, 12),  // ReplicationLoss
    (2, 13),  // ClientLoss
    (5, 14),  // WitnessRestart
    (2, 15),  // WitnessStop
    (2, 16),  // WitnessIsolated
    (5, 17),  // Replay
    (10, 18), // OperatorSwitchover
    (4, 19),  // OperatorActivate
    (3, 20),  // MaintenanceKill
    (4, 21),  // SwitchoverKill
    (4, 22),  // LinkFlap
];

/// The seeded schedule.
pub struct Schedule {
    rng: SplitMix64,
}

impl Schedule {
    pub fn new(seed: u64) -> Schedule {
        Schedule {
            rng: SplitMix64::new(seed ^ 0x50a4_5eed_0000_0001),
        }
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.rng.below(hi - lo + 1)
    }

    fn witness(&mut self) -> u8 {
        self.rng.below(3) as u8
    }

    /// A fault that can overlap a main fault: on the witnesses' side, loss, replays, or a
    /// paused standby (its replica survives a pause).
    fn extra(&mut self) -> Fault {
        match self.rng.below(7) {
            6 => Fault::StopStandby,
            0 => Fault::WitnessRestart {
                witness: self.witness(),
            },
            1 => Fault::WitnessStop {
                witness: self.witness(),
            },
            2 => Fault::WitnessIsolated {
                witness: self.witness(),
            },
            3 => Fault::ClientLoss {
                witness: self.witness(),
                percent: self.range(10, 40) as u8,
            },
            4 => Fault::Replay {
                count: self.range(20, 200) as u16,
            },
            _ => Fault::ReplicationLoss {
                percent: self.range(10, 40) as u8,
                at_standby: self.rng.below(2) == 0,
            },
        }
    }

    fn main(&mut self) -> (Fault, u64) {
        let total: u64 = MAIN.iter().map(|(w, _)| w).sum();
        let mut pick = self.rng.below(total);
        let mut which = 0;
        for (w, f) in MAIN {
            if pick < w {
                which = f;
                break;
            }
            pick -= w;
        }
        match which {
            0 => (Fault::KillPrimary, self.range(300, 8000)),
            1 => (Fault::CrashPrimaryHost, self.range(1000, 8000)),
            2 => (Fault::KillStandby, self.range(300, 5000)),
            3 => (Fault::StopPrimary, self.range(300, 5000)),
            4 => (Fault::StopStandby, self.range(300, 4000)),
            5 => (Fault::CutReplication, self.range(1000, 6000)),
            6 => (Fault::OneWayLoss, self.range(1000, 6000)),
            7 => (Fault::PrimaryOffClients, self.range(2000, 8000)),
            8 => (Fault::GuestHung, self.range(1000, 3000)),
            9 => (Fault::StandbyIsolated, self.range(1000, 6000)),
            10 => (
                Fault::WitnessSplit {
                    standby_majority: self.rng.below(2) == 0,
                    alone: self.witness(),
                },
                self.range(2000, 6000),
            ),
            11 => (Fault::WitnessesUnreachable, self.range(1000, 3000)),
            12 => (
                Fault::ReplicationLoss {
                    percent: self.range(10, 50) as u8,
                    at_standby: self.rng.below(3) != 0,
                },
                self.range(2000, 8000),
            ),
            13 => (
                Fault::ClientLoss {
                    witness: self.witness(),
                    percent: self.range(10, 50) as u8,
                },
                self.range(1000, 5000),
            ),
            14 => (
                Fault::WitnessRestart {
                    witness: self.rng.below(4) as u8,
                },
                self.range(0, 3000),
            ),
            15 => (
                Fault::WitnessStop {
                    witness: self.witness(),
                },
                self.range(300, 4000),
            ),
            16 => (
                Fault::WitnessIsolated {
                    witness: self.witness(),
                },
                self.range(1000, 5000),
            ),
            17 => (
                Fault::Replay {
                    count: self.range(20, 300) as u16,
                },
                self.range(500, 2000),
            ),
            18 => (Fault::OperatorSwitchover, 0),
            19 => (Fault::OperatorActivate, 0),
            20 => (Fault::MaintenanceKill, self.range(2000, 4000)),
            21 => (
                Fault::SwitchoverKill {
                    after_ms: self.range(0, 600) as u16,
                },
                self.range(1000, 5000),
            ),
            _ => (
                Fault::LinkFlap {
                    client: self.rng.below(2) == 0,
                    period_ms: self.range(100, 700) as u16,
                },
                self.range(2000, 6000),
            ),
        }
    }

    /// The next step.
    pub fn next_step(&mut self) -> Step {
        let (main, hold_ms) = self.main();
        // One step in four overlaps another fault, started within the hold.
        let extra = if self.rng.below(4) == 0 {
            let mut f = self.extra();
            // Never the same witness twice (one fault per witness at a time), nor a second
            // fault on the standby's process or links.
            if f == Fault::StopStandby
                && matches!(
                    main,
                    Fault::KillStandby | Fault::StopStandby | Fault::StandbyIsolated
                )
            {
                f = Fault::Replay { count: 50 };
            }
            let same = |w: u8| match main {
                Fault::WitnessRestart { witness }
                | Fault::WitnessStop { witness }
                | Fault::WitnessIsolated { witness }
                | Fault::ClientLoss { witness, .. } => witness == w || witness == 3,
                Fault::WitnessesUnreachable => true,
                _ => false,
            };
            if let Fault::WitnessRestart { witness }
            | Fault::WitnessStop { witness }
            | Fault::WitnessIsolated { witness }
            | Fault::ClientLoss { witness, .. } = f
            {
                if same(witness) {
                    f = Fault::Replay { count: 50 };
                }
            }
            Some((f, self.range(0, hold_ms.max(500) * 3 / 4)))
        } else {
            None
        };
        // One step in six starts without waiting for the cluster to be whole again.
        let wait_whole = main.needs_whole() || self.rng.below(6) != 0;
        Step {
            main,
            extra,
            hold_ms,
            wait_whole,
            gap_ms: self.range(300, 3000),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_schedule() {
        let steps = |seed| {
            let mut s = Schedule::new(seed);
            (0..200).map(|_| s.next_step()).collect::<Vec<_>>()
        };
        assert_eq!(steps(7), steps(7));
        assert_ne!(steps(7), steps(8));
        let all = steps(11);
        // About half the steps may move the active role; overlaps and steps that do not
        // wait for a whole cluster occur.
        let moving = all.iter().filter(|s| s.main.may_move_role()).count();
        assert!((60..=140).contains(&moving), "{moving}");
        assert!(all.iter().any(|s| s.extra.is_some()));
        assert!(all.iter().any(|s| !s.wait_whole));
        for s in &all {
            if s.main.needs_whole() {
                assert!(s.wait_whole);
            }
            if let Some((_, at)) = s.extra {
                assert!(at <= s.hold_ms.max(500));
            }
        }
    }
}
