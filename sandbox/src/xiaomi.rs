//! A strict double of the Xiaomi account login (`shared/protocols.md` §4 and its corrections):
//! `account.xiaomi.com` (password login, identity service for 2FA, a browser verification page
//! and an inbox of the codes it "sent") and `sts.api.io.mi.com` (the one-time STS URL that sets
//! `serviceToken`), and the Mi Cloud API's `POST /app/home/device_list` on `api.io.mi.com`,
//! signed as the clients sign it (see [`sign_api_request`]) with the `ssecurity` the login
//! handed out with that `serviceToken`.
//!
//! Every JSON answer of account.xiaomi.com starts with `&&&START&&&`. URLs in `Location`, JSON
//! and cookies name the real origins; only the browser pages (authStart and the inbox) use
//! relative links so that a browser stays on the double.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use rand::RngCore;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::api::ApiDesk;
use crate::faults::{Faults, Style};
use crate::hosts::Hosts;
use crate::util::{self, Clock};

pub const ACCOUNT_ORIGIN: &str = "https://account.xiaomi.com";
pub const STS_ORIGIN: &str = "https://sts.api.io.mi.com";
/// The Mi Cloud API (the China server; regional ones are `{country}.api.io.mi.com`).
pub const API_ORIGIN: &str = "https://api.io.mi.com";
/// The `callback` of the login form.
pub const STS_CALLBACK: &str = "https://sts.api.io.mi.com/sts";
/// The literal prefix of every account.xiaomi.com JSON answer.
pub const JSON_PREFIX: &str = "&&&START&&&";

pub const DEMO_PASSWORD: &str = "xiaomi-demo";
/// No 2FA: the login answers `ssecurity` and the STS `location` at once.
pub const DEMO_USER: &str = "demo@xiaomi.test";
/// 2FA by SMS (identity flag 4).
pub const DEMO_2FA_USER: &str = "demo-2fa@xiaomi.test";
/// 2FA by email (identity flag 8); `serviceLoginAuth2/end` first shows the "Tips" page once.
pub const DEMO_EMAIL_2FA_USER: &str = "demo-email@xiaomi.test";
/// 2FA by SMS, then the confirm-phone page (`/fe/service/identity/confirmPhone?…&skipUrl=…`)
/// between the verified code and the end of the login: a client goes on by its `skipUrl`.
pub const DEMO_CONFIRM_USER: &str = "demo-confirm@xiaomi.test";
/// Always answers 87001 (captcha) with a `captchaUrl`.
pub const CAPTCHA_USER: &str = "captcha@xiaomi.test";

/// How long a sent verification code is accepted.
pub const CODE_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// How long a 2FA context (`notificationUrl`) lives.
pub const CONTEXT_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// How long an STS URL is accepted (once).
pub const STS_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// Wrong codes allowed before the sent code is void.
pub const MAX_CODE_FAILURES: u32 = 5;

pub const ERR_WRONG_PASSWORD: i64 = 70016;
pub const ERR_CAPTCHA: i64 = 87001;
pub const ERR_WRONG_CODE: i64 = 70014;
/// The double's code for malformed requests (missing `_sign`, unknown context or session, …).
pub const ERR_BAD_REQUEST: i64 = 10017;

/// The API's `code` for a missing, unknown, revoked or invalidated `serviceToken` (401).
pub const API_AUTH_ERR: i64 = 3;
/// The API's `code` for a wrong signature, or a nonce out of its window or used before (401);
/// the `message` says which.
pub const API_BAD_SIGNATURE: i64 = -2;
/// How far a nonce's minute may be from the server's.
pub const NONCE_WINDOW_MINUTES: i64 = 5;

/// Fault step names. account.xiaomi.com: `service_login`, `login` (serviceLoginAuth2),
/// `auth_start` (the browser page), `identity_list`, `send_ticket` (also the page's "Send
/// code"), `verify` (verifyPhone/verifyEmail and the page's "Verify"), `result_check`,
/// `login_end` (serviceLoginAuth2/end), `confirm_phone` (the confirm-phone page).
/// sts.api.io.mi.com: `sts`. api.io.mi.com: `device_list`.
pub const STEPS: &[&str] = &[
    "service_login",
    "login",
    "auth_start",
    "identity_list",
    "send_ticket",
    "verify",
    "result_check",
    "login_end",
    "confirm_phone",
    "sts",
    "device_list",
];

