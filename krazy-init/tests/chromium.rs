//! The web interface in headless Chromium (Debian's `chromium`): overview and
//! service pages load with credentials (HTTP Basic from the URL), and a restart posted from the page's own form (token taken from Chromium's
//! DOM) changes the state that Chromium then shows. Screenshots go to
//! `target/test-artifacts/`.
//!
//! What is not done: a real mouse click. Driving a click needs the DevTools
//! protocol over a websocket; instead the test reads the form (action and CSRF
//! token) from the DOM Chromium rendered and posts exactly that form with curl,
//! as the button would. Skipped (with a message) when `chromium` is absent.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const SERVICES: &str = r#"
version = 1
[[service]]
name = "web"
path = "/bin/sleep"
args = ["1000"]

[[service]]
name = "ticker"
path = "/bin/sh"
args = ["-c", "i=0; while true; do i=$((i+1)); echo line-$i; sleep 0.2; done"]
"#;

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn chromium(profile: &Path, extra: &[&str], url: &str) -> Option<String> {
    let out = Command::new("timeout")
        .args([
            "60",
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
        ])
        .args([
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--timeout=3000", "--window-size=1000,800"])
        .args(extra)
        .arg(url)
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn token(dom: &str, action: &str) -> String {
    let at = dom
        .find(&format!("action=\"{action}\""))
        .expect("form in the DOM");
    let rest = &dom[at..];
    let v = rest.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    rest[v..v + 64].to_owned()
}

#[test]
fn chromium_shows_pages_follows_logs_and_restarts() {
    if Command::new("chromium").arg("--version").output().is_err() {
        assert!(
            std::env::var("KRAZY_CI").as_deref() != Ok("1"),
            "KRAZY_CI=1, and chromium is not installed"
        );
        eprintln!("SKIPPED: chromium is not installed (.ci/run installs it)");
        return;
    }
    let k = start(SERVICES);
    let pid = k.wait_state("web", "running")["pid"].as_u64().unwrap();
    let base = format!("http://krazy:{PASSWORD}@{}", k.addr);
    let profile = tempfile::tempdir().unwrap();
    let art = artifacts();

    let dom = chromium(profile.path(), &["--dump-dom"], &format!("{base}/")).unwrap();
    assert!(
        dom.contains("<h2>Services</h2>") && dom.contains("href=\"/services/web\""),
        "{dom}"
    );
    chromium(
        profile.path(),
        &[&format!(
            "--screenshot={}",
            art.join("krazy-init-overview.png").display()
        )],
        &format!("{base}/"),
    );
    assert!(
        art.join("krazy-init-overview.png")
            .metadata()
            .unwrap()
            .len()
            > 1000
    );

    // The service page with its log (server-rendered) and the live-log script.
    // Chromium's --dump-dom dumps at the load event, so whether the EventSource
    // delivered lines by then is a race: live following is proven with curl in
    // tests/supervise.rs, not here.
    let page = format!("{base}/services/ticker");
    let dom = chromium(profile.path(), &["--dump-dom"], &page).unwrap();
    assert!(dom.contains("line-1\n"), "{dom}");
    assert!(dom.contains("new EventSource("), "{dom}");

    // Restart from the service page's own form.
    let page = format!("{base}/services/web");
    let dom = chromium(profile.path(), &["--dump-dom"], &page).unwrap();
    assert!(dom.contains("id=\"state\" class=\"running\">running<"));
    let t = token(&dom, "/services/web/restart");
    let (code, _, _) = curl(&[
        "-u",
        &k.auth(),
        "--data",
        &format!("csrf={t}"),
        &k.url("/services/web/restart"),
    ]);
    assert_eq!(code, 303);
    k.wait("web", 20, |v| {
        v["state"] == "running" && v["pid"].as_u64() != Some(pid)
    });
    let dom = chromium(profile.path(), &["--dump-dom"], &page).unwrap();
    assert!(
        !dom.contains(&format!("<td>{pid}</td>")),
        "Chromium still shows the old pid"
    );
    assert!(dom.contains("id=\"state\" class=\"running\">running<"));
    chromium(
        profile.path(),
        &[&format!(
            "--screenshot={}",
            art.join("krazy-init-service.png").display()
        )],
        &page,
    );
    assert!(art.join("krazy-init-service.png").metadata().unwrap().len() > 1000);
}
