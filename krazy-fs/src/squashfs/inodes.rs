//! The inode and directory tables: inodes in post order (a directory
//! after its children), and each directory's listing.

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

/// Node indices with every directory after its children, children in name
/// order: the order of inodes (and of inode numbers), the root last.
pub(super) fn post_order(v: &Validated<'_>) -> Vec<usize> {
    let mut order = Vec::with_capacity(v.nodes.len());
    // (node, next child position)
    let mut stack = vec![(0usize, 0usize)];
    while let Some(top) = stack.last_mut() {
        let (node, pos) = *top;
        let children = &v.nodes[node].children;
        if pos < children.len() {
            top.1 += 1;
            let c = children[pos];
            if v.nodes[c].entry.is_dir() {
                stack.push((c, 0));
            } else {
                order.push(c);
            }
        } else {
            order.push(node);
            stack.pop();
        }
    }
    order
}

pub(super) struct Tables {
    pub(super) inodes: Vec<u8>,
    pub(super) dirs: Vec<u8>,
    pub(super) root_ref: u64,
}

/// A directory entry as its listing needs it.
pub(super) struct DirEntry<'a> {
    pub(super) name: &'a str,
    pub(super) block: u64,
    pub(super) offset: u16,
    pub(super) number: u32,
    pub(super) kind: u16,
}

pub(super) fn write_inodes_and_dirs(
    v: &Validated<'_>,
    order: &[usize],
    number: &[u32],
    files: &[FileData],
    ids: &IdTable,
    codec: &Codec,
) -> Result<Tables, Error> {
    let n = v.nodes.len();
    let mut inodes = MetaWriter::new(codec);
    let mut dirs = MetaWriter::new(codec);
    // Where each node's inode went, and its basic type.
    let mut at: Vec<(u64, u16, u16)> = vec![(0, 0, 0); n];
    let mut ino = Vec::with_capacity(64);
    for &i in order {
        let node = &v.nodes[i];
        let e = node.entry;
        ino.clear();
        let header = |ino: &mut Vec<u8>, t: u16| {
            ino.extend_from_slice(&t.to_le_bytes());
            ino.extend_from_slice(&((e.mode & 0o7777) as u16).to_le_bytes());
            ino.extend_from_slice(&ids.index(e.uid).to_le_bytes());
            ino.extend_from_slice(&ids.index(e.gid).to_le_bytes());
            ino.extend_from_slice(&(e.mtime as u32).to_le_bytes());
            ino.extend_from_slice(&number[i].to_le_bytes());
        };
        let basic = match &e.kind {
            Kind::Dir => {
                let (block, offset) = dirs.pos();
                let listing = dir_listing(v, i, &at, number);
                dirs.push(&listing)?;
                let size = listing.len() as u64 + 3;
                let subdirs = node
                    .children
                    .iter()
                    .filter(|&&c| v.nodes[c].entry.is_dir())
                    .count() as u32;
                let parent = if i == 0 {
                    n as u32 + 1
                } else {
                    number[node.parent]
                };
                if size <= u16::MAX as u64 && block <= u32::MAX as u64 {
                    header(&mut ino, T_DIR);
                    ino.extend_from_slice(&(block as u32).to_le_bytes());
                    ino.extend_from_slice(&(2 + subdirs).to_le_bytes());
                    ino.extend_from_slice(&(size as u16).to_le_bytes());
                    ino.extend_from_slice(&offset.to_le_bytes());
                    ino.extend_from_slice(&parent.to_le_bytes());
                } else {
                    header(&mut ino, T_LDIR);
                    ino.extend_from_slice(&(2 + subdirs).to_le_bytes());
                    ino.extend_from_slice(&(size as u32).to_le_bytes());
                    ino.extend_from_slice(&(block as u32).to_le_bytes());
                    ino.extend_from_slice(&parent.to_le_bytes());
                    ino.extend_from_slice(&0u16.to_le_bytes()); // no index
                    ino.extend_from_slice(&offset.to_le_bytes());
                    ino.extend_from_slice(&NO_XATTR.to_le_bytes());
                }
                T_DIR
            }
            Kind::File(_) => {
                let f = &files[i];
                let (frag, frag_off) = f.fragment.unwrap_or((NO_FRAGMENT, 0));
                if f.blocks_start <= u32::MAX as u64 && f.size <= u32::MAX as u64 {
                    header(&mut ino, T_FILE);
                    ino.extend_from_slice(&(f.blocks_start as u32).to_le_bytes());
                    ino.extend_from_slice(&frag.to_le_bytes());
                    ino.extend_from_slice(&frag_off.to_le_bytes());
                    ino.extend_from_slice(&(f.size as u32).to_le_bytes());
                } else {
                    header(&mut ino, T_LFILE);
                    ino.extend_from_slice(&f.blocks_start.to_le_bytes());
                    ino.extend_from_slice(&f.size.to_le_bytes());
                    ino.extend_from_slice(&f.sparse.to_le_bytes());
                    ino.extend_from_slice(&1u32.to_le_bytes());
                    ino.extend_from_slice(&frag.to_le_bytes());
                    ino.extend_from_slice(&frag_off.to_le_bytes());
                    ino.extend_from_slice(&NO_XATTR.to_le_bytes());
                }
                for b in &f.blocks {
                    ino.extend_from_slice(&b.to_le_bytes());
                }
                T_FILE
            }
            Kind::Symlink(target) => {
                header(&mut ino, T_SYMLINK);
                ino.extend_from_slice(&1u32.to_le_bytes());
                ino.extend_from_slice(&(target.len() as u32).to_le_bytes());
                ino.extend_from_slice(target.as_bytes());
                T_SYMLINK
            }
            Kind::CharDevice { major, minor } => {
                header(&mut ino, T_CHR);
                ino.extend_from_slice(&1u32.to_le_bytes());
                // Checked by check_entries.
                let dev = encode_dev(*major, *minor).unwrap_or(0);
                ino.extend_from_slice(&dev.to_le_bytes());
                T_CHR
            }
        };
        let (block, offset) = inodes.pos();
        at[i] = (block, offset, basic);
        inodes.push(&ino)?;
    }
    let (rb, ro, _) = at[0];
    Ok(Tables {
        inodes: inodes.finish()?,
        dirs: dirs.finish()?,
        root_ref: (rb << 16) | ro as u64,
    })
}

