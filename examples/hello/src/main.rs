//! `hello`: the example krazy user service.
//!
//! `hello [--port N]` (default 8080) answers `GET /` with the hostname and a
//! request counter kept in `$HOME/count`, so on a krazy device (where `HOME`
//! is under `/perm`) the count survives reboots and updates. With
//! `HELLO_FAIL=1` in its environment it exits with status 1 at once, which is
//! how the rollback demonstration makes a boot unhealthy. `--check` asks a
//! running instance on the port for `/` and exits 0 when it answers, for a
//! `health = { command = [...] }` check. Only `std::net`: no dependencies.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;

/// Parsed command line.
struct Args {
    port: u16,
    check: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        port: 8080,
        check: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--port" => {
                let v = it.next().ok_or("--port needs a number")?;
                args.port = v.parse().map_err(|_| format!("bad port {v:?}"))?;
            }
            "--check" => args.check = true,
            "-h" | "--help" => {
                return Err("usage: hello [--port N] [--check]\n\
                     answers GET / with the hostname and a request counter in $HOME/count"
                    .into())
            }
            other => return Err(format!("unknown argument {other:?}; try --help")),
        }
    }
    Ok(args)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

fn count_path() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join("count")
}

/// Reads, increments and writes back the counter (write to a temporary file,
/// then rename, so a power cut never leaves a torn count).
fn bump_count() -> std::io::Result<u64> {
    let path = count_path();
    let n: u64 = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
        + 1;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{n}\n"))?;
    std::fs::rename(&tmp, &path)?;
    Ok(n)
}

fn serve(mut stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?.take(16 * 1024));
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Drain headers up to the blank line (bounded by `take`).
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, body) = if method == "GET" && path == "/" {
        match bump_count() {
            Ok(n) => (
                "200 OK",
                format!("hello from {}, request {n}\n", hostname()),
            ),
            Err(e) => (
                "500 Internal Server Error",
                format!("cannot update {}: {e}\n", count_path().display()),
            ),
        }
    } else {
        ("404 Not Found", "not found\n".to_string())
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

fn check(port: u16) -> ExitCode {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return ExitCode::FAILURE;
    };
    if s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_err() {
        return ExitCode::FAILURE;
    }
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    if resp.starts_with("HTTP/1.1 200") {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    if std::env::var("HELLO_FAIL").as_deref() == Ok("1") {
        eprintln!("hello: HELLO_FAIL=1, exiting with status 1");
        return ExitCode::from(1);
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        return check(args.port);
    }
    let listener = match TcpListener::bind(("0.0.0.0", args.port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("hello: cannot listen on port {}: {e}", args.port);
            return ExitCode::FAILURE;
        }
    };
    eprintln!("hello: listening on port {}", args.port);
    for stream in listener.incoming() {
        match stream {
            Ok(s) => {
                if let Err(e) = serve(s) {
                    eprintln!("hello: request failed: {e}");
                }
            }
            Err(e) => eprintln!("hello: accept failed: {e}"),
        }
    }
    ExitCode::SUCCESS
}
