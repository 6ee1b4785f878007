//! Cookies and server context for server functions (server side only).
//!
//! Two cookies, both HttpOnly, SameSite=Lax, Secure with the `__Host-` prefix over https:
//! - the session cookie of a signed-in user;
//! - the login cookie, issued when the password is accepted and a second factor is still due:
//!   the sign-in flow is bound to it, so a flow id alone is worth nothing.
//!
//! Each factor swaps the cookie for a new random one (password → login cookie, code → session).

use engine::sign_in::sessions::{token_cookie, token_from_cookie_header, SessionToken};
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
    /// `STEPGATE_PUBLIC_URL` was set: otherwise `public_url` is only the listening address.
    pub public_url_set: bool,
    /// Stepgate runs behind a proxy that appends the client's address to `X-Forwarded-For`.
    pub trust_proxy: bool,
    /// `STEPGATE_REGISTRATION`: who may register (the sign-up page and the admin page say so).
    pub registration: engine::sign_in::registration::RegistrationMode,
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
pub fn is_https(parts: &Parts) -> bool {
    parts.uri.scheme_str() == Some("https")
        || parts
            .headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// Where links shown to the visitor should point: `STEPGATE_PUBLIC_URL` when it is set, else
/// the origin this request came to (the listening address may be `0.0.0.0`, or not what a
/// phone can reach), else the listening address.
pub fn link_base() -> Option<String> {
    let settings = settings().ok()?;
    if settings.public_url_set {
        return Some(settings.public_url);
    }
    let origin = request().and_then(|parts| {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        // A proxy says which host the browser used only when we trust it.
        let host = settings
            .trust_proxy
            .then(|| header("x-forwarded-host"))
            .flatten()
            .or_else(|| header(http::header::HOST.as_str()))?;
        // A host header is a name and a port: nothing that could turn the link into another URL.
        let plain = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
        let scheme = if is_https(&parts) { "https" } else { "http" };
        plain.then(|| format!("{scheme}://{host}"))
    });
    Some(origin.unwrap_or(settings.public_url))
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

/// The browser's `User-Agent`, for the sessions list.
pub fn user_agent() -> Option<String> {
    request()?
        .headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
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

/// Whether this request came over https (so only `__Host-` cookie names count).
fn request_is_https() -> bool {
    request().is_some_and(|parts| is_https(&parts))
}

/// The session token the browser sent, if it has the shape we issue. Over https only
/// `__Host-stepgate_session` counts (`engine::sign_in::sessions::token_cookie` says why).
pub fn session_token() -> Option<SessionToken> {
    let https = request_is_https();
    cookie_headers()
        .iter()
        .find_map(|h| token_from_cookie_header(h, https))
}

/// This browser's session token, or `not_signed_in`.
pub fn current_session() -> Result<SessionToken, AppError> {
    session_token().ok_or(AppError::from(ErrorCode::NotSignedIn))
}

/// The login cookie's value, if any (over https only `__Host-stepgate_login`).
pub fn login_token() -> Option<SessionToken> {
    let https = request_is_https();
    cookie_headers()
        .iter()
        .find_map(|h| token_cookie(h, LOGIN_COOKIE, SECURE_LOGIN_COOKIE, https))
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
    use engine::sign_in::sessions::{COOKIE_NAME, SECURE_COOKIE_NAME, SESSION_TTL_SECONDS};
    set_cookie(
        COOKIE_NAME,
        SECURE_COOKIE_NAME,
        token.as_cookie_value(),
        SESSION_TTL_SECONDS,
    );
}

pub fn clear_session_cookie() {
    use engine::sign_in::sessions::{COOKIE_NAME, SECURE_COOKIE_NAME};
    set_cookie(COOKIE_NAME, SECURE_COOKIE_NAME, "", 0);
}

pub fn set_login_cookie(token: &SessionToken) {
    let max_age = engine::flows::flow::DEFAULT_FLOW_TTL.as_secs() as i64;
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
pub async fn signed_in_user() -> Result<engine::sign_in::users::User, AppError> {
    let token = current_session()?;
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

/// Where the confirm-it's-you page lives (`pages/confirm.rs`).
pub const CONFIRM_PAGE: &str = "/settings/confirm";

/// A same-site path to come back to (`/settings/…?…`), or `None`: never another origin
/// (`//host`, `/\host`, schemes), so the confirm page cannot be made an open redirect.
pub fn safe_return_path(path: &str) -> Option<&str> {
    let ok = path.starts_with('/')
        && !path.starts_with("//")
        && !path.starts_with("/\\")
        && path.len() <= 2048
        && !path.chars().any(|c| c.is_control() || c == '\\');
    ok.then_some(path)
}

/// The path and query of the page a form was posted from (its `Referer`). Only the path and
/// query are taken, so whatever the header says, the way back stays on this site (and
/// cross-site posts never get this far: `server/src/same_origin.rs`).
fn posting_page() -> Option<String> {
    let parts = request()?;
    let referer = parts.headers.get(http::header::REFERER)?.to_str().ok()?;
    let url = url::Url::parse(referer).ok()?;
    let path = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    safe_return_path(&path).map(str::to_owned)
}

/// `path` (ours, with or without a query) with `name=value` set in its query, replacing any
/// `name` it had.
pub fn with_query_pair(path: &str, name: &str, value: &str) -> String {
    let Ok(mut url) = url::Url::parse(&format!("http://stepgate{path}")) else {
        return path.to_owned();
    };
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair(name, value);
    format!("{}?{}", url.path(), url.query().unwrap_or_default())
}

/// `page` with `fields` in its query instead of what it had for them, and without the traces
/// of an earlier answer (a refused form's `__err`, a confirmation's `confirmed`).
fn return_path(page: &str, fields: &[(&str, &str)]) -> String {
    let Ok(mut url) = url::Url::parse(&format!("http://stepgate{page}")) else {
        return "/".into();
    };
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| !k.starts_with("__") && k != "confirmed")
        .filter(|(k, _)| !fields.iter().any(|(name, _)| name == k))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.set_query(None);
    let fields = fields.iter().filter(|(_, v)| v.len() <= 1024);
    if !kept.is_empty() || fields.clone().next().is_some() {
        url.query_pairs_mut()
            .extend_pairs(kept)
            .extend_pairs(fields);
    }
    match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    }
}

/// The link to the confirm page that comes back to `next` afterwards.
pub fn confirm_link(next: &str) -> String {
    let mut url = url::Url::parse("http://stepgate/").expect("a valid base");
    url.set_path(CONFIRM_PAGE);
    url.query_pairs_mut().append_pair("next", next);
    format!("{}?{}", url.path(), url.query().unwrap_or_default())
}

/// The signed-in user, if this session confirmed who it is within the last ten minutes
/// (`engine/src/sign_in/sudo.rs`). Otherwise `confirm_identity_required`, and a plain form post is sent
/// to the confirm page, which comes back to the page the form was on.
pub async fn require_sudo() -> Result<engine::sign_in::users::User, AppError> {
    require_sudo_keeping(&[]).await
}

/// [`require_sudo`], and the confirm page comes back with `fields` (what the refused form
/// carried, never a password) in the query, so the page can fill them in again.
pub async fn require_sudo_keeping(
    fields: &[(&str, &str)],
) -> Result<engine::sign_in::users::User, AppError> {
    let token = current_session()?;
    match engine()?.require_sudo(&token).await {
        Err(ErrorCode::ConfirmIdentityRequired) => {
            if is_plain_form_post() {
                let page = posting_page().unwrap_or_else(|| "/".into());
                let next = return_path(&page, fields);
                leptos_axum::redirect(&confirm_link(&next));
            }
            Err(ErrorCode::ConfirmIdentityRequired.into())
        }
        other => Ok(other?),
    }
}
