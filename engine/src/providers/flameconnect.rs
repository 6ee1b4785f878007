//! `flameconnect`: FlameConnect (Dimplex/Faber fires), Azure AD B2C driven the way the
//! flameconnect library drives it: MSAL's auth-code flow with PKCE, the B2C sign-in page
//! answered by the server (shared/protocols.md §2 and its corrections).
//!
//! 1. Discovery: `GET {AUTHORITY}/v2.0/.well-known/openid-configuration` names the authorize
//!    and token endpoints (B2C lower-cases the policy in them);
//! 2. the authorize URL MSAL builds (`state`, a nonce sent as its SHA-256 hex, PKCE S256,
//!    `client_info=1`, our scope plus `openid profile offline_access`), redirects followed:
//!    its page's `var SETTINGS` carries `csrf` and `transId`;
//! 3. `POST …/SelfAsserted?tx=<transId>&p=<POLICY>` (`email`, `password`, `X-CSRF-TOKEN`,
//!    `X-Requested-With`; the jar sends the `x-ms-cpim-*` cookies unquoted): HTTP 200 either
//!    way, `{"status":"400",…}` for a wrong password;
//! 4. `GET …/api/CombinedSigninAndSignup/confirmed` (its query built by hand, `=` kept), then
//!    its redirects by hand (20 at most), stopping at `msal<CLIENT_ID>://auth` followed by `/`
//!    or `?`, which is never fetched;
//! 5. `state` must be ours (before any token call); the code goes to the token endpoint with
//!    the verifier; the id_token's `nonce` must be the hashed nonce sent, its `aud` our client
//!    id, its `exp` not passed (`token_error` otherwise).
//!
//! There is no second factor. When B2C answers out of shape (it changed), the flow moves to
//! [`STEP_MANUAL`]: the user signs in on FlameConnect's own page and pastes the
//! `msal…://auth/?state=…&code=…` address it ends on (the CLI's fallback); step 5 follows.
//!
//! # What each step accepts
//!
//! | step | view | input |
//! |------|------|-------|
//! | first ([`Provider::first_view`]) | Form: "Email" (`email`), "Password" (`password`); button "Connect"; action button [`MANUAL_LABEL`] (`action=manual`) | `email`, `password`; or `action=manual` with `email` only |
//! | [`STEP_MANUAL`] (`manual`) | Form: intro, link [`MANUAL_LABEL`] (an authorize URL with fresh state, nonce and PKCE), field "Redirect URL" (`redirect_url`, kind Url); button "Connect" | `redirect_url`: the whole `msal…://auth/?state=…&code=…` URL (its `state` must match) |
//!
//! Errors: `missing_fields`, `invalid_email` (on `email`) before any request; `invalid_auth`;
//! `cannot_connect`, `timeout`, `service_unavailable`; `token_error`; a bad paste is
//! `invalid_url` on `redirect_url` and keeps the step.
//!
//! # What is kept
//!
//! Secrets JSON: `access_token`, `refresh_token`, `id_token`, `expires_at` (the access token's,
//! Unix seconds): the token set MSAL's cache would hold, never the password. The account is
//! named by its email; its id is Home Assistant's slug of it (`demo_flameconnect_test`).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use url::Url;

use super::api::{self, ApiBase, ProviderApi};
use super::b2c::{
    self, b2c_status, bounded, check_id_token, header, is_app_redirect, jwt_email, keep_equals,
    page_settings, read_redirect, read_tokens, redirect_error, sha256_hex, slugify, status_error,
    token_urlsafe16, B2cStatus, Email, Granted, ManualWords, Paste, Pkce, Redirected, Tokens, Why,
    ACTION_FIELD, ACTION_MANUAL, REDIRECT_FIELD, STEP_MANUAL,
};
use super::fixed_url;
use super::{Health, Input, NewAccount, Provider, Step, StepContext, StepError};
use crate::flows::upstream::{
    Followed, HttpSession, RedirectPolicy, UpstreamRequest, UpstreamResponse,
};
use crate::view::{FieldKind, FieldSpec, StepView};
use crate::ErrorCode;

