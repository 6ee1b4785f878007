//! The session cookie (server side only): HttpOnly, SameSite=Lax, and Secure with the
//! `__Host-` prefix when the request came over https.

use engine::sessions::SessionToken;
use http::header::{COOKIE, SET_COOKIE};
use http::request::Parts;
use http::HeaderValue;
use leptos::prelude::use_context;
use leptos_axum::ResponseOptions;

use crate::error::AppError;
use engine::ErrorCode;

const PLAIN_NAME: &str = "stepgate_session";
/// Over https the `__Host-` prefix pins the cookie to this host and path `/` (ASVS 3.4.4).
const SECURE_NAME: &str = "__Host-stepgate_session";

/// The engine, handed to server functions through context by the server crate.
pub fn engine() -> Result<engine::Engine, AppError> {
    use_context::<engine::Engine>().ok_or(AppError {
        code: ErrorCode::Unknown,
    })
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

/// The session token the browser sent, if it has the shape we issue.
pub fn session_token() -> Option<SessionToken> {
    let parts = request()?;
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == PLAIN_NAME || *name == SECURE_NAME)
        .and_then(|(_, value)| SessionToken::from_cookie(value))
}

fn set_cookie(value: &str, max_age: i64) {
    let (Some(parts), Some(response)) = (request(), use_context::<ResponseOptions>()) else {
        return;
    };
    let cookie = if is_https(&parts) {
        format!("{SECURE_NAME}={value}; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age={max_age}")
    } else {
        format!("{PLAIN_NAME}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}")
    };
    if let Ok(header) = HeaderValue::from_str(&cookie) {
        response.append_header(SET_COOKIE, header);
    }
}

pub fn set_session_cookie(token: &SessionToken) {
    set_cookie(
        token.as_cookie_value(),
        engine::sessions::SESSION_TTL_SECONDS,
    );
}

pub fn clear_session_cookie() {
    set_cookie("", 0);
}