const ACCOUNT_STYLE: Style = Style {
    unavailable: (
        "<html><head><title>503 Service Temporarily Unavailable</title></head><body><h1>503 Service Temporarily Unavailable</h1></body></html>",
        "text/html",
    ),
    json_prefix: JSON_PREFIX,
};
const STS_STYLE: Style = Style {
    unavailable: ACCOUNT_STYLE.unavailable,
    json_prefix: "",
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channel {
    Phone,
    Email,
}

impl Channel {
    fn flag(self) -> u32 {
        match self {
            Channel::Phone => 4,
            Channel::Email => 8,
        }
    }
}

struct Account {
    user: &'static str,
    password: &'static str,
    user_id: &'static str,
    c_user_id: &'static str,
    two_fa: Option<(Channel, &'static str)>,
    captcha: bool,
    tips: bool,
    /// The confirm-phone page comes between the verified code and the end of the login.
    confirm_phone: bool,
}

const ACCOUNTS: &[Account] = &[
    Account {
        user: DEMO_USER,
        password: DEMO_PASSWORD,
        user_id: "6100000001",
        c_user_id: "cU_demo_plain_9Kq2",
        two_fa: None,
        captcha: false,
        tips: false,
        confirm_phone: false,
    },
    Account {
        user: DEMO_2FA_USER,
        password: DEMO_PASSWORD,
        user_id: "6100000002",
        c_user_id: "cU_demo_phone_3Zx8",
        two_fa: Some((Channel::Phone, "+48 *** *** 789")),
        captcha: false,
        tips: false,
        confirm_phone: false,
    },
    Account {
        user: DEMO_EMAIL_2FA_USER,
        password: DEMO_PASSWORD,
        user_id: "6100000003",
        c_user_id: "cU_demo_email_7Lm1",
        two_fa: Some((Channel::Email, "de***@xiaomi.test")),
        captcha: false,
        tips: true,
        confirm_phone: false,
    },
    Account {
        user: DEMO_CONFIRM_USER,
        password: DEMO_PASSWORD,
        user_id: "6100000005",
        c_user_id: "cU_demo_confirm_2Wp6",
        two_fa: Some((Channel::Phone, "+48 *** *** 456")),
        captcha: false,
        tips: false,
        confirm_phone: true,
    },
    Account {
        user: CAPTCHA_USER,
        password: DEMO_PASSWORD,
        user_id: "6100000004",
        c_user_id: "cU_demo_captcha_5Tt4",
        two_fa: None,
        captcha: true,
        tips: false,
        confirm_phone: false,
    },
];

/// One code "sent" by SMS or email.
#[derive(Debug, Clone, Serialize)]
pub struct InboxMessage {
    /// `sms` or `email`.
    pub channel: &'static str,
    /// The masked phone number or address.
    pub to: &'static str,
    pub account: &'static str,
    pub code: String,
    pub text: String,
    pub sent_at_ms: i64,
}

struct SentCode {
    code: String,
    sent_ms: i64,
    used: bool,
}

struct Ctx {
    account: usize,
    created_ms: i64,
    code: Option<SentCode>,
    failures: u32,
    verified: bool,
    tips_shown: bool,
    /// The confirm-phone page was shown (its account cannot end the login before).
    phone_prompted: bool,
    finished: bool,
}

struct StsTicket {
    account: usize,
    d: String,
    nonce: String,
    ssign: String,
    used: bool,
    issued_ms: i64,
    /// Handed out with this URL; the `serviceToken` it gives signs API calls with it.
    ssecurity: String,
}

/// What a `serviceToken` stands for.
struct ServiceSession {
    account: usize,
    ssecurity: String,
}

struct Issued {
    url: String,
    ssecurity: String,
    psecurity: String,
}

#[derive(Default)]
struct Inner {
    signs: HashSet<String>,
    contexts: HashMap<String, Ctx>,
    identity_sessions: HashMap<String, String>,
    /// By `auth` parameter.
    tickets: HashMap<String, StsTicket>,
    pass_tokens: HashMap<String, usize>,
    service_tokens: HashMap<String, ServiceSession>,
    /// API nonces used, by `(account, nonce)`, with their minute (pruned past the window).
    api_nonces: HashMap<(usize, String), i64>,
    inbox: Vec<InboxMessage>,
}

/// The state both Xiaomi hosts share.
#[derive(Clone)]
pub struct Xiaomi {
    inner: Arc<Mutex<Inner>>,
    faults: Faults,
    clock: Clock,
    /// Which `serviceToken`s the API takes; the last request it received.
    api: ApiDesk,
}

impl Default for Xiaomi {
    fn default() -> Self {
        Self::new()
    }
}

impl Xiaomi {
    pub fn new() -> Self {
        Self {
            inner: Arc::default(),
            faults: Faults::new(STEPS),
            clock: Clock::default(),
            api: ApiDesk::default(),
        }
    }

    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Moves the double's clock forward (codes, contexts and STS URLs expire).
    pub fn advance_clock(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// Every code sent so far, newest first.
    pub fn inbox(&self) -> Vec<InboxMessage> {
        self.lock().inbox.iter().rev().cloned().collect()
    }

    /// The newest code sent for `user`.
    pub fn latest_code(&self, user: &str) -> Option<String> {
        self.lock()
            .inbox
            .iter()
            .rev()
            .find(|m| m.account == user)
            .map(|m| m.code.clone())
    }

    /// Every `passToken` and `serviceToken` of `user` stops working (`serviceLogin` with the
    /// passToken no longer logs in); answers how many there were.
    pub fn revoke(&self, user: &str) -> usize {
        let Some(account) = ACCOUNTS.iter().position(|a| a.user == user) else {
            return 0;
        };
        let mut inner = self.lock();
        let before = inner.pass_tokens.len() + inner.service_tokens.len();
        inner.pass_tokens.retain(|_, a| *a != account);
        inner.service_tokens.retain(|_, s| s.account != account);
        before - inner.pass_tokens.len() - inner.service_tokens.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("xiaomi state")
    }
}

#[derive(serde::Deserialize)]
struct Revoke {
    account: String,
}

/// `POST /testing/revoke {"account": "<user>"}` (both hosts).
async fn revoke_http(State(x): State<Xiaomi>, Json(req): Json<Revoke>) -> Response {
    if !ACCOUNTS.iter().any(|a| a.user == req.account) {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "unknown account"})),
        )
            .into_response();
    }
    let revoked = x.revoke(&req.account);
    Json(json!({"account": req.account, "revoked": revoked})).into_response()
}

/// The router of account.xiaomi.com.
pub fn account_router(xiaomi: Xiaomi) -> Router {
    let faults = xiaomi.faults.clone();
    Router::new()
        .route("/pass/serviceLogin", get(service_login))
        .route("/pass/serviceLoginAuth2", post(service_login_auth2))
        .route("/pass/serviceLoginAuth2/end", get(login_end))
        .route("/pass/getCode", get(captcha_image))
        .route("/identity/authStart", get(old_auth_start))
        .route("/fe/service/identity/authStart", get(auth_start_page))
        .route("/fe/service/identity/send", post(page_send))
        .route(
            "/fe/service/identity/verify",
            get(page_verify_form).post(page_verify),
        )
        .route("/fe/service/identity/confirmPhone", get(confirm_phone_page))
        .route("/fe/service/identity/skip", get(page_skip))
        .route("/identity/list", get(identity_list))
        .route("/identity/auth/sendPhoneTicket", post(send_phone_ticket))
        .route("/identity/auth/sendEmailTicket", post(send_email_ticket))
        .route(
            "/identity/auth/verifyPhone",
            get(verify_info).post(verify_phone),
        )
        .route(
            "/identity/auth/verifyEmail",
            get(verify_info).post(verify_email),
        )
        .route("/identity/result/check", get(result_check))
        .route("/inbox", get(inbox_page))
        .route("/inbox.json", get(inbox_json))
        .route("/testing/revoke", post(revoke_http))
        .with_state(xiaomi)
        .merge(crate::faults::routes(faults))
}

/// The router of sts.api.io.mi.com.
pub fn sts_router(xiaomi: Xiaomi) -> Router {
    let faults = xiaomi.faults.clone();
    Router::new()
        .route("/sts", get(sts))
        .route("/testing/revoke", post(revoke_http))
        .with_state(xiaomi)
        .merge(crate::faults::routes(faults))
}

/// The router of api.io.mi.com (every request recorded).
pub fn api_router(xiaomi: Xiaomi) -> Router {
    let (faults, desk) = (xiaomi.faults.clone(), xiaomi.api.clone());
    let router = Router::new()
        .route("/app/home/device_list", post(device_list))
        .route("/testing/revoke", post(revoke_http))
        .with_state(xiaomi)
        .merge(crate::faults::routes(faults));
    crate::api::recorded(router, API_ORIGIN, desk, |_| true)
}