const ORIGIN: &str = "https://gdhvb2cflameconnect.b2clogin.com";
const TENANT: &str = "gdhvb2cflameconnect.onmicrosoft.com";
/// FlameConnect's own B2C host: redirects are followed to it only.
const HOSTS: RedirectPolicy = RedirectPolicy::new(&["gdhvb2cflameconnect.b2clogin.com"]);
/// Mixed case: the endpoints the page posts to need it (flameconnect hard-codes it).
const POLICY: &str = "B2C_1A_FirePhoneSignUpOrSignInWithPhoneOrEmail";
const CLIENT_ID: &str = "1af761dc-085a-411f-9cb9-53e5e2115bd2";
const REDIRECT_URI: &str = "msal1af761dc-085a-411f-9cb9-53e5e2115bd2://auth";
const SCOPE: &str = "https://gdhvb2cflameconnect.onmicrosoft.com/Mobile/read";
/// MSAL adds these to every scope list.
const RESERVED_SCOPES: &str = "openid profile offline_access";

/// The manual way's button on the first form and its link on [`STEP_MANUAL`].
pub const MANUAL_LABEL: &str = "Sign in on FlameConnect's page instead";

fn authority() -> String {
    format!("{ORIGIN}/{TENANT}/{POLICY}")
}

/// An endpoint as discovery names it (the policy lower-cased), for when discovery is not asked:
/// the manual way's link, and the health check's refresh grant.
fn known_endpoint(name: &str) -> Url {
    fixed_url(&format!(
        "{ORIGIN}/{TENANT}/{}/oauth2/v2.0/{name}",
        POLICY.to_lowercase()
    ))
}

fn scope() -> String {
    format!("{SCOPE} {RESERVED_SCOPES}")
}

/// The flow's side of one authorize request: what MSAL's `initiate_auth_code_flow` keeps.
struct AuthRequest {
    pkce: Pkce,
    state: String,
    /// The SHA-256 hex of the nonce: what is sent, and what the id_token must carry.
    nonce: String,
}

impl AuthRequest {
    fn new() -> AuthRequest {
        AuthRequest {
            pkce: Pkce::generate(),
            state: token_urlsafe16(),
            nonce: sha256_hex(&token_urlsafe16()),
        }
    }

    fn url(&self, authorize: &Url) -> Url {
        let mut to = authorize.clone();
        to.query_pairs_mut()
            .append_pair("client_id", CLIENT_ID)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", REDIRECT_URI)
            .append_pair("scope", &scope())
            .append_pair("state", &self.state)
            .append_pair("code_challenge", &self.pkce.challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("nonce", &self.nonce)
            .append_pair("client_info", "1");
        to
    }
}

/// What the flow keeps while it waits for a pasted redirect (never the password).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum FlameConnectState {
    /// Waits at [`STEP_MANUAL`] for the redirect of the authorize request it links to.
    Manual {
        email: String,
        verifier: String,
        state: String,
        /// The hashed nonce sent.
        nonce: String,
        token_endpoint: String,
    },
}

pub struct FlameConnectProvider;

/// Discovery's authorize and token endpoints (on the B2C origin, or B2C changed).
async fn discover(http: &mut HttpSession) -> Result<(Url, Url), StepError> {
    let answer = http
        .send(UpstreamRequest::get(fixed_url(&format!(
            "{}/v2.0/.well-known/openid-configuration",
            authority()
        ))))
        .await?;
    if answer.status != 200 {
        return Err(status_error(&answer, "discovery"));
    }
    let document: Value = answer.json()?;
    let endpoint = |name: &str| {
        let found = document.get(name)?.as_str()?;
        Url::parse(found)
            .ok()
            .filter(|u| u.origin() == fixed_url(ORIGIN).origin())
    };
    match (
        endpoint("authorization_endpoint"),
        endpoint("token_endpoint"),
    ) {
        (Some(authorize), Some(token)) => Ok((authorize, token)),
        _ => {
            tracing::warn!("FlameConnect's discovery document lacks its endpoints");
            Err(ErrorCode::UpstreamOutOfShape.into())
        }
    }
}