/// The listing of directory `dir`: runs of entries under headers that
/// share one inode metadata block and a base inode number.
pub(super) fn dir_listing(
    v: &Validated<'_>,
    dir: usize,
    at: &[(u64, u16, u16)],
    number: &[u32],
) -> Vec<u8> {
    let entries: Vec<DirEntry<'_>> = v.nodes[dir]
        .children
        .iter()
        .map(|&c| DirEntry {
            name: v.nodes[c].name,
            block: at[c].0,
            offset: at[c].1,
            number: number[c],
            kind: at[c].2,
        })
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < entries.len() {
        let first = &entries[i];
        let mut j = i;
        while j < entries.len()
            && j - i < 256
            && entries[j].block == first.block
            && i16::try_from(entries[j].number as i64 - first.number as i64).is_ok()
        {
            j += 1;
        }
        out.extend_from_slice(&((j - i - 1) as u32).to_le_bytes());
        out.extend_from_slice(&(first.block as u32).to_le_bytes());
        out.extend_from_slice(&first.number.to_le_bytes());
        for e in &entries[i..j] {
            out.extend_from_slice(&e.offset.to_le_bytes());
            let diff = (e.number as i64 - first.number as i64) as i16;
            out.extend_from_slice(&diff.to_le_bytes());
            out.extend_from_slice(&e.kind.to_le_bytes());
            out.extend_from_slice(&((e.name.len() - 1) as u16).to_le_bytes());
            out.extend_from_slice(e.name.as_bytes());
        }
        i = j;
    }
    out
}
