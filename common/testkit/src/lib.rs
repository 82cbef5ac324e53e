//! hsb-testkit: test machinery kept out of the shipped libraries.
//!
//! - [`fuzzing`]: hostile-input paths as functions of arbitrary bytes, shared by the cargo-fuzz
//!   targets (`common/fuzz`) and seeded property tests.
//! - [`casefile`]: the decision core's data-driven fault cases (`common/testdata/decision/`).

pub mod casefile;
pub mod fuzzing;