/// Steps 1–4: returns the app redirect B2C ended on and the token endpoint.
async fn sign_in(
    http: &mut HttpSession,
    request: &AuthRequest,
    email: &Email,
    password: &str,
) -> Result<(Url, Url), StepError> {
    let (authorize, token_endpoint) = discover(http).await?;
    let auth_uri = request.url(&authorize);
    let page = match http
        .follow(UpstreamRequest::get(auth_uri.clone()), &HOSTS, |_| false)
        .await?
    {
        Followed::Answer(page) if page.status == 200 => page,
        Followed::Answer(page) => return Err(status_error(&page, "authorize")),
        Followed::Stopped(_) => {
            tracing::warn!("FlameConnect's authorize page redirected to the app at once");
            return Err(ErrorCode::UpstreamOutOfShape.into());
        }
    };
    let settings = page_settings(&page.text()).map_err(|why| {
        tracing::warn!(why, "FlameConnect's sign-in page is out of shape");
        StepError::new(ErrorCode::UpstreamOutOfShape).detail(why)
    })?;
    let tx = keep_equals(&settings.trans_id);
    let base = format!("{ORIGIN}/{TENANT}/{POLICY}");

    let post_url = fixed_url(&format!("{base}/SelfAsserted?tx={tx}&p={POLICY}"));
    let answer = http
        .send(
            UpstreamRequest::post(post_url)
                .header(header("x-csrf-token"), settings.csrf.as_str())
                .header(header("x-requested-with"), "XMLHttpRequest")
                .header(header("referer"), page.url.as_str())
                .header(header("origin"), ORIGIN)
                .header(
                    header("accept"),
                    "application/json, text/javascript, */*; q=0.01",
                )
                .form(&[
                    ("request_type", "RESPONSE"),
                    ("email", email.as_typed()),
                    ("password", password),
                ]),
        )
        .await?;
    if answer.status != 200 {
        return Err(status_error(&answer, "self_asserted"));
    }
    match b2c_status(&answer.body) {
        Some(B2cStatus::Accepted) => {}
        Some(B2cStatus::Refused { .. }) => return Err(ErrorCode::InvalidAuth.into()),
        None => {
            tracing::warn!("SelfAsserted answered without B2C's status");
            return Err(ErrorCode::UpstreamOutOfShape.into());
        }
    }

    // Built by hand: flameconnect sends these values unencoded, with a literal `=`.
    let confirmed = fixed_url(&format!(
        "{base}/api/CombinedSigninAndSignup/confirmed?rememberMe=false&csrf_token={}&tx={tx}&p={POLICY}",
        keep_equals(&settings.csrf)
    ));
    let ended = http
        .follow(UpstreamRequest::get(confirmed), &HOSTS, |next| {
            is_app_redirect(next.as_str(), REDIRECT_URI)
        })
        .await?;
    let redirect = match ended {
        Followed::Stopped(next) if is_app_redirect(next.as_str(), REDIRECT_URI) => next,
        Followed::Stopped(_) => {
            tracing::warn!("B2C redirected to another app's scheme");
            return Err(ErrorCode::UpstreamOutOfShape.into());
        }
        Followed::Answer(answer) if answer.status == 200 => app_redirect_in(&answer)?,
        Followed::Answer(answer) => return Err(status_error(&answer, "confirmed")),
    };
    Ok((redirect, token_endpoint))
}

/// flameconnect's last resort: a 200 page naming the app redirect
/// (`(msal[a-f0-9-]+://auth\?[^\s"'<]+)`).
fn app_redirect_in(page: &UpstreamResponse) -> Result<Url, StepError> {
    let text = page.text();
    let found = text.find(REDIRECT_URI).and_then(|at| {
        let end = text[at..]
            .find(|c: char| c.is_whitespace() || "\"'<".contains(c))
            .map_or(text.len(), |n| at + n);
        let candidate = text[at..end].replace("&amp;", "&");
        Url::parse(&candidate).ok()
    });
    found.ok_or_else(|| {
        tracing::warn!("B2C's sign-in ended on a page without the app redirect");
        ErrorCode::UpstreamOutOfShape.into()
    })
}

/// Step 5: MSAL's `acquire_token_by_auth_code_flow` for a redirect with this code and state.
async fn redeem(
    http: &mut HttpSession,
    now: i64,
    email: &Email,
    request: &Kept,
    pasted_state: Option<&str>,
    code: &str,
) -> Result<NewAccount, StepError> {
    if pasted_state != Some(request.state.as_str()) {
        tracing::warn!("an app redirect with another state than ours");
        return Err(StepError::new(ErrorCode::TokenError)
            .detail("The sign-in answer belongs to another sign-in (its state does not match)."));
    }
    let scope = scope();
    let answer = http
        .send(
            UpstreamRequest::post(request.token_endpoint.clone()).form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT_URI),
                ("scope", &scope),
                ("client_id", CLIENT_ID),
                ("code_verifier", &request.verifier),
                ("client_info", "1"),
            ]),
        )
        .await?;
    let tokens = match read_tokens(&answer, "token")? {
        Granted::Tokens(tokens) => tokens,
        Granted::Refused { error, description } => {
            tracing::warn!(error, "B2C refused the authorization code");
            return Err(StepError::new(ErrorCode::TokenError).detail(description.unwrap_or(error)));
        }
    };
    let Some(id_token) = tokens.id_token.as_deref() else {
        tracing::warn!("the token answer carries no id_token");
        return Err(ErrorCode::TokenError.into());
    };
    check_id_token(id_token, Some(&request.nonce), CLIENT_ID, now)?;
    // The account B2C signed in (on the manual way the browser may have used another address).
    let signed_in = jwt_email(id_token)
        .and_then(|e| Email::parse(&e).ok())
        .filter(|e| e != email)
        .unwrap_or_else(|| email.clone());
    Ok(NewAccount {
        account_id: slugify(signed_in.as_typed()),
        display_name: signed_in.as_typed().to_owned(),
        secrets: secrets(now, &tokens, None),
    })
}

