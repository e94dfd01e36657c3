//! Serial console capture: the reader threads that turn QEMU's stdout into
//! cleaned lines (and its stderr into a bounded tail), and the [`Vm`]
//! methods that wait for and read those lines.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::process::{ChildStderr, ChildStdout};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{Vm, VmError};

/// How many serial lines are kept in memory (the log file keeps all).
const SERIAL_LINES_KEPT: usize = 20_000;
/// A line longer than this is split (firmware menus redraw without newlines).
const SERIAL_LINE_MAX: usize = 4096;
/// How much of QEMU's stderr is kept for error messages.
const STDERR_KEPT: usize = 16 * 1024;

/// A position in the serial console's line stream, for waiting only for
/// lines after it ([`Vm::serial_mark`], [`Vm::wait_for_serial_after`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SerialMark(u64);

#[derive(Default)]
pub(super) struct SerialState {
    /// Complete lines, cleaned, with the time since start they ended at.
    lines: VecDeque<(Duration, String)>,
    /// How many lines were dropped from the front of `lines`.
    dropped: u64,
    /// The line still being received.
    partial: String,
    /// When `partial` last grew.
    partial_at: Duration,
    /// Whether QEMU closed its stdout (it exited).
    ended: bool,
}

pub(super) struct Serial {
    pub(super) state: Mutex<SerialState>,
    pub(super) changed: Condvar,
}

impl Serial {
    fn lock(&self) -> MutexGuard<'_, SerialState> {
        // A reader thread that panicked leaves valid data behind.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Strips what makes a console line unreadable: ANSI escape sequences,
/// carriage returns, backspaces and other control characters (tabs stay).
fn clean_into(out: &mut String, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // ESC [ ... final byte (CSI), or ESC and one more character.
                if chars.next() == Some('[') {
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
}

pub(super) struct SerialSinks {
    pub(super) log: Option<File>,
    pub(super) foreground: bool,
}

pub(super) fn serial_reader(
    mut from: ChildStdout,
    serial: Arc<Serial>,
    mut sinks: SerialSinks,
    started: Instant,
) {
    let mut buf = [0u8; 8192];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let at = started.elapsed();
        let chunk = &buf[..n];
        if let Some(log) = sinks.log.as_mut() {
            // A failing log must not stop the capture; the lines stay in memory.
            let _ = log.write_all(chunk).and_then(|()| log.flush());
        }
        if sinks.foreground {
            let mut out = io::stdout().lock();
            let _ = out.write_all(chunk).and_then(|()| out.flush());
        }
        let mut st = serial.lock();
        for &b in chunk {
            if b == b'\n' {
                let mut line = std::mem::take(&mut st.partial);
                clean_into(&mut line, &pending);
                pending.clear();
                push_line(&mut st, at, line);
            } else {
                pending.push(b);
                if pending.len() >= SERIAL_LINE_MAX {
                    let mut line = std::mem::take(&mut st.partial);
                    clean_into(&mut line, &pending);
                    pending.clear();
                    push_line(&mut st, at, line);
                }
            }
        }
        // Keep `partial` (cleaned) current for matching; `pending` holds the
        // raw bytes of the unfinished line so escapes split across reads
        // are cleaned whole.
        let mut partial = String::new();
        clean_into(&mut partial, &pending);
        st.partial = partial;
        st.partial_at = at;
        drop(st);
        serial.changed.notify_all();
    }
    let mut st = serial.lock();
    if !pending.is_empty() {
        let mut line = String::new();
        clean_into(&mut line, &pending);
        let at = started.elapsed();
        push_line(&mut st, at, line);
    }
    st.partial.clear();
    st.ended = true;
    drop(st);
    serial.changed.notify_all();
}

fn push_line(st: &mut SerialState, at: Duration, line: String) {
    if st.lines.len() >= SERIAL_LINES_KEPT {
        st.lines.pop_front();
        st.dropped += 1;
    }
    st.lines.push_back((at, line));
}

pub(super) fn stderr_reader(mut from: ChildStderr, keep: Arc<Mutex<Vec<u8>>>, foreground: bool) {
    let mut buf = [0u8; 4096];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if foreground {
            let _ = io::stderr().write_all(&buf[..n]);
        }
        let mut k = keep.lock().unwrap_or_else(|p| p.into_inner());
        k.extend_from_slice(&buf[..n]);
        if k.len() > STDERR_KEPT {
            let cut = k.len() - STDERR_KEPT;
            k.drain(..cut);
        }
    }
}

