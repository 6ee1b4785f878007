//! Browser security headers on every answer, and caching that matches what each answer is.
//!
//! - `Content-Security-Policy`: scripts and WebAssembly from this origin only, plus the inline
//!   hydration scripts that carry this response's nonce; nothing may frame us; forms post here
//!   only; the browser connects to nothing but us (the TOTP provider is only ever opened as a
//!   window, never fetched).
//! - `Cross-Origin-Opener-Policy: same-origin-allow-popups` keeps the link to the TOTP popup we
//!   open (its codes come back by `postMessage`) while cutting any opener that is not ours. The
//!   provider's callback page sends none: it must still reach the page that opened the popup.
//! - `Referrer-Policy: same-origin`, unless the answer set its own: the TOTP callback's
//!   `no-referrer` stays (its URL carries the seed), and a sign-in link (`/sign-in-link/{token}`)
//!   gets `no-referrer` too. The link's later pages hold no token and keep `same-origin`: under
//!   `no-referrer` their forms would post with `Origin: null`, which `same_origin.rs` refuses.
//! - `Strict-Transport-Security` when the browser came over https.
//! - Fingerprinted `/pkg/` files are immutable for a year; every page and API answer is
//!   `no-store`, since pages carry flows, codes and secrets.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use app::session::CspNonce;

#[derive(Clone, Copy)]
pub struct HeaderPolicy {
    /// cargo-leptos wrote fingerprinted file names (`hash-files`), so `/pkg/` may be cached for good.
    pub hashed_assets: bool,
}

/// The path of the page the TOTP provider sends its popup back to.
const POPUP_CALLBACK: &str = crate::totp_callback::PATH;

/// The referrer policy of the answer at `path` (one that sets its own keeps it).
fn referrer_policy(path: &str) -> &'static str {
    if app::pages::sign_in_link::is_link_token_page(path) {
        "no-referrer"
    } else {
        "same-origin"
    }
}

pub fn content_security_policy(nonce: &str) -> String {
    [
        "default-src 'none'".to_owned(),
        format!("script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'"),
        "style-src 'self'".to_owned(),
        "img-src 'self' data:".to_owned(),
        "connect-src 'self'".to_owned(),
        "manifest-src 'self'".to_owned(),
        "form-action 'self'".to_owned(),
        "frame-ancestors 'none'".to_owned(),
        "base-uri 'none'".to_owned(),
        "object-src 'none'".to_owned(),
    ]
    .join("; ")
}

fn new_nonce() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn came_over_https(headers: &HeaderMap, request: &Request) -> bool {
    request.uri().scheme_str() == Some("https")
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn cache_control(path: &str, policy: HeaderPolicy) -> &'static str {
    if path.starts_with("/pkg/") {
        if policy.hashed_assets {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        }
    } else if path == "/favicon.ico" {
        "public, max-age=86400"
    } else {
        "no-store"
    }
}

pub async fn add(State(policy): State<HeaderPolicy>, mut request: Request, next: Next) -> Response {
    let https = came_over_https(request.headers(), &request);
    let path = request.uri().path().to_owned();
    let nonce = new_nonce();
    request.extensions_mut().insert(CspNonce(nonce.clone()));

    let mut response = next.run(request).await;
    let own_referrer_policy = response.headers().contains_key(header::REFERRER_POLICY);
    let headers = response.headers_mut();
    let mut set = |name: header::HeaderName, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set(
        header::CONTENT_SECURITY_POLICY,
        &content_security_policy(&nonce),
    );
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    if !own_referrer_policy {
        set(header::REFERRER_POLICY, referrer_policy(&path));
    }
    set(header::X_FRAME_OPTIONS, "DENY");
    if path != POPUP_CALLBACK {
        set(
            header::HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin-allow-popups",
        );
    }
    if https {
        set(header::STRICT_TRANSPORT_SECURITY, "max-age=63072000");
    }
    set(header::CACHE_CONTROL, cache_control(&path, policy));
    if path.starts_with("/pkg/") {
        // Pre-compressed files (brotli or gzip) are chosen by Accept-Encoding: caches must know.
        set(header::VARY, "accept-encoding");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_only_our_scripts_and_this_nonce() {
        let csp = content_security_policy("abc123");
        assert!(csp.contains("script-src 'self' 'nonce-abc123' 'wasm-unsafe-eval'"));
        assert!(csp.contains("frame-ancestors 'none'"));
        assert!(csp.contains("form-action 'self'"));
        assert!(!csp.contains("unsafe-inline"));
        assert!(!csp.contains("unsafe-eval'") || csp.contains("wasm-unsafe-eval"));
    }

    #[test]
    fn fingerprinted_assets_are_immutable_and_pages_are_not_stored() {
        let hashed = HeaderPolicy {
            hashed_assets: true,
        };
        let plain = HeaderPolicy {
            hashed_assets: false,
        };
        assert_eq!(
            cache_control("/pkg/stepgate.1a2b.wasm", hashed),
            "public, max-age=31536000, immutable"
        );
        assert_eq!(cache_control("/pkg/stepgate.wasm", plain), "no-cache");
        assert_eq!(cache_control("/login/code", hashed), "no-store");
        assert_eq!(cache_control("/api/verify_code", hashed), "no-store");
    }

    #[tokio::test]
    async fn an_answers_own_referrer_policy_is_kept_and_others_get_same_origin() {
        use axum::body::Body;
        use axum::response::IntoResponse;
        use tower::ServiceExt;

        let app = axum::Router::new()
            .route(
                POPUP_CALLBACK,
                axum::routing::get(|| async {
                    ([(header::REFERRER_POLICY, "no-referrer")], "seed page").into_response()
                }),
            )
            .route("/login", axum::routing::get(|| async { "login" }))
            .layer(axum::middleware::from_fn_with_state(
                HeaderPolicy {
                    hashed_assets: false,
                },
                add,
            ));
        let get = |path: String| {
            let app = app.clone();
            async move {
                app.oneshot(axum::http::Request::get(path).body(Body::empty()).unwrap())
                    .await
                    .unwrap()
            }
        };
        let callback = get(format!("{POPUP_CALLBACK}?seed=ABC")).await;
        let policies: Vec<_> = callback
            .headers()
            .get_all(header::REFERRER_POLICY)
            .iter()
            .collect();
        assert_eq!(policies, ["no-referrer"]);
        let login = get("/login".into()).await;
        assert_eq!(login.headers()[header::REFERRER_POLICY], "same-origin");
    }

    #[test]
    fn a_sign_in_link_sends_no_referrer() {
        assert_eq!(referrer_policy("/sign-in-link/abc.def"), "no-referrer");
        // Its later pages hold no token; their forms must post with their origin.
        assert_eq!(referrer_policy("/sign-in-link"), "same-origin");
        assert_eq!(referrer_policy("/sign-in-link/step"), "same-origin");
        assert_eq!(referrer_policy("/accounts/account"), "same-origin");
    }

    #[test]
    fn nonces_are_fresh_and_long() {
        let (a, b) = (new_nonce(), new_nonce());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
    }
}
