//! The software bill of materials in every image (`/etc/krazy/sbom.json`):
//! the SHA-256 of every file in the root and boot trees, the crate versions
//! from `cargo metadata`, and the kernel and firmware versions.
//!
//! Its canonical bytes ([`Sbom::canonical_json`]: compact JSON, keys sorted,
//! lists sorted) hash to the build id ([`Sbom::build_id`]), so a change to
//! any file, crate or version changes the build id. The SBOM's own path
//! (`etc/krazy/sbom.json`) is left out of the hash list, since the SBOM is
//! added to the root after it is computed.

use krazy_fs::tree::{Kind, Tree};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The SBOM's own path in the root tree, left out of its file list.
pub const SBOM_PATH: &str = "etc/krazy/sbom.json";

/// Why an SBOM could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    /// Reading a file of a tree failed.
    #[error("cannot hash {tree}:/{path}: {source}")]
    Read {
        /// The tree's name (`root`, `boot`).
        tree: String,
        /// The path in the tree.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `cargo metadata` failed or printed something unexpected.
    #[error("`cargo metadata` for {} failed: {detail}", manifest.display())]
    Metadata {
        /// The manifest.
        manifest: PathBuf,
        /// What went wrong.
        detail: String,
    },
}

/// One crate in the build.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CrateVersion {
    /// The crate's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Where it came from (`registry+https://…`, `git+…`), or `path` for a
    /// local package.
    pub source: String,
}

/// A named component version (kernel, firmware).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Component {
    /// The package name (`linux-image-6.1.0-56-cloud-amd64`), or empty.
    pub package: String,
    /// The version (`6.1.192-2`, or the kernel release).
    pub version: String,
    /// SHA-256 of the package or file, when known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sha256: String,
}

/// The SBOM document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sbom {
    /// Format marker, `krazy-sbom-1`.
    pub format: String,
    /// The kernel.
    pub kernel: Component,
    /// The boot firmware.
    pub firmware: Component,
    /// Every crate, sorted and deduplicated.
    pub crates: Vec<CrateVersion>,
    /// `tree:/path` → `sha256:<hex>` for files, `symlink:<target>` for links,
    /// `char:<major>,<minor>` for devices; directories are implied.
    pub files: BTreeMap<String, String>,
}

impl Sbom {
    /// An empty SBOM.
    pub fn new() -> Self {
        Sbom {
            format: "krazy-sbom-1".into(),
            ..Default::default()
        }
    }

    /// Adds every file of `tree` under the name `tree_name` (hashing in
    /// parallel). The SBOM's own path is skipped.
    pub fn add_tree(&mut self, tree_name: &str, tree: &Tree) -> Result<(), SbomError> {
        let items: Vec<(&str, &Kind)> = tree
            .iter()
            .filter(|(p, _)| *p != SBOM_PATH)
            .map(|(p, e)| (p, &e.kind))
            .collect();
        let hashed: Vec<(String, String)> = items
            .par_iter()
            .filter_map(|(path, kind)| {
                let key = format!("{tree_name}:/{path}");
                match kind {
                    Kind::Dir => None,
                    Kind::Symlink(t) => Some(Ok((key, format!("symlink:{t}")))),
                    Kind::CharDevice { major, minor } => {
                        Some(Ok((key, format!("char:{major},{minor}"))))
                    }
                    Kind::File(c) => Some(
                        hash_reader(c.open())
                            .map(|h| (key, format!("sha256:{h}")))
                            .map_err(|source| SbomError::Read {
                                tree: tree_name.to_string(),
                                path: path.to_string(),
                                source,
                            }),
                    ),
                }
            })
            .collect::<Result<_, _>>()?;
        self.files.extend(hashed);
        Ok(())
    }

    /// Adds crates, keeping the list sorted and without duplicates.
    pub fn add_crates(&mut self, crates: impl IntoIterator<Item = CrateVersion>) {
        self.crates.extend(crates);
        self.crates.sort();
        self.crates.dedup();
    }

    /// The canonical bytes: compact JSON, struct fields in declaration order,
    /// maps sorted by key, lists sorted; then a newline.
    pub fn canonical_json(&self) -> Vec<u8> {
        let mut s = self.clone();
        s.crates.sort();
        s.crates.dedup();
        // Serializing plain data with string keys cannot fail.
        let mut v = serde_json::to_vec(&s).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// The build id: SHA-256 (hex) of [`Sbom::canonical_json`].
    pub fn build_id(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_json()))
    }

    /// The first 16 hex digits of the build id, for display.
    pub fn short_id(&self) -> String {
        self.build_id()[..16].to_string()
    }
}

