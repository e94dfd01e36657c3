//! What squashfs can store of the tree's entries: times, device
//! numbers, symlink lengths, and the table of distinct uids and gids.

// A writer: its casts narrow values the validated tree and the geometry
// computed before bound (block counts, entry counts, name lengths); they are
// not yet each turned into a `try_from` (issue 13), so the crate's cast
// lints are allowed in this file only.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use super::*;

pub(super) fn check_entries(v: &Validated<'_>) -> Result<(), Error> {
    for node in &v.nodes {
        let e = node.entry;
        if e.mtime > u32::MAX as u64 {
            return Err(Error::TimeOutOfRange {
                path: node.path.to_string(),
                mtime: e.mtime,
            });
        }
        match &e.kind {
            Kind::CharDevice { major, minor } => {
                encode_dev(*major, *minor).ok_or_else(|| Error::DeviceNumber {
                    path: node.path.to_string(),
                    major: *major,
                    minor: *minor,
                })?;
            }
            Kind::Symlink(t) if t.is_empty() || t.len() > MAX_SYMLINK => {
                return Err(Error::SymlinkTarget {
                    path: node.path.to_string(),
                    len: t.len(),
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// Linux's `new_encode_dev`, which squashfs stores.
pub(super) fn encode_dev(major: u32, minor: u32) -> Option<u32> {
    if major >= 1 << 12 || minor >= 1 << 20 {
        return None;
    }
    Some((minor & 0xff) | (major << 8) | ((minor & !0xff) << 12))
}

/// Distinct uids and gids, sorted, and their indices.
pub(super) struct IdTable {
    pub(super) ids: Vec<u32>,
}

impl IdTable {
    pub(super) fn new(v: &Validated<'_>) -> Result<Self, Error> {
        let mut ids: Vec<u32> = v
            .nodes
            .iter()
            .flat_map(|n| [n.entry.uid, n.entry.gid])
            .collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() > 1 << 16 {
            return Err(Error::TooManyIds { count: ids.len() });
        }
        Ok(Self { ids })
    }

    pub(super) fn index(&self, id: u32) -> u16 {
        // Every id of the tree is in the table, and there are at most 2^16.
        self.ids.binary_search(&id).unwrap_or(0) as u16
    }
}
