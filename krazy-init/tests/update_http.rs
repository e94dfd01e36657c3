//! The `/update/...` routes of the web server on this host, with a real
//! update device over files (root slots, an ESP directory, a directory as
//! efivarfs): `curl -T` and krazy's own client stream parts in over HTTP and
//! HTTPS, and the answers to bad requests reach the client whole.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use krazy_init::supervisor::{Supervisor, SupervisorOptions};
use krazy_init::web::{self, auth::Password, Web, WebConfig};
use krazy_update::client::{Client, ClientConfig, ClientError};
use krazy_update::dirdevice::{DirDevice, DirSizes};
use krazy_update::protocol::*;

const PASSWORD: &str = "update-http-test-password";
const ROOT_SIZE: u64 = 96 << 20;

/// A device on a tokio runtime of its own, serving on 127.0.0.1.
struct Server {
    _rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    addr: String,
    key: SecretKey,
    cert_der: Option<Vec<u8>>,
    /// The upload id of the last manifest curl put.
    upload: std::cell::RefCell<String>,
}

fn serve(tls: bool) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let key = SecretKey::from_seed([11; 32]);
    let sizes = DirSizes {
        root: ROOT_SIZE,
        vmlinuz: 1 << 20,
        initrd: 1 << 20,
    };
    let device = DirDevice::create(p, &sizes)
        .unwrap()
        .open(Slot::A, "v1", key.public())
        .unwrap();

    let (tls_cfg, cert_der) = if tls {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(p.join("cert.pem"), ck.cert.pem()).unwrap();
        std::fs::write(p.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
        (
            Some(web::load_tls(&p.join("cert.pem"), &p.join("key.pem")).unwrap()),
            Some(ck.cert.der().to_vec()),
        )
    } else {
        (None, None)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(async {
        let sup = Supervisor::new(SupervisorOptions {
            home_base: None,
            reap_orphans: false,
            subreaper: false,
        })
        .unwrap();
        let (power, _rx) = tokio::sync::mpsc::unbounded_channel();
        std::mem::forget(_rx);
        let w = Web::new(
            sup,
            WebConfig {
                password: Some(Password::plain(PASSWORD).unwrap()),
                tls: tls_cfg,
                update: Some(Arc::new(Mutex::new(device))),
                ..WebConfig::default()
            },
            power,
        )
        .unwrap();
        let l = web::bind_tcp("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(w.serve_tcp(l));
        addr
    });
    Server {
        _rt: rt,
        dir,
        addr,
        key,
        cert_der,
        upload: Default::default(),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn manifest_of(build: &str, root: &[u8], boot: &[u8]) -> Manifest {
    Manifest::new(
        build,
        Arch::X86_64,
        Platform::Pc,
        Slot::B,
        now(),
        now(),
        vec![
            PartSpec::for_bytes(PartKind::Root, root),
            PartSpec::for_bytes(PartKind::Boot, boot),
        ],
    )
}

impl Server {
    fn url(&self, path: &str) -> String {
        let scheme = if self.cert_der.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}{path}", self.addr)
    }

    fn client(&self) -> Client {
        let mut c = ClientConfig::new(self.addr.clone(), PASSWORD);
        if let Some(der) = &self.cert_der {
            c = c.with_pinned_cert(der.clone());
        }
        Client::new(c).unwrap()
    }

    fn manifest(&self, root: &[u8], boot: &[u8]) -> Vec<u8> {
        SignedManifest::sign(&manifest_of("v2", root, boot), &self.key).to_json()
    }

    /// `curl -T FILE` with the update content type and the upload id of
    /// the last manifest: (status, body).
    fn curl_put(&self, path: &str, file: &Path, content_type: &str) -> (u16, String) {
        let upload = format!("Krazy-Upload-Id: {}", self.upload.borrow());
        let out = Command::new("curl")
            .args(["-sS", "-k", "-w", "\n%{http_code}", "-u"])
            .arg(format!("krazy:{PASSWORD}"))
            .args(["-H", &upload])
            .args(["-H", &format!("Content-Type: {content_type}"), "-T"])
            .arg(file)
            .arg(self.url(path))
            .output()
            .expect("curl is installed");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        assert!(
            out.status.success(),
            "curl failed: {} {}",
            code,
            String::from_utf8_lossy(&out.stderr)
        );
        if path == "/update/manifest" && code == "200" {
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            *self.upload.borrow_mut() = v["upload_id"].as_str().unwrap().to_string();
        }
        (code.parse().unwrap_or(0), body.to_string())
    }
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn boot_archive() -> Vec<u8> {
    let mut out = Vec::new();
    krazy_update::bootarchive::write_archive(
        &mut out,
        &[
            (
                krazy_update::bootarchive::BootFile::Vmlinuz,
                b"MZ-kernel-v2",
            ),
            (
                krazy_update::bootarchive::BootFile::Entry,
                b"title v2\nlinux /krazy/b/vmlinuz\n",
            ),
        ],
    )
    .unwrap();
    out
}

fn curl_uploads(tls: bool) {
    let s = serve(tls);
    let root = pattern(64 << 20, 5);
    let boot = boot_archive();
    let root_file = s.dir.path().join("root.bin");
    let manifest_file = s.dir.path().join("manifest.json");
    std::fs::write(&root_file, &root).unwrap();
    std::fs::write(&manifest_file, s.manifest(&root, &boot)).unwrap();

    // A part without the accepted manifest's upload id is refused.
    let (code, body) = s.curl_put("/update/manifest", &manifest_file, "application/json");
    assert_eq!(code, 200, "{body}");
    let id = s.upload.replace("0123456789abcdef0123456789abcdef".into());
    let (code, body) = s.curl_put("/update/root", &root_file, "application/octet-stream");
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("upload_mismatch"), "{body}");
    *s.upload.borrow_mut() = id;

    // The wrong content type never reaches the device.
    let (code, body) = s.curl_put("/update/root", &root_file, "text/plain");
    assert_eq!(code, 415, "{body}");

    let (code, body) = s.curl_put("/update/manifest", &manifest_file, "application/json");
    assert_eq!(code, 200, "{body}");
    // 64 MiB by curl (which sends `Expect: 100-continue`), in full.
    let (code, body) = s.curl_put("/update/root", &root_file, "application/octet-stream");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["slot"].as_str(), v["size"].as_u64()),
        (Some("b"), Some(64 << 20))
    );
    let on_disk = std::fs::read(s.dir.path().join("root-b")).unwrap();
    assert!(on_disk[..root.len()] == root[..], "slot b holds the bytes");

    // Bytes that do not match the manifest: a clear answer, not a reset.
    let mut bad = root.clone();
    bad[40 << 20] ^= 1;
    std::fs::write(&root_file, &bad).unwrap();
    let (code, body) = s.curl_put("/update/manifest", &manifest_file, "application/json");
    assert_eq!(code, 200, "{body}");
    let (code, body) = s.curl_put("/update/root", &root_file, "application/octet-stream");
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("sha256") || body.contains("SHA-256"),
        "{body}"
    );
    let st = s.client().status().unwrap();
    assert_eq!(st.slot_b.state, SlotState::Invalid);

    // Too long for the manifest: answered as soon as the device knows.
    let long = s.dir.path().join("long.bin");
    let mut l = root.clone();
    l.extend_from_slice(&[0; 4 << 20]);
    std::fs::write(&long, &l).unwrap();
    let (code, body) = s.curl_put("/update/manifest", &manifest_file, "application/json");
    assert_eq!(code, 200, "{body}");
    let (code, body) = s.curl_put("/update/root", &long, "application/octet-stream");
    assert_eq!(code, 422, "{body}");
}

