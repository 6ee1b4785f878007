//! `librus`: Librus Synergia (a Polish school e-register), signed in the way its current
//! clients do (shared/protocols.md §3 and its corrections):
//!
//! 1. maintenance check: `GET https://api.librus.pl` (503 → `service_unavailable`);
//! 2. entry at Synergia's `loguj/portalRodzina`, which redirects to the one OAuth authorization
//!    (never a second init: that would start a new OAuth session upstream);
//! 3. the authorization page (api.librus.pl session cookies);
//! 4. the login POST (`action=login`, `login`, `pass`), answered with JSON `goTo` or `errors`;
//! 5. `goTo` followed by hand, through the `2FA` interstitial and `PerformLogin`, to Synergia
//!    with `code` (Synergia sets `DZIENNIKSID`, `SDZIENNIKSID`, `oauth_token`);
//! 6. token info (`UserIdentifier`), then 7. activation (`UserInfo/{id}`).
//!
//! Success needs every step; the Synergia cookies are what is kept. One form, no second factor:
//! the whole sequence runs in the first step and ends within [`WHOLE_LOGIN`].

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::api::{self, ApiBase, ProviderApi};
use super::fixed_url;
use super::{required, Health, Input, NewAccount, Provider, Step, StepContext, StepError};
use crate::flows::upstream::{
    Followed, HttpSession, RedirectPolicy, UpstreamRequest, UpstreamResponse,
};
use crate::view::{FieldKind, FieldSpec, StepView};
use crate::ErrorCode;

const API: &str = "https://api.librus.pl";
const SYNERGIA: &str = "https://synergia.librus.pl";
/// Librus' own hosts: redirects are followed to these only.
const HOSTS: RedirectPolicy = RedirectPolicy::new(&["api.librus.pl", "synergia.librus.pl"]);
/// The whole login must finish within this (the source's 30-second promise).
pub const WHOLE_LOGIN: Duration = Duration::from_secs(30);
/// The cookies that make a Synergia session.
pub const SESSION_COOKIES: [&str; 3] = ["DZIENNIKSID", "SDZIENNIKSID", "oauth_token"];

/// Synergia's JSON API (grades, timetables, `Me`), reached with the session cookies.
const GATEWAY: ProviderApi = ProviderApi {
    bases: &[ApiBase {
        origin: SYNERGIA,
        path_prefix: "/gateway/api/2.0/",
    }],
    extra_headers: &[],
};

/// Librus' login answer.
#[derive(Deserialize)]
struct LoginAnswer {
    status: String,
    #[serde(rename = "goTo")]
    go_to: Option<String>,
    #[serde(default)]
    errors: Vec<LoginError>,
    message: Option<String>,
}

#[derive(Deserialize)]
struct LoginError {
    message: Option<String>,
}

/// The maintenance answer: `{"Message":[{"description":…}]}` (or an empty list).
#[derive(Deserialize)]
struct Maintenance {
    #[serde(rename = "Message", default)]
    message: Vec<MaintenanceMessage>,
}

#[derive(Deserialize)]
struct MaintenanceMessage {
    description: Option<String>,
}

#[derive(Deserialize)]
struct TokenInfo {
    #[serde(rename = "UserIdentifier")]
    user_identifier: serde_json::Value,
}

pub struct LibrusProvider;

fn expect_status(response: &UpstreamResponse, wanted: u16, what: &str) -> Result<(), StepError> {
    if response.status == wanted {
        return Ok(());
    }
    if response.is_redirect() {
        // A redirect where this step follows none: not followed, wherever it points.
        tracing::warn!(
            step = what,
            "Librus redirected where no redirect is followed"
        );
        return Err(ErrorCode::BadRedirect.into());
    }
    if response.status == 503 {
        return Err(ErrorCode::ServiceUnavailable.into());
    }
    tracing::warn!(
        status = response.status,
        step = what,
        "Librus answered out of shape"
    );
    Err(ErrorCode::UpstreamOutOfShape.into())
}

