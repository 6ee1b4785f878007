//! The app API (`/api/v1`): a user's own apps read the connected accounts an API key was given,
//! with their fresh credentials. Every request carries `Authorization: Bearer sgk_…`
//! (`engine/src/apps/api_keys.rs`); answers are JSON, errors `{"code", "message"}` with the status
//! of the one table (`ErrorCode::http_status`), and never cached. Each key may make
//! [`RATE_LIMIT`] requests. The OpenAPI document at `/api/v1/openapi.json` is generated from
//! the handlers and types below (utoipa), so it cannot drift from them.
//!
//! Nothing here logs a key or a credential: errors are logged by the engine with their code only.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use engine::accounts::proxy::{ProxyRequest, REQUEST_LIMIT};
use engine::accounts::store::ConnectedAccount;
use engine::apps::api_keys::ApiCaller;
use engine::{Engine, ErrorCode};
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// The header on Stepgate's own error answers, naming the code.
pub const STEPGATE_ERROR: HeaderName = HeaderName::from_static("stepgate-error");
/// The request header naming which of the provider's API origins a proxied request goes to.
pub const STEPGATE_ORIGIN: HeaderName = HeaderName::from_static("stepgate-origin");

/// Requests one key may make: `per_second` on average, `burst` at once.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

/// 10 requests a second per key, 20 at once: plenty for an app that reads tokens, little
/// enough that a leaked key cannot hammer the providers through us.
pub const RATE_LIMIT: RateLimit = RateLimit {
    per_second: 10.0,
    burst: 20.0,
};

#[derive(Clone)]
struct ApiState {
    engine: Engine,
    limit: RateLimit,
    openapi: Arc<String>,
}

/// An error answer: `{"code": "…", "message": "…"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiError {
    /// A stable snake_case code: `invalid_api_key`, `api_key_expired`, `account_not_in_scope`, `not_found`,
    /// `needs_sign_in`, `rate_limited`, `cannot_connect`, `timeout`, `service_unavailable`, …
    #[schema(example = "invalid_api_key")]
    code: String,
    /// The sentence for people.
    message: String,
    /// With `needs_sign_in`, when the account's owner lets apps have sign-in links: a
    /// single-use link (24 hours) that whoever holds the phone opens to sign the account in
    /// again, with no Stepgate session.
    #[serde(skip_serializing_if = "Option::is_none")]
    sign_in_link: Option<String>,
    #[serde(skip)]
    #[schema(ignore)]
    status: StatusCode,
    #[serde(skip)]
    #[schema(ignore)]
    retry_after: Option<u64>,
}

impl From<ErrorCode> for ApiError {
    fn from(code: ErrorCode) -> Self {
        // The provider being unreachable, slow or down is all "try later" to an app: 503.
        let status = match code {
            ErrorCode::CannotConnect | ErrorCode::Timeout | ErrorCode::ServiceUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::from_u16(code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        };
        ApiError {
            code: code.as_str().to_owned(),
            message: code.message().to_owned(),
            sign_in_link: None,
            status,
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, retry_after) = (self.status, self.retry_after);
        let code = HeaderValue::from_str(&self.code).ok();
        let mut response = (status, Json(self)).into_response();
        // Tells Stepgate's own refusals from a provider's answers passed on by the proxy.
        if let Some(code) = code {
            response.headers_mut().insert(STEPGATE_ERROR, code);
        }
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"stepgate\""),
            );
        }
        response
    }
}

/// The caller of an API request: a live key, within its rate.
struct Caller(ApiCaller);

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let key = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, key) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
            })
            .ok_or(ErrorCode::InvalidApiKey)?;
        let caller = state.engine.authenticate_api_key(key).await?;
        let RateLimit { per_second, burst } = state.limit;
        // The engine keeps the buckets: in Redis (shared by every instance) or in memory.
        let taken = state
            .engine
            .take_api_token(&caller.key_id, per_second, burst)
            .await;
        if let Err(seconds) = taken {
            return Err(ApiError {
                retry_after: Some(seconds),
                // The code's own sentence speaks of wrong codes; an app reads this one.
                message: "Too many requests with this API key. Wait, then try again.".into(),
                sign_in_link: None,
                ..ApiError::from(ErrorCode::RateLimited)
            });
        }
        Ok(Caller(caller))
    }
}

/// A connected account as an app sees it (no secrets).
#[derive(Debug, Serialize, ToSchema)]
pub struct Account {
    #[schema(example = 7)]
    id: i64,
    /// The provider's name: `librus`, `xiaomi`, `lynkco` or `flameconnect`.
    #[schema(example = "flameconnect")]
    provider: String,
    /// What the user recognises the account by.
    #[schema(example = "demo@flameconnect.test")]
    name: String,
    /// `active`, `needs_sign_in` (its credentials cannot be read until the user signs in to it
    /// again on Stepgate) or `degraded` (the provider could not be asked at the last check).
    #[schema(example = "active")]
    status: String,
    /// When Stepgate last renewed the account's tokens (unix seconds); `null` before the first
    /// renewal.
    #[schema(example = 1_765_000_000)]
    last_renewed_at: Option<i64>,
    /// When Stepgate renews them next (unix seconds); `null` when none is scheduled (the
    /// account needs sign-in, or its provider's tokens do not expire).
    #[schema(example = 1_765_003_000)]
    next_renewal_at: Option<i64>,
    /// Why the last check or renewal could not reach the provider; `null` when it could.
    last_error: Option<AccountError>,
}

/// A failure kept on an account: its stable code and the sentence users read.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountError {
    #[schema(example = "timeout")]
    code: String,
    #[schema(example = "The provider took too long to answer. Please try again.")]
    message: String,
}