/// What [`redeem`] needs of an authorize request.
struct Kept {
    verifier: String,
    state: String,
    /// The hashed nonce sent.
    nonce: String,
    token_endpoint: Url,
}

fn secrets(now: i64, tokens: &Tokens, old_id_token: Option<&str>) -> Value {
    json!({
        "access_token": tokens.access_token,
        "refresh_token": tokens.refresh_token,
        "id_token": tokens.id_token.as_deref().or(old_id_token),
        "expires_at": tokens.access_expires_at(now),
    })
}

/// The error a redirect B2C ended on carries, or its code and state.
fn code_of(redirect: &Url) -> Result<(String, Option<String>), StepError> {
    match read_redirect(redirect) {
        Some(Redirected::Code { code, state }) => Ok((code, state)),
        Some(Redirected::Error { error, description }) => {
            Err(redirect_error(&error, description.as_deref()))
        }
        None => {
            tracing::warn!("the app redirect carries neither code nor error");
            Err(ErrorCode::UpstreamOutOfShape.into())
        }
    }
}

/// What the manual step says.
const MANUAL_WORDS: ManualWords = ManualWords {
    service: "FlameConnect",
    sign_in_with: "your email and password",
    ends_on: REDIRECT_URI,
    hint: "The whole address starting with msal…://auth.",
    link_label: MANUAL_LABEL,
};

/// The manual step, with a fresh authorize request (an automatic attempt's is spent).
fn manual(cx: &StepContext<'_>, email: &Email, why: Why) -> Step<FlameConnectState> {
    let request = AuthRequest::new();
    let link = cx
        .http
        .map()
        .browser_url(&request.url(&known_endpoint("authorize")));
    Step::Show {
        step: STEP_MANUAL,
        view: b2c::manual_view(&MANUAL_WORDS, why, &link),
        state: FlameConnectState::Manual {
            email: email.as_typed().to_owned(),
            verifier: request.pkce.verifier,
            state: request.state,
            nonce: request.nonce,
            token_endpoint: known_endpoint("token").to_string(),
        },
    }
}

#[async_trait]
impl Provider for FlameConnectProvider {
    type State = FlameConnectState;

