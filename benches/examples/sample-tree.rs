//! Writes the benchmark sample tree into a new directory: `sample-tree DIR`.

fn main() -> std::io::Result<()> {
    let dir = std::env::args_os().nth(1).expect("usage: sample-tree DIR");
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir)?;
    let n = krazy_benches::sample_tree::write_sample_tree(&dir)?;
    eprintln!("{}: {n} bytes of file contents", dir.display());
    Ok(())
}
