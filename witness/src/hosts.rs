//! Which of the two configured daemon addresses hosts the primary now.
//!
//! A witness is configured with two daemon addresses (`primary` and `standby`: the hosts as they
//! start). After a failover the roles swap hosts, and after the next one they swap back, so the
//! witness cannot take the configuration's word for which host is the primary: it learns it from
//! the authenticated answers of the daemons themselves (their pongs carry the sender's role and
//! activation epoch). The primary is the host whose daemon says "primary" in the newest epoch;
//! failing that, the host other than one whose daemon says "standby"; failing that, the
//! configured `primary`.

use hsb_common::datagram::{Dest, Sender};
use hsb_common::decision::Epoch;
use hsb_common::msg::Role;

/// What the witness last heard from each configured daemon address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostRoles {
    heard: [Option<(Sender, Epoch)>; 2],
}

impl HostRoles {
    /// Nothing heard yet: the configured `primary` (slot 0) is taken as the primary.
    pub fn new() -> HostRoles {
        HostRoles::default()
    }

    /// The daemon at `slot` answered as `from` in `epoch`.
    pub fn heard(&mut self, slot: usize, from: Sender, epoch: Epoch) {
        if let Some(h) = self.heard.get_mut(slot) {
            *h = Some((from, epoch));
        }
    }

    /// Where datagrams for the daemon at `slot` are addressed: the node it said it is, or
    /// before it has said anything, the role the configuration gives the slot.
    pub fn dest(&self, slot: usize) -> Dest {
        match self.heard.get(slot).copied().flatten() {
            Some((s, _)) => Dest::node(s),
            None => Dest::role(if slot == 0 {
                Role::Primary
            } else {
                Role::Standby
            }),
        }
    }

    /// The slot (0: configured `primary`, 1: configured `standby`) that hosts the primary, or
    /// `None` when both daemons answer as standbys: then no primary daemon is reachable at all
    /// (a primary whose daemon restarted without its domain comes back as a standby, and its
    /// silent application is a dead primary, not a hung guest).
    pub fn primary_slot(&self) -> Option<usize> {
        let primary_in = |i: usize| match self.heard[i] {
            Some((s, e)) if s.role == Role::Primary => Some(e),
            _ => None,
        };
        let standby = |i: usize| self.heard[i].is_some_and(|(s, _)| s.role == Role::Standby);
        match (primary_in(0), primary_in(1)) {
            (Some(a), Some(b)) => Some(usize::from(b > a)),
            (Some(_), None) => Some(0),
            (None, Some(_)) => Some(1),
            (None, None) => match (standby(0), standby(1)) {
                (true, true) => None,
                (true, false) => Some(1),
                _ => Some(0),
            },
        }
    }

    /// What the daemon at `slot` last said it was.
    pub fn role_of(&self, slot: usize) -> Option<(Role, Epoch)> {
        self.heard
            .get(slot)
            .copied()
            .flatten()
            .map(|(s, e)| (s.role, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: u32) -> Sender {
        Sender {
            role: Role::Primary,
            id,
        }
    }

    fn s(id: u32) -> Sender {
        Sender {
            role: Role::Standby,
            id,
        }
    }

    #[test]
    fn the_primary_follows_the_daemons_not_the_configuration() {
        let mut h = HostRoles::new();
        assert_eq!(h.primary_slot(), Some(0), "configured primary until heard");
        h.heard(0, p(10), Epoch(1));
        h.heard(1, s(11), Epoch(1));
        assert_eq!(h.primary_slot(), Some(0));
        // Failover: B (slot 1) activated in epoch 2; A is dead (its last word stays).
        h.heard(1, p(11), Epoch(2));
        assert_eq!(h.primary_slot(), Some(1), "the newer epoch's primary");
        // A rejoins as B's standby.
        h.heard(0, s(10), Epoch(2));
        assert_eq!(h.primary_slot(), Some(1));
        // Second failover: A activated in epoch 3.
        h.heard(0, p(10), Epoch(3));
        assert_eq!(h.primary_slot(), Some(0));
        // Only a standby heard: the primary is the other host.
        let mut h = HostRoles::new();
        h.heard(0, s(10), Epoch(4));
        assert_eq!(h.primary_slot(), Some(1));
        let mut h = HostRoles::new();
        h.heard(1, s(11), Epoch(4));
        assert_eq!(h.primary_slot(), Some(0));
        h.heard(7, p(1), Epoch(9)); // out of range: ignored
        assert_eq!(h.primary_slot(), Some(0));
        // Both answer as standbys (a model primary restarted without its domain): nobody is the
        // primary, whatever the configuration says.
        h.heard(0, s(10), Epoch(4));
        assert_eq!(h.primary_slot(), None);
    }

    #[test]
    fn datagrams_name_the_node_once_heard() {
        let mut h = HostRoles::new();
        assert_eq!(h.dest(0), Dest::role(Role::Primary));
        assert_eq!(h.dest(1), Dest::role(Role::Standby));
        h.heard(1, p(11), Epoch(2));
        assert_eq!(h.dest(1), Dest::node(p(11)));
    }
}