macro_rules! fault {
    ($x:expr, $step:expr) => {
        if let Some(r) = $x.faults.check($step, &ACCOUNT_STYLE).await {
            return r;
        }
    };
}

/// An account.xiaomi.com JSON answer: `&&&START&&&` + JSON.
fn xjson(v: Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json;charset=UTF-8")],
        format!("{JSON_PREFIX}{v}"),
    )
        .into_response()
}

fn xerror(code: i64, tips: &str) -> Response {
    xjson(json!({"code": code, "result": "error", "desc": tips, "description": tips, "tips": tips}))
}

fn md5_upper(text: &str) -> String {
    hex::encode_upper(Md5::digest(text.as_bytes()))
}

fn uuid() -> String {
    let h = util::hex_token(16);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn html(status: StatusCode, title: &str, body: &str) -> Response {
    (status, Html(util::html_page(title, body))).into_response()
}

fn with_cookies(mut r: Response, set: &[String]) -> Response {
    util::add_cookies(&mut r, set);
    r
}

impl Inner {
    /// A fresh one-time STS URL for `account`.
    fn issue_sts(&mut self, account: usize, now: i64) -> Issued {
        let (d, auth, nonce, ssign) = (
            format!("wb_{}", uuid()),
            util::b64_token(96),
            util::b64_token(12),
            util::b64_token(20),
        );
        let url = format!(
            "{STS_CALLBACK}?d={d}&ticket=0&pwd=1&p_ts={now}&fid=0&p_lm=1&auth={}&m=9&_group=DEFAULT&tsl=0&p_ca=0&p_ur=SG&p_idc=Singapore&nonce={}&_ssign={}",
            util::encode(&auth),
            util::encode(&nonce),
            util::encode(&ssign)
        );
        let issued = Issued {
            url,
            ssecurity: util::b64_token(16),
            psecurity: util::b64_token(16),
        };
        self.tickets.insert(
            auth,
            StsTicket {
                account,
                d,
                nonce,
                ssign,
                used: false,
                issued_ms: now,
                ssecurity: issued.ssecurity.clone(),
            },
        );
        util::record_secret(&issued.ssecurity);
        util::record_secret(&issued.psecurity);
        issued
    }

    /// The account session cookies a finished login sets on account.xiaomi.com.
    fn pass_cookies(&mut self, account: usize) -> (String, Vec<String>) {
        let token = format!("V1:{}", util::b64_token(48));
        self.pass_tokens.insert(token.clone(), account);
        let a = &ACCOUNTS[account];
        (
            token.clone(),
            vec![
                util::set_cookie("passToken", &token),
                util::set_cookie("userId", a.user_id),
                util::set_cookie("cUserId", a.c_user_id),
            ],
        )
    }

    /// Full login answer (password accepted, no 2FA, or a still-valid passToken).
    fn login_ok(&mut self, account: usize, now: i64, sign: &str) -> Response {
        let issued = self.issue_sts(account, now);
        let (pass_token, set) = self.pass_cookies(account);
        let a = &ACCOUNTS[account];
        with_cookies(
            xjson(json!({
                "qs": "%3Fsid%3Dxiaomiio%26_json%3Dtrue",
                "ssecurity": issued.ssecurity,
                "psecurity": issued.psecurity,
                "code": 0,
                "passToken": pass_token,
                "description": "成功",
                "securityStatus": 0,
                // The JSON nonce is a number; the STS URL carries its own base64 `nonce`.
                "nonce": rand::random::<u64>() >> 12,
                "userId": a.user_id.parse::<i64>().unwrap_or_default(),
                "cUserId": a.c_user_id,
                "result": "ok",
                "psecurityStatus": 0,
                "location": issued.url,
                "pwd": 1,
                "child": 0,
                "desc": "成功",
                "_sign": sign,
                "sid": "xiaomiio",
                "callback": STS_CALLBACK,
                "captchaUrl": Value::Null,
            })),
            &set,
        )
    }

    /// The context of an `identity_session` cookie, if live.
    fn identity_ctx(&self, headers: &HeaderMap, now: i64) -> Option<String> {
        let session = util::cookies(headers).remove("identity_session")?;
        let ctx = self.identity_sessions.get(&session)?;
        self.live_ctx(ctx, now).then(|| ctx.clone())
    }

    fn live_ctx(&self, ctx: &str, now: i64) -> bool {
        self.contexts.get(ctx).is_some_and(|c| {
            !c.finished && now - c.created_ms < CONTEXT_LIFETIME.as_millis() as i64
        })
    }

    /// "Sends" a new code for the context (the only one accepted from now on).
    fn send_code(&mut self, ctx: &str, now: i64) -> Option<()> {
        let c = self.contexts.get_mut(ctx)?;
        let (channel, to) = ACCOUNTS[c.account].two_fa?;
        let code = format!("{:06}", rand::random::<u32>() % 1_000_000);
        c.code = Some(SentCode {
            code: code.clone(),
            sent_ms: now,
            used: false,
        });
        c.failures = 0;
        self.inbox.push(InboxMessage {
            channel: match channel {
                Channel::Phone => "sms",
                Channel::Email => "email",
            },
            to,
            account: ACCOUNTS[c.account].user,
            text: format!("[Xiaomi] Your verification code is {code}. It expires in 5 minutes. Don't share it with anyone."),
            code,
            sent_at_ms: now,
        });
        Some(())
    }

    /// Checks a code against the context; `Err(tips)` on failure.
    fn check_code(&mut self, ctx: &str, ticket: &str, now: i64) -> Result<(), &'static str> {
        let c = self.contexts.get_mut(ctx).ok_or("The link has expired.")?;
        let Some(sent) = c.code.as_mut() else {
            return Err("Get a verification code first.");
        };
        if sent.used {
            return Err("This verification code was already used.");
        }
        if c.failures >= MAX_CODE_FAILURES {
            return Err("Too many attempts. Request a new code.");
        }
        if now - sent.sent_ms > CODE_LIFETIME.as_millis() as i64 {
            return Err("The verification code has expired. Request a new code.");
        }
        if sent.code != ticket.trim() {
            c.failures += 1;
            return Err("Incorrect verification code.");
        }
        sent.used = true;
        c.verified = true;
        Ok(())
    }
}

