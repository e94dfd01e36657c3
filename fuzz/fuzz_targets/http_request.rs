//! krazy-init's request path, query, form and auth header parsing never panics
//! and never grows output beyond its input.
#![no_main]
use krazy_init::web::{auth, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First line: the request target (path?query); the rest: a form body.
    let (target, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let target = String::from_utf8_lossy(target);
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let _ = parse::route(path);
    let q = parse::parse_pairs(query.as_bytes());
    assert!(q.len() <= parse::MAX_PAIRS);
    let form = parse::parse_pairs(body);
    let _ = parse::get(&form, "csrf");
    assert!(parse::percent_decode(body, true).len() <= body.len());
    let _ = parse::html_escape(&target);
    if let Some(d) = auth::base64_decode(body) {
        assert!(d.len() <= body.len());
    }
    let pw = auth::Password::Plain(b"pw".to_vec());
    let _ = pw.check_header(Some(body));
});
