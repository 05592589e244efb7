//! What the unit tests of several modules share.

use std::path::PathBuf;

/// An empty directory of this test run's own; `name` keeps tests that run
/// at the same time apart, so it is unique in the crate.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("auditor-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The bounded proptest pass that runs with the unit tests: enough cases
/// to find a panic in a parser, none remembered between runs.
pub fn fuzz_config() -> proptest::prelude::ProptestConfig {
    proptest::prelude::ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..Default::default()
    }
}
