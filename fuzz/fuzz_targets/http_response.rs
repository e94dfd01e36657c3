//! krazy-http's answer reading (head, interim answers, Content-Length,
//! chunked with extensions and trailers, until-close bodies) never panics
//! on what a server sends, keeps a body within its read limit, and gives
//! the same body whether it is read whole or streamed in small pieces.
#![no_main]
use std::io::BufReader;

use krazy_http::{read_response, HttpError, Limits};
use libfuzzer_sys::fuzz_target;

/// The read limit of the whole-body pass.
const MAX_BODY: u64 = 64 << 10;

fuzz_target!(|data: &[u8]| {
    // First byte: the request method and how small the limits and the
    // reader's buffer are; the rest: the server's answer.
    let Some((&sel, answer)) = data.split_first() else {
        return;
    };
    let method = if sel & 1 == 0 { "GET" } else { "HEAD" };
    let limits = if sel & 2 == 0 {
        Limits::default()
    } else {
        Limits {
            max_line: 64,
            max_headers: 4,
            max_head: 256,
            max_interim: 2,
        }
    };
    let cap = usize::from(sel >> 2) + 1;

    // Whole, up to the limit.
    let whole = read_response(BufReader::with_capacity(cap, answer), method, &limits)
        .and_then(|mut r| r.read_to_vec(MAX_BODY));
    if let Ok(b) = &whole {
        assert!(b.len() as u64 <= MAX_BODY);
        assert!(b.len() <= answer.len());
    }

    // Streamed in pieces of at most 5 bytes, through the typed reader.
    let streamed = read_response(BufReader::with_capacity(cap, answer), method, &limits).and_then(
        |mut r| {
            let mut out = Vec::new();
            let mut buf = [0u8; 5];
            loop {
                match r.body.read_body(&mut buf)? {
                    0 => return Ok::<_, HttpError>(out),
                    n => out.extend_from_slice(&buf[..n]),
                }
                if out.len() as u64 > MAX_BODY {
                    return Err(HttpError::BodyTooLong { limit: MAX_BODY });
                }
            }
        },
    );
    if let (Ok(a), Ok(b)) = (&whole, &streamed) {
        assert_eq!(a, b);
    }
    if let Ok(b) = &streamed {
        if b.len() as u64 <= MAX_BODY {
            assert!(whole.is_ok(), "streamed {} bytes, whole failed: {whole:?}", b.len());
        }
    }
});
