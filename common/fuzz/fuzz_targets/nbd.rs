//! cargo-fuzz target for the NBD server protocol core; the body lives in
//! `hsb_testkit::fuzzing` so the same code also runs as a seeded property test in `just test`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hsb_testkit::fuzzing::nbd(data);
});
