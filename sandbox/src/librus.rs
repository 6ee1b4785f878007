//! A strict double of Librus Synergia's login (`shared/protocols.md` §3 and its corrections):
//! two hosts, `api.librus.pl` (OAuth, client_id=46) and `synergia.librus.pl` (entry point,
//! code callback, gateway API).
//!
//! The current flow: `GET synergia/loguj/portalRodzina` → 302 `api/OAuth/Authorization?…&state=`
//! → `POST api/OAuth/Authorization?client_id=46` (`action=login&login=&pass=`) → JSON `goTo`
//! → `GET api/OAuth/Authorization/2FA` → 302 `PerformLogin` → 302
//! `synergia/loguj/portalRodzina?code=&state=` (sets `DZIENNIKSID`, `SDZIENNIKSID`,
//! `oauth_token`) → `GET synergia/gateway/api/2.0/Auth/TokenInfo` → `…/Auth/UserInfo/{id}`.
//!
//! Strictness: a second `GET /OAuth/Authorization` in one api session poisons it (every later
//! step answers 400 `invalid_request`); codes are one-time and bound to the Synergia `state`;
//! the classic flow that starts at api.librus.pl gets no `oauth_token` (TokenInfo: 403 "Brak
//! dostępu"). Every URL it emits names the real origins.
//!
//! The gateway's data endpoints (`Me`, `Grades`) take the three cookies of one live, activated
//! session whose `oauth_token` the [`ApiDesk`] still takes; an expired, unknown or invalidated
//! token gets 401 `TokenIsExpired` (what `refreshToken` cures), a session not yet activated by
//! UserInfo 403 "Brak dostępu".

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::api::ApiDesk;
use crate::faults::{Fault, Faults, Style};
use crate::hosts::Hosts;
use crate::util::{self, Clock};

pub const API_ORIGIN: &str = "https://api.librus.pl";
pub const SYNERGIA_ORIGIN: &str = "https://synergia.librus.pl";
pub const CLIENT_ID: &str = "46";

/// A parent account whose login answers `goTo: /OAuth/Authorization/2FA?client_id=46`.
pub const DEMO_LOGIN: &str = "demo.parent";
pub const DEMO_PASSWORD: &str = "librus-demo";
/// An account whose login answers the older `goTo: /OAuth/Authorization/Grant?client_id=46`.
pub const DEMO_GRANT_LOGIN: &str = "demo.grant";
pub const DEMO_GRANT_PASSWORD: &str = "librus-demo";
/// Any password: the login answers `{"status":"error","message":"please solve the recaptcha"}`.
pub const CAPTCHA_LOGIN: &str = "captcha";
pub const BAD_CREDENTIALS_MESSAGE: &str = "Nieprawidłowy login i/lub hasło.";
pub const CAPTCHA_MESSAGE: &str = "please solve the recaptcha";
pub const MAINTENANCE_MESSAGE: &str = "Trwają prace techniczne. Przepraszamy za utrudnienia.";

/// The api.librus.pl session cookie (its name is the double's own).
pub const API_SESSION_COOKIE: &str = "oauth_session";
/// Synergia's cookie that remembers the `state` it sent to the OAuth server.
pub const STATE_COOKIE: &str = "portal_state";

/// How long an authorization code is accepted.
pub const CODE_LIFETIME: Duration = Duration::from_secs(120);
/// How long an `oauth_token` cookie works.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// Fault step names. api.librus.pl: `root` (GET /), `authorize` (GET OAuth/Authorization),
/// `login` (POST OAuth/Authorization), `2fa`, `perform_login`, `grant`. synergia.librus.pl:
/// `entry` (portalRodzina without code), `callback` (with code), `token_info`, `user_info`,
/// `me`, `refresh`, `grades`.
pub const STEPS: &[&str] = &[
    "root",
    "authorize",
    "login",
    "2fa",
    "perform_login",
    "grant",
    "entry",
    "callback",
    "token_info",
    "user_info",
    "me",
    "refresh",
    "grades",
];

