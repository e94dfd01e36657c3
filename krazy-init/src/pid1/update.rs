//! The device's update side at boot: opening krazy-update's [`Device`] over
//! this disk's partitions, and the health driver that commits a healthy
//! trial boot or rolls an unhealthy one back.
//!
//! Partitions are found from the root's PARTUUID on the kernel command line:
//! its disk's GPT names the others (`esp`, `root-a`, `root-b` on pc;
//! `autoboot`, `boot-a`, `boot-b`, `root-a`, `root-b` on pi3).

use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use krazy_fs::FileDevice;
use krazy_update::bootfiles::FatBootFiles;
use krazy_update::bootflow::{BootFlow, PiSoftwareOneShot, SystemdBoot};
use krazy_update::device::{BootStorage, Device, DeviceConfig, Storage};
use krazy_update::efivars::EfiVars;
use krazy_update::health::{Decision, HealthConfig, HealthGate, ServiceState};
use krazy_update::protocol::{Arch, Platform, PublicKey, Slot};

use crate::policy::State;
use crate::supervisor::{LastExit, Supervisor};

/// The update settings in the root image (`/etc/krazy/update.toml`).
pub const UPDATE_TOML: &str = "/etc/krazy/update.toml";
/// The update public key in the root image.
pub const UPDATE_PUB: &str = "/etc/krazy/update.pub";
/// The root's version floor (its build epoch) in the root image.
pub const MIN_VERSION: &str = "/etc/krazy/min-version";

pub use crate::config::{HealthCheck, UpdateFile};

impl HealthCheck {
    /// Runs the check once (blocking, at most a few seconds).
    pub fn run(&self) -> Result<(), String> {
        if let Some(url) = &self.http {
            return http_get(url);
        }
        if let Some(cmd) = &self.command {
            let Some((prog, args)) = cmd.split_first() else {
                return Err("empty command".into());
            };
            return match std::process::Command::new(prog)
                .args(args)
                .stdin(std::process::Stdio::null())
                .output()
            {
                Ok(o) if o.status.success() => Ok(()),
                Ok(o) => Err(format!(
                    "`{}` {}: {}",
                    cmd.join(" "),
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                )),
                Err(e) => Err(format!("cannot run {prog}: {e}")),
            };
        }
        Err("a check needs `http` or `command`".into())
    }
}

/// A GET of a plain `http://host:port/path` URL that must answer 2xx.
fn http_get(url: &str) -> Result<(), String> {
    use std::io::{Read, Write};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are checked"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let hostport = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&hostport)
        .map_err(|e| format!("{url}: {e}"))?
        .next()
        .ok_or_else(|| format!("{url}: no address"))?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map_err(|e| format!("{url}: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\nUser-Agent: krazy-health\r\n\r\n"
    )
    .map_err(|e| format!("{url}: {e}"))?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).map_err(|e| format!("{url}: {e}"))?;
    let code = std::str::from_utf8(&head[9..12]).unwrap_or("");
    if code.starts_with('2') {
        Ok(())
    } else {
        Err(format!("{url} answered {code}"))
    }
}

/// Reads `/etc/krazy/update.toml`: the defaults when it is missing (an
/// image from before it existed); when it cannot be read or parsed, the
/// error is logged loudly and the defaults (no health checks) are used.
pub fn load_update_file(path: &Path) -> UpdateFile {
    crate::config::load_update(path).unwrap_or_else(|e| {
        tracing::error!(
            "{}: {e}; the trial boot is judged with the default update settings and no health checks",
            path.display()
        );
        UpdateFile::default()
    })
}

fn err(what: &str) -> impl FnOnce(std::io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Opens the update service for the disk holding the root partition
/// `root_partuuid`, booted from `running`.
pub fn open_device(
    sys_block: &Path,
    dev: &Path,
    root_partuuid: &str,
    running: Slot,
    build_id: &str,
    state_dir: PathBuf,
) -> Result<Device, String> {
    let guid: krazy_disk::Guid = root_partuuid
        .parse()
        .map_err(|e| format!("root PARTUUID {root_partuuid:?}: {e}"))?;
    let found = krazy_disk::find_by_partuuid(sys_block, dev, guid)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no partition has PARTUUID {root_partuuid}"))?;
    let disk_path = found.disk.clone();
    let mut disk = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&disk_path)
        .map_err(err("opening the disk"))?;
    let size = disk
        .seek(SeekFrom::End(0))
        .map_err(err("sizing the disk"))?;
    let gpt = krazy_disk::read_gpt(&mut disk, size).map_err(|e| e.to_string())?;
    let part = |name: &str| -> Result<FileDevice, String> {
        let p = gpt
            .partitions
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| format!("{} has no partition named {name}", disk_path.display()))?;
        let f = disk.try_clone().map_err(err("opening the disk"))?;
        Ok(FileDevice::new(f, p.first_lba * 512, p.sectors() * 512))
    };
    let public_key = std::fs::read_to_string(UPDATE_PUB)
        .map_err(err(UPDATE_PUB))
        .and_then(|t| PublicKey::from_text(&t).map_err(|e| format!("{UPDATE_PUB}: {e}")))?;
    let is_pc = gpt.partitions.iter().any(|p| p.name == "esp");
    let fat = |name: &str| -> Result<FatBootFiles<FileDevice>, String> {
        FatBootFiles::open(part(name)?).map_err(|e| format!("the {name} partition: {e}"))
    };
    let (platform, arch, boot, flow): (_, _, _, Box<dyn BootFlow + Send>) = if is_pc {
        let flow = SystemdBoot::new(
            Box::new(fat("esp")?),
            EfiVars::new("/sys/firmware/efi/efivars"),
        );
        (
            Platform::Pc,
            Arch::X86_64,
            BootStorage::Esp(Box::new(fat("esp")?)),
            Box::new(flow),
        )
    } else {
        (
            Platform::Pi3,
            Arch::Aarch64,
            BootStorage::Partitions {
                a: Box::new(part("boot-a")?),
                b: Box::new(part("boot-b")?),
            },
            Box::new(PiSoftwareOneShot::new(Box::new(fat("autoboot")?))),
        )
    };
    let storage = Storage {
        root_a: Box::new(part("root-a")?),
        root_b: Box::new(part("root-b")?),
        boot,
    };
    // Without a floor a lost update state would take any old build; a
    // root built before the floor existed gives 1 (every signed version
    // is a Unix time or set by hand, so greater).
    let min_version = std::fs::read_to_string(MIN_VERSION)
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .unwrap_or(1)
        .max(1);
    let cfg = DeviceConfig {
        arch,
        platform,
        build_id: build_id.to_string(),
        running,
        public_key,
        state_dir,
        min_version,
    };
    Device::open(cfg, storage, flow).map_err(|e| e.to_string())
}