/// `GET /pass/serviceLogin?sid=xiaomiio&_json=true`.
async fn service_login(State(x): State<Xiaomi>, uri: Uri, headers: HeaderMap) -> Response {
    fault!(x, "service_login");
    let q = util::query(&uri);
    if q.get("sid").map(String::as_str) != Some("xiaomiio") {
        return xerror(ERR_BAD_REQUEST, "sid=xiaomiio is required");
    }
    if q.get("_json").map(String::as_str) != Some("true") {
        return html(
            StatusCode::OK,
            "Xiaomi Account",
            "<p>Sign in with a Xiaomi Account (this double answers JSON with _json=true).</p>",
        );
    }
    let now = x.clock.now_ms();
    let mut inner = x.lock();
    let sign = format!("2&V1_passport&{}", util::b64_token(20));
    inner.signs.insert(sign.clone());
    // A still-valid account session logs in at once.
    let cookies = util::cookies(&headers);
    if let Some(&account) = cookies
        .get("passToken")
        .and_then(|t| inner.pass_tokens.get(t))
    {
        if cookies.get("userId").map(String::as_str) == Some(ACCOUNTS[account].user_id) {
            return inner.login_ok(account, now, &sign);
        }
    }
    xjson(json!({
        "serviceParam": "{\"checkSafePhone\":false,\"checkSafeAddress\":false,\"lsrp_score\":0.0}",
        "qs": "%3Fsid%3Dxiaomiio%26_json%3Dtrue",
        "code": ERR_WRONG_PASSWORD,
        "description": "登录验证失败",
        "securityStatus": 0,
        "_sign": sign,
        "sid": "xiaomiio",
        "result": "error",
        "captchaUrl": Value::Null,
        "callback": STS_CALLBACK,
        "location": format!("{ACCOUNT_ORIGIN}/fe/service/login?_json=true&sid=xiaomiio&qs=%253Fsid%253Dxiaomiio%2526_json%253Dtrue&callback={}&_sign={}", util::encode(STS_CALLBACK), util::encode(&sign)),
        "pwd": 0,
        "child": 0,
        "desc": "登录验证失败",
    }))
}

/// `POST /pass/serviceLoginAuth2`.
async fn service_login_auth2(State(x): State<Xiaomi>, headers: HeaderMap, body: Bytes) -> Response {
    fault!(x, "login");
    let Some(form) = util::form(&headers, &body) else {
        return xerror(ERR_BAD_REQUEST, "expected a form body");
    };
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    let now = x.clock.now_ms();
    let mut inner = x.lock();
    if field("sid") != "xiaomiio"
        || field("_json") != "true"
        || field("callback") != STS_CALLBACK
        || !matches!(
            field("qs"),
            "%3Fsid%3Dxiaomiio%26_json%3Dtrue" | "?sid=xiaomiio&_json=true"
        )
        || field("user").is_empty()
    {
        return xerror(
            ERR_BAD_REQUEST,
            "sid=xiaomiio, _json=true, callback, qs and user are required",
        );
    }
    if !inner.signs.contains(field("_sign")) {
        return xerror(
            ERR_BAD_REQUEST,
            "_sign is missing or was not issued by serviceLogin",
        );
    }
    let Some(account) = ACCOUNTS.iter().position(|a| a.user == field("user")) else {
        return xerror(ERR_WRONG_PASSWORD, "登录验证失败");
    };
    let a = &ACCOUNTS[account];
    if a.captcha {
        return xjson(json!({
            "code": ERR_CAPTCHA,
            "result": "error",
            "desc": "验证码输入错误",
            "description": "验证码输入错误",
            "captchaUrl": format!("/pass/getCode?icodeType=login&_dc={now}"),
        }));
    }
    // Strict: the upper-case hex MD5, exactly.
    if field("hash") != md5_upper(a.password) {
        return xerror(ERR_WRONG_PASSWORD, "登录验证失败");
    }
    let sign = field("_sign").to_owned();
    if a.two_fa.is_none() {
        return inner.login_ok(account, now, &sign);
    }
    let ctx = util::hex_token(24);
    inner.contexts.insert(
        ctx.clone(),
        Ctx {
            account,
            created_ms: now,
            code: None,
            failures: 0,
            verified: false,
            tips_shown: false,
            phone_prompted: false,
            finished: false,
        },
    );
    xjson(json!({
        "qs": "%3Fsid%3Dxiaomiio%26_json%3Dtrue",
        "code": 0,
        "description": "成功",
        "securityStatus": 16,
        "_sign": sign,
        "sid": "xiaomiio",
        "result": "ok",
        "captchaUrl": Value::Null,
        "callback": STS_CALLBACK,
        "location": "",
        "pwd": 1,
        "child": 0,
        "desc": "成功",
        "notificationUrl": format!("{ACCOUNT_ORIGIN}/fe/service/identity/authStart?sid=xiaomiio&context={ctx}&_locale=en_US"),
    }))
}

async fn captcha_image() -> Response {
    with_cookies(
        (
            [(header::CONTENT_TYPE, "image/svg+xml")],
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="120" height="40"><text x="10" y="28" font-size="24">x7Kq2</text></svg>"#,
        )
            .into_response(),
        &[util::set_cookie("ick", &util::b64_token(24))],
    )
}

/// The older path redirects to the current page (relative, so a browser stays on the double).
async fn old_auth_start(uri: Uri) -> Response {
    let q = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    util::found(&format!("/fe/service/identity/authStart{q}"), &[])
}

fn masked(inner: &Inner, ctx: &str) -> (&'static str, Channel, &'static str) {
    let a = &ACCOUNTS[inner.contexts[ctx].account];
    let (channel, to) = a.two_fa.unwrap_or((Channel::Phone, ""));
    (a.user, channel, to)
}

fn channel_words(c: Channel) -> &'static str {
    match c {
        Channel::Phone => "by SMS to",
        Channel::Email => "by email to",
    }
}

fn expired_page() -> Response {
    html(
        StatusCode::BAD_REQUEST,
        "Link expired",
        "<p role=\"alert\">This verification link is invalid or has expired. Sign in again.</p>",
    )
}

/// `GET /fe/service/identity/authStart?sid=xiaomiio&context=…`: the page a human opens.
async fn auth_start_page(State(x): State<Xiaomi>, uri: Uri) -> Response {
    fault!(x, "auth_start");
    let q = util::query(&uri);
    let ctx = q.get("context").cloned().unwrap_or_default();
    let now = x.clock.now_ms();
    let mut inner = x.lock();
    if !inner.live_ctx(&ctx, now) {
        return expired_page();
    }
    let session = util::hex_token(16);
    inner.identity_sessions.insert(session.clone(), ctx.clone());
    let (user, channel, to) = masked(&inner, &ctx);
    let body = format!(
        r#"<p>Account: <strong>{user}</strong></p>
<p>To keep your account safe, verify that it's you. We'll send a verification code {words} <strong>{to}</strong>.</p>
<form method="post" action="/fe/service/identity/send"><input type="hidden" name="context" value="{ctx}"><button type="submit">Send code</button></form>
<p>This is a simulator: codes it sends appear in its <a href="/inbox" target="_blank">inbox</a>.</p>"#,
        user = util::esc(user),
        words = channel_words(channel),
        to = util::esc(to),
        ctx = util::esc(&ctx),
    );
    with_cookies(
        html(StatusCode::OK, "Verify your identity", &body),
        &[util::set_cookie("identity_session", &session)],
    )
}

