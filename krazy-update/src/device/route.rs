//! Which endpoint a request is for, and the `Content-Type` it must carry.

use crate::protocol::PartKind;

/// Which endpoint a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /update/features`.
    Features,
    /// `PUT /update/manifest`.
    Manifest,
    /// `PUT /update/root` or `/update/boot`.
    Part(PartKind),
    /// `POST /update/switch`.
    Switch,
    /// `POST /update/cancel`.
    Cancel,
    /// `GET /update/status`.
    Status,
}

impl Route {
    /// The route of `method` and `path`, if it is one of ours.
    pub fn parse(method: &str, path: &str) -> Option<Route> {
        Some(match (method, path) {
            ("GET", "/update/features") => Route::Features,
            ("PUT", "/update/manifest") => Route::Manifest,
            ("PUT", "/update/root") => Route::Part(PartKind::Root),
            ("PUT", "/update/boot") => Route::Part(PartKind::Boot),
            ("POST", "/update/switch") => Route::Switch,
            ("POST", "/update/cancel") => Route::Cancel,
            ("GET", "/update/status") => Route::Status,
            _ => return None,
        })
    }

    /// The `Content-Type` a state-changing request must carry (None for GETs).
    pub fn content_type(self) -> Option<&'static str> {
        match self {
            Route::Features | Route::Status => None,
            Route::Manifest | Route::Switch | Route::Cancel => Some("application/json"),
            Route::Part(_) => Some("application/octet-stream"),
        }
    }
}
