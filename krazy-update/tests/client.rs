//! The client against a device served by a tiny HTTP/1.1 test server (a
//! std `TcpListener` thread, plain or TLS with an rcgen self-signed
//! certificate) that mounts `Device` the way krazy-init does: Basic auth,
//! the Content-Type rule, and a reboot that simulates systemd-boot and the
//! new boot's health gate.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use krazy_update::bootarchive::{write_archive, BootFile};
use krazy_update::client::{Client, ClientConfig, ClientError, Progress, Signed};
use krazy_update::device::{Device, Route};
use krazy_update::dirdevice::{DirDevice, DirSizes};
use krazy_update::protocol::*;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

const PASSWORD: &str = "s3cret";

/// What the simulated new boot's health gate decides.
#[derive(Clone, Copy, PartialEq)]
enum Health {
    Pass,
    FailHello,
}

struct Sim {
    dir: tempfile::TempDir,
    key: SecretKey,
    device: Option<Device>,
    health: Health,
    /// Speak protocol 1 on the wire (what devices in the field run): a
    /// protocol-1 envelope, no upload ids, features without a version.
    v1: Option<String>,
}

impl Sim {
    fn new(health: Health) -> Sim {
        let dir = tempfile::tempdir().unwrap();
        DirDevice::create(dir.path(), &DirSizes::small()).unwrap();
        let mut sim = Sim {
            dir,
            key: SecretKey::from_seed([8; 32]),
            device: None,
            health,
            v1: None,
        };
        sim.boot("v1");
        sim
    }

    fn protocol_1(health: Health) -> Sim {
        Sim {
            v1: Some(String::new()),
            ..Sim::new(health)
        }
    }

    fn p(&self) -> &Path {
        self.dir.path()
    }

    /// systemd-boot picks the one-shot or the default; the slot's root
    /// image says which build it is; the device service opens.
    fn boot(&mut self, first_build: &str) {
        self.device = None;
        let dev = DirDevice::at(self.p());
        let running = dev.firmware_boot().unwrap();
        let build = match fs::read_to_string(self.p().join(format!("build-{running}"))) {
            Ok(b) => b,
            Err(_) => first_build.to_string(),
        };
        self.device = Some(dev.open(running, &build, self.key.public()).unwrap());
    }

    /// `POST /api/v1/reboot`: the new boot either commits or rolls back
    /// (and reboots into the committed slot).
    fn reboot(&mut self) {
        // The root image carries its build id: remember it per slot.
        let st = self.device.as_ref().unwrap().status();
        for (slot, s) in [(Slot::A, &st.slot_a), (Slot::B, &st.slot_b)] {
            if let Some(b) = &s.build_id {
                fs::write(self.p().join(format!("build-{slot}")), b).unwrap();
            }
        }
        self.boot("v1");
        let d = self.device.as_mut().unwrap();
        if d.is_trial() {
            match self.health {
                Health::Pass => d.commit().unwrap(),
                Health::FailHello => {
                    d.roll_back(
                        "service hello exited 3 times within settle_seconds",
                        Some("hello"),
                        &["starting hello".into(), "HELLO_FAIL=1: giving up".into()],
                    )
                    .unwrap();
                    self.boot("v1");
                }
            }
        }
    }
}

