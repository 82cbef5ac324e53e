//! A fixed table of non-blocking connections, each with a deadline, as the control socket
//! ([`crate::ctl::CtlServer`]) and the metrics responder ([`crate::kit::http::MetricsServer`])
//! keep it: the earliest deadline, and closing the connections past theirs.

use mio::event::Source;
use mio::Registry;

use crate::time::Nanos;

/// A connection in a slot of the table.
pub(crate) trait Slot {
    /// Its socket, registered with the daemon's mio loop.
    type Stream: Source;
    /// When it is closed unless it has made progress.
    fn deadline(&self) -> Nanos;
    /// Its socket, to deregister.
    fn stream(&mut self) -> &mut Self::Stream;
}

/// The earliest deadline of a connection in `slots`.
pub(crate) fn next_deadline<C: Slot>(slots: &[Option<C>]) -> Option<Nanos> {
    slots.iter().flatten().map(Slot::deadline).min()
}

/// Close the connection in slot `i`, if any: deregistered and dropped.
pub(crate) fn close<C: Slot>(registry: &Registry, slots: &mut [Option<C>], i: usize) {
    if let Some(mut c) = slots.get_mut(i).and_then(Option::take) {
        let _ = registry.deregister(c.stream());
    }
}

/// Close the connections whose deadline has passed at `now`; how many.
pub(crate) fn close_expired<C: Slot>(
    registry: &Registry,
    slots: &mut [Option<C>],
    now: Nanos,
) -> u64 {
    let mut closed = 0;
    for i in 0..slots.len() {
        if slots[i].as_ref().is_some_and(|c| c.deadline() <= now) {
            close(registry, slots, i);
            closed += 1;
        }
    }
    closed
}
