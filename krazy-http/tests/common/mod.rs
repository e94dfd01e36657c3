//! Helpers shared by krazy-http's integration tests.

/// Says loudly that a test skips for want of `why`; under `KRAZY_CI=1`
/// (which `.ci/run` sets, after installing every tool) a skip is a failure.
pub fn skip(why: &str) {
    assert!(
        std::env::var("KRAZY_CI").as_deref() != Ok("1"),
        "KRAZY_CI=1, and this test would skip: {why}"
    );
    eprintln!("SKIPPED: {why}");
}