fn respond(w: &mut dyn Write, status: u16, body: &[u8]) {
    let _ = write!(
        w,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = w.write_all(body);
    let _ = w.flush();
}

fn error(w: &mut dyn Write, status: u16, code: &str, message: &str) {
    let b = serde_json::to_vec(&ErrorBody {
        error: code.into(),
        message: message.into(),
    })
    .unwrap();
    respond(w, status, &b);
}

/// One request, the way krazy-init's web server mounts the device.
fn handle<S: Read + Write>(sim: &mut Sim, stream: S) {
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut it = line.split_whitespace();
    let (method, path) = (
        it.next().unwrap_or("").to_string(),
        it.next().unwrap_or("").to_string(),
    );
    let (mut auth, mut ctype, mut length) = (String::new(), String::new(), 0u64);
    let mut upload: Option<String> = None;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap();
        match k.to_ascii_lowercase().as_str() {
            "authorization" => auth = v.trim().to_string(),
            "content-type" => ctype = v.trim().to_string(),
            "content-length" => length = v.trim().parse().unwrap(),
            "krazy-upload-id" => upload = Some(v.trim().to_string()),
            _ => {}
        }
    }
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("krazy:{PASSWORD}"))
    );
    let mut body = (&mut r).take(length);
    let mut out = Vec::new();
    let w: &mut dyn Write = &mut out;
    if auth != want {
        let _ = std::io::copy(&mut body, &mut std::io::sink());
        error(w, 401, "unauthorized", "wrong user or password");
    } else if (method.as_str(), path.as_str()) == ("POST", "/api/v1/reboot") {
        let _ = std::io::copy(&mut body, &mut std::io::sink());
        if ctype != "application/json" {
            error(w, 415, "content_type", "need application/json");
        } else {
            respond(w, 200, b"{}");
            sim.reboot();
        }
    } else if let Some(route) = Route::parse(&method, &path) {
        if route.content_type().is_some_and(|c| c != ctype) {
            let _ = std::io::copy(&mut body, &mut std::io::sink());
            error(w, 415, "content_type", "wrong Content-Type");
        } else {
            if sim.v1.is_some() {
                // A protocol-1 device has no upload ids: the new client must
                // not depend on one.
                assert!(upload.is_none(), "upload id sent to a protocol-1 device");
                upload = sim.v1.clone();
            }
            let key = SecretKey::from_seed([8; 32]);
            let v1 = sim.v1.is_some();
            let d = sim.device.as_mut().unwrap();
            let res = match route {
                Route::Features if v1 => {
                    let mut f = serde_json::to_value(d.features()).unwrap();
                    f["protocol"] = 1.into();
                    f.as_object_mut().unwrap().remove("committed_version");
                    Ok(serde_json::to_vec(&f).unwrap())
                }
                Route::Features => Ok(serde_json::to_vec(&d.features()).unwrap()),
                Route::Status => Ok(serde_json::to_vec(&d.status()).unwrap()),
                Route::Manifest if v1 => {
                    // What a protocol-1 device checks (its manifest struct,
                    // unknown fields refused); its slot and version are implied.
                    let mut b = Vec::new();
                    body.read_to_end(&mut b).unwrap();
                    let m = SignedManifest::from_json(&b)
                        .and_then(|e| e.verify_v1(&key.public()))
                        .map_err(krazy_update::device::Error::from);
                    m.and_then(|m| {
                        let f = d.features();
                        let m2 = Manifest::new(
                            m.build_id.clone(),
                            m.arch,
                            m.platform,
                            f.running_slot.other(),
                            f.committed_version + 1,
                            1_790_000_000,
                            m.parts.clone(),
                        );
                        let env = SignedManifest::sign(&m2, &key).to_json();
                        d.put_manifest_at(&env, 1_790_000_000).map(|a| {
                            upload = Some(a.upload_id);
                            serde_json::to_vec(&m).unwrap()
                        })
                    })
                }
                Route::Manifest => {
                    let mut b = Vec::new();
                    body.read_to_end(&mut b).unwrap();
                    d.put_manifest_at(&b, 1_790_000_000)
                        .map(|m| serde_json::to_vec(&m).unwrap())
                }
                Route::Part(k) => d
                    .put_part(k, upload.as_deref(), &mut body)
                    .map(|m| serde_json::to_vec(&m).unwrap()),
                Route::Switch => {
                    let _ = std::io::copy(&mut body, &mut std::io::sink());
                    d.switch(upload.as_deref())
                        .map(|m| serde_json::to_vec(&m).unwrap())
                }
                Route::Cancel if v1 => Err(krazy_update::device::Error::NoManifest(PartKind::Root)),
                Route::Cancel => {
                    let _ = std::io::copy(&mut body, &mut std::io::sink());
                    d.cancel().map(|m| serde_json::to_vec(&m).unwrap())
                }
            };
            if v1 && route == Route::Manifest {
                sim.v1 = upload.clone();
            }
            match res {
                Ok(b) => respond(w, 200, &b),
                Err(e) => respond(w, e.http_status(), &serde_json::to_vec(&e.body()).unwrap()),
            }
        }
    } else {
        error(w, 404, "not_found", "no such endpoint");
    }
    let s = r.get_mut();
    let _ = s.write_all(&out);
    let _ = s.flush();
}