const STYLE: Style = Style {
    unavailable: (
        "{\"Message\":[{\"description\":\"Trwają prace techniczne. Przepraszamy za utrudnienia.\"}]}",
        "application/json",
    ),
    json_prefix: "",
};

#[derive(Debug, Clone)]
struct Account {
    login: &'static str,
    password: &'static str,
    /// The gateway's `UserIdentifier` (digits and `u`); `Me`'s `UserId` is its number.
    user_id: &'static str,
    /// `Me`'s `Account.Id`.
    account_id: u64,
    first_name: &'static str,
    last_name: &'static str,
    go_to_grant: bool,
}

const ACCOUNTS: &[Account] = &[
    Account {
        login: DEMO_LOGIN,
        password: DEMO_PASSWORD,
        user_id: "1234567u",
        account_id: 2345678,
        first_name: "Anna",
        last_name: "Demo",
        go_to_grant: false,
    },
    Account {
        login: DEMO_GRANT_LOGIN,
        password: DEMO_GRANT_PASSWORD,
        user_id: "7654321u",
        account_id: 8765432,
        first_name: "Jan",
        last_name: "Grant",
        go_to_grant: true,
    },
];

#[derive(Default)]
struct ApiSession {
    /// The `state` Synergia sent with the first Authorization GET (none in the classic flow).
    state: Option<String>,
    /// A second Authorization GET happened: every later step is `invalid_request`.
    poisoned: bool,
    /// Index into `ACCOUNTS` once logged in.
    user: Option<usize>,
}

struct Code {
    user: usize,
    state: Option<String>,
    issued_ms: i64,
}

struct SynSession {
    sdzienniksid: String,
    user: usize,
    activated: bool,
}

struct Token {
    session: String,
    expires_ms: i64,
}

#[derive(Default)]
struct Inner {
    api_sessions: HashMap<String, ApiSession>,
    codes: HashMap<String, Code>,
    used_codes: HashSet<String>,
    issued_states: HashSet<String>,
    syn_sessions: HashMap<String, SynSession>,
    tokens: HashMap<String, Token>,
}

/// The state both Librus hosts share.
#[derive(Clone)]
pub struct Librus {
    inner: Arc<Mutex<Inner>>,
    faults: Faults,
    clock: Clock,
    /// Which `oauth_token`s the data endpoints take; the last request they received.
    api: ApiDesk,
}

impl Default for Librus {
    fn default() -> Self {
        Self::new()
    }
}

impl Librus {
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

    /// Moves the double's clock forward (codes and `oauth_token`s expire).
    pub fn advance_clock(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// Every Synergia session (`DZIENNIKSID`) and `oauth_token` of `login` stops working
    /// (`Me` and `refreshToken` answer "Brak dostępu"); answers how many sessions ended.
    pub fn revoke(&self, login: &str) -> usize {
        let Some(user) = ACCOUNTS.iter().position(|a| a.login == login) else {
            return 0;
        };
        let mut inner = self.lock();
        let ended: HashSet<String> = inner
            .syn_sessions
            .iter()
            .filter(|(_, s)| s.user == user)
            .map(|(sid, _)| sid.clone())
            .collect();
        inner.syn_sessions.retain(|sid, _| !ended.contains(sid));
        inner.tokens.retain(|_, t| !ended.contains(&t.session));
        ended.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("librus state")
    }
}

#[derive(serde::Deserialize)]
struct Revoke {
    account: String,
}

/// `POST /testing/revoke {"account": "<login>"}` (both hosts).
async fn revoke_http(State(l): State<Librus>, Json(req): Json<Revoke>) -> Response {
    if !ACCOUNTS.iter().any(|a| a.login == req.account) {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "unknown account"})),
        )
            .into_response();
    }
    let revoked = l.revoke(&req.account);
    Json(json!({"account": req.account, "revoked": revoked})).into_response()
}

/// The router of api.librus.pl.
pub fn api_router(librus: Librus) -> Router {
    let faults = librus.faults.clone();
    Router::new()
        .route("/", get(api_root))
        .route("/OAuth/Authorization", get(authorize).post(login))
        .route("/OAuth/Authorization/2FA", get(two_fa).post(two_fa_skip))
        .route("/OAuth/Authorization/PerformLogin", get(perform_login))
        .route("/OAuth/Authorization/Grant", get(grant))
        .route("/testing/revoke", post(revoke_http))
        .with_state(librus)
        .merge(crate::faults::routes(faults))
}