fn exit_text(e: &LastExit) -> String {
    match (e.code, e.signal) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "ended".into(),
    }
}

/// What the health driver does when it has decided.
pub enum Verdict {
    /// The trial was committed.
    Committed,
    /// The trial was rolled back: reboot into the committed slot.
    RolledBack(String),
}

/// Drives the health gate of a trial boot: feeds it the supervisor's view
/// every second and runs the checks, until it commits (through `device`) or
/// rolls back (records the reason; the caller reboots).
pub async fn drive_health(
    sup: Supervisor,
    device: Arc<Mutex<Device>>,
    file: UpdateFile,
    boot_services: Vec<String>,
) -> Verdict {
    let settle = Duration::from_secs(file.settle_seconds);
    let deadline = Duration::from_secs(
        file.deadline_seconds
            .unwrap_or(file.settle_seconds + 150)
            .max(file.settle_seconds + 10),
    );
    let checks: Vec<HealthCheck> = file.health.clone();
    let mut gate = HealthGate::new(
        HealthConfig {
            settle,
            deadline,
            fail_after_restarts: file.fail_after_restarts,
        },
        boot_services.clone(),
        checks.iter().map(HealthCheck::name),
    );
    let t0 = Instant::now();
    tracing::info!(
        "trial boot: committing once every boot service has run for {} s and {} checks pass; \
         rolling back after {} s, or at once when a boot service restarts {} times",
        settle.as_secs(),
        checks.len(),
        deadline.as_secs(),
        file.fail_after_restarts
    );
    loop {
        let now = t0.elapsed();
        for name in &boot_services {
            let Some(st) = sup.status(name) else { continue };
            let state = match st.state {
                State::Running => ServiceState::Running {
                    since: now.saturating_sub(Duration::from_secs(st.uptime_seconds.unwrap_or(0))),
                },
                State::Starting => ServiceState::Waiting,
                State::Stopped => ServiceState::Waiting,
                State::Exited => match &st.last_exit {
                    Some(e) if e.code == Some(0) || e.code == Some(125) => ServiceState::Done,
                    Some(e) => ServiceState::Down { why: exit_text(e) },
                    None => ServiceState::Done,
                },
                State::Backoff => ServiceState::Down {
                    why: st
                        .last_exit
                        .as_ref()
                        .map(exit_text)
                        .unwrap_or_else(|| "restarting".into()),
                },
            };
            let log = sup
                .logs(name)
                .map(|l| {
                    let mut lines: Vec<String> = l
                        .stdout
                        .snapshot()
                        .into_iter()
                        .chain(l.stderr.snapshot())
                        .map(|x| x.text.to_string())
                        .collect();
                    let n = lines.len();
                    lines.drain(..n.saturating_sub(20));
                    lines
                })
                .unwrap_or_default();
            gate.service(name, state, log);
            gate.restarts(name, st.restarts);
        }
        for c in &checks {
            let c2 = c.clone();
            let r = tokio::task::spawn_blocking(move || c2.run())
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
            gate.check(&c.name(), now, r);
        }
        match gate.decide(t0.elapsed()) {
            Decision::Commit => {
                let r = device
                    .lock()
                    .map_err(|_| "poisoned".to_string())
                    .and_then(|mut d| d.commit().map_err(|e| e.to_string()));
                match r {
                    Ok(()) => {
                        tracing::info!("trial boot healthy: committed");
                        return Verdict::Committed;
                    }
                    Err(e) => {
                        tracing::error!("cannot commit the trial: {e}");
                        return Verdict::RolledBack(format!("cannot commit: {e}"));
                    }
                }
            }
            Decision::RollBack {
                reason,
                service,
                log,
            } => {
                tracing::error!("trial boot unhealthy: {reason}; rolling back");
                if let Ok(mut d) = device.lock() {
                    if let Err(e) = d.roll_back(&reason, service.as_deref(), &log) {
                        tracing::error!("cannot record the rollback: {e}");
                    }
                }
                return Verdict::RolledBack(reason);
            }
            Decision::Wait { .. } => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}