struct Tls {
    cert: Vec<u8>,
    config: Arc<rustls::ServerConfig>,
}

fn self_signed() -> (Vec<u8>, Vec<u8>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    (ck.cert.der().to_vec(), ck.signing_key.serialize_der())
}

fn tls() -> Tls {
    let (cert, key) = self_signed();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(cert.clone())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
    )
    .unwrap();
    Tls {
        cert,
        config: Arc::new(config),
    }
}

/// Serves `sim` on a fresh port; returns `127.0.0.1:PORT`.
fn serve(mut sim: Sim, tls: Option<Arc<rustls::ServerConfig>>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            match &tls {
                None => handle(&mut sim, s),
                Some(cfg) => {
                    let conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
                    let mut st = rustls::StreamOwned::new(conn, s);
                    handle(&mut sim, &mut st);
                    st.conn.send_close_notify();
                    let _ = st.flush();
                }
            }
        }
    });
    addr
}

struct Build {
    manifest: Manifest,
    signed: Vec<u8>,
    signed_v1: Vec<u8>,
    root: Vec<u8>,
    boot: Vec<u8>,
}

fn build(key: &SecretKey, id: &str) -> Build {
    build_for(key, id, Slot::B)
}

fn build_for(key: &SecretKey, id: &str, slot: Slot) -> Build {
    let root: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut boot = Vec::new();
    write_archive(
        &mut boot,
        &[
            (BootFile::Vmlinuz, format!("MZ-{id}").as_bytes()),
            (BootFile::Entry, format!("title {id}\n").as_bytes()),
        ],
    )
    .unwrap();
    // Each test's device runs slot A; the version is the build's number.
    let manifest = Manifest::new(
        id,
        Arch::X86_64,
        Platform::Pc,
        slot,
        id[1..].parse().unwrap(),
        1_790_000_000,
        vec![
            PartSpec::for_bytes(PartKind::Root, &root),
            PartSpec::for_bytes(PartKind::Boot, &boot),
        ],
    );
    let signed = SignedManifest::sign(&manifest, key).to_json();
    let signed_v1 = SignedManifest::sign_v1(&manifest, key).to_json();
    Build {
        manifest,
        signed,
        signed_v1,
        root,
        boot,
    }
}

fn run_update(c: &Client, b: &Build, progress: &mut Vec<Progress>) -> Result<(), ClientError> {
    run_update_noting(c, b, progress, &mut Vec::new())
}

fn run_update_noting(
    c: &Client,
    b: &Build,
    progress: &mut Vec<Progress>,
    notes: &mut Vec<String>,
) -> Result<(), ClientError> {
    let (mut root, mut boot) = (&b.root[..], &b.boot[..]);
    c.update(
        Signed {
            manifest: &b.manifest,
            v2: &b.signed,
            v1: Some(&b.signed_v1),
        },
        &mut [(PartKind::Root, &mut root), (PartKind::Boot, &mut boot)],
        &mut |p| progress.push(p),
        &mut |n| notes.push(n.to_string()),
        Duration::from_secs(30),
    )
    .map(|done| {
        assert_eq!(done.features.build_id, b.manifest.build_id);
    })
}