/// The router of synergia.librus.pl (requests to the gateway's data endpoints recorded).
pub fn synergia_router(librus: Librus) -> Router {
    let (faults, desk) = (librus.faults.clone(), librus.api.clone());
    let router = Router::new()
        .route("/loguj/portalRodzina", get(portal))
        .route("/gateway/api/2.0/Auth/TokenInfo", get(token_info))
        .route("/gateway/api/2.0/Auth/UserInfo/{id}", get(user_info))
        .route("/gateway/api/2.0/Me", get(me))
        .route("/gateway/api/2.0/Grades", get(grades))
        .route("/refreshToken", get(refresh))
        .route("/uczen/index", get(landing))
        .route("/testing/revoke", post(revoke_http))
        .with_state(librus)
        .merge(crate::faults::routes(faults));
    crate::api::recorded(router, SYNERGIA_ORIGIN, desk, is_gateway_data)
}

/// A gateway path other than the login's own `Auth/…` calls.
fn is_gateway_data(path: &str) -> bool {
    path.strip_prefix("/gateway/api/2.0/")
        .is_some_and(|rest| !rest.starts_with("Auth/"))
}

macro_rules! fault {
    ($l:expr, $step:expr) => {
        if let Some(r) = $l.faults.check($step, &STYLE).await {
            return r;
        }
    };
}

fn invalid_request(why: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({
            "error": "invalid_request",
            "error_description": why,
            "message": why,
        })),
    )
        .into_response()
}

fn no_access() -> Response {
    (
        StatusCode::FORBIDDEN,
        Json(json!({"Status": "Error", "Code": "Unauthorized", "Message": "Brak dostępu"})),
    )
        .into_response()
}

fn client_id_ok(q: &HashMap<String, String>) -> bool {
    q.get("client_id").map(String::as_str) == Some(CLIENT_ID)
}

async fn api_root(State(l): State<Librus>) -> Response {
    fault!(l, "root");
    Json(json!({"Status": "ok", "Url": format!("{API_ORIGIN}/")})).into_response()
}

/// `GET /OAuth/Authorization?client_id=46&response_type=code&scope=mydata[&state=]`.
async fn authorize(State(l): State<Librus>, uri: Uri, headers: HeaderMap) -> Response {
    fault!(l, "authorize");
    let q = util::query(&uri);
    if !client_id_ok(&q)
        || q.get("response_type").map(String::as_str) != Some("code")
        || q.get("scope").map(String::as_str) != Some("mydata")
    {
        return invalid_request("client_id=46, response_type=code and scope=mydata are required");
    }
    let mut inner = l.lock();
    let existing = util::cookies(&headers)
        .get(API_SESSION_COOKIE)
        .filter(|id| inner.api_sessions.contains_key(*id))
        .cloned();
    let mut set = Vec::new();
    match existing {
        // The second Init: a new OAuth session replaces the one the login belongs to.
        Some(id) => {
            if let Some(s) = inner.api_sessions.get_mut(&id) {
                s.poisoned = true;
            }
        }
        None => {
            if let Some(state) = q.get("state") {
                if !inner.issued_states.contains(state) {
                    return invalid_request("unknown state");
                }
            }
            let id = util::hex_token(20);
            inner.api_sessions.insert(
                id.clone(),
                ApiSession {
                    state: q.get("state").cloned(),
                    ..ApiSession::default()
                },
            );
            set.push(util::set_cookie(API_SESSION_COOKIE, &id));
        }
    }
    let mut r = Html(util::html_page(
        "Librus - logowanie",
        r#"<form method="post" action="/OAuth/Authorization?client_id=46"><input type="hidden" name="action" value="login">
<label>Login <input name="login"></label> <label>Hasło <input name="pass" type="password"></label> <button>Zaloguj</button></form>"#,
    ))
    .into_response();
    util::add_cookies(&mut r, &set);
    r
}

