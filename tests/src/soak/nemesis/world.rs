//! The nemesis's model of the faults in force and its primitives: links down, nftables rules,
//! paused and killed processes, each with the [`Undo`] that heals it, and replayed datagrams.

use std::time::{Duration, Instant};

use crate::netns::Net;
use crate::soak::capture::Capture;
use crate::soak::cluster::{host, witness};
use crate::soak::HOSTS;

use super::{first_line, Gone, Nemesis, Node, NodeState, Proc, Undo, CLI_TIMEOUT};

impl Nemesis<'_> {
    pub(super) fn node_host(n: Node) -> crate::netns::Host {
        match n {
            Node::Host(h) => host(h),
            Node::Witness(i) => witness(i),
        }
    }

    pub(super) fn state_mut(&mut self, n: Node) -> &mut NodeState {
        match n {
            Node::Host(h) => &mut self.world.hosts[h],
            Node::Witness(i) => &mut self.world.witnesses[i],
        }
    }

    pub(super) fn link_down(&mut self, n: Node, net: Net) -> Result<Undo, String> {
        let k = usize::from(net == Net::Replication);
        self.state_mut(n).down[k] += 1;
        self.c.topo.link(Self::node_host(n), net, false)?;
        self.changed();
        Ok(Undo::LinkUp(n, net))
    }

    pub(super) fn apply_rules(&mut self, n: Node) -> Result<(), String> {
        let rules: Vec<String> = self
            .state_mut(n)
            .rules
            .iter()
            .flat_map(|(_, r)| r.iter().cloned())
            .collect();
        if rules.is_empty() {
            self.c.topo.clear_rules(Self::node_host(n));
            Ok(())
        } else {
            self.c.topo.set_rules(Self::node_host(n), &rules)
        }
    }

    pub(super) fn add_rules(&mut self, n: Node, rules: Vec<String>) -> Result<Undo, String> {
        let id = self.next_rule_id;
        self.next_rule_id += 1;
        self.state_mut(n).rules.push((id, rules));
        self.apply_rules(n)?;
        self.changed();
        Ok(Undo::Rules(n, id))
    }

    pub(super) fn stop(&mut self, n: Node) -> Undo {
        match n {
            Node::Host(h) => self.c.signal_host(h, "STOP"),
            Node::Witness(i) => self.c.signal_witness(i, "STOP"),
        }
        self.state_mut(n).proc = Proc::Stopped;
        self.changed();
        Undo::Cont(n)
    }

    /// The primary of epoch `epoch` on host `host` is gone: cut off from its clients, alive.
    pub(super) fn cut_off(&mut self, host: usize, epoch: u64, whole_before: bool) {
        self.world.gone = Some(Gone {
            host,
            epoch,
            at: Instant::now(),
            whole_before,
            cut_off: true,
        });
    }

    /// kill -9 host `h`'s daemon; if it ran the current primary, the primary is gone.
    pub(super) fn kill_host(&mut self, h: usize) -> Undo {
        let (p, e) = self.roles;
        if h == p {
            self.world.gone = Some(Gone {
                host: h,
                epoch: e,
                at: Instant::now(),
                whole_before: self.whole_just_before(e, h),
                cut_off: false,
            });
        }
        self.c.kill_host(h);
        self.world.hosts[h].proc = Proc::Killed;
        self.changed();
        Undo::RestartHost(h)
    }

    /// Whether the pair was whole just before (the monitor saw it within 500 ms) and no witness
    /// holds a stale-replica mark: a primary that fell back to leases for a moment (acks late)
    /// leaves one, and then the replica may lack output it released (rule 5).
    pub(super) fn whole_just_before(&self, e: u64, h: usize) -> bool {
        self.mon.snapshot().whole_within(Duration::from_millis(500)) == Some((e, h))
            && (0..3).all(|i| {
                self.c
                    .witness_status(i)
                    .get("stale_mark")
                    .is_none_or(|m| m == "none")
            })
    }

    pub(super) fn undo(&mut self, u: Undo) -> Result<(), String> {
        match u {
            Undo::LinkUp(n, net) => {
                let k = usize::from(net == Net::Replication);
                let st = self.state_mut(n);
                st.down[k] = st.down[k].saturating_sub(1);
                if st.down[k] == 0 {
                    self.c.topo.link(Self::node_host(n), net, true)?;
                    // A primary cut off from its clients is back.
                    if let (Node::Host(h), Net::Client) = (n, net) {
                        if self
                            .world
                            .gone
                            .as_ref()
                            .is_some_and(|g| g.host == h && g.cut_off)
                        {
                            self.world.gone = None;
                        }
                    }
                }
            }
            Undo::Rules(n, id) => {
                self.state_mut(n).rules.retain(|(i, _)| *i != id);
                self.apply_rules(n)?;
            }
            Undo::Cont(n) => {
                match n {
                    Node::Host(h) => self.c.signal_host(h, "CONT"),
                    Node::Witness(i) => self.c.signal_witness(i, "CONT"),
                }
                self.state_mut(n).proc = Proc::Running;
            }
            Undo::RestartHost(h) => {
                self.c.restart_host(h);
                self.event(&format!("host {} restarted", HOSTS[h]));
                let st = &mut self.world.hosts[h];
                st.proc = Proc::Running;
                st.started = Instant::now();
            }
            Undo::RestartWitness(i) => {
                self.c.start_witness(i);
                let st = &mut self.world.witnesses[i];
                st.proc = Proc::Running;
                st.started = Instant::now();
                // An attacker's best moment: datagrams of the witnesses' earlier incarnations
                // replayed as a new incarnation starts (DESIGN.md §6).
                self.replay(24);
            }
            Undo::MaintenanceOff(h) => {
                let (code, out) = self.c.standby_cli(h, &["maintenance", "off"], CLI_TIMEOUT);
                self.event(&format!(
                    "maintenance off on host {}: exit {code}: {}",
                    HOSTS[h],
                    first_line(&out)
                ));
                self.world.maintenance = false;
            }
            Undo::Replay(count) => {
                self.replay(count);
            }
            Undo::Active(step, name) => {
                if let Some(i) = self
                    .world
                    .active
                    .iter()
                    .position(|(s, n)| *s == step && *n == name)
                {
                    self.world.active.remove(i);
                }
            }
        }
        self.changed();
        Ok(())
    }

    pub(super) fn replay(&mut self, count: u16) -> usize {
        let Some(cap) = self.c.capture.as_ref() else {
            return 0;
        };
        let packets = cap.pick(&mut self.rng, usize::from(count));
        match Capture::replay(&packets) {
            Ok(n) => {
                self.replayed += n as u64;
                n
            }
            Err(e) => {
                self.event(&format!("replay failed: {e}"));
                0
            }
        }
    }
}
