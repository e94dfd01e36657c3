//! The web interface of `krazy-init supervise`: auth, content types, CSRF, HTML, TLS.

mod common;

use common::*;

const SERVICES: &str = r#"
version = 1
[[service]]
name = "svc"
path = "/bin/sleep"
args = ["1000"]
"#;

const GETS: &[&str] = &[
    "/",
    "/services/svc",
    "/api/v1/system",
    "/api/v1/services",
    "/api/v1/services/svc",
    "/api/v1/services/svc/log?stream=both",
    "/api/v1/services/svc/log?stream=stdout&follow=1",
    "/nonexistent",
];

const POSTS: &[&str] = &[
    "/services/svc/start",
    "/services/svc/stop",
    "/services/svc/restart",
    "/reboot",
    "/poweroff",
    "/api/v1/services/svc/start",
    "/api/v1/services/svc/stop",
    "/api/v1/services/svc/restart",
    "/api/v1/reboot",
    "/api/v1/poweroff",
    "/api/v1/notify/network",
    "/api/v1/notify/clock",
];

#[test]
fn every_endpoint_needs_the_password() {
    let k = start(SERVICES);
    let wrong = "krazy:not-the-password";
    let wrong_user = format!("root:{PASSWORD}");
    // Wrong credentials come from 127.0.0.2: once more than ten pile up,
    // that address gets 429 (with Retry-After), and 127.0.0.1 is unaffected.
    let mut failed = 0;
    let mut refused = |code: u16, headers: &str, what: &str| {
        if code == 429 {
            assert!(
                failed >= 10,
                "{what}: 429 after only {failed} failed logins"
            );
            assert!(
                headers.to_ascii_lowercase().contains("retry-after: "),
                "{headers}"
            );
        } else {
            assert_eq!(code, 401, "{what}");
            failed += 1;
        }
        code == 401
    };
    for path in GETS {
        for creds in [None, Some(wrong), Some(wrong_user.as_str())] {
            let mut args = vec!["--max-time", "5"];
            if let Some(c) = creds {
                args.extend(["-u", c, "--interface", "127.0.0.2"]);
            }
            let url = k.url(path);
            args.push(&url);
            let (code, headers, _) = curl(&args);
            let what = format!("GET {path} with {creds:?}");
            if creds.is_none() {
                assert_eq!(code, 401, "{what}");
            } else if !refused(code, &headers, &what) {
                continue;
            }
            assert!(
                headers
                    .to_ascii_lowercase()
                    .contains("www-authenticate: basic realm=\"krazy\""),
                "{headers}"
            );
        }
    }
    for path in POSTS {
        for creds in [None, Some(wrong)] {
            let url = k.url(path);
            let mut args = vec![
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "--data",
                "{}",
            ];
            if let Some(c) = creds {
                args.extend(["-u", c, "--interface", "127.0.0.2"]);
            }
            args.push(&url);
            let (code, headers, _) = curl(&args);
            let what = format!("POST {path} with {creds:?}");
            if creds.is_none() {
                assert_eq!(code, 401, "{what}");
            } else {
                refused(code, &headers, &what);
            }
        }
    }
    // Nothing was changed by the refused requests.
    let v = k.wait_state("svc", "running");
    assert_eq!(v["events"].as_array().unwrap().len(), 2, "{v:#}");
    // And the right password works.
    assert_eq!(k.get("/api/v1/services/svc").0, 200);
}