#[test]
fn curl_streams_parts_over_http() {
    curl_uploads(false);
}

#[test]
fn curl_streams_parts_over_https() {
    curl_uploads(true);
}

#[test]
fn the_client_pushes_a_whole_update_and_arms_the_trial() {
    let s = serve(true);
    let c = s.client();
    let root = pattern(80 << 20, 9);
    let boot = boot_archive();
    // Another key's manifest is refused before anything is written.
    let other = manifest_of("evil", &root, &boot);
    match c.put_manifest(&SignedManifest::sign(&other, &SecretKey::from_seed([1; 32])).to_json()) {
        Err(ClientError::Device { status, .. }) => assert_eq!(status, 403),
        r => panic!("another key's manifest: {r:?}"),
    }
    assert_eq!(c.status().unwrap().slot_b.state, SlotState::Unknown);

    let id = c.put_manifest(&s.manifest(&root, &boot)).unwrap().upload_id;
    let mut seen = 0;
    let w = c
        .put_part(
            PartKind::Root,
            Some(&id),
            root.len() as u64,
            &mut &root[..],
            &mut |p| {
                assert!(p.sent >= seen);
                seen = p.sent;
            },
        )
        .unwrap();
    assert_eq!(seen, root.len() as u64);
    assert!(!w.slot_complete);
    let w = c
        .put_part(
            PartKind::Boot,
            Some(&id),
            boot.len() as u64,
            &mut &boot[..],
            &mut |_| {},
        )
        .unwrap();
    assert!(w.slot_complete);
    let sw = c.switch(Some(&id)).unwrap();
    assert_eq!((sw.slot, sw.build_id.as_str()), (Slot::B, "v2"));
    assert_eq!(c.features().unwrap().trial, TrialState::Armed);
    let p = s.dir.path();
    assert!(std::fs::read(p.join("root-b")).unwrap()[..root.len()] == root[..]);
    assert!(std::fs::read(p.join("esp/krazy/b/vmlinuz"))
        .unwrap()
        .starts_with(b"MZ-kernel-v2"));
    let one_shot = std::fs::read(p.join(format!(
        "efivars/LoaderEntryOneShot-{}",
        krazy_update::efivars::LOADER_GUID
    )))
    .unwrap();
    assert_eq!(
        &one_shot[4..],
        &krazy_update::efivars::utf16_nul("krazy-b.conf")[..]
    );
}