/// The api session of the request: `Err` says why it is missing or poisoned.
fn api_session(inner: &Inner, headers: &HeaderMap) -> Result<String, &'static str> {
    let id = util::cookies(headers)
        .remove(API_SESSION_COOKIE)
        .ok_or("no OAuth session: start at OAuth/Authorization")?;
    match inner.api_sessions.get(&id) {
        None => Err("unknown OAuth session"),
        Some(s) if s.poisoned => {
            Err("the OAuth session was restarted by a second authorization request")
        }
        Some(_) => Ok(id),
    }
}

/// `POST /OAuth/Authorization?client_id=46`, form `action=login&login=&pass=`.
async fn login(State(l): State<Librus>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    fault!(l, "login");
    if !client_id_ok(&util::query(&uri)) {
        return invalid_request("client_id=46 is required");
    }
    let mut inner = l.lock();
    let id = match api_session(&inner, &headers) {
        Ok(id) => id,
        Err(why) => return invalid_request(why),
    };
    let Some(form) = util::form(&headers, &body) else {
        return invalid_request("expected a form body");
    };
    if form.get("action").map(String::as_str) != Some("login") {
        return invalid_request("action=login is required");
    }
    let (user, pass) = (
        form.get("login").map(String::as_str).unwrap_or_default(),
        form.get("pass").map(String::as_str).unwrap_or_default(),
    );
    if user == CAPTCHA_LOGIN {
        return Json(json!({"status": "error", "message": CAPTCHA_MESSAGE})).into_response();
    }
    let Some(index) = ACCOUNTS
        .iter()
        .position(|a| a.login == user && a.password == pass)
    else {
        return Json(json!({"status": "error", "errors": [{"message": BAD_CREDENTIALS_MESSAGE}]}))
            .into_response();
    };
    if let Some(s) = inner.api_sessions.get_mut(&id) {
        s.user = Some(index);
    }
    let go_to = if ACCOUNTS[index].go_to_grant {
        "/OAuth/Authorization/Grant?client_id=46"
    } else {
        "/OAuth/Authorization/2FA?client_id=46"
    };
    Json(json!({"status": "ok", "goTo": go_to})).into_response()
}

/// The logged-in api session, or the answer to give.
fn logged_in(inner: &Inner, headers: &HeaderMap, uri: &Uri) -> Result<String, &'static str> {
    if !client_id_ok(&util::query(uri)) {
        return Err("client_id=46 is required");
    }
    let id = api_session(inner, headers)?;
    if inner.api_sessions[&id].user.is_none() {
        return Err("not logged in");
    }
    Ok(id)
}

/// `GET /OAuth/Authorization/2FA?client_id=46`: the interstitial, passed straight on.
async fn two_fa(State(l): State<Librus>, uri: Uri, headers: HeaderMap) -> Response {
    fault!(l, "2fa");
    if let Err(why) = logged_in(&l.lock(), &headers, &uri) {
        return invalid_request(why);
    }
    util::found(
        &format!("{API_ORIGIN}/OAuth/Authorization/PerformLogin?client_id=46"),
        &[],
    )
}

/// `POST /OAuth/Authorization/2FA?client_id=46`, `action=requiredActions&skip=true` (Mati365).
async fn two_fa_skip(
    State(l): State<Librus>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    fault!(l, "2fa");
    if let Err(why) = logged_in(&l.lock(), &headers, &uri) {
        return invalid_request(why);
    }
    let form = util::form(&headers, &body).unwrap_or_default();
    if form.get("action").map(String::as_str) != Some("requiredActions") {
        return invalid_request("action=requiredActions is required");
    }
    Json(json!({"status": "ok", "goTo": "/OAuth/Authorization/Grant?client_id=46"})).into_response()
}

async fn perform_login(State(l): State<Librus>, uri: Uri, headers: HeaderMap) -> Response {
    fault!(l, "perform_login");
    issue_code(&l, &uri, &headers)
}

async fn grant(State(l): State<Librus>, uri: Uri, headers: HeaderMap) -> Response {
    fault!(l, "grant");
    issue_code(&l, &uri, &headers)
}

