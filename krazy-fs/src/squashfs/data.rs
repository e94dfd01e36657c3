//! File contents: read in tree order on a helper thread, tails packed
//! into fragments, blocks compressed in parallel (rayon) and written in
//! order, equal files stored once.

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

/// A fragment block index and an offset in it.
pub(super) type Fragment = (u32, u32);

/// Where one file's contents went.
#[derive(Debug, Default, Clone)]
pub(super) struct FileData {
    pub(super) size: u64,
    pub(super) blocks_start: u64,
    /// Stored size of each block (bit 24: uncompressed; 0: a hole of zeros).
    pub(super) blocks: Vec<u32>,
    /// Fragment index and offset of the tail, if the tail is in a fragment.
    pub(super) fragment: Option<Fragment>,
    pub(super) sparse: u64,
}

pub(super) struct DataOut {
    /// Per node index; default for non-files.
    pub(super) files: Vec<FileData>,
    /// Start and stored size of each fragment block.
    pub(super) fragments: Vec<(u64, u32)>,
    pub(super) data_bytes: u64,
}

/// Work for the compressor threads, in output order.
pub(super) enum Job {
    /// A full or final block of file `node`.
    Block { node: usize, data: Vec<u8> },
    /// A block of zeros of file `node`, stored as a hole.
    Hole { node: usize },
    /// A fragment block.
    Fragment { data: Vec<u8> },
}

/// What the reader thread learned about files, beside the jobs it sent.
pub(super) struct ReadOut {
    /// Node, size and fragment of each file written.
    pub(super) sizes: Vec<(usize, u64, Option<Fragment>)>,
    /// Files whose contents equal an earlier file's: (node, earlier node).
    pub(super) dups: Vec<(usize, usize)>,
}

/// Reads every file in tree order on a helper thread, packing tails into
/// fragments, while this thread compresses batches in parallel and writes
/// them in order.
pub(super) fn write_data<W: Write>(
    w: &mut Out<'_, W>,
    v: &Validated<'_>,
    codec: &Codec,
    block_size: u32,
    tail_ends: bool,
    dedup: bool,
) -> Result<DataOut, Error> {
    let mut files = vec![FileData::default(); v.nodes.len()];
    let mut fragments = Vec::new();
    let (tx, rx) = mpsc::sync_channel::<Vec<Job>>(2);
    let read = std::thread::scope(|s| {
        let reader = s.spawn(move || read_files(v, block_size as usize, tail_ends, dedup, tx));
        let mut result = Ok(());
        for batch in rx {
            if result.is_err() {
                continue; // drain so the reader finishes
            }
            result = write_batch(w, codec, batch, block_size, &mut files, &mut fragments);
        }
        let read = match reader.join() {
            Ok(r) => r,
            Err(p) => std::panic::resume_unwind(p),
        };
        result.and(read)
    })?;
    let mut data_bytes = 0;
    for (node, size, fragment) in read.sizes {
        let f = &mut files[node];
        f.size = size;
        f.fragment = fragment;
        data_bytes += size;
    }
    for (node, orig) in read.dups {
        files[node] = files[orig].clone();
        data_bytes += files[node].size;
    }
    Ok(DataOut {
        files,
        fragments,
        data_bytes,
    })
}

pub(super) fn write_batch<W: Write>(
    w: &mut Out<'_, W>,
    codec: &Codec,
    batch: Vec<Job>,
    block_size: u32,
    files: &mut [FileData],
    fragments: &mut Vec<(u64, u32)>,
) -> Result<(), Error> {
    let compressed: Vec<Option<Vec<u8>>> = batch
        .par_iter()
        .map(|job| match job {
            Job::Block { data, .. } | Job::Fragment { data } => codec.compress(data),
            Job::Hole { .. } => Ok(None),
        })
        .collect::<Result<_, _>>()?;
    for (job, c) in batch.into_iter().zip(compressed) {
        let (raw, node) = match &job {
            Job::Block { node, data } => (Some(data), Some(*node)),
            Job::Hole { node } => (None, Some(*node)),
            Job::Fragment { data } => (Some(data), None),
        };
        let start = w.pos;
        let size = match (raw, c) {
            (None, _) => 0,
            (Some(_), Some(c)) => {
                w.write(&c)?;
                c.len() as u32
            }
            (Some(raw), None) => {
                w.write(raw)?;
                raw.len() as u32 | DATA_UNCOMPRESSED
            }
        };
        match node {
            Some(node) => {
                let f = &mut files[node];
                if f.blocks.is_empty() {
                    f.blocks_start = start;
                }
                if raw.is_none() {
                    f.sparse += block_size as u64;
                }
                f.blocks.push(size);
            }
            None => fragments.push((start, size)),
        }
    }
    Ok(())
}