fn verify_form(inner: &Inner, ctx: &str, error: Option<&str>) -> String {
    let (_, channel, to) = masked(inner, ctx);
    let alert = error
        .map(|e| format!("<p role=\"alert\">{}</p>", util::esc(e)))
        .unwrap_or_default();
    format!(
        r#"<p role="status">A verification code was sent {words} <strong>{to}</strong>. Read it in the simulator's <a href="/inbox" target="_blank">inbox</a>.</p>
{alert}
<form method="post" action="/fe/service/identity/verify"><input type="hidden" name="context" value="{ctx}">
<label for="ticket">Verification code</label> <input id="ticket" name="ticket" inputmode="numeric" autocomplete="one-time-code" required>
<button type="submit">Verify</button></form>
<form method="post" action="/fe/service/identity/send"><input type="hidden" name="context" value="{ctx}"><button type="submit">Send a new code</button></form>"#,
        words = channel_words(channel),
        to = util::esc(to),
        ctx = util::esc(ctx),
    )
}

/// The page's "Send code": sends, then shows the code form.
async fn page_send(State(x): State<Xiaomi>, headers: HeaderMap, body: Bytes) -> Response {
    fault!(x, "send_ticket");
    let ctx = util::form(&headers, &body)
        .and_then(|mut f| f.remove("context"))
        .unwrap_or_default();
    let now = x.clock.now_ms();
    let mut inner = x.lock();
    if !inner.live_ctx(&ctx, now) || inner.send_code(&ctx, now).is_none() {
        return expired_page();
    }
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "/fe/service/identity/verify?context={}",
        util::encode(&ctx)
    )) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

async fn page_verify_form(State(x): State<Xiaomi>, uri: Uri) -> Response {
    let ctx = util::query(&uri).remove("context").unwrap_or_default();
    let inner = x.lock();
    if !inner.live_ctx(&ctx, x.clock.now_ms()) {
        return expired_page();
    }
    html(
        StatusCode::OK,
        "Enter the verification code",
        &verify_form(&inner, &ctx, None),
    )
}

/// The page's "Verify": on success it finishes the login and shows the STS URL to copy.
async fn page_verify(State(x): State<Xiaomi>, headers: HeaderMap, body: Bytes) -> Response {
    fault!(x, "verify");
    let form = util::form(&headers, &body).unwrap_or_default();
    let ctx = form.get("context").cloned().unwrap_or_default();
    let ticket = form.get("ticket").cloned().unwrap_or_default();
    let now = x.clock.now_ms();
    let mut inner = x.lock();
    if !inner.live_ctx(&ctx, now) {
        return expired_page();
    }
    if let Err(tips) = inner.check_code(&ctx, &ticket, now) {
        return html(
            StatusCode::OK,
            "Enter the verification code",
            &verify_form(&inner, &ctx, Some(tips)),
        );
    }
    let account = inner.contexts[&ctx].account;
    if ACCOUNTS[account].confirm_phone {
        // The page's address names the STS URL as its `skipUrl`: pasting that address works
        // as well as skipping and pasting the STS URL.
        let issued = inner.issue_sts(account, now);
        let mut r = StatusCode::SEE_OTHER.into_response();
        if let Ok(v) = HeaderValue::from_str(&confirm_phone_url("", &ctx, &issued.url)) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        return r;
    }
    if let Some(c) = inner.contexts.get_mut(&ctx) {
        c.finished = true;
    }
    let issued = inner.issue_sts(account, now);
    verification_complete(&issued.url)
}

/// The browser's last page: the one-time STS URL to copy into Stepgate.
fn verification_complete(url: &str) -> Response {
    let body = format!(
        r#"<p role="status">Verification complete.</p>
<p>Copy this URL and paste it into Stepgate. It works once.</p>
<label for="url">Authenticated URL</label>
<input id="url" name="url" readonly value="{url}">
<button type="button" id="copy">Copy</button>
<script>document.getElementById("copy").addEventListener("click",()=>{{const i=document.getElementById("url");i.select();if(navigator.clipboard)navigator.clipboard.writeText(i.value);}});</script>"#,
        url = util::esc(url)
    );
    html(StatusCode::OK, "Verification complete", &body)
}

/// `GET /identity/list?sid=xiaomiio&context=…`: sets `identity_session`, tells the method.
async fn identity_list(State(x): State<Xiaomi>, uri: Uri) -> Response {
    fault!(x, "identity_list");
    let q = util::query(&uri);
    let ctx = q.get("context").cloned().unwrap_or_default();
    let now = x.clock.now_ms();
    let mut inner = x.lock();
    if q.get("sid").map(String::as_str) != Some("xiaomiio") || !inner.live_ctx(&ctx, now) {
        return xerror(ERR_BAD_REQUEST, "The link has expired.");
    }
    let session = util::hex_token(16);
    inner.identity_sessions.insert(session.clone(), ctx.clone());
    let (_, channel, to) = masked(&inner, &ctx);
    let mut v =
        json!({"code": 0, "result": "ok", "flag": channel.flag(), "options": [channel.flag()]});
    v[match channel {
        Channel::Phone => "maskedPhone",
        Channel::Email => "maskedEmail",
    }] = Value::from(to);
    with_cookies(xjson(v), &[util::set_cookie("identity_session", &session)])
}

async fn send_ticket(x: Xiaomi, headers: HeaderMap, want: Channel) -> Response {
    fault!(x, "send_ticket");
    let now = x.clock.now_ms();
    let mut inner = x.lock();
    let Some(ctx) = inner.identity_ctx(&headers, now) else {
        return xerror(
            ERR_BAD_REQUEST,
            "No identity session: call identity/list first.",
        );
    };
    if masked(&inner, &ctx).1 != want {
        return xerror(
            ERR_BAD_REQUEST,
            "This verification method is not available for the account.",
        );
    }
    inner.send_code(&ctx, now);
    xjson(json!({"code": 0, "result": "ok"}))
}

