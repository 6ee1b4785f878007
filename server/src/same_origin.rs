//! Refuses state-changing requests sent from another site (CSRF), on top of the SameSite=Lax
//! cookies: a POST whose `Origin` is not this host, or that the browser marks
//! `Sec-Fetch-Site: cross-site`, never reaches a server function. Requests without these
//! headers (non-browser clients) pass; they carry no ambient cookies of a victim.

use axum::extract::Request;
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::Response;

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The `host[:port]` of an `Origin` header value (`scheme://host[:port]`).
fn origin_authority(origin: &str) -> Option<&str> {
    origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'))
}

pub fn is_cross_site(method: &Method, headers: &axum::http::HeaderMap) -> bool {
    if is_safe(method) {
        return false;
    }
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if text("sec-fetch-site") == Some("cross-site") {
        return true;
    }
    let Some(origin) = text(header::ORIGIN.as_str()) else {
        return false;
    };
    // A proxy may rewrite Host; it then says what the browser used.
    let host = text("x-forwarded-host").or(text(header::HOST.as_str()));
    match (origin_authority(origin), host) {
        (Some(from), Some(host)) => !from.eq_ignore_ascii_case(host),
        // "Origin: null" (sandboxed frames, some redirects) or no Host: refuse.
        _ => true,
    }
}

pub async fn refuse_cross_site_posts(request: Request, next: Next) -> Response {
    if is_cross_site(request.method(), request.headers()) {
        tracing::warn!(method = %request.method(), uri = %request.uri().path(), "refused a cross-site request");
        return crate::api_errors::error_response(engine::ErrorCode::CrossSiteRequest);
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    header::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn same_host_posts_and_all_reads_pass() {
        let same = headers(&[
            ("origin", "http://127.0.0.1:3000"),
            ("host", "127.0.0.1:3000"),
        ]);
        assert!(!is_cross_site(&Method::POST, &same));
        let foreign = headers(&[("origin", "https://evil.test"), ("host", "127.0.0.1:3000")]);
        assert!(!is_cross_site(&Method::GET, &foreign));
        assert!(!is_cross_site(
            &Method::POST,
            &headers(&[("host", "127.0.0.1:3000")])
        ));
    }

    #[test]
    fn foreign_null_and_cross_site_posts_are_refused() {
        let foreign = headers(&[("origin", "https://evil.test"), ("host", "127.0.0.1:3000")]);
        assert!(is_cross_site(&Method::POST, &foreign));
        let null = headers(&[("origin", "null"), ("host", "127.0.0.1:3000")]);
        assert!(is_cross_site(&Method::POST, &null));
        let marked = headers(&[("sec-fetch-site", "cross-site"), ("host", "127.0.0.1:3000")]);
        assert!(is_cross_site(&Method::POST, &marked));
    }

    #[test]
    fn a_proxy_forwarded_host_is_what_the_browser_used() {
        let proxied = headers(&[
            ("origin", "https://stepgate.example.org"),
            ("host", "127.0.0.1:3000"),
            ("x-forwarded-host", "stepgate.example.org"),
        ]);
        assert!(!is_cross_site(&Method::POST, &proxied));
    }
}
