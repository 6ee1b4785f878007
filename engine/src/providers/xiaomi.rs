//! `xiaomi`: Xiaomi Mi Cloud (account.xiaomi.com), with 2FA by code or by a pasted
//! authenticated URL (shared/protocols.md §4 and its corrections).
//!
//! Password login: `serviceLogin` (read `_sign`) → `serviceLoginAuth2` (`hash` = upper-case MD5
//! hex of the password) → the STS `location`, which sets `serviceToken`.
//!
//! When Xiaomi wants a second factor (`notificationUrl`, no `ssecurity`), the flow waits at step
//! [`STEP_TWO_FACTOR`], which offers both ways at once:
//! - "Send code": the server calls `identity/list` (cookie `identity_session`; `flag` 4 phone,
//!   8 email) and `sendPhoneTicket` / `sendEmailTicket`, then waits at step [`STEP_CODE`] for
//!   the code, which `verifyPhone` / `verifyEmail` checks; its `location` is walked by hand
//!   (`identity/result/check` → `serviceLoginAuth2/end`, whose `extension-pragma` header
//!   carries `ssecurity`, perhaps after a "Tips" page) to the STS URL;
//! - "Open Xiaomi verification page" (the `notificationUrl`, in a new tab): the user finishes
//!   there and pastes back the `https://sts.api.io.mi.com/sts?…` URL it ends on.
//!
//! # What each step accepts
//!
//! | step | view | input |
//! |------|------|-------|
//! | first ([`Provider::first_view`]) | Form: "Xiaomi account" (`username`), "Password" (`password`); button "Connect" | `username`, `password` |
//! | [`STEP_TWO_FACTOR`] (`two_factor`) | Form: intro, field "Authenticated URL" (`authenticated_url`, kind Url); button "Connect with URL"; link "Open Xiaomi verification page" | either `action=send_code` (a second button labelled [`SEND_CODE_LABEL`] "Send code", which the page renders next to the form; `authenticated_url` is then ignored), or `authenticated_url=<the pasted URL>` (the main button; `action` absent or [`ACTION_CONNECT_URL`]) |
//! | [`STEP_CODE`] (`code`) | Form: intro "We sent a code to your phone/email …", field "Verification code" (`code`, kind Code); button "Verify" | `code=<digits>`; or `action=send_code` to have a new code sent (an optional second button [`RESEND_CODE_LABEL`] "Send a new code") |
//!
//! Errors that keep a step open (`Step::Retry`, pointing at the field): a bad paste
//! (`invalid_url` on `authenticated_url`, each kind with its own detail), an empty field
//! (`missing_fields`), a wrong or expired code (`invalid_code` on `code`). Everything else ends
//! the flow.
//!
//! # What is kept
//!
//! The account's secrets are JSON with `serviceToken`, `userId` (also the account id) and, when
//! known, `ssecurity`, `passToken` and `cUserId`. With a pasted URL, `ssecurity` comes only from
//! the STS answer's `extension-pragma` header (absent when the answer has none: Xiaomi gives
//! `ssecurity` to whoever finished the login, here the browser), and there is no `passToken`
//! (the browser holds that session). The password is never kept, not even in the flow.

use async_trait::async_trait;
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use super::fixed_url;
use super::{required, Health, Input, NewAccount, Provider, Step, StepContext, StepError};
use crate::flows::upstream::{
    Followed, HttpSession, RedirectPolicy, UpstreamRequest, UpstreamResponse,
};
use crate::view::{ActionSpec, FieldKind, FieldSpec, LinkSpec, StepView, Submit};
use crate::ErrorCode;

const ACCOUNT: &str = "https://account.xiaomi.com";
const STS: &str = "https://sts.api.io.mi.com";
/// Xiaomi's own hosts: redirects (and a confirm-phone page's `skipUrl`) are followed to these
/// only.
const HOSTS: RedirectPolicy = RedirectPolicy::new(&["account.xiaomi.com", "sts.api.io.mi.com"]);
/// The login form's `callback`.
const STS_CALLBACK: &str = "https://sts.api.io.mi.com/sts";
/// The prefix of every account.xiaomi.com JSON answer.
const JSON_PREFIX: &str = "&&&START&&&";
/// The `sdkVersion` cookie real clients send.
const SDK_VERSION: &str = "accountsdk-18.8.15";
/// The parameters an STS URL must carry.
const STS_PARAMS: [&str; 5] = ["d", "ticket", "auth", "nonce", "_ssign"];
use super::bounded;
pub use super::{ACTION_FIELD, WHOLE_STEP};

/// The step that offers "Send code" and the pasted URL.
pub const STEP_TWO_FACTOR: &str = "two_factor";
/// The step that waits for the code Xiaomi sent.
pub const STEP_CODE: &str = "code";
/// `action` of the "Send code" button (step `two_factor`) and of "Send a new code" (step `code`).
pub const ACTION_SEND_CODE: &str = "send_code";
/// `action` of the "Connect with URL" button (optional: it is the default).
pub const ACTION_CONNECT_URL: &str = "connect_url";
/// The label of the second button of step `two_factor`.
pub const SEND_CODE_LABEL: &str = "Send code";
/// The label of the optional second button of step `code`.
pub const RESEND_CODE_LABEL: &str = "Send a new code";
/// The field of the pasted URL.
pub const URL_FIELD: &str = "authenticated_url";
/// The field of the verification code.
pub const CODE_FIELD: &str = "code";

fn account_origin() -> url::Origin {
    fixed_url(ACCOUNT).origin()
}

fn sts_origin() -> url::Origin {
    fixed_url(STS).origin()
}

/// Upper-case hex MD5, as Xiaomi wants the password.
fn password_hash(password: &str) -> String {
    hex::encode_upper(Md5::digest(password.as_bytes()))
}

/// The 6 random letters real clients send as `deviceId`.
fn device_id() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..6).map(|_| rng.gen_range(b'a'..=b'z') as char).collect()
}

/// What the flow keeps while it waits for the user (never the password).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum XiaomiState {
    /// Waits at [`STEP_TWO_FACTOR`].
    TwoFactor {
        /// The login typed (the account's display name).
        username: String,
        /// The absolute, real `notificationUrl` (`…/fe/service/identity/authStart?…&context=`).
        notification_url: String,
    },
    /// Waits at [`STEP_CODE`]; `identity_session` is in the flow's cookie jar.
    Code {
        username: String,
        notification_url: String,
        /// 4: phone, 8: email.
        flag: u32,
    },
}

/// The way the code travels (identity `flag`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channel {
    Phone,
    Email,
}

impl Channel {
    fn from_flag(flag: u32) -> Option<Channel> {
        match flag {
            4 => Some(Channel::Phone),
            8 => Some(Channel::Email),
            _ => None,
        }
    }

    fn flag(self) -> u32 {
        match self {
            Channel::Phone => 4,
            Channel::Email => 8,
        }
    }

    fn send_path(self) -> &'static str {
        match self {
            Channel::Phone => "/identity/auth/sendPhoneTicket",
            Channel::Email => "/identity/auth/sendEmailTicket",
        }
    }

    fn verify_path(self) -> &'static str {
        match self {
            Channel::Phone => "/identity/auth/verifyPhone",
            Channel::Email => "/identity/auth/verifyEmail",
        }
    }

    fn words(self) -> &'static str {
        match self {
            Channel::Phone => "your phone",
            Channel::Email => "your email",
        }
    }
}

pub struct XiaomiProvider;

/// Fails unless the answer is a 200 (503 → `service_unavailable`, a redirect where none is
/// followed → `bad_redirect`, anything else → `upstream_out_of_shape`).
fn expect_ok(response: &UpstreamResponse, what: &str) -> Result<(), StepError> {
    match response.status {
        200 => Ok(()),
        503 => Err(ErrorCode::ServiceUnavailable.into()),
        _ if response.is_redirect() => {
            tracing::warn!(
                step = what,
                "Xiaomi redirected where no redirect is followed"
            );
            Err(ErrorCode::BadRedirect.into())
        }
        status => {
            tracing::warn!(status, step = what, "Xiaomi answered out of shape");
            Err(ErrorCode::UpstreamOutOfShape.into())
        }
    }
}

