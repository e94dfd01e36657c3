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
    let v: serde_json::Value = client
        .get_json("/api/v1/system")
        .with_context(|| format!("asking {} for its status", client.host()))?;
    if json {
        println!("{v}");
        return Ok(());
    }
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_string();
    println!("host      {}", s("hostname"));
    println!("build     {}", s("build_id"));
    println!("slot      {}", s("running_slot"));
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
