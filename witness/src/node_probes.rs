//! The witness node's probes: the daemon pings (their nonces, timeouts and pongs, late ones
//! included), and every probe's outcome fed to the core, with a line when the view changes.

use std::time::Duration;

use hsb_common::datagram::Envelope;
use hsb_common::decision::proto::{ProbeClass, ProbeTarget, WitnessView};
use hsb_common::decision::witness::Input;
use hsb_common::decision::{Epoch, Nanos};
use hsb_common::logging::LogLimiter;
use hsb_common::msg::Role;
use hsb_common::wire::Dgram;

use super::{cause, push, Effect, Effects, To, WitnessNode, CAUSES, FLIGHT, LATE_PONG};

impl WitnessNode {
    /// A probe of `target` that ran for `took` ended at `now`.
    pub(super) fn probe(
        &mut self,
        now: Nanos,
        target: ProbeTarget,
        class: ProbeClass,
        took: Duration,
        detail: &str,
        out: &mut Effects,
    ) {
        let t = ProbeTarget::ALL
            .iter()
            .position(|x| *x == target)
            .unwrap_or(0);
        let c = ProbeClass::ALL
            .iter()
            .position(|x| *x == class)
            .unwrap_or(0);
        self.observed.probes[t][c] += 1;
        self.observed.latency[t].record(took);
        let before = self.core.view(now);
        self.core_step(
            now,
            Input::Probe {
                target,
                class,
                took,
            },
            None,
            out,
        );
        let after = self.core.view(now);
        // The rates move with every probe; a change of the verdicts is what is worth a line.
        let verdicts = |v: &WitnessView| (v.app, v.primary_host, v.standby_host);
        if verdicts(&before) != verdicts(&after) {
            if let Some(n) = self.limits.allow(cause::VIEW_CHANGE, now) {
                let pct = |r: Option<u8>| r.map_or("-".to_string(), |r| format!("{r}%"));
                log::info!(
                    "{}view changed after {target} probe {class} ({detail}): application {} -> {}, primary daemon {} -> {}, standby daemon {} -> {}; answered over the rate window: application {}, primary daemon {}, standby daemon {}{}",
                    self.tag,
                    before.app, after.app, before.primary_host, after.primary_host, before.standby_host, after.standby_host,
                    pct(after.rates.app), pct(after.rates.primary), pct(after.rates.standby),
                    LogLimiter::<CAUSES>::note(n)
                );
            }
        }
    }

    /// The probe target the daemon at `slot` stands for now.
    fn slot_target(&self, slot: usize) -> ProbeTarget {
        if Some(slot) == self.hosts.primary_slot() {
            ProbeTarget::PrimaryHost
        } else {
            ProbeTarget::StandbyHost
        }
    }

    pub(super) fn pings_tick(&mut self, now: Nanos, out: &mut Effects) {
        for i in 0..2 {
            for k in 0..FLIGHT {
                let Some((nonce, sent)) = self.pings[i].flight[k] else {
                    continue;
                };
                if now >= sent.plus(self.set.probe_timeout) {
                    self.pings[i].flight[k] = None;
                    self.pings[i].missed += 1;
                    let target = self.slot_target(i);
                    // In place of the oldest given up (pings are given up in the order sent).
                    let late = &mut self.pings[i].late;
                    let k = (0..FLIGHT)
                        .min_by_key(|&k| late[k].map(|(_, sent, ..)| sent))
                        .unwrap_or(0);
                    late[k] = Some((nonce, sent, now, target));
                    self.probe(
                        now,
                        target,
                        ProbeClass::Timeout,
                        now.since(sent),
                        "no pong",
                        out,
                    );
                }
            }
        }
        if now < self.next_ping {
            return;
        }
        self.next_ping = now.plus(self.set.probe_interval);
        for i in 0..2 {
            let Some(k) = self.pings[i].flight.iter().position(Option::is_none) else {
                continue;
            };
            // The low bit names the slot, so a pong answers exactly the ping it echoes.
            let nonce = (self.pings[i].nonce.wrapping_add(2) & !1) | i as u64;
            self.pings[i].nonce = nonce;
            self.pings[i].flight[k] = Some((nonce, now));
            // Unaddressed: whoever answers at this address says who it is.
            push(
                out,
                Effect::Send {
                    to: To::Slot(i),
                    dest: None,
                    msg: Dgram::Ping { nonce },
                    needs: None,
                },
            );
        }
    }
    pub(super) fn pong(&mut self, now: Nanos, env: Envelope, nonce: u64, out: &mut Effects) {
        let i = (nonce & 1) as usize;
        if env.from.role == Role::Witness {
            return;
        }
        let k = self.pings[i]
            .flight
            .iter()
            .position(|f| f.is_some_and(|(n, _)| n == nonce));
        let Some((k, sent)) = k.and_then(|k| Some((k, self.pings[i].flight[k]?.1))) else {
            // A pong for a ping given up lately: late, but the path delivered it.
            let late = &mut self.pings[i].late;
            let given_up = late
                .iter_mut()
                .find(|l| l.is_some_and(|(n, ..)| n == nonce));
            if let Some((_, sent, timed_out_at, target)) = given_up.and_then(|l| l.take()) {
                if now.since(sent) <= LATE_PONG {
                    self.core_step(
                        now,
                        Input::Delivered {
                            target,
                            timed_out_at,
                        },
                        None,
                        out,
                    );
                }
            }
            return;
        };
        self.pings[i].flight[k] = None;
        self.pings[i].answered += 1;
        let before = self.hosts.primary_slot();
        self.hosts.heard(i, env.from, Epoch(env.epoch));
        if self.hosts.primary_slot() != before {
            let now_at = match self.hosts.primary_slot() {
                Some(s) => format!("slot {s}"),
                None => "nowhere (both daemons answer as standbys)".to_string(),
            };
            log::info!(
                "{}the primary's host is now {now_at} (the daemon at slot {i} answers as {:?} in epoch {})",
                self.tag,
                env.from.role,
                env.epoch
            );
        }
        let target = self.slot_target(i);
        self.probe(now, target, ProbeClass::Ok, now.since(sent), "pong", out);
    }
}
