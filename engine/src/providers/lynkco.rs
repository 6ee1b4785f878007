//! `lynkco`: Lynk & Co, an Azure AD B2C custom policy (`B2C_1A_signin_mfa`) with an SMS
//! second factor, then Lynk & Co's IAM service for the CCC token the car API takes
//! (shared/protocols.md §1 and its corrections; Hass-Lynk-Co's `login_flow.py`).
//!
//! The server does what the app does, in one cookie jar from the first request to the last
//! (the engine saves it with the flow, so a restart between the user's steps changes nothing):
//! 1. `GET …/oauth2/v2.0/authorize` with a PKCE S256 challenge: B2C sets the `x-ms-cpim-trans`
//!    and `x-ms-cpim-csrf` cookies (both must be there) and names the page view in
//!    `x-ms-gateway-requestid`;
//! 2. `POST …/SelfAsserted` (`signInName`, `password`, header `x-csrf-token`): HTTP 200 either
//!    way, `{"status":"400",…}` for a wrong password;
//! 3. `GET …/api/CombinedSigninAndSignup/confirmed`: B2C moves to its phone page and sends the
//!    SMS; the flow waits at [`STEP_CODE`];
//! 4. `POST …/SelfAsserted` (`verificationCode`);
//! 5. `GET …/api/SelfAsserted/confirmed`, not followed: its `Location` is the app redirect
//!    `msauth://prod.lynkco.app.crisp.prod/…?code=…`;
//! 6. `POST …/oauth2/v2.0/token` with the verifier;
//! 7. `POST` IAM `validate-session` with the access token: the CCC token (a JWT; its `exp` is
//!    read unverified).
//!
//! When B2C answers out of shape (it changed), the flow does not end: it moves to
//! [`STEP_MANUAL`], where the user signs in on Lynk & Co's own page and pastes the
//! `msauth://…?code=…` address it ends on; steps 6 and 7 follow. The first form offers that way
//! from the start too.
//!
//! # What each step accepts
//!
//! | step | view | input |
//! |------|------|-------|
//! | first ([`Provider::first_view`]) | Form: "Email" (`email`), "Password" (`password`), "VIN" (`vin`); button "Connect"; action button [`MANUAL_LABEL`] (`action=manual`) | `email`, `password`, `vin`; or `action=manual` with `email` and `vin` only |
//! | [`STEP_CODE`] (`code`) | Form: intro "Lynk & Co sent a verification code by SMS to your phone …", field "Verification code" (`code`, kind Code); button "Verify" | `code` |
//! | [`STEP_MANUAL`] (`manual`) | Form: intro (why, what to do), link [`MANUAL_LABEL`] (the authorize URL, fresh PKCE), field "Redirect URL" (`redirect_url`, kind Url); button "Connect" | `redirect_url`: the `msauth://prod.lynkco.app.crisp.prod/…?code=…` URL, or the bare code |
//!
//! Checked before anything is sent: every field filled in (`missing_fields`), the email's shape
//! (`invalid_email` on `email`), the VIN (`invalid_vin` on `vin`: 17 characters, no I, O or Q,
//! trimmed and upper-cased). A wrong password is `invalid_auth` (the flow ends); a wrong code is
//! `invalid_code` on `code` and keeps the step (the engine counts the tries); an expired code is
//! `code_expired` and ends the flow (B2C takes no other code in that transaction). A bad paste
//! is `invalid_url` on `redirect_url` and keeps the step, with a detail for each kind.
//!
//! # What is kept
//!
//! Secrets JSON: `refresh_token`, `access_token`, `access_token_expires_at`, `ccc_token`,
//! `ccc_token_expires_at` (Unix seconds) and `vin`. The account is named by its email; its id
//! is the email in lower case. The password is never kept, not even in the flow.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use url::Url;

use super::api::{self, ApiBase, ProviderApi};
use super::b2c::{
    self, b2c_status, bounded, header, is_app_redirect, jwt_email, jwt_exp, read_redirect,
    read_tokens, redirect_error, status_error, B2cStatus, Email, Granted, ManualWords, Paste, Pkce,
    Redirected, Tokens, Vin, Why, ACTION_FIELD, ACTION_MANUAL, REDIRECT_FIELD, STEP_MANUAL,
};
use super::fixed_url;
use super::{Health, Input, NewAccount, Provider, Step, StepContext, StepError};
use crate::flows::upstream::{
    Followed, HttpSession, RedirectPolicy, UpstreamRequest, UpstreamResponse,
};
use crate::view::{FieldKind, FieldSpec, StepView, Submit};
use crate::ErrorCode;

/// Lynk & Co's own hosts: redirects are followed to these only (B2C routes its GET steps
/// through hops on its own host).
const HOSTS: RedirectPolicy = RedirectPolicy::new(&[
    "login.lynkco.com",
    "iam-service-prod.westeurope.cloudapp.azure.com",
]);
/// The policy's base: every B2C call of the login is under it.
const BASE: &str = "https://login.lynkco.com/lynkcoprod.onmicrosoft.com/b2c_1a_signin_mfa/";
/// The refresh grant goes to the tenant-ID path (Hass-Lynk-Co's token manager).
const REFRESH_URL: &str =
    "https://login.lynkco.com/dc6c7c0c-5ba7-414a-a7d1-d62ca1f73d13/b2c_1a_signin_mfa/oauth2/v2.0/token";
const VALIDATE_SESSION: &str =
    "https://iam-service-prod.westeurope.cloudapp.azure.com/validate-session";
/// The `p` query value: the mixed-case policy name.
const POLICY: &str = "B2C_1A_signin_mfa";
/// The connected-car APIs the app uses: the vehicle list (`user-lifecycle`) first, and the
/// drivers of a vehicle (`delegated-driver`, where a user's id is read).
const CONNECTED_CAR: ProviderApi = ProviderApi {
    bases: &[
        ApiBase {
            origin: "https://user-lifecycle-tls.aion.connectedcar.cloud",
            path_prefix: "/user-lifecycle/",
        },
        ApiBase {
            origin: "https://delegated-driver-tls.aion.connectedcar.cloud",
            path_prefix: "/delegated-driver/",
        },
    ],
    extra_headers: &[],
};
/// The newer app's client (Hass-Lynk-Co ee48faaa).
const CLIENT_ID: &str = "c3e13a0c-8ba7-4ea5-9a21-ecd75830b9e9";
/// The redirect URI's value (its `%2F`s are part of it; a query encodes it once more).
const REDIRECT_URI: &str = "msauth://prod.lynkco.app.crisp.prod/2jmj7l5rSw0yVb%2FvlWAYkK%2FYBwk%3D";
/// What an app redirect starts with (Donkie's config flow checks this prefix).
const REDIRECT_PREFIX: &str = "msauth://prod.lynkco.app.crisp.prod/";
const SCOPE_BASE: &str = "https://lynkcoprod.onmicrosoft.com/mobile-app-web-api/mobile";