impl From<ConnectedAccount> for Account {
    fn from(a: ConnectedAccount) -> Self {
        Account {
            id: a.id,
            provider: a.provider,
            name: a.display_name,
            status: a.status.as_str().to_owned(),
            last_renewed_at: a.renewed_at,
            next_renewal_at: a.renew_due_at,
            last_error: a.last_error.map(|code| AccountError {
                code: code.as_str().to_owned(),
                message: code.message().to_owned(),
            }),
        }
    }
}

/// The accounts the key may read.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountList {
    accounts: Vec<Account>,
}

/// An account with what an app needs to call its provider: the engine's answer
/// (`Engine::app_credentials`), read into this type so the document says what is sent (a field
/// the engine adds is not sent until it is named here).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AccountCredentials {
    #[schema(example = 7)]
    account_id: i64,
    #[schema(example = "flameconnect")]
    provider: String,
    #[schema(example = "demo@flameconnect.test")]
    name: String,
    /// The provider's credentials, fresh (tokens near their expiry are renewed first); their
    /// fields depend on the provider (e.g. `access_token`). Refresh tokens stay in Stepgate.
    #[schema(value_type = Object)]
    credentials: serde_json::Value,
    /// When the credentials expire (unix seconds), if the provider says.
    #[serde(default)]
    expires_at: Option<i64>,
    /// When Stepgate last renewed them (unix seconds).
    #[serde(default)]
    renewed_at: Option<i64>,
}

/// The connected accounts this API key may read.
#[utoipa::path(
    get,
    path = "/api/v1/accounts",
    tag = "accounts",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The accounts in the key's scope", body = AccountList),
        (status = 401, description = "`invalid_api_key`: missing, malformed, unknown or revoked key; `api_key_expired`: the key's lifetime is over (make a new one)", body = ApiError),
        (status = 429, description = "`rate_limited`: too many requests with this key (see `Retry-After`)", body = ApiError),
    )
)]
async fn list_accounts(
    State(state): State<ApiState>,
    Caller(caller): Caller,
) -> Result<Json<AccountList>, ApiError> {
    let accounts = state.engine.connected_accounts(caller.user_id).await?;
    Ok(Json(AccountList {
        accounts: accounts
            .into_iter()
            .filter(|a| caller.may_read(a.id))
            .map(Account::from)
            .collect(),
    }))
}

/// An engine answer about account `account_id`, its `needs_sign_in` with the account's sign-in
/// link for apps when its owner allows them one (a failure to make one leaves the answer as it
/// was: the link is a help, not the answer).
async fn or_with_sign_in_link<T>(
    engine: &Engine,
    caller: &ApiCaller,
    account_id: i64,
    answer: Result<T, ErrorCode>,
) -> Result<T, ApiError> {
    let code = match answer {
        Ok(answer) => return Ok(answer),
        Err(code) => code,
    };
    let mut error = ApiError::from(code);
    if code == ErrorCode::NeedsSignIn
        && engine
            .sign_in_links_for_apps(caller.user_id)
            .await
            .unwrap_or(false)
    {
        error.sign_in_link = engine
            .app_sign_in_link(caller.user_id, account_id)
            .await
            .ok()
            .map(|made| made.url);
    }
    Err(error)
}

/// A sign-in link made for an app.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignInLink {
    /// Open it on the phone that gets the codes; it works once, for this account only.
    #[schema(example = "https://stepgate.example.org/sign-in-link/3f…")]
    url: String,
    /// When it stops working (unix seconds): 24 hours after it was made.
    #[schema(example = 1_765_086_400)]
    expires_at: i64,
}

/// A single-use sign-in link for the account (24 hours), to push to whoever holds the phone
/// that gets its codes. The account's live link for apps when there is one, else a new one.
/// Only when the account's owner allows apps to have sign-in links (Settings → Webhooks).
#[utoipa::path(
    post,
    path = "/api/v1/accounts/{id}/sign-in-link",
    tag = "accounts",
    security(("api_key" = [])),
    params(("id" = i64, Path, description = "The account's id (from `/api/v1/accounts`)")),
    responses(
        (status = 201, description = "The link", body = SignInLink),
        (status = 401, description = "`invalid_api_key`, or `api_key_expired`", body = ApiError),
        (status = 403, description = "`account_not_in_scope`, or `sign_in_links_off`: the owner does not let apps have sign-in links", body = ApiError),
        (status = 404, description = "`not_found`: no such account", body = ApiError),
        (status = 429, description = "`rate_limited` (see `Retry-After`)", body = ApiError),
    )
)]
async fn make_sign_in_link(
    State(state): State<ApiState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<SignInLink>), ApiError> {
    let id = readable_id(&caller, &id)?;
    let made = state.engine.app_sign_in_link(caller.user_id, id).await?;
    Ok((
        StatusCode::CREATED,
        Json(SignInLink {
            url: made.url,
            expires_at: made.expires_at,
        }),
    ))
}

/// The account id of a path, if the caller's key may read that account.
fn readable_id(caller: &ApiCaller, id: &str) -> Result<i64, ApiError> {
    let id: i64 = id.parse().map_err(|_| ErrorCode::NotFound)?;
    if !caller.may_read(id) {
        return Err(ErrorCode::AccountNotInScope.into());
    }
    Ok(id)
}

