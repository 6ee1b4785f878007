//! A request id for every request, and one log line per request.
//!
//! The id is the `X-Request-Id` a balancer in front sent (when it is a plain token of at most
//! 64 characters), or a new random one; it goes back in the answer's `X-Request-Id`, and every
//! line logged while the request runs carries it (`request_id`), so a user's "it failed at
//! 10:42" becomes one `grep`. The request's line names its method, route, status and duration:
//! the route with the parts that may be secret or personal cut (a sign-in link's token, a
//! proxied path), never a query.
//!
//! `STEPGATE_LOG_FORMAT=json` writes one JSON object per line (the span's `request_id` in it);
//! the default stays readable text.

use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use rand::RngCore;
use tracing::Instrument;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// How log lines are written (`STEPGATE_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub fn from_env() -> Result<LogFormat, String> {
        match std::env::var("STEPGATE_LOG_FORMAT").as_deref() {
            Err(_) | Ok("") | Ok("text") => Ok(LogFormat::Text),
            Ok("json") => Ok(LogFormat::Json),
            Ok(other) => Err(format!(
                "STEPGATE_LOG_FORMAT must be `text` or `json`, not `{other}`"
            )),
        }
    }
}

/// The id a balancer sent, if it is a plain token (letters, digits, `-`, `_`, `.`; 1 to 64).
fn incoming_id(request: &Request) -> Option<String> {
    let id = request.headers().get(&REQUEST_ID)?.to_str().ok()?;
    let plain = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    plain.then(|| id.to_owned())
}

fn new_id() -> String {
    let mut bytes = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The path as the log may show it: a sign-in link's token and a proxied request's path are
/// cut; static files are not logged at all (`None`).
fn loggable_path(path: &str) -> Option<String> {
    if path.starts_with("/pkg/") || path == "/favicon.ico" {
        return None;
    }
    if path.starts_with("/sign-in-link/") && path != "/sign-in-link/step" {
        return Some("/sign-in-link/…".to_owned());
    }
    if let Some(rest) = path.strip_prefix("/api/v1/accounts/") {
        if let Some((id, _)) = rest.split_once("/proxy/") {
            return Some(format!("/api/v1/accounts/{id}/proxy/…"));
        }
    }
    Some(path.to_owned())
}

/// Tags the request with its id (header and span) and logs its line.
pub async fn tag(request: Request, next: Next) -> Response {
    let id = incoming_id(&request).unwrap_or_else(new_id);
    let method = request.method().clone();
    let path = loggable_path(request.uri().path());
    let span = tracing::info_span!("request", request_id = %id);
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    if let Some(path) = path {
        let _entered = span.enter();
        tracing::info!(
            %method,
            path,
            status = response.status().as_u16(),
            ms = started.elapsed().as_millis() as u64,
            "request"
        );
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    use super::*;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn app() -> Router {
        Router::new()
            .route(
                "/accounts",
                get(|| async {
                    tracing::warn!("something inside the request");
                    "ok"
                }),
            )
            .route("/sign-in-link/{token}", get(|| async { "link" }))
            .layer(axum::middleware::from_fn(tag))
    }

    /// In JSON, every line of a request carries its id, the same the answer's header names;
    /// a token in the path is not logged.
    #[tokio::test]
    async fn json_lines_carry_the_request_id_the_answer_names() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let response = app()
            .oneshot(Request::get("/accounts").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let id = response.headers()[&REQUEST_ID].to_str().unwrap().to_owned();
        assert_eq!(id.len(), 24);
        let token = "0123456789abcdef.c2VjcmV0LXRva2Vu";
        let response = app()
            .oneshot(
                Request::get(format!("/sign-in-link/{token}"))
                    .header(&REQUEST_ID, "lb-7f3a.2")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(
            response.headers()[&REQUEST_ID],
            "lb-7f3a.2",
            "the balancer's id kept"
        );

        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains(token), "{text}");
        let parsed: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(parsed.len(), 3, "{text}");
        for line in &parsed[..2] {
            assert_eq!(line["span"]["request_id"], id.as_str(), "{line}");
        }
        assert_eq!(
            parsed[0]["fields"]["message"],
            "something inside the request"
        );
        assert_eq!(parsed[1]["fields"]["path"], "/accounts");
        assert_eq!(parsed[1]["fields"]["status"], 200);
        assert_eq!(parsed[2]["span"]["request_id"], "lb-7f3a.2");
        assert_eq!(parsed[2]["fields"]["path"], "/sign-in-link/…");
    }

    #[test]
    fn only_plain_short_ids_are_taken_from_outside() {
        let with = |value: &str| {
            Request::get("/")
                .header(&REQUEST_ID, value)
                .body(Body::empty())
                .unwrap()
        };
        assert_eq!(
            incoming_id(&with("abc-123_x.y")),
            Some("abc-123_x.y".into())
        );
        for bad in ["", "a b", "x\"}{", &"a".repeat(65)] {
            assert_eq!(incoming_id(&with(bad)), None, "{bad:?}");
        }
        assert_eq!(
            loggable_path("/api/v1/accounts/7/proxy/gateway/api/2.0/Me"),
            Some("/api/v1/accounts/7/proxy/…".into())
        );
        assert_eq!(loggable_path("/pkg/stepgate.wasm"), None);
    }
}
