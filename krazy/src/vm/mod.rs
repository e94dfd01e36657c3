//! `krazy vm run`: build the pc image and boot it in QEMU (signals and
//! cleanup in `signals.rs`).

mod signals;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use krazy_build::config::Config;
use krazy_build::pipeline;
use krazy_build::remote;
use krazy_build::vm::{self, Accel, HostForward, Vm, VmOptions};

use crate::Instance;

/// Arguments of `krazy vm run`.
#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    instance: Instance,
    /// Forward 127.0.0.1:HOST_PORT to the guest's GUEST_PORT (repeatable).
    #[arg(long = "forward", value_name = "HOST_PORT:GUEST_PORT", value_parser = parse_forward)]
    forwards: Vec<(u16, u16)>,
    /// Let the guest reach the host's 127.0.0.1:HOST_PORT by connecting to
    /// GUEST_ADDR:GUEST_PORT, an address in QEMU's user network 10.0.2.0/24
    /// such as 10.0.2.100 (repeatable). The service must already listen:
    /// QEMU connects once at start and carries the guest's connections over
    /// that one stream. Everything else stays unreachable from the guest.
    #[arg(long = "host-forward", value_name = "GUEST_ADDR:GUEST_PORT=HOST_PORT", value_parser = parse_host_forward)]
    host_forwards: Vec<HostForward>,
    /// Wait until every boot service runs, print one JSON line, power off, exit.
    #[arg(long)]
    smoke: bool,
    /// Also write the serial console to this file.
    #[arg(long, value_name = "FILE")]
    serial_log: Option<PathBuf>,
    /// The accelerator: tcg (default; works everywhere) or kvm.
    #[arg(long, default_value = "tcg")]
    accel: Accel,
    /// The image file (default: target/vm.img in the instance directory).
    #[arg(long, value_name = "IMAGE")]
    image: Option<PathBuf>,
    /// How long --smoke waits for the boot, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Memory of the VM in MiB.
    #[arg(long, default_value_t = 256)]
    memory: u32,
}

fn parse_forward(s: &str) -> Result<(u16, u16), String> {
    let (h, g) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not HOST_PORT:GUEST_PORT, e.g. 8080:8080"))?;
    let p = |x: &str| {
        x.parse::<u16>()
            .ok()
            .filter(|&n| n != 0)
            .ok_or_else(|| format!("{x:?} is not a port number (1-65535)"))
    };
    Ok((p(h)?, p(g)?))
}

fn parse_host_forward(s: &str) -> Result<HostForward, String> {
    s.parse::<HostForward>().map_err(|e| e.to_string())
}