async fn send_phone_ticket(State(x): State<Xiaomi>, headers: HeaderMap) -> Response {
    send_ticket(x, headers, Channel::Phone).await
}

async fn send_email_ticket(State(x): State<Xiaomi>, headers: HeaderMap) -> Response {
    send_ticket(x, headers, Channel::Email).await
}

/// `GET /identity/auth/verifyPhone?_flag=4&_json=true` (and Email): what will be verified.
async fn verify_info(State(x): State<Xiaomi>, headers: HeaderMap) -> Response {
    fault!(x, "verify");
    let inner = x.lock();
    let Some(ctx) = inner.identity_ctx(&headers, x.clock.now_ms()) else {
        return xerror(
            ERR_BAD_REQUEST,
            "No identity session: call identity/list first.",
        );
    };
    let (_, channel, to) = masked(&inner, &ctx);
    xjson(json!({"code": 0, "result": "ok", "flag": channel.flag(), "masked": to}))
}

async fn verify(x: Xiaomi, headers: HeaderMap, body: Bytes, want: Channel) -> Response {
    fault!(x, "verify");
    let form = util::form(&headers, &body).unwrap_or_default();
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    let now = x.clock.now_ms();
    let mut inner = x.lock();
    let Some(ctx) = inner.identity_ctx(&headers, now) else {
        return xerror(
            ERR_BAD_REQUEST,
            "No identity session: call identity/list first.",
        );
    };
    if masked(&inner, &ctx).1 != want
        || field("_flag") != want.flag().to_string()
        || !matches!(field("trust"), "true" | "false")
        || field("_json") != "true"
    {
        return xerror(
            ERR_BAD_REQUEST,
            "_flag (matching the method), ticket, trust=true|false and _json=true are required",
        );
    }
    if let Err(tips) = inner.check_code(&ctx, field("ticket"), now) {
        return xerror(ERR_WRONG_CODE, tips);
    }
    xjson(json!({
        "code": 0,
        "result": "ok",
        "location": format!("{ACCOUNT_ORIGIN}/identity/result/check?sid=xiaomiio&context={ctx}&_locale=en_US"),
    }))
}

async fn verify_phone(State(x): State<Xiaomi>, headers: HeaderMap, body: Bytes) -> Response {
    verify(x, headers, body, Channel::Phone).await
}

async fn verify_email(State(x): State<Xiaomi>, headers: HeaderMap, body: Bytes) -> Response {
    verify(x, headers, body, Channel::Email).await
}

/// `GET /identity/result/check?sid=xiaomiio&context=…` → 302 `serviceLoginAuth2/end`.
async fn result_check(State(x): State<Xiaomi>, uri: Uri) -> Response {
    fault!(x, "result_check");
    let ctx = util::query(&uri).remove("context").unwrap_or_default();
    let inner = x.lock();
    if !inner.live_ctx(&ctx, x.clock.now_ms()) {
        return expired_page();
    }
    if !inner.contexts[&ctx].verified {
        return util::found(
            &format!("{ACCOUNT_ORIGIN}/fe/service/identity/authStart?sid=xiaomiio&context={ctx}&_locale=en_US"),
            &[],
        );
    }
    let end = format!(
        "{ACCOUNT_ORIGIN}/pass/serviceLoginAuth2/end?_group=DEFAULT&sid=xiaomiio&context={ctx}"
    );
    if ACCOUNTS[inner.contexts[&ctx].account].confirm_phone {
        return util::found(&confirm_phone_url(ACCOUNT_ORIGIN, &ctx, &end), &[]);
    }
    util::found(&end, &[])
}

/// The confirm-phone page of a context, going on at `skip` (under `origin`; empty: relative).
fn confirm_phone_url(origin: &str, ctx: &str, skip: &str) -> String {
    format!(
        "{origin}/fe/service/identity/confirmPhone?sid=xiaomiio&context={ctx}&_locale=en_US&skipUrl={}",
        util::encode(skip)
    )
}

/// `GET /fe/service/identity/confirmPhone?…&skipUrl=…`: "is this still your phone?", with a
/// "Skip for now" that goes on with the login. A client (or a browser) must pass here.
async fn confirm_phone_page(State(x): State<Xiaomi>, uri: Uri) -> Response {
    fault!(x, "confirm_phone");
    let q = util::query(&uri);
    let ctx = q.get("context").cloned().unwrap_or_default();
    let mut inner = x.lock();
    if !inner.live_ctx(&ctx, x.clock.now_ms())
        || !inner.contexts[&ctx].verified
        || q.get("skipUrl").is_none_or(|s| s.is_empty())
    {
        return expired_page();
    }
    let c = inner.contexts.get_mut(&ctx).expect("context");
    c.phone_prompted = true;
    let to = ACCOUNTS[c.account]
        .two_fa
        .map(|(_, to)| to)
        .unwrap_or_default();
    // The browser's "skip" stays on the double; the `skipUrl` in this page's address is
    // where a client goes on.
    let body = format!(
        r#"<p>Is <strong>{to}</strong> still your phone number? Confirming it keeps your account safe.</p>
<p><button type="button" disabled>Confirm</button> <a href="/fe/service/identity/skip?context={ctx}">Skip for now</a></p>"#,
        to = util::esc(to),
        ctx = util::esc(&ctx),
    );
    html(StatusCode::OK, "Confirm your phone number", &body)
}

/// The browser's "Skip for now": the login ends (the STS URL to copy, as after "Verify").
async fn page_skip(State(x): State<Xiaomi>, uri: Uri) -> Response {
    let ctx = util::query(&uri).remove("context").unwrap_or_default();
    let now = x.clock.now_ms();
    let mut inner = x.lock();
    if !inner.live_ctx(&ctx, now) || !inner.contexts[&ctx].phone_prompted {
        return expired_page();
    }
    let account = inner.contexts[&ctx].account;
    if let Some(c) = inner.contexts.get_mut(&ctx) {
        c.finished = true;
    }
    let issued = inner.issue_sts(account, now);
    verification_complete(&issued.url)
}

