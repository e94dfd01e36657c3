//! `debx PACKAGE.deb DIR`: unpacks a Debian package's data files into DIR
//! with krazy-build's pure-Rust reader (like `dpkg-deb -x`), and prints the
//! time taken. Used by benches/compare-deb.sh.

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, deb, dir] = args.as_slice() else {
        anyhow::bail!("usage: debx PACKAGE.deb DIR");
    };
    let t = std::time::Instant::now();
    let got = krazy_build::deb::extract_to_dir(deb.as_ref(), dir.as_ref(), |_| true)?;
    eprintln!(
        "{} files in {:.2} s",
        got.files.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