/// An account.xiaomi.com JSON answer (`&&&START&&&{…}`), as an object.
fn xiaomi_json(response: &UpstreamResponse, what: &str) -> Result<Value, StepError> {
    expect_ok(response, what)?;
    let text = response.text();
    let body = text.trim_start();
    let body = body.strip_prefix(JSON_PREFIX).unwrap_or(body);
    match serde_json::from_str::<Value>(body) {
        Ok(value) if value.is_object() => Ok(value),
        _ => {
            tracing::warn!(step = what, "Xiaomi's answer was not the JSON expected");
            Err(ErrorCode::UpstreamOutOfShape.into())
        }
    }
}

/// A string or number field, as text; empty counts as absent.
fn text_of(value: &Value, key: &str) -> Option<String> {
    match value.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Xiaomi's `code` (a number, sometimes a string).
fn code_of(value: &Value) -> Option<i64> {
    match value.get("code")? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Xiaomi's own words about an error (`tips`, else `desc`, else `description`).
fn words_of(value: &Value) -> Option<String> {
    ["tips", "desc", "description"]
        .iter()
        .find_map(|k| text_of(value, k))
}

/// `unknown`, with Xiaomi's words as detail when it said any.
fn unknown_with_words(value: &Value, what: &str) -> StepError {
    tracing::warn!(step = what, code = ?code_of(value), "Xiaomi refused a step");
    let error = StepError::new(ErrorCode::UpstreamOutOfShape);
    match words_of(value) {
        Some(words) => error.detail(words),
        None => error,
    }
}

/// `ssecurity` from an `extension-pragma` header (`{"ssecurity":…,"psecurity":…}`).
fn pragma_ssecurity(response: &UpstreamResponse) -> Option<String> {
    let pragma: Value = serde_json::from_str(response.header("extension-pragma")?).ok()?;
    text_of(&pragma, "ssecurity")
}

/// The query parameter `name` of `url`.
fn query_param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// What the STS answer left: the cookies of sts.api.io.mi.com (and `extension-pragma`).
struct StsSession {
    service_token: String,
    user_id: Option<String>,
    c_user_id: Option<String>,
    ssecurity: Option<String>,
}

/// GETs the one-time STS URL; it sets `serviceToken`. A refusal (403) is `token_error`.
async fn open_sts(http: &mut HttpSession, sts_url: Url) -> Result<StsSession, StepError> {
    let answer = match http
        .follow(UpstreamRequest::get(sts_url), &HOSTS, |_| false)
        .await?
    {
        Followed::Answer(answer) => answer,
        Followed::Stopped(_) => return Err(ErrorCode::UpstreamOutOfShape.into()),
    };
    if matches!(answer.status, 401 | 403) {
        return Err(ErrorCode::TokenError.into());
    }
    expect_ok(&answer, "sts")?;
    let at = fixed_url(STS_CALLBACK);
    let Some(service_token) = http.cookie(&at, "serviceToken") else {
        tracing::warn!("STS set no serviceToken");
        return Err(ErrorCode::TokenError.into());
    };
    Ok(StsSession {
        service_token,
        user_id: http.cookie(&at, "userId"),
        c_user_id: http.cookie(&at, "cUserId"),
        ssecurity: pragma_ssecurity(&answer),
    })
}

/// The connected account from what the login gathered.
fn account(
    username: &str,
    sts: StsSession,
    user_id: Option<String>,
    ssecurity: Option<String>,
    pass_token: Option<String>,
    c_user_id: Option<String>,
) -> Result<NewAccount, StepError> {
    let Some(user_id) = user_id.or(sts.user_id) else {
        tracing::warn!("Xiaomi's login named no userId");
        return Err(ErrorCode::TokenError.into());
    };
    let mut secrets = serde_json::Map::new();
    secrets.insert("serviceToken".into(), sts.service_token.into());
    secrets.insert("userId".into(), user_id.clone().into());
    let optional = [
        ("ssecurity", ssecurity.or(sts.ssecurity)),
        ("passToken", pass_token),
        ("cUserId", c_user_id.or(sts.c_user_id)),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            secrets.insert(name.into(), value.into());
        }
    }
    Ok(NewAccount {
        account_id: user_id,
        display_name: username.to_owned(),
        secrets: Value::Object(secrets),
    })
}

/// Where the password login ended.
enum LoggedIn {
    Connected(NewAccount),
    /// Xiaomi wants a second factor; the absolute real `notificationUrl`.
    TwoFactor(Url),
}

async fn log_in(
    http: &mut HttpSession,
    username: &str,
    password: &str,
) -> Result<LoggedIn, StepError> {
    let account_url = fixed_url(ACCOUNT);
    http.set_cookie(&account_url, "sdkVersion", SDK_VERSION);
    http.set_cookie(&account_url, "deviceId", &device_id());

    let first = http
        .send(UpstreamRequest::get(fixed_url(&format!(
            "{ACCOUNT}/pass/serviceLogin?sid=xiaomiio&_json=true"
        ))))
        .await?;
    let first = xiaomi_json(&first, "serviceLogin")?;
    let Some(sign) = text_of(&first, "_sign") else {
        tracing::warn!("serviceLogin gave no _sign");
        return Err(ErrorCode::UpstreamOutOfShape.into());
    };

    let hash = password_hash(password);
    let answer = http
        .send(
            UpstreamRequest::post(fixed_url(&format!("{ACCOUNT}/pass/serviceLoginAuth2"))).form(&[
                ("hash", hash.as_str()),
                ("_json", "true"),
                ("sid", "xiaomiio"),
                ("callback", STS_CALLBACK),
                ("qs", "%3Fsid%3Dxiaomiio%26_json%3Dtrue"),
                ("_sign", sign.as_str()),
                ("user", username),
            ]),
        )
        .await?;
    let answer = xiaomi_json(&answer, "serviceLoginAuth2")?;
    let ssecurity = text_of(&answer, "ssecurity").filter(|s| s.len() > 4);

    // 2FA: `notificationUrl` and no `ssecurity` (usually with code 0, sometimes 81003).
    if let (None, Some(notification)) = (&ssecurity, text_of(&answer, "notificationUrl")) {
        let notification = account_url
            .join(&notification)
            .map_err(|_| ErrorCode::UpstreamOutOfShape)?;
        if notification.origin() != account_origin() {
            tracing::warn!("Xiaomi's notificationUrl left account.xiaomi.com");
            return Err(ErrorCode::UpstreamOutOfShape.into());
        }
        return Ok(LoggedIn::TwoFactor(notification));
    }

    match code_of(&answer) {
        Some(0) => {}
        Some(70016 | 20003 | 70002) => return Err(ErrorCode::InvalidAuth.into()),
        Some(87001) => return Err(ErrorCode::CaptchaRequired.into()),
        Some(_) => return Err(unknown_with_words(&answer, "serviceLoginAuth2")),
        None => {
            tracing::warn!("serviceLoginAuth2 answered without a code");
            return Err(ErrorCode::UpstreamOutOfShape.into());
        }
    }
    let (Some(ssecurity), Some(location)) = (ssecurity, text_of(&answer, "location")) else {
        tracing::warn!("serviceLoginAuth2 accepted the password without ssecurity or location");
        return Err(ErrorCode::UpstreamOutOfShape.into());
    };
    let sts_url = account_url
        .join(&location)
        .map_err(|_| ErrorCode::UpstreamOutOfShape)?;
    if sts_url.origin() != sts_origin() {
        tracing::warn!("serviceLoginAuth2's location is not on sts.api.io.mi.com");
        return Err(ErrorCode::UpstreamOutOfShape.into());
    }
    let sts = open_sts(http, sts_url).await?;
    let pass_token =
        text_of(&answer, "passToken").or_else(|| http.cookie(&account_url, "passToken"));
    let c_user_id = text_of(&answer, "cUserId");
    account(
        username,
        sts,
        text_of(&answer, "userId"),
        Some(ssecurity),
        pass_token,
        c_user_id,
    )
    .map(LoggedIn::Connected)
}

/// The flow's 2FA context (the `context` of the notificationUrl).
fn context_of(notification: &Url) -> Result<String, StepError> {
    query_param(notification, "context").ok_or_else(|| {
        tracing::warn!("the notificationUrl carries no context");
        ErrorCode::UpstreamOutOfShape.into()
    })
}

/// `identity/list` (sets `identity_session`, names the method), then `send…Ticket`.
/// Returns the method and the masked phone number or address Xiaomi shows.
async fn send_code(
    http: &mut HttpSession,
    now: i64,
    notification: &Url,
) -> Result<(Channel, Option<String>), StepError> {
    let context = context_of(notification)?;
    let mut list_url = notification.clone();
    list_url.set_path("/identity/list");
    let list = http.send(UpstreamRequest::get(list_url)).await?;
    let list = xiaomi_json(&list, "identity/list")?;
    if code_of(&list) != Some(0) {
        return Err(unknown_with_words(&list, "identity/list"));
    }
    let flag = list
        .get("flag")
        .and_then(Value::as_u64)
        .or_else(|| list.get("options")?.get(0)?.as_u64())
        .unwrap_or(4);
    let Some(channel) = u32::try_from(flag).ok().and_then(Channel::from_flag) else {
        tracing::warn!(flag, "Xiaomi offers a verification method we do not know");
        return Err(ErrorCode::UpstreamOutOfShape.into());
    };
    if http
        .cookie(&fixed_url(ACCOUNT), "identity_session")
        .is_none()
    {
        tracing::warn!("identity/list set no identity_session");
        return Err(ErrorCode::UpstreamOutOfShape.into());
    }
    let masked = text_of(&list, "maskedPhone").or_else(|| text_of(&list, "maskedEmail"));

    let mut send_url = fixed_url(ACCOUNT);
    send_url.set_path(channel.send_path());
    send_url
        .query_pairs_mut()
        .append_pair("_dc", &(now * 1000).to_string())
        .append_pair("sid", "xiaomiio")
        .append_pair("context", &context)
        .append_pair("mask", "0")
        .append_pair("_locale", "en_US");
    let sent = http
        .send(
            UpstreamRequest::post(send_url)
                .header(
                    reqwest::header::HeaderName::from_static("x-requested-with"),
                    "XMLHttpRequest",
                )
                .form(&[("retry", "0"), ("icode", ""), ("_json", "true")]),
        )
        .await?;
    let sent = xiaomi_json(&sent, "send ticket")?;
    if code_of(&sent) != Some(0) {
        return Err(unknown_with_words(&sent, "send ticket"));
    }
    Ok((channel, masked))
}

/// Walks a verified login's `location` to the STS URL: `identity/result/check` →
/// `serviceLoginAuth2/end` (its `extension-pragma` carries `ssecurity`; it may first show a
/// "Tips" page, then it is asked again), perhaps through a confirm-phone page (`/fe/…`) whose
/// `skipUrl` goes on, as hass-xiaomi-miot does. Redirects are followed on Xiaomi's own hosts
/// only, and the STS URL is not fetched here. Returns it and `ssecurity`.
async fn walk_to_sts(
    http: &mut HttpSession,
    location: Url,
) -> Result<(Url, Option<String>), StepError> {
    let mut walk = HOSTS.walk(&location);
    let mut next = location;
    let mut ssecurity = None;
    let mut tips_seen = false;
    loop {
        if next.origin() == sts_origin() {
            return Ok((next, ssecurity));
        }
        if next.origin() != account_origin() {
            tracing::warn!("Xiaomi's verification led off account.xiaomi.com");
            return Err(ErrorCode::BadRedirect.into());
        }
        let ended = http
            .follow_observing(
                UpstreamRequest::get(next.clone()),
                &HOSTS,
                |to| to.origin() == sts_origin(),
                |answer| {
                    if let Some(found) = pragma_ssecurity(answer) {
                        ssecurity = Some(found);
                    }
                },
            )
            .await?;
        let answer = match ended {
            Followed::Stopped(sts) => return Ok((sts, ssecurity)),
            Followed::Answer(answer) => answer,
        };
        expect_ok(&answer, "after verification")?;
        if let Some(skip) = skip_url(&answer.url) {
            // The confirm-phone page: its "skip" goes on with the login.
            let skip = http.map().real_url(&skip);
            walk.step(&skip)?;
            next = skip;
            continue;
        }
        if !tips_seen && answer.url.path().starts_with("/pass/serviceLoginAuth2/end") {
            // The "Xiaomi Account - Tips" page: the same URL again goes on.
            tips_seen = true;
            walk.again(&answer.url)?;
            next = answer.url;
            continue;
        }
        tracing::warn!(
            path = answer.url.path(),
            "Xiaomi's verification stopped short of STS"
        );
        return Err(ErrorCode::UpstreamOutOfShape.into());
    }
}

/// The `skipUrl` of a confirm-phone page (`https://account.xiaomi.com/fe/…?…&skipUrl=…`), as
/// an absolute real URL.
fn skip_url(page: &Url) -> Option<Url> {
    if page.origin() != account_origin() || !page.path().starts_with("/fe/") {
        return None;
    }
    let skip = query_param(page, "skipUrl")?;
    page.join(&skip).ok()
}

/// What a verification code did.
enum Verified {
    Account(NewAccount),
    /// Xiaomi refused the code: the step stays with this error.
    Refused(StepError),
}

async fn verify_code(
    http: &mut HttpSession,
    now: i64,
    username: &str,
    notification: &Url,
    channel: Channel,
    code: &str,
) -> Result<Verified, StepError> {
    let context = context_of(notification)?;
    let mut verify_url = fixed_url(ACCOUNT);
    verify_url.set_path(channel.verify_path());
    verify_url
        .query_pairs_mut()
        .append_pair("_dc", &(now * 1000).to_string())
        .append_pair("sid", "xiaomiio")
        .append_pair("context", &context)
        .append_pair("mask", "0");
    let flag = channel.flag().to_string();
    let answer = http
        .send(
            UpstreamRequest::post(verify_url)
                .header(
                    reqwest::header::HeaderName::from_static("x-requested-with"),
                    "XMLHttpRequest",
                )
                .form(&[
                    ("_flag", flag.as_str()),
                    ("ticket", code),
                    ("trust", "true"),
                    ("_json", "true"),
                ]),
        )
        .await?;
    let answer = xiaomi_json(&answer, "verify")?;
    match code_of(&answer) {
        Some(0) => {}
        Some(70014) => {
            let words = words_of(&answer).unwrap_or_default().to_lowercase();
            let error = StepError::new(ErrorCode::InvalidCode).on(CODE_FIELD);
            let error = if words.contains("expired") {
                error.detail(format!(
                    "This code has expired. Press “{RESEND_CODE_LABEL}” to get another one."
                ))
            } else if words.contains("too many") || words.contains("already used") {
                error.detail(format!(
                    "Xiaomi takes no more tries of this code. Press “{RESEND_CODE_LABEL}” to get another one."
                ))
            } else {
                error
            };
            return Ok(Verified::Refused(error));
        }
        _ => return Err(unknown_with_words(&answer, "verify")),
    }
    let account_url = fixed_url(ACCOUNT);
    let location = match text_of(&answer, "location") {
        Some(location) => account_url
            .join(&location)
            .map_err(|_| ErrorCode::UpstreamOutOfShape)?,
        // NuttShell's fallback: the result check of this context.
        None => {
            let mut check = fixed_url(&format!("{ACCOUNT}/identity/result/check"));
            check
                .query_pairs_mut()
                .append_pair("sid", "xiaomiio")
                .append_pair("context", &context)
                .append_pair("_locale", "en_US");
            check
        }
    };
    let (sts_url, ssecurity) = walk_to_sts(http, location).await?;
    let sts = open_sts(http, sts_url).await?;
    let pass_token = http.cookie(&account_url, "passToken");
    let user_id = sts
        .user_id
        .clone()
        .or_else(|| http.cookie(&account_url, "userId"));
    let c_user_id = http.cookie(&account_url, "cUserId");
    account(username, sts, user_id, ssecurity, pass_token, c_user_id).map(Verified::Account)
}

/// Why a pasted URL is refused (each its own detail), or the real STS URL it stands for (or,
/// for a confirm-phone page whose `skipUrl` stays on account.xiaomi.com, where that goes on).
fn check_pasted(http: &HttpSession, pasted: &str) -> Result<Url, StepError> {
    let bad = |detail: &str| {
        StepError::new(ErrorCode::InvalidUrl)
            .on(URL_FIELD)
            .detail(detail)
    };
    let text = pasted.trim();
    if text.contains('…') || text.ends_with("...") {
        return Err(bad(
            "This URL looks cut off (it has “…” in it). Copy the whole URL from the address bar and paste it again.",
        ));
    }
    let parsed = match Url::parse(text) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => parsed,
        _ => {
            return Err(bad(
                "This is not a web address. Paste the whole URL the Xiaomi page ends on; it starts with https://sts.api.io.mi.com/sts.",
            ))
        }
    };
    let mut real = http.map().real_url(&parsed);
    if let Some(skip) = skip_url(&real) {
        // The browser stopped at the confirm-phone page: its `skipUrl` is where the login
        // goes on (hass-xiaomi-miot follows it too).
        real = http.map().real_url(&skip);
        if real.origin() == account_origin() {
            return Ok(real);
        }
    }
    if real.origin() != sts_origin() {
        return Err(bad(&format!(
            "This URL is on {}, not sts.api.io.mi.com. Paste the URL the Xiaomi page ends on, not another one.",
            parsed.host_str().unwrap_or("another host")
        )));
    }
    if real.path() != "/sts" {
        return Err(bad(
            "This is not the sign-in URL (its path is not /sts). Paste the URL the Xiaomi page ends on.",
        ));
    }
    let missing: Vec<&str> = STS_PARAMS
        .iter()
        .copied()
        .filter(|name| query_param(&real, name).is_none_or(|v| v.is_empty()))
        .collect();
    if !missing.is_empty() {
        return Err(bad(&format!(
            "This URL lacks part of the sign-in ({}). Copy the whole URL and paste it again.",
            missing.join(", ")
        )));
    }
    Ok(real)
}

