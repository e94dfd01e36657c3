//! `krazy-init`: PID 1 on a krazy device, or `krazy-init supervise` on a host.
//!
//! The mode follows from how it runs: PID 1 started as `/init` (from an
//! initramfs) is stage 1, any other PID 1 is stage 2, and the `supervise`
//! subcommand is host mode.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use krazy_init::web::{self, auth::Password, PowerRequest, WebConfig};
use krazy_init::{config, Supervisor, SupervisorOptions};

#[derive(Parser)]
#[command(name = "krazy-init", about = "krazy's PID 1 and process supervisor")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the supervisor and web interface as an ordinary process.
    Supervise {
        /// The services file (services.toml, version 1).
        #[arg(long)]
        config: PathBuf,
        /// TCP address for the web interface (loopback or private only).
        #[arg(long)]
        listen: SocketAddr,
        /// A file holding the plain password of user `krazy`.
        #[arg(long)]
        password_file: PathBuf,
        /// Also serve on this Unix socket (requests there are trusted).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// PEM certificate chain: serve HTTPS (plain HTTP on the same port is redirected).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key for --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Shown as build_id.
        #[arg(long)]
        build_id: Option<String>,
        /// Web settings in the device's `/etc/krazy/web.toml` form (only the
        /// limits apply here; the port is --listen, TLS is --tls-cert).
        #[arg(long)]
        web_config: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let is_pid1 = std::process::id() == 1;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    if is_pid1 {
        let argv0 = std::env::args().next().unwrap_or_default();
        let platform = krazy_init::pid1::LinuxPlatform::default();
        let err = if argv0 == "/init" {
            krazy_init::pid1::stage1::run_linux(&platform)
        } else {
            krazy_init::pid1::stage2::run_linux(&platform)
        };
        // PID 1 exiting panics the kernel (which reboots with panic=N): say why first.
        return Err(err.into());
    }
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    match cli.cmd {
        Cmd::Supervise {
            config,
            listen,
            password_file,
            socket,
            tls_cert,
            tls_key,
            build_id,
            web_config,
        } => rt.block_on(supervise(Supervise {
            config,
            listen,
            password_file,
            socket,
            tls: tls_cert.zip(tls_key),
            build_id,
            web_config,
        })),
    }
}

/// The arguments of `krazy-init supervise`.
struct Supervise {
    config: PathBuf,
    listen: SocketAddr,
    password_file: PathBuf,
    socket: Option<PathBuf>,
    tls: Option<(PathBuf, PathBuf)>,
    build_id: Option<String>,
    web_config: Option<PathBuf>,
}

/// The shortest password a user should choose (generated ones are 24).
const MIN_PASSWORD_LEN: usize = 20;

async fn supervise(args: Supervise) -> anyhow::Result<()> {
    let Supervise {
        config,
        listen,
        password_file,
        socket,
        tls,
        build_id,
        web_config,
    } = args;
    let nofile = krazy_init::supervisor::raise_nofile_limit(None);
    let file = config::load_services(&config)?;
    let settings = match &web_config {
        Some(p) => config::load_web(p)?,
        None => config::WebSettings::default(),
    };
    let pw_text = std::fs::read_to_string(&password_file)
        .with_context(|| format!("cannot read the password file {}", password_file.display()))?;
    let password = Password::plain(&pw_text)
        .with_context(|| format!("password file {}", password_file.display()))?;
    if pw_text.trim().chars().count() < MIN_PASSWORD_LEN {
        tracing::warn!(
            "the password in {} is shorter than {MIN_PASSWORD_LEN} characters: anyone on the network can guess it sooner",
            password_file.display()
        );
    }
    // A broken certificate is treated as on a device: said loudly, and
    // authenticated requests refused rather than taken in plain text.
    let (tls, tls_error) = match tls {
        Some((c, k)) => match web::load_tls(&c, &k) {
            Ok(t) => (Some(t), None),
            Err(e) => {
                let why = web::tls_fix_hint(&e, &c, &k);
                tracing::error!("{why}");
                (None, Some(why))
            }
        },
        None => (None, None),
    };
    let sup = Supervisor::new(SupervisorOptions {
        home_base: file.home_base.clone(),
        reap_orphans: true,
        subreaper: true,
    })?;
    for s in file.services {
        sup.add(s)?;
    }
    let (power_tx, mut power_rx) = tokio::sync::mpsc::unbounded_channel();
    let web = web::Web::new(
        sup.clone(),
        WebConfig {
            password: Some(password),
            build_id,
            tls,
            tls_error,
            limits: web::limits::Limits::from(&settings).within_fd_limit(nofile),
            ..WebConfig::default()
        },
        power_tx,
    )?;
    let tcp = web::bind_tcp(listen).await?;
    let local = tcp.local_addr()?;
    tokio::spawn(web.clone().serve_tcp(tcp));
    if let Some(path) = &socket {
        let unix = web::bind_unix(path)?;
        tokio::spawn(web.clone().serve_unix(unix));
    }
    sup.boot();
    // A line tests and scripts can wait for.
    println!("krazy-init: listening on {local}");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let why = tokio::select! {
        r = power_rx.recv() => match r {
            Some(PowerRequest::Reboot) => "reboot requested (host mode: stopping the supervisor)",
            Some(PowerRequest::Poweroff) => "poweroff requested (host mode: stopping the supervisor)",
            None => "web interface gone",
        },
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!("{why}: stopping services");
    sup.shutdown().await;
    if let Some(path) = &socket {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}