async fn maintenance_check(http: &mut HttpSession) -> Result<(), StepError> {
    let answer = http.send(UpstreamRequest::get(fixed_url(API))).await?;
    if answer.status != 503 {
        return Ok(());
    }
    let mut error = StepError::new(ErrorCode::ServiceUnavailable);
    if let Ok(maintenance) = serde_json::from_slice::<Maintenance>(&answer.body) {
        if let Some(text) = maintenance.message.into_iter().find_map(|m| m.description) {
            error = error.detail(text);
        }
    }
    Err(error)
}

async fn log_in(
    http: &mut HttpSession,
    login: &str,
    password: &str,
) -> Result<NewAccount, StepError> {
    maintenance_check(http).await?;

    // Synergia makes the OAuth `state` and sends us to the one authorization.
    let entry = http
        .send(
            UpstreamRequest::get(fixed_url(&format!("{SYNERGIA}/loguj/portalRodzina")))
                .header(reqwest::header::REFERER, "https://portal.librus.pl/"),
        )
        .await?;
    let authorization = match entry.location() {
        Some(next) if entry.is_redirect() && next.origin() == fixed_url(API).origin() => next,
        _ => {
            expect_status(&entry, 302, "portalRodzina")?;
            return Err(ErrorCode::UpstreamOutOfShape.into());
        }
    };
    // Redirects on Librus' own hosts are followed here, as any real client does.
    let page = match http
        .follow(UpstreamRequest::get(authorization), &HOSTS, |_| false)
        .await?
    {
        Followed::Answer(page) => page,
        Followed::Stopped(_) => return Err(ErrorCode::BadRedirect.into()),
    };
    expect_status(&page, 200, "authorization")?;

    let answer = http
        .send(
            UpstreamRequest::post(fixed_url(&format!(
                "{API}/OAuth/Authorization?client_id=46"
            )))
            .header(
                reqwest::header::HeaderName::from_static("x-requested-with"),
                "XMLHttpRequest",
            )
            .form(&[("action", "login"), ("login", login), ("pass", password)]),
        )
        .await?;
    expect_status(&answer, 200, "login")?;
    let answer: LoginAnswer = answer.json()?;
    if answer.status != "ok" {
        let message = answer
            .errors
            .into_iter()
            .find_map(|e| e.message)
            .or(answer.message)
            .unwrap_or_default();
        let code = if message.to_lowercase().contains("captcha") {
            ErrorCode::CaptchaRequired
        } else {
            ErrorCode::InvalidAuth
        };
        let error = StepError::new(code);
        return Err(if message.is_empty() {
            error
        } else {
            error.detail(message)
        });
    }
    let go_to = answer.go_to.ok_or_else(|| {
        tracing::warn!("Librus accepted the login without a goTo");
        StepError::new(ErrorCode::UpstreamOutOfShape)
    })?;
    let next = fixed_url(API)
        .join(&go_to)
        .map_err(|_| ErrorCode::UpstreamOutOfShape)?;
    if next.origin() != fixed_url(API).origin() {
        tracing::warn!("Librus' goTo left api.librus.pl");
        return Err(ErrorCode::UpstreamOutOfShape.into());
    }

    // The interstitial, PerformLogin, then Synergia with the code: it sets the session cookies.
    match http
        .follow(UpstreamRequest::get(next), &HOSTS, |_| false)
        .await?
    {
        Followed::Answer(end) if end.status < 400 => {}
        Followed::Answer(end) => {
            expect_status(&end, 200, "code exchange")?;
        }
        Followed::Stopped(_) => return Err(ErrorCode::UpstreamOutOfShape.into()),
    }
    let synergia = fixed_url(SYNERGIA);
    if http.cookie(&synergia, "oauth_token").is_none() {
        tracing::warn!("Synergia set no oauth_token");
        return Err(ErrorCode::TokenError.into());
    }

    let info = http
        .send(UpstreamRequest::get(fixed_url(&format!(
            "{SYNERGIA}/gateway/api/2.0/Auth/TokenInfo"
        ))))
        .await?;
    if matches!(info.status, 401 | 403) {
        return Err(ErrorCode::TokenError.into());
    }
    expect_status(&info, 200, "token info")?;
    let info: TokenInfo = info.json()?;
    let identifier = match info.user_identifier {
        serde_json::Value::String(s) => s,
        serde_json::Value::Number(n) => n.to_string(),
        _ => return Err(ErrorCode::UpstreamOutOfShape.into()),
    };
    let activate = http
        .send(UpstreamRequest::get(fixed_url(&format!(
            "{SYNERGIA}/gateway/api/2.0/Auth/UserInfo/{identifier}"
        ))))
        .await?;
    expect_status(&activate, 200, "activation")?;

    let mut secrets = serde_json::Map::new();
    for name in SESSION_COOKIES {
        let value = http.cookie(&synergia, name).ok_or(ErrorCode::TokenError)?;
        secrets.insert(name.to_owned(), value.into());
    }
    secrets.insert("user_identifier".into(), identifier.into());
    Ok(NewAccount {
        account_id: login.to_owned(),
        display_name: login.to_owned(),
        secrets: serde_json::Value::Object(secrets),
    })
}