/// Runs `krazy vm run`.
pub fn run(a: &RunArgs) -> anyhow::Result<()> {
    let path = a.instance.path()?;
    let config = Config::load(&path)?;
    if let Err(why) = krazy_build::board::for_platform(config.platform).qemu() {
        bail!(
            "`krazy vm run` cannot boot {}, which is for {}: {why}",
            path.display(),
            config.platform
        );
    }
    // Fail before a long build when QEMU or OVMF is missing.
    let tools = vm::discover()?;
    let accel = vm::pick_accel(Some(a.accel))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let image = match &a.image {
        Some(i) => i.clone(),
        None => {
            let d = dir.join("target");
            std::fs::create_dir_all(&d)
                .with_context(|| format!("cannot create {}", d.display()))?;
            d.join("vm.img")
        }
    };
    let mut opts = pipeline::BuildOptions::for_config(&path);
    opts.progress = true;
    let report = pipeline::build_image(&path, &opts, &image)
        .with_context(|| format!("building {}", path.display()))?;
    let http = vm::free_port()?;
    let https = vm::free_port()?;
    let mut vo = VmOptions::new(&image)
        .with_tools(tools)
        .with_accel(accel)
        .with_memory_mib(a.memory)
        .with_watchdog(true)
        .with_forward(http, config.web.http_port)
        .with_forward(https, config.web.https_port)
        .with_foreground(!a.smoke)
        .with_own_process_group(true);
    for (h, g) in &a.forwards {
        vo = vo.with_forward(*h, *g);
    }
    for f in &a.host_forwards {
        vo = vo.with_host_forward(f.guest_addr, f.guest_port, f.host_port);
    }
    if let Some(l) = &a.serial_log {
        vo = vo.with_serial_log(l);
    }
    // Ctrl-C powers off (interactive) or stops (--smoke); SIGTERM and
    // SIGHUP stop QEMU and clean up.
    signals::install(a.smoke)?;
    let started = Arc::new(Vm::start(vo)?);
    signals::register(&started);
    let vmh: &Vm = &started;
    let port = if config.web.tls { https } else { http };
    let scheme = if config.web.tls { "https" } else { "http" };
    let password = std::fs::read_to_string(dir.join("secrets/password")).unwrap_or_default();
    eprintln!(
        "krazy: booting {} (build {}) under {}",
        image.display(),
        &report.build_id[..16],
        accel.name()
    );
    eprintln!(
        "krazy: web interface {scheme}://127.0.0.1:{port}/  user krazy  password {}",
        password.trim()
    );
    if config.web.tls {
        eprintln!(
            "krazy: the certificate is self-signed: {}/secrets/tls-cert.pem",
            dir.display()
        );
    }
    for (h, g) in &a.forwards {
        eprintln!("krazy: 127.0.0.1:{h} -> guest port {g}");
    }
    for f in &a.host_forwards {
        eprintln!(
            "krazy: guest {}:{} -> host 127.0.0.1:{}",
            f.guest_addr, f.guest_port, f.host_port
        );
    }
    if a.smoke {
        return smoke(vmh, &config, dir, port, a.timeout, &report.build_id);
    }
    eprintln!("krazy: Ctrl-C powers the VM off");
    let mut asked = false;
    loop {
        if let Some(st) = vmh.exit_status()? {
            eprintln!("krazy: QEMU exited ({st})");
            return Ok(());
        }
        if signals::take_interrupt() {
            if asked {
                eprintln!("krazy: stopping QEMU");
                vmh.quit()?;
                return Ok(());
            }
            eprintln!("krazy: powering off (Ctrl-C again to stop QEMU at once)");
            // Through the API first (orderly: services stopped, /perm
            // unmounted), then ACPI.
            let _ = remote::client(&config, &dir.join("secrets"), &format!("127.0.0.1:{port}"))
                .and_then(|c| {
                    Ok(c.post_json::<serde_json::Value>(
                        "/api/v1/poweroff",
                        &serde_json::json!({}),
                    )?)
                });
            let _ = vmh.powerdown();
            asked = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn smoke(
    vm: &Vm,
    config: &Config,
    dir: &Path,
    port: u16,
    timeout: u64,
    build_id: &str,
) -> anyhow::Result<()> {
    let fail = |what: String| -> anyhow::Error {
        anyhow::anyhow!(
            "{what}\n--- serial console (last 40 lines) ---\n{}",
            vm.serial_tail(40)
        )
    };
    let client = remote::client(config, &dir.join("secrets"), &format!("127.0.0.1:{port}"))?;
    let services = remote::wait_boot_services(&client, config, Duration::from_secs(timeout))
        .map_err(|e| fail(e.to_string()))?;
    let boot_seconds = vm.elapsed().as_secs_f64();
    let line = serde_json::json!({
        "boot_seconds": (boot_seconds * 10.0).round() / 10.0,
        "build_id": build_id,
        "services": services,
    });
    println!("{line}");
    client
        .post_json::<serde_json::Value>("/api/v1/poweroff", &serde_json::json!({}))
        .map_err(|e| fail(format!("powering off through the API: {e}")))?;
    let st = vm
        .wait_exit(Duration::from_secs(60))
        .map_err(|e| fail(format!("QEMU did not exit after the poweroff: {e}")))?;
    if !st.success() {
        return Err(fail(format!("QEMU exited with {st}")));
    }
    Ok(())
}
