//! Honest HTTP statuses for the API. Server functions answer every error as 500 with the JSON
//! body `{"code": …}`; this layer reads the code and sets the status from the one table
//! ([`engine::ErrorCode::http_status`]): 4xx for the sender's faults, 429 with `Retry-After`
//! for throttling, 500 only for ours. It also caps request bodies (413).

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use app::error::AppError;
use engine::ErrorCode;

/// The largest request body accepted: every form fits in a few KiB (fields are 1 KiB at most).
pub const MAX_BODY_BYTES: usize = 8 * 1024;
/// A body declared over the limit but under this is read and dropped before the 413, so the
/// client (which is still sending it) can read the answer; larger ones are cut off at once.
const DRAIN_BYTES: u64 = 1024 * 1024;

/// An error answer in the API's shape, with its status.
pub fn error_response(code: ErrorCode) -> Response {
    let status =
        StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_string(&AppError::from(code)).unwrap_or_default();
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// Refuses bodies over [`MAX_BODY_BYTES`] (413), and gives API errors their real status.
pub async fn honest_statuses(request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // The API proxy takes an app's body for the provider (its own cap, up to 1 MiB) and its
    // answers are the provider's, passed on untouched.
    if crate::api_v1::is_proxy_path(request.uri().path()) {
        return next.run(request).await;
    }
    if let Some(length) = declared.filter(|&n| n > MAX_BODY_BYTES as u64) {
        if length <= DRAIN_BYTES {
            let _ = axum::body::to_bytes(request.into_body(), DRAIN_BYTES as usize).await;
        }
        return error_response(ErrorCode::RequestTooLarge);
    }
    // A body without a length is cut off at the limit; reading it then fails (invalid_request).
    let request = request.map(|body| Body::new(http_body_util::Limited::new(body, MAX_BODY_BYTES)));
    // Server functions: those under /api/, and the one a sign-in link's steps post to.
    let is_api = request.uri().path().starts_with("/api/")
        || request.uri().path() == app::pages::sign_in_link::LINK_STEP_PATH;

    let response = next.run(request).await;
    if !is_api || response.status() != StatusCode::INTERNAL_SERVER_ERROR || !is_json(&response) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if let Ok(error) = serde_json::from_slice::<AppError>(&bytes) {
        parts.status = StatusCode::from_u16(error.code.http_status()).unwrap_or(parts.status);
        if let Some(seconds) = error.retry_after {
            parts
                .headers
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
    }
    Response::from_parts(parts, Body::from(bytes))
}