/// `GET /pass/serviceLoginAuth2/end?…`: 302 to the STS URL with `extension-pragma`
/// (for the email demo account a "Tips" page comes first, once).
async fn login_end(State(x): State<Xiaomi>, uri: Uri) -> Response {
    fault!(x, "login_end");
    let ctx = util::query(&uri).remove("context").unwrap_or_default();
    let now = x.clock.now_ms();
    let mut inner = x.lock();
    if !inner.live_ctx(&ctx, now) || !inner.contexts[&ctx].verified {
        return expired_page();
    }
    let c = inner.contexts.get_mut(&ctx).expect("context");
    let account = c.account;
    if ACCOUNTS[account].confirm_phone && !c.phone_prompted {
        // The confirm-phone page comes first: a client that never passed it is not done.
        return expired_page();
    }
    if ACCOUNTS[account].tips && !c.tips_shown {
        c.tips_shown = true;
        return html(
            StatusCode::OK,
            "Xiaomi Account - Tips",
            "<p>Your account was verified on a new device. Continue to sign in.</p>",
        );
    }
    c.finished = true;
    let issued = inner.issue_sts(account, now);
    let (_, set) = inner.pass_cookies(account);
    let mut r = util::found(&issued.url, &set);
    let pragma = json!({"ssecurity": issued.ssecurity, "psecurity": issued.psecurity}).to_string();
    if let Ok(v) = HeaderValue::from_str(&pragma) {
        r.headers_mut().insert("extension-pragma", v);
    }
    r
}

/// `GET /sts?d=&ticket=&auth=&nonce=&_ssign=…` on sts.api.io.mi.com: once, `serviceToken`.
async fn sts(State(x): State<Xiaomi>, uri: Uri) -> Response {
    if let Some(r) = x.faults.check("sts", &STS_STYLE).await {
        return r;
    }
    let q = util::query(&uri);
    if ["d", "ticket", "auth", "nonce", "_ssign"]
        .iter()
        .any(|k| q.get(*k).is_none_or(|v| v.is_empty()))
    {
        return (StatusCode::BAD_REQUEST, "Bad Request").into_response();
    }
    let now = x.clock.now_ms();
    let mut inner = x.lock();
    let denied = || (StatusCode::FORBIDDEN, "Access denied").into_response();
    let Some(t) = inner.tickets.get_mut(&q["auth"]) else {
        return denied();
    };
    if t.used
        || t.d != q["d"]
        || t.nonce != q["nonce"]
        || t.ssign != q["_ssign"]
        || now - t.issued_ms > STS_LIFETIME.as_millis() as i64
    {
        return denied();
    }
    t.used = true;
    let (account, ssecurity) = (t.account, t.ssecurity.clone());
    let token = util::b64_token(96);
    inner
        .service_tokens
        .insert(token.clone(), ServiceSession { account, ssecurity });
    x.api.admit(&token);
    let a = &ACCOUNTS[account];
    with_cookies(
        ([(header::CONTENT_TYPE, "text/plain")], "ok").into_response(),
        &[
            util::set_cookie("serviceToken", &token),
            util::set_cookie("userId", a.user_id),
            util::set_cookie("cUserId", a.c_user_id),
        ],
    )
}

// ---------------------------------------------------------------------------------------------
// The Mi Cloud API (PiotrMachowski's extractor `execute_api_call`, micloud).

type HmacSha256 = Hmac<Sha256>;

/// A fresh API nonce for the time `millis`: base64 of 8 random bytes and the minute
/// (`millis / 60000`) as 4 big-endian bytes.
pub fn api_nonce(millis: i64) -> String {
    let mut bytes = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut bytes[..8]);
    bytes[8..].copy_from_slice(&((millis / 60_000) as u32).to_be_bytes());
    STANDARD.encode(bytes)
}

/// `base64(sha256(b64decode(ssecurity) + b64decode(nonce)))`; `None` if either is not base64.
fn signed_nonce(ssecurity: &str, nonce: &str) -> Option<String> {
    let mut bytes = STANDARD.decode(ssecurity).ok()?;
    bytes.extend(STANDARD.decode(nonce).ok()?);
    Some(STANDARD.encode(<Sha256 as sha2::Digest>::digest(&bytes)))
}

fn signature(path: &str, ssecurity: &str, nonce: &str, params: &[(&str, &str)]) -> Option<String> {
    let signed_nonce = signed_nonce(ssecurity, nonce)?;
    let mut parts = vec![path.to_owned(), signed_nonce.clone(), nonce.to_owned()];
    parts.extend(params.iter().map(|(k, v)| format!("{k}={v}")));
    let mut mac = HmacSha256::new_from_slice(&STANDARD.decode(&signed_nonce).ok()?).ok()?;
    mac.update(parts.join("&").as_bytes());
    Some(STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `signature` of an API call: `base64(hmac_sha256(key = b64decode(signed_nonce), msg =
/// "&".join([path, signed_nonce, nonce] + ["k=v" for each param in order])))`, where `path` is
/// the URL's path without `/app` (`/home/device_list`) and `params` are the call's parameters
/// other than `signature` and `_nonce` (for `device_list`: `data`), values not encoded.
///
/// Panics unless `ssecurity` and `nonce` are base64 (as the login and [`api_nonce`] give).
pub fn sign_api_request(
    path: &str,
    ssecurity: &str,
    nonce: &str,
    params: &[(&str, &str)],
) -> String {
    signature(path, ssecurity, nonce, params).expect("base64 ssecurity and nonce")
}

/// The minute a nonce names, if it is 12 bytes of base64.
fn nonce_minute(nonce: &str) -> Option<i64> {
    let bytes: [u8; 12] = STANDARD.decode(nonce).ok()?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes[8..].try_into().ok()?) as i64)
}

fn api_error(code: i64, message: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"code": code, "message": message})),
    )
        .into_response()
}

/// The devices of an account, in `device_list`'s shape.
fn devices_of(account: usize) -> Value {
    let a = &ACCOUNTS[account];
    let token = hex::encode(Md5::digest(format!("sandbox-device-{}", a.user_id)));
    json!([{
        "did": format!("{}", 400_000_000 + account),
        "uid": a.user_id.parse::<i64>().unwrap_or_default(),
        "name": "Robot vacuum",
        "model": "roborock.vacuum.s5",
        "localip": "192.168.1.50",
        "mac": "50:EC:50:00:00:01",
        "token": token,
        "isOnline": true,
    }])
}

