//! krazy-http against a real server: nginx (package `nginx-light`) on
//! 127.0.0.1, serving a static file (`Content-Length`), a server-side
//! include page (which nginx answers chunked), `HEAD`, a 404, several
//! answers on one kept-alive connection, and a body over the read limit.

mod common;

use std::io::BufReader;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use krazy_http::{exchange, read_response, Framing, HttpError, Limits, Request};

/// A running nginx, killed on drop.
struct Nginx {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The static file: 100 000 bytes that are not all alike.
fn file_bytes() -> Vec<u8> {
    (0..100_000u32).map(|i| (i % 251) as u8).collect()
}

/// The text the SSI page includes (twice), 6 000 bytes.
fn part_text() -> String {
    "an included line of text, forty bytes.\n\n".repeat(150)
}

/// The SSI page's body as nginx sends it.
fn page_text() -> String {
    format!(
        "<p>before</p>\n{p}<p>middle</p>\n{p}<p>after</p>\n",
        p = part_text()
    )
}

fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn write_site(dir: &Path) {
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("file.bin"), file_bytes()).unwrap();
    std::fs::write(www.join("part.txt"), part_text()).unwrap();
    std::fs::write(
        www.join("page.shtml"),
        "<p>before</p>\n<!--# include file=\"part.txt\" --><p>middle</p>\n\
         <!--# include file=\"part.txt\" --><p>after</p>\n",
    )
    .unwrap();
}

/// Starts nginx in a fresh directory, or `None` (after [`common::skip`])
/// when it is not installed.
fn start() -> Option<Nginx> {
    let Some(bin) = nginx_binary() else {
        common::skip("nginx is not installed (apt-get install nginx-light)");
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_site(d);
    std::fs::create_dir_all(d.join("tmp")).unwrap();
    let port = free_port();
    let conf = format!(
        r#"daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    types {{ text/html html shtml; text/plain txt; application/octet-stream bin; }}
    keepalive_requests 100;
    server {{
        listen 127.0.0.1:{port};
        root {d}/www;
        location / {{ ssi on; }}
    }}
}}
"#,
        d = d.display()
    );
    let conf_path = d.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let child = Command::new(bin)
        .arg("-p")
        .arg(d)
        .arg("-c")
        .arg(&conf_path)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut n = Nginx {
        child,
        port,
        _dir: dir,
    };
    // Ready when it accepts; fail (with its log) if it exits first.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(n);
        }
        if let Some(st) = n.child.try_wait().unwrap() {
            let log = std::fs::read_to_string(n._dir.path().join("error.log")).unwrap_or_default();
            panic!("nginx exited ({st}) before listening:\n{log}");
        }
        assert!(Instant::now() < deadline, "nginx did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Nginx {
    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s
    }

    fn get(&self, path: &str) -> Request {
        Request::get(path)
            .header("Host", format!("127.0.0.1:{}", self.port))
            .header("Connection", "close")
    }
}

#[test]
fn static_file_by_content_length() {
    let Some(n) = start() else { return };
    let mut r = exchange(n.connect(), &n.get("/file.bin"), None, &Limits::default()).unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.head.header("content-length"), Some("100000"));
    assert_eq!(r.head.framing("GET").unwrap(), Framing::Length(100_000));
    assert_eq!(r.read_to_vec(1 << 20).unwrap(), file_bytes());
    assert!(r.body.is_done());
}

#[test]
fn ssi_page_comes_chunked() {
    let Some(n) = start() else { return };
    let mut r = exchange(n.connect(), &n.get("/page.shtml"), None, &Limits::default()).unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.head.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.head.header("content-length"), None);
    assert_eq!(r.head.framing("GET").unwrap(), Framing::Chunked);
    assert_eq!(
        String::from_utf8(r.read_to_vec(1 << 20).unwrap()).unwrap(),
        page_text()
    );
}

#[test]
fn head_has_no_body() {
    let Some(n) = start() else { return };
    let req = Request::new("HEAD", "/file.bin").header("Host", "localhost");
    let mut r = exchange(n.connect(), &req, None, &Limits::default()).unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.head.header("content-length"), Some("100000"));
    assert!(r.body.is_done());
    assert_eq!(r.read_to_vec(1 << 20).unwrap(), b"");
}

#[test]
fn missing_file_is_404() {
    let Some(n) = start() else { return };
    let mut r = exchange(n.connect(), &n.get("/nothing"), None, &Limits::default()).unwrap();
    assert_eq!(r.status(), 404);
    assert!(!r.head.is_success());
    let body = String::from_utf8(r.read_to_vec(1 << 20).unwrap()).unwrap();
    assert!(body.contains("404 Not Found"), "{body}");
}

#[test]
fn answers_follow_each_other_on_one_connection() {
    let Some(n) = start() else { return };
    let s = n.connect();
    let mut r = BufReader::new(&s);
    let limits = Limits::default();
    let host = format!("127.0.0.1:{}", n.port);
    let req = |method: &str, path: &str| Request::new(method, path).header("Host", host.as_str());
    // Content-Length, HEAD (no body to skip), chunked, 404: each answer
    // must end exactly where the next begins.
    for (method, path, status, body) in [
        ("GET", "/file.bin", 200, file_bytes()),
        ("HEAD", "/file.bin", 200, Vec::new()),
        ("GET", "/page.shtml", 200, page_text().into_bytes()),
        ("GET", "/file.bin", 200, file_bytes()),
    ] {
        req(method, path).send(&mut &s, None).unwrap();
        let mut a = read_response(&mut r, method, &limits).unwrap();
        assert_eq!(a.status(), status, "{method} {path}");
        assert_eq!(
            a.head.header("connection"),
            Some("keep-alive"),
            "{method} {path}"
        );
        assert_eq!(a.read_to_vec(1 << 20).unwrap(), body, "{method} {path}");
    }
    req("GET", "/nothing").send(&mut &s, None).unwrap();
    let mut a = read_response(&mut r, "GET", &limits).unwrap();
    assert_eq!(a.status(), 404);
    a.read_to_vec(1 << 20).unwrap();
    // The server still takes requests on it afterwards.
    req("GET", "/part.txt")
        .header("Connection", "close")
        .send(&mut &s, None)
        .unwrap();
    let mut a = read_response(&mut r, "GET", &limits).unwrap();
    assert_eq!(a.read_to_vec(1 << 20).unwrap(), part_text().into_bytes());
}

#[test]
fn body_over_the_limit_is_refused() {
    let Some(n) = start() else { return };
    // A declared length above the limit: refused before a byte is read.
    let mut r = exchange(n.connect(), &n.get("/file.bin"), None, &Limits::default()).unwrap();
    let e = r.read_to_vec(99_999).unwrap_err();
    assert!(
        matches!(e, HttpError::BodyTooLong { limit: 99_999 }),
        "{e:?}"
    );
    // Exactly the limit is fine.
    let mut r = exchange(n.connect(), &n.get("/file.bin"), None, &Limits::default()).unwrap();
    assert_eq!(r.read_to_vec(100_000).unwrap().len(), 100_000);
    // Chunked: refused at the chunk that would pass it.
    let page = page_text().len() as u64;
    let mut r = exchange(n.connect(), &n.get("/page.shtml"), None, &Limits::default()).unwrap();
    let e = r.read_to_vec(page - 1).unwrap_err();
    assert!(
        matches!(e, HttpError::BodyTooLong { limit } if limit == page - 1),
        "{e:?}"
    );
    let mut r = exchange(n.connect(), &n.get("/page.shtml"), None, &Limits::default()).unwrap();
    assert_eq!(r.read_to_vec(page).unwrap().len() as u64, page);
}