impl Vm {
    /// The position after the lines received so far: lines that arrive
    /// later are "after" it.
    pub fn serial_mark(&self) -> SerialMark {
        let st = self.serial.lock();
        SerialMark(st.dropped + st.lines.len() as u64)
    }

    /// Waits until a serial console line contains `pattern` (plain substring
    /// match on the cleaned line: escape sequences and control characters
    /// removed) and returns the time from QEMU's start to the arrival of
    /// that line. Lines since QEMU started count, including ones received
    /// before the call; use [`Vm::wait_for_serial_after`] to wait for a
    /// new one. Fails with [`VmError::SerialTimeout`] after `timeout`, and
    /// at once with [`VmError::SerialEnded`] if QEMU exits first; both carry
    /// the console's tail.
    pub fn wait_for_serial(&self, pattern: &str, timeout: Duration) -> Result<Duration, VmError> {
        self.wait_for_serial_after(SerialMark(0), pattern, timeout)
    }

    /// Like [`Vm::wait_for_serial`], counting only lines received after
    /// `mark` (for example the second boot's lines after a reboot).
    pub fn wait_for_serial_after(
        &self,
        mark: SerialMark,
        pattern: &str,
        timeout: Duration,
    ) -> Result<Duration, VmError> {
        let deadline = Instant::now() + timeout;
        let mut st = self.serial.lock();
        loop {
            let first = mark.0.saturating_sub(st.dropped);
            let first = usize::try_from(first).unwrap_or(usize::MAX);
            if let Some((at, _)) = st
                .lines
                .iter()
                .skip(first)
                .find(|(_, l)| l.contains(pattern))
            {
                return Ok(*at);
            }
            if st.partial.contains(pattern) {
                return Ok(st.partial_at);
            }
            if st.ended {
                drop(st);
                // The serial reader saw EOF: QEMU is exiting or gone.
                let status = self.wait_exit(Duration::from_secs(2)).ok();
                return Err(VmError::SerialEnded {
                    pattern: pattern.to_string(),
                    status,
                    tail: self.serial_tail(40),
                    stderr: self.stderr_text(),
                });
            }
            let now = Instant::now();
            if now >= deadline {
                drop(st);
                return Err(VmError::SerialTimeout {
                    pattern: pattern.to_string(),
                    waited: timeout,
                    tail: self.serial_tail(40),
                });
            }
            st = self
                .serial
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The last `n` lines of the serial console (cleaned, joined with `\n`,
    /// the unfinished last line included).
    pub fn serial_tail(&self, n: usize) -> String {
        let st = self.serial.lock();
        let mut lines: Vec<&str> = st.lines.iter().map(|(_, l)| l.as_str()).collect();
        if !st.partial.is_empty() {
            lines.push(&st.partial);
        }
        let skip = lines.len().saturating_sub(n);
        lines[skip..].join("\n")
    }

    /// Every serial line kept in memory (the last 20,000), with the time
    /// since start at which each arrived.
    pub fn serial_lines(&self) -> Vec<(Duration, String)> {
        self.serial.lock().lines.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_strips_escapes_and_controls() {
        let mut s = String::new();
        clean_into(
            &mut s,
            b"\x1b[2J\x1b[01;01H\x1b[=3hBdsDxe: start\r\x08 \x1b[1m\x1b[37m\x1b[40miPXE\ttab",
        );
        assert_eq!(s, "BdsDxe: start iPXE\ttab");
    }
}