/// The step that waits for the SMS code.
pub const STEP_CODE: &str = "code";
/// The field of the SMS code.
pub const CODE_FIELD: &str = "code";
/// The manual way's button on the first form and its link on [`STEP_MANUAL`].
pub const MANUAL_LABEL: &str = "Sign in on Lynk & Co's page instead";

fn base() -> Url {
    fixed_url(BASE)
}

/// The authorize URL the app opens: no `openid` in its scope (the token request has it).
fn authorize_url(challenge: &str) -> Url {
    let mut authorize = fixed_url(&format!("{BASE}oauth2/v2.0/authorize"));
    authorize
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair(
            "scope",
            &format!("{SCOPE_BASE}.read {SCOPE_BASE}.write profile offline_access"),
        )
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("redirect_uri", REDIRECT_URI)
        .append_pair("client_id", CLIENT_ID);
    authorize
}

/// What the flow keeps while it waits for the user (never the password).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum LynkcoState {
    /// Waits at [`STEP_CODE`]; B2C's cookies are in the flow's jar.
    Code {
        email: String,
        vin: String,
        verifier: String,
        /// The `x-ms-cpim-csrf` and `x-ms-cpim-trans` cookies as read after authorize (the jar
        /// is asked first: B2C may renew them).
        csrf: String,
        trans: String,
        /// The phone page's `x-ms-gateway-requestid`.
        page_view_id: String,
        /// The sign-in page's `x-ms-gateway-requestid`: with `csrf` and `trans` it rebuilds
        /// the `CombinedSigninAndSignup/confirmed` URL, the next request's `referer` (kept as
        /// parts, not as the URL: the URL would hold both cookies a third time).
        first_view_id: String,
    },
    /// Waits at [`STEP_MANUAL`] for the app redirect of a browser sign-in with this verifier.
    Manual {
        email: String,
        vin: String,
        verifier: String,
    },
}

pub struct LynkcoProvider;

/// The first form's input, checked before any request (Hass-Lynk-Co's `missing_details`,
/// `invalid_email`, `invalid_vin`, in its order).
fn first_input(input: &Input, password_needed: bool) -> Result<(Email, Vin), StepError> {
    let filled = |name: &str| input.get(name).is_some_and(|v| !v.trim().is_empty());
    if !filled("email") || !filled("vin") || (password_needed && !filled("password")) {
        return Err(ErrorCode::MissingFields.into());
    }
    let email = Email::parse(&input["email"]).map_err(|code| StepError::new(code).on("email"))?;
    let vin = Vin::parse(&input["vin"]).map_err(|code| StepError::new(code).on("vin"))?;
    Ok((email, vin))
}

fn cookie_of(http: &HttpSession, name: &str) -> Option<String> {
    http.cookie(&base(), name).filter(|v| !v.is_empty())
}

/// The `x-ms-gateway-requestid` of an answer (the next `pageViewId`).
fn page_view_id(response: &UpstreamResponse, what: &str) -> Result<String, StepError> {
    match response.header("x-ms-gateway-requestid") {
        Some(id) if !id.trim().is_empty() => Ok(id.trim().to_owned()),
        _ => {
            tracing::warn!(
                step = what,
                "B2C named no page view (x-ms-gateway-requestid)"
            );
            Err(ErrorCode::UpstreamOutOfShape.into())
        }
    }
}

/// `SelfAsserted?p=…&tx=StateProperties%3D<trans>`: `tx` quoted as Python's `quote` does.
fn self_asserted_url(trans: &str) -> Url {
    let mut to = fixed_url(&format!("{BASE}SelfAsserted"));
    to.query_pairs_mut()
        .append_pair("p", POLICY)
        .append_pair("tx", &format!("StateProperties={trans}"));
    to
}

/// A `…/confirmed` URL with the query the app sends (`diags` names the page it leaves).
fn confirmed_url(path: &str, csrf: &str, trans: &str, page_view_id: &str, page: &str) -> Url {
    let mut to = fixed_url(&format!("{BASE}{path}"));
    let diags = json!({"pageViewId": page_view_id, "pageId": page, "trace": []}).to_string();
    {
        let mut query = to.query_pairs_mut();
        if path.contains("CombinedSigninAndSignup") {
            query.append_pair("rememberMe", "false");
        }
        query
            .append_pair("csrf_token", csrf)
            .append_pair("tx", &format!("StateProperties={trans}"))
            .append_pair("p", POLICY)
            .append_pair("diags", &diags);
    }
    to
}

/// A `SelfAsserted` POST and B2C's verdict (`None`: accepted).
async fn self_asserted(
    http: &mut HttpSession,
    csrf: &str,
    trans: &str,
    form: &[(&str, &str)],
    what: &str,
) -> Result<Option<(Option<String>, Option<String>)>, StepError> {
    let answer = http
        .send(
            UpstreamRequest::post(self_asserted_url(trans))
                .header(header("x-csrf-token"), csrf)
                .form(form),
        )
        .await?;
    if answer.status != 200 {
        // A 400 here (AADB2C90240) is a csrf or transaction B2C did not take: not the user's.
        return Err(status_error(&answer, what));
    }
    match b2c_status(&answer.body) {
        Some(B2cStatus::Accepted) => Ok(None),
        Some(B2cStatus::Refused {
            error_code,
            message,
        }) => Ok(Some((error_code, message))),
        None => {
            tracing::warn!(step = what, "SelfAsserted answered without B2C's status");
            Err(ErrorCode::UpstreamOutOfShape.into())
        }
    }
}

/// A GET step of B2C's pages: redirects on B2C's own hosts followed (its routing hops), up to
/// the app redirect, which is never fetched.
async fn page_step(
    http: &mut HttpSession,
    request: UpstreamRequest,
) -> Result<Followed, StepError> {
    Ok(http
        .follow(request, &HOSTS, |next| {
            is_app_redirect(next.as_str(), REDIRECT_PREFIX)
        })
        .await?)
}

