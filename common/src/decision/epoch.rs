//! Activation epochs (DESIGN.md rule 8).
//!
//! Every activation of a replica starts a new epoch; every message carries its sender's epoch. A
//! lower epoch is rejected, and a daemon that learns of a higher one steps down and asks for a full
//! synchronisation.

use core::fmt;

use serde::{Deserialize, Serialize};

/// An activation epoch. The first primary runs in epoch 1.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Epoch(pub u64);

impl Epoch {
    /// The epoch of the first primary.
    pub const FIRST: Epoch = Epoch(1);

    /// The epoch an activation from this one starts (saturating).
    pub fn next(self) -> Epoch {
        Epoch(self.0.saturating_add(1))
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How a received epoch compares with mine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochOrder {
    /// Lower than mine: reject the message.
    Stale,
    /// Equal: process it.
    Current,
    /// Higher: I am outdated; step down.
    Newer,
}

/// Compare a received epoch with mine.
pub fn compare(mine: Epoch, theirs: Epoch) -> EpochOrder {
    match theirs.cmp(&mine) {
        core::cmp::Ordering::Less => EpochOrder::Stale,
        core::cmp::Ordering::Equal => EpochOrder::Current,
        core::cmp::Ordering::Greater => EpochOrder::Newer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order() {
        assert_eq!(compare(Epoch(2), Epoch(1)), EpochOrder::Stale);
        assert_eq!(compare(Epoch(2), Epoch(2)), EpochOrder::Current);
        assert_eq!(compare(Epoch(2), Epoch(3)), EpochOrder::Newer);
        assert_eq!(Epoch(u64::MAX).next(), Epoch(u64::MAX));
    }
}