#[async_trait]
impl Provider for LibrusProvider {
    /// Librus has one form: nothing waits between the user's steps.
    type State = ();

    fn name(&self) -> &'static str {
        "librus"
    }

    fn title(&self) -> &'static str {
        "Librus"
    }

    fn first_view(&self) -> StepView {
        StepView::form(
            vec![
                FieldSpec::new("login", "Login", FieldKind::Text).autocomplete("username"),
                FieldSpec::new("password", "Password", FieldKind::Password),
            ],
            "Connect",
        )
    }

    async fn start(&self, cx: &mut StepContext<'_>, input: &Input) -> Step<()> {
        let (login, password) = match (required(input, "login"), required(input, "password")) {
            (Ok(login), Ok(password)) => (login.trim(), password),
            _ => return Step::abort(ErrorCode::MissingFields),
        };
        match tokio::time::timeout(WHOLE_LOGIN, log_in(&mut *cx.http, login, password)).await {
            Ok(Ok(account)) => Step::Connected(account),
            Ok(Err(error)) => Step::Abort(error),
            Err(_) => Step::abort(ErrorCode::Timeout),
        }
    }

    async fn submit(&self, _cx: &mut StepContext<'_>, _state: (), _input: &Input) -> Step<()> {
        // No step waits for the user; a stored Librus flow cannot exist.
        Step::abort(ErrorCode::FlowExpired)
    }

    /// An authenticated call (`gateway/api/2.0/Me`) with the kept Synergia cookies; when only
    /// the short-lived `oauth_token` has run out, Synergia's `refreshToken` renews it.
    async fn check(
        &self,
        http: &mut HttpSession,
        _now: i64,
        secrets: &serde_json::Value,
    ) -> Health {
        super::health_within(WHOLE_LOGIN, check_session(http, secrets)).await
    }

    /// Synergia's `refreshToken` with the session cookies: a new `oauth_token`.
    async fn renew(
        &self,
        http: &mut HttpSession,
        _now: i64,
        secrets: &serde_json::Value,
    ) -> Health {
        let work = async {
            if let Err(health) = session_cookies(http, secrets) {
                return health;
            }
            refresh_oauth_token(http, secrets).await
        };
        super::health_within(WHOLE_LOGIN, work).await
    }

    /// Synergia names no expiry: the upkeep renews at least daily.
    fn expires_at(&self, _secrets: &serde_json::Value) -> Option<i64> {
        None
    }

    /// The Synergia session cookies a client sends to `gateway/api/2.0/*`.
    fn app_credentials(&self, secrets: &serde_json::Value) -> serde_json::Value {
        super::pick(
            secrets,
            &[
                SESSION_COOKIES[0],
                SESSION_COOKIES[1],
                SESSION_COOKIES[2],
                "user_identifier",
            ],
        )
    }

    fn api(&self) -> Option<&'static ProviderApi> {
        Some(&GATEWAY)
    }

    /// Synergia's gateway takes the session's three cookies (no token header).
    fn authorize_api_request(
        &self,
        request: UpstreamRequest,
        secrets: &serde_json::Value,
        _now: i64,
    ) -> Result<UpstreamRequest, ErrorCode> {
        let cookie = |name: &'static str| (name, secrets.get(name).and_then(|v| v.as_str()));
        api::cookies(request, &SESSION_COOKIES.map(cookie))
    }
}

