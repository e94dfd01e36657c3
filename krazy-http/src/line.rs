//! Reading one bounded line (of a head, a chunk size or a trailer) from a
//! [`BufRead`], never buffering more than the bound.

use std::io::{self, BufRead};

use crate::{HttpError, Limits, Phase};

/// Reads one line ending in LF into `out` (cleared first; the LF and a CR
/// before it are dropped). At most `cap` bytes, line end included, are
/// consumed: `Ok(None)` when the line is longer, else `Ok(Some(consumed))`.
/// The end of the stream before the LF is [`HttpError::Closed`]`(phase)`.
pub(crate) fn read_line<R: BufRead + ?Sized>(
    r: &mut R,
    cap: usize,
    out: &mut Vec<u8>,
    phase: Phase,
) -> Result<Option<usize>, HttpError> {
    out.clear();
    let mut used = 0usize;
    loop {
        let (n, found) = {
            let avail = match r.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if avail.is_empty() {
                return Err(HttpError::Closed(phase));
            }
            let room = cap.saturating_sub(used);
            let look = avail.get(..avail.len().min(room)).unwrap_or_default();
            match look.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    out.extend_from_slice(look.get(..i).unwrap_or_default());
                    (i + 1, true)
                }
                None => {
                    out.extend_from_slice(look);
                    (look.len(), false)
                }
            }
        };
        r.consume(n);
        used += n;
        if found {
            if out.last() == Some(&b'\r') {
                out.pop();
            }
            return Ok(Some(used));
        }
        if used >= cap {
            return Ok(None);
        }
    }
}

/// Reads a line of a head or of trailers: at most [`Limits::max_line`]
/// bytes, and at most what is left of [`Limits::max_head`] after `used`
/// bytes (which grows by what is read).
pub(crate) fn head_line<R: BufRead + ?Sized>(
    r: &mut R,
    limits: &Limits,
    used: &mut usize,
    out: &mut Vec<u8>,
    phase: Phase,
) -> Result<(), HttpError> {
    let left = limits.max_head.saturating_sub(*used);
    match read_line(r, limits.max_line.min(left), out, phase)? {
        Some(n) => {
            *used += n;
            Ok(())
        }
        None if left <= limits.max_line => Err(HttpError::HeadTooLong {
            limit: limits.max_head,
        }),
        None => Err(HttpError::LineTooLong {
            limit: limits.max_line,
        }),
    }
}

/// The first 80 characters of `b`, for error messages.
pub(crate) fn excerpt(b: &[u8]) -> String {
    String::from_utf8_lossy(b).chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let mut out = Vec::new();
        let mut r = &b"ab\r\ncd\nxyz"[..];
        assert_eq!(
            read_line(&mut r, 10, &mut out, Phase::Head).unwrap(),
            Some(4)
        );
        assert_eq!(out, b"ab");
        assert_eq!(
            read_line(&mut r, 10, &mut out, Phase::Head).unwrap(),
            Some(3)
        );
        assert_eq!(out, b"cd");
        assert!(matches!(
            read_line(&mut r, 10, &mut out, Phase::Trailers),
            Err(HttpError::Closed(Phase::Trailers))
        ));
        let mut r = &b"abcdef\n"[..];
        assert_eq!(read_line(&mut r, 3, &mut out, Phase::Head).unwrap(), None);
        assert_eq!(out.len(), 3);
    }
}
