//! What the device reads from the root: the kernel command line and the
//! `/etc/krazy/*.toml` tables, written with krazy-init's own structs.

use krazy_disk::Guid;
use krazy_init::config::{HealthCheck, ServiceEntry, ServicesToml, UpdateFile};

use crate::config::{Config, Health, Restart, Start};

/// The kernel command line of `slot` (`a` or `b`) for a root and perm partition.
pub fn kernel_cmdline(config: &Config, root: Guid, perm: Guid, slot: char) -> String {
    let mut args = vec![
        format!("root=PARTUUID={root}"),
        format!("krazy.perm=PARTUUID={perm}"),
        format!("krazy.slot={slot}"),
    ];
    args.push("console=tty1".into());
    args.push(format!("console={}", config.serial_console()));
    // No `rootwait`: stage 1 waits for the root itself, and a kernel that
    // cannot reach stage 1 must panic (and so reset, ending a trial boot)
    // rather than wait forever.
    args.push("panic=10".into());
    args.extend(config.kernel_args.iter().cloned());
    args.join(" ")
}

/// The `services.toml` table for `config`: `dhcp` and `ntp` (always
/// restarted), then each package as `/user/<name>`.
pub fn services_table(config: &Config) -> ServicesToml {
    let system = |name: &str| ServiceEntry {
        name: Some(name.into()),
        path: format!("/krazy/{name}"),
        restart: Restart::Always,
        start: Start::Boot,
        ..ServiceEntry::default()
    };
    let mut service = vec![system("dhcp"), system("ntp")];
    for p in &config.package {
        service.push(ServiceEntry {
            name: Some(p.name.clone()),
            path: format!("/user/{}", p.name),
            args: p.args.clone(),
            env: p.env.clone(),
            restart: p.restart,
            start: p.start,
            wait_for: p.wait_for.clone(),
            ..ServiceEntry::default()
        });
    }
    ServicesToml {
        version: ServicesToml::VERSION,
        home_base: None,
        service,
    }
}

/// `/etc/krazy/services.toml` for `config` ([`services_table`]).
pub fn services_toml(config: &Config) -> String {
    // Plain strings, enums and maps: serializing cannot fail.
    let body = toml::to_string(&services_table(config)).unwrap_or_default();
    format!("# Written by krazy-build from krazy.toml; read by krazy-init (services.toml version 1).\n{body}")
}

/// `/etc/krazy/web.toml`: the instance's `[web]` table, field for field.
pub fn web_toml(config: &Config) -> String {
    toml::to_string(&config.web).unwrap_or_default()
}

/// The `update.toml` table for `config`: `[update]` and each package's health check.
pub fn update_table(config: &Config) -> UpdateFile {
    let health = config
        .package
        .iter()
        .filter_map(|p| {
            p.health.as_ref().map(|h| match h {
                Health::Http(u) => HealthCheck {
                    service: p.name.clone(),
                    http: Some(u.clone()),
                    command: None,
                },
                Health::Command(c) => HealthCheck {
                    service: p.name.clone(),
                    http: None,
                    command: Some(c.clone()),
                },
            })
        })
        .collect();
    UpdateFile {
        settle_seconds: config.update.settle_seconds.into(),
        deadline_seconds: Some(config.update.deadline_seconds.into()),
        fail_after_restarts: config.update.fail_after_restarts.into(),
        health,
    }
}

/// `/etc/krazy/update.toml` for `config` ([`update_table`]).
pub fn update_toml(config: &Config) -> String {
    toml::to_string(&update_table(config)).unwrap_or_default()
}