/// The pasted-URL way: validated, then followed once for `serviceToken` (from a confirm-phone
/// page's `skipUrl` on account.xiaomi.com, first walked to the STS URL).
async fn connect_with_url(
    http: &mut HttpSession,
    username: &str,
    pasted: Url,
) -> Result<NewAccount, StepError> {
    let (sts_url, ssecurity) = if pasted.origin() == account_origin() {
        walk_to_sts(http, pasted).await?
    } else {
        (pasted, None)
    };
    let sts = match open_sts(http, sts_url).await {
        Err(error) if error.code == ErrorCode::TokenError && error.detail.is_none() => {
            return Err(error.detail(
                "Xiaomi refused this link: it was already used or has expired. Please start again.",
            ))
        }
        other => other?,
    };
    account(username, sts, None, ssecurity, None, None)
}

fn two_factor_view(cx: &StepContext<'_>, notification: &Url) -> StepView {
    StepView::Form {
        alert: None,
        intro: Some(format!(
            "Xiaomi wants to check that it is you. Either press “{SEND_CODE_LABEL}” and Xiaomi sends a verification code to your phone or email, or open the Xiaomi verification page, finish there, and paste the URL it ends on (it starts with https://sts.api.io.mi.com/sts) below."
        )),
        // The authenticated URL is the proof of the second factor.
        fields: vec![FieldSpec::new(URL_FIELD, "Authenticated URL", FieldKind::Url)
            .hint("The whole address the Xiaomi verification page ends on.")
            .secret()],
        submit: Submit::Labelled("Connect with URL".to_owned()),
        links: vec![LinkSpec {
            label: "Open Xiaomi verification page".to_owned(),
            url: cx.http.map().browser_url(notification).to_string(),
        }],
        actions: vec![ActionSpec {
            label: SEND_CODE_LABEL.to_owned(),
            name: ACTION_FIELD.to_owned(),
            value: ACTION_SEND_CODE.to_owned(),
        }],
    }
}

