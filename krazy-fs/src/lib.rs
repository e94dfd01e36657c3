//! On-disk formats for krazy images.
//!
//! Every writer takes the same in-memory [`Tree`] and writes through the
//! [`BlockDevice`] trait (a file window or memory), so nothing here needs
//! root or a kernel.
//!
//! ```
//! use krazy_fs::{Contents, NameRules, Tree};
//! let mut tree = Tree::new();
//! tree.add_dir("etc", 0o755, 0).unwrap();
//! tree.add_file("etc/hostname", Contents::bytes("hello\n"), 0o644, 0).unwrap();
//! tree.add_symlink("etc/resolv.conf", "/run/resolv.conf", 0).unwrap();
//! let v = tree.validate(&NameRules::UNIX).unwrap();
//! assert_eq!(v.nodes.len(), 4);
//! ```
#![forbid(unsafe_code)]
// Casts are decisions: these parse outside bytes, so a narrowing cast says
// why it cannot lose bits (or becomes a `try_from` with a typed error).
#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

pub mod cpio;
pub mod dev;
pub mod ext4;
pub mod fat;
pub mod ranges;
#[cfg(feature = "squashfs")]
pub mod squashfs;
pub mod tree;

pub use dev::{BlockDevice, FileDevice, MemDevice};
pub use tree::{Contents, Entry, FromDirOptions, Kind, NameRules, Tree, TreeError, Validated};

/// The README's code blocks, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
