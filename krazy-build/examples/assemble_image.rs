//! `assemble_image [INSTANCE] -o DIR [--runs N] [--cache-dir D] [--target-dir D]`:
//! times image assembly without cargo.
//!
//! It prepares the instance once ([`pipeline::prepare`]: kernel and
//! firmware from the cache, cargo builds, ELF checks; slow the first time,
//! cached after), then runs [`image::assemble`] + [`image::write_image`]
//! `N` times into `DIR/krazy.img`, then times each phase alone on the same
//! trees: the module scan and closure, the initramfs cpio (gzip -9), SBOM
//! hashing, the root squashfs, the ESP FAT (with and without the fixed
//! capacities' padding) and the perm ext4. Medians go to stderr; one JSON
//! object with every figure and the last image's report goes to stdout.
//! Used by benches/compare-image.sh.

use std::fs::{File, OpenOptions};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use krazy_build::config::Config;
use krazy_build::image::{self, BootTrees};
use krazy_build::kernel::{ModuleIndex, ModuleRequest};
use krazy_build::pipeline::{self, BuildOptions};
use krazy_build::sbom::Sbom;
use krazy_disk::Role;
use krazy_fs::tree::{Contents, Tree};
use krazy_fs::FileDevice;

struct Args {
    instance: PathBuf,
    out: PathBuf,
    runs: usize,
    cache_dir: Option<PathBuf>,
    target_dir: Option<PathBuf>,
}

fn args() -> anyhow::Result<Args> {
    let usage =
        "usage: assemble_image [INSTANCE_DIR] -o DIR [--runs N] [--cache-dir D] [--target-dir D]";
    let mut a = Args {
        instance: PathBuf::from("examples/pc_appliance"),
        out: PathBuf::new(),
        runs: 10,
        cache_dir: None,
        target_dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || {
            it.next()
                .with_context(|| format!("{arg} needs a value; {usage}"))
        };
        match arg.as_str() {
            "-o" => a.out = PathBuf::from(val()?),
            "--runs" => a.runs = val()?.parse().context("--runs")?,
            "--cache-dir" => a.cache_dir = Some(PathBuf::from(val()?)),
            "--target-dir" => a.target_dir = Some(PathBuf::from(val()?)),
            "-h" | "--help" => {
                println!("{usage}");
                std::process::exit(0);
            }
            s if s.starts_with('-') => bail!("unknown option {s}; {usage}"),
            s => a.instance = PathBuf::from(s),
        }
    }
    if a.out.as_os_str().is_empty() || a.runs == 0 {
        bail!("{usage}");
    }
    Ok(a)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs `f` `runs` times and returns the median seconds.
fn time(runs: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64());
    }
    Ok(median(&mut t))
}

