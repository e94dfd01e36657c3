//! The device's read side and small verbs: JSON and text `GET`s, JSON
//! `POST`s, following an event stream, `cancel` and `reboot`.

use std::io;

use krazy_http::{read_response, HttpError, Limits, Phase};

use super::conn::{Answer, Body, MAX_JSON};
use super::error::http_err;
use super::{parse_json, Client, ClientError};
use crate::protocol::{Cancelled, Features, Status};

impl Client {
    /// `GET path` of any JSON endpoint of the device (`/api/v1/system`, say).
    pub fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.json("GET", path, Body::None)
    }

    /// `POST path` with a JSON body (and `Content-Type: application/json`,
    /// as the device requires of state-changing requests).
    pub fn post_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, ClientError> {
        let b = body.to_string();
        self.json("POST", path, Body::Json(b.as_bytes()))
    }

    /// `GET path` as text (a service's log backlog, say).
    pub fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let a = self.request("GET", path, Body::None)?;
        Ok(String::from_utf8_lossy(&a.body).into_owned())
    }

    /// `GET path` and hands the body to `on_data` as it arrives (a
    /// server-sent event stream, say), until the device closes it or
    /// `on_data` returns `false`. A close between two chunks ends the
    /// stream as well as a last chunk does.
    pub fn follow(
        &self,
        path: &str,
        mut on_data: impl FnMut(&[u8]) -> bool,
    ) -> Result<(), ClientError> {
        let what = format!("GET {path}");
        let host = self.cfg.host.as_str();
        let herr = |e| http_err(&what, host, e);
        let mut conn = self.connect()?;
        self.head("GET", path, "text/event-stream")
            .send(&mut conn, None)
            .map_err(herr)?;
        let mut resp =
            read_response(io::BufReader::new(conn), "GET", &Limits::default()).map_err(herr)?;
        if !resp.head.is_success() {
            // The error's body says why; a broken one still leaves the status.
            let body = resp.read_to_vec(MAX_JSON).unwrap_or_default();
            let a = Answer {
                status: resp.status(),
                body,
            };
            return self.check(&what, a).map(|_| ());
        }
        let mut buf = vec![0u8; 16 << 10];
        loop {
            match resp.body.read_body(&mut buf) {
                Ok(0) | Err(HttpError::Closed(Phase::ChunkSize)) => return Ok(()),
                Ok(n) => {
                    if !on_data(buf.get(..n).unwrap_or_default()) {
                        return Ok(());
                    }
                }
                Err(e) => return Err(herr(e)),
            }
        }
    }

    pub(crate) fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Body<'_>,
    ) -> Result<T, ClientError> {
        let a = self.request(method, path, body)?;
        parse_json(method, path, a)
    }

    /// `GET /update/features`.
    pub fn features(&self) -> Result<Features, ClientError> {
        self.json("GET", "/update/features", Body::None)
    }

    /// `GET /update/status`.
    pub fn status(&self) -> Result<Status, ClientError> {
        self.json("GET", "/update/status", Body::None)
    }

    /// `POST /update/cancel`: disarms an armed trial and abandons an upload
    /// in progress (protocol 2).
    pub fn cancel(&self) -> Result<Cancelled, ClientError> {
        self.json("POST", "/update/cancel", Body::Json(b"{}"))
    }

    /// `POST /api/v1/reboot`. A connection that drops before the answer
    /// counts as success: the device may be quicker to go down than to
    /// answer.
    pub fn reboot(&self) -> Result<(), ClientError> {
        match self.request("POST", "/api/v1/reboot", Body::Json(b"{}")) {
            Ok(_) => Ok(()),
            Err(ClientError::Io { source, .. })
                if matches!(
                    source.kind(),
                    io::ErrorKind::UnexpectedEof
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::BrokenPipe
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::conn::read_answer;

    #[test]
    fn an_error_answer_keeps_its_status() {
        let a = read_answer(
            &b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno"[..],
            "GET",
        )
        .unwrap();
        let c = Client::new(super::super::ClientConfig::new("h:1", "p")).unwrap();
        let e = c.check("GET /x", a).unwrap_err();
        assert!(
            matches!(&e, ClientError::Device { status: 404, message, .. } if message == "no"),
            "{e:?}"
        );
    }
}