/// 302 to Synergia's callback with a fresh one-time code.
fn issue_code(l: &Librus, uri: &Uri, headers: &HeaderMap) -> Response {
    let mut inner = l.lock();
    let id = match logged_in(&inner, headers, uri) {
        Ok(id) => id,
        Err(why) => return invalid_request(why),
    };
    let session = &inner.api_sessions[&id];
    let (user, state) = (session.user.unwrap_or_default(), session.state.clone());
    let code = util::hex_token(20);
    inner.codes.insert(
        code.clone(),
        Code {
            user,
            state: state.clone(),
            issued_ms: l.clock.now_ms(),
        },
    );
    let mut location = format!("{SYNERGIA_ORIGIN}/loguj/portalRodzina?code={code}");
    if let Some(state) = state {
        location.push_str(&format!("&state={}", util::encode(&state)));
    }
    util::found(&location, &[])
}

fn login_error(text: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Html(util::html_page(
            "Librus Synergia - błąd logowania",
            &format!("<p role=\"alert\">{}</p>", util::esc(text)),
        )),
    )
        .into_response()
}

/// `GET /loguj/portalRodzina`: without `code` the entry point, with it the OAuth callback.
async fn portal(State(l): State<Librus>, uri: Uri, headers: HeaderMap) -> Response {
    let q = util::query(&uri);
    let Some(code) = q.get("code") else {
        fault!(l, "entry");
        let state = util::hex_token(16);
        l.lock().issued_states.insert(state.clone());
        return util::found(
            &format!(
                "{API_ORIGIN}/OAuth/Authorization?client_id=46&response_type=code&scope=mydata&state={state}"
            ),
            &[util::set_cookie(STATE_COOKIE, &state)],
        );
    };
    fault!(l, "callback");
    let now = l.clock.now_ms();
    let mut inner = l.lock();
    if inner.used_codes.contains(code) {
        return login_error("Kod autoryzacji został już użyty.");
    }
    let Some(issued) = inner.codes.remove(code) else {
        return login_error("Nieprawidłowy kod autoryzacji.");
    };
    inner.used_codes.insert(code.clone());
    if now - issued.issued_ms > CODE_LIFETIME.as_millis() as i64 {
        return login_error("Kod autoryzacji wygasł.");
    }
    let cookie_state = util::cookies(&headers).remove(STATE_COOKIE);
    if let Some(expected) = &issued.state {
        if q.get("state") != Some(expected) || cookie_state.as_ref() != Some(expected) {
            return login_error("Nieprawidłowy parametr state.");
        }
    }
    let (sid, ssid) = (util::hex_token(16), util::hex_token(16));
    inner.syn_sessions.insert(
        sid.clone(),
        SynSession {
            sdzienniksid: ssid.clone(),
            user: issued.user,
            activated: false,
        },
    );
    let mut set = vec![
        util::set_cookie("DZIENNIKSID", &sid),
        util::set_cookie("SDZIENNIKSID", &ssid),
    ];
    // Only the flow that started at Synergia (with a state) gets the API token.
    if issued.state.is_some() {
        let token = util::hex_token(24);
        inner.tokens.insert(
            token.clone(),
            Token {
                session: sid,
                expires_ms: now + TOKEN_LIFETIME.as_millis() as i64,
            },
        );
        l.api.admit(&token);
        set.push(util::set_cookie("oauth_token", &token));
        set.push(util::clear_cookie(STATE_COOKIE));
    }
    util::found(&format!("{SYNERGIA_ORIGIN}/uczen/index"), &set)
}

/// The Synergia session of the request (`DZIENNIKSID` + matching `SDZIENNIKSID`).
fn syn_session(inner: &Inner, cookies: &HashMap<String, String>) -> Option<String> {
    let sid = cookies.get("DZIENNIKSID")?;
    let s = inner.syn_sessions.get(sid)?;
    (cookies.get("SDZIENNIKSID") == Some(&s.sdzienniksid)).then(|| sid.clone())
}

