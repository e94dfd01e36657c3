//! krazy-update's device endpoints (`/update/...`) inside the web server:
//! behind the same authentication, with each route's `Content-Type` rule,
//! and part uploads streamed into the slot in constant memory.

use std::io::Read;
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{HeaderMap, Response, StatusCode};
use krazy_update::device::{Device, Error as DeviceError, Route};
use tokio::sync::mpsc;

use super::{error, json, Body};

/// The largest manifest or switch request body.
const MAX_JSON_BODY: usize = 1 << 20;

/// How much of a refused part's body is read and dropped before answering.
const MAX_DRAIN: usize = 128 << 20;

/// How long a part upload may send nothing before it is cut off (and the
/// update lock it holds released). Not a total limit: a Pi uploads 30 MB
/// in about 3 minutes.
const BODY_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// The `Krazy-Upload-Id` header's value, if any (at most 64 bytes kept).
fn upload_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get(krazy_update::protocol::UPLOAD_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().chars().take(64).collect())
}

/// The update service as the web server shares it.
pub type SharedDevice = Arc<Mutex<Device>>;

/// A blocking reader over the chunks an async task receives.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    buf: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.buf.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.buf = b,
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        self.buf.advance(n);
        Ok(n)
    }
}

fn answer<T: serde::Serialize>(r: Result<T, DeviceError>) -> Response<Body> {
    match r {
        Ok(v) => json(StatusCode::OK, &v),
        Err(e) => {
            tracing::warn!("update: {e}");
            let status =
                StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            json(status, &e.body())
        }
    }
}

/// Runs `f` on the device on a blocking thread (uploads hold it for long;
/// the runtime must keep serving meanwhile).
async fn with_device<T: Send + 'static>(
    dev: &SharedDevice,
    f: impl FnOnce(&mut Device) -> T + Send + 'static,
) -> Result<T, Response<Body>> {
    let dev = dev.clone();
    tokio::task::spawn_blocking(move || match dev.lock() {
        Ok(mut d) => Ok(f(&mut d)),
        Err(_) => Err(()),
    })
    .await
    .ok()
    .and_then(Result::ok)
    .ok_or_else(|| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the update service failed",
        )
    })
}

/// Answers an `/update/...` request.
pub async fn handle(
    dev: &SharedDevice,
    route: Route,
    headers: &HeaderMap,
    body: Incoming,
) -> Response<Body> {
    if let Some(want) = route.content_type() {
        let got = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::trim)
            .unwrap_or("");
        if !got.eq_ignore_ascii_case(want) {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &format!("this request needs Content-Type: {want}"),
            );
        }
    }
    let r = match route {
        Route::Features => with_device(dev, |d| Ok::<_, DeviceError>(d.features()))
            .await
            .map(answer),
        Route::Status => with_device(dev, |d| Ok::<_, DeviceError>(d.status()))
            .await
            .map(answer),
        Route::Switch => {
            let id = upload_id(headers);
            with_device(dev, move |d| d.switch(id.as_deref()))
                .await
                .map(answer)
        }
        Route::Cancel => with_device(dev, |d| d.cancel()).await.map(answer),
        Route::Manifest => {
            let b = match Limited::new(body, MAX_JSON_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "the manifest is too large"),
            };
            with_device(dev, move |d| d.put_manifest(&b))
                .await
                .map(answer)
        }
        Route::Part(kind) => {
            let (tx, rx) = mpsc::channel::<Bytes>(8);
            let dev2 = dev.clone();
            let id = upload_id(headers);
            let task = tokio::task::spawn_blocking(move || match dev2.lock() {
                Ok(mut d) => Some(d.put_part(
                    kind,
                    id.as_deref(),
                    ChannelReader {
                        rx,
                        buf: Bytes::new(),
                    },
                )),
                Err(_) => None,
            });
            let mut body = body;
            let mut tx = Some(tx);
            let mut drained = 0usize;
            // A client that stops sending holds the update lock: after
            // BODY_IDLE without a byte the stream ends, the writer sees a
            // short part and the lock is released.
            while let Ok(Some(frame)) = tokio::time::timeout(BODY_IDLE, body.frame()).await {
                // A broken upload ends the stream early: the writer sees a
                // short part, marks the slot invalid and says so.
                let Ok(frame) = frame else { break };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                let data = match &tx {
                    Some(t) => match t.send(data).await {
                        Ok(()) => continue,
                        Err(mpsc::error::SendError(d)) => d,
                    },
                    None => data,
                };
                // The writer has stopped (a bad or too long part): read and
                // drop the rest, up to a limit, so that the client gets the
                // answer instead of a reset connection.
                tx = None;
                drained += data.len();
                if drained > MAX_DRAIN {
                    break;
                }
            }
            drop(tx);
            match task.await {
                Ok(Some(r)) => Ok(answer(r)),
                _ => Err(error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the update service failed",
                )),
            }
        }
    };
    r.unwrap_or_else(|e| e)
}