/// A fresh sparse file of `len` bytes as a device.
fn sparse(path: &Path, len: u64) -> anyhow::Result<FileDevice> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .with_context(|| path.display().to_string())?;
    f.set_len(len)?;
    Ok(FileDevice::new(f, 0, len))
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    std::fs::create_dir_all(&a.out)?;
    let config_path = a.instance.join("krazy.toml");
    let config = Config::load(&config_path)?;
    let img = a.out.join("krazy.img");
    let mut opts = BuildOptions::for_config(&config_path);
    if let Some(d) = a.cache_dir {
        opts.cache_dir = d;
    }
    if let Some(d) = a.target_dir {
        opts.target_dir = d;
    }
    // Keep the example's source tree clean: the lock goes beside the output.
    opts.lock_path = a.out.join("krazy.lock");
    opts.progress = true;
    let s = Instant::now();
    let inputs = pipeline::prepare(&config, &opts)?;
    eprintln!(
        "prepared (kernel, firmware, cargo) in {:.1} s",
        s.elapsed().as_secs_f64()
    );
    let layout = image::layout(config.platform, opts.disk_bytes, &opts.layout)?;

    // The whole of assembly and writing, as build_config does it.
    let (mut asm, mut wr, mut total) = (Vec::new(), Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..a.runs {
        let t0 = Instant::now();
        let trees = image::assemble(&inputs, &layout)?;
        let t1 = Instant::now();
        let report = image::write_image(&trees, &img)?;
        let t2 = Instant::now();
        asm.push((t1 - t0).as_secs_f64());
        wr.push((t2 - t1).as_secs_f64());
        total.push((t2 - t0).as_secs_f64());
        last = Some((trees, report));
    }
    let Some((trees, report)) = last else {
        bail!("no runs");
    };
    let runs_total = total.clone();
    let (asm, wr, total) = (median(&mut asm), median(&mut wr), median(&mut total));
    eprintln!(
        "assemble + write_image: median {total:.3} s over {} runs (assemble {asm:.3} s, write_image {wr:.3} s)",
        a.runs
    );

    // Each phase alone, on the same inputs and trees.
    let n = a.runs;
    let m = inputs.mtime;
    // (name, median seconds, part of the sum of write_image's own work)
    let mut phases: Vec<(String, f64, bool)> = Vec::new();
    if let Some(dir) = &inputs.kernel.modules_dir {
        if config.platform != krazy_build::config::Platform::Pc {
            bail!("the phase breakdown is for pc images");
        }
        let req = ModuleRequest::pc();
        let v = &inputs.kernel.version;
        phases.push((
            "modules: scan .modinfo + closure".into(),
            time(n, || {
                let idx = ModuleIndex::scan(dir, v)?;
                idx.closure_tree(&idx.closure(&req)?, m)?;
                Ok(())
            })?,
            true,
        ));
        let idx = ModuleIndex::scan(dir, v)?;
        let mut t: Tree = idx.closure_tree(&idx.closure(&req)?, m)?;
        if let Some(init) = inputs.programs.iter().find(|p| p.dest == "krazy/init") {
            t.add_file("init", Contents::Host(init.host.clone()), 0o755, m)?;
        }
        let cpio = krazy_fs::cpio::CpioOptions {
            gzip: true,
            level: 9,
        };
        phases.push((
            "initramfs: cpio + gzip -9".into(),
            time(n, || {
                krazy_fs::cpio::write(Vec::new(), &t, &cpio)?;
                Ok(())
            })?,
            true,
        ));
    }
    let BootTrees::Pc { esp, capacities } = &trees.boot else {
        bail!("the phase breakdown is for pc images");
    };
    phases.push((
        "sbom: sha256 of root + esp".into(),
        time(n, || {
            let mut s = Sbom::new();
            s.add_tree("root", &trees.root)?;
            s.add_tree("esp", esp)?;
            Ok(())
        })?,
        true,
    ));
    let sq_opts = krazy_fs::squashfs::SquashfsOptions {
        mkfs_time: u32::try_from(m).unwrap_or(u32::MAX),
        ..Default::default()
    };
    phases.push((
        "root: squashfs gzip (into memory)".into(),
        time(n, || {
            krazy_fs::squashfs::write(&mut Cursor::new(Vec::new()), &trees.root, &sq_opts)?;
            Ok(())
        })?,
        true,
    ));
    let part = |r: Role| {
        layout
            .partition(r)
            .map(|p| p.size_bytes())
            .context("layout")
    };
    let esp_len = part(Role::Esp)?;
    let scratch = a.out.join("phase.img");
    // The ESP as write_image writes it (summed), then without the fixed
    // capacities (same files, no padding) to show what the padding costs,
    // and the fsync of each (write_image syncs once, at its end).
    for (name, caps) in [
        ("esp: fat32 with capacities (padding written)", true),
        ("esp: fat32 without capacities (not summed)", false),
    ] {
        let fo = krazy_fs::fat::FatOptions {
            label: Some("KRAZY-ESP".into()),
            timestamp: Some(m),
            capacities: if caps {
                capacities.clone()
            } else {
                Default::default()
            },
            ..Default::default()
        };
        let (mut write, mut sync) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let mut dev = sparse(&scratch, esp_len)?;
            let s = Instant::now();
            krazy_fs::fat::write(&mut dev, esp, &fo)?;
            write.push(s.elapsed().as_secs_f64());
            let s = Instant::now();
            File::open(&scratch)?.sync_all()?;
            sync.push(s.elapsed().as_secs_f64());
        }
        let on_disk = std::fs::metadata(&scratch).map(|md| {
            use std::os::unix::fs::MetadataExt;
            md.blocks() * 512
        })?;
        phases.push((name.into(), median(&mut write), caps));
        phases.push((
            format!("  its fsync ({} MiB allocated; not summed)", on_disk >> 20),
            median(&mut sync),
            false,
        ));
    }
    let perm_len = part(Role::Perm)?;
    phases.push((
        "perm: ext4 format".into(),
        time(n, || {
            let mut dev = sparse(&scratch, perm_len)?;
            krazy_fs::ext4::format(
                &mut dev,
                &krazy_fs::ext4::Ext4Options::new([1; 16], m).label("perm"),
            )?;
            Ok(())
        })?,
        true,
    ));
    std::fs::remove_file(&scratch).ok();
    let sum: f64 = phases.iter().filter(|p| p.2).map(|p| p.1).sum();
    eprintln!("phases (median of {n} each, run alone):");
    for (name, t, _) in &phases {
        eprintln!("  {t:>8.3} s  {name}");
    }
    eprintln!(
        "  {:>8.3} s  the rest of assemble + write_image (trees, GPT, two root copies, one fsync)",
        total - sum
    );

    let json = serde_json::json!({
        "runs": runs_total,
        "median_s": total,
        "assemble_median_s": asm,
        "write_image_median_s": wr,
        "phases": phases.iter().map(|(k, v, summed)| serde_json::json!({"phase": k.trim(), "median_s": v, "summed": summed})).collect::<Vec<_>>(),
        "image": img,
        "report": report,
        "esp_capacities": capacities.iter().map(|(k, c)| (k.clone(), c.bytes)).collect::<std::collections::BTreeMap<_, _>>(),
    });
    println!("{json}");
    Ok(())
}
