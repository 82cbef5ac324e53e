//! Which of the two configured daemon addresses hosts the primary now.
//!
//! A witness is configured with two daemon addresses (`primary` and `standby`: the hosts as they
//! start). After a failover the roles swap hosts, and after the next one they swap back, so the
//! witness cannot take the configuration's word for which host is the primary: it learns it from
//! the authenticated answers of the daemons themselves (their pongs carry the sender's role and
//! activation epoch). The primary is the host whose daemon says "primary" in the newest epoch;
//! failing that, the host other than one whose daemon says "standby"; failing that, the
//! configured `primary`.

use hsb_common::decision::Epoch;
use hsb_common::msg::Role;

/// What the witness last heard from each configured daemon address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostRoles {
    heard: [Option<(Role, Epoch)>; 2],
}

impl HostRoles {
    /// Nothing heard yet: the configured `primary` (slot 0) is taken as the primary.
    pub fn new() -> HostRoles {
        HostRoles::default()
    }

    /// The daemon at `slot` answered as `role` in `epoch`.
    pub fn heard(&mut self, slot: usize, role: Role, epoch: Epoch) {
        if let Some(h) = self.heard.get_mut(slot) {
            *h = Some((role, epoch));
        }
    }

    /// The slot (0: configured `primary`, 1: configured `standby`) that hosts the primary.
    pub fn primary_slot(&self) -> usize {
        let primary_in = |i: usize| match self.heard[i] {
            Some((Role::Primary, e)) => Some(e),
            _ => None,
        };
        match (primary_in(0), primary_in(1)) {
            (Some(a), Some(b)) => usize::from(b > a),
            (Some(_), None) => 0,
            (None, Some(_)) => 1,
            (None, None) => match self.heard {
                [Some((Role::Standby, _)), _] => 1,
                [_, Some((Role::Standby, _))] => 0,
                _ => 0,
            },
        }
    }

    /// What the daemon at `slot` last said it was.
    pub fn role_of(&self, slot: usize) -> Option<(Role, Epoch)> {
        self.heard.get(slot).copied().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_primary_follows_the_daemons_not_the_configuration() {
        let mut h = HostRoles::new();
        assert_eq!(h.primary_slot(), 0, "configured primary until heard");
        h.heard(0, Role::Primary, Epoch(1));
        h.heard(1, Role::Standby, Epoch(1));
        assert_eq!(h.primary_slot(), 0);
        // Failover: B (slot 1) activated in epoch 2; A is dead (its last word stays).
        h.heard(1, Role::Primary, Epoch(2));
        assert_eq!(h.primary_slot(), 1, "the newer epoch's primary");
        // A rejoins as B's standby.
        h.heard(0, Role::Standby, Epoch(2));
        assert_eq!(h.primary_slot(), 1);
        // Second failover: A activated in epoch 3.
        h.heard(0, Role::Primary, Epoch(3));
        assert_eq!(h.primary_slot(), 0);
        // Only a standby heard: the primary is the other host.
        let mut h = HostRoles::new();
        h.heard(0, Role::Standby, Epoch(4));
        assert_eq!(h.primary_slot(), 1);
        let mut h = HostRoles::new();
        h.heard(1, Role::Standby, Epoch(4));
        assert_eq!(h.primary_slot(), 0);
        h.heard(7, Role::Primary, Epoch(9)); // out of range: ignored
        assert_eq!(h.primary_slot(), 0);
    }
}
