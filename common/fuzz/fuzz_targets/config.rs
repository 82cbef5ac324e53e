//! cargo-fuzz target for the configuration loader: bytes up to the first 0 are a configuration
//! file, the 0-separated rest `--set` overrides. The body lives in `hsb_testkit::fuzzing` so the
//! same code also runs as a seeded property test in `just test`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hsb_testkit::fuzzing::config(data);
});