fn code_view(channel: Channel, masked: Option<&str>) -> StepView {
    let to = match masked {
        Some(masked) => format!("{} ({masked})", channel.words()),
        None => channel.words().to_owned(),
    };
    StepView::Form {
        alert: None,
        intro: Some(format!("We sent a code to {to}. Enter it below.")),
        fields: vec![FieldSpec::new(
            CODE_FIELD,
            "Verification code",
            FieldKind::Code,
        )],
        submit: Submit::Verify,
        links: Vec::new(),
        actions: vec![ActionSpec {
            label: RESEND_CODE_LABEL.to_owned(),
            name: ACTION_FIELD.to_owned(),
            value: ACTION_SEND_CODE.to_owned(),
        }],
    }
}

impl XiaomiProvider {
    /// "Send code" (at either waiting step): asks Xiaomi to send a code, then waits for it.
    async fn send_and_wait(
        &self,
        cx: &mut StepContext<'_>,
        username: String,
        notification_url: String,
    ) -> Step<XiaomiState> {
        let Ok(notification) = Url::parse(&notification_url) else {
            return Step::abort(ErrorCode::FlowExpired);
        };
        let now = cx.now;
        match bounded(send_code(&mut *cx.http, now, &notification)).await {
            Ok((channel, masked)) => Step::Show {
                step: STEP_CODE,
                view: code_view(channel, masked.as_deref()),
                state: XiaomiState::Code {
                    username,
                    notification_url,
                    flag: channel.flag(),
                },
            },
            Err(error) => Step::Abort(error),
        }
    }
}

#[async_trait]
impl Provider for XiaomiProvider {
    type State = XiaomiState;

