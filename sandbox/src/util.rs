//! Small helpers shared by the Librus and Xiaomi doubles.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine;
use rand::RngCore;

/// Random bytes as lower-case hex.
pub fn hex_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    hex::encode(buf)
}

/// Random bytes as standard base64 (with `+`, `/` and `=`, as Xiaomi's tokens are).
pub fn b64_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    base64::engine::general_purpose::STANDARD.encode(buf)
}

/// A wall clock that tests can move forward.
#[derive(Clone, Default)]
pub struct Clock(Arc<AtomicI64>);

impl Clock {
    /// Milliseconds since the epoch, plus the offset.
    pub fn now_ms(&self) -> i64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        real + self.0.load(Ordering::SeqCst)
    }

    pub fn advance(&self, by: std::time::Duration) {
        self.0.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
}

/// The request's cookies (the last value wins for a repeated name).
pub fn cookies(headers: &HeaderMap) -> HashMap<String, String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            Some((k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect()
}

/// A host-only cookie (no `Domain`), as every double sets them.
pub fn set_cookie(name: &str, value: &str) -> String {
    if SECRET_COOKIES.contains(&name) {
        record_secret(value);
    }
    format!("{name}={value}; Path=/; HttpOnly")
}

/// Cookies whose values are a client's secrets: the end-to-end tests check that none of them
/// reaches Stepgate's database or log in clear.
const SECRET_COOKIES: [&str; 6] = [
    "DZIENNIKSID",
    "SDZIENNIKSID",
    "oauth_token",
    "passToken",
    "serviceToken",
    "identity_session",
];

/// Every secret this process has handed out (cookie values, `ssecurity`, …), for
/// `GET /testing/issued`. Bounded: the oldest are dropped past [`MAX_ISSUED`].
static ISSUED: std::sync::Mutex<std::collections::VecDeque<String>> =
    std::sync::Mutex::new(std::collections::VecDeque::new());
const MAX_ISSUED: usize = 100_000;

/// Remembers a secret value handed to a client.
pub fn record_secret(value: &str) {
    let mut issued = ISSUED.lock().unwrap_or_else(|e| e.into_inner());
    if issued.len() >= MAX_ISSUED {
        issued.pop_front();
    }
    issued.push_back(value.to_owned());
}

/// The secrets handed out so far.
pub fn issued_secrets() -> Vec<String> {
    ISSUED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .cloned()
        .collect()
}

/// Deletes a host-only cookie.
pub fn clear_cookie(name: &str) -> String {
    format!("{name}=deleted; Path=/; Max-Age=0; HttpOnly")
}

pub fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The query string of a URI as a map (form-decoded).
pub fn query(uri: &Uri) -> HashMap<String, String> {
    form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// An urlencoded or multipart/form-data body as a map (text fields only).
pub fn form(headers: &HeaderMap, body: &Bytes) -> Option<HashMap<String, String>> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let lower = ct.to_ascii_lowercase();
    if lower.starts_with("application/x-www-form-urlencoded") {
        return Some(form_urlencoded::parse(body).into_owned().collect());
    }
    if lower.starts_with("multipart/form-data") {
        let boundary = ct
            .split(';')
            .filter_map(|p| p.trim().split_once('='))
            .find(|(k, _)| k.eq_ignore_ascii_case("boundary"))?
            .1
            .trim_matches('"')
            .to_owned();
        return multipart(&String::from_utf8_lossy(body), &boundary);
    }
    None
}

fn multipart(body: &str, boundary: &str) -> Option<HashMap<String, String>> {
    let delimiter = format!("--{boundary}");
    let mut fields = HashMap::new();
    for part in body.split(&delimiter).skip(1) {
        if part.starts_with("--") {
            break;
        }
        let part = part.strip_prefix("\r\n").unwrap_or(part);
        let (head, value) = part.split_once("\r\n\r\n")?;
        let name = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition"))?
            .split(';')
            .filter_map(|p| p.trim().split_once('='))
            .find(|(k, _)| *k == "name")?
            .1
            .trim_matches('"')
            .to_owned();
        fields.insert(name, value.strip_suffix("\r\n").unwrap_or(value).to_owned());
    }
    Some(fields)
}

pub fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// 302 to `location`, with extra `Set-Cookie` headers.
pub fn found(location: &str, set_cookies: &[String]) -> Response {
    let mut r = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    add_cookies(&mut r, set_cookies);
    r
}

pub fn add_cookies(r: &mut Response, set_cookies: &[String]) {
    for c in set_cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
}

pub fn html_page(title: &str, body: &str) -> String {
    format!(
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{t}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:48rem}}
input,button{{font:inherit;padding:.4rem .6rem}} input[readonly]{{width:100%}} .code{{font:700 1.6rem ui-monospace,monospace}}</style></head>
<body><main><h1>{t}</h1>{body}</main></body></html>"#,
        t = esc(title)
    )
}

/// Binds `addr` and serves `router` on a background task.
pub async fn serve(
    addr: &str,
    router: Router,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!("sandbox host {local}: {e}");
        }
    });
    Ok((local, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_text_fields_are_read() {
        let body = "--XyZ\r\nContent-Disposition: form-data; name=\"action\"\r\n\r\nlogin\r\n--XyZ\r\nContent-Disposition: form-data; name=\"pass\"\r\n\r\na b\r\n--XyZ--\r\n";
        let f = multipart(body, "XyZ").unwrap();
        assert_eq!(f["action"], "login");
        assert_eq!(f["pass"], "a b");
    }
}
