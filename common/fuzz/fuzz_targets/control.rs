//! cargo-fuzz target for the control protocol: the control server's command-line parsing and
//! the client's reading of an answer (`status --json`, the health exit code). The body lives in
//! `hsb_testkit::fuzzing::control` so the same code also runs as a seeded property test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hsb_testkit::fuzzing::control(data);
});