    fn name(&self) -> &'static str {
        "xiaomi"
    }

    fn title(&self) -> &'static str {
        "Xiaomi"
    }

    fn first_view(&self) -> StepView {
        StepView::form(
            vec![
                // A Xiaomi account is an email, a phone number or a numeric id: plain text.
                FieldSpec::new("username", "Xiaomi account", FieldKind::Text)
                    .autocomplete("username"),
                FieldSpec::new("password", "Password", FieldKind::Password),
            ],
            "Connect",
        )
    }

    async fn start(&self, cx: &mut StepContext<'_>, input: &Input) -> Step<XiaomiState> {
        let (username, password) = match (required(input, "username"), required(input, "password"))
        {
            (Ok(username), Ok(password)) => (username.trim(), password),
            _ => return Step::abort(ErrorCode::MissingFields),
        };
        match bounded(log_in(&mut *cx.http, username, password)).await {
            Ok(LoggedIn::Connected(account)) => Step::Connected(account),
            Ok(LoggedIn::TwoFactor(notification)) => Step::Show {
                step: STEP_TWO_FACTOR,
                view: two_factor_view(cx, &notification),
                state: XiaomiState::TwoFactor {
                    username: username.to_owned(),
                    notification_url: notification.to_string(),
                },
            },
            Err(error) => Step::Abort(error),
        }
    }

    async fn submit(
        &self,
        cx: &mut StepContext<'_>,
        state: XiaomiState,
        input: &Input,
    ) -> Step<XiaomiState> {
        let send = input.get(ACTION_FIELD).map(|a| a.trim()) == Some(ACTION_SEND_CODE);
        match state {
            XiaomiState::TwoFactor {
                username,
                notification_url,
            } => {
                if send {
                    return self.send_and_wait(cx, username, notification_url).await;
                }
                let pasted = match required(input, URL_FIELD) {
                    Ok(pasted) => pasted,
                    Err(code) => return Step::Retry(StepError::new(code).on(URL_FIELD)),
                };
                let sts_url = match check_pasted(cx.http, pasted) {
                    Ok(sts_url) => sts_url,
                    Err(error) => return Step::Retry(error),
                };
                match bounded(connect_with_url(&mut *cx.http, &username, sts_url)).await {
                    Ok(account) => Step::Connected(account),
                    Err(error) => Step::Abort(error),
                }
            }
            XiaomiState::Code {
                username,
                notification_url,
                flag,
            } => {
                if send {
                    return self.send_and_wait(cx, username, notification_url).await;
                }
                let code = match required(input, CODE_FIELD) {
                    Ok(code) => code.trim(),
                    Err(error) => return Step::Retry(StepError::new(error).on(CODE_FIELD)),
                };
                let (Ok(notification), Some(channel)) =
                    (Url::parse(&notification_url), Channel::from_flag(flag))
                else {
                    return Step::abort(ErrorCode::FlowExpired);
                };
                let now = cx.now;
                let verified = bounded(verify_code(
                    &mut *cx.http,
                    now,
                    &username,
                    &notification,
                    channel,
                    code,
                ))
                .await;
                match verified {
                    Ok(Verified::Account(account)) => Step::Connected(account),
                    Ok(Verified::Refused(error)) => Step::Retry(error),
                    Err(error) => Step::Abort(error),
                }
            }
        }
    }

    /// `serviceLogin` with the kept `passToken`: a live account session logs in at once
    /// (`code: 0`), a dead one is asked for the password again. An account connected by a
    /// pasted URL has no `passToken` (the browser kept that session) and cannot be asked
    /// without Xiaomi's signed device API, so it counts as accepted.
    async fn check(&self, http: &mut HttpSession, _now: i64, secrets: &Value) -> Health {
        match pass_token_login(http, secrets).await {
            Ok(_) => Health::Accepted(None),
            Err(health) => health,
        }
    }

    /// The same `serviceLogin`, then its STS `location`: a new `serviceToken` (and
    /// `ssecurity`) for the session the `passToken` keeps.
    async fn renew(&self, http: &mut HttpSession, _now: i64, secrets: &Value) -> Health {
        let answer = match pass_token_login(http, secrets).await {
            Ok(Some(answer)) => answer,
            Ok(None) => return Health::Accepted(None),
            Err(health) => return health,
        };
        let account_url = fixed_url(ACCOUNT);
        let Some(sts_url) = text_of(&answer, "location")
            .and_then(|location| account_url.join(&location).ok())
            .filter(|sts| sts.origin() == sts_origin())
        else {
            tracing::warn!("serviceLogin logged in without an STS location");
            return Health::Unreachable(ErrorCode::UpstreamOutOfShape);
        };
        let sts = match bounded(open_sts(http, sts_url)).await {
            Ok(sts) => sts,
            Err(error) if error.code == ErrorCode::TokenError => return Health::Rejected,
            Err(error) => return Health::Unreachable(error.code),
        };
        let mut renewed = secrets.clone();
        renewed["serviceToken"] = sts.service_token.into();
        if let Some(ssecurity) = text_of(&answer, "ssecurity").or(sts.ssecurity) {
            renewed["ssecurity"] = ssecurity.into();
        }
        if let Some(pass_token) =
            text_of(&answer, "passToken").or_else(|| http.cookie(&account_url, "passToken"))
        {
            renewed["passToken"] = pass_token.into();
        }
        Health::Accepted(Some(renewed))
    }

    /// Xiaomi names no expiry for a `serviceToken`: the upkeep renews at least daily.
    fn expires_at(&self, _secrets: &Value) -> Option<i64> {
        None
    }

    /// What Mi Cloud API clients sign their calls with.
    fn app_credentials(&self, secrets: &Value) -> Value {
        super::pick(secrets, &["serviceToken", "userId", "ssecurity", "cUserId"])
    }

    fn api(&self) -> Option<&'static super::api::ProviderApi> {
        Some(&super::xiaomi_api::API)
    }

    /// The device API takes the session's cookies and a signature made with `ssecurity`.
    fn authorize_api_request(
        &self,
        request: crate::flows::upstream::UpstreamRequest,
        secrets: &Value,
        now: i64,
    ) -> Result<crate::flows::upstream::UpstreamRequest, ErrorCode> {
        super::xiaomi_api::sign(request, secrets, now.saturating_mul(1000))
    }
}

