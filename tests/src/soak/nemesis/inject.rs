//! Injecting one fault of a step (the world updated, its undos returned) and the link that flaps
//! during a step.

use std::time::{Duration, Instant};

use crate::netns::Net;
use crate::soak::cluster::SoakCluster;
use crate::soak::schedule::Fault;
use crate::soak::HOSTS;

use super::{first_line, Nemesis, Node, Proc, Undo, CLI_TIMEOUT};

impl Nemesis<'_> {
    /// Inject one fault with the primary on host `p` (the standby on the other host).
    pub(super) fn inject(&mut self, step: usize, f: Fault, p: usize) -> Result<Vec<Undo>, String> {
        let s = 1 - p;
        *self.counts.entry(f.kind()).or_default() += 1;
        self.world.active.push((step, f.name()));
        let mut u = vec![Undo::Active(step, f.name())];
        let (ph, sh) = (Node::Host(p), Node::Host(s));
        let topo_ip = |c: &SoakCluster, n: Node| c.topo.ip(Self::node_host(n), Net::Client);
        match f {
            Fault::KillPrimary => u.push(self.kill_host(p)),
            Fault::CrashPrimaryHost => {
                u.push(self.kill_host(p));
                u.push(self.link_down(ph, Net::Client)?);
                u.push(self.link_down(ph, Net::Replication)?);
            }
            Fault::KillStandby => u.push(self.kill_host(s)),
            Fault::StopPrimary => u.push(self.stop(ph)),
            Fault::StopStandby => u.push(self.stop(sh)),
            Fault::CutReplication => u.push(self.link_down(ph, Net::Replication)?),
            Fault::OneWayLoss => {
                u.push(self.add_rules(sh, vec!["in iifname \"eth1\" drop".into()])?)
            }
            Fault::PrimaryOffClients => {
                let e = self.roles.1;
                let whole_before = self.whole_just_before(e, p);
                u.push(self.link_down(ph, Net::Client)?);
                self.cut_off(p, e, whole_before);
            }
            Fault::GuestHung => u.push(self.add_rules(
                ph,
                vec![format!(
                    "in tcp dport {} drop",
                    crate::soak::cluster::SERVICE_PORT
                )],
            )?),
            Fault::StandbyIsolated => {
                u.push(self.link_down(sh, Net::Client)?);
                u.push(self.link_down(sh, Net::Replication)?);
            }
            Fault::WitnessSplit {
                standby_majority,
                alone,
            } => {
                let alone = usize::from(alone);
                let others: Vec<usize> = (0..3).filter(|i| *i != alone).collect();
                let (p_side, s_side) = if standby_majority {
                    (vec![alone], others)
                } else {
                    (others, vec![alone])
                };
                // The sides first, the replication link last (see tests/src/faults.rs, F8).
                let isolate = |from: Vec<String>| -> Vec<String> {
                    from.iter()
                        .flat_map(|a| {
                            [
                                format!("in ip saddr {a} drop"),
                                format!("out ip daddr {a} drop"),
                            ]
                        })
                        .collect()
                };
                let mut from_p = vec![topo_ip(self.c, sh)];
                from_p.extend(s_side.iter().map(|i| topo_ip(self.c, Node::Witness(*i))));
                let mut from_s = vec![topo_ip(self.c, ph)];
                from_s.extend(p_side.iter().map(|i| topo_ip(self.c, Node::Witness(*i))));
                u.push(self.add_rules(ph, isolate(from_p))?);
                u.push(self.add_rules(sh, isolate(from_s))?);
                u.push(self.link_down(ph, Net::Replication)?);
            }
            Fault::WitnessesUnreachable => {
                for i in 0..3 {
                    u.push(self.link_down(Node::Witness(i), Net::Client)?);
                }
                u.push(self.link_down(ph, Net::Replication)?);
            }
            Fault::ReplicationLoss {
                percent,
                at_standby,
            } => {
                let n = if at_standby { sh } else { ph };
                u.push(self.add_rules(
                    n,
                    vec![format!(
                        "in iifname \"eth1\" numgen random mod 100 < {percent} drop"
                    )],
                )?);
            }
            Fault::ClientLoss { witness, percent } => {
                u.push(self.add_rules(
                    Node::Witness(usize::from(witness)),
                    vec![format!(
                        "in iifname \"eth0\" numgen random mod 100 < {percent} drop"
                    )],
                )?);
            }
            Fault::WitnessRestart { witness } => {
                let ws: Vec<usize> = if witness >= 3 {
                    vec![0, 1, 2]
                } else {
                    vec![usize::from(witness)]
                };
                for i in ws {
                    self.c.kill_witness(i);
                    self.world.witnesses[i].proc = Proc::Killed;
                    u.push(Undo::RestartWitness(i));
                }
                self.changed();
            }
            Fault::WitnessStop { witness } => {
                u.push(self.stop(Node::Witness(usize::from(witness))))
            }
            Fault::WitnessIsolated { witness } => {
                u.push(self.link_down(Node::Witness(usize::from(witness)), Net::Client)?)
            }
            Fault::Replay { count } => {
                let n = self.replay(count);
                let (captured, flows) = self
                    .c
                    .capture
                    .as_ref()
                    .map(|c| c.counts())
                    .unwrap_or_default();
                self.note(
                    step,
                    format!("replayed {n} datagrams ({captured} captured in {flows} flows)"),
                );
                u.push(Undo::Replay(count));
            }
            Fault::OperatorSwitchover | Fault::OperatorActivate => {
                let cmd = if f == Fault::OperatorSwitchover {
                    "switchover"
                } else {
                    "activate"
                };
                let (code, out) = self.c.standby_cli(s, &[cmd], CLI_TIMEOUT);
                let what = format!("hsb-standby {cmd} on host {}", HOSTS[s]);
                self.operator_answered(step, &what, cmd, code, &out);
            }
            Fault::SwitchoverKill { after_ms } => {
                let cmd = self.c.standby_command(s, &["switchover"]);
                let handle =
                    std::thread::spawn(move || crate::soak::cluster::run_bounded(cmd, CLI_TIMEOUT));
                self.cli = Some((step, "switchover".into(), handle));
                self.wait(Duration::from_millis(u64::from(after_ms)));
                u.push(self.kill_host(p));
            }
            Fault::LinkFlap { client, period_ms } => {
                let net = if client {
                    Net::Client
                } else {
                    Net::Replication
                };
                u.push(self.link_down(ph, net)?);
                if client {
                    let e = self.roles.1;
                    let whole_before = self.whole_just_before(e, p);
                    self.cut_off(p, e, whole_before);
                }
                let period = Duration::from_millis(u64::from(period_ms));
                self.flap = Some((ph, net, period, Instant::now() + period, true));
            }
            Fault::MaintenanceKill => {
                let (code, out) = self.c.standby_cli(s, &["maintenance", "on"], CLI_TIMEOUT);
                self.event(&format!(
                    "maintenance on on host {}: exit {code}: {}",
                    HOSTS[s],
                    first_line(&out)
                ));
                if code != 0 {
                    self.note(
                        step,
                        format!("maintenance on refused: {}", first_line(&out)),
                    );
                } else {
                    self.world.maintenance = true;
                    u.push(Undo::MaintenanceOff(s));
                    self.changed();
                    // The notice reaches the primary and the witnesses.
                    self.wait(Duration::from_millis(1500));
                    // Restart last: maintenance off comes first (undone in reverse).
                    let restart = self.kill_host(p);
                    u.insert(1, restart);
                }
            }
        }
        self.changed();
        Ok(u)
    }

    /// Toggle a flapping link when its period is up (the model follows: while it is up, the
    /// fault holds no link down).
    pub(super) fn flap_tick(&mut self) -> Result<(), String> {
        let Some((n, net, period, next, down)) = self.flap else {
            return Ok(());
        };
        if Instant::now() < next {
            return Ok(());
        }
        if down {
            self.undo(Undo::LinkUp(n, net))?;
        } else {
            self.link_down(n, net)?;
            // Cut off from its clients again: a switchover may be due again.
            if let (Node::Host(h), Net::Client) = (n, net) {
                if self.world.gone.is_none() && self.roles.0 == h {
                    let e = self.roles.1;
                    self.cut_off(h, e, false);
                }
            }
        }
        self.flap = Some((n, net, period, Instant::now() + period, !down));
        Ok(())
    }
}
