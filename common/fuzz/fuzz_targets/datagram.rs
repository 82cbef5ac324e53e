//! cargo-fuzz target for the datagram layer's receiver: frame header, MAC, envelope,
//! destination, incarnation order, replay windows and the message decoder. The body lives in
//! `hsb_testkit::fuzzing::datagram` so the same code also runs as a seeded property test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hsb_testkit::fuzzing::datagram(data);
});