/// The session of the request when it also has a live `oauth_token` for it.
fn api_access(l: &Librus, inner: &Inner, headers: &HeaderMap) -> Option<String> {
    let cookies = util::cookies(headers);
    let sid = syn_session(inner, &cookies)?;
    let token = inner.tokens.get(cookies.get("oauth_token")?)?;
    (token.session == sid && token.expires_ms > l.clock.now_ms()).then_some(sid)
}

async fn token_info(State(l): State<Librus>, headers: HeaderMap) -> Response {
    fault!(l, "token_info");
    let inner = l.lock();
    let Some(sid) = api_access(&l, &inner, &headers) else {
        return no_access();
    };
    let a = &ACCOUNTS[inner.syn_sessions[&sid].user];
    Json(json!({
        "Resources": {"Auth/UserInfo": {"Url": format!("{SYNERGIA_ORIGIN}/gateway/api/2.0/Auth/UserInfo/{}", a.user_id)}},
        "Url": format!("{SYNERGIA_ORIGIN}/gateway/api/2.0/Auth/TokenInfo"),
        "UserIdentifier": a.user_id,
    }))
    .into_response()
}

async fn user_info(
    State(l): State<Librus>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    fault!(l, "user_info");
    let mut inner = l.lock();
    let Some(sid) = api_access(&l, &inner, &headers) else {
        return no_access();
    };
    let session = inner.syn_sessions.get_mut(&sid).expect("session");
    let a = &ACCOUNTS[session.user];
    if a.user_id != id {
        return no_access();
    }
    session.activated = true;
    Json(json!({"User": {"Id": a.user_id, "FirstName": a.first_name, "LastName": a.last_name, "Login": a.login}}))
        .into_response()
}

fn token_expired() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"Status": "Error", "Code": "TokenIsExpired", "Message": "Access token is expired"})),
    )
        .into_response()
}

/// The account of a data request: a live session and `oauth_token` the desk still takes
/// (else 401 `TokenIsExpired`), activated by UserInfo (else 403 "Brak dostępu").
fn data_access(l: &Librus, headers: &HeaderMap) -> Result<&'static Account, fn() -> Response> {
    let inner = l.lock();
    let token = util::cookies(headers)
        .remove("oauth_token")
        .unwrap_or_default();
    let Some(sid) = api_access(l, &inner, headers).filter(|_| l.api.admits(&token)) else {
        return Err(token_expired);
    };
    let s = &inner.syn_sessions[&sid];
    if !s.activated {
        return Err(no_access);
    }
    Ok(&ACCOUNTS[s.user])
}

/// `Me`'s `UserId`: the number of the `UserIdentifier`.
fn user_number(a: &Account) -> u64 {
    a.user_id.trim_end_matches('u').parse().unwrap_or_default()
}

/// `GET /gateway/api/2.0/Me`.
async fn me(State(l): State<Librus>, headers: HeaderMap) -> Response {
    fault!(l, "me");
    let a = match data_access(&l, &headers) {
        Ok(a) => a,
        Err(refusal) => return refusal(),
    };
    Json(json!({"Me": {
        "Account": {
            "Id": a.account_id,
            "UserId": user_number(a),
            "FirstName": a.first_name,
            "LastName": a.last_name,
            "Login": a.login,
            "IsPremium": false,
        },
        "User": {"FirstName": a.first_name, "LastName": a.last_name},
    }}))
    .into_response()
}

/// `GET /gateway/api/2.0/Grades`: a few grades of the account's child.
async fn grades(State(l): State<Librus>, headers: HeaderMap) -> Response {
    fault!(l, "grades");
    let a = match data_access(&l, &headers) {
        Ok(a) => a,
        Err(refusal) => return refusal(),
    };
    let gateway = format!("{SYNERGIA_ORIGIN}/gateway/api/2.0");
    let link = |kind: &str, id: u64| json!({"Id": id, "Url": format!("{gateway}/{kind}/{id}")});
    let grade = |id: u64, subject: u64, grade: &str, date: &str| {
        json!({
            "Id": id,
            "Lesson": link("Lessons", 500 + subject),
            "Subject": link("Subjects", subject),
            "Student": link("Users", user_number(a) + 1),
            "Category": link("Grades/Categories", 11),
            "AddedBy": link("Users", 77),
            "Grade": grade,
            "Date": date,
            "AddDate": format!("{date} 09:12:44"),
            "Semester": 1,
            "IsConstituent": true,
            "IsSemester": false,
            "IsSemesterProposition": false,
            "IsFinal": false,
            "IsFinalProposition": false,
        })
    };
    Json(json!({
        "Grades": [
            grade(1_000_001, 31, "5", "2025-10-06"),
            grade(1_000_002, 32, "4+", "2025-10-13"),
            grade(1_000_003, 31, "3", "2025-11-03"),
        ],
        "Url": format!("{gateway}/Grades"),
    }))
    .into_response()
}