    fn name(&self) -> &'static str {
        "flameconnect"
    }

    fn title(&self) -> &'static str {
        "FlameConnect"
    }

    fn first_view(&self) -> StepView {
        b2c::first_form(
            vec![
                FieldSpec::new("email", "Email", FieldKind::Email),
                FieldSpec::new("password", "Password", FieldKind::Password),
            ],
            MANUAL_LABEL,
        )
    }

    async fn start(&self, cx: &mut StepContext<'_>, input: &Input) -> Step<FlameConnectState> {
        let chose_manual = input.get(ACTION_FIELD).map(|a| a.trim()) == Some(ACTION_MANUAL);
        let filled = |name: &str| input.get(name).is_some_and(|v| !v.trim().is_empty());
        if !filled("email") || (!chose_manual && !filled("password")) {
            return Step::abort(ErrorCode::MissingFields);
        }
        let email = match Email::parse(&input["email"]) {
            Ok(email) => email,
            Err(code) => return Step::Abort(StepError::new(code).on("email")),
        };
        if chose_manual {
            return manual(cx, &email, Why::Chosen);
        }
        let password = &input["password"];
        let request = AuthRequest::new();
        let now = cx.now;
        let http = &mut *cx.http;
        // The outer error is B2C's pages', the inner one the token endpoint's: only pages out
        // of shape can be got around on B2C's own page (a pasted code ends at the same token
        // endpoint).
        let signed_in = bounded(async {
            let (redirect, token_endpoint) = sign_in(http, &request, &email, password).await?;
            let (code, state) = code_of(&redirect)?;
            let kept = Kept {
                verifier: request.pkce.verifier.clone(),
                state: request.state.clone(),
                nonce: request.nonce.clone(),
                token_endpoint,
            };
            Ok(redeem(http, now, &email, &kept, state.as_deref(), &code).await)
        })
        .await;
        match signed_in {
            Ok(Ok(account)) => Step::Connected(account),
            Ok(Err(error)) => Step::Abort(error),
            Err(error) if error.code == ErrorCode::UpstreamOutOfShape => {
                manual(cx, &email, Why::AutomationFailed)
            }
            Err(error) => Step::Abort(error),
        }
    }

    async fn submit(
        &self,
        cx: &mut StepContext<'_>,
        state: FlameConnectState,
        input: &Input,
    ) -> Step<FlameConnectState> {
        let FlameConnectState::Manual {
            email,
            verifier,
            state,
            nonce,
            token_endpoint,
        } = state;
        let pasted = match super::required(input, REDIRECT_FIELD) {
            Ok(pasted) => pasted,
            Err(error) => return Step::Retry(StepError::new(error).on(REDIRECT_FIELD)),
        };
        let paste = Paste {
            prefix: REDIRECT_URI,
            title: "FlameConnect",
            bare_code: false,
        };
        let pasted = match paste.check(pasted) {
            Ok(pasted) => pasted,
            Err(error) => return Step::Retry(error),
        };
        // MSAL compares the state before any request; a paste of another sign-in keeps the step.
        if pasted.state.as_deref() != Some(state.as_str()) {
            return Step::Retry(
                StepError::new(ErrorCode::InvalidUrl)
                    .on(REDIRECT_FIELD)
                    .detail("This URL belongs to another sign-in (its state does not match). Open the link above again, sign in, and paste the address that sign-in ends on."),
            );
        }
        let (Ok(email), Ok(token_endpoint)) = (Email::parse(&email), Url::parse(&token_endpoint))
        else {
            return Step::abort(ErrorCode::FlowExpired);
        };
        let kept = Kept {
            verifier,
            state,
            nonce,
            token_endpoint,
        };
        let now = cx.now;
        let redeemed = bounded(redeem(
            &mut *cx.http,
            now,
            &email,
            &kept,
            pasted.state.as_deref(),
            &pasted.code,
        ))
        .await;
        match redeemed {
            Ok(account) => Step::Connected(account),
            Err(error) => Step::Abort(error),
        }
    }

    /// A refresh grant at the token endpoint (MSAL's `acquire_token_silent`): the renewed
    /// token set replaces the kept one.
    async fn check(&self, http: &mut HttpSession, now: i64, secrets: &Value) -> Health {
        super::health_within(b2c::WHOLE_STEP, refresh(http, now, secrets)).await
    }

    /// Renewing is what the check does: the refresh grant.
    async fn renew(&self, http: &mut HttpSession, now: i64, secrets: &Value) -> Health {
        self.check(http, now, secrets).await
    }

    fn expires_at(&self, secrets: &Value) -> Option<i64> {
        super::earliest(secrets, &["expires_at"])
    }

    /// The access token (FlameConnect's API takes it as a Bearer token) and its expiry.
    fn app_credentials(&self, secrets: &Value) -> Value {
        super::pick(secrets, &["access_token", "expires_at"])
    }

    fn api(&self) -> Option<&'static ProviderApi> {
        Some(&API)
    }

    /// FlameConnect's API takes the access token as a bearer token.
    fn authorize_api_request(
        &self,
        request: UpstreamRequest,
        secrets: &Value,
        _now: i64,
    ) -> Result<UpstreamRequest, ErrorCode> {
        api::bearer(request, secrets.get("access_token").and_then(Value::as_str))
    }
}

/// The fireplaces' API (the app sends its `app_name`, `api_version` and `app_version` headers as
/// the FlameConnect app does).
const API: ProviderApi = ProviderApi {
    bases: &[ApiBase {
        origin: "https://mobileapi.gdhv-iot.com",
        path_prefix: "/api/",
    }],
    extra_headers: &["app_name", "api_version", "app_version"],
};

