//! cargo-fuzz target for the page decoders and the page encoder's round trip; the body lives in
//! `hsb_testkit::fuzzing` so the same code also runs as a seeded property test in `just test`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hsb_testkit::fuzzing::page_codec(data);
});