/// `GET /refreshToken` with `DZIENNIKSID`/`SDZIENNIKSID`: a new `oauth_token` (the old one stops).
async fn refresh(State(l): State<Librus>, headers: HeaderMap) -> Response {
    fault!(l, "refresh");
    let mut inner = l.lock();
    let Some(sid) = syn_session(&inner, &util::cookies(&headers)) else {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"status": "error", "message": "Brak dostępu"})),
        )
            .into_response();
    };
    inner.tokens.retain(|_, t| t.session != sid);
    let token = util::hex_token(24);
    inner.tokens.insert(
        token.clone(),
        Token {
            session: sid,
            expires_ms: l.clock.now_ms() + TOKEN_LIFETIME.as_millis() as i64,
        },
    );
    l.api.admit(&token);
    let mut r = Json(json!({"status": "ok"})).into_response();
    util::add_cookies(&mut r, &[util::set_cookie("oauth_token", &token)]);
    r
}

async fn landing(State(l): State<Librus>, headers: HeaderMap) -> Response {
    let inner = l.lock();
    if syn_session(&inner, &util::cookies(&headers)).is_none() {
        return (StatusCode::UNAUTHORIZED, Html("Brak dostępu")).into_response();
    }
    Html(util::html_page(
        "Librus Synergia",
        "<p>Zalogowano (symulator).</p>",
    ))
    .into_response()
}

/// Both Librus hosts, served on their own ports (for tests and the binary). Faults, latency
/// and `upstreams()` come from [`Hosts`].
pub struct LibrusSandbox {
    pub librus: Librus,
    pub api_addr: std::net::SocketAddr,
    pub synergia_addr: std::net::SocketAddr,
    hosts: Hosts,
}

impl std::ops::Deref for LibrusSandbox {
    type Target = Hosts;
    fn deref(&self) -> &Hosts {
        &self.hosts
    }
}

impl LibrusSandbox {
    /// Both hosts on 127.0.0.1 with ports chosen by the system.
    pub async fn spawn() -> LibrusSandbox {
        Self::spawn_at("127.0.0.1:0", "127.0.0.1:0")
            .await
            .expect("bind the Librus sandbox")
    }

    /// Both hosts on the given addresses.
    pub async fn spawn_at(api: &str, synergia: &str) -> std::io::Result<LibrusSandbox> {
        let librus = Librus::new();
        let hosts = Hosts::serve(
            librus.faults.clone(),
            librus.api.clone(),
            vec![
                (API_ORIGIN, api, api_router(librus.clone())),
                (SYNERGIA_ORIGIN, synergia, synergia_router(librus.clone())),
            ],
        )
        .await?;
        Ok(LibrusSandbox {
            api_addr: hosts.addr_of(API_ORIGIN),
            synergia_addr: hosts.addr_of(SYNERGIA_ORIGIN),
            librus,
            hosts,
        })
    }

    /// Maintenance: `GET https://api.librus.pl/` answers 503 with the maintenance JSON.
    pub fn set_maintenance(&self, on: bool) {
        self.set_fault(
            "root",
            if on {
                Fault::Unavailable503
            } else {
                Fault::None
            },
        );
    }

    pub fn advance_clock(&self, by: Duration) {
        self.librus.advance_clock(by);
    }

    /// Every Synergia session and `oauth_token` of `login` stops working.
    pub fn revoke(&self, login: &str) {
        self.librus.revoke(login);
    }
}
