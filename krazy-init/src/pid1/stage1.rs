//! Stage 1.

/// Runs stage 1.
pub fn run_linux() -> anyhow::Result<()> {
    anyhow::bail!("stage 1 is not built yet")
}