fn full_update(c: Client) {
    let f = c.features().unwrap();
    assert_eq!((f.build_id.as_str(), f.running_slot), ("v1", Slot::A));
    let b = build(&SecretKey::from_seed([8; 32]), "v2");
    let mut progress = Vec::new();
    run_update(&c, &b, &mut progress).unwrap();
    let f = c.features().unwrap();
    assert_eq!(
        (
            f.build_id.as_str(),
            f.running_slot,
            f.committed_slot,
            f.trial
        ),
        ("v2", Slot::B, Slot::B, TrialState::None)
    );
    let lt = c.status().unwrap().last_trial.unwrap();
    assert_eq!(
        (lt.outcome, lt.build_id.as_str()),
        (TrialOutcome::Committed, "v2")
    );
    // Progress: monotone per part, ending at each part's size.
    for (kind, size) in [
        (PartKind::Root, b.root.len()),
        (PartKind::Boot, b.boot.len()),
    ] {
        let ps: Vec<_> = progress.iter().filter(|p| p.part == kind).collect();
        assert!(ps.len() >= 2, "{kind}: {ps:?}");
        assert!(ps.windows(2).all(|w| w[0].sent <= w[1].sent));
        assert_eq!(ps.last().unwrap().sent, size as u64);
        assert!(ps.iter().all(|p| p.total == size as u64));
    }
    assert!(progress.iter().filter(|p| p.part == PartKind::Root).count() > 10);
}

#[test]
fn full_update_over_plain_http() {
    let host = serve(Sim::new(Health::Pass), None);
    full_update(Client::new(ClientConfig::new(host, PASSWORD)).unwrap());
}

#[test]
fn full_update_over_tls_with_the_pinned_certificate() {
    let t = tls();
    let host = serve(Sim::new(Health::Pass), Some(t.config));
    let c = Client::new(ClientConfig::new(host, PASSWORD).with_pinned_cert(t.cert)).unwrap();
    full_update(c);
}