pub(super) fn read_files(
    v: &Validated<'_>,
    bs: usize,
    tail_ends: bool,
    dedup: bool,
    tx: mpsc::SyncSender<Vec<Job>>,
) -> Result<ReadOut, Error> {
    let mut sizes = Vec::new();
    let mut seen: HashMap<(u64, [u8; 32]), usize> = HashMap::new();
    let mut dups = Vec::new();
    let mut batch = Vec::new();
    let mut batch_bytes = 0;
    let mut frag = Vec::with_capacity(bs);
    let mut frag_count = 0u32;
    let send = |batch: &mut Vec<Job>, bytes: &mut usize| {
        *bytes = 0;
        // A closed channel means the writer failed; it reports its error.
        tx.send(std::mem::take(batch)).is_ok()
    };
    for (node, n) in v.nodes.iter().enumerate() {
        let Kind::File(contents) = &n.entry.kind else {
            continue;
        };
        let rerr = |source| Error::Read {
            path: n.path.to_string(),
            source,
        };
        // Small files are read once into memory; larger ones are streamed,
        // twice when deduplicating (a hashing pass first).
        let whole = match contents {
            Contents::Bytes(b) => Some(b.clone()),
            Contents::Host(_) if contents.len().map_err(rerr)? <= WHOLE_FILE_MAX => {
                Some(contents.read_all().map_err(rerr)?)
            }
            Contents::Host(_) => None,
        };
        if dedup {
            let key = match &whole {
                Some(b) => (b.len() as u64, Sha256::digest(b).into()),
                None => {
                    let mut h = Sha256::new();
                    let mut r = contents.open().map_err(rerr)?;
                    let len = io::copy(&mut r, &mut h).map_err(rerr)?;
                    (len, h.finalize().into())
                }
            };
            if key.0 > 0 {
                if let Some(&orig) = seen.get(&key) {
                    dups.push((node, orig));
                    continue;
                }
                seen.insert(key, node);
            }
        }
        let mut r: Box<dyn Read + Send + '_> = match &whole {
            Some(b) => Box::new(&b[..]),
            None => contents.open().map_err(rerr)?,
        };
        let mut size = 0u64;
        let mut full_blocks = 0u64;
        let mut fragment = None;
        loop {
            let mut buf = vec![0u8; bs];
            let got = read_full(&mut r, &mut buf).map_err(rerr)?;
            size += got as u64;
            buf.truncate(got);
            if got == bs {
                full_blocks += 1;
                batch_bytes += got;
                if buf.iter().all(|&b| b == 0) {
                    batch.push(Job::Hole { node });
                } else {
                    batch.push(Job::Block { node, data: buf });
                }
                if batch_bytes >= BATCH_BYTES && !send(&mut batch, &mut batch_bytes) {
                    return Ok(ReadOut { sizes, dups });
                }
                continue;
            }
            if got > 0 {
                if full_blocks == 0 || tail_ends {
                    if frag.len() + got > bs {
                        batch.push(Job::Fragment {
                            data: std::mem::replace(&mut frag, Vec::with_capacity(bs)),
                        });
                        frag_count += 1;
                    }
                    fragment = Some((frag_count, frag.len() as u32));
                    frag.extend_from_slice(&buf);
                } else {
                    batch_bytes += got;
                    batch.push(Job::Block { node, data: buf });
                }
            }
            break;
        }
        sizes.push((node, size, fragment));
    }
    if !frag.is_empty() {
        batch.push(Job::Fragment { data: frag });
    }
    send(&mut batch, &mut batch_bytes);
    Ok(ReadOut { sizes, dups })
}

/// Reads until `buf` is full or the reader ends; returns the count.
pub(super) fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}
