//! `GET /settings/security/totp-callback`: where the TOTP site (the web TOTP service) sends the user back after
//! creating a seed (`success, seedId, seed, code, regToken, timestamp`). It runs in the popup;
//! the page it returns tells the opener and closes itself, or asks the user to close it.

use axum::extract::Query;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use engine::second_factor::enrolment::RegistrationCallback;
use engine::second_factor::recovery_codes::RecoveryCodes;
use engine::sign_in::sessions::token_from_cookie_header;
use engine::{Engine, ErrorCode};

pub const PATH: &str = "/settings/security/totp-callback";

pub async fn handle(
    engine: Engine,
    stylesheet: &str,
    headers: HeaderMap,
    Query(callback): Query<RegistrationCallback>,
) -> Response {
    let result = complete(&engine, &headers, &callback).await;
    // The first recovery codes go to the security page, which the opener reloads.
    let first_codes = match &result {
        Ok((Some(codes), https)) => Some(app::recovery_codes::ssr::new_codes_cookie(codes, *https)),
        _ => None,
    };
    let (status, body) = match result {
        Ok(_) => (
            StatusCode::OK,
            page(
                stylesheet,
                true,
                "Two-factor authentication is on",
                "Stepgate will ask for a code from your TOTP provider at every sign-in.",
            ),
        ),
        Err(code) => (
            StatusCode::BAD_REQUEST,
            page(
                stylesheet,
                false,
                "Two-factor authentication was not turned on",
                code.message(),
            ),
        ),
    };
    let mut response = (
        status,
        // The seed is in this URL: keep it out of caches and of any Referer.
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        Html(body),
    )
        .into_response();
    if let Some(cookie) = first_codes.and_then(|c| header::HeaderValue::from_str(&c).ok()) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

async fn complete(
    engine: &Engine,
    headers: &HeaderMap,
    callback: &RegistrationCallback,
) -> Result<(Option<RecoveryCodes>, bool), ErrorCode> {
    // Over https only the `__Host-` cookie counts, as in the app (`app/src/session.rs`).
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    let token = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|h| token_from_cookie_header(h, https))
        .ok_or(ErrorCode::NotSignedIn)?;
    let user = engine
        .session_user(&token)
        .await?
        .ok_or(ErrorCode::NotSignedIn)?;
    let codes = engine
        .complete_totp_site_setup(&user, &token, callback)
        .await?;
    Ok((codes, https))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn page(stylesheet: &str, enabled: bool, title: &str, detail: &str) -> String {
    let outcome = if enabled { "enrolled" } else { "failed" };
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Stepgate</title><link rel="stylesheet" href="{stylesheet}"></head>
<body data-outcome="{outcome}"><main><section class="card" aria-labelledby="t">
<h1 id="t">{title}</h1>
<p role="{role}">{detail}</p>
<p id="close-hint">You can close this window and go back to Stepgate.</p>
<p><a href="/settings/security">Back to security settings</a></p>
</section></main>
<script src="/totp-callback.js"></script></body></html>"#,
        stylesheet = escape(stylesheet),
        title = escape(title),
        detail = escape(detail),
        role = if enabled { "status" } else { "alert" },
    )
}
