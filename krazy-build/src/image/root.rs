//! The root tree and the initramfs, and the small tree helpers the boards
//! share.

use std::fs;
use std::path::Path;

use krazy_fs::tree::{Contents, Entry, Kind, Tree};

use super::tables::{services_toml, update_toml, web_toml};
use super::{tree_err, ImageError, Inputs, MIN_VERSION_PATH, SERVICES_PATH, UPDATE_PATH, WEB_PATH};

pub(crate) fn add_dirs(t: &mut Tree, dirs: &[&str], mtime: u64) -> Result<(), ImageError> {
    for d in dirs {
        t.add_dir_all(d, mtime)
            .map_err(tree_err(format!("root: /{d}")))?;
    }
    Ok(())
}

pub(crate) fn add_bytes(
    t: &mut Tree,
    tree: &str,
    path: &str,
    bytes: impl Into<Vec<u8>>,
    mode: u32,
    mtime: u64,
) -> Result<(), ImageError> {
    add_contents(t, tree, path, Contents::bytes(bytes.into()), mode, mtime)
}

pub(crate) fn add_host(
    t: &mut Tree,
    tree: &str,
    path: &str,
    host: &Path,
    mode: u32,
    mtime: u64,
) -> Result<(), ImageError> {
    add_contents(
        t,
        tree,
        path,
        Contents::Host(host.to_path_buf()),
        mode,
        mtime,
    )
}

/// Adds a file at `path` of `tree`, with its parent directories.
pub(crate) fn add_contents(
    t: &mut Tree,
    tree: &str,
    path: &str,
    contents: Contents,
    mode: u32,
    mtime: u64,
) -> Result<(), ImageError> {
    if let Some((parent, _)) = path.rsplit_once('/') {
        t.add_dir_all(parent, mtime)
            .map_err(tree_err(format!("{tree}: /{parent}")))?;
    }
    t.add_file(path, contents, mode, mtime)
        .map_err(tree_err(format!("{tree}: /{path}")))
}

/// The root tree without the SBOM and build id.
pub(crate) fn root_tree(inputs: &Inputs, modules: Option<&Tree>) -> Result<Tree, ImageError> {
    let c = &inputs.config;
    let m = inputs.mtime;
    let mut t = Tree::new();
    t.root_mut().mtime = m;
    add_dirs(
        &mut t,
        &[
            "dev",
            "proc",
            "sys",
            "tmp",
            "run",
            "perm",
            "etc/krazy",
            "krazy",
            "user",
        ],
        m,
    )?;
    for p in &inputs.programs {
        add_host(&mut t, "root", &p.dest, &p.host, 0o755, m)?;
    }
    add_bytes(
        &mut t,
        "root",
        "etc/hostname",
        format!("{}\n", c.hostname),
        0o644,
        m,
    )?;
    add_bytes(
        &mut t,
        "root",
        "etc/hosts",
        format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\t{}\n",
            c.hostname
        ),
        0o644,
        m,
    )?;
    t.add_symlink("etc/resolv.conf", "/run/resolv.conf", m)
        .map_err(tree_err("root: /etc/resolv.conf"))?;
    if let Some(ca) = &inputs.ca_bundle {
        add_host(
            &mut t,
            "root",
            "etc/ssl/certs/ca-certificates.crt",
            ca,
            0o644,
            m,
        )?;
    }
    add_bytes(&mut t, "root", SERVICES_PATH, services_toml(c), 0o644, m)?;
    add_bytes(&mut t, "root", UPDATE_PATH, update_toml(c), 0o644, m)?;
    add_bytes(&mut t, "root", WEB_PATH, web_toml(c), 0o644, m)?;
    add_bytes(
        &mut t,
        "root",
        "etc/krazy/password",
        format!("{}\n", inputs.secrets.password_hash),
        0o600,
        m,
    )?;
    add_bytes(
        &mut t,
        "root",
        "etc/krazy/update.pub",
        krazy_update::protocol::PublicKey(inputs.secrets.update_public_key).to_text(),
        0o644,
        m,
    )?;
    // The version floor a device falls back to when its update state is
    // lost: the build epoch (reproducible, unlike the signing time).
    add_bytes(
        &mut t,
        "root",
        MIN_VERSION_PATH,
        format!("{}\n", m.max(1)),
        0o644,
        m,
    )?;
    if let Some((cert, key)) = &inputs.secrets.tls {
        add_bytes(
            &mut t,
            "root",
            "etc/krazy/tls/cert.pem",
            cert.clone(),
            0o644,
            m,
        )?;
        add_bytes(
            &mut t,
            "root",
            "etc/krazy/tls/key.pem",
            key.clone(),
            0o600,
            m,
        )?;
    }
    if let Some(mods) = modules {
        for (path, e) in mods.iter() {
            if t.get(path).is_none() {
                t.insert(path, e.clone())
                    .map_err(tree_err(format!("root: /{path}")))?;
            }
        }
    }
    for f in &c.file {
        let dest = f.path.trim_start_matches('/').to_string();
        let contents = match (&f.contents, &f.source) {
            (Some(s), _) => Contents::bytes(s.as_bytes().to_vec()),
            (None, Some(src)) => {
                let b = fs::read(src).map_err(|source| ImageError::FileSource {
                    dest: f.path.clone(),
                    source_path: src.clone(),
                    source,
                })?;
                Contents::bytes(b)
            }
            (None, None) => Contents::bytes(Vec::new()),
        };
        if let Some((parent, _)) = dest.rsplit_once('/') {
            t.add_dir_all(parent, m)
                .map_err(tree_err(format!("[[file]] {}", f.path)))?;
        }
        // A [[file]] replaces what krazy put there (an /etc/hosts, say).
        t.remove(&dest);
        t.add_file(&dest, contents, f.mode.0, m)
            .map_err(tree_err(format!("[[file]] {}", f.path)))?;
    }
    Ok(t)
}