/// What a GET step that should have ended on B2C's app redirect gave: the code, or the error
/// the redirect carries, or why it did not come.
fn app_redirect_code(ended: &Followed, what: &str) -> Result<String, StepError> {
    let location = match ended {
        Followed::Stopped(location) => location,
        Followed::Answer(answer) => return Err(status_error(answer, what)),
    };
    match read_redirect(location) {
        Some(Redirected::Code { code, .. }) => Ok(code),
        Some(Redirected::Error { error, description }) => {
            Err(redirect_error(&error, description.as_deref()))
        }
        None => {
            tracing::warn!(
                step = what,
                "the app redirect carries neither code nor error"
            );
            Err(ErrorCode::UpstreamOutOfShape.into())
        }
    }
}

/// Steps 1–3: authorize, the password, and the move to the phone page (the SMS goes out).
async fn sign_in(
    http: &mut HttpSession,
    email: &Email,
    vin: &Vin,
    password: &str,
) -> Result<LynkcoState, StepError> {
    let pkce = Pkce::generate();
    let page = match page_step(
        http,
        UpstreamRequest::get(authorize_url(&pkce.challenge)).header(
            header("accept"),
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
    )
    .await?
    {
        Followed::Answer(page) => page,
        ended @ Followed::Stopped(_) => {
            // Straight to the app before any password: only B2C's error can come this way.
            return Err(match app_redirect_code(&ended, "authorize") {
                Ok(_) => ErrorCode::UpstreamOutOfShape.into(),
                Err(error) => error,
            });
        }
    };
    if page.status != 200 {
        return Err(status_error(&page, "authorize"));
    }
    let first_view_id = page_view_id(&page, "authorize")?;
    // Hass-Lynk-Co 4adf747 checked the csrf cookie twice and never the trans cookie: both here.
    let (Some(trans), Some(csrf)) = (
        cookie_of(http, "x-ms-cpim-trans"),
        cookie_of(http, "x-ms-cpim-csrf"),
    ) else {
        tracing::warn!("B2C's sign-in page set no x-ms-cpim-trans or x-ms-cpim-csrf cookie");
        return Err(ErrorCode::UpstreamOutOfShape.into());
    };

    let refused = self_asserted(
        http,
        &csrf,
        &trans,
        &[
            ("request_type", "RESPONSE"),
            ("signInName", email.as_typed()),
            ("password", password),
        ],
        "password",
    )
    .await?;
    if let Some((error_code, message)) = refused {
        // Checked before the next GET, which would redirect to the app with the error.
        let error = StepError::new(ErrorCode::InvalidAuth);
        return Err(match (error_code.as_deref(), message) {
            (Some("AADB2C90053") | None, _) | (_, None) => error,
            (Some(_), Some(message)) => error.detail(message),
        });
    }

    let confirmed = confirmed_url(
        "api/CombinedSigninAndSignup/confirmed",
        &csrf,
        &trans,
        &first_view_id,
        "CombinedSigninAndSignup",
    );
    let phone_page = match page_step(
        http,
        UpstreamRequest::get(confirmed.clone()).header(header("accept"), "text/html"),
    )
    .await?
    {
        Followed::Answer(page) => page,
        ended @ Followed::Stopped(_) => {
            // The app's custom scheme, never fetched: its error is B2C's verdict.
            return Err(match app_redirect_code(&ended, "confirmed") {
                Ok(_) => {
                    tracing::warn!("B2C skipped the SMS step");
                    ErrorCode::UpstreamOutOfShape.into()
                }
                Err(error) => error,
            });
        }
    };
    if phone_page.is_redirect() || phone_page.status != 200 {
        return Err(status_error(&phone_page, "confirmed"));
    }
    let page_view_id = page_view_id(&phone_page, "confirmed")?;
    Ok(LynkcoState::Code {
        email: email.as_typed().to_owned(),
        vin: vin.as_str().to_owned(),
        verifier: pkce.verifier,
        csrf,
        trans,
        page_view_id,
        first_view_id,
    })
}

/// What the SMS code did.
enum Verified {
    Account(NewAccount),
    /// B2C refused the code but takes another: the step stays.
    Wrong(StepError),
    /// The token endpoint or IAM failed after B2C's pages: the flow ends with this error.
    Ended(StepError),
}

/// Steps 4–7 for the code the user typed.
async fn verify(
    http: &mut HttpSession,
    now: i64,
    state: &LynkcoState,
    code: &str,
) -> Result<Verified, StepError> {
    let LynkcoState::Code {
        email,
        vin,
        verifier,
        csrf,
        trans,
        page_view_id,
        first_view_id,
    } = state
    else {
        return Err(ErrorCode::FlowExpired.into());
    };
    let referer = confirmed_url(
        "api/CombinedSigninAndSignup/confirmed",
        csrf,
        trans,
        first_view_id,
        "CombinedSigninAndSignup",
    );
    let csrf = cookie_of(http, "x-ms-cpim-csrf").unwrap_or_else(|| csrf.clone());
    let trans = cookie_of(http, "x-ms-cpim-trans").unwrap_or_else(|| trans.clone());
    let refused = self_asserted(
        http,
        &csrf,
        &trans,
        &[("verificationCode", code), ("request_type", "RESPONSE")],
        "verify",
    )
    .await?;
    if let Some((error_code, message)) = refused {
        let error_code = error_code.unwrap_or_default();
        let message = message.unwrap_or_default();
        return match error_code.as_str() {
            "UserMessageIfVerificationCodeExpired" => Err(ErrorCode::CodeExpired.into()),
            "UserMessageIfMaxRetryAttempted" => {
                Err(StepError::new(ErrorCode::TooManyAttempts).detail(message))
            }
            _ if message.to_lowercase().contains("expired") => Err(ErrorCode::CodeExpired.into()),
            "UserMessageIfVerificationFailedRetryAllowed" | "" => Ok(Verified::Wrong(
                StepError::new(ErrorCode::InvalidCode).on(CODE_FIELD),
            )),
            _ => Ok(Verified::Wrong(
                StepError::new(ErrorCode::InvalidCode)
                    .on(CODE_FIELD)
                    .detail(message),
            )),
        };
    }

    let to = confirmed_url(
        "api/SelfAsserted/confirmed",
        &csrf,
        &trans,
        page_view_id,
        "SelfAsserted",
    );
    let ended = page_step(
        http,
        UpstreamRequest::get(to).header(header("referer"), referer.as_str()),
    )
    .await?;
    let auth_code = app_redirect_code(&ended, "redirect")?;
    let email = Email::parse(email).map_err(|_| ErrorCode::FlowExpired)?;
    let vin = Vin::parse(vin).map_err(|_| ErrorCode::FlowExpired)?;
    // Past B2C's pages: a failure from here on is not one the manual way can get around (its
    // pasted code ends at the same token endpoint).
    Ok(finish(http, now, &email, &vin, verifier, &auth_code)
        .await
        .map_or_else(Verified::Ended, Verified::Account))
}

/// Steps 6 and 7: the code for tokens, the access token for the CCC token.
async fn finish(
    http: &mut HttpSession,
    now: i64,
    email: &Email,
    vin: &Vin,
    verifier: &str,
    auth_code: &str,
) -> Result<NewAccount, StepError> {
    let scope = format!("{SCOPE_BASE}.read {SCOPE_BASE}.write openid profile offline_access");
    let answer = http
        .send(
            UpstreamRequest::post(fixed_url(&format!("{BASE}oauth2/v2.0/token"))).form(&[
                ("client_info", "1"),
                ("scope", &scope),
                ("code", auth_code),
                ("grant_type", "authorization_code"),
                ("code_verifier", verifier),
                ("redirect_uri", REDIRECT_URI),
                ("client_id", CLIENT_ID),
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
    let ccc = match validate_session(http, &tokens.access_token).await? {
        Some(ccc) => ccc,
        None => {
            tracing::warn!("IAM refused a fresh access token");
            return Err(ErrorCode::TokenError.into());
        }
    };
    // The account B2C signed in (on the manual way the browser may have used another address).
    let signed_in = tokens
        .id_token
        .as_deref()
        .and_then(jwt_email)
        .and_then(|e| Email::parse(&e).ok())
        .filter(|e| e != email)
        .unwrap_or_else(|| email.clone());
    Ok(NewAccount {
        account_id: signed_in.as_str().to_owned(),
        display_name: signed_in.as_typed().to_owned(),
        secrets: secrets(now, &tokens, &ccc, vin.as_str()),
    })
}

/// A CCC token and when it expires.
struct Ccc {
    token: String,
    expires_at: i64,
}

/// IAM's `validate-session`: `Some` CCC token, or `None` when the access token is refused (401).
async fn validate_session(
    http: &mut HttpSession,
    access_token: &str,
) -> Result<Option<Ccc>, StepError> {
    let answer = http
        .send(
            UpstreamRequest::post(fixed_url(VALIDATE_SESSION))
                .header(header("x-auth-token"), access_token)
                .header(header("api-version"), "1")
                .json(&json!({"deviceUuid": b2c::uuid_v4(), "isLogin": true})),
        )
        .await?;
    match answer.status {
        200 => {}
        401 | 403 => return Ok(None),
        _ => return Err(status_error(&answer, "validate-session")),
    }
    let body: Value = answer.json()?;
    let Some(token) = body.get("cccToken").and_then(Value::as_str) else {
        tracing::warn!("validate-session answered without cccToken");
        return Err(ErrorCode::UpstreamOutOfShape.into());
    };
    let Some(expires_at) = jwt_exp(token) else {
        tracing::warn!("the CCC token carries no exp");
        return Err(ErrorCode::UpstreamOutOfShape.into());
    };
    Ok(Some(Ccc {
        token: token.to_owned(),
        expires_at,
    }))
}

fn secrets(now: i64, tokens: &Tokens, ccc: &Ccc, vin: &str) -> Value {
    json!({
        "refresh_token": tokens.refresh_token,
        "access_token": tokens.access_token,
        "access_token_expires_at": tokens.access_expires_at(now),
        "ccc_token": ccc.token,
        "ccc_token_expires_at": ccc.expires_at,
        "vin": vin,
    })
}

/// What the manual step says.
const MANUAL_WORDS: ManualWords = ManualWords {
    service: "Lynk & Co",
    sign_in_with: "your email, password and the code sent to your phone",
    ends_on: REDIRECT_PREFIX,
    hint:
        "The whole address starting with msauth://prod.lynkco.app.crisp.prod/ (or just its code).",
    link_label: MANUAL_LABEL,
};

fn manual_view(cx: &StepContext<'_>, challenge: &str, why: Why) -> StepView {
    let link = cx.http.map().browser_url(&authorize_url(challenge));
    b2c::manual_view(&MANUAL_WORDS, why, &link)
}

/// The manual step, with a fresh PKCE pair (a failed automatic attempt's is spent).
fn manual(cx: &StepContext<'_>, email: &Email, vin: &Vin, why: Why) -> Step<LynkcoState> {
    let pkce = Pkce::generate();
    Step::Show {
        step: STEP_MANUAL,
        view: manual_view(cx, &pkce.challenge, why),
        state: LynkcoState::Manual {
            email: email.as_typed().to_owned(),
            vin: vin.as_str().to_owned(),
            verifier: pkce.verifier,
        },
    }
}

fn code_view() -> StepView {
    StepView::Form {
        alert: None,
        intro: Some(
            "Lynk & Co sent a verification code by SMS to your phone. Enter it below.".to_owned(),
        ),
        fields: vec![FieldSpec::new(
            CODE_FIELD,
            "Verification code",
            FieldKind::Code,
        )],
        submit: Submit::Verify,
        links: Vec::new(),
        actions: Vec::new(),
    }
}

/// An automatic step's failure at B2C's pages: pages out of shape (B2C changed) move to the
/// manual step, where the user signs in on B2C's own page; the rest (down, slow, a bad
/// redirect, too much data) ends the flow with its error, which the manual way cannot help.
fn failed(cx: &StepContext<'_>, error: StepError, email: &str, vin: &str) -> Step<LynkcoState> {
    match (error.code, Email::parse(email), Vin::parse(vin)) {
        (ErrorCode::UpstreamOutOfShape, Ok(email), Ok(vin)) => {
            manual(cx, &email, &vin, Why::AutomationFailed)
        }
        _ => Step::Abort(error),
    }
}

#[async_trait]
impl Provider for LynkcoProvider {
    type State = LynkcoState;

    fn name(&self) -> &'static str {
        "lynkco"
    }

    fn title(&self) -> &'static str {
        "Lynk & Co"
    }

    fn first_view(&self) -> StepView {
        b2c::first_form(
            vec![
                FieldSpec::new("email", "Email", FieldKind::Email),
                FieldSpec::new("password", "Password", FieldKind::Password),
                FieldSpec::new("vin", "VIN", FieldKind::Text)
                    .hint("Your car's vehicle identification number: 17 characters."),
            ],
            MANUAL_LABEL,
        )
    }

    async fn start(&self, cx: &mut StepContext<'_>, input: &Input) -> Step<LynkcoState> {
        let chose_manual = input.get(ACTION_FIELD).map(|a| a.trim()) == Some(ACTION_MANUAL);
        let (email, vin) = match first_input(input, !chose_manual) {
            Ok(checked) => checked,
            Err(error) => return Step::Abort(error),
        };
        if chose_manual {
            return manual(cx, &email, &vin, Why::Chosen);
        }
        let password = &input["password"];
        match bounded(sign_in(&mut *cx.http, &email, &vin, password)).await {
            Ok(state) => Step::Show {
                step: STEP_CODE,
                view: code_view(),
                state,
            },
            Err(error) => failed(cx, error, email.as_typed(), vin.as_str()),
        }
    }

    async fn submit(
        &self,
        cx: &mut StepContext<'_>,
        state: LynkcoState,
        input: &Input,
    ) -> Step<LynkcoState> {
        match &state {
            LynkcoState::Code { email, vin, .. } => {
                let code = match super::required(input, CODE_FIELD) {
                    Ok(code) => code.trim(),
                    Err(error) => return Step::Retry(StepError::new(error).on(CODE_FIELD)),
                };
                let now = cx.now;
                match bounded(verify(&mut *cx.http, now, &state, code)).await {
                    Ok(Verified::Account(account)) => Step::Connected(account),
                    Ok(Verified::Wrong(error)) => Step::Retry(error),
                    Ok(Verified::Ended(error)) => Step::Abort(error),
                    Err(error) => failed(cx, error, email, vin),
                }
            }
            LynkcoState::Manual {
                email,
                vin,
                verifier,
            } => {
                let pasted = match super::required(input, REDIRECT_FIELD) {
                    Ok(pasted) => pasted,
                    Err(error) => return Step::Retry(StepError::new(error).on(REDIRECT_FIELD)),
                };
                let paste = Paste {
                    prefix: REDIRECT_PREFIX,
                    title: "Lynk & Co",
                    bare_code: true,
                };
                let auth_code = match paste.check(pasted) {
                    Ok(pasted) => pasted.code,
                    Err(error) => return Step::Retry(error),
                };
                let (Ok(email), Ok(vin)) = (Email::parse(email), Vin::parse(vin)) else {
                    return Step::abort(ErrorCode::FlowExpired);
                };
                let now = cx.now;
                match bounded(finish(
                    &mut *cx.http,
                    now,
                    &email,
                    &vin,
                    verifier,
                    &auth_code,
                ))
                .await
                {
                    Ok(account) => Step::Connected(account),
                    Err(error) => Step::Abort(error),
                }
            }
        }
    }

    /// A refresh grant at the tenant-ID token URL (it rotates the refresh token), then
    /// validate-session for a new CCC token: the renewed secrets replace the kept ones.
    async fn check(&self, http: &mut HttpSession, now: i64, secrets: &Value) -> Health {
        super::health_within(b2c::WHOLE_STEP, check_tokens(http, now, secrets)).await
    }

    /// Renewing is what the check does: the refresh grant, then a new CCC token.
    async fn renew(&self, http: &mut HttpSession, now: i64, secrets: &Value) -> Health {
        self.check(http, now, secrets).await
    }

    fn expires_at(&self, secrets: &Value) -> Option<i64> {
        super::earliest(
            secrets,
            &["access_token_expires_at", "ccc_token_expires_at"],
        )
    }

    /// The access token and the CCC token the car API takes, with their expiries, and the VIN.
    fn app_credentials(&self, secrets: &Value) -> Value {
        super::pick(
            secrets,
            &[
                "access_token",
                "access_token_expires_at",
                "ccc_token",
                "ccc_token_expires_at",
                "vin",
            ],
        )
    }

    fn api(&self) -> Option<&'static ProviderApi> {
        Some(&CONNECTED_CAR)
    }

    /// The connected-car APIs take the CCC token as a bearer token (the B2C access token only
    /// ever goes to `validate-session`).
    fn authorize_api_request(
        &self,
        request: UpstreamRequest,
        secrets: &Value,
        _now: i64,
    ) -> Result<UpstreamRequest, ErrorCode> {
        api::bearer(request, secrets.get("ccc_token").and_then(Value::as_str))
    }

    /// The email and the VIN, so signing in again needs only the password.
    fn reauth_prefill(&self, display_name: &str, secrets: &Value) -> Input {
        let mut prefill = Input::new();
        prefill.insert("email".to_owned(), display_name.to_owned());
        if let Some(vin) = secrets.get("vin").and_then(Value::as_str) {
            prefill.insert("vin".to_owned(), vin.to_owned());
        }
        prefill
    }
}

async fn check_tokens(http: &mut HttpSession, now: i64, kept: &Value) -> Health {
    let Some(refresh_token) = kept.get("refresh_token").and_then(Value::as_str) else {
        tracing::warn!("a Lynk & Co account is kept without its refresh token");
        return Health::Rejected;
    };
    // No client_id: the app's refresh grant sends none.
    let answer = match http
        .send(UpstreamRequest::post(fixed_url(REFRESH_URL)).form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ]))
        .await
    {
        Ok(answer) => answer,
        Err(code) => return Health::Unreachable(code),
    };
    let tokens = match read_tokens(&answer, "refresh") {
        Ok(Granted::Tokens(tokens)) => tokens,
        Ok(Granted::Refused { error, .. }) if error == "invalid_grant" => return Health::Rejected,
        Ok(Granted::Refused { error, .. }) => {
            tracing::warn!(error, "B2C refused a refresh grant for another reason");
            return Health::Unreachable(ErrorCode::TokenError);
        }
        Err(error) => return Health::Unreachable(error.code),
    };
    let vin = kept.get("vin").and_then(Value::as_str).unwrap_or_default();
    match validate_session(http, &tokens.access_token).await {
        Ok(Some(ccc)) => Health::Accepted(Some(secrets(now, &tokens, &ccc, vin))),
        Ok(None) => Health::Rejected,
        Err(error) => {
            // The refresh token has rotated: the old one is spent, so the new one must be
            // kept even though IAM could not be asked (the old CCC token stays with it).
            tracing::warn!(code = %error.code, "IAM could not be asked after a refresh");
            let mut renewed = kept.clone();
            renewed["refresh_token"] = tokens.refresh_token.clone().into();
            renewed["access_token"] = tokens.access_token.clone().into();
            renewed["access_token_expires_at"] = tokens.access_expires_at(now).into();
            Health::Accepted(Some(renewed))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sandbox::faults::Fault;
    use sandbox::lynkco::{self as double, LynkcoSandbox};

    use super::{LynkcoProvider, LynkcoState, MANUAL_LABEL};
    use crate::flows::runner::Progress;
    use crate::providers::{Health, Provider, StepError};
    use crate::test_support::{
        answer_to_fault, connected, html_input_value, manual_link, past_the_pages, rss_mib,
        Browser, ProviderSetup, B2C_FAULTS, HOSTILE_FAULTS, OWNER,
    };
    use crate::view::{FieldKind, FlowView, StepView};
    use crate::ErrorCode;

    type Setup = ProviderSetup<LynkcoSandbox>;

    async fn setup() -> Setup {
        Setup::new("lynkco", LynkcoSandbox::spawn().await).await
    }

    impl Setup {
        async fn connect(&self, email: &str, password: &str) -> Result<Progress, StepError> {
            self.start(&[
                ("email", email),
                ("password", password),
                ("vin", double::DEMO_VIN),
            ])
            .await
        }

        /// The demo account's flow, waiting at the code step.
        async fn code_step(&self) -> FlowView {
            match self
                .connect(double::DEMO_EMAIL, double::DEMO_PASSWORD)
                .await
            {
                Ok(Progress::Next(view)) => view,
                other => panic!("the code step expected, got {other:?}"),
            }
        }

        fn code(&self) -> String {
            self.sandbox
                .latest_code(double::DEMO_EMAIL)
                .expect("an SMS")
        }

        /// The secrets kept for the demo account a flow connected.
        async fn secrets(&self, progress: Result<Progress, StepError>) -> serde_json::Value {
            let account = connected(progress);
            assert_eq!(account.display_name, double::DEMO_EMAIL);
            assert_eq!(account.account_key, double::DEMO_EMAIL);
            self.stored_secrets(account.id).await
        }
    }

    fn assert_secrets(secrets: &serde_json::Value) {
        for name in ["refresh_token", "access_token", "ccc_token"] {
            assert!(
                secrets[name].as_str().is_some_and(|v| !v.is_empty()),
                "{name} in {secrets}"
            );
        }
        let now = crate::base::clock::Clock::now(&crate::base::clock::SystemClock);
        for name in ["access_token_expires_at", "ccc_token_expires_at"] {
            let at = secrets[name].as_i64().unwrap_or_default();
            assert!(at > now && at <= now + 2 * 3600, "{name} in {secrets}");
        }
        assert_eq!(secrets["vin"], double::DEMO_VIN);
        assert!(!secrets.to_string().contains(double::DEMO_PASSWORD));
    }

    fn form_of(view: &FlowView) -> (&[crate::view::FieldSpec], &str, Option<&str>) {
        let StepView::Form {
            fields,
            submit,
            intro,
            ..
        } = &view.step
        else {
            panic!("a form expected: {view:?}");
        };
        (fields, submit.label(), intro.as_deref())
    }

    #[tokio::test]
    async fn the_first_form_asks_for_email_password_and_vin_and_offers_the_manual_way() {
        let s = setup().await;
        let StepView::Form {
            fields,
            submit,
            actions,
            ..
        } = s.engine.first_view("lynkco").unwrap()
        else {
            panic!("a form");
        };
        let named: Vec<(&str, &str)> = fields
            .iter()
            .map(|f| (f.name.as_str(), f.label.as_str()))
            .collect();
        assert_eq!(
            named,
            [("email", "Email"), ("password", "Password"), ("vin", "VIN")]
        );
        assert_eq!(fields[1].kind, FieldKind::Password);
        assert_eq!(submit, "Connect");
        assert_eq!(
            (
                actions[0].label.as_str(),
                actions[0].name.as_str(),
                actions[0].value.as_str()
            ),
            (MANUAL_LABEL, "action", "manual")
        );
        let secrets = serde_json::json!({"vin": double::DEMO_VIN});
        let prefill = LynkcoProvider.reauth_prefill(double::DEMO_EMAIL, &secrets);
        assert_eq!(prefill["email"], double::DEMO_EMAIL);
        assert_eq!(prefill["vin"], double::DEMO_VIN);
    }

    #[tokio::test]
    async fn missing_fields_a_bad_email_and_a_bad_vin_are_refused_before_anything_is_sent() {
        let s = setup().await;
        // Any request would now fail with cannot_connect.
        s.sandbox.set_fault("all", Fault::Reset);
        let refused = |pairs: &'static [(&'static str, &'static str)]| {
            let s = &s;
            async move { s.start(pairs).await.unwrap_err() }
        };
        let missing = refused(&[
            ("email", "demo@lynkco.test"),
            ("password", "x"),
            ("vin", " "),
        ])
        .await;
        assert_eq!(
            (missing.code, missing.field),
            (ErrorCode::MissingFields, None)
        );
        let email = refused(&[
            ("email", "demo"),
            ("password", "x"),
            ("vin", "LYVXFEDC0KL123456"),
        ])
        .await;
        assert_eq!(
            (email.code, email.field.as_deref()),
            (ErrorCode::InvalidEmail, Some("email"))
        );
        for vin in ["LYVXFEDC0KL12345", "LYVXFEDCOKL123456", "LYVXFEDC0KL12345Q"] {
            let error = s
                .start(&[
                    ("email", "demo@lynkco.test"),
                    ("password", "x"),
                    ("vin", vin),
                ])
                .await
                .unwrap_err();
            assert_eq!(
                (error.code, error.field.as_deref()),
                (ErrorCode::InvalidVin, Some("vin")),
                "{vin}"
            );
        }
        // The manual way needs no password, but the email and the VIN.
        let no_vin = refused(&[("action", "manual"), ("email", "demo@lynkco.test")]).await;
        assert_eq!(no_vin.code, ErrorCode::MissingFields);
        let chosen = s
            .start(&[
                ("action", "manual"),
                ("email", "demo@lynkco.test"),
                ("vin", " lyvxfedc0kl123456 "),
            ])
            .await;
        let Ok(Progress::Next(view)) = chosen else {
            panic!("the manual step expected, got {chosen:?}");
        };
        let link = manual_link(&view, MANUAL_LABEL);
        // The link reaches the double, with a PKCE challenge.
        assert!(
            link.starts_with(&format!("http://{}/", s.sandbox.b2c_addr)),
            "{link}"
        );
        assert!(link.contains("code_challenge_method=S256"));
        let (_, _, intro) = form_of(&view);
        assert!(!intro.unwrap().contains("did not work"));
    }

    #[tokio::test]
    async fn password_then_sms_code_connects_keeping_tokens_and_vin_but_no_password() {
        let s = setup().await;
        let flow = s.code_step().await;
        let (fields, submit, intro) = form_of(&flow);
        assert_eq!(
            (
                fields[0].name.as_str(),
                fields[0].label.as_str(),
                fields[0].kind
            ),
            ("code", "Verification code", FieldKind::Code)
        );
        assert_eq!(submit, "Verify");
        assert!(intro
            .unwrap()
            .contains("sent a verification code by SMS to your phone"));
        assert_eq!(s.sandbox.inbox()[0].channel, "sms");
        let done = s.submit(&flow, &[("code", &s.code())]).await;
        let secrets = s.secrets(done).await;
        assert_secrets(&secrets);

        // The same account again is refused by the engine, after the code.
        let again = s.code_step().await;
        let refused = s.submit(&again, &[("code", &s.code())]).await.unwrap_err();
        assert_eq!(refused.code, ErrorCode::AlreadyConfigured);
    }

    #[tokio::test]
    async fn a_wrong_password_or_an_unknown_email_is_invalid_auth() {
        let s = setup().await;
        let wrong = s.connect(double::DEMO_EMAIL, "not-it").await.unwrap_err();
        assert_eq!(wrong.code, ErrorCode::InvalidAuth);
        let unknown = s
            .connect("nobody@lynkco.test", double::DEMO_PASSWORD)
            .await
            .unwrap_err();
        assert_eq!(unknown.code, ErrorCode::InvalidAuth);
        assert!(s.sandbox.inbox().is_empty(), "no SMS for a wrong password");
    }

    #[tokio::test]
    async fn a_wrong_code_keeps_the_step_and_the_right_one_then_connects() {
        let s = setup().await;
        let flow = s.code_step().await;
        let code = s.code();
        let wrong = if code == "000000" { "111111" } else { "000000" };
        let error = s.submit(&flow, &[("code", wrong)]).await.unwrap_err();
        assert_eq!(
            (error.code, error.field.as_deref()),
            (ErrorCode::InvalidCode, Some("code"))
        );
        let empty = s.submit(&flow, &[("code", " ")]).await.unwrap_err();
        assert_eq!(
            (empty.code, empty.field.as_deref()),
            (ErrorCode::MissingFields, Some("code"))
        );
        let view = s
            .engine
            .flow_view("lynkco", &flow.flow_id, Some(OWNER))
            .await
            .unwrap();
        assert_eq!(view.step, flow.step);
        let done = s.submit(&flow, &[("code", &code)]).await;
        assert_secrets(&s.secrets(done).await);
    }

    #[tokio::test]
    async fn an_expired_code_says_so_and_ends_the_flow() {
        let s = setup().await;
        let flow = s.code_step().await;
        let code = s.code();
        s.sandbox
            .advance_clock(double::CODE_LIFETIME + Duration::from_secs(1));
        let error = s.submit(&flow, &[("code", &code)]).await.unwrap_err();
        assert_eq!(error.code, ErrorCode::CodeExpired);
        let gone = s.submit(&flow, &[("code", &code)]).await.unwrap_err();
        assert_eq!(gone.code, ErrorCode::FlowExpired);
    }

    #[tokio::test]
    async fn the_code_step_survives_a_restart_with_its_cookie_jar() {
        let mut s = setup().await;
        let flow = s.code_step().await;
        s.reopen().await;
        let done = s.submit(&flow, &[("code", &s.code())]).await;
        assert_secrets(&s.secrets(done).await);
    }

    /// Plays the user in a browser: opens the link, signs in, enters the SMS code, and returns
    /// the Redirect URL the last page shows.
    async fn browser_redirect_url(s: &Setup, link: &str) -> String {
        let browser = Browser::new();
        let page = browser.open(link).await;
        let base = format!(
            "http://{}/{}/{}",
            s.sandbox.b2c_addr,
            double::TENANT,
            double::POLICY.to_lowercase()
        );
        let hidden = |page: &str| {
            (
                html_input_value(page, "csrf_token"),
                html_input_value(page, "tx"),
            )
        };
        let (csrf, tx) = hidden(&page);
        let code_page = browser
            .send_form(
                &format!("{base}/browser/signin"),
                &[
                    ("csrf_token", csrf.as_str()),
                    ("tx", tx.as_str()),
                    ("email", double::DEMO_EMAIL),
                    ("password", double::DEMO_PASSWORD),
                ],
            )
            .await;
        assert!(code_page.contains("Verification code"), "{code_page}");
        let (csrf, tx) = hidden(&code_page);
        let last = browser
            .send_form(
                &format!("{base}/browser/verify"),
                &[
                    ("csrf_token", csrf.as_str()),
                    ("tx", tx.as_str()),
                    ("verificationCode", s.code().as_str()),
                ],
            )
            .await;
        html_input_value(&last, "redirect_url")
    }

    #[tokio::test]
    async fn the_manual_way_connects_with_a_pasted_redirect_after_each_bad_paste_kept_the_step() {
        let s = setup().await;
        let chosen = s
            .start(&[
                ("action", "manual"),
                ("email", double::DEMO_EMAIL),
                ("vin", double::DEMO_VIN),
            ])
            .await;
        let Ok(Progress::Next(flow)) = chosen else {
            panic!("the manual step expected, got {chosen:?}");
        };
        let redirect = browser_redirect_url(&s, &manual_link(&flow, MANUAL_LABEL)).await;
        assert!(
            redirect.starts_with(&format!("{}?code=", double::REDIRECT_URI)),
            "{redirect}"
        );
        let cut = format!("{}…", &redirect[..redirect.len() - 10]);
        let other = redirect.replace(
            "msauth://prod.lynkco.app.crisp.prod",
            "https://evil.example",
        );
        let no_code = format!("{}?state=x", double::REDIRECT_URI);
        let mut details = Vec::new();
        for bad in [
            cut.as_str(),
            other.as_str(),
            no_code.as_str(),
            "just some words",
        ] {
            let error = s.submit(&flow, &[("redirect_url", bad)]).await.unwrap_err();
            assert_eq!(
                (error.code, error.field.as_deref()),
                (ErrorCode::InvalidUrl, Some("redirect_url")),
                "{bad}"
            );
            details.push(error.detail.unwrap());
        }
        assert!(details[0].contains("cut off"), "{details:?}");
        assert!(details[1].contains("evil.example"), "{details:?}");
        assert!(details[2].contains("no sign-in code"), "{details:?}");
        assert!(
            details[3].contains("msauth://prod.lynkco.app.crisp.prod/"),
            "{details:?}"
        );

        let done = s.submit(&flow, &[("redirect_url", &redirect)]).await;
        assert_secrets(&s.secrets(done).await);
    }

    #[tokio::test]
    async fn a_bare_code_from_the_manual_way_connects_too() {
        let s = setup().await;
        let Ok(Progress::Next(flow)) = s
            .start(&[
                ("action", "manual"),
                ("email", double::DEMO_EMAIL),
                ("vin", double::DEMO_VIN),
            ])
            .await
        else {
            panic!("the manual step expected");
        };
        let redirect = browser_redirect_url(&s, &manual_link(&flow, MANUAL_LABEL)).await;
        let code = url::Url::parse(&redirect)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "code")
            .unwrap()
            .1
            .into_owned();
        let done = s.submit(&flow, &[("redirect_url", &code)]).await;
        assert_secrets(&s.secrets(done).await);
    }

    #[tokio::test]
    async fn connects_through_b2c_routing_hops_on_authorize_and_confirmed() {
        let s = setup().await;
        let flow = s.code_step().await;
        assert_eq!(s.sandbox.routing_hops("oauth2/v2.0/authorize"), 1);
        assert_eq!(
            s.sandbox
                .routing_hops("api/CombinedSigninAndSignup/confirmed"),
            1
        );
        let done = s.submit(&flow, &[("code", &s.code())]).await;
        assert_eq!(s.sandbox.routing_hops("api/SelfAsserted/confirmed"), 1);
        assert_secrets(&s.secrets(done).await);
    }

    #[tokio::test]
    async fn hostile_answers_fail_in_words_within_the_step_deadline() {
        let s = setup().await;
        let deadline = Duration::from_secs(3);
        let before = rss_mib();
        for step in ["authorize", "confirmed", "redirect", "token"] {
            for (fault, code) in HOSTILE_FAULTS {
                s.sandbox.clear_faults();
                let started = std::time::Instant::now();
                let answer = if matches!(step, "authorize" | "confirmed") {
                    s.sandbox.set_fault(step, fault);
                    s.connect(double::DEMO_EMAIL, double::DEMO_PASSWORD).await
                } else {
                    let flow = s.code_step().await;
                    s.sandbox.set_fault(step, fault);
                    s.submit(&flow, &[("code", &s.code())]).await
                };
                let error = answer.unwrap_err();
                assert_eq!(error.code, code, "{fault:?} at {step}");
                assert!(!error.code.message().contains("our side"));
                assert!(started.elapsed() < deadline, "{fault:?} at {step}");
                let grown = rss_mib().saturating_sub(before);
                assert!(grown < 128, "{grown} MiB more after {fault:?} at {step}");
            }
        }
        // And the next sign-in goes on as ever.
        s.sandbox.clear_faults();
        let flow = s.code_step().await;
        assert_secrets(
            &s.secrets(s.submit(&flow, &[("code", &s.code())]).await)
                .await,
        );
    }

    #[tokio::test]
    async fn faults_end_the_flow_with_their_error_or_move_it_to_the_manual_step() {
        let s = setup().await;
        let first_steps = ["authorize", "self_asserted", "confirmed"];
        let code_steps = ["verify", "redirect", "token", "validate_session"];
        for step in first_steps.into_iter().chain(code_steps) {
            for (fault, expected) in B2C_FAULTS {
                s.sandbox.clear_faults();
                let answer = if first_steps.contains(&step) {
                    s.sandbox.set_fault(step, fault);
                    s.connect(double::DEMO_EMAIL, double::DEMO_PASSWORD).await
                } else {
                    let flow = s.code_step().await;
                    s.sandbox.set_fault(step, fault);
                    s.submit(&flow, &[("code", &s.code())]).await
                };
                let at = format!("{fault:?} at {step}");
                let expected = if matches!(step, "token" | "validate_session") {
                    past_the_pages(expected)
                } else {
                    expected
                };
                // B2C's pages out of shape: the user is offered the manual way instead, and
                // told why at once.
                if let Some(view) = answer_to_fault(answer, expected, &at) {
                    manual_link(&view, MANUAL_LABEL);
                    let StepView::Form { alert, .. } = &view.step else {
                        panic!("{at}: a form expected");
                    };
                    assert!(
                        alert
                            .as_deref()
                            .unwrap()
                            .starts_with("Automatic sign-in did not work"),
                        "{at}"
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn a_health_check_rotates_the_tokens_and_is_rejected_once_revoked() {
        let s = setup().await;
        let flow = s.code_step().await;
        let kept = s
            .secrets(s.submit(&flow, &[("code", &s.code())]).await)
            .await;
        let now = crate::base::clock::Clock::now(&crate::base::clock::SystemClock);

        let Health::Accepted(Some(renewed)) =
            LynkcoProvider.check(&mut s.session(), now, &kept).await
        else {
            panic!("renewed secrets expected");
        };
        assert_secrets(&renewed);
        assert_ne!(renewed["refresh_token"], kept["refresh_token"]);
        assert_eq!(s.sandbox.refreshes(), 1);
        // The old refresh token was spent by the rotation.
        assert_eq!(
            LynkcoProvider.check(&mut s.session(), now, &kept).await,
            Health::Rejected
        );

        for (fault, code) in [
            (Fault::Unavailable503, ErrorCode::ServiceUnavailable),
            (Fault::Reset, ErrorCode::CannotConnect),
            (Fault::Garbage, ErrorCode::UpstreamOutOfShape),
        ] {
            s.sandbox.set_fault("refresh", fault);
            assert_eq!(
                LynkcoProvider.check(&mut s.session(), now, &renewed).await,
                Health::Unreachable(code),
                "{fault:?}"
            );
        }
        s.sandbox.clear_faults();

        s.sandbox.revoke(double::DEMO_EMAIL);
        assert_eq!(
            LynkcoProvider.check(&mut s.session(), now, &renewed).await,
            Health::Rejected
        );
    }

    #[test]
    fn the_waiting_state_holds_no_password() {
        let state = LynkcoState::Code {
            email: "demo@lynkco.test".into(),
            vin: "LYVXFEDC0KL123456".into(),
            verifier: "v".into(),
            csrf: "c".into(),
            trans: "t".into(),
            page_view_id: "p".into(),
            first_view_id: "f".into(),
        };
        let json = serde_json::to_value(&state).unwrap();
        assert_eq!(json["step"], "code");
        let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        assert!(!keys.iter().any(|k| k.contains("password")), "{keys:?}");
    }
}
