//! Cookies and server context for server functions (server side only).
//!
//! Two cookies, both HttpOnly, SameSite=Lax, Secure with the `__Host-` prefix over https:
//! - the session cookie of a signed-in user;
//! - the login cookie, issued when the password is accepted and a second factor is still due:
//!   the sign-in flow is bound to it, so a flow id alone is worth nothing.
//!
//! Each factor swaps the cookie for a new random one (password → login cookie, code → session).

use engine::sessions::{token_cookie, token_from_cookie_header, SessionToken};
use engine::ErrorCode;
use http::header::{COOKIE, SET_COOKIE};
use http::request::Parts;
use http::HeaderValue;
use leptos::prelude::use_context;
use leptos_axum::ResponseOptions;

use crate::error::AppError;

const LOGIN_COOKIE: &str = "stepgate_login";
const SECURE_LOGIN_COOKIE: &str = "__Host-stepgate_login";

/// Settings the server crate hands to server functions.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// How browsers reach Stepgate, without a trailing slash.
    pub public_url: String,
    /// Stepgate runs behind a proxy that appends the client's address to `X-Forwarded-For`.
    pub trust_proxy: bool,
    /// `STEPGATE_REGISTRATION`: who may register (the sign-up page and the admin page say so).
    pub registration: engine::registration::RegistrationMode,
}

/// The engine, handed to server functions through context by the server crate.
pub fn engine() -> Result<engine::Engine, AppError> {
    use_context::<engine::Engine>().ok_or(AppError::from(ErrorCode::Unknown))
}

pub fn settings() -> Result<ServerSettings, AppError> {
    use_context::<ServerSettings>().ok_or(AppError::from(ErrorCode::Unknown))
}

fn request() -> Option<Parts> {
    use_context::<Parts>()
}

/// True when the browser reached us over https (directly or through a TLS-terminating proxy).
fn is_https(parts: &Parts) -> bool {
    parts.uri.scheme_str() == Some("https")
        || parts
            .headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// The `Cookie` headers the browser sent.
pub(crate) fn cookie_headers() -> Vec<String> {
    request()
        .map(|parts| {
            parts
                .headers
                .get_all(COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Where the request came from, for throttling: the peer's address, or behind a trusted proxy
/// the last address it appended to `X-Forwarded-For` (earlier entries are the client's word).
pub fn client_address() -> Option<std::net::IpAddr> {
    let parts = request()?;
    let trust_proxy = settings().is_ok_and(|s| s.trust_proxy);
    if trust_proxy {
        // Only the last entry was written by our proxy; anything before it came from the client.
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|a| a.trim().parse().ok());
        if forwarded.is_some() {
            return forwarded;
        }
    }
    parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip())
}

/// A plain HTML form post (no WebAssembly): the browser is redirected back to the page, and an
/// error travels in that URL.
pub fn is_plain_form_post() -> bool {
    request().is_some_and(|parts| {
        parts
            .headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"))
    })
}

/// The session token the browser sent, if it has the shape we issue.
pub fn session_token() -> Option<SessionToken> {
    cookie_headers()
        .iter()
        .find_map(|h| token_from_cookie_header(h))
}

/// The login cookie's value, if any.
pub fn login_token() -> Option<SessionToken> {
    cookie_headers()
        .iter()
        .find_map(|h| token_cookie(h, LOGIN_COOKIE, SECURE_LOGIN_COOKIE))
}

/// Sets an HttpOnly cookie for `path`: named `secure` and marked `Secure` over https, `plain`
/// over http (browsers drop `Secure` cookies and the prefixed names there). Shared with the
/// one-time secret cookies (`one_time_secret.rs`), which differ only in path and SameSite.
pub(crate) fn set_http_only_cookie(
    plain: &str,
    secure: &str,
    value: &str,
    path: &str,
    same_site: &str,
    max_age: i64,
) {
    let (Some(parts), Some(response)) = (request(), use_context::<ResponseOptions>()) else {
        return;
    };
    let (name, secure_attribute) = if is_https(&parts) {
        (secure, "; Secure")
    } else {
        (plain, "")
    };
    let cookie = format!(
        "{name}={value}; Path={path}; HttpOnly; SameSite={same_site}{secure_attribute}; Max-Age={max_age}"
    );
    if let Ok(header) = HeaderValue::from_str(&cookie) {
        response.append_header(SET_COOKIE, header);
    }
}

fn set_cookie(plain: &str, secure: &str, value: &str, max_age: i64) {
    set_http_only_cookie(plain, secure, value, "/", "Lax", max_age);
}

pub fn set_session_cookie(token: &SessionToken) {
    use engine::sessions::{COOKIE_NAME, SECURE_COOKIE_NAME, SESSION_TTL_SECONDS};
    set_cookie(
        COOKIE_NAME,
        SECURE_COOKIE_NAME,
        token.as_cookie_value(),
        SESSION_TTL_SECONDS,
    );
}

pub fn clear_session_cookie() {
    use engine::sessions::{COOKIE_NAME, SECURE_COOKIE_NAME};
    set_cookie(COOKIE_NAME, SECURE_COOKIE_NAME, "", 0);
}

pub fn set_login_cookie(token: &SessionToken) {
    let max_age = engine::flow::DEFAULT_FLOW_TTL.as_secs() as i64;
    set_cookie(
        LOGIN_COOKIE,
        SECURE_LOGIN_COOKIE,
        token.as_cookie_value(),
        max_age,
    );
}

pub fn clear_login_cookie() {
    set_cookie(LOGIN_COOKIE, SECURE_LOGIN_COOKIE, "", 0);
}

/// The signed-in user, or `not_signed_in`.
pub async fn signed_in_user() -> Result<engine::users::User, AppError> {
    let token = session_token().ok_or(AppError::from(ErrorCode::NotSignedIn))?;
    engine()?
        .session_user(&token)
        .await?
        .ok_or(AppError::from(ErrorCode::NotSignedIn))
}

/// The per-response nonce of the `Content-Security-Policy` (the server's security-header
/// middleware makes it and puts it in the request's extensions; the shell stamps it on the
/// inline hydration scripts).
#[derive(Debug, Clone)]
pub struct CspNonce(pub String);

/// The request's CSP nonce, if the server made one.
pub fn csp_nonce() -> Option<String> {
    request()?.extensions.get::<CspNonce>().map(|n| n.0.clone())
}