fn hash_reader(r: std::io::Result<Box<dyn Read + Send + '_>>) -> std::io::Result<String> {
    let mut r = r?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// The crates of a build from `cargo metadata --format-version 1` for
/// `manifest`, restricted to `triple`'s platform when given.
pub fn crate_versions(
    manifest: &Path,
    triple: Option<&str>,
) -> Result<Vec<CrateVersion>, SbomError> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut c = Command::new(cargo);
    c.args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(manifest);
    if let Some(t) = triple {
        c.args(["--filter-platform", t]);
    }
    let err = |detail: String| SbomError::Metadata {
        manifest: manifest.to_path_buf(),
        detail,
    };
    let out = c.output().map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        return Err(err(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    parse_metadata(&out.stdout).map_err(err)
}

/// Parses `cargo metadata` JSON: the packages in the resolve graph (or all
/// packages when there is no resolve), sorted.
pub fn parse_metadata(json: &[u8]) -> Result<Vec<CrateVersion>, String> {
    let v: serde_json::Value = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    let pkgs = v["packages"].as_array().ok_or("no `packages` list")?;
    let in_resolve: Option<std::collections::BTreeSet<&str>> = v["resolve"]["nodes"]
        .as_array()
        .map(|nodes| nodes.iter().filter_map(|n| n["id"].as_str()).collect());
    let mut out = Vec::new();
    for p in pkgs {
        let id = p["id"].as_str().unwrap_or("");
        if in_resolve.as_ref().is_some_and(|r| !r.contains(id)) {
            continue;
        }
        let (Some(name), Some(version)) = (p["name"].as_str(), p["version"].as_str()) else {
            return Err(format!("package {id:?} lacks a name or version"));
        };
        out.push(CrateVersion {
            name: name.into(),
            version: version.into(),
            source: p["source"].as_str().unwrap_or("path").into(),
        });
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use krazy_fs::tree::Contents;

    fn tree(motd: &str) -> Tree {
        let mut t = Tree::new();
        t.add_dir_all("etc/krazy", 0).unwrap();
        t.add_file(
            "etc/motd",
            Contents::bytes(motd.as_bytes().to_vec()),
            0o644,
            0,
        )
        .unwrap();
        t.add_symlink("etc/resolv.conf", "/run/resolv.conf", 0)
            .unwrap();
        t.add_file(SBOM_PATH, Contents::bytes(b"old sbom".to_vec()), 0o644, 0)
            .unwrap();
        t
    }

    #[test]
    fn files_hashed_and_one_byte_changes_the_build_id() {
        let mut a = Sbom::new();
        a.add_tree("root", &tree("hello\n")).unwrap();
        assert_eq!(
            a.files["root:/etc/motd"],
            format!("sha256:{}", hex::encode(Sha256::digest(b"hello\n")))
        );
        assert_eq!(a.files["root:/etc/resolv.conf"], "symlink:/run/resolv.conf");
        assert!(!a.files.contains_key("root:/etc/krazy/sbom.json"));
        assert_eq!(a.files.len(), 2);
        let mut b = Sbom::new();
        b.add_tree("root", &tree("hello\n")).unwrap();
        assert_eq!(a.build_id(), b.build_id());
        assert_eq!(a.canonical_json(), b.canonical_json());
        let mut c = Sbom::new();
        c.add_tree("root", &tree("hellp\n")).unwrap();
        assert_ne!(a.build_id(), c.build_id());
        assert_eq!(a.short_id().len(), 16);
        let mut d = a.clone();
        d.kernel.version = "6.1.0-57".into();
        assert_ne!(a.build_id(), d.build_id());
    }

    #[test]
    fn canonical_json_roundtrips() {
        let mut a = Sbom::new();
        a.add_tree("boot", &tree("x")).unwrap();
        a.add_crates([
            CrateVersion {
                name: "z".into(),
                version: "1.0.0".into(),
                source: "path".into(),
            },
            CrateVersion {
                name: "a".into(),
                version: "2.0.0".into(),
                source: "path".into(),
            },
            CrateVersion {
                name: "a".into(),
                version: "2.0.0".into(),
                source: "path".into(),
            },
        ]);
        assert_eq!(a.crates.len(), 2);
        assert_eq!(a.crates[0].name, "a");
        let back: Sbom = serde_json::from_slice(&a.canonical_json()).unwrap();
        assert_eq!(back, a);
        assert_eq!(back.build_id(), a.build_id());
    }

    #[test]
    fn metadata_parse_rejects_garbage() {
        assert!(parse_metadata(b"{").is_err());
        assert!(parse_metadata(b"{}").is_err());
        let v = parse_metadata(br#"{"packages":[{"id":"x","name":"x","version":"1.0.0","source":null},{"id":"y","name":"y","version":"2.0.0","source":"registry+https://github.com/rust-lang/crates.io-index"}],"resolve":{"nodes":[{"id":"y"}]}}"#).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].name, "y");
    }
}
