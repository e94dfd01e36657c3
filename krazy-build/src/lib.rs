//! krazy-build: the thin library that turns a `krazy.toml` into the parts of
//! a krazy appliance image.
//!
//! It owns the configuration ([`config`]), unpacking Debian packages in pure
//! Rust ([`deb`]), kernels with their module closure and the `krazy.lock`
//! ([`kernel`]), boot firmware ([`firmware`]), checks that binaries are static and of the right
//! architecture ([`elf`]), building static binaries with cargo ([`cargo`]),
//! an instance's secrets ([`secrets`]), the SBOM that names a build
//! ([`sbom`]), image assembly ([`image`], [`pipeline`]), writing an image
//! onto a disk or SD card ([`flash`]), and the QEMU runner for `krazy vm run`
//! and the end-to-end tests ([`vm`]). The file systems and partition tables are written by
//! `krazy-fs` and `krazy-disk`.
//!
//! ```
//! use krazy_build::config::{Config, KernelSource, Platform};
//! use std::path::Path;
//!
//! let text = r#"
//! hostname = "hello-krazy"
//! instance_id = "0f6c2a9e"
//! [kernel]
//! deb = "kernels/linux-image.deb"
//! "#;
//! let config = Config::from_toml_str(text, Path::new("/inst/krazy.toml"), Path::new("/inst"))?;
//! assert_eq!(config.platform, Platform::Pc);
//! assert_eq!(config.kernel, KernelSource::Deb("/inst/kernels/linux-image.deb".into()));
//! # Ok::<(), krazy_build::config::ConfigError>(())
//! ```

pub mod board;
pub mod cargo;
pub mod config;
pub mod deb;
pub mod elf;
pub mod firmware;
pub mod flash;
pub mod image;
pub mod kernel;
pub mod pipeline;
pub mod remote;
pub mod sbom;
pub mod secrets;
pub mod update;
pub mod vm;

/// Helpers shared by the unit tests.
#[cfg(test)]
pub(crate) mod test_util {
    /// `e` and its causes as a `{:#}`-style chain printer shows them, to
    /// check that each cause is printed once.
    pub(crate) fn chain(e: &dyn std::error::Error) -> String {
        krazy_update::client::chain(e)
    }
}

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
