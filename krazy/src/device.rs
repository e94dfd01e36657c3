//! Talking to a running device: `krazy status` and `krazy logs`.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use krazy_build::config::Config;
use krazy_build::remote;
use krazy_update::client::Client;

/// A client for the instance of `config` (at `config_path`) at `host`
/// (default: its host name on the web port). HTTPS with the instance's
/// pinned certificate when TLS is on, else plain HTTP.
pub fn client(config_path: &Path, config: &Config, host: Option<&str>) -> anyhow::Result<Client> {
    let dir = config_path.parent().unwrap_or(Path::new("."));
    let host = host
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{}:{}", config.hostname, remote::web_port(config)));
    Ok(remote::client(config, &dir.join("secrets"), &host)?)
}

/// `krazy status`: the device's system endpoint.
pub fn status(client: &Client, json: bool) -> anyhow::Result<()> {
    let mut v: serde_json::Value = client
        .get_json("/api/v1/system")
        .with_context(|| format!("asking {} for its status", client.host()))?;
    // The update side's view (committed slot, last trial), when the device has one.
    if let (Ok(u), Some(obj)) = (client.status(), v.as_object_mut()) {
        obj.insert("build_id".into(), serde_json::json!(u.build_id));
        obj.insert("running_slot".into(), serde_json::json!(u.running_slot));
        obj.insert("committed_slot".into(), serde_json::json!(u.committed_slot));
        obj.insert("trial".into(), serde_json::json!(u.trial));
        obj.insert(
            "committed_version".into(),
            serde_json::json!(u.committed_version),
        );
        obj.insert(
            "last_trial".into(),
            match &u.last_trial {
                Some(t) => serde_json::json!({
                    "outcome": t.outcome,
                    "reason": t.reason,
                    "slot": t.slot,
                    "build_id": t.build_id,
                    "service": t.service,
                    "log": t.log,
                }),
                None => serde_json::Value::Null,
            },
        );
    }
    if json {
        println!("{v}");
        return Ok(());
    }
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_string();
    println!("host      {}", s("hostname"));
    println!("build     {}", s("build_id"));
    println!(
        "slot      {} (committed {})",
        s("running_slot"),
        s("committed_slot")
    );
    if let Some(t) = v["last_trial"].as_object() {
        println!(
            "trial     {} {}",
            t["outcome"].as_str().unwrap_or(""),
            t["reason"].as_str().unwrap_or("")
        );
    }
    println!("kernel    {}", s("kernel"));
    println!("uptime    {} s", v["uptime_seconds"]);
    if let Some(m) = v["memory"].as_object() {
        println!(
            "memory    {} KiB available of {} KiB",
            m["available_kib"], m["total_kib"]
        );
    }
    if let Some(a) = v["addresses"].as_array() {
        for a in a {
            println!(
                "address   {} {}/{}",
                a["interface"].as_str().unwrap_or(""),
                a["address"].as_str().unwrap_or(""),
                a["prefix"]
            );
        }
    }
    let services: serde_json::Value = client.get_json("/api/v1/services")?;
    for sv in services.as_array().into_iter().flatten() {
        println!(
            "service   {:<12} {:<8} restarts {}",
            sv["name"].as_str().unwrap_or(""),
            sv["state"].as_str().unwrap_or(""),
            sv["restarts"]
        );
    }
    Ok(())
}

/// `krazy logs`: a service's stdout and stderr, optionally following.
pub fn logs(client: &Client, service: &str, follow: bool) -> anyhow::Result<()> {
    let path = format!("/api/v1/services/{service}/log");
    if !follow {
        let text = client
            .get_text(&path)
            .with_context(|| format!("reading the log of {service}"))?;
        print!("{text}");
        return Ok(());
    }
    // Server-sent events: `event: stdout|stderr` then `data: line`.
    let mut pending = Vec::new();
    let mut out = std::io::stdout().lock();
    client
        .follow(&format!("{path}?follow=1"), |chunk| {
            pending.extend_from_slice(chunk);
            while let Some(i) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=i).collect();
                if let Some(d) = line.strip_prefix(b"data: ") {
                    if out.write_all(d).and_then(|()| out.flush()).is_err() {
                        return false;
                    }
                }
            }
            true
        })
        .with_context(|| format!("following the log of {service}"))?;
    Ok(())
}

/// `krazy update`: build, push, trial, wait for the commit.
/// `krazy update`'s signing flags.
pub struct UpdateSigning {
    /// `--version`.
    pub version: Option<u64>,
    /// `--expires`, in seconds.
    pub expires: Option<u64>,
    /// `--allow-downgrade`.
    pub allow_downgrade: bool,
}

