//! Writes a directory as a cpio newc archive (an initramfs):
//! `mkcpio SRC_DIR OUT [--gzip] [--level N] [--all-root]`.
//!
//! Owners and modes come from the source tree (`--all-root` forces 0:0);
//! times come from `SOURCE_DATE_EPOCH` when it is set.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use krazy_fs::cpio::{self, CpioOptions};
use krazy_fs::{FromDirOptions, Tree};

#[derive(Parser)]
#[command(about = "Write a directory as a cpio newc archive")]
struct Args {
    /// The directory to pack.
    src: PathBuf,
    /// The archive to write (replaced if it exists).
    out: PathBuf,
    /// Compress with gzip.
    #[arg(long)]
    gzip: bool,
    /// gzip level, 0 to 9.
    #[arg(long, default_value_t = 9)]
    level: u32,
    /// Make every entry owned by uid 0, gid 0.
    #[arg(long)]
    all_root: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tree = Tree::from_dir(&args.src, &FromDirOptions::from_env(args.all_root))
        .with_context(|| format!("reading {}", args.src.display()))?;
    let out = std::io::BufWriter::new(
        std::fs::File::create(&args.out)
            .with_context(|| format!("creating {}", args.out.display()))?,
    );
    let opts = CpioOptions {
        gzip: args.gzip,
        level: args.level,
    };
    let s = cpio::write(out, &tree, &opts)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "{}: {} entries, {} bytes of archive",
        args.out.display(),
        s.entries,
        s.archive_len
    );
    Ok(())
}
