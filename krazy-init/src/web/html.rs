//! Server-rendered HTML pages, with no external assets.

use std::fmt::Write;

use super::auth::Csrf;
use super::parse::{html_escape as esc, Power};
use super::system::SystemInfo;
use crate::config::ServiceConfig;
use crate::supervisor::{LastExit, ServiceLogs, ServiceStatus};

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;max-width:70em}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}\
pre{background:#f4f4f4;padding:.5em;max-height:30em;overflow:auto;white-space:pre-wrap}\
form{display:inline}.running{color:#070}.backoff{color:#a60}.exited,.stopped{color:#555}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>{body}</body></html>",
        esc(title)
    )
}

fn form(csrf: &Csrf, action: &str, label: &str) -> String {
    format!(
        "<form method=\"post\" action=\"{a}\"><input type=\"hidden\" name=\"csrf\" value=\"{t}\"><button type=\"submit\" id=\"btn-{l}\">{l}</button></form> ",
        a = esc(action),
        t = csrf.token(action),
        l = esc(label)
    )
}

fn last_exit(e: &Option<LastExit>) -> String {
    match e {
        None => "–".into(),
        Some(LastExit {
            code: Some(c), at, ..
        }) => format!("code {c} at {}", esc(at)),
        Some(LastExit {
            signal: Some(s),
            at,
            ..
        }) => format!("signal {s} at {}", esc(at)),
        Some(LastExit { at, .. }) => format!("could not start, at {}", esc(at)),
    }
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map(|x| esc(&x.to_string()))
        .unwrap_or_else(|| "–".into())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1048576.0)
}

/// The overview page.
pub fn overview(info: &SystemInfo, services: &[ServiceStatus], csrf: &Csrf) -> String {
    let mut b = String::new();
    let _ = write!(b, "<h1>{}</h1><table>", esc(&info.hostname));
    let row = |b: &mut String, k: &str, v: String| {
        let _ = write!(b, "<tr><th>{k}</th><td>{v}</td></tr>");
    };
    row(&mut b, "model", opt(&info.model));
    row(&mut b, "kernel", esc(&info.kernel));
    row(&mut b, "uptime", format!("{} s", info.uptime_seconds));
    row(
        &mut b,
        "load",
        info.load
            .map(|l| format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2]))
            .unwrap_or_else(|| "–".into()),
    );
    row(
        &mut b,
        "memory",
        info.memory
            .as_ref()
            .map(|m| {
                format!(
                    "{} available of {}",
                    mib(m.available_kib * 1024),
                    mib(m.total_kib * 1024)
                )
            })
            .unwrap_or_else(|| "–".into()),
    );
    row(
        &mut b,
        "/perm",
        info.perm
            .as_ref()
            .map(|p| format!("{} available of {}", mib(p.available), mib(p.total)))
            .unwrap_or_else(|| "not mounted".into()),
    );
    let addrs: Vec<String> = info
        .addresses
        .iter()
        .map(|a| format!("{} {}/{}", esc(&a.interface), a.address, a.prefix))
        .collect();
    row(&mut b, "addresses", addrs.join("<br>"));
    row(&mut b, "device id", opt(&info.device_id));
    row(&mut b, "build id", opt(&info.build_id));
    row(&mut b, "running slot", opt(&info.running_slot));
    b.push_str("</table><h2>Services</h2><table id=\"services\"><tr><th>name</th><th>state</th><th>pid</th><th>uptime</th><th>restarts</th><th>last exit</th></tr>");
    for s in services {
        let _ = write!(
            b,
            "<tr><td><a href=\"/services/{n}\">{n}</a></td><td class=\"{st}\">{st}</td><td>{pid}</td><td>{up}</td><td>{r}</td><td>{le}</td></tr>",
            n = esc(&s.name),
            st = s.state.as_str(),
            pid = opt(&s.pid),
            up = s.uptime_seconds.map(|u| format!("{u} s")).unwrap_or_else(|| "–".into()),
            r = s.restarts,
            le = last_exit(&s.last_exit),
        );
    }
    b.push_str("</table><p>");
    b.push_str(&form(csrf, "/reboot", "reboot"));
    b.push_str(&form(csrf, "/poweroff", "poweroff"));
    b.push_str("</p>");
    page(&format!("{} – krazy", info.hostname), &b)
}

/// The page of one service.
pub fn service(s: &ServiceStatus, cfg: &ServiceConfig, logs: &ServiceLogs, csrf: &Csrf) -> String {
    let mut b = String::new();
    let n = esc(&s.name);
    let mut cmdline = vec![cfg.path.display().to_string()];
    cmdline.extend(cfg.args.iter().cloned());
    let _ = write!(
        b,
        "<p><a href=\"/\">overview</a></p><h1>{n}</h1><table>\
<tr><th>state</th><td id=\"state\" class=\"{st}\">{st}</td></tr>\
<tr><th>command line</th><td><code>{cl}</code></td></tr>\
<tr><th>pid</th><td>{pid}</td></tr><tr><th>started</th><td>{sa}</td></tr>\
<tr><th>restarts</th><td id=\"restarts\">{r}</td></tr><tr><th>last exit</th><td>{le}</td></tr></table><p>",
        st = s.state.as_str(),
        cl = esc(&cmdline.join(" ")),
        pid = opt(&s.pid),
        sa = opt(&s.started_at),
        r = s.restarts,
        le = last_exit(&s.last_exit),
    );
    for a in ["start", "stop", "restart"] {
        b.push_str(&form(csrf, &format!("/services/{}/{a}", s.name), a));
    }
    b.push_str("</p>");
    for (id, buf) in [("stdout", &logs.stdout), ("stderr", &logs.stderr)] {
        let _ = write!(b, "<h2>{id}</h2><pre id=\"{id}\">");
        for l in buf.snapshot() {
            b.push_str(&esc(&l.text));
            b.push('\n');
        }
        b.push_str("</pre>");
    }
    // The only script: live log following. Everything else works without it.
    let _ = write!(
        b,
        "<script>for(const s of ['stdout','stderr']){{const p=document.getElementById(s);\
const es=new EventSource('/api/v1/services/{n}/log?stream='+s+'&follow=1');let first=true;\
es.addEventListener(s,e=>{{if(first){{p.textContent='';p.dataset.live='1';first=false;}}\
const end=p.scrollTop+p.clientHeight>=p.scrollHeight-4;p.textContent+=e.data+'\\n';\
if(p.textContent.length>2000000)p.textContent=p.textContent.slice(-1000000);if(end)p.scrollTop=p.scrollHeight;}});}}</script>"
    );
    page(&format!("{} – krazy", s.name), &b)
}

/// The answer to a reboot or poweroff form.
pub fn power_page(p: Power) -> String {
    let what = match p {
        Power::Reboot => "Rebooting",
        Power::Poweroff => "Powering off",
    };
    page(
        what,
        &format!("<h1>{what}…</h1><p>Services are being stopped.</p>"),
    )
}