async fn refresh(http: &mut HttpSession, now: i64, kept: &Value) -> Health {
    let Some(refresh_token) = kept.get("refresh_token").and_then(Value::as_str) else {
        tracing::warn!("a FlameConnect account is kept without its refresh token");
        return Health::Rejected;
    };
    let scope = scope();
    let answer = match http
        .send(UpstreamRequest::post(known_endpoint("token")).form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", CLIENT_ID),
            ("scope", &scope),
        ]))
        .await
    {
        Ok(answer) => answer,
        Err(code) => return Health::Unreachable(code),
    };
    match read_tokens(&answer, "refresh") {
        Ok(Granted::Tokens(tokens)) => {
            let old_id_token = kept.get("id_token").and_then(Value::as_str);
            Health::Accepted(Some(secrets(now, &tokens, old_id_token)))
        }
        Ok(Granted::Refused { error, .. }) if error == "invalid_grant" => Health::Rejected,
        Ok(Granted::Refused { error, .. }) => {
            tracing::warn!(error, "B2C refused a refresh grant for another reason");
            Health::Unreachable(ErrorCode::TokenError)
        }
        Err(error) => Health::Unreachable(error.code),
    }
}

#[cfg(test)]
mod tests {
    use sandbox::faults::Fault;
    use sandbox::flameconnect::{self as double, FlameConnectSandbox};

    use super::{AuthRequest, FlameConnectProvider, Kept, MANUAL_LABEL};
    use crate::flows::runner::Progress;
    use crate::providers::b2c::{read_redirect, Email, Redirected};
    use crate::providers::{Health, Provider, StepError};
    use crate::test_support::{
        answer_to_fault, connected, html_input_value, manual_link, past_the_pages, rss_mib,
        Browser, ProviderSetup, B2C_FAULTS, HOSTILE_FAULTS,
    };
    use crate::view::StepView;
    use crate::ErrorCode;

    type Setup = ProviderSetup<FlameConnectSandbox>;

    async fn setup() -> Setup {
        Setup::new("flameconnect", FlameConnectSandbox::spawn().await).await
    }

    fn now() -> i64 {
        crate::base::clock::Clock::now(&crate::base::clock::SystemClock)
    }

    impl Setup {
        async fn connect(&self, email: &str, password: &str) -> Result<Progress, StepError> {
            self.start(&[("email", email), ("password", password)])
                .await
        }

        /// The secrets kept for the demo account a flow connected.
        async fn secrets(&self, progress: Result<Progress, StepError>) -> serde_json::Value {
            let account = connected(progress);
            assert_eq!(account.display_name, double::DEMO_EMAIL);
            assert_eq!(account.account_key, "demo_flameconnect_test");
            self.stored_secrets(account.id).await
        }
    }

    fn assert_secrets(secrets: &serde_json::Value) {
        for name in ["access_token", "refresh_token", "id_token"] {
            assert!(
                secrets[name].as_str().is_some_and(|v| !v.is_empty()),
                "{name} in {secrets}"
            );
        }
        let expires_at = secrets["expires_at"].as_i64().unwrap_or_default();
        assert!(
            expires_at > now() && expires_at <= now() + 3600,
            "{secrets}"
        );
        assert_eq!(secrets.as_object().unwrap().len(), 4, "{secrets}");
        assert!(!secrets.to_string().contains(double::DEMO_PASSWORD));
    }

    /// Plays the user in a browser: opens the (mapped) authorize link, signs in, and returns
    /// the Redirect URL the last page shows.
    async fn browser_redirect_url(s: &Setup, link: &str) -> String {
        let browser = Browser::new();
        let page = browser.open(link).await;
        let sign_in = format!(
            "http://{}/{}/{}/browser/signin",
            s.sandbox.addr,
            double::TENANT,
            double::POLICY
        );
        let last = browser
            .send_form(
                &sign_in,
                &[
                    ("csrf_token", html_input_value(&page, "csrf_token").as_str()),
                    ("tx", html_input_value(&page, "tx").as_str()),
                    ("email", double::DEMO_EMAIL),
                    ("password", double::DEMO_PASSWORD),
                ],
            )
            .await;
        html_input_value(&last, "redirect_url")
    }

    #[tokio::test]
    async fn connects_through_b2c_routing_hops_on_authorize_and_confirmed() {
        let s = setup().await;
        let done = s.connect(double::DEMO_EMAIL, double::DEMO_PASSWORD).await;
        assert_secrets(&s.secrets(done).await);
        assert_eq!(s.sandbox.routing_hops("oauth2/v2.0/authorize"), 1);
        assert_eq!(
            s.sandbox
                .routing_hops("api/CombinedSigninAndSignup/confirmed"),
            1
        );
    }

