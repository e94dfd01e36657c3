//! Bounded ring buffers of output lines that any number of readers can follow live.
//!
//! A [`LogBuffer`] keeps the newest lines of one stream within a line and a
//! byte bound. Followers get a snapshot plus every later line through a
//! bounded broadcast channel: a follower that falls behind loses the oldest
//! lines and sees a [`LogItem::Dropped`] marker instead, and the writer (the
//! service's output pipe) never waits for a follower.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use tokio::sync::broadcast;

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One line of output (without its newline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Order across both streams of one service.
    pub seq: u64,
    /// When it was read.
    pub at: SystemTime,
    /// Its stream.
    pub stream: Stream,
    /// The text (invalid UTF-8 replaced).
    pub text: Arc<str>,
}

/// What a follower receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogItem {
    /// A line.
    Line(Arc<LogLine>),
    /// This many lines of this stream were lost because the follower was too slow.
    Dropped(Stream, u64),
}

impl LogItem {
    /// The text shown for this item; a drop reads `[krazy: N lines dropped]`.
    pub fn text(&self) -> String {
        match self {
            LogItem::Line(l) => l.text.to_string(),
            LogItem::Dropped(_, n) => format!("[krazy: {n} lines dropped]"),
        }
    }
}

/// Lines queued per follower before it starts losing lines.
pub const FOLLOWER_QUEUE: usize = 256;
/// Longest line kept; longer output is split.
pub const MAX_LINE: usize = 16 * 1024;

struct Ring {
    lines: VecDeque<Arc<LogLine>>,
    bytes: usize,
}

/// The ring buffer of one stream.
pub struct LogBuffer {
    stream: Stream,
    max_lines: usize,
    max_bytes: usize,
    ring: Mutex<Ring>,
    tx: broadcast::Sender<Arc<LogLine>>,
    seq: Arc<AtomicU64>,
}

impl LogBuffer {
    /// A buffer holding at most `max_lines` lines and `max_bytes` bytes of text.
    /// `seq` numbers lines across the streams of one service.
    pub fn new(stream: Stream, max_lines: usize, max_bytes: usize, seq: Arc<AtomicU64>) -> Self {
        let (tx, _) = broadcast::channel(FOLLOWER_QUEUE);
        LogBuffer {
            stream,
            max_lines: max_lines.max(1),
            max_bytes: max_bytes.max(1),
            ring: Mutex::new(Ring {
                lines: VecDeque::new(),
                bytes: 0,
            }),
            tx,
            seq,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one line (truncated to the byte bound), dropping the oldest as needed.
    pub fn push(&self, text: &str) {
        let limit = self.max_bytes.min(MAX_LINE);
        let mut end = text.len().min(limit);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let text: Arc<str> = Arc::from(&text[..end]);
        let mut ring = self.lock();
        let line = Arc::new(LogLine {
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            at: SystemTime::now(),
            stream: self.stream,
            text,
        });
        ring.bytes += line.text.len();
        ring.lines.push_back(line.clone());
        while ring.lines.len() > self.max_lines || ring.bytes > self.max_bytes {
            match ring.lines.pop_front() {
                Some(old) => ring.bytes -= old.text.len(),
                None => break,
            }
        }
        // No receivers is fine; a full channel overwrites its oldest entry.
        let _ = self.tx.send(line);
    }

    /// The lines held now, oldest first.
    pub fn snapshot(&self) -> Vec<Arc<LogLine>> {
        self.lock().lines.iter().cloned().collect()
    }

    /// Number of lines and bytes held now.
    pub fn usage(&self) -> (usize, usize) {
        let r = self.lock();
        (r.lines.len(), r.bytes)
    }

    /// The held lines plus a receiver of every later line, taken atomically.
    pub fn subscribe(&self) -> (Vec<Arc<LogLine>>, broadcast::Receiver<Arc<LogLine>>) {
        let ring = self.lock();
        (ring.lines.iter().cloned().collect(), self.tx.subscribe())
    }
}

/// Splits a byte stream into lines, bounded in length.
#[derive(Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Feeds bytes; calls `emit` for each complete (or over-long) line.
    pub fn feed(&mut self, mut bytes: &[u8], mut emit: impl FnMut(&str)) {
        while !bytes.is_empty() {
            match bytes.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.append(&bytes[..i], &mut emit);
                    let line = std::mem::take(&mut self.partial);
                    emit(trim_cr(&String::from_utf8_lossy(&line)));
                    bytes = &bytes[i + 1..];
                }
                None => {
                    self.append(bytes, &mut emit);
                    bytes = &[];
                }
            }
        }
    }

    fn append(&mut self, mut bytes: &[u8], emit: &mut impl FnMut(&str)) {
        while self.partial.len() + bytes.len() > MAX_LINE {
            let take = MAX_LINE - self.partial.len();
            self.partial.extend_from_slice(&bytes[..take]);
            let line = std::mem::take(&mut self.partial);
            emit(&String::from_utf8_lossy(&line));
            bytes = &bytes[take..];
        }
        self.partial.extend_from_slice(bytes);
    }

    /// Emits what is left when the stream ends.
    pub fn finish(&mut self, mut emit: impl FnMut(&str)) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            emit(trim_cr(&String::from_utf8_lossy(&line)));
        }
    }
}

fn trim_cr(s: &str) -> &str {
    s.strip_suffix('\r').unwrap_or(s)
}

/// A live reader of one or both streams of a service.
pub struct Follower {
    backlog: VecDeque<Arc<LogLine>>,
    rx: Vec<(Stream, broadcast::Receiver<Arc<LogLine>>)>,
}

