use std::io::{BufReader, Read};

use crate::{read_response, Framing, HttpError, Limits, Phase, Response};

fn resp(b: &[u8]) -> Result<Response<&[u8]>, HttpError> {
    read_response(b, "GET", &Limits::default())
}

fn body(b: &[u8]) -> Result<(u16, Vec<u8>), HttpError> {
    let mut r = resp(b)?;
    let v = r.read_to_vec(1 << 20)?;
    Ok((r.status(), v))
}

/// Gives one byte per read, so every line and chunk is split across reads.
struct OneByte<'a>(&'a [u8]);

impl Read for OneByte<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match (self.0.split_first(), buf.first_mut()) {
            (Some((&b, rest)), Some(d)) => {
                *d = b;
                self.0 = rest;
                Ok(1)
            }
            _ => Ok(0),
        }
    }
}

const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nX: y\r\n\r\n\
    3\r\nabc\r\n1;name=\"v;x\"\r\nd\r\n00A ; ext\r\n0123456789\r\n0\r\nTrailer: t\r\nOther: o\r\n\r\n";

#[test]
fn content_length() {
    let (s, b) = body(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}trailing").unwrap();
    assert_eq!((s, &b[..]), (200, &b"{}"[..]));
    let (_, b) =
        body(b"HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\nContent-Length: 3\r\n\r\nabc").unwrap();
    assert_eq!(b, b"abc");
    let r = resp(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").unwrap();
    assert!(r.body.is_done());
}

#[test]
fn chunked() {
    let (s, b) = body(CHUNKED).unwrap();
    assert_eq!((s, &b[..]), (200, &b"abcd0123456789"[..]));
    let mut r = resp(CHUNKED).unwrap();
    assert_eq!(r.head.header("x"), Some("y"));
    let mut all = Vec::new();
    r.body.read_to_end(&mut all).unwrap();
    assert_eq!(all, b"abcd0123456789");
    assert!(r.body.is_done());
    // LF-only line ends are taken too.
    let (_, b) = body(b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n2\nab\n0\n\n").unwrap();
    assert_eq!(b, b"ab");
    // Transfer-Encoding wins over Content-Length.
    let (_, b) = body(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n").unwrap();
    assert_eq!(b, b"ab");
}

#[test]
fn chunked_split_byte_by_byte() {
    let src = BufReader::with_capacity(1, OneByte(CHUNKED));
    let mut r = read_response(src, "GET", &Limits::default()).unwrap();
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match r.body.read_body(&mut b).unwrap() {
            0 => break,
            n => out.extend_from_slice(&b[..n]),
        }
    }
    assert_eq!(out, b"abcd0123456789");
    assert!(r.body.is_done());
    let src = BufReader::with_capacity(1, OneByte(CHUNKED));
    let mut r = read_response(src, "GET", &Limits::default()).unwrap();
    assert_eq!(r.read_to_vec(14).unwrap(), b"abcd0123456789");
    let src = BufReader::with_capacity(1, OneByte(CHUNKED));
    let mut r = read_response(src, "GET", &Limits::default()).unwrap();
    assert!(matches!(
        r.read_to_vec(13),
        Err(HttpError::BodyTooLong { limit: 13 })
    ));
}

#[test]
fn until_close_and_empty() {
    let (s, b) = body(b"HTTP/1.0 500 Oops\n\nrest").unwrap();
    assert_eq!((s, &b[..]), (500, &b"rest"[..]));
    // Another transfer coding than chunked last: until the close.
    let (_, b) = body(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nxyz").unwrap();
    assert_eq!(b, b"xyz");
    for a in [
        &b"HTTP/1.1 204 No Content\r\n\r\nignored"[..],
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
    ] {
        let mut r = resp(a).unwrap();
        assert!(r.body.is_done());
        assert_eq!(r.read_to_vec(0).unwrap(), b"");
    }
    let mut r = read_response(
        &b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"[..],
        "HEAD",
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(r.read_to_vec(0).unwrap(), b"");
    assert_eq!(r.head.framing("GET").unwrap(), Framing::Length(9));
}

#[test]
fn interim_answers() {
    let (s, b) = body(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nLink: x\r\n\r\nHTTP/1.1 422 X\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n1;x\r\nd\r\n0\r\n\r\n",
    )
    .unwrap();
    assert_eq!((s, &b[..]), (422, &b"abcd"[..]));
    let many = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(9);
    assert!(matches!(
        resp(&many),
        Err(HttpError::TooManyInterim { limit: 8 })
    ));
    let mut r = resp(b"HTTP/1.1 101 Switching\r\nUpgrade: x\r\n\r\nraw bytes").unwrap();
    assert_eq!(r.status(), 101);
    assert_eq!(r.read_to_vec(100).unwrap(), b"raw bytes");
}

#[test]
fn heads() {
    let r = resp(b"HTTP/1.1 200\r\nA:\r\nB: \t spaced \t\r\nb: 2\r\n\r\n").unwrap();
    assert_eq!(r.head.reason, "");
    assert_eq!(r.head.header("a"), Some(""));
    assert_eq!(
        r.head.header_values("B").collect::<Vec<_>>(),
        ["spaced", "2"]
    );
    assert_eq!(r.head.status_line(), "HTTP/1.1 200");
    let r = resp(b"HTTP/1.0 404 Not Found\r\n\r\n").unwrap();
    assert_eq!(
        (r.head.minor_version, r.head.status_line()),
        (0, "HTTP/1.0 404 Not Found".to_string())
    );
    assert!(!r.head.is_success());
}

#[test]
fn malformed_heads() {
    for (a, want) in [
        (&b"SSH-2.0\r\n"[..], "status line"),
        (b"HTTP/2 200 OK\r\n\r\n", "status line"),
        (b"HTTP/1.12 200 OK\r\n\r\n", "status line"),
        (b"HTTP/1.1 200 O\x01K\r\n\r\n", "status line"),
        (b"HTTP/1.1 99999 x\r\n\r\n", "status"),
        (b"HTTP/1.1 099 x\r\n\r\n", "status"),
        (b"HTTP/1.1 600 x\r\n\r\n", "status"),
        (b"HTTP/1.1 +20 x\r\n\r\n", "status"),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "header"),
        (b"HTTP/1.1 200 OK\r\nName : v\r\n\r\n", "header"),
        (b"HTTP/1.1 200 OK\r\nA: 1\r\n folded\r\n\r\n", "header"),
        (b"HTTP/1.1 200 OK\r\nA: \xff\r\n\r\n", "header"),
        (b"HTTP/1.1 200 OK\r\nA: x\ry\r\n\r\n", "header"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "length",
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n", "length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n", "length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", "length"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "length",
        ),
    ] {
        let e = resp(a).map(|_| ()).unwrap_err();
        let ok = match want {
            "status line" => matches!(e, HttpError::BadStatusLine(_)),
            "status" => matches!(e, HttpError::BadStatus(_)),
            "header" => matches!(e, HttpError::BadHeader(_)),
            _ => matches!(e, HttpError::BadContentLength(_)),
        };
        assert!(ok, "{:?}: {e:?}", String::from_utf8_lossy(a));
    }
    assert_eq!(
        resp(b"HTTP/1.1 99999 x\r\n\r\n")
            .map(|_| ())
            .unwrap_err()
            .to_string(),
        "bad status code \"99999\""
    );
}

#[test]
fn head_limits() {
    let limits = Limits {
        max_line: 32,
        max_headers: 2,
        max_head: 64,
        max_interim: 1,
    };
    let r = |b: &[u8]| read_response(b, "GET", &limits).map(|_| ());
    let long = [&b"HTTP/1.1 200 OK\r\nX: "[..], &[b'a'; 40], b"\r\n\r\n"].concat();
    assert!(matches!(
        r(&long),
        Err(HttpError::LineTooLong { limit: 32 })
    ));
    let big = b"HTTP/1.1 200 OK\r\nA: 0123456789012345678\r\nB: 0123456789012345678\r\n\r\n";
    assert!(matches!(r(big), Err(HttpError::HeadTooLong { limit: 64 })));
    let many = b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    assert!(matches!(
        r(many),
        Err(HttpError::TooManyHeaders { limit: 2 })
    ));
    assert!(r(b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n").is_ok());
    // The default limits: a 20000-byte header line is refused.
    let long = [&b"HTTP/1.1 200 OK\r\nX: "[..], &[b'a'; 20000]].concat();
    assert!(matches!(
        resp(&long).map(|_| ()),
        Err(HttpError::LineTooLong { limit: 8192 })
    ));
}

#[test]
fn truncated() {
    for (a, phase) in [
        (&b""[..], Phase::Head),
        (b"HTTP/1.1 200 OK\r\nA: 1", Phase::Head),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab",
            Phase::Body,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            Phase::ChunkSize,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab",
            Phase::ChunkData,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc",
            Phase::ChunkData,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
            Phase::ChunkSize,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: 1\r\n",
            Phase::Trailers,
        ),
    ] {
        let e = body(a).unwrap_err();
        assert!(
            matches!(e, HttpError::Closed(p) if p == phase),
            "{:?}: {e:?}",
            String::from_utf8_lossy(a)
        );
        assert!(e.is_transport());
    }
}

#[test]
fn chunk_errors() {
    let c = |rest: &[u8]| {
        body(
            &[
                &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
                rest,
            ]
            .concat(),
        )
    };
    assert!(matches!(c(b"xyz\r\n"), Err(HttpError::BadChunkSize(_))));
    assert!(matches!(c(b";ext\r\n"), Err(HttpError::BadChunkSize(_))));
    assert!(matches!(c(b"-1\r\n"), Err(HttpError::BadChunkSize(_))));
    assert!(matches!(c(b"1 2\r\n"), Err(HttpError::BadChunkSize(_))));
    assert!(matches!(
        c(b"10000000000000000\r\n"),
        Err(HttpError::ChunkSizeOverflow)
    ));
    // Leading zeros are no overflow.
    assert_eq!(
        c(b"000000000000000000001\r\na\r\n0\r\n\r\n").unwrap().1,
        b"a"
    );
    assert!(matches!(
        c(b"1\r\nab\r\n0\r\n\r\n"),
        Err(HttpError::BadChunkEnd)
    ));
    assert!(matches!(
        c(b"1\r\na\r\r\n0\r\n\r\n"),
        Err(HttpError::BadChunkEnd)
    ));
    let long_ext = [&b"1;"[..], &[b'e'; 9000], b"\r\na\r\n0\r\n\r\n"].concat();
    assert!(matches!(
        c(&long_ext),
        Err(HttpError::LineTooLong { limit: 8192 })
    ));
    assert!(matches!(
        c(b"0\r\nno colon\r\n\r\n"),
        Err(HttpError::BadHeader(_))
    ));
    let many = [&b"0\r\n"[..], &b"T: 1\r\n".repeat(101), b"\r\n"].concat();
    assert!(matches!(
        c(&many),
        Err(HttpError::TooManyHeaders { limit: 100 })
    ));
    let big = [
        &b"0\r\n"[..],
        &[b"T: ", &[b'x'; 8000][..], b"\r\n"].concat().repeat(3),
        b"\r\n",
    ]
    .concat();
    assert!(matches!(
        c(&big),
        Err(HttpError::HeadTooLong { limit: 16384 })
    ));
}

#[test]
fn body_limits() {
    let r = |a: &[u8], max| resp(a).unwrap().read_to_vec(max);
    // A declared length above the limit is refused before reading a byte.
    let e = r(
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
        1 << 20,
    )
    .unwrap_err();
    assert!(
        matches!(e, HttpError::BodyTooLong { limit: 1048576 }),
        "{e:?}"
    );
    assert_eq!(e.to_string(), "the body is longer than 1048576 bytes");
    let e = r(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffff\r\n",
        1 << 20,
    )
    .unwrap_err();
    assert!(matches!(e, HttpError::BodyTooLong { .. }), "{e:?}");
    let e = r(b"HTTP/1.1 200 OK\r\n\r\n0123456789", 9).unwrap_err();
    assert!(matches!(e, HttpError::BodyTooLong { limit: 9 }), "{e:?}");
    assert_eq!(
        r(b"HTTP/1.1 200 OK\r\n\r\n0123456789", 10).unwrap(),
        b"0123456789"
    );
    let e = r(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n01234\r\n5\r\n56789\r\n0\r\n\r\n", 9).unwrap_err();
    assert!(matches!(e, HttpError::BodyTooLong { limit: 9 }), "{e:?}");
}

#[test]
fn read_impl_keeps_the_typed_error() {
    let mut r = resp(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").unwrap();
    let e = r.body.read(&mut [0u8; 8]).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    assert!(matches!(HttpError::from(e), HttpError::BadChunkSize(_)));
    let mut r = resp(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab").unwrap();
    let mut v = Vec::new();
    let e = r.body.read_to_end(&mut v).unwrap_err();
    assert_eq!(
        (e.kind(), &v[..]),
        (std::io::ErrorKind::UnexpectedEof, &b"ab"[..])
    );
    assert!(matches!(HttpError::from(e), HttpError::Closed(Phase::Body)));
    let plain = HttpError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
    assert!(matches!(plain, HttpError::Io(ref e) if e.kind() == std::io::ErrorKind::TimedOut));
}