    #[tokio::test]
    async fn hostile_answers_fail_in_words_within_the_step_deadline() {
        let s = setup().await;
        let before = rss_mib();
        for step in ["discovery", "authorize", "confirmed", "token"] {
            for (fault, code) in HOSTILE_FAULTS {
                s.sandbox.clear_faults();
                s.sandbox.set_fault(step, fault);
                let started = std::time::Instant::now();
                let error = s
                    .connect(double::DEMO_EMAIL, double::DEMO_PASSWORD)
                    .await
                    .unwrap_err();
                assert_eq!(error.code, code, "{fault:?} at {step}");
                assert!(started.elapsed() < std::time::Duration::from_secs(3));
                let grown = rss_mib().saturating_sub(before);
                assert!(grown < 128, "{grown} MiB more after {fault:?} at {step}");
            }
        }
        s.sandbox.clear_faults();
        let done = s.connect(double::DEMO_EMAIL, double::DEMO_PASSWORD).await;
        assert_secrets(&s.secrets(done).await);
    }

    #[tokio::test]
    async fn email_and_password_connect_keeping_only_the_token_set_and_only_once() {
        let s = setup().await;
        let StepView::Form {
            fields,
            submit,
            actions,
            ..
        } = s.engine.first_view("flameconnect").unwrap()
        else {
            panic!("a form");
        };
        let named: Vec<(&str, &str)> = fields
            .iter()
            .map(|f| (f.name.as_str(), f.label.as_str()))
            .collect();
        assert_eq!(named, [("email", "Email"), ("password", "Password")]);
        assert_eq!(submit, "Connect");
        assert_eq!(
            (actions[0].label.as_str(), actions[0].value.as_str()),
            (MANUAL_LABEL, "manual")
        );

        let done = s.connect(double::DEMO_EMAIL, double::DEMO_PASSWORD).await;
        assert_secrets(&s.secrets(done).await);
        let again = s.connect(double::DEMO_EMAIL, double::DEMO_PASSWORD).await;
        assert_eq!(again.unwrap_err().code, ErrorCode::AlreadyConfigured);
    }

    #[tokio::test]
    async fn a_wrong_password_is_invalid_auth_and_missing_fields_send_nothing() {
        let s = setup().await;
        let wrong = s.connect(double::DEMO_EMAIL, "not-it").await.unwrap_err();
        assert_eq!(wrong.code, ErrorCode::InvalidAuth);
        s.sandbox.set_fault("all", Fault::Reset);
        let missing = s.connect(double::DEMO_EMAIL, " ").await.unwrap_err();
        assert_eq!(missing.code, ErrorCode::MissingFields);
        let email = s.connect("demo", "x").await.unwrap_err();
        assert_eq!(
            (email.code, email.field.as_deref()),
            (ErrorCode::InvalidEmail, Some("email"))
        );
    }

    #[tokio::test]
    async fn faults_end_the_flow_with_their_error_or_move_it_to_the_manual_step() {
        let s = setup().await;
        for step in [
            "discovery",
            "authorize",
            "self_asserted",
            "confirmed",
            "token",
        ] {
            for (fault, expected) in B2C_FAULTS {
                s.sandbox.clear_faults();
                s.sandbox.set_fault(step, fault);
                let answer = s.connect(double::DEMO_EMAIL, double::DEMO_PASSWORD).await;
                let at = format!("{fault:?} at {step}");
                let expected = if step == "token" {
                    past_the_pages(expected)
                } else {
                    expected
                };
                if let Some(view) = answer_to_fault(answer, expected, &at) {
                    manual_link(&view, MANUAL_LABEL);
                }
            }
        }
    }

    #[tokio::test]
    async fn the_manual_way_refuses_another_sign_ins_state_and_connects_with_its_own() {
        let s = setup().await;
        s.sandbox.set_fault("all", Fault::Reset);
        let chosen = s
            .start(&[("action", "manual"), ("email", double::DEMO_EMAIL)])
            .await;
        let Ok(Progress::Next(flow)) = chosen else {
            panic!("the manual step expected, got {chosen:?}");
        };
        s.sandbox.clear_faults();
        let link = manual_link(&flow, MANUAL_LABEL);
        assert!(
            link.starts_with(&format!("http://{}/", s.sandbox.addr)),
            "{link}"
        );
        let redirect = browser_redirect_url(&s, &link).await;
        assert!(
            redirect.starts_with(&format!("{}/?state=", double::REDIRECT_URI)),
            "{redirect}"
        );

        let Some(Redirected::Code { state, .. }) =
            read_redirect(&url::Url::parse(&redirect).unwrap())
        else {
            panic!("a code");
        };
        let forged = redirect.replace(&state.unwrap(), "forged-state-forged-st");
        for bad in [
            forged.as_str(),
            "eyJraWQiOiJjcGltY29yZV8wOTI1MjAxNSJ9",
            "msal1af761dc-085a-411f-9cb9-53e5e2115bd2://auth/?state=x",
        ] {
            let error = s.submit(&flow, &[("redirect_url", bad)]).await.unwrap_err();
            assert_eq!(
                (error.code, error.field.as_deref()),
                (ErrorCode::InvalidUrl, Some("redirect_url")),
                "{bad}"
            );
        }
        let done = s.submit(&flow, &[("redirect_url", &redirect)]).await;
        assert_secrets(&s.secrets(done).await);
    }

