//! Partition layouts and partition tables for krazy images.
//!
//! A [`Layout`] places the partitions of one platform on a disk of a given
//! size; a [`PartitionTable`] adds GUIDs derived from an [`InstanceId`] and
//! writes the GPT (primary and backup) with a protective (`pc`) or hybrid
//! (`pi3`) MBR; [`read_gpt`] and [`read_mbr`] read them back from untrusted
//! bytes, and [`find_by_partuuid`] finds a partition on a running system.
//!
//! ```
//! use std::io::Cursor;
//! use krazy_disk::{read_gpt, Arch, HeaderCopy, InstanceId, Layout, LayoutOptions,
//!                  PartitionTable, Platform, Role};
//!
//! const MIB: u64 = 1 << 20;
//! // A small disk, so the example fits in memory; a real one uses the defaults.
//! let opts = LayoutOptions::default().with_esp_bytes(8 * MIB).with_root_bytes(16 * MIB);
//! let layout = Layout::new(Platform::Pc, Arch::X86_64, 64 * MIB, &opts)?;
//! let perm = layout.partition(Role::Perm).unwrap();
//! assert_eq!((perm.number, perm.start_bytes()), (4, 44 * MIB));
//!
//! let table = PartitionTable::from_layout(&layout, &InstanceId::new("my-instance")?)?;
//! let mut disk = Cursor::new(vec![0u8; 64 * MIB as usize]); // or a sparse file
//! table.write(&mut disk)?;
//!
//! let gpt = read_gpt(&mut disk, 64 * MIB)?;
//! assert_eq!(gpt.used, HeaderCopy::Primary);
//! let root_a = table.entry(Role::RootA).unwrap();
//! assert_eq!(gpt.find(root_a.guid).unwrap().number, 2);
//! println!("{}", root_a.root_arg()); // root=PARTUUID=...
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
// Casts are decisions: these parse outside bytes, so a narrowing cast says
// why it cannot lose bits (or becomes a `try_from` with a typed error).
#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

pub mod guid;
pub mod layout;
pub mod platform;
pub mod read;
pub mod sysfs;
pub mod table;

pub use guid::{Guid, GuidParseError, InstanceId, InstanceIdError};
pub use layout::{Layout, LayoutError, LayoutOptions, Partition, Role};
pub use platform::{Arch, Platform, UnknownPlatform};
pub use read::{
    read_gpt, read_mbr, Gpt, GptError, GptHeader, GptPartition, HeaderCopy, Mbr, MbrEntry,
    MbrError, MbrKind,
};
pub use sysfs::{find_by_partuuid, partition_device, FindError, FoundPartition};
pub use table::{PartitionTable, TableEntry, TableError};

/// The README's code blocks, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
