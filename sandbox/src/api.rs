//! What the providers' *data* endpoints share (FlameConnect's `GetFires`, Synergia's gateway,
//! Lynk & Co's vehicle list, Xiaomi's `device_list`): which tokens they still take, and the last
//! request they received.
//!
//! Stepgate's API proxy answers an upstream 401 with one renewal and one retry. To test that,
//! a token must stop working at the data endpoint while the renewal still works: a provider
//! *admits* each token it issues to its [`ApiDesk`], its data endpoints take only admitted
//! tokens (besides their own checks), and [`ApiDesk::invalidate`] forgets every token admitted
//! so far; tokens issued later are admitted again. Over HTTP, on every host of the provider:
//!
//! ```text
//! POST /testing/invalidate-api-tokens  -> {"invalidated": 2}
//! GET  /testing/last-api-request       -> null | {"origin": "https://api.io.mi.com", "method": "POST",
//!                                          "path": "/app/home/device_list?…", "headers": [["cookie", "…"], …],
//!                                          "body": "data=…"}
//! ```
//!
//! The last request is recorded as received (headers in order, names lower-case), so Stepgate's
//! tests can check that only the headers it allows reached the upstream.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;

/// The largest request body a data endpoint reads.
const MAX_BODY: usize = 1 << 20;

/// One request a data endpoint received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiRequest {
    /// The real origin the host stands for.
    pub origin: &'static str,
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    /// `(name, value)` in the order received; names lower-case.
    pub headers: Vec<(String, String)>,
    /// The body as text (invalid UTF-8 replaced).
    pub body: String,
}

impl ApiRequest {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Desk {
    admitted: HashSet<String>,
    last: Option<ApiRequest>,
}

/// One provider's data-endpoint state (shared by its hosts).
#[derive(Clone, Default)]
pub struct ApiDesk(Arc<Mutex<Desk>>);

impl ApiDesk {
    fn lock(&self) -> std::sync::MutexGuard<'_, Desk> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A token (or its ID) just issued: the data endpoints take it until [`Self::invalidate`].
    pub(crate) fn admit(&self, token: &str) {
        self.lock().admitted.insert(token.to_owned());
    }

    pub(crate) fn admits(&self, token: &str) -> bool {
        self.lock().admitted.contains(token)
    }

    /// Every token issued so far is refused by the data endpoints (renewals still work and
    /// their tokens are taken); answers how many were.
    pub fn invalidate(&self) -> usize {
        let mut desk = self.lock();
        let n = desk.admitted.len();
        desk.admitted.clear();
        n
    }

    /// The last request any of the provider's data endpoints received.
    pub fn last_request(&self) -> Option<ApiRequest> {
        self.lock().last.clone()
    }
}

/// The token of `Authorization: Bearer <token>` (the scheme in any case, as RFC 6750 allows).
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' '))
        .then_some(token)
}

/// `router` with every request whose path `is_data` says is a data endpoint's recorded first
/// (never `/testing/…`, the controls themselves).
pub(crate) fn recorded(
    router: Router,
    origin: &'static str,
    desk: ApiDesk,
    is_data: fn(&str) -> bool,
) -> Router {
    router.layer(axum::middleware::from_fn(
        move |request: Request, next: Next| {
            let desk = desk.clone();
            async move {
                let path = request.uri().path();
                if path.starts_with("/testing/") || !is_data(path) {
                    return next.run(request).await;
                }
                let (parts, body) = request.into_parts();
                let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
                    return StatusCode::PAYLOAD_TOO_LARGE.into_response();
                };
                desk.lock().last = Some(ApiRequest {
                    origin,
                    method: parts.method.to_string(),
                    path: parts
                        .uri
                        .path_and_query()
                        .map(|pq| pq.as_str().to_owned())
                        .unwrap_or_default(),
                    headers: parts
                        .headers
                        .iter()
                        .map(|(n, v)| {
                            (
                                n.as_str().to_owned(),
                                String::from_utf8_lossy(v.as_bytes()).into_owned(),
                            )
                        })
                        .collect(),
                    body: String::from_utf8_lossy(&bytes).into_owned(),
                });
                next.run(Request::from_parts(parts, Body::from(bytes)))
                    .await
            }
        },
    ))
}

/// `POST /testing/invalidate-api-tokens` and `GET /testing/last-api-request`, merged into
/// every host of a provider.
pub(crate) fn routes(desk: ApiDesk) -> Router {
    Router::new()
        .route(
            "/testing/invalidate-api-tokens",
            post(|State(d): State<ApiDesk>| async move {
                Json(json!({"invalidated": d.invalidate()}))
            }),
        )
        .route(
            "/testing/last-api-request",
            get(|State(d): State<ApiDesk>| async move { Json(d.last_request()) }),
        )
        .with_state(desk)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_takes_one_token_after_the_scheme() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        for (value, token) in [
            ("Bearer abc.def", Some("abc.def")),
            ("bearer abc", Some("abc")),
            ("Basic abc", None),
            ("Bearer ", None),
            ("Bearer a b", None),
            ("Bearerabc", None),
        ] {
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            assert_eq!(bearer(&h), token, "{value}");
        }
    }

    #[test]
    fn invalidating_forgets_what_was_admitted_until_then() {
        let desk = ApiDesk::default();
        desk.admit("a");
        desk.admit("b");
        assert_eq!(desk.invalidate(), 2);
        assert!(!desk.admits("a"));
        desk.admit("c");
        assert!(desk.admits("c"));
    }
}
