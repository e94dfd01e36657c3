//! Parsing of request paths, query strings and url-encoded forms (untrusted input).
//!
//! Every function here is total: any bytes give a value or `None`, never a panic,
//! and output is bounded by the input length.

/// A route the server knows, decoded from the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/` (HTML overview).
    Overview,
    /// `/services/{name}` (HTML service page).
    ServicePage(String),
    /// `POST /services/{name}/{action}` (HTML form).
    ServiceForm(String, ServiceAction),
    /// `POST /reboot` or `/poweroff` (HTML form).
    PowerForm(Power),
    /// `/api/v1/system`.
    ApiSystem,
    /// `/api/v1/services`.
    ApiServices,
    /// `/api/v1/services/{name}`.
    ApiService(String),
    /// `/api/v1/services/{name}/{action}`.
    ApiServiceAction(String, ServiceAction),
    /// `/api/v1/services/{name}/log`.
    ApiLog(String),
    /// `/api/v1/reboot` or `/api/v1/poweroff`.
    ApiPower(Power),
    /// `/api/v1/notify/network`.
    NotifyNetwork,
    /// `/api/v1/notify/clock`.
    NotifyClock,
}

/// Start, stop or restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceAction {
    /// Start.
    Start,
    /// Stop.
    Stop,
    /// Restart.
    Restart,
}

impl ServiceAction {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "start" => Some(ServiceAction::Start),
            "stop" => Some(ServiceAction::Stop),
            "restart" => Some(ServiceAction::Restart),
            _ => None,
        }
    }

    /// The word used in paths.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceAction::Start => "start",
            ServiceAction::Stop => "stop",
            ServiceAction::Restart => "restart",
        }
    }
}

/// Reboot or power off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    /// Reboot.
    Reboot,
    /// Power off.
    Poweroff,
}

impl Power {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "reboot" => Some(Power::Reboot),
            "poweroff" => Some(Power::Poweroff),
            _ => None,
        }
    }
}

/// Decodes a request path (without the query) into a route; `None` for 404.
pub fn route(path: &str) -> Option<Route> {
    if path == "/" {
        return Some(Route::Overview);
    }
    let rest = path.strip_prefix('/')?;
    let segs: Vec<String> = rest
        .split('/')
        .take(8)
        .map(percent_decode_str)
        .collect::<Option<_>>()?;
    if rest.split('/').count() > 7 {
        return None;
    }
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let name_ok = |n: &str| crate::config::valid_name(n);
    Some(match s.as_slice() {
        ["services", n] if name_ok(n) => Route::ServicePage((*n).to_owned()),
        ["services", n, a] if name_ok(n) => {
            Route::ServiceForm((*n).to_owned(), ServiceAction::parse(a)?)
        }
        [p] => Route::PowerForm(Power::parse(p)?),
        ["api", "v1", "system"] => Route::ApiSystem,
        ["api", "v1", "services"] => Route::ApiServices,
        ["api", "v1", "services", n] if name_ok(n) => Route::ApiService((*n).to_owned()),
        ["api", "v1", "services", n, "log"] if name_ok(n) => Route::ApiLog((*n).to_owned()),
        ["api", "v1", "services", n, a] if name_ok(n) => {
            Route::ApiServiceAction((*n).to_owned(), ServiceAction::parse(a)?)
        }
        ["api", "v1", "notify", "network"] => Route::NotifyNetwork,
        ["api", "v1", "notify", "clock"] => Route::NotifyClock,
        ["api", "v1", p] => Route::ApiPower(Power::parse(p)?),
        _ => return None,
    })
}

/// The byte of the two hex digits at `input[at..at + 2]`, if they are hex digits.
fn hex_byte(input: &[u8], at: usize) -> Option<u8> {
    let mut out = [0u8; 1];
    hex::decode_to_slice(input.get(at..at + 2)?, &mut out).ok()?;
    Some(out[0])
}

/// Percent-decodes bytes; `plus_is_space` for form bodies. Bad escapes stay literal.
pub fn percent_decode(input: &[u8], plus_is_space: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        match b {
            b'%' => match hex_byte(input, i + 1) {
                Some(byte) => {
                    out.push(byte);
                    i += 3;
                    continue;
                }
                None => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            _ => out.push(b),
        }
        i += 1;
    }
    out
}

/// Percent-decodes a path segment; `None` when the result is not UTF-8.
pub fn percent_decode_str(s: &str) -> Option<String> {
    String::from_utf8(percent_decode(s.as_bytes(), false)).ok()
}

/// Most key/value pairs read from one query string or form.
pub const MAX_PAIRS: usize = 64;

/// Parses `a=1&b=x+y` (query strings and url-encoded forms) into pairs.
/// Pairs that are not UTF-8 are skipped; at most [`MAX_PAIRS`] are kept.
pub fn parse_pairs(input: &[u8]) -> Vec<(String, String)> {
    input
        .split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = match p.iter().position(|&b| b == b'=') {
                Some(i) => (&p[..i], &p[i + 1..]),
                None => (p, &[][..]),
            };
            let k = String::from_utf8(percent_decode(k, true)).ok()?;
            let v = String::from_utf8(percent_decode(v, true)).ok()?;
            Some((k, v))
        })
        .take(MAX_PAIRS)
        .collect()
}

/// The first value for `key` among `pairs`.
pub fn get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/"), Some(Route::Overview));
        assert_eq!(
            route("/services/web"),
            Some(Route::ServicePage("web".into()))
        );
        assert_eq!(
            route("/services/web/restart"),
            Some(Route::ServiceForm("web".into(), ServiceAction::Restart))
        );
        assert_eq!(route("/reboot"), Some(Route::PowerForm(Power::Reboot)));
        assert_eq!(route("/api/v1/system"), Some(Route::ApiSystem));
        assert_eq!(route("/api/v1/services"), Some(Route::ApiServices));
        assert_eq!(
            route("/api/v1/services/a%2Db"),
            Some(Route::ApiService("a-b".into()))
        );
        assert_eq!(
            route("/api/v1/services/x/log"),
            Some(Route::ApiLog("x".into()))
        );
        assert_eq!(
            route("/api/v1/services/x/stop"),
            Some(Route::ApiServiceAction("x".into(), ServiceAction::Stop))
        );
        assert_eq!(
            route("/api/v1/poweroff"),
            Some(Route::ApiPower(Power::Poweroff))
        );
        assert_eq!(route("/api/v1/notify/clock"), Some(Route::NotifyClock));
        assert_eq!(route("/api/v1/notify/network"), Some(Route::NotifyNetwork));
        for bad in [
            "",
            "x",
            "/nope",
            "/services/..",
            "/services/a%2Fb",
            "/api/v1/services/x/explode",
            "/%ff",
            "/a/b/c/d/e/f/g/h/i",
        ] {
            assert_eq!(route(bad), None, "{bad}");
        }
    }

    #[test]
    fn pairs_and_escapes() {
        let p = parse_pairs(b"stream=both&follow=1&x=a+b%21&bad=%zz&&novalue");
        assert_eq!(get(&p, "stream"), Some("both"));
        assert_eq!(get(&p, "follow"), Some("1"));
        assert_eq!(get(&p, "x"), Some("a b!"));
        assert_eq!(get(&p, "bad"), Some("%zz"));
        assert_eq!(get(&p, "novalue"), Some(""));
        assert_eq!(parse_pairs(&b"a=1&".repeat(1000)).len(), MAX_PAIRS);
        assert_eq!(percent_decode(b"%4", false), b"%4");
        assert_eq!(
            html_escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
