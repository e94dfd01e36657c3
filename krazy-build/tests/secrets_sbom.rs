//! `krazy new`'s secrets on disk (modes, .gitignore, never overwritten,
//! certificate readable by openssl when present, key pair usable) and the
//! SBOM with crate versions from real `cargo metadata`.

use krazy_build::sbom::{self, Sbom};
use krazy_build::secrets::{verify_password, Secrets, SecretsError};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

#[test]
fn secrets_are_written_private_and_read_back() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("secrets");
    let s = Secrets::generate("hello-krazy").unwrap();
    s.write(&dir).unwrap();
    assert_eq!(
        fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for f in [
        ".gitignore",
        "password",
        "update-key.pk8",
        "update-key.pub",
        "tls-cert.pem",
        "tls-key.pem",
    ] {
        let m = fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, 0o600, "{f}");
    }
    assert!(fs::read_to_string(dir.join(".gitignore"))
        .unwrap()
        .lines()
        .any(|l| l == "*"));
    let back = Secrets::read(&dir).unwrap();
    assert_eq!(back.password, s.password);
    assert!(back.password.len() >= 20);
    assert_eq!(back.update_public_key, s.update_public_key);

    // git really ignores them.
    if Command::new("git").arg("--version").output().is_ok() {
        assert!(Command::new("git")
            .args(["init", "-q"])
            .current_dir(t.path())
            .status()
            .unwrap()
            .success());
        let out = Command::new("git")
            .args(["status", "--porcelain", "--untracked-files=all"])
            .current_dir(t.path())
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "",
            "secrets show up in git status"
        );
    }

    // The key signs and the public key verifies (as the device will).
    let kp = ring::signature::Ed25519KeyPair::from_pkcs8(&back.update_key_pkcs8).unwrap();
    let sig = kp.sign(b"manifest");
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, back.update_public_key)
        .verify(b"manifest", sig.as_ref())
        .unwrap();

    // openssl (when installed) reads the certificate and finds the hostname.
    if let Ok(out) = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(dir.join("tls-cert.pem"))
        .output()
    {
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("DNS:hello-krazy"), "{text}");
        }
    }

    // Never overwritten.
    let e = Secrets::generate("x").unwrap().write(&dir).unwrap_err();
    assert!(matches!(e, SecretsError::Exists { .. }), "{e}");
    assert_eq!(Secrets::read(&dir).unwrap().password, s.password);

    // A hash made for the image verifies against the stored password.
    let h = krazy_build::secrets::hash_password(&back.password).unwrap();
    assert!(verify_password(&back.password, &h));

    // A tampered public key is caught.
    fs::write(dir.join("update-key.pub"), format!("{}\n", "00".repeat(32))).unwrap();
    assert!(matches!(
        Secrets::read(&dir),
        Err(SecretsError::Malformed { .. })
    ));
}

#[test]
fn sbom_crates_from_cargo_metadata() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let crates = sbom::crate_versions(&manifest, Some("x86_64-unknown-linux-musl")).unwrap();
    let get = |n: &str| {
        crates
            .iter()
            .find(|c| c.name == n)
            .map(|c| c.version.clone())
    };
    assert_eq!(
        get("krazy-build").as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    let serde_v = get("serde").expect("serde is a dependency");
    // The version matches the lock file's.
    let lock =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock")).unwrap();
    assert!(
        lock.contains(&format!("name = \"serde\"\nversion = \"{serde_v}\"")),
        "serde {serde_v}"
    );
    let mut s = Sbom::new();
    s.add_crates(crates);
    let before = s.build_id();
    s.crates.retain(|c| c.name != "serde");
    assert_ne!(before, s.build_id());

    let e = sbom::crate_versions(Path::new("/nonexistent/Cargo.toml"), None).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/Cargo.toml"), "{e}");
}