/// The initramfs: krazy-init as `/init`, the module closure and
/// `/modules.order` listing it with absolute paths.
pub(crate) fn initramfs(
    init: &Path,
    version: &str,
    modules: &Tree,
    order: &[String],
    mtime: u64,
) -> Result<Vec<u8>, ImageError> {
    let mut t = Tree::new();
    t.root_mut().mtime = mtime;
    add_dirs(&mut t, &["dev", "proc", "sys", "root"], mtime)?;
    let mut console = Entry::new(Kind::CharDevice { major: 5, minor: 1 }, 0o600);
    console.mtime = mtime;
    t.insert("dev/console", console)
        .map_err(tree_err("initramfs: /dev/console"))?;
    add_host(&mut t, "initramfs", "init", init, 0o755, mtime)?;
    for (path, e) in modules.iter() {
        if (path == "lib" || path.starts_with("lib/")) && t.get(path).is_none() {
            t.insert(path, e.clone())
                .map_err(tree_err(format!("initramfs: /{path}")))?;
        }
    }
    let list: String = order
        .iter()
        .map(|rel| format!("/lib/modules/{version}/{rel}\n"))
        .collect();
    add_bytes(&mut t, "initramfs", "modules.order", list, 0o644, mtime)?;
    let mut out = Vec::new();
    krazy_fs::cpio::write(
        &mut out,
        &t,
        &krazy_fs::cpio::CpioOptions {
            gzip: true,
            level: 9,
        },
    )
    .map_err(|e| ImageError::FileSystem {
        part: "initramfs",
        reason: e.to_string(),
    })?;
    Ok(out)
}

pub(crate) fn file_len(p: &Path) -> Result<u64, ImageError> {
    fs::metadata(p)
        .map(|m| m.len())
        .map_err(|source| ImageError::Io {
            path: p.to_path_buf(),
            source,
        })
}

pub(crate) fn check_capacity(path: &str, size: u64, capacity: u64) -> Result<(), ImageError> {
    if size > capacity {
        return Err(ImageError::TooLarge {
            path: path.into(),
            size,
            capacity,
        });
    }
    Ok(())
}
