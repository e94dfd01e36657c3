//! Metadata blocks: bytes packed into 8 KiB blocks, each compressed when
//! that helps, and the tables indexed by their blocks' positions.

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

/// Packs bytes into 8 KiB metadata blocks, each compressed when that helps.
pub(super) struct MetaWriter<'c> {
    pub(super) codec: &'c Codec,
    pub(super) out: Vec<u8>,
    pub(super) cur: Vec<u8>,
}

impl<'c> MetaWriter<'c> {
    pub(super) fn new(codec: &'c Codec) -> Self {
        Self {
            codec,
            out: Vec::new(),
            cur: Vec::with_capacity(METADATA_SIZE),
        }
    }

    /// The reference of the next byte: block start << 16 | offset.
    pub(super) fn pos(&self) -> (u64, u16) {
        (self.out.len() as u64, self.cur.len() as u16)
    }

    pub(super) fn push(&mut self, mut b: &[u8]) -> Result<(), Error> {
        while !b.is_empty() {
            let take = (METADATA_SIZE - self.cur.len()).min(b.len());
            self.cur.extend_from_slice(&b[..take]);
            b = &b[take..];
            if self.cur.len() == METADATA_SIZE {
                self.flush()?;
            }
        }
        Ok(())
    }

    pub(super) fn flush(&mut self) -> Result<(), Error> {
        match self.codec.compress(&self.cur)? {
            Some(c) => {
                self.out.extend_from_slice(&(c.len() as u16).to_le_bytes());
                self.out.extend_from_slice(&c);
            }
            None => {
                let h = self.cur.len() as u16 | METADATA_UNCOMPRESSED;
                self.out.extend_from_slice(&h.to_le_bytes());
                self.out.extend_from_slice(&self.cur);
            }
        }
        self.cur.clear();
        Ok(())
    }

    pub(super) fn finish(mut self) -> Result<Vec<u8>, Error> {
        if !self.cur.is_empty() {
            self.flush()?;
        }
        Ok(self.out)
    }
}

/// Writes `bytes` as metadata blocks followed by their index of u64
/// positions (the fragment and id tables); returns the index's position.
pub(super) fn write_table<W: Write>(
    w: &mut Out<'_, W>,
    bytes: &[u8],
    codec: &Codec,
) -> Result<u64, Error> {
    let mut index = Vec::new();
    for chunk in bytes.chunks(METADATA_SIZE) {
        index.extend_from_slice(&w.pos.to_le_bytes());
        let mut m = MetaWriter::new(codec);
        m.push(chunk)?;
        w.write(&m.finish()?)?;
    }
    let start = w.pos;
    w.write(&index)?;
    Ok(start)
}
