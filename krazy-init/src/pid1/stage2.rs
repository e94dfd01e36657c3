//! Stage 2.

/// Runs stage 2.
pub fn run_linux() -> anyhow::Result<()> {
    anyhow::bail!("stage 2 is not built yet")
}