impl Follower {
    /// Follows the given buffers: first their held lines (merged in order), then new ones.
    pub fn new(buffers: &[&LogBuffer]) -> Self {
        let mut backlog = Vec::new();
        let mut rx = Vec::new();
        for b in buffers {
            let (lines, r) = b.subscribe();
            backlog.extend(lines);
            rx.push((b.stream, r));
        }
        backlog.sort_by_key(|l| l.seq);
        Follower {
            backlog: backlog.into(),
            rx,
        }
    }

    /// The held lines that were in the buffers when following began.
    pub fn take_backlog(&mut self) -> Vec<Arc<LogLine>> {
        self.backlog.drain(..).collect()
    }

    /// The next item if one is ready now, without waiting.
    pub fn try_next(&mut self) -> Option<LogItem> {
        if let Some(l) = self.backlog.pop_front() {
            return Some(LogItem::Line(l));
        }
        let mut i = 0;
        while let Some((stream, rx)) = self.rx.get_mut(i) {
            match rx.try_recv() {
                Ok(l) => return Some(LogItem::Line(l)),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    return Some(LogItem::Dropped(*stream, n))
                }
                Err(broadcast::error::TryRecvError::Empty) => i += 1,
                Err(broadcast::error::TryRecvError::Closed) => {
                    self.rx.remove(i);
                }
            }
        }
        None
    }

    /// The next item; `None` when every buffer was dropped.
    pub async fn next(&mut self) -> Option<LogItem> {
        if let Some(l) = self.backlog.pop_front() {
            return Some(LogItem::Line(l));
        }
        loop {
            if self.rx.is_empty() {
                return None;
            }
            let (res, idx) = match self.rx.as_mut_slice() {
                [(_, a)] => (a.recv().await, 0),
                [(_, a), (_, b), ..] => tokio::select! {
                    r = a.recv() => (r, 0),
                    r = b.recv() => (r, 1),
                },
                [] => return None,
            };
            match res {
                Ok(l) => return Some(LogItem::Line(l)),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let stream = self.rx.get(idx).map_or(Stream::Stdout, |r| r.0);
                    return Some(LogItem::Dropped(stream, n));
                }
                Err(broadcast::error::RecvError::Closed) => {
                    self.rx.remove(idx);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf(lines: usize, bytes: usize) -> LogBuffer {
        LogBuffer::new(Stream::Stdout, lines, bytes, Arc::new(AtomicU64::new(0)))
    }

    #[test]
    fn bounded_by_lines_and_bytes() {
        let b = buf(3, 1000);
        for i in 0..10 {
            b.push(&format!("line {i}"));
        }
        let s: Vec<_> = b.snapshot().iter().map(|l| l.text.to_string()).collect();
        assert_eq!(s, ["line 7", "line 8", "line 9"]);
        let b = buf(1000, 10);
        for _ in 0..10 {
            b.push("abcd");
        }
        assert_eq!(b.usage(), (2, 8));
        b.push(&"x".repeat(50));
        assert_eq!(
            b.usage(),
            (1, 10),
            "an over-long line is cut to the byte bound"
        );
    }

    #[test]
    fn splitter_handles_partial_crlf_and_long_lines() {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        s.feed(b"ab", |l| out.push(l.to_string()));
        s.feed(b"c\r\nde\nf", |l| out.push(l.to_string()));
        s.finish(|l| out.push(l.to_string()));
        assert_eq!(out, ["abc", "de", "f"]);
        let mut out = Vec::new();
        s.feed(&vec![b'a'; MAX_LINE * 2 + 5], |l| out.push(l.len()));
        s.finish(|l| out.push(l.len()));
        assert_eq!(out, [MAX_LINE, MAX_LINE, 5]);
    }

    #[tokio::test]
    async fn slow_follower_gets_a_drop_marker_and_never_blocks() {
        let b = buf(10, 1 << 20);
        b.push("old");
        let mut f = Follower::new(&[&b]);
        for i in 0..(FOLLOWER_QUEUE + 100) {
            b.push(&format!("{i}"));
        }
        assert_eq!(f.next().await.unwrap().text(), "old");
        let item = f.next().await.unwrap();
        assert_eq!(item, LogItem::Dropped(Stream::Stdout, 100));
        assert_eq!(item.text(), "[krazy: 100 lines dropped]");
        assert_eq!(f.next().await.unwrap().text(), "100");
        assert_eq!(b.usage().0, 10);
        assert_eq!(f.try_next().unwrap().text(), "101");
        while let Some(LogItem::Line(_)) = f.try_next() {}
        assert_eq!(f.try_next(), None);
    }

    #[tokio::test]
    async fn both_streams_merge_in_order() {
        let seq = Arc::new(AtomicU64::new(0));
        let out = LogBuffer::new(Stream::Stdout, 10, 100, seq.clone());
        let err = LogBuffer::new(Stream::Stderr, 10, 100, seq);
        out.push("1");
        err.push("2");
        out.push("3");
        let mut f = Follower::new(&[&out, &err]);
        let backlog: Vec<_> = f
            .take_backlog()
            .iter()
            .map(|l| l.text.to_string())
            .collect();
        assert_eq!(backlog, ["1", "2", "3"]);
        err.push("4");
        match f.next().await.unwrap() {
            LogItem::Line(l) => assert_eq!((l.stream, &*l.text), (Stream::Stderr, "4")),
            other => panic!("{other:?}"),
        }
    }
}