#[test]
fn corrupted_part_is_reported_with_the_devices_422() {
    let host = serve(Sim::new(Health::Pass), None);
    let c = Client::new(ClientConfig::new(host, PASSWORD)).unwrap();
    let b = build(&SecretKey::from_seed([8; 32]), "v2");
    let id = c.put_manifest(&b.signed).unwrap().upload_id;
    let mut bad = b.root.clone();
    bad[2_000_000] ^= 1;
    let e = c
        .put_part(
            PartKind::Root,
            Some(&id),
            bad.len() as u64,
            &mut &bad[..],
            &mut |_| {},
        )
        .unwrap_err();
    match &e {
        ClientError::Device { status, code, .. } => {
            assert_eq!((*status, code.as_str()), (422, "hash_mismatch"))
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("422 hash_mismatch"), "{e}");
    assert!(e.to_string().contains("SHA-256"), "{e}");
    let e = c.switch(Some(&id)).unwrap_err();
    assert!(matches!(e, ClientError::Device { status: 409, .. }), "{e}");
    // A short source is the client's own error, and the device calls the
    // stream short.
    let id = c.put_manifest(&b.signed).unwrap().upload_id;
    let e = c
        .put_part(PartKind::Root, Some(&id), 10, &mut &b"abc"[..], &mut |_| {})
        .unwrap_err();
    assert!(matches!(e, ClientError::SourceShort { got: 3, .. }), "{e}");
    // The device still runs v1 and takes a good update afterwards.
    let mut progress = Vec::new();
    run_update(&c, &b, &mut progress).unwrap();
}

#[test]
fn wrong_pinned_certificate_fails_the_handshake_clearly() {
    let t = tls();
    let host = serve(Sim::new(Health::Pass), Some(t.config));
    let (other, _) = self_signed();
    let c = Client::new(ClientConfig::new(host.clone(), PASSWORD).with_pinned_cert(other.clone()))
        .unwrap();
    let e = c.features().unwrap_err();
    assert!(matches!(e, ClientError::NotPinned { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("not the pinned one"), "{msg}");
    assert!(
        msg.contains(&krazy_update::client::cert_fingerprint(&t.cert)),
        "{msg}"
    );
    assert!(
        msg.contains(&krazy_update::client::cert_fingerprint(&other)),
        "{msg}"
    );
    // Plain HTTP to a TLS port is not mistaken for an answer (the server's
    // TLS stack waits for a record as long as "GET /" claims: time out).
    let mut cfg = ClientConfig::new(host, PASSWORD);
    cfg.io_timeout = Duration::from_secs(1);
    let c = Client::new(cfg).unwrap();
    assert!(c.features().is_err());
}

#[test]
fn wrong_password_is_reported_as_401() {
    let host = serve(Sim::new(Health::Pass), None);
    let c = Client::new(ClientConfig::new(host, "guess")).unwrap();
    let e = c.features().unwrap_err();
    assert!(matches!(e, ClientError::Unauthorized { .. }), "{e:?}");
    assert!(e.to_string().contains("401"), "{e}");
    let b = build(&SecretKey::from_seed([8; 32]), "v2");
    let e = run_update(&c, &b, &mut Vec::new()).unwrap_err();
    assert!(matches!(e, ClientError::Unauthorized { .. }), "{e:?}");
}

#[test]
fn rollback_is_reported_with_reason_and_log() {
    let host = serve(Sim::new(Health::FailHello), None);
    let c = Client::new(ClientConfig::new(host, PASSWORD)).unwrap();
    let b = build(&SecretKey::from_seed([8; 32]), "v3");
    let e = run_update(&c, &b, &mut Vec::new()).unwrap_err();
    match &e {
        ClientError::RolledBack {
            build_id,
            reason,
            service,
            log,
        } => {
            assert_eq!(build_id, "v3");
            assert!(reason.as_deref().unwrap().contains("hello exited"));
            assert_eq!(service.as_deref(), Some("hello"));
            assert_eq!(log.len(), 2);
        }
        other => panic!("{other:?}"),
    }
    let msg = e.to_string();
    assert!(msg.contains("HELLO_FAIL=1: giving up"), "{msg}");
    let f = c.features().unwrap();
    assert_eq!((f.build_id.as_str(), f.running_slot), ("v1", Slot::A));
    // A manifest signed by another key is refused before anything is written.
    let evil = build(&SecretKey::from_seed([9; 32]), "v4");
    let e = c.put_manifest(&evil.signed).unwrap_err();
    assert!(matches!(e, ClientError::Device { status: 403, .. }), "{e}");
}

#[test]
fn a_protocol_1_device_is_updated_by_this_client() {
    let host = serve(Sim::protocol_1(Health::Pass), None);
    let c = Client::new(ClientConfig::new(host, PASSWORD)).unwrap();
    assert_eq!(c.features().unwrap().protocol, 1);
    let b = build(&SecretKey::from_seed([8; 32]), "v2");
    run_update(&c, &b, &mut Vec::new()).unwrap();
    assert_eq!(c.features().unwrap().build_id, "v2");
}

#[test]
fn an_armed_trial_is_cancelled_and_said_so() {
    let host = serve(Sim::new(Health::Pass), None);
    let c = Client::new(ClientConfig::new(host, PASSWORD)).unwrap();
    // Someone armed v2 and never rebooted.
    let b2 = build(&SecretKey::from_seed([8; 32]), "v2");
    let id = c.put_manifest(&b2.signed).unwrap().upload_id;
    for (k, bytes) in [(PartKind::Root, &b2.root), (PartKind::Boot, &b2.boot)] {
        c.put_part(
            k,
            Some(&id),
            bytes.len() as u64,
            &mut &bytes[..],
            &mut |_| {},
        )
        .unwrap();
    }
    c.switch(Some(&id)).unwrap();
    assert_eq!(c.features().unwrap().trial, TrialState::Armed);
    // A new manifest meets 409 trial_armed...
    let b3 = build(&SecretKey::from_seed([8; 32]), "v3");
    match c.put_manifest(&b3.signed).unwrap_err() {
        ClientError::Device { status, code, .. } => {
            assert_eq!((status, code.as_str()), (409, "trial_armed"))
        }
        e => panic!("{e:?}"),
    }
    // ...and the whole update cancels it, says so, and goes on.
    let mut notes = Vec::new();
    run_update_noting(&c, &b3, &mut Vec::new(), &mut notes).unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].contains("disarmed the trial boot of slot b (build v2)"),
        "{notes:?}"
    );
    assert_eq!(c.features().unwrap().build_id, "v3");
    // An older build is refused by the client before anything is sent.
    let old = build_for(&SecretKey::from_seed([8; 32]), "v2", Slot::A);
    let e = run_update(&c, &old, &mut Vec::new()).unwrap_err();
    assert!(matches!(e, ClientError::Incompatible(_)), "{e:?}");
    assert!(
        e.to_string().contains("committed build has version 3"),
        "{e}"
    );
}