pub fn update(
    config_path: &Path,
    host: Option<&str>,
    timeout: std::time::Duration,
    flags: &UpdateSigning,
) -> anyhow::Result<()> {
    use krazy_build::{pipeline, update};
    let config = Config::load(config_path)?;
    let client = client(config_path, &config, host)?;
    let features = client
        .features()
        .with_context(|| format!("asking {} for its update features", client.host()))?;
    let target = features.running_slot.other();
    // What the device would refuse is refused here, before the build.
    if flags.allow_downgrade && flags.expires.is_some_and(|e| e > 3600) {
        anyhow::bail!(
            "--allow-downgrade signs an update valid for at most an hour: use --expires 1h or less"
        );
    }
    if !flags.allow_downgrade && features.protocol >= 2 {
        let version = flags
            .version
            .unwrap_or_else(|| update::Signing::now().version);
        if version <= features.committed_version {
            anyhow::bail!(
                "{} has committed version {}, and this update's version {version} is not greater: \
                 the device would refuse it; pass a larger --version, or --allow-downgrade to go back on purpose",
                client.host(),
                features.committed_version,
            );
        }
    }
    let started = std::time::Instant::now();
    let mut opts = pipeline::BuildOptions::for_config(config_path);
    opts.progress = true;
    let assembled = pipeline::assemble(&config, &opts)?;
    let trees = &assembled.trees;
    if trees.build_id == features.build_id {
        println!(
            "{} already runs build {}",
            client.host(),
            &trees.build_id[..16]
        );
        return Ok(());
    }
    let dir = config_path.parent().unwrap_or(Path::new("."));
    let key = update::signing_key(&dir.join("secrets"))?;
    let mut signing = update::Signing::now();
    signing.protocol = features.protocol;
    if let Some(v) = flags.version {
        signing.version = v;
    }
    if let Some(e) = flags.expires {
        signing.valid_for = e;
    }
    if flags.allow_downgrade {
        signing = signing.downgrade(&features.build_id);
    }
    let parts = assembled.update_parts(target, &key, &signing)?;
    let style = indicatif::ProgressStyle::with_template(
        "{prefix:5} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    let mp = indicatif::MultiProgress::new();
    let bars: Vec<(krazy_update::protocol::PartKind, indicatif::ProgressBar)> = parts
        .manifest
        .parts
        .iter()
        .map(|p| {
            let b = mp.add(indicatif::ProgressBar::new(p.size));
            b.set_style(style.clone());
            b.set_prefix(format!("{:?}", p.name).to_lowercase());
            (p.name, b)
        })
        .collect();
    eprintln!(
        "krazy: updating {} from {} (slot {}) to {} in slot {}",
        client.host(),
        &features.build_id[..features.build_id.len().min(16)],
        features.running_slot,
        &trees.build_id[..16],
        target
    );
    let built = started.elapsed();
    let pushed = std::time::Instant::now();
    let bytes = (parts.root.len() + parts.boot.len()) as f64;
    let r = update::push(
        &client,
        &parts,
        &mut |p| {
            if let Some((_, b)) = bars.iter().find(|(k, _)| *k == p.part) {
                b.set_position(p.sent);
            }
        },
        // (Not MultiProgress::println: it prints nothing when stderr is
        // not a terminal.)
        &mut |note| mp.suspend(|| eprintln!("krazy: {note}; going on with this update")),
        timeout,
    );
    for (_, b) in &bars {
        b.finish();
    }
    match r {
        Ok(c) => {
            let upload = pushed.elapsed().saturating_sub(c.waited).as_secs_f64();
            println!(
                "committed build {} in slot {} after {:.0} s (built in {:.0} s, sent {:.1} MB in {:.1} s)",
                &c.features.build_id[..16],
                c.features.running_slot,
                c.waited.as_secs_f64(),
                built.as_secs_f64(),
                bytes / 1e6,
                upload
            );
            Ok(())
        }
        Err(update::UpdateError::Client(krazy_update::client::ClientError::RolledBack {
            reason,
            service,
            log,
            ..
        })) => {
            eprintln!(
                "krazy: the device rolled back: {}",
                reason.as_deref().unwrap_or("no reason given")
            );
            if let Some(s) = service {
                eprintln!("krazy: last lines of {s}:");
                for l in &log {
                    eprintln!("  {l}");
                }
            }
            anyhow::bail!("the update was rolled back; the device runs the previous build")
        }
        Err(e) => Err(e.into()),
    }
}