/// `POST /app/home/device_list` with cookies `userId` and `serviceToken` and the parameters
/// `data`, `_nonce` and `signature` in the query or an urlencoded body (clients send either).
async fn device_list(
    State(x): State<Xiaomi>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = x.faults.check("device_list", &STS_STYLE).await {
        return r;
    }
    let cookies = util::cookies(&headers);
    let now_minute = x.clock.now_ms() / 60_000;
    let mut inner = x.lock();
    let session = cookies.get("serviceToken").and_then(|token| {
        let s = inner.service_tokens.get(token)?;
        let user_ok =
            cookies.get("userId").map(String::as_str) == Some(ACCOUNTS[s.account].user_id);
        (user_ok && x.api.admits(token)).then(|| (s.account, s.ssecurity.clone()))
    });
    let Some((account, ssecurity)) = session else {
        return api_error(API_AUTH_ERR, "auth err");
    };
    let mut params: Vec<(String, String)> =
        form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let urlencoded = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    if urlencoded {
        params.extend(form_urlencoded::parse(&body).into_owned());
    }
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let (Some(nonce), Some(given)) = (param("_nonce"), param("signature")) else {
        return api_error(API_BAD_SIGNATURE, "invalid signature");
    };
    let Some(minute) = nonce_minute(nonce) else {
        return api_error(API_BAD_SIGNATURE, "invalid signature");
    };
    let signed: Vec<(&str, &str)> = params
        .iter()
        .filter(|(k, _)| k != "signature" && k != "_nonce")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let path = uri.path().strip_prefix("/app").unwrap_or(uri.path());
    if signature(path, &ssecurity, nonce, &signed).as_deref() != Some(given) {
        return api_error(API_BAD_SIGNATURE, "invalid signature");
    }
    if (minute - now_minute).abs() > NONCE_WINDOW_MINUTES {
        return api_error(API_BAD_SIGNATURE, "nonce expired");
    }
    inner
        .api_nonces
        .retain(|_, m| (*m - now_minute).abs() <= NONCE_WINDOW_MINUTES);
    if inner
        .api_nonces
        .insert((account, nonce.to_owned()), minute)
        .is_some()
    {
        return api_error(API_BAD_SIGNATURE, "nonce replayed");
    }
    let data_ok = param("data")
        .and_then(|d| serde_json::from_str::<Value>(d).ok())
        .is_some_and(|d| d.is_object());
    if !data_ok {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"code": -1, "message": "data must be a JSON object"})),
        )
            .into_response();
    }
    Json(json!({"code": 0, "message": "ok", "result": {"list": devices_of(account), "hasMore": false}}))
        .into_response()
}

async fn inbox_json(State(x): State<Xiaomi>) -> Json<Vec<InboxMessage>> {
    Json(x.inbox())
}

async fn inbox_page(State(x): State<Xiaomi>) -> Response {
    let rows: String = x
        .inbox()
        .iter()
        .map(|m| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"code\">{}</td><td>{}</td></tr>",
                m.channel,
                util::esc(m.to),
                util::esc(m.account),
                m.code,
                util::esc(&m.text)
            )
        })
        .collect();
    let body = if rows.is_empty() {
        "<p>No messages yet.</p>".to_owned()
    } else {
        format!(
            "<table aria-label=\"Messages\"><thead><tr><th>Channel</th><th>To</th><th>Account</th><th>Code</th><th>Message</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    };
    html(
        StatusCode::OK,
        "Inbox (SMS and email sent by the Xiaomi simulator)",
        &format!("{body}<p><a href=\"/inbox\">Refresh</a></p>"),
    )
}

/// The Xiaomi hosts, each served on its own port (for tests and the binary). Faults, latency,
/// `upstreams()` and the API controls come from [`Hosts`].
pub struct XiaomiSandbox {
    pub xiaomi: Xiaomi,
    pub account_addr: std::net::SocketAddr,
    pub sts_addr: std::net::SocketAddr,
    pub api_addr: std::net::SocketAddr,
    hosts: Hosts,
}

impl std::ops::Deref for XiaomiSandbox {
    type Target = Hosts;
    fn deref(&self) -> &Hosts {
        &self.hosts
    }
}

impl XiaomiSandbox {
    /// Every host on 127.0.0.1 with ports chosen by the system.
    pub async fn spawn() -> XiaomiSandbox {
        Self::spawn_at("127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0")
            .await
            .expect("bind the Xiaomi sandbox")
    }

    /// The hosts on the given addresses: account, STS, API.
    pub async fn spawn_at(account: &str, sts: &str, api: &str) -> std::io::Result<XiaomiSandbox> {
        let xiaomi = Xiaomi::new();
        let hosts = Hosts::serve(
            xiaomi.faults.clone(),
            xiaomi.api.clone(),
            vec![
                (ACCOUNT_ORIGIN, account, account_router(xiaomi.clone())),
                (STS_ORIGIN, sts, sts_router(xiaomi.clone())),
                (API_ORIGIN, api, api_router(xiaomi.clone())),
            ],
        )
        .await?;
        Ok(XiaomiSandbox {
            account_addr: hosts.addr_of(ACCOUNT_ORIGIN),
            sts_addr: hosts.addr_of(STS_ORIGIN),
            api_addr: hosts.addr_of(API_ORIGIN),
            xiaomi,
            hosts,
        })
    }

    pub fn advance_clock(&self, by: Duration) {
        self.xiaomi.advance_clock(by);
    }

    /// Every code sent so far, newest first.
    pub fn inbox(&self) -> Vec<InboxMessage> {
        self.xiaomi.inbox()
    }

    /// The newest code sent for `user`.
    pub fn latest_code(&self, user: &str) -> Option<String> {
        self.xiaomi.latest_code(user)
    }

    /// Every `passToken` and `serviceToken` of `user` stops working.
    pub fn revoke(&self, user: &str) {
        self.xiaomi.revoke(user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Worked out independently with Python's `hashlib`/`hmac`, the way PiotrMachowski's
    /// extractor signs (`generate_nonce`, `signed_nonce`, `generate_signature`).
    #[test]
    fn the_signature_matches_the_extractors_for_a_known_call() {
        let ssecurity = "AAECAwQFBgcICQoLDA0ODw==";
        let nonce = "AQIDBAUGBwgBsFUV";
        assert_eq!(nonce_minute(nonce), Some(1_700_000_000_000 / 60_000));
        assert_eq!(
            signed_nonce(ssecurity, nonce).unwrap(),
            "5ep+rMHy/Bph+UDBR3Cb6aW2JDdKFCrVRtJBDO5BLUQ="
        );
        let data = r#"{"getVirtualModel":false,"getHuamiDevices":0}"#;
        assert_eq!(
            sign_api_request("/home/device_list", ssecurity, nonce, &[("data", data)]),
            "JbxFY1bUVgANhq7Ncm2kpKLkJUFoszxRc0Y4TO1X3CM="
        );
    }

    #[test]
    fn a_nonce_carries_its_minute_after_eight_random_bytes() {
        let millis = 1_700_000_123_456;
        let (a, b) = (api_nonce(millis), api_nonce(millis));
        assert_ne!(a, b);
        assert_eq!(nonce_minute(&a), Some(millis / 60_000));
        assert_eq!(nonce_minute("AQIDBAUG"), None);
        assert_eq!(nonce_minute("not base64!"), None);
    }
}