#[test]
fn a_stalled_upload_releases_the_update_lock() {
    use std::io::{Read, Write};
    let s = serve(false);
    let c = s.client();
    let root = pattern(8 << 20, 3);
    let boot = boot_archive();
    let id = c.put_manifest(&s.manifest(&root, &boot)).unwrap().upload_id;
    // A client that sends the head and 1 MiB of the root, then nothing: it
    // holds the device's lock while the body is open.
    let mut stall = std::net::TcpStream::connect(&s.addr).unwrap();
    let auth = base64(format!("krazy:{PASSWORD}").as_bytes());
    write!(
        stall,
        "PUT /update/root HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n\
         Content-Type: application/octet-stream\r\nKrazy-Upload-Id: {id}\r\n\
         Content-Length: {}\r\n\r\n",
        root.len()
    )
    .unwrap();
    stall.write_all(&root[..1 << 20]).unwrap();
    // The web server's body inactivity timeout ends the upload: the writer
    // sees a short part, the slot is invalid, and the lock is free again
    // (this status request waits for it; it does not hang).
    // (Bounded waits, so that a server without the timeout fails the test
    // instead of hanging it.)
    stall
        .set_read_timeout(Some(std::time::Duration::from_secs(150)))
        .unwrap();
    let mut answer = Vec::new();
    let cut = stall.read_to_end(&mut answer);
    assert!(cut.is_ok(), "the stalled upload was never cut off: {cut:?}");
    let mut cfg = ClientConfig::new(s.addr.clone(), PASSWORD);
    cfg.io_timeout = std::time::Duration::from_secs(60);
    let st = Client::new(cfg).unwrap().status().unwrap();
    assert_eq!(st.slot_b.state, SlotState::Invalid, "{st:?}");
    assert!(
        st.slot_b.reason.as_deref().unwrap_or("").contains("bytes"),
        "{st:?}"
    );
    // And a whole upload goes through afterwards.
    let id = c.put_manifest(&s.manifest(&root, &boot)).unwrap().upload_id;
    c.put_part(
        PartKind::Root,
        Some(&id),
        root.len() as u64,
        &mut &root[..],
        &mut |_| {},
    )
    .unwrap();
}

/// Standard base64 with padding (for a hand-written Authorization header).
fn base64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}
