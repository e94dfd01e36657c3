//! The response head: [`Limits`], the status line and headers
//! ([`read_head`]), the framing they announce, and [`read_response`], which
//! skips interim answers and hands back the body reader.

use std::io::BufRead;

use crate::line::{excerpt, head_line};
use crate::request::is_token;
use crate::{BodyReader, Framing, HttpError, Phase};

/// Bounds on what is read of an answer's head (and of chunked framing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest line of the head, a chunk-size line or a trailer, line end
    /// included.
    pub max_line: usize,
    /// Most header lines in a head (and trailer lines after a chunked body).
    pub max_headers: usize,
    /// Longest head (and trailers), status line and blank line included.
    pub max_head: usize,
    /// Most interim (`1xx`) answers skipped before the final one.
    pub max_interim: usize,
}

impl Default for Limits {
    /// 8 KiB lines, 100 headers, a 16 KiB head, 8 interim answers.
    fn default() -> Self {
        Limits {
            max_line: 8 << 10,
            max_headers: 100,
            max_head: 16 << 10,
            max_interim: 8,
        }
    }
}

/// A parsed status line and headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The minor version: 1 for `HTTP/1.1`, 0 for `HTTP/1.0`.
    pub minor_version: u8,
    /// The status code, 100 to 599.
    pub status: u16,
    /// The reason phrase (may be empty).
    pub reason: String,
    /// The headers in order, values trimmed.
    pub headers: Vec<(String, String)>,
}

impl ResponseHead {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_values<'a, 'n>(
        &'a self,
        name: &'n str,
    ) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
        self.headers
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A 2xx status.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The status line as it would be sent: `HTTP/1.1 204 No Content`.
    pub fn status_line(&self) -> String {
        format!(
            "HTTP/1.{} {} {}",
            self.minor_version, self.status, self.reason
        )
        .trim_end()
        .to_string()
    }

    /// How the body of this answer to a `request_method` request is
    /// delimited (RFC 9112 §6.3): none for `HEAD`, 1xx, 204 and 304;
    /// chunked when the last transfer coding is `chunked` (it wins over a
    /// `Content-Length`); until the close for another transfer coding;
    /// else by `Content-Length` (several must agree) or until the close.
    pub fn framing(&self, request_method: &str) -> Result<Framing, HttpError> {
        if request_method.eq_ignore_ascii_case("HEAD")
            || (100..200).contains(&self.status)
            || self.status == 204
            || self.status == 304
        {
            return Ok(Framing::Empty);
        }
        if let Some(last) = self.header_values("transfer-encoding").last() {
            let coding = last.rsplit(',').next().unwrap_or("").trim();
            return Ok(if coding.eq_ignore_ascii_case("chunked") {
                Framing::Chunked
            } else {
                Framing::UntilClose
            });
        }
        let mut length = None;
        for v in self.header_values("content-length") {
            for piece in v.split(',') {
                let p = piece.trim();
                let n = p
                    .bytes()
                    .all(|b| b.is_ascii_digit())
                    .then(|| p.parse::<u64>().ok())
                    .flatten()
                    .ok_or_else(|| HttpError::BadContentLength(excerpt(v.as_bytes())))?;
                if length.is_some_and(|l| l != n) {
                    return Err(HttpError::BadContentLength(excerpt(v.as_bytes())));
                }
                length = Some(n);
            }
        }
        Ok(length.map_or(Framing::UntilClose, Framing::Length))
    }
}

/// Parses `HTTP/1.x NNN reason`.
fn parse_status_line(line: &[u8]) -> Result<(u8, u16, String), HttpError> {
    let bad_line = || HttpError::BadStatusLine(excerpt(line));
    let s = std::str::from_utf8(line).map_err(|_| bad_line())?;
    let rest = s.strip_prefix("HTTP/1.").ok_or_else(bad_line)?;
    let mut it = rest.splitn(3, ' ');
    let minor = it
        .next()
        .filter(|v| v.len() == 1)
        .and_then(|v| v.parse::<u8>().ok())
        .ok_or_else(bad_line)?;
    let code = it.next().unwrap_or("");
    let status = code
        .parse::<u16>()
        .ok()
        .filter(|_| code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()))
        .filter(|c| (100..600).contains(c))
        .ok_or_else(|| HttpError::BadStatus(excerpt(code.as_bytes())))?;
    let reason = it.next().unwrap_or("");
    if reason
        .bytes()
        .any(|b| (b < b' ' && b != b'\t') || b == 0x7f)
    {
        return Err(bad_line());
    }
    Ok((minor, status, reason.to_string()))
}

/// Parses `name: value` (no folding, no space before the colon).
pub(crate) fn parse_header_line(line: &[u8]) -> Result<(String, String), HttpError> {
    let bad = || HttpError::BadHeader(excerpt(line));
    let s = std::str::from_utf8(line).map_err(|_| bad())?;
    let (name, value) = s.split_once(':').ok_or_else(bad)?;
    if !is_token(name) {
        return Err(bad());
    }
    let value = value.trim_matches([' ', '\t']);
    if value.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f) {
        return Err(bad());
    }
    Ok((name.to_string(), value.to_string()))
}

/// Reads one head, interim (`1xx`) or not, within `limits`.
pub fn read_head<R: BufRead + ?Sized>(
    r: &mut R,
    limits: &Limits,
) -> Result<ResponseHead, HttpError> {
    let mut used = 0;
    let mut line = Vec::new();
    head_line(r, limits, &mut used, &mut line, Phase::Head)?;
    let (minor_version, status, reason) = parse_status_line(&line)?;
    let mut headers = Vec::new();
    loop {
        head_line(r, limits, &mut used, &mut line, Phase::Head)?;
        if line.is_empty() {
            break;
        }
        if headers.len() >= limits.max_headers {
            return Err(HttpError::TooManyHeaders {
                limit: limits.max_headers,
            });
        }
        headers.push(parse_header_line(&line)?);
    }
    Ok(ResponseHead {
        minor_version,
        status,
        reason,
        headers,
    })
}

/// An answer: its head and a reader of its body.
#[derive(Debug)]
pub struct Response<R> {
    /// The final head.
    pub head: ResponseHead,
    /// The body, framed as the head says.
    pub body: BodyReader<R>,
}

impl<R: BufRead> Response<R> {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.head.status
    }

    /// Reads the whole body, refusing one longer than `max` bytes
    /// ([`BodyReader::read_to_vec`]).
    pub fn read_to_vec(&mut self, max: u64) -> Result<Vec<u8>, HttpError> {
        self.body.read_to_vec(max)
    }
}

/// Reads the answer to a `request_method` request: skips interim answers
/// (`100 Continue`, `103 Early Hints`; `101 Switching Protocols` is final,
/// with the rest of the stream left in the body reader), then the final
/// head, and frames the body ([`ResponseHead::framing`]).
pub fn read_response<R: BufRead>(
    mut r: R,
    request_method: &str,
    limits: &Limits,
) -> Result<Response<R>, HttpError> {
    let mut interim = 0;
    loop {
        let head = read_head(&mut r, limits)?;
        if (100..200).contains(&head.status) && head.status != 101 {
            interim += 1;
            if interim > limits.max_interim {
                return Err(HttpError::TooManyInterim {
                    limit: limits.max_interim,
                });
            }
            continue;
        }
        let framing = if head.status == 101 {
            Framing::UntilClose
        } else {
            head.framing(request_method)?
        };
        return Ok(Response {
            head,
            body: BodyReader::new(r, framing, limits.clone()),
        });
    }
}