/// Puts the kept Synergia cookies in the jar (`Err(Rejected)` when one is missing).
fn session_cookies(http: &mut HttpSession, secrets: &serde_json::Value) -> Result<(), Health> {
    let synergia = fixed_url(SYNERGIA);
    for name in SESSION_COOKIES {
        let Some(value) = secrets.get(name).and_then(serde_json::Value::as_str) else {
            tracing::warn!(
                cookie = name,
                "a Librus account is kept without its session cookie"
            );
            return Err(Health::Rejected);
        };
        http.set_cookie(&synergia, name, value);
    }
    Ok(())
}

/// What an answer of Synergia's gateway says about the session, if anything.
fn session_answer(response: &UpstreamResponse) -> Option<bool> {
    match response.status {
        200 => Some(true),
        401 | 403 => Some(false),
        _ => None,
    }
}

fn unreachable_from(response: &UpstreamResponse) -> Health {
    Health::Unreachable(if response.status == 503 {
        ErrorCode::ServiceUnavailable
    } else {
        ErrorCode::UpstreamOutOfShape
    })
}

async fn check_session(http: &mut HttpSession, secrets: &serde_json::Value) -> Health {
    if let Err(health) = session_cookies(http, secrets) {
        return health;
    }
    let me = fixed_url(&format!("{SYNERGIA}/gateway/api/2.0/Me"));
    let answer = match http.send(UpstreamRequest::get(me)).await {
        Ok(answer) => answer,
        Err(code) => return Health::Unreachable(code),
    };
    match session_answer(&answer) {
        // A 200 only counts when it is the gateway's answer (a proxy page is not).
        Some(true) => {
            return match serde_json::from_slice::<serde_json::Value>(&answer.body) {
                Ok(body) if body.get("Me").is_some() => Health::Accepted(None),
                _ => Health::Unreachable(ErrorCode::UpstreamOutOfShape),
            }
        }
        Some(false) => {}
        None => return unreachable_from(&answer),
    }
    refresh_oauth_token(http, secrets).await
}