#[test]
fn state_changing_api_requests_need_json() {
    let k = start(SERVICES);
    let pid = k.wait_state("svc", "running")["pid"].as_u64().unwrap();
    let url = k.url("/api/v1/services/svc/restart");
    let auth = k.auth();
    // Auth is checked first: no credentials and no JSON is a 401.
    assert_eq!(curl(&["-X", "POST", &url]).0, 401);
    assert_eq!(curl(&["-u", &auth, "-X", "POST", &url]).0, 415);
    assert_eq!(curl(&["-u", &auth, "--data", "a=b", &url]).0, 415);
    assert_eq!(
        curl(&[
            "-u",
            &auth,
            "-H",
            "Content-Type: text/plain",
            "--data",
            "{}",
            &url
        ])
        .0,
        415
    );
    for p in ["/api/v1/reboot", "/api/v1/poweroff"] {
        assert_eq!(curl(&["-u", &auth, "-X", "POST", &k.url(p)]).0, 415);
    }
    // GET on a POST endpoint is refused.
    assert_eq!(curl(&["-u", &auth, &url]).0, 405);
    assert_eq!(
        k.service("svc")["pid"].as_u64(),
        Some(pid),
        "nothing restarted"
    );
    assert_eq!(
        curl(&[
            "-u",
            &auth,
            "-H",
            "Content-Type: application/json; charset=utf-8",
            "--data",
            "{}",
            &url
        ])
        .0,
        202
    );
    k.wait("svc", 20, |v| {
        v["state"] == "running" && v["pid"].as_u64() != Some(pid)
    });
}

fn csrf_token(html: &str, action: &str) -> String {
    let at = html
        .find(&format!("action=\"{action}\""))
        .expect("form present");
    let rest = &html[at..];
    let v = rest.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    rest[v..v + 64].to_owned()
}

#[test]
fn html_pages_and_csrf_checked_forms() {
    let k = start(SERVICES);
    let pid = k.wait_state("svc", "running")["pid"].as_u64().unwrap();
    let (c, overview) = k.get("/");
    assert_eq!(c, 200);
    for needle in [
        "<h2>Services</h2>",
        "href=\"/services/svc\"",
        "class=\"running\"",
        "kernel",
        "action=\"/reboot\"",
        "action=\"/poweroff\"",
    ] {
        assert!(overview.contains(needle), "{needle}");
    }
    assert!(
        !overview.contains("http://") && !overview.contains("https://"),
        "no external assets"
    );
    let (c, page) = k.get("/services/svc");
    assert_eq!(c, 200);
    assert!(page.contains("<code>/bin/sleep 1000</code>"));
    assert!(page.contains("EventSource"));
    let url = k.url("/services/svc/restart");
    let auth = k.auth();
    // Without a token, with a wrong one, and with the token of another form: 403.
    assert_eq!(curl(&["-u", &auth, "-X", "POST", &url]).0, 403);
    assert_eq!(curl(&["-u", &auth, "--data", "csrf=00", &url]).0, 403);
    let stop_token = csrf_token(&page, "/services/svc/stop");
    assert_eq!(
        curl(&["-u", &auth, "--data", &format!("csrf={stop_token}"), &url]).0,
        403
    );
    assert_eq!(
        curl(&["-u", &auth, "--data", "csrf=x", &k.url("/reboot")]).0,
        403
    );
    assert_eq!(
        k.service("svc")["pid"].as_u64(),
        Some(pid),
        "nothing restarted"
    );
    // With the page's token: 303 back to the page, and the service restarts.
    let token = csrf_token(&page, "/services/svc/restart");
    let (c, headers, _) = curl(&["-u", &auth, "--data", &format!("csrf={token}"), &url]);
    assert_eq!(c, 303);
    assert!(headers
        .to_ascii_lowercase()
        .contains("location: /services/svc"));
    k.wait("svc", 20, |v| {
        v["state"] == "running" && v["pid"].as_u64() != Some(pid)
    });
}

#[test]
fn tls_serves_https_and_redirects_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let k = start_with(
        SERVICES,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let (c, body) = k.get("/api/v1/services/svc");
    assert_eq!(c, 200, "{body}");
    assert_eq!(
        curl(&[&k.url("/api/v1/system")]).0,
        401,
        "auth over TLS too"
    );
    let plain = format!("http://{}/services/svc?x=1", k.addr);
    let (c, headers, _) = curl(&[&plain]);
    assert_eq!(c, 302);
    assert!(
        headers
            .to_ascii_lowercase()
            .contains(&format!("location: https://{}/services/svc?x=1", k.addr)),
        "{headers}"
    );
}