    /// Signs in through the browser pages for `request` and returns the app redirect.
    async fn code_for(s: &Setup, request: &AuthRequest) -> (String, Option<String>) {
        let http = s.session();
        let link = http
            .map()
            .browser_url(&request.url(&super::known_endpoint("authorize")));
        let redirect = browser_redirect_url(s, link.as_str()).await;
        match read_redirect(&url::Url::parse(&redirect).unwrap()) {
            Some(Redirected::Code { code, state }) => (code, state),
            other => panic!("a code expected, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_forged_state_or_nonce_is_refused_as_msal_refuses_it() {
        let s = setup().await;
        let email = Email::parse(double::DEMO_EMAIL).unwrap();
        let request = AuthRequest::new();
        let (code, state) = code_for(&s, &request).await;
        let kept_with = |nonce| Kept {
            verifier: request.pkce.verifier.clone(),
            state: request.state.clone(),
            nonce,
            token_endpoint: super::known_endpoint("token"),
        };
        // Another state: refused before the code is spent.
        let forged_state = kept_with(request.nonce.clone());
        let error = super::redeem(
            &mut s.session(),
            now(),
            &email,
            &forged_state,
            Some("forged"),
            &code,
        )
        .await
        .unwrap_err();
        assert_eq!(error.code, ErrorCode::TokenError);
        assert!(error.detail.unwrap().contains("state"));
        // Another nonce than the id_token carries.
        let forged_nonce = kept_with(super::sha256_hex("another nonce"));
        let error = super::redeem(
            &mut s.session(),
            now(),
            &email,
            &forged_nonce,
            state.as_deref(),
            &code,
        )
        .await
        .unwrap_err();
        assert_eq!(error.code, ErrorCode::TokenError);
        assert!(error.detail.unwrap().contains("nonce"));

        // Our own nonce with a fresh sign-in: accepted.
        let request = AuthRequest::new();
        let (code, state) = code_for(&s, &request).await;
        let kept = Kept {
            verifier: request.pkce.verifier.clone(),
            state: request.state.clone(),
            nonce: request.nonce.clone(),
            token_endpoint: super::known_endpoint("token"),
        };
        let account = super::redeem(
            &mut s.session(),
            now(),
            &email,
            &kept,
            state.as_deref(),
            &code,
        )
        .await
        .unwrap();
        assert_eq!(account.account_id, "demo_flameconnect_test");
    }

    #[tokio::test]
    async fn a_health_check_rotates_the_tokens_and_is_rejected_once_revoked() {
        let s = setup().await;
        let kept = s
            .secrets(s.connect(double::DEMO_EMAIL, double::DEMO_PASSWORD).await)
            .await;
        let Health::Accepted(Some(renewed)) = FlameConnectProvider
            .check(&mut s.session(), now(), &kept)
            .await
        else {
            panic!("renewed secrets expected");
        };
        assert_secrets(&renewed);
        assert_ne!(renewed["refresh_token"], kept["refresh_token"]);
        assert_eq!(s.sandbox.refreshes(), 1);
        assert_eq!(
            FlameConnectProvider
                .check(&mut s.session(), now(), &kept)
                .await,
            Health::Rejected
        );
        for (fault, code) in [
            (Fault::Unavailable503, ErrorCode::ServiceUnavailable),
            (Fault::Reset, ErrorCode::CannotConnect),
            (Fault::Stall, ErrorCode::Timeout),
            (Fault::WrongShape, ErrorCode::UpstreamOutOfShape),
        ] {
            s.sandbox.set_fault("refresh", fault);
            assert_eq!(
                FlameConnectProvider
                    .check(&mut s.session(), now(), &renewed)
                    .await,
                Health::Unreachable(code),
                "{fault:?}"
            );
        }
        s.sandbox.clear_faults();
        s.sandbox.revoke(double::DEMO_EMAIL);
        assert_eq!(
            FlameConnectProvider
                .check(&mut s.session(), now(), &renewed)
                .await,
            Health::Rejected
        );
    }
}
