//! Embeds krazy's supervisor: two commands, and the web interface on a port.
//!
//! `cargo run -p krazy-init --example embed_supervisor -- 127.0.0.1:8080 PASSWORD`

use krazy_init::web::{auth::Password, bind_tcp, Web, WebConfig};
use krazy_init::{Restart, ServiceConfig, Supervisor, SupervisorOptions};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:8080".into())
        .parse()?;
    let password = args.next().unwrap_or_else(|| "change-me-please".into());

    let sup = Supervisor::new(SupervisorOptions::default())?;
    sup.add(
        ServiceConfig::new("/bin/sh")
            .name("ticker")
            .args(["-c", "while true; do date; sleep 1; done"]),
    )?;
    sup.add(
        ServiceConfig::new("/bin/sleep")
            .arg("3600")
            .restart(Restart::Always),
    )?;
    sup.boot();

    let (power_tx, mut power_rx) = tokio::sync::mpsc::unbounded_channel();
    let config = WebConfig {
        password: Some(Password::plain(&password)?),
        ..WebConfig::default()
    };
    let web = Web::new(sup.clone(), config, power_tx)?;
    tokio::spawn(web.serve_tcp(bind_tcp(listen).await?));
    println!("http://krazy:{password}@{listen}/");

    power_rx.recv().await; // POST /api/v1/reboot or /poweroff ends the example
    sup.shutdown().await;
    Ok(())
}
