//! A secret shown exactly once on a page of plain forms (server side only): a new API key, a
//! webhook's signing secret.
//!
//! The form post that makes the secret ends in a redirect, and the secret cannot ride in the
//! redirect's URL (URLs end up in history, logs and `Referer`s). So it is handed over in a
//! short-lived cookie instead: HttpOnly, SameSite=Strict, sent only to the page, one minute at
//! most. Rendering the page takes it out of the cookie and clears it, so it is shown once and
//! stays in no URL and no log.

use crate::session::{cookie_headers, set_http_only_cookie};

/// Long enough for the redirect to the page, short enough to be gone if it never comes.
const HAND_OVER_SECONDS: i64 = 60;

/// The cookie's name over https (`__Host-` would need `Path=/`; this cookie is for one page only).
fn secure_name(cookie_name: &str) -> String {
    format!("__Secure-{cookie_name}")
}

fn set(cookie_name: &str, path: &str, value: &str, max_age: i64) {
    let secure = secure_name(cookie_name);
    set_http_only_cookie(cookie_name, &secure, value, path, "Strict", max_age);
}

/// Hands `secret` to the next rendering of the page at `path`.
pub fn hand_over(cookie_name: &str, path: &str, secret: &str) {
    set(cookie_name, path, secret, HAND_OVER_SECONDS);
}

/// The secret handed over to the page at `path`, if the browser brought it back and `valid`
/// accepts it (it came from the browser); the cookie is then cleared.
pub fn take(cookie_name: &str, path: &str, valid: impl Fn(&str) -> bool) -> Option<String> {
    let secure = secure_name(cookie_name);
    let secret = cookie_headers()
        .iter()
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == cookie_name || *name == secure)
        .map(|(_, value)| value.to_owned())
        .filter(|value| valid(value))?;
    set(cookie_name, path, "", 0);
    Some(secret)
}

/// [`hand_over`] as a `Set-Cookie` header value, for a handler outside the server functions
/// (the TOTP site's callback); `https` picks the cookie's name and `Secure`, as there.
pub fn hand_over_header(cookie_name: &str, path: &str, secret: &str, https: bool) -> String {
    let (name, secure) = if https {
        (secure_name(cookie_name), "; Secure")
    } else {
        (cookie_name.to_owned(), "")
    };
    format!(
        "{name}={secret}; Path={path}; HttpOnly; SameSite=Strict{secure}; Max-Age={HAND_OVER_SECONDS}"
    )
}