/// `serviceLogin` with the kept `passToken`: `Ok(Some(answer))` when the session still logs
/// in, `Ok(None)` when there is no `passToken` to ask with, else the health to report.
async fn pass_token_login(
    http: &mut HttpSession,
    secrets: &Value,
) -> Result<Option<Value>, Health> {
    let (Some(pass_token), Some(user_id)) = (
        secrets.get("passToken").and_then(Value::as_str),
        secrets.get("userId").and_then(Value::as_str),
    ) else {
        return Ok(None);
    };
    let account_url = fixed_url(ACCOUNT);
    http.set_cookie(&account_url, "sdkVersion", SDK_VERSION);
    http.set_cookie(&account_url, "deviceId", &device_id());
    http.set_cookie(&account_url, "passToken", pass_token);
    http.set_cookie(&account_url, "userId", user_id);
    let login = fixed_url(&format!(
        "{ACCOUNT}/pass/serviceLogin?sid=xiaomiio&_json=true"
    ));
    let answer = bounded(async { Ok(http.send(UpstreamRequest::get(login)).await?) })
        .await
        .map_err(|error| Health::Unreachable(error.code))?;
    let answer = xiaomi_json(&answer, "serviceLogin with passToken")
        .map_err(|error| Health::Unreachable(error.code))?;
    match code_of(&answer) {
        Some(0) if text_of(&answer, "ssecurity").is_some() => Ok(Some(answer)),
        Some(70016 | 20003 | 70002) | Some(0) => Err(Health::Rejected),
        _ => Err(Health::Unreachable(ErrorCode::UpstreamOutOfShape)),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sandbox::faults::Fault;
    use sandbox::xiaomi::{self as double, XiaomiSandbox};

    use super::XiaomiState;
    use crate::accounts::store::{AccountStatus, CheckOutcome};
    use crate::flows::runner::{Completion, Progress};
    use crate::providers::{Health, Provider};
    use crate::providers::{Purpose, StepError};
    use crate::test_support::{connected, input, ProviderSetup, OWNER};
    use crate::view::{FieldKind, FlowView, StepView};
    use crate::ErrorCode;

    type Setup = ProviderSetup<XiaomiSandbox>;

    async fn setup() -> Setup {
        Setup::new("xiaomi", XiaomiSandbox::spawn().await).await
    }

    impl Setup {
        async fn connect(&self, user: &str, password: &str) -> Result<Progress, StepError> {
            self.start(&[("username", user), ("password", password)])
                .await
        }

        /// Starts a 2FA user's flow; returns it waiting at `two_factor`.
        async fn two_factor(&self, user: &str) -> FlowView {
            match self.connect(user, double::DEMO_PASSWORD).await {
                Ok(Progress::Next(view)) => view,
                other => panic!("the two_factor step expected, got {other:?}"),
            }
        }

        /// The secrets kept for the account a flow connected.
        async fn secrets(&self, progress: Result<Progress, StepError>) -> serde_json::Value {
            self.stored_secrets(connected(progress).id).await
        }
    }

    fn link_of(view: &FlowView) -> String {
        let StepView::Form { links, .. } = &view.step else {
            panic!("a form expected: {view:?}");
        };
        assert_eq!(links[0].label, "Open Xiaomi verification page");
        links[0].url.clone()
    }

    fn assert_secrets(secrets: &serde_json::Value, ssecurity: bool) {
        for name in ["serviceToken", "userId"] {
            assert!(
                secrets[name].as_str().is_some_and(|v| !v.is_empty()),
                "{name} in {secrets}"
            );
        }
        assert_eq!(secrets["ssecurity"].is_string(), ssecurity, "{secrets}");
        assert!(secrets.get("password").is_none());
    }

    #[tokio::test]
    async fn without_2fa_the_account_connects_with_its_tokens_and_only_once() {
        let s = setup().await;
        let answer = s.connect(double::DEMO_USER, double::DEMO_PASSWORD).await;
        let Ok(Progress::Done(Completion::Connected(account))) = &answer else {
            panic!("connected expected, got {answer:?}");
        };
        assert_eq!(account.display_name, double::DEMO_USER);
        assert_eq!(account.account_key, "6100000001");
        let secrets = s.secrets(answer).await;
        assert_secrets(&secrets, true);
        assert!(secrets["passToken"]
            .as_str()
            .is_some_and(|v| v.starts_with("V1:")));
        assert_eq!(secrets["userId"], "6100000001");
        assert!(secrets["cUserId"].is_string());
        let again = s.connect(double::DEMO_USER, double::DEMO_PASSWORD).await;
        assert_eq!(again.unwrap_err().code, ErrorCode::AlreadyConfigured);
    }

    #[tokio::test]
    async fn the_first_form_and_wrong_password_captcha_and_missing_fields() {
        let s = setup().await;
        let StepView::Form { fields, submit, .. } = s.engine.first_view("xiaomi").unwrap() else {
            panic!("a form");
        };
        assert_eq!(submit, "Connect");
        assert_eq!(
            (
                fields[0].name.as_str(),
                fields[0].label.as_str(),
                fields[0].autocomplete.as_str()
            ),
            ("username", "Xiaomi account", "username")
        );
        assert_eq!(
            (fields[1].name.as_str(), fields[1].kind),
            ("password", FieldKind::Password)
        );

        let wrong = s.connect(double::DEMO_USER, "not-it").await.unwrap_err();
        assert_eq!(wrong.code, ErrorCode::InvalidAuth);
        let unknown = s.connect("nobody@xiaomi.test", "x").await.unwrap_err();
        assert_eq!(unknown.code, ErrorCode::InvalidAuth);
        let captcha = s
            .connect(double::CAPTCHA_USER, double::DEMO_PASSWORD)
            .await
            .unwrap_err();
        assert_eq!(captcha.code, ErrorCode::CaptchaRequired);
        s.sandbox.set_fault("all", Fault::Reset);
        let missing = s.connect(double::DEMO_USER, " ").await.unwrap_err();
        assert_eq!(missing.code, ErrorCode::MissingFields);
    }

    #[tokio::test]
    async fn two_factor_by_sms_code_a_wrong_code_keeps_the_step() {
        let s = setup().await;
        let flow = s.two_factor(double::DEMO_2FA_USER).await;
        let StepView::Form {
            fields,
            submit,
            links,
            intro,
            actions,
            ..
        } = &flow.step
        else {
            panic!("a form");
        };
        assert_eq!(submit, "Connect with URL");
        assert_eq!(
            (actions[0].label.as_str(), actions[0].value.as_str()),
            (super::SEND_CODE_LABEL, super::ACTION_SEND_CODE)
        );
        assert_eq!(
            (fields[0].name.as_str(), fields[0].kind),
            ("authenticated_url", FieldKind::Url)
        );
        assert_eq!(fields[0].label, "Authenticated URL");
        assert!(intro.as_deref().unwrap().contains("Send code"));
        // The link reaches the double (mapped), not the real host.
        let base = format!("http://{}", s.sandbox.account_addr);
        assert!(
            links[0]
                .url
                .starts_with(&format!("{base}/fe/service/identity/authStart?")),
            "{}",
            links[0].url
        );

        let code_step = s.submit(&flow, &[("action", "send_code")]).await;
        let Ok(Progress::Next(code_step)) = code_step else {
            panic!("the code step expected, got {code_step:?}");
        };
        let StepView::Form {
            fields,
            submit,
            intro,
            ..
        } = &code_step.step
        else {
            panic!("a form");
        };
        assert_eq!(submit, "Verify");
        assert_eq!(
            (fields[0].name.as_str(), fields[0].kind),
            ("code", FieldKind::Code)
        );
        assert_eq!(fields[0].label, "Verification code");
        assert!(intro
            .as_deref()
            .unwrap()
            .starts_with("We sent a code to your phone"));
        assert_eq!(s.sandbox.inbox()[0].channel, "sms");
        let code = s.sandbox.latest_code(double::DEMO_2FA_USER).unwrap();
        let wrong = if code == "000000" { "111111" } else { "000000" };
        let error = s.submit(&code_step, &[("code", wrong)]).await.unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidCode);
        assert_eq!(error.field.as_deref(), Some("code"));
        let empty = s.submit(&code_step, &[("code", " ")]).await.unwrap_err();
        assert_eq!(
            (empty.code, empty.field.as_deref()),
            (ErrorCode::MissingFields, Some("code"))
        );
        let done = s.submit(&code_step, &[("code", &code)]).await;
        let secrets = s.secrets(done).await;
        assert_secrets(&secrets, true);
        assert_eq!(secrets["userId"], "6100000002");
        assert!(secrets["passToken"].is_string());
    }

    #[tokio::test]
    async fn two_factor_by_email_through_the_tips_page() {
        let s = setup().await;
        let flow = s.two_factor(double::DEMO_EMAIL_2FA_USER).await;
        let Ok(Progress::Next(code_step)) = s.submit(&flow, &[("action", "send_code")]).await
        else {
            panic!("the code step expected");
        };
        let StepView::Form { intro, .. } = &code_step.step else {
            panic!("a form");
        };
        assert!(intro
            .as_deref()
            .unwrap()
            .starts_with("We sent a code to your email"));
        assert_eq!(s.sandbox.inbox()[0].channel, "email");
        let code = s.sandbox.latest_code(double::DEMO_EMAIL_2FA_USER).unwrap();
        let secrets = s
            .secrets(s.submit(&code_step, &[("code", &code)]).await)
            .await;
        assert_secrets(&secrets, true);
        assert_eq!(secrets["userId"], "6100000003");
    }

    #[tokio::test]
    async fn two_factor_by_code_through_the_confirm_phone_page() {
        let s = setup().await;
        let flow = s.two_factor(double::DEMO_CONFIRM_USER).await;
        let Ok(Progress::Next(code_step)) = s.submit(&flow, &[("action", "send_code")]).await
        else {
            panic!("the code step expected");
        };
        let code = s.sandbox.latest_code(double::DEMO_CONFIRM_USER).unwrap();
        let secrets = s
            .secrets(s.submit(&code_step, &[("code", &code)]).await)
            .await;
        // ssecurity comes from serviceLoginAuth2/end, reached through the page's skipUrl.
        assert_secrets(&secrets, true);
        assert_eq!(secrets["userId"], "6100000005");
        assert!(secrets["passToken"].is_string());
    }

    #[tokio::test]
    async fn a_confirm_phone_page_that_goes_off_xiaomi_is_a_bad_redirect() {
        let page = url::Url::parse(
            "https://account.xiaomi.com/fe/service/identity/confirmPhone?context=c&skipUrl=https%3A%2F%2F127.0.0.1%3A8500%2F",
        )
        .unwrap();
        let skip = super::skip_url(&page).unwrap();
        assert_eq!(
            super::HOSTS.walk(&page).step(&skip).unwrap_err(),
            ErrorCode::BadRedirect
        );
        let elsewhere = url::Url::parse("https://evil.example.com/fe/x?skipUrl=/sts").unwrap();
        assert!(super::skip_url(&elsewhere).is_none());
    }

    #[tokio::test]
    async fn an_expired_code_says_so_and_a_new_code_works() {
        let s = setup().await;
        let flow = s.two_factor(double::DEMO_2FA_USER).await;
        let Ok(Progress::Next(code_step)) = s.submit(&flow, &[("action", "send_code")]).await
        else {
            panic!("the code step expected");
        };
        let code = s.sandbox.latest_code(double::DEMO_2FA_USER).unwrap();
        s.sandbox
            .advance_clock(double::CODE_LIFETIME + Duration::from_secs(1));
        let error = s.submit(&code_step, &[("code", &code)]).await.unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidCode);
        assert_eq!(error.field.as_deref(), Some("code"));
        assert!(
            error.detail.as_deref().unwrap().contains("expired"),
            "{error:?}"
        );
        let Ok(Progress::Next(again)) = s.submit(&code_step, &[("action", "send_code")]).await
        else {
            panic!("the code step again");
        };
        let fresh = s.sandbox.latest_code(double::DEMO_2FA_USER).unwrap();
        let secrets = s.secrets(s.submit(&again, &[("code", &fresh)]).await).await;
        assert_secrets(&secrets, true);
    }

    fn form_body(pairs: &[(&str, &str)]) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
    }

    /// Plays the user in a browser: opens the link, sends the code, enters it, and returns the
    /// authenticated URL the page shows (on the real origin, as the double shows it).
    async fn browser_sts_url(s: &Setup, link: &str, user: &str) -> String {
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let link = url::Url::parse(link).unwrap();
        let base = link.origin().ascii_serialization();
        let context = link
            .query_pairs()
            .find(|(k, _)| k == "context")
            .unwrap()
            .1
            .into_owned();
        let page = browser.get(link.clone()).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert!(page.text().await.unwrap().contains("Send code"));
        let post = |path: &str, body: String| {
            browser
                .post(format!("{base}{path}"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
        };
        let sent = post(
            "/fe/service/identity/send",
            form_body(&[("context", &context)]),
        )
        .await
        .unwrap();
        assert_eq!(sent.status(), 303);
        let code = s.sandbox.latest_code(user).unwrap();
        let verified = post(
            "/fe/service/identity/verify",
            form_body(&[("context", &context), ("ticket", &code)]),
        )
        .await
        .unwrap();
        let done = if verified.status() == 303 {
            // The confirm-phone page: "Skip for now" ends the login.
            let confirm = verified.headers()["location"].to_str().unwrap().to_owned();
            let page = browser
                .get(format!("{base}{confirm}"))
                .send()
                .await
                .unwrap();
            assert_eq!(page.status(), 200);
            let page = page.text().await.unwrap();
            assert!(page.contains("Skip for now"), "{page}");
            let skip = browser
                .get(format!("{base}/fe/service/identity/skip?context={context}"))
                .send()
                .await
                .unwrap();
            skip.text().await.unwrap()
        } else {
            verified.text().await.unwrap()
        };
        let at = done.find("id=\"url\"").expect("the authenticated URL");
        let rest = &done[at..];
        let start = rest.find("value=\"").unwrap() + 7;
        let end = rest[start..].find('"').unwrap();
        rest[start..start + end].replace("&amp;", "&")
    }

    /// Plays the user in a browser up to the confirm-phone page; returns its address (on the
    /// double, as the browser's address bar shows it).
    async fn browser_confirm_page(s: &Setup, link: &str, user: &str) -> String {
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let link = url::Url::parse(link).unwrap();
        let base = link.origin().ascii_serialization();
        let context = link
            .query_pairs()
            .find(|(k, _)| k == "context")
            .unwrap()
            .1
            .into_owned();
        assert_eq!(
            browser.get(link.clone()).send().await.unwrap().status(),
            200
        );
        let post = |path: &str, body: String| {
            browser
                .post(format!("{base}{path}"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
        };
        post(
            "/fe/service/identity/send",
            form_body(&[("context", &context)]),
        )
        .await
        .unwrap();
        let code = s.sandbox.latest_code(user).unwrap();
        let verified = post(
            "/fe/service/identity/verify",
            form_body(&[("context", &context), ("ticket", &code)]),
        )
        .await
        .unwrap();
        assert_eq!(verified.status(), 303);
        let confirm = format!("{base}{}", verified.headers()["location"].to_str().unwrap());
        assert!(
            confirm.contains("/fe/service/identity/confirmPhone?"),
            "{confirm}"
        );
        assert_eq!(browser.get(&confirm).send().await.unwrap().status(), 200);
        confirm
    }

    #[tokio::test]
    async fn two_factor_by_paste_through_the_confirm_phone_page() {
        // Skipped in the browser, then the STS URL pasted.
        let s = setup().await;
        let flow = s.two_factor(double::DEMO_CONFIRM_USER).await;
        let sts_url = browser_sts_url(&s, &link_of(&flow), double::DEMO_CONFIRM_USER).await;
        let done = s.submit(&flow, &[("authenticated_url", &sts_url)]).await;
        assert_eq!(s.secrets(done).await["userId"], "6100000005");

        // Or the confirm page's own address pasted: its skipUrl goes on.
        let s = setup().await;
        let flow = s.two_factor(double::DEMO_CONFIRM_USER).await;
        let page = browser_confirm_page(&s, &link_of(&flow), double::DEMO_CONFIRM_USER).await;
        let done = s.submit(&flow, &[("authenticated_url", &page)]).await;
        let secrets = s.secrets(done).await;
        assert_secrets(&secrets, false);
        assert_eq!(secrets["userId"], "6100000005");
    }

    #[tokio::test]
    async fn a_pasted_url_on_the_real_origin_connects_after_each_bad_paste_kept_the_step() {
        let s = setup().await;
        let flow = s.two_factor(double::DEMO_2FA_USER).await;
        let sts_url = browser_sts_url(&s, &link_of(&flow), double::DEMO_2FA_USER).await;
        assert!(
            sts_url.starts_with("https://sts.api.io.mi.com/sts?"),
            "{sts_url}"
        );

        let cut = format!("{}…", &sts_url[..sts_url.len() / 2]);
        let other_host = sts_url.replace("sts.api.io.mi.com", "evil.example.com");
        let no_auth: String = {
            let parsed = url::Url::parse(&sts_url).unwrap();
            let kept: Vec<(String, String)> = parsed
                .query_pairs()
                .filter(|(k, _)| k != "auth")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            let mut without = parsed.clone();
            without.query_pairs_mut().clear().extend_pairs(kept);
            without.to_string()
        };
        let mut details = Vec::new();
        // Four wrong pastes (the fifth attempt would end the flow).
        for bad in [
            cut.as_str(),
            other_host.as_str(),
            no_auth.as_str(),
            "just some words",
        ] {
            let error = s
                .submit(&flow, &[("authenticated_url", bad)])
                .await
                .unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidUrl, "{bad}");
            assert_eq!(error.field.as_deref(), Some("authenticated_url"));
            details.push(error.detail.unwrap());
        }
        assert!(details[0].contains("cut off"), "{details:?}");
        assert!(details[1].contains("evil.example.com"), "{details:?}");
        assert!(details[2].contains("auth"), "{details:?}");
        assert!(details[3].contains("not a web address"), "{details:?}");
        // The step is still open: the view is the same.
        let view = s
            .engine
            .flow_view("xiaomi", &flow.flow_id, Some(OWNER))
            .await
            .unwrap();
        assert_eq!(view.step, flow.step);

        let done = s.submit(&flow, &[("authenticated_url", &sts_url)]).await;
        let secrets = s.secrets(done).await;
        // The double's STS answer carries no extension-pragma: no ssecurity on this path.
        assert_secrets(&secrets, false);
        assert_eq!(secrets["userId"], "6100000002");

        // The same URL again, in a new flow (another user of ours), is refused cleanly.
        let other = s
            .engine
            .register(
                "second@example.org",
                "password-2-quiet-harbor",
                "password-2-quiet-harbor",
            )
            .await
            .unwrap()
            .id;
        let Ok(Progress::Next(second)) = s
            .engine
            .start_flow(
                "xiaomi",
                Purpose::Connect { user_id: other },
                Some(OWNER.into()),
                &input(&[
                    ("username", double::DEMO_2FA_USER),
                    ("password", double::DEMO_PASSWORD),
                ]),
            )
            .await
        else {
            panic!("two_factor expected");
        };
        let used = s
            .submit(&second, &[("authenticated_url", &sts_url)])
            .await
            .unwrap_err();
        assert_eq!(used.code, ErrorCode::TokenError);
        assert!(used.detail.unwrap().contains("already used"));
        // The flow is gone.
        let gone = s.submit(&second, &[("authenticated_url", &sts_url)]).await;
        assert_eq!(gone.unwrap_err().code, ErrorCode::FlowExpired);
    }

    #[tokio::test]
    async fn a_pasted_url_on_the_mapped_base_connects_after_the_engine_reopened() {
        let mut s = setup().await;
        let flow = s.two_factor(double::DEMO_EMAIL_2FA_USER).await;
        let sts_url = browser_sts_url(&s, &link_of(&flow), double::DEMO_EMAIL_2FA_USER).await;
        let mapped = sts_url.replace(
            "https://sts.api.io.mi.com",
            &format!("http://{}", s.sandbox.sts_addr),
        );
        assert_ne!(mapped, sts_url);
        // The mapped base of the *account* host is another host.
        let wrong_base = sts_url.replace(
            "https://sts.api.io.mi.com",
            &format!("http://{}", s.sandbox.account_addr),
        );
        let error = s
            .submit(&flow, &[("authenticated_url", &wrong_base)])
            .await
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidUrl);

        s.reopen().await;
        let done = s.submit(&flow, &[("authenticated_url", &mapped)]).await;
        let Ok(Progress::Done(Completion::Connected(account))) = &done else {
            panic!("connected expected, got {done:?}");
        };
        assert_eq!(account.display_name, double::DEMO_EMAIL_2FA_USER);
        assert_secrets(&s.secrets(done).await, false);
    }

    #[tokio::test]
    async fn the_code_way_survives_the_engine_reopened_between_steps() {
        let mut s = setup().await;
        let flow = s.two_factor(double::DEMO_2FA_USER).await;
        s.reopen().await;
        let Ok(Progress::Next(code_step)) = s.submit(&flow, &[("action", "send_code")]).await
        else {
            panic!("the code step expected");
        };
        s.reopen().await;
        let code = s.sandbox.latest_code(double::DEMO_2FA_USER).unwrap();
        let done = s.submit(&code_step, &[("code", &code)]).await;
        assert_secrets(&s.secrets(done).await, true);
    }

    #[tokio::test]
    async fn faults_at_service_login_and_login_end_the_flow_with_their_error() {
        let s = setup().await;
        let faults = [
            (Fault::Stall, ErrorCode::Timeout),
            (Fault::Unavailable503, ErrorCode::ServiceUnavailable),
            (Fault::Reset, ErrorCode::CannotConnect),
            (Fault::Garbage, ErrorCode::UpstreamOutOfShape),
            (Fault::WrongShape, ErrorCode::UpstreamOutOfShape),
        ];
        for step in ["service_login", "login", "sts"] {
            for (fault, expected) in faults {
                s.sandbox.clear_faults();
                s.sandbox.set_fault(step, fault);
                let answer = s.connect(double::DEMO_USER, double::DEMO_PASSWORD).await;
                let code = answer.as_ref().err().map(|e| e.code);
                // At STS only the status and the cookie count: junk with a 200 sets no
                // serviceToken.
                let expected = match (step, fault) {
                    ("sts", Fault::Garbage | Fault::WrongShape) => ErrorCode::TokenError,
                    _ => expected,
                };
                assert_eq!(code, Some(expected), "{fault:?} at {step}: {answer:?}");
            }
        }
    }

    #[tokio::test]
    async fn faults_in_the_identity_steps_end_the_flow() {
        let s = setup().await;
        for (step, at_send) in [
            ("identity_list", true),
            ("send_ticket", true),
            ("verify", false),
            ("result_check", false),
            ("login_end", false),
        ] {
            for (fault, expected) in [
                (Fault::Unavailable503, ErrorCode::ServiceUnavailable),
                (Fault::Reset, ErrorCode::CannotConnect),
                (Fault::Garbage, ErrorCode::UpstreamOutOfShape),
            ] {
                s.sandbox.clear_faults();
                let flow = s.two_factor(double::DEMO_2FA_USER).await;
                if at_send {
                    s.sandbox.set_fault(step, fault);
                }
                let sent = s.submit(&flow, &[("action", "send_code")]).await;
                let error = if at_send {
                    sent.unwrap_err()
                } else {
                    let Ok(Progress::Next(code_step)) = sent else {
                        panic!("the code step expected, got {sent:?}");
                    };
                    s.sandbox.set_fault(step, fault);
                    let code = s.sandbox.latest_code(double::DEMO_2FA_USER).unwrap();
                    s.submit(&code_step, &[("code", &code)]).await.unwrap_err()
                };
                assert_eq!(error.code, expected, "{fault:?} at {step}");
            }
        }
    }

    #[test]
    fn the_state_holds_no_password_and_the_hash_is_upper_case_md5() {
        let state = XiaomiState::Code {
            username: "u@xiaomi.test".into(),
            notification_url: "https://account.xiaomi.com/fe/service/identity/authStart?context=c"
                .into(),
            flag: 4,
        };
        let json = serde_json::to_value(&state).unwrap();
        assert_eq!(json["step"], "code");
        assert_eq!(json.as_object().unwrap().len(), 4);
        assert_eq!(
            super::password_hash("password"),
            "5F4DCC3B5AA765D61D8327DEB882CF99"
        );
        let id = super::device_id();
        assert!(id.len() == 6 && id.chars().all(|c| c.is_ascii_lowercase()));
    }

    #[tokio::test]
    async fn the_health_check_logs_in_with_the_pass_token_until_xiaomi_revokes_it() {
        let s = setup().await;
        let account = connected(s.connect(double::DEMO_USER, double::DEMO_PASSWORD).await);
        assert_eq!(
            s.check().await,
            vec![(account.id, CheckOutcome::Accepted(None))]
        );
        s.sandbox.set_fault("service_login", Fault::Reset);
        assert_eq!(
            s.check().await,
            vec![(
                account.id,
                CheckOutcome::Unreachable(ErrorCode::CannotConnect)
            )]
        );
        s.sandbox.clear_faults();
        s.sandbox.revoke(double::DEMO_USER);
        assert_eq!(s.check().await, vec![(account.id, CheckOutcome::Rejected)]);
        let stored = s.stored(account.id).await;
        assert_eq!(stored.status, AccountStatus::NeedsSignIn);

        let reauth = Purpose::Reauth {
            user_id: s.user_id,
            account_id: account.id,
        };
        let credentials = |user| [("username", user), ("password", double::DEMO_PASSWORD)];
        let captcha = s
            .start_for(reauth, &credentials(double::CAPTCHA_USER))
            .await;
        assert_eq!(captcha.unwrap_err().code, ErrorCode::CaptchaRequired);
        let again = s.start_for(reauth, &credentials(double::DEMO_USER)).await;
        let Ok(Progress::Done(Completion::Reauthenticated(again))) = again else {
            panic!("reauthenticated expected: {again:?}");
        };
        assert_eq!(again.id, account.id);
        assert_eq!(
            s.check().await,
            vec![(account.id, CheckOutcome::Accepted(None))]
        );
    }

    #[tokio::test]
    async fn renewal_gets_a_new_service_token_from_the_pass_token_until_it_is_revoked() {
        let s = setup().await;
        let account = connected(s.connect(double::DEMO_USER, double::DEMO_PASSWORD).await);
        let kept = s.stored_secrets(account.id).await;
        let provider = super::XiaomiProvider;
        let health = Provider::renew(&provider, &mut s.session(), 0, &kept).await;
        let Health::Accepted(Some(renewed)) = health else {
            panic!("renewed secrets expected: {health:?}");
        };
        assert_ne!(renewed["serviceToken"], kept["serviceToken"]);
        assert_eq!(renewed["userId"], kept["userId"]);
        assert!(renewed["ssecurity"].is_string() && renewed["passToken"].is_string());
        // What apps get: never the passToken.
        let credentials = Provider::app_credentials(&provider, &renewed);
        assert!(credentials["serviceToken"].is_string() && credentials.get("passToken").is_none());
        assert_eq!(Provider::expires_at(&provider, &renewed), None);

        s.sandbox.revoke(double::DEMO_USER);
        let revoked = Provider::renew(&provider, &mut s.session(), 0, &renewed).await;
        assert_eq!(revoked, Health::Rejected);
        // An account connected by a pasted URL has no passToken: nothing to renew with.
        let pasted = serde_json::json!({"serviceToken": "t", "userId": "6100000002"});
        let none = Provider::renew(&provider, &mut s.session(), 0, &pasted).await;
        assert_eq!(none, Health::Accepted(None));
    }
}