/// `refreshToken` (the session cookies are in the jar): the kept secrets with the new
/// `oauth_token`.
async fn refresh_oauth_token(http: &mut HttpSession, secrets: &serde_json::Value) -> Health {
    let refresh = fixed_url(&format!("{SYNERGIA}/refreshToken"));
    let answer = match http.send(UpstreamRequest::get(refresh)).await {
        Ok(answer) => answer,
        Err(code) => return Health::Unreachable(code),
    };
    match session_answer(&answer) {
        Some(true) => {}
        Some(false) => return Health::Rejected,
        None => return unreachable_from(&answer),
    }
    let Some(token) = http.cookie(&fixed_url(SYNERGIA), "oauth_token") else {
        return Health::Unreachable(ErrorCode::UpstreamOutOfShape);
    };
    let mut renewed = secrets.clone();
    renewed["oauth_token"] = token.into();
    Health::Accepted(Some(renewed))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sandbox::faults::Fault;
    use sandbox::librus::{self as double, LibrusSandbox};

    use crate::accounts::store::{AccountStatus, CheckOutcome};
    use crate::flows::runner::{Completion, Progress};
    use crate::providers::{Health, Provider};
    use crate::providers::{Purpose, StepError};
    use crate::test_support::{connected, ProviderSetup};
    use crate::ErrorCode;

    type Setup = ProviderSetup<LibrusSandbox>;

    async fn setup() -> Setup {
        Setup::new("librus", LibrusSandbox::spawn().await).await
    }

    impl Setup {
        async fn connect(&self, login: &str, password: &str) -> Result<Progress, StepError> {
            self.run(
                Purpose::Connect {
                    user_id: self.user_id,
                },
                login,
                password,
            )
            .await
        }

        async fn run(
            &self,
            purpose: Purpose,
            login: &str,
            password: &str,
        ) -> Result<Progress, StepError> {
            self.start_for(purpose, &[("login", login), ("password", password)])
                .await
        }
    }

    #[tokio::test]
    async fn the_demo_parent_connects_and_the_synergia_cookies_are_kept() {
        let s = setup().await;
        let account = connected(s.connect(double::DEMO_LOGIN, double::DEMO_PASSWORD).await);
        assert_eq!(account.display_name, double::DEMO_LOGIN);
        let secrets = s.stored_secrets(account.id).await;
        for cookie in super::SESSION_COOKIES {
            assert!(
                secrets[cookie].as_str().is_some_and(|v| !v.is_empty()),
                "{cookie}"
            );
        }
        // The same account again is refused.
        let again = s.connect(double::DEMO_LOGIN, double::DEMO_PASSWORD).await;
        assert_eq!(again.unwrap_err().code, ErrorCode::AlreadyConfigured);
    }

    #[tokio::test]
    async fn a_wrong_password_shows_librus_own_message() {
        let s = setup().await;
        let error = s
            .connect(double::DEMO_LOGIN, "not-the-password")
            .await
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidAuth);
        assert_eq!(
            error.detail.as_deref(),
            Some(double::BAD_CREDENTIALS_MESSAGE)
        );
    }

    #[tokio::test]
    async fn a_captcha_demand_is_its_own_error() {
        let s = setup().await;
        let error = s
            .connect(double::CAPTCHA_LOGIN, double::DEMO_PASSWORD)
            .await
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::CaptchaRequired);
    }

    #[tokio::test]
    async fn maintenance_is_checked_first_and_says_why() {
        let s = setup().await;
        s.sandbox.set_maintenance(true);
        let error = s
            .connect(double::DEMO_LOGIN, double::DEMO_PASSWORD)
            .await
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::ServiceUnavailable);
        assert_eq!(error.detail.as_deref(), Some(double::MAINTENANCE_MESSAGE));
    }

    #[tokio::test]
    async fn missing_fields_are_refused_before_any_request() {
        let s = setup().await;
        // Every step would fail if it were reached.
        for step in double::STEPS {
            s.sandbox.set_fault(step, Fault::Reset);
        }
        let error = s.connect(double::DEMO_LOGIN, "  ").await.unwrap_err();
        assert_eq!(error.code, ErrorCode::MissingFields);
    }

    #[tokio::test]
    async fn every_fault_at_every_step_ends_the_login_with_its_error() {
        let s = setup().await;
        let faults = [
            (Fault::Stall, ErrorCode::Timeout),
            (Fault::Unavailable503, ErrorCode::ServiceUnavailable),
            (Fault::Reset, ErrorCode::CannotConnect),
        ];
        for step in [
            "root",
            "entry",
            "authorize",
            "login",
            "2fa",
            "perform_login",
            "callback",
            "token_info",
            "user_info",
        ] {
            for (fault, expected) in faults {
                s.sandbox.clear_faults();
                s.sandbox.set_fault(step, fault);
                let answer = s.connect(double::DEMO_LOGIN, double::DEMO_PASSWORD).await;
                // The maintenance check reads a 503 at the root as maintenance too.
                assert_eq!(
                    answer.as_ref().err().map(|e| e.code),
                    Some(expected),
                    "{fault:?} at {step}: {answer:?}"
                );
            }
            s.sandbox.clear_faults();
            s.sandbox.set_fault(step, Fault::Garbage);
            let error = s.connect(double::DEMO_LOGIN, double::DEMO_PASSWORD).await;
            // Where only the status counts (the maintenance check, the activation), a 200 with
            // junk is no failure: the login goes on.
            if matches!(step, "root" | "user_info") {
                assert!(error.is_ok(), "garbage at {step}: {error:?}");
                let accounts = s.engine.accounts().list(s.user_id).await.unwrap();
                s.engine
                    .accounts()
                    .remove(s.user_id, accounts[0].id)
                    .await
                    .unwrap();
            } else {
                let code = error.map(|_| ()).unwrap_err().code;
                assert!(
                    matches!(code, ErrorCode::UpstreamOutOfShape | ErrorCode::TokenError),
                    "garbage at {step}: {code}"
                );
            }
        }
    }

    #[tokio::test]
    async fn the_health_check_renews_a_stale_token_and_a_revoked_session_needs_sign_in_again() {
        let s = setup().await;
        let account = connected(s.connect(double::DEMO_LOGIN, double::DEMO_PASSWORD).await);
        assert_eq!(
            s.check().await,
            vec![(account.id, CheckOutcome::Accepted(None))]
        );

        // Only the short-lived oauth_token ran out: refreshToken renews it, and it is kept.
        s.sandbox
            .advance_clock(double::TOKEN_LIFETIME + Duration::from_secs(1));
        let before = s.stored_secrets(account.id).await;
        let renewed = s.check().await;
        assert!(
            matches!(&renewed[..], [(_, CheckOutcome::Accepted(Some(_)))]),
            "{renewed:?}"
        );
        let after = s.stored_secrets(account.id).await;
        assert_ne!(before["oauth_token"], after["oauth_token"]);
        assert_eq!(before["DZIENNIKSID"], after["DZIENNIKSID"]);
        assert_eq!(
            s.check().await,
            vec![(account.id, CheckOutcome::Accepted(None))]
        );

        // Librus ends the session: the account needs signing in again.
        s.sandbox.revoke(double::DEMO_LOGIN);
        assert_eq!(s.check().await, vec![(account.id, CheckOutcome::Rejected)]);
        let marked = s.stored(account.id).await;
        assert_eq!(marked.status, AccountStatus::NeedsSignIn);

        let reauth = Purpose::Reauth {
            user_id: s.user_id,
            account_id: account.id,
        };
        let other = s
            .run(
                reauth,
                double::DEMO_GRANT_LOGIN,
                double::DEMO_GRANT_PASSWORD,
            )
            .await;
        assert_eq!(other.unwrap_err().code, ErrorCode::WrongAccount);
        let again = s
            .run(reauth, double::DEMO_LOGIN, double::DEMO_PASSWORD)
            .await;
        let Ok(Progress::Done(Completion::Reauthenticated(again))) = again else {
            panic!("reauthenticated expected: {again:?}");
        };
        assert_eq!(
            (again.id, again.connected_at),
            (account.id, account.connected_at)
        );
        assert_eq!(again.status, AccountStatus::Active);
        assert_eq!(
            s.check().await,
            vec![(account.id, CheckOutcome::Accepted(None))]
        );
    }

    #[tokio::test]
    async fn an_unreachable_librus_degrades_the_account_without_marking_it() {
        let s = setup().await;
        let account = connected(s.connect(double::DEMO_LOGIN, double::DEMO_PASSWORD).await);
        for (fault, code) in [
            (Fault::Unavailable503, ErrorCode::ServiceUnavailable),
            (Fault::Reset, ErrorCode::CannotConnect),
            (Fault::Garbage, ErrorCode::UpstreamOutOfShape),
        ] {
            s.sandbox.set_fault("me", fault);
            assert_eq!(
                s.check().await,
                vec![(account.id, CheckOutcome::Unreachable(code))]
            );
            let stored = s.stored(account.id).await;
            assert_eq!(
                (stored.status, stored.last_error),
                (AccountStatus::Degraded, Some(code))
            );
        }
        s.sandbox.clear_faults();
        assert_eq!(
            s.check().await,
            vec![(account.id, CheckOutcome::Accepted(None))]
        );
        let stored = s.stored(account.id).await;
        assert_eq!(stored.status, AccountStatus::Active);
    }

    #[tokio::test]
    async fn renewal_gets_a_new_oauth_token_until_the_session_is_revoked() {
        let s = setup().await;
        let account = connected(
            s.start(&[
                ("login", double::DEMO_LOGIN),
                ("password", double::DEMO_PASSWORD),
            ])
            .await,
        );
        let kept = s.stored_secrets(account.id).await;
        let provider = super::LibrusProvider;
        let health = Provider::renew(&provider, &mut s.session(), 0, &kept).await;
        let Health::Accepted(Some(renewed)) = health else {
            panic!("renewed secrets expected: {health:?}");
        };
        assert_ne!(renewed["oauth_token"], kept["oauth_token"]);
        assert_eq!(renewed["DZIENNIKSID"], kept["DZIENNIKSID"]);
        let credentials = Provider::app_credentials(&provider, &renewed);
        for cookie in super::SESSION_COOKIES {
            assert!(credentials[cookie].is_string(), "{cookie}");
        }
        s.sandbox.revoke(double::DEMO_LOGIN);
        let revoked = Provider::renew(&provider, &mut s.session(), 0, &renewed).await;
        assert_eq!(revoked, Health::Rejected);
    }
}
