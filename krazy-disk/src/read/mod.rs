//! Reading a GPT and an MBR back from untrusted bytes: every malformed table
//! is a typed error, nothing panics, and no allocation exceeds
//! [`MAX_ENTRY_ARRAY_BYTES`].
//!
//! One file per table: `gpt.rs` (both headers, their entry arrays and which
//! copy to use) and `mbr.rs` (LBA 0: protective, hybrid or plain).

mod gpt;
mod mbr;

pub use gpt::{
    read_gpt, Gpt, GptError, GptHeader, GptPartition, HeaderCopy, MAX_ENTRY_ARRAY_BYTES,
    MAX_ENTRY_SIZE,
};
pub use mbr::{read_mbr, Mbr, MbrEntry, MbrError, MbrKind};

use crate::guid::Guid;

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        x.copy_from_slice(s);
    }
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        x.copy_from_slice(s);
    }
    u64::from_le_bytes(x)
}

fn guid_at(b: &[u8], at: usize) -> Guid {
    let mut x = [0u8; 16];
    if let Some(s) = b.get(at..at + 16) {
        x.copy_from_slice(s);
    }
    Guid::from_gpt_bytes(x)
}