/// One account the key may read: its status and renewal times (no credentials).
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{id}",
    tag = "accounts",
    security(("api_key" = [])),
    params(("id" = i64, Path, description = "The account's id (from `/api/v1/accounts`)")),
    responses(
        (status = 200, description = "The account's health", body = Account),
        (status = 401, description = "`invalid_api_key`, or `api_key_expired`", body = ApiError),
        (status = 403, description = "`account_not_in_scope`: the key was not given this account", body = ApiError),
        (status = 404, description = "`not_found`: no such account", body = ApiError),
        (status = 429, description = "`rate_limited` (see `Retry-After`)", body = ApiError),
    )
)]
async fn get_account(
    State(state): State<ApiState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<Account>, ApiError> {
    let id = readable_id(&caller, &id)?;
    let account = state.engine.connected_account(caller.user_id, id).await?;
    Ok(Json(Account::from(account)))
}

/// One account's fresh credentials.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{id}/credentials",
    tag = "accounts",
    security(("api_key" = [])),
    params(("id" = i64, Path, description = "The account's id (from `/api/v1/accounts`)")),
    responses(
        (status = 200, description = "The account and its credentials", body = AccountCredentials),
        (status = 401, description = "`invalid_api_key`, or `api_key_expired`", body = ApiError),
        (status = 403, description = "`account_not_in_scope`: the key was not given this account", body = ApiError),
        (status = 404, description = "`not_found`: no such account", body = ApiError),
        (status = 409, description = "`needs_sign_in`: the provider refused the account's sign-in; the user must sign in again on Stepgate (`sign_in_link` says where, when the owner allows apps sign-in links)", body = ApiError),
        (status = 429, description = "`rate_limited` (see `Retry-After`)", body = ApiError),
        (status = 503, description = "`cannot_connect`, `timeout` or `service_unavailable`: the provider could not renew the tokens now", body = ApiError),
    )
)]
async fn account_credentials(
    State(state): State<ApiState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<AccountCredentials>, ApiError> {
    let id = readable_id(&caller, &id)?;
    let answer = state
        .engine
        .app_credentials_for_key(caller.user_id, id, &caller.key_id)
        .await;
    let answer = or_with_sign_in_link(&state.engine, &caller, id, answer).await?;
    let credentials = serde_json::from_value(answer).map_err(|_| {
        // Not the error's text: it may quote a value, and these are secrets.
        tracing::error!(account_id = id, "app credentials out of shape");
        ErrorCode::Unknown
    })?;
    Ok(Json(credentials))
}

/// Whether `path` is the API proxy's (`/api/v1/accounts/{id}/proxy/…`).
pub fn is_proxy_path(path: &str) -> bool {
    proxied_part(path).is_some()
}

/// The account id and the rest of a proxy path, as sent (still percent-encoded).
fn proxied_part(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/api/v1/accounts/")?;
    let (id, rest) = rest.split_once('/')?;
    let rest = rest.strip_prefix("proxy/")?;
    Some((id, rest))
}

/// Calls the provider's own API with the account's credentials put in.
///
/// The request (any method; its query, body up to 1 MiB and content type) goes to
/// `{origin}/{path}`: `origin` is the provider's first API origin, or the one named in
/// `Stepgate-Origin` (one the provider declares). Only headers the API takes go along (never the
/// caller's `Cookie` or `Authorization`). The provider's answer comes back as it is (status,
/// body, content type; never `Set-Cookie`), streamed, at most 16 MiB. Stepgate's own refusals
/// carry `Stepgate-Error: <code>` and a JSON `{code, message}` body.
///
/// | provider | origins (first is the default) | credentials |
/// |---|---|---|
/// | `flameconnect` | `https://mobileapi.gdhv-iot.com` under `/api/` | `Authorization: Bearer` access token |
/// | `librus` | `https://synergia.librus.pl` under `/gateway/api/2.0/` | the Synergia session cookies |
/// | `lynkco` | `https://user-lifecycle-tls.aion.connectedcar.cloud` under `/user-lifecycle/`, `https://delegated-driver-tls.aion.connectedcar.cloud` under `/delegated-driver/` | `Authorization: Bearer` CCC token |
/// | `xiaomi` | `https://api.io.mi.com` (and `de.`, `us.`, `sg.`, `ru.`, `tw.`, `in.`, `i2.`) under `/app/` | session cookies and a request signed with `ssecurity` (send the parameters, e.g. `data`, as a form) |
#[utoipa::path(
    post,
    path = "/api/v1/accounts/{id}/proxy/{path}",
    tag = "accounts",
    security(("api_key" = [])),
    params(
        ("id" = i64, Path, description = "The account's id (from `/api/v1/accounts`)"),
        ("path" = String, Path, description = "The path on the provider's API, e.g. `api/Fires/GetFires`"),
        ("Stepgate-Origin" = Option<String>, Header, description = "One of the provider's API origins; the first when absent"),
    ),
    request_body(content = String, description = "Passed on as it is, with its content type (at most 1 MiB)", content_type = "*/*"),
    responses(
        (status = 200, description = "The provider's answer, passed on (any status it gives: 2xx, 4xx, 5xx)", content_type = "*/*"),
        (status = 401, description = "`invalid_api_key`, or `api_key_expired`", body = ApiError),
        (status = 403, description = "`account_not_in_scope`, or `proxy_not_allowed`: an origin or path the provider does not declare", body = ApiError),
        (status = 404, description = "`not_found`: no such account", body = ApiError),
        (status = 409, description = "`needs_sign_in`: the provider refused the credentials, also after one renewal", body = ApiError),
        (status = 413, description = "`request_too_large`: a body over 1 MiB", body = ApiError),
        (status = 429, description = "`rate_limited` (see `Retry-After`)", body = ApiError),
        (status = 502, description = "`upstream_too_large`: the provider's answer says it is over 16 MiB", body = ApiError),
        (status = 503, description = "`cannot_connect`, `timeout` or `service_unavailable`: the provider could not be reached", body = ApiError),
    )
)]
async fn proxy(
    State(state): State<ApiState>,
    Caller(caller): Caller,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (id, path) = proxied_part(uri.path()).ok_or(ErrorCode::NotFound)?;
    let id = readable_id(&caller, id)?;
    let body = axum::body::to_bytes(body, REQUEST_LIMIT)
        .await
        .map_err(|_| ErrorCode::RequestTooLarge)?;
    let origin = headers
        .get(&STEPGATE_ORIGIN)
        .map(|v| v.to_str().map(str::to_owned))
        .transpose()
        .map_err(|_| ErrorCode::ProxyNotAllowed)?;
    let headers = headers
        .iter()
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    let request = ProxyRequest {
        method,
        origin,
        path: path.to_owned(),
        query: uri.query().map(str::to_owned),
        headers,
        body: body.to_vec(),
    };
    let answer = state
        .engine
        .proxy_api_request(caller.user_id, id, &caller.key_id, request)
        .await;
    let answer = or_with_sign_in_link(&state.engine, &caller, id, answer).await?;
    let mut response = Response::new(Body::from_stream(answer.body));
    *response.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    response.headers_mut().extend(answer.headers);
    Ok(response)
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI document of this API", content_type = "application/json"))
)]
async fn openapi_json(State(state): State<ApiState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        state.openapi.as_str().to_owned(),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ErrorCode::NotFound.into()
}

struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("sgk_<key id>_<secret>")
                    .description(Some(
                        "An API key created on Stepgate's API keys page (`/settings/api-keys`).",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Stepgate app API",
        version = "1",
        description = "Read the connected accounts an API key was given, with fresh credentials; call their providers' APIs through the proxy; get sign-in links for accounts that need one."
    ),
    paths(
        list_accounts,
        get_account,
        account_credentials,
        proxy,
        make_sign_in_link,
        openapi_json
    ),
    components(schemas(
        Account,
        AccountError,
        AccountList,
        AccountCredentials,
        SignInLink,
        ApiError
    )),
    modifiers(&BearerKey)
)]
pub struct ApiDoc;

/// The `/api/v1` routes, with the default rate limit.
pub fn router(engine: Engine) -> Router {
    router_with(engine, RATE_LIMIT)
}

pub fn router_with(engine: Engine, limit: RateLimit) -> Router {
    let openapi = ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serialises");
    let state = ApiState {
        engine,
        limit,
        openapi: Arc::new(openapi),
    };
    Router::new()
        .route("/api/v1/accounts", get(list_accounts))
        .route("/api/v1/accounts/{id}", get(get_account))
        .route(
            "/api/v1/accounts/{id}/credentials",
            get(account_credentials),
        )
        .route("/api/v1/accounts/{id}/proxy/{*path}", any(proxy))
        .route(
            "/api/v1/accounts/{id}/sign-in-link",
            axum::routing::post(make_sign_in_link),
        )
        .route("/api/v1/openapi.json", get(openapi_json))
        .route("/api/v1/{*rest}", any(not_found))
        .with_state(state)
        // Credentials must not stay in any cache (the security headers layer says so too).
        .layer(tower_http::set_header::SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use engine::base::secrets::SecretKey;
    use engine::providers::NewAccount;
    use engine::second_factor::totp_site::TotpSite;
    use tower::ServiceExt;

    struct TestApi {
        dir: tempfile::TempDir,
        redis_prefix: String,
        engine: Engine,
        router: Router,
        user: i64,
        account: i64,
    }

    /// The engine's configuration over the database in `dir`; in the Postgres + Redis run of
    /// the suite the buckets are kept in Redis under `redis_prefix`.
    async fn config_in(dir: &tempfile::TempDir, redis_prefix: &str) -> engine::EngineConfig {
        let mut config = engine::EngineConfig::new(
            engine::store::db::test_database_url(dir.path()).await,
            SecretKey::load_or_create(Some(&"03".repeat(32)), dir.path()).unwrap(),
            TotpSite {
                base_url: "http://totp.test".into(),
                issuer: "Stepgate".into(),
            },
        );
        config.redis_url = std::env::var("STEPGATE_TEST_REDIS_URL")
            .ok()
            .filter(|url| !url.is_empty());
        config.redis_prefix = redis_prefix.to_owned();
        config
    }

    async fn api(limit: RateLimit) -> TestApi {
        api_with_clock(limit, std::sync::Arc::new(engine::base::clock::SystemClock)).await
    }

    async fn api_with_clock(
        limit: RateLimit,
        clock: std::sync::Arc<dyn engine::base::clock::Clock>,
    ) -> TestApi {
        let dir = tempfile::tempdir().unwrap();
        let redis_prefix = format!("test:{}:", engine::flows::flow::FlowId::random());
        let config = config_in(&dir, &redis_prefix).await;
        let engine = Engine::open_with_clock(config, clock).await.unwrap();
        let user = engine
            .register(
                "api@example.org",
                "password-1-quiet-harbor",
                "password-1-quiet-harbor",
            )
            .await
            .unwrap();
        let account = engine
            .accounts()
            .add(
                user.id,
                "librus",
                &NewAccount {
                    account_id: "demo.parent".into(),
                    display_name: "demo.parent".into(),
                    secrets: serde_json::json!({"access_token": "upstream-token"}),
                },
                engine.now(),
            )
            .await
            .unwrap();
        TestApi {
            router: router_with(engine.clone(), limit),
            dir,
            redis_prefix,
            engine,
            user: user.id,
            account: account.id,
        }
    }

    impl TestApi {
        async fn key(&self, accounts: &[i64]) -> String {
            let (_, secret) = self
                .engine
                .api_keys()
                .create(self.user, "test", accounts)
                .await
                .unwrap();
            secret.into_string()
        }

        async fn get(&self, path: &str, key: Option<&str>) -> (StatusCode, Response) {
            let mut request = Request::get(path);
            if let Some(key) = key {
                request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
            }
            let response = self
                .router
                .clone()
                .oneshot(request.body(Body::empty()).unwrap())
                .await
                .unwrap();
            (response.status(), response)
        }

        async fn json(&self, path: &str, key: Option<&str>) -> (StatusCode, serde_json::Value) {
            let (status, response) = self.get(path, key).await;
            assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            (status, serde_json::from_slice(&bytes).unwrap())
        }
    }

    #[tokio::test]
    async fn a_key_lists_only_its_accounts() {
        let api = api(RATE_LIMIT).await;
        let key = api.key(&[api.account]).await;
        let (status, body) = api.json("/api/v1/accounts", Some(&key)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            serde_json::json!({"accounts": [{
                "id": api.account, "provider": "librus", "name": "demo.parent", "status": "active",
                "last_renewed_at": null, "next_renewal_at": null, "last_error": null
            }]})
        );
        let empty = api.key(&[]).await;
        let (_, body) = api.json("/api/v1/accounts", Some(&empty)).await;
        assert_eq!(body, serde_json::json!({"accounts": []}));
    }

    /// An app sees an account's health without reading its credentials: an unreachable
    /// provider shows as `degraded` with the code and sentence, a good check clears it.
    #[tokio::test]
    async fn an_accounts_health_is_in_the_api() {
        let api = api(RATE_LIMIT).await;
        let key = api.key(&[api.account]).await;
        let path = format!("/api/v1/accounts/{}", api.account);
        let (status, body) = api.json(&path, Some(&key)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            (
                &body["status"],
                &body["last_error"],
                &body["last_renewed_at"]
            ),
            (
                &serde_json::json!("active"),
                &serde_json::Value::Null,
                &serde_json::Value::Null
            )
        );
        let stored = api
            .engine
            .connected_account(api.user, api.account)
            .await
            .unwrap();
        let unreachable = engine::accounts::store::CheckOutcome::Unreachable(ErrorCode::Timeout);
        api.engine
            .accounts()
            .finish_check(&stored, api.user, &unreachable, api.engine.now())
            .await
            .unwrap();
        let (_, body) = api.json(&path, Some(&key)).await;
        assert_eq!(body["status"], "degraded");
        assert_eq!(
            body["last_error"],
            serde_json::json!({"code": "timeout", "message": ErrorCode::Timeout.message()})
        );
        let (_, list) = api.json("/api/v1/accounts", Some(&key)).await;
        assert_eq!(list["accounts"][0], body);

        let accepted = engine::accounts::store::CheckOutcome::Accepted(None);
        api.engine
            .accounts()
            .finish_check(&stored, api.user, &accepted, api.engine.now())
            .await
            .unwrap();
        let (_, body) = api.json(&path, Some(&key)).await;
        assert_eq!(
            (&body["status"], &body["last_error"]),
            (&serde_json::json!("active"), &serde_json::Value::Null)
        );

        let unscoped = api.key(&[]).await;
        let (status, body) = api.json(&path, Some(&unscoped)).await;
        assert_eq!(
            (status, &body["code"]),
            (
                StatusCode::FORBIDDEN,
                &serde_json::json!("account_not_in_scope")
            )
        );
        let (status, _) = api.json("/api/v1/accounts/x", Some(&key)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn bad_keys_and_out_of_scope_accounts_are_refused_with_their_codes() {
        let api = api(RATE_LIMIT).await;
        let empty = api.key(&[]).await;
        let (status, body) = api.json("/api/v1/accounts", None).await;
        assert_eq!(
            (status, &body["code"]),
            (StatusCode::UNAUTHORIZED, &"invalid_api_key".into())
        );
        assert!(body["message"].as_str().unwrap().ends_with('.'));
        let (status, _) = api.json("/api/v1/accounts", Some("sgk_nope")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        // The same key with its last digit changed (to one it is not: 1 in 16 keys end in 0).
        let last = if empty.ends_with('0') { '1' } else { '0' };
        let wrong = format!("{}{last}", &empty[..empty.len() - 1]);
        let (status, _) = api.json("/api/v1/accounts", Some(&wrong)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        let path = format!("/api/v1/accounts/{}/credentials", api.account);
        let (status, body) = api.json(&path, Some(&empty)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body["code"], "account_not_in_scope");
        let (status, body) = api
            .json("/api/v1/accounts/x/credentials", Some(&empty))
            .await;
        assert_eq!(
            (status, &body["code"]),
            (StatusCode::NOT_FOUND, &"not_found".into())
        );
        let (status, body) = api.json("/api/v1/nothing", Some(&empty)).await;
        assert_eq!(
            (status, &body["code"]),
            (StatusCode::NOT_FOUND, &"not_found".into())
        );
    }

    #[tokio::test]
    async fn a_revoked_key_and_a_removed_account_stop_working() {
        let api = api(RATE_LIMIT).await;
        let key = api.key(&[api.account]).await;
        let keys = api.engine.api_keys().list(api.user).await.unwrap();
        api.engine
            .accounts()
            .remove(api.user, api.account)
            .await
            .unwrap();
        let path = format!("/api/v1/accounts/{}/credentials", api.account);
        let (status, _) = api.json(&path, Some(&key)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "out of scope once removed");
        api.engine
            .api_keys()
            .revoke(api.user, &keys[0].id)
            .await
            .unwrap();
        let (status, _) = api.json("/api/v1/accounts", Some(&key)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn credentials_are_read_until_the_account_needs_sign_in() {
        use engine::accounts::store::CheckOutcome;

        let api = api(RATE_LIMIT).await;
        let key = api.key(&[api.account]).await;
        let path = format!("/api/v1/accounts/{}/credentials", api.account);
        let (status, body) = api.json(&path, Some(&key)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["account_id"], api.account);
        assert_eq!(body["provider"], "librus");
        assert_eq!(body["name"], "demo.parent");
        assert!(body["credentials"].is_object());

        let account = api
            .engine
            .accounts()
            .get(api.user, api.account)
            .await
            .unwrap();
        api.engine
            .accounts()
            .finish_check(
                &account,
                api.user,
                &CheckOutcome::Rejected,
                api.engine.now(),
            )
            .await
            .unwrap();
        let (status, body) = api.json(&path, Some(&key)).await;
        assert_eq!(
            (status, &body["code"]),
            (StatusCode::CONFLICT, &"needs_sign_in".into())
        );
        let (_, body) = api.json("/api/v1/accounts", Some(&key)).await;
        assert_eq!(body["accounts"][0]["status"], "needs_sign_in");
    }

    #[tokio::test]
    async fn each_key_has_its_own_rate() {
        let api = api(RateLimit {
            per_second: 0.5,
            burst: 3.0,
        })
        .await;
        let (first, second) = (api.key(&[]).await, api.key(&[]).await);
        for _ in 0..3 {
            assert_eq!(
                api.get("/api/v1/accounts", Some(&first)).await.0,
                StatusCode::OK
            );
        }
        let (status, response) = api.get("/api/v1/accounts", Some(&first)).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let (_, body) = api.json("/api/v1/accounts", Some(&first)).await;
        assert_eq!(body["code"], "rate_limited");
        assert_eq!(
            api.get("/api/v1/accounts", Some(&second)).await.0,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn with_redis_every_instance_draws_from_one_bucket_per_key() {
        if std::env::var("STEPGATE_TEST_REDIS_URL").is_err() {
            eprintln!("skipped: the shared bucket needs STEPGATE_TEST_REDIS_URL");
            return;
        }
        let limit = RateLimit {
            per_second: 0.5,
            burst: 3.0,
        };
        let mut instance_a = api(limit).await;
        let key = instance_a.key(&[]).await;
        // Another instance: its own engine (and memory) over the same database and Redis.
        let other_engine = Engine::open(config_in(&instance_a.dir, &instance_a.redis_prefix).await)
            .await
            .unwrap();
        let instance_b = router_with(other_engine, limit);
        for _ in 0..3 {
            assert_eq!(
                instance_a.get("/api/v1/accounts", Some(&key)).await.0,
                StatusCode::OK
            );
        }
        // The other instance has no bucket of its own in memory; only Redis' bucket says no.
        instance_a.router = instance_b;
        let (status, response) = instance_a.get("/api/v1/accounts", Some(&key)).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    }

    #[tokio::test]
    async fn the_openapi_document_names_both_paths_and_the_bearer_scheme() {
        let api = api(RATE_LIMIT).await;
        let (status, doc) = api.json("/api/v1/openapi.json", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(doc["paths"]["/api/v1/accounts"]["get"].is_object());
        let credentials = &doc["paths"]["/api/v1/accounts/{id}/credentials"]["get"];
        for status in ["200", "401", "403", "404", "409", "429", "503"] {
            assert!(credentials["responses"][status].is_object(), "{status}");
        }
        let proxy = &doc["paths"]["/api/v1/accounts/{id}/proxy/{path}"]["post"];
        for status in ["200", "403", "409", "413", "502"] {
            assert!(proxy["responses"][status].is_object(), "{status}");
        }
        assert_eq!(
            doc["components"]["securitySchemes"]["api_key"]["scheme"],
            "bearer"
        );
    }

    #[tokio::test]
    async fn an_expired_key_answers_401_api_key_expired() {
        let clock = engine::base::clock::ManualClock::at(1_800_000_000);
        let api = api_with_clock(RATE_LIMIT, std::sync::Arc::new(clock.clone())).await;
        let (_, secret) = api
            .engine
            .api_keys()
            .create_expiring(api.user, "month", &[api.account], Some(30))
            .await
            .unwrap();
        let key = secret.into_string();
        let path = format!("/api/v1/accounts/{}/credentials", api.account);
        let (status, _) = api.json("/api/v1/accounts", Some(&key)).await;
        assert_eq!(status, StatusCode::OK, "alive until its lifetime is over");

        clock.advance(30 * 24 * 60 * 60);
        for path in ["/api/v1/accounts", path.as_str()] {
            let (status, response) = api.get(path, Some(&key)).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
            assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
            let (_, body) = api.json(path, Some(&key)).await;
            assert_eq!(body["code"], "api_key_expired", "{path}");
            assert_eq!(body["message"], ErrorCode::ApiKeyExpired.message());
        }
        let doc = api.json("/api/v1/openapi.json", None).await.1.to_string();
        assert!(
            doc.contains("api_key_expired"),
            "the OpenAPI document names it"
        );
    }

    /// A stand-in for FlameConnect's API that answers what it was sent: method, path, query,
    /// headers and body (and tries to set a cookie); `/api/status/{n}` answers status `n`,
    /// `/api/big` a body whose length says it is over the proxy's cap, `/api/endless` one that
    /// never ends.
    async fn echo_upstream() -> String {
        use axum::extract::Request;
        async fn echo(request: Request) -> Response {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, 1 << 21).await.unwrap();
            let headers: serde_json::Map<String, serde_json::Value> = parts
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().into()))
                .collect();
            let seen = serde_json::json!({
                "method": parts.method.as_str(),
                "path": parts.uri.path(),
                "query": parts.uri.query(),
                "headers": headers,
                "body": String::from_utf8_lossy(&body),
            });
            (
                [
                    (header::SET_COOKIE, "upstream_session=secret; Path=/"),
                    (
                        header::HeaderName::from_static("x-upstream-internal"),
                        "node-7",
                    ),
                    (header::ETAG, "\"v1\""),
                ],
                Json(seen),
            )
                .into_response()
        }
        let app = Router::new()
            .route(
                "/api/status/{n}",
                any(|Path(n): Path<u16>| async move {
                    (
                        StatusCode::from_u16(n).unwrap(),
                        [(header::CONTENT_TYPE, "text/plain")],
                        format!("upstream said {n}"),
                    )
                }),
            )
            .route("/api/big", get(|| async { vec![b'x'; 17 << 20] }))
            .route(
                "/api/endless",
                get(|| async {
                    let chunk = axum::body::Bytes::from(vec![b'x'; 64 * 1024]);
                    let endless = futures_util::StreamExt::map(
                        futures_util::stream::repeat(chunk),
                        Ok::<_, std::io::Error>,
                    );
                    Body::from_stream(endless)
                }),
            )
            .fallback(echo);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    struct ProxyApi {
        api: TestApi,
        account: i64,
        key: String,
    }

    /// An API whose engine sends FlameConnect's API origin to [`echo_upstream`], with a
    /// FlameConnect account (token `upstream-token-1`) and a key for it.
    async fn proxy_api(limit: RateLimit) -> ProxyApi {
        let dir = tempfile::tempdir().unwrap();
        let redis_prefix = format!("test:{}:", engine::flows::flow::FlowId::random());
        let mut config = config_in(&dir, &redis_prefix).await;
        let echo = echo_upstream().await;
        config.upstreams = engine::flows::upstream::UpstreamMap::parse(&format!(
            "https://mobileapi.gdhv-iot.com={echo}"
        ))
        .unwrap();
        let engine = Engine::open(config).await.unwrap();
        let user = engine
            .register(
                "proxy@example.org",
                "password-1-quiet-harbor",
                "password-1-quiet-harbor",
            )
            .await
            .unwrap();
        let account = engine
            .accounts()
            .add(
                user.id,
                "flameconnect",
                &NewAccount {
                    account_id: "fire@example.org".into(),
                    display_name: "fire@example.org".into(),
                    secrets: serde_json::json!({
                        "access_token": "upstream-token-1",
                        "refresh_token": "refresh-token-1",
                        "expires_at": engine.now() + 3600,
                    }),
                },
                engine.now(),
            )
            .await
            .unwrap();
        let api = TestApi {
            router: router_with(engine.clone(), limit),
            dir,
            redis_prefix,
            engine,
            user: user.id,
            account: account.id,
        };
        let key = api.key(&[account.id]).await;
        ProxyApi {
            account: account.id,
            key,
            api,
        }
    }

    impl ProxyApi {
        fn path(&self, rest: &str) -> String {
            format!("/api/v1/accounts/{}/proxy/{rest}", self.account)
        }

        async fn send(&self, request: axum::http::request::Builder, body: Body) -> Response {
            let request = request
                .header(header::AUTHORIZATION, format!("Bearer {}", self.key))
                .body(body)
                .unwrap();
            self.api.router.clone().oneshot(request).await.unwrap()
        }
    }

    async fn body_json(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn the_proxy_puts_the_token_in_and_drops_the_callers_cookie_and_authorization() {
        let p = proxy_api(RATE_LIMIT).await;
        let response = p
            .send(
                Request::post(p.path("api/Fires/SetMode?fire=7&mode=on"))
                    .header(header::COOKIE, "stepgate_session=mine")
                    .header(header::CONTENT_TYPE, "application/json")
                    .header("app_name", "FlameConnect")
                    .header("x-forwarded-for", "10.0.0.1")
                    .header(header::ACCEPT, "application/json"),
                Body::from(r#"{"on":true}"#),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers();
        assert!(
            headers.get(header::SET_COOKIE).is_none(),
            "no upstream cookie back"
        );
        assert!(headers.get("x-upstream-internal").is_none());
        assert_eq!(headers[header::ETAG], "\"v1\"");
        assert!(headers.get(STEPGATE_ERROR).is_none());
        let seen = body_json(response).await;
        assert_eq!(seen["method"], "POST");
        assert_eq!(seen["path"], "/api/Fires/SetMode");
        assert_eq!(seen["query"], "fire=7&mode=on");
        assert_eq!(seen["body"], r#"{"on":true}"#);
        let upstream = &seen["headers"];
        assert_eq!(upstream["authorization"], "Bearer upstream-token-1");
        assert_eq!(upstream["content-type"], "application/json");
        assert_eq!(upstream["app_name"], "FlameConnect");
        assert_eq!(upstream["accept"], "application/json");
        for dropped in ["cookie", "x-forwarded-for", "stepgate-origin"] {
            assert!(upstream.get(dropped).is_none(), "{dropped}: {upstream}");
        }
        assert!(
            !upstream.to_string().contains(&p.key),
            "the API key stays here"
        );

        // The call is in the account's activity, naming the key; no credential is.
        let log = p.api.engine.audit_log(p.api.user, p.account).await.unwrap();
        assert_eq!(log[0].event, "api_proxy");
        let key_id = p.api.engine.api_keys().list(p.api.user).await.unwrap()[0]
            .id
            .clone();
        assert_eq!(log[0].api_key.as_deref(), Some(key_id.as_str()));
        let audit: Vec<String> = sqlx::query_scalar(
            "SELECT event || ' ' || COALESCE(code, '') || ' ' || COALESCE(api_key, '') FROM account_audit",
        )
        .fetch_all(p.api.engine.pool())
        .await
        .unwrap();
        assert!(!audit.is_empty());
        assert!(
            audit.iter().all(|row| !row.contains("upstream-token")),
            "{audit:?}"
        );
    }

    #[tokio::test]
    async fn the_proxy_passes_the_providers_answers_on_and_marks_its_own_refusals() {
        let p = proxy_api(RATE_LIMIT).await;
        for status in [404u16, 500, 503, 429] {
            let response = p
                .send(
                    Request::get(p.path(&format!("api/status/{status}"))),
                    Body::empty(),
                )
                .await;
            assert_eq!(response.status().as_u16(), status);
            assert!(response.headers().get(STEPGATE_ERROR).is_none(), "{status}");
            let bytes = axum::body::to_bytes(response.into_body(), 1024)
                .await
                .unwrap();
            assert_eq!(bytes, format!("upstream said {status}").as_bytes());
        }

        // An origin or a path the provider does not declare.
        for (origin, path) in [
            (Some("https://evil.example.test"), "api/Fires/GetFires"),
            (None, "other/thing"),
            (None, "api/../admin"),
            (None, "api/%2e%2e/admin"),
        ] {
            let mut request = Request::get(p.path(path));
            if let Some(origin) = origin {
                request = request.header(STEPGATE_ORIGIN, origin);
            }
            let response = p.send(request, Body::empty()).await;
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
            assert_eq!(response.headers()[STEPGATE_ERROR], "proxy_not_allowed");
            assert_eq!(body_json(response).await["code"], "proxy_not_allowed");
        }

        // Too much: a body over 1 MiB, an answer that says it is over 16 MiB, one that never
        // ends (cut short: the app sees a broken body, never 16 MiB in our memory).
        let response = p
            .send(
                Request::post(p.path("api/x")),
                Body::from(vec![b'a'; REQUEST_LIMIT + 1]),
            )
            .await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(response.headers()[STEPGATE_ERROR], "request_too_large");
        let response = p.send(Request::get(p.path("api/big")), Body::empty()).await;
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(response.headers()[STEPGATE_ERROR], "upstream_too_large");
        let response = p
            .send(Request::get(p.path("api/endless")), Body::empty())
            .await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "the status went before the body"
        );
        assert!(axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .is_err());
    }

    /// The server compresses answers for clients that take gzip (httpx, browsers): a proxied
    /// answer goes through that layer whole, to its end.
    #[tokio::test]
    async fn a_proxied_answer_streams_through_compression_to_its_end() {
        let p = proxy_api(RATE_LIMIT).await;
        let compressed = p
            .api
            .router
            .clone()
            .layer(tower_http::compression::CompressionLayer::new());
        let request = Request::get(p.path("api/Fires/GetFires"))
            .header(header::AUTHORIZATION, format!("Bearer {}", p.key))
            .header(header::ACCEPT_ENCODING, "gzip")
            .body(Body::empty())
            .unwrap();
        let response = compressed.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await;
        assert!(bytes.is_ok_and(|b| !b.is_empty()));
    }

    #[tokio::test]
    async fn the_proxy_keeps_to_the_keys_scope_and_rate() {
        let p = proxy_api(RateLimit {
            per_second: 0.5,
            burst: 2.0,
        })
        .await;
        let unscoped = p.api.key(&[]).await;
        let request = Request::get(p.path("api/Fires/GetFires"))
            .header(header::AUTHORIZATION, format!("Bearer {unscoped}"))
            .body(Body::empty())
            .unwrap();
        let response = p.api.router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(response.headers()[STEPGATE_ERROR], "account_not_in_scope");
        let request = Request::get(p.path("api/Fires/GetFires"))
            .body(Body::empty())
            .unwrap();
        let response = p.api.router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

        for _ in 0..2 {
            let response = p
                .send(Request::get(p.path("api/Fires/GetFires")), Body::empty())
                .await;
            assert_eq!(response.status(), StatusCode::OK);
        }
        let response = p
            .send(Request::get(p.path("api/Fires/GetFires")), Body::empty())
            .await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        assert_eq!(response.headers()[STEPGATE_ERROR], "rate_limited");
    }

    /// Apps get sign-in links only when the owner allows it: from the route, and in the 409
    /// of an account that needs sign-in (the same live link, not a new one per answer).
    #[tokio::test]
    async fn an_app_gets_a_sign_in_link_when_the_owner_allows_it() {
        use engine::accounts::store::CheckOutcome;

        let api = api(RATE_LIMIT).await;
        let key = api.key(&[api.account]).await;
        let path = format!("/api/v1/accounts/{}/sign-in-link", api.account);
        let post = |key: String| {
            let request = Request::post(path.clone())
                .header(header::AUTHORIZATION, format!("Bearer {key}"))
                .body(Body::empty())
                .unwrap();
            let router = api.router.clone();
            async move {
                let response = router.oneshot(request).await.unwrap();
                (response.status(), body_json(response).await)
            }
        };
        let (status, body) = post(key.clone()).await;
        assert_eq!(
            (status, &body["code"]),
            (
                StatusCode::FORBIDDEN,
                &serde_json::json!("sign_in_links_off")
            )
        );

        api.engine
            .set_sign_in_links_for_apps(api.user, true)
            .await
            .unwrap();
        let (status, made) = post(key.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "{made}");
        let url = made["url"].as_str().unwrap().to_owned();
        assert!(url.contains("/sign-in-link/"), "{url}");
        assert!(made["expires_at"].as_i64().unwrap() > api.engine.now() + 23 * 3600);
        let unscoped = api.key(&[]).await;
        assert_eq!(post(unscoped).await.0, StatusCode::FORBIDDEN);

        let account = api
            .engine
            .accounts()
            .get(api.user, api.account)
            .await
            .unwrap();
        api.engine
            .accounts()
            .finish_check(
                &account,
                api.user,
                &CheckOutcome::Rejected,
                api.engine.now(),
            )
            .await
            .unwrap();
        let credentials = format!("/api/v1/accounts/{}/credentials", api.account);
        let (status, body) = api.json(&credentials, Some(&key)).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["code"], "needs_sign_in");
        assert_eq!(body["sign_in_link"], url, "the live link, not another");
        let (_, again) = api.json(&credentials, Some(&key)).await;
        assert_eq!(again["sign_in_link"], url);

        api.engine
            .set_sign_in_links_for_apps(api.user, false)
            .await
            .unwrap();
        let (_, body) = api.json(&credentials, Some(&key)).await;
        assert!(body.get("sign_in_link").is_none(), "{body}");
    }

    #[test]
    fn upstream_trouble_is_503_for_apps() {
        for code in [
            ErrorCode::CannotConnect,
            ErrorCode::Timeout,
            ErrorCode::ServiceUnavailable,
        ] {
            assert_eq!(ApiError::from(code).status, StatusCode::SERVICE_UNAVAILABLE);
        }
        assert_eq!(
            ApiError::from(ErrorCode::NeedsSignIn).status,
            StatusCode::CONFLICT
        );
    }
}
