//! Connected-account flows on this machine: `cargo run --release -p engine --example connect_bench`.
//!
//! Starts the Librus, Xiaomi, Lynk & Co and FlameConnect doubles in-process and an engine on a
//! temporary SQLite file (on disk; WAL and `synchronous=FULL`, as the server runs it), then prints:
//! 1. complete connects per second, one at a time and 8 at a time, for Librus, Xiaomi without
//!    2FA and FlameConnect, and one at a time for the flows with an SMS code (Xiaomi: send code,
//!    then verify; Lynk & Co: the code B2C sent after the password), whose code is read from the
//!    double's inbox by account, so two of them at once could swap codes;
//! 2. the engine's time per flow over a bare `reqwest` script that makes the same requests in
//!    the same order against the same doubles (one shared client, a cookie map per origin,
//!    redirects walked by hand; no engine, no database): medians of several rounds after a
//!    warm-up, the two sides alternating which goes first;
//! 3. the bytes a pending flow keeps in the `flows` table (a Xiaomi flow waiting at its 2FA
//!    step, then at its code step; a Lynk & Co flow waiting at its code step), and what one
//!    SQLite write commit costs here.
//!
//! `cargo run --release -p engine --example connect_bench -- /dev/shm` puts the database on tmpfs
//! (a commit then waits for no disk), to see what the disk costs.
//!
//! Each flow of a round connects for its own Stepgate user, so none meets an account already
//! connected; the accounts are removed between rounds, outside the timing.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use engine::base::secrets::SecretKey;
use engine::flows::upstream::UpstreamMap;
use engine::providers::b2c::{
    jwt_claims, jwt_email, jwt_exp, keep_equals, page_settings, sha256_hex, token_urlsafe16,
    uuid_v4, Pkce,
};
use engine::providers::{Input, Purpose, StepError};
use engine::{Completion, Engine, EngineConfig, Progress};
use md5::{Digest, Md5};
use reqwest::header::{HeaderMap, COOKIE, LOCATION, SET_COOKIE};
use reqwest::Method;
use sandbox::flameconnect::{self as flame_double, FlameConnectSandbox};
use sandbox::librus::{self as librus_double, LibrusSandbox};
use sandbox::lynkco::{self as lynkco_double, LynkcoSandbox};
use sandbox::xiaomi::{self as xiaomi_double, XiaomiSandbox};
use serde_json::{json, Value};
use url::Url;

/// Flows per timed round (and Stepgate users: one per flow).
const FLOWS: usize = 200;
const WARM_UP: usize = 50;
const ROUNDS: usize = 7;
const AT_ONCE: usize = 8;
/// A realistic upstream round trip, for the second table.
const LATENCY: Duration = Duration::from_millis(20);
const OWNER: &str = "bench";

const LIBRUS_API: &str = "https://api.librus.pl";
const SYNERGIA: &str = "https://synergia.librus.pl";
const ACCOUNT: &str = "https://account.xiaomi.com";
const STS: &str = "https://sts.api.io.mi.com";
const STS_CALLBACK: &str = "https://sts.api.io.mi.com/sts";
const JSON_PREFIX: &str = "&&&START&&&";
const XHR: (&str, &str) = ("x-requested-with", "XMLHttpRequest");
/// The header naming a B2C page view (the next `pageViewId`).
const REQUEST_ID: &str = "x-ms-gateway-requestid";
/// Lynk & Co's policy base: every B2C call of its login is under it.
const LYNKCO: &str = "https://login.lynkco.com/lynkcoprod.onmicrosoft.com/b2c_1a_signin_mfa/";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Librus,
    Xiaomi,
    XiaomiSms,
    Lynkco,
    FlameConnect,
}

/// What a flow is given after its first form.
#[derive(Debug, Clone, Copy)]
enum Submit {
    /// Xiaomi's 2FA step: the "Send code" button.
    SendCode,
    /// The code from the double's inbox.
    Code,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Librus => "Librus",
            Kind::Xiaomi => "Xiaomi, no 2FA",
            Kind::XiaomiSms => "Xiaomi, SMS code",
            Kind::Lynkco => "Lynk & Co, SMS code",
            Kind::FlameConnect => "FlameConnect",
        }
    }

    /// SQLite writes the engine makes in one flow (reads aside).
    fn writes(self) -> &'static str {
        match self {
            Kind::Librus | Kind::Xiaomi | Kind::FlameConnect => "1 (the account)",
            Kind::XiaomiSms => "4 (flow insert, update, delete; the account) + 2 reads",
            Kind::Lynkco => "3 (flow insert, delete; the account) + 1 read",
        }
    }

    /// The provider and its first form, filled in for the demo account.
    fn first_form(self) -> (&'static str, Input) {
        match self {
            Kind::Librus => (
                "librus",
                input(&[
                    ("login", librus_double::DEMO_LOGIN),
                    ("password", librus_double::DEMO_PASSWORD),
                ]),
            ),
            Kind::Xiaomi => (
                "xiaomi",
                input(&[
                    ("username", xiaomi_double::DEMO_USER),
                    ("password", xiaomi_double::DEMO_PASSWORD),
                ]),
            ),
            Kind::XiaomiSms => (
                "xiaomi",
                input(&[
                    ("username", xiaomi_double::DEMO_2FA_USER),
                    ("password", xiaomi_double::DEMO_PASSWORD),
                ]),
            ),
            Kind::Lynkco => (
                "lynkco",
                input(&[
                    ("email", lynkco_double::DEMO_EMAIL),
                    ("password", lynkco_double::DEMO_PASSWORD),
                    ("vin", lynkco_double::DEMO_VIN),
                ]),
            ),
            Kind::FlameConnect => (
                "flameconnect",
                input(&[
                    ("email", flame_double::DEMO_EMAIL),
                    ("password", flame_double::DEMO_PASSWORD),
                ]),
            ),
        }
    }

    /// The steps after the first form, in order.
    fn submits(self) -> &'static [Submit] {
        match self {
            Kind::Librus | Kind::Xiaomi | Kind::FlameConnect => &[],
            Kind::XiaomiSms => &[Submit::SendCode, Submit::Code],
            Kind::Lynkco => &[Submit::Code],
        }
    }

    /// What each engine call of the flow does (the start, then each submit).
    fn calls(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Kind::XiaomiSms => &[
                ("start", "2 requests; flow insert"),
                ("send code", "2 requests; flow read, update"),
                ("verify", "4 requests; flow read, delete, account insert"),
            ],
            Kind::Lynkco => &[
                ("start", "3 requests; flow insert"),
                ("verify", "4 requests; flow read, delete, account insert"),
            ],
            _ => &[],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Engine,
    Bare,
}

/// The doubles, in-process: their origins, inboxes, clocks and latency.
struct Doubles {
    librus: LibrusSandbox,
    xiaomi: XiaomiSandbox,
    lynkco: LynkcoSandbox,
    flameconnect: FlameConnectSandbox,
}

impl Doubles {
    async fn spawn() -> Doubles {
        Doubles {
            librus: LibrusSandbox::spawn().await,
            xiaomi: XiaomiSandbox::spawn().await,
            lynkco: LynkcoSandbox::spawn().await,
            flameconnect: FlameConnectSandbox::spawn().await,
        }
    }

    /// `REAL=BASE` pairs of every double, for the engine and the bare script alike.
    fn upstreams(&self) -> String {
        [
            self.librus.upstreams(),
            self.xiaomi.upstreams(),
            self.lynkco.upstreams(),
            self.flameconnect.upstreams(),
        ]
        .join(" ")
    }

    fn set_latency(&self, latency: Duration) {
        self.librus.set_latency(latency);
        self.xiaomi.set_latency(latency);
        self.lynkco.set_latency(latency);
        self.flameconnect.set_latency(latency);
    }

    /// The newest SMS code sent to the demo account of `kind`.
    fn code(&self, kind: Kind) -> String {
        match kind {
            Kind::XiaomiSms => self.xiaomi.latest_code(xiaomi_double::DEMO_2FA_USER),
            Kind::Lynkco => self.lynkco.latest_code(lynkco_double::DEMO_EMAIL),
            _ => None,
        }
        .expect("a code was sent")
    }

    /// The B2C doubles keep each sign-in transaction for 30 minutes and find one by scanning
    /// them all: letting the finished ones expire between rounds (their clocks moved on, outside
    /// the timing) keeps a round's lookups as cheap as the first round's.
    fn expire_transactions(&self) {
        let past = sandbox::b2c::TRANSACTION_LIFETIME + Duration::from_secs(1);
        self.lynkco.advance_clock(past);
        self.flameconnect.advance_clock(past);
    }
}

/// The engine's configuration, built in one place.
fn engine_config(dir: &std::path::Path, upstreams: &str) -> EngineConfig {
    let key = SecretKey::load_or_create(Some(&"05".repeat(32)), dir).expect("a 64-hex-digit key");
    let mut config = EngineConfig::new(
        engine::store::db::sqlite_url_in(dir),
        key,
        engine::second_factor::totp_site::TotpSite {
            base_url: "http://totp.test".into(),
            issuer: "Stepgate".into(),
        },
    );
    config.upstreams = UpstreamMap::parse(upstreams).expect("the doubles' origins");
    config
}

fn input(pairs: &[(&str, &str)]) -> Input {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A connect of `kind` for Stepgate user `user_id`, up to the engine's first answer.
async fn start_flow(engine: &Engine, kind: Kind, user_id: i64) -> Result<Progress, StepError> {
    let (provider, fields) = kind.first_form();
    let purpose = Purpose::Connect { user_id };
    engine
        .start_flow(provider, purpose, Some(OWNER.to_owned()), &fields)
        .await
}

/// The input a waiting flow of `kind` is given at `submit`.
fn submit_input(doubles: &Doubles, kind: Kind, submit: Submit) -> Input {
    match submit {
        Submit::SendCode => input(&[("action", "send_code")]),
        Submit::Code => input(&[("code", doubles.code(kind).as_str())]),
    }
}

/// One complete connect through the engine, for Stepgate user `user_id`; answers how long each
/// engine call took (the start, then each submit; reading the inbox is outside them).
async fn engine_connect(
    engine: &Engine,
    doubles: &Doubles,
    kind: Kind,
    user_id: i64,
) -> Vec<Duration> {
    let mut calls = Vec::with_capacity(1 + kind.submits().len());
    let t = Instant::now();
    let mut progress = start_flow(engine, kind, user_id).await;
    calls.push(t.elapsed());
    for &next in kind.submits() {
        let Ok(Progress::Next(flow)) = progress else {
            panic!("{kind:?}: a further step expected, got {progress:?}");
        };
        let fields = submit_input(doubles, kind, next);
        let t = Instant::now();
        progress = engine
            .submit_flow(&flow.flow_id, Some(OWNER), &fields)
            .await;
        calls.push(t.elapsed());
    }
    assert!(
        matches!(progress, Ok(Progress::Done(Completion::Connected(_)))),
        "{kind:?}: {progress:?}"
    );
    calls
}

/// The bare baseline: one shared client that follows no redirect, and the doubles' map.
#[derive(Clone)]
struct Bare {
    client: reqwest::Client,
    /// (real origin, base URL of its double).
    map: Arc<Vec<(String, String)>>,
}

impl Bare {
    fn new(upstreams: &str) -> Bare {
        let map = upstreams
            .split_whitespace()
            .map(|pair| {
                let (real, base) = pair.split_once('=').expect("REAL=BASE");
                (
                    real.trim_end_matches('/').to_owned(),
                    base.trim_end_matches('/').to_owned(),
                )
            })
            .collect();
        Bare {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("a client"),
            map: Arc::new(map),
        }
    }
}

/// `scheme://host[:port]` of an absolute URL.
fn origin(url: &str) -> &str {
    let after = url.find("://").map_or(0, |i| i + 3);
    let end = url[after..]
        .find(['/', '?'])
        .map_or(url.len(), |i| i + after);
    &url[..end]
}

/// What the bare script keeps of an answer.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn location(&self) -> Option<String> {
        self.header(LOCATION.as_str()).map(str::to_owned)
    }

    /// The body as JSON (Xiaomi's `&&&START&&&` stripped).
    fn json(&self) -> Value {
        let text = std::str::from_utf8(&self.body).expect("UTF-8");
        let text = text.strip_prefix(JSON_PREFIX).unwrap_or(text);
        serde_json::from_str(text).expect("a JSON answer")
    }
}

/// A request body of the bare script.
enum Body<'a> {
    Empty,
    Form(&'a [(&'a str, &'a str)]),
    Json(Value),
}

/// One flow of the bare script: its own cookies, per real origin.
struct Script<'a> {
    bare: &'a Bare,
    jar: HashMap<String, BTreeMap<String, String>>,
    requests: usize,
}

impl Script<'_> {
    fn new(bare: &Bare) -> Script<'_> {
        Script {
            bare,
            jar: HashMap::new(),
            requests: 0,
        }
    }

    fn cookie(&self, origin: &str, name: &str) -> Option<&str> {
        self.jar.get(origin)?.get(name).map(String::as_str)
    }

    fn set_cookie(&mut self, origin: &str, name: &str, value: &str) {
        self.jar
            .entry(origin.to_owned())
            .or_default()
            .insert(name.to_owned(), value.to_owned());
    }

    /// Sends one request; a GET that B2C answers with a routing hop (a redirect to the same
    /// path on its own host, as the real tenant sends) is sent again there, as every real
    /// client does.
    async fn send(
        &mut self,
        method: Method,
        real: &str,
        headers: &[(&'static str, &str)],
        body: Body<'_>,
    ) -> Answer {
        let get = method == Method::GET;
        let mut answer = self.send_once(method, real, headers, body).await;
        let mut at = real.to_owned();
        for _ in 0..10 {
            if !get || !(300..400).contains(&answer.status) {
                break;
            }
            let Some(next) = answer.location().map(|l| self.real_url(&at, &l)) else {
                break;
            };
            let same_path = |u: &str| {
                Url::parse(u)
                    .ok()
                    .map(|u| (u.origin(), u.path().to_owned()))
            };
            if same_path(&next) != same_path(&at) {
                break;
            }
            answer = self
                .send_once(Method::GET, &next, headers, Body::Empty)
                .await;
            at = next;
        }
        answer
    }

    /// `location` as a real URL: relative ones resolved against `at`, the doubles' own
    /// addresses mapped back to the real origins.
    fn real_url(&self, at: &str, location: &str) -> String {
        for (real, base) in self.bare.map.iter() {
            if let Some(rest) = location.strip_prefix(base.as_str()) {
                return format!("{real}{rest}");
            }
        }
        Url::parse(at)
            .and_then(|at| at.join(location))
            .map(|u| u.to_string())
            .unwrap_or_else(|_| location.to_owned())
    }

    async fn send_once(
        &mut self,
        method: Method,
        real: &str,
        headers: &[(&'static str, &str)],
        body: Body<'_>,
    ) -> Answer {
        self.requests += 1;
        let bare = self.bare;
        let origin = origin(real);
        let base = &bare
            .map
            .iter()
            .find(|(r, _)| r == origin)
            .expect("a mapped origin")
            .1;
        let mut request = bare
            .client
            .request(method, format!("{base}{}", &real[origin.len()..]));
        if let Some(jar) = self.jar.get(origin).filter(|jar| !jar.is_empty()) {
            let cookies: Vec<String> = jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            request = request.header(COOKIE, cookies.join("; "));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request = match body {
            Body::Empty => request,
            Body::Form(form) => request.form(form),
            Body::Json(value) => request.json(&value),
        };
        let mut response = request.send().await.expect("the double answers");
        let status = response.status().as_u16();
        let headers = std::mem::take(response.headers_mut());
        let jar = self.jar.entry(origin.to_owned()).or_default();
        // Later cookies replace earlier ones of the same name (B2C renews its own).
        for value in headers.get_all(SET_COOKIE) {
            let Ok(text) = value.to_str() else { continue };
            let Some((name, value)) = text.split(';').next().and_then(|p| p.split_once('=')) else {
                continue;
            };
            if text.to_ascii_lowercase().contains("max-age=0") {
                jar.remove(name.trim());
            } else {
                jar.insert(name.trim().to_owned(), value.trim().to_owned());
            }
        }
        let body = response.bytes().await.expect("a body").to_vec();
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn get(&mut self, real: &str) -> Answer {
        self.send(Method::GET, real, &[], Body::Empty).await
    }

    /// Walks redirects by hand until an answer that is not one.
    async fn follow(&mut self, mut answer: Answer) -> Answer {
        for _ in 0..10 {
            if !(300..400).contains(&answer.status) {
                return answer;
            }
            let next = answer.location().expect("a Location");
            answer = self.get(&next).await;
        }
        panic!("too many redirects");
    }
}

/// The Librus login as the provider makes it; returns the number of requests.
async fn bare_librus(bare: &Bare) -> usize {
    let mut s = Script::new(bare);
    let root = s.get(&format!("{LIBRUS_API}/")).await;
    assert_ne!(root.status, 503);
    let referer = [("referer", "https://portal.librus.pl/")];
    let entry = s
        .send(
            Method::GET,
            &format!("{SYNERGIA}/loguj/portalRodzina"),
            &referer,
            Body::Empty,
        )
        .await;
    assert_eq!(entry.status, 302);
    let authorization = entry.location().expect("to the authorization");
    assert_eq!(s.get(&authorization).await.status, 200);
    let login = s
        .send(
            Method::POST,
            &format!("{LIBRUS_API}/OAuth/Authorization?client_id=46"),
            &[XHR],
            Body::Form(&[
                ("action", "login"),
                ("login", librus_double::DEMO_LOGIN),
                ("pass", librus_double::DEMO_PASSWORD),
            ]),
        )
        .await
        .json();
    assert_eq!(login["status"], "ok");
    let go_to = login["goTo"].as_str().expect("goTo");
    let first = s.get(&format!("{LIBRUS_API}{go_to}")).await;
    let end = s.follow(first).await;
    assert!(end.status < 400);
    assert!(s.cookie(SYNERGIA, "oauth_token").is_some());
    let info = s
        .get(&format!("{SYNERGIA}/gateway/api/2.0/Auth/TokenInfo"))
        .await
        .json();
    let id = info["UserIdentifier"].as_str().expect("UserIdentifier");
    let activation = s
        .get(&format!("{SYNERGIA}/gateway/api/2.0/Auth/UserInfo/{id}"))
        .await;
    assert_eq!(activation.status, 200);
    for name in ["DZIENNIKSID", "SDZIENNIKSID", "oauth_token"] {
        assert!(s.cookie(SYNERGIA, name).is_some(), "{name}");
    }
    s.requests
}

/// `serviceLogin` then `serviceLoginAuth2`; returns the login's JSON answer.
async fn bare_xiaomi_password(s: &mut Script<'_>, user: &str) -> Value {
    s.set_cookie(ACCOUNT, "sdkVersion", "accountsdk-18.8.15");
    s.set_cookie(ACCOUNT, "deviceId", "bnchmk");
    let first = s
        .get(&format!(
            "{ACCOUNT}/pass/serviceLogin?sid=xiaomiio&_json=true"
        ))
        .await
        .json();
    let sign = first["_sign"].as_str().expect("_sign").to_owned();
    let hash = hex::encode_upper(Md5::digest(xiaomi_double::DEMO_PASSWORD.as_bytes()));
    s.send(
        Method::POST,
        &format!("{ACCOUNT}/pass/serviceLoginAuth2"),
        &[],
        Body::Form(&[
            ("hash", hash.as_str()),
            ("_json", "true"),
            ("sid", "xiaomiio"),
            ("callback", STS_CALLBACK),
            ("qs", "%3Fsid%3Dxiaomiio%26_json%3Dtrue"),
            ("_sign", sign.as_str()),
            ("user", user),
        ]),
    )
    .await
    .json()
}

/// The one-time STS URL: it sets `serviceToken`.
async fn bare_open_sts(s: &mut Script<'_>, sts_url: &str) {
    let first = s.get(sts_url).await;
    let answer = s.follow(first).await;
    assert_eq!(answer.status, 200);
    let pragma = answer
        .header("extension-pragma")
        .and_then(|p| serde_json::from_str::<Value>(p).ok());
    std::hint::black_box(pragma);
    for name in ["serviceToken", "userId", "cUserId"] {
        assert!(s.cookie(STS, name).is_some(), "{name}");
    }
}

async fn bare_xiaomi(bare: &Bare) -> usize {
    let mut s = Script::new(bare);
    let answer = bare_xiaomi_password(&mut s, xiaomi_double::DEMO_USER).await;
    assert_eq!(answer["code"], 0);
    assert!(answer["ssecurity"].is_string());
    let location = answer["location"].as_str().expect("the STS URL");
    bare_open_sts(&mut s, location).await;
    s.requests
}

async fn bare_xiaomi_sms(bare: &Bare, doubles: &Doubles) -> usize {
    let mut s = Script::new(bare);
    let answer = bare_xiaomi_password(&mut s, xiaomi_double::DEMO_2FA_USER).await;
    let notification = answer["notificationUrl"].as_str().expect("2FA wanted");
    let notification = Url::parse(notification).expect("a URL");
    let context = query_value(&notification, "context");
    let mut list_url = notification.clone();
    list_url.set_path("/identity/list");
    let list = s.get(list_url.as_str()).await.json();
    assert_eq!(list["flag"], 4);
    let dc = unix_seconds() * 1000;
    let sent = s
        .send(
            Method::POST,
            &format!("{ACCOUNT}/identity/auth/sendPhoneTicket?_dc={dc}&sid=xiaomiio&context={context}&mask=0&_locale=en_US"),
            &[XHR],
            Body::Form(&[("retry", "0"), ("icode", ""), ("_json", "true")]),
        )
        .await
        .json();
    assert_eq!(sent["code"], 0);
    let code = doubles.code(Kind::XiaomiSms);
    let verified = s
        .send(
            Method::POST,
            &format!("{ACCOUNT}/identity/auth/verifyPhone?_dc={dc}&sid=xiaomiio&context={context}&mask=0"),
            &[XHR],
            Body::Form(&[
                ("_flag", "4"),
                ("ticket", code.as_str()),
                ("trust", "true"),
                ("_json", "true"),
            ]),
        )
        .await
        .json();
    assert_eq!(verified["code"], 0);
    // identity/result/check → serviceLoginAuth2/end (extension-pragma: ssecurity) → STS.
    let mut next = verified["location"].as_str().expect("location").to_owned();
    let mut pragma = None;
    while origin(&next) != STS {
        let answer = s.get(&next).await;
        pragma = answer
            .header("extension-pragma")
            .map(str::to_owned)
            .or(pragma);
        next = answer.location().expect("a redirect toward STS");
    }
    assert!(pragma.is_some());
    bare_open_sts(&mut s, &next).await;
    s.requests
}

/// A Lynk & Co `SelfAsserted` POST (the password, then the code); B2C's verdict is the body's.
async fn bare_lynkco_self_asserted(
    s: &mut Script<'_>,
    csrf: &str,
    trans: &str,
    form: &[(&str, &str)],
) {
    let tx = format!("StateProperties={trans}");
    let query = [("p", lynkco_double::POLICY), ("tx", tx.as_str())];
    let to = Url::parse_with_params(&format!("{LYNKCO}SelfAsserted"), query).expect("a URL");
    let headers = [("x-csrf-token", csrf)];
    let answer = s
        .send(Method::POST, to.as_str(), &headers, Body::Form(form))
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["status"], "200");
}

/// Lynk & Co's `api/<page>/confirmed` URL with the app's query (`diags` names the page left).
fn lynkco_confirmed(page: &str, csrf: &str, trans: &str, page_view_id: &str) -> Url {
    let diags = json!({"pageViewId": page_view_id, "pageId": page, "trace": []}).to_string();
    let tx = format!("StateProperties={trans}");
    let remember = (page == "CombinedSigninAndSignup").then_some(("rememberMe", "false"));
    let query = remember.into_iter().chain([
        ("csrf_token", csrf),
        ("tx", tx.as_str()),
        ("p", lynkco_double::POLICY),
        ("diags", diags.as_str()),
    ]);
    Url::parse_with_params(&format!("{LYNKCO}api/{page}/confirmed"), query).expect("a URL")
}

/// B2C's `x-ms-cpim-csrf` and `x-ms-cpim-trans` cookies, as the script holds them now.
fn lynkco_cookies(s: &Script<'_>) -> (String, String) {
    let cookie = |name: &str| {
        let value = s.cookie(lynkco_double::B2C_ORIGIN, name).expect(name);
        value.to_owned()
    };
    (cookie("x-ms-cpim-csrf"), cookie("x-ms-cpim-trans"))
}

/// Lynk & Co as the provider signs in: authorize (PKCE), the password, the phone page (the SMS
/// goes out), the code, the app redirect (never fetched), the token grant, and IAM's
/// validate-session for the CCC token.
async fn bare_lynkco(bare: &Bare, doubles: &Doubles) -> usize {
    use lynkco_double::{CLIENT_ID, REDIRECT_URI, SCOPE_BASE};
    let mut s = Script::new(bare);
    let pkce = Pkce::generate();
    let scope = format!("{SCOPE_BASE}.read {SCOPE_BASE}.write profile offline_access");
    let query = [
        ("response_type", "code"),
        ("scope", scope.as_str()),
        ("code_challenge", pkce.challenge.as_str()),
        ("code_challenge_method", "S256"),
        ("redirect_uri", REDIRECT_URI),
        ("client_id", CLIENT_ID),
    ];
    let authorize =
        Url::parse_with_params(&format!("{LYNKCO}oauth2/v2.0/authorize"), query).expect("a URL");
    let accept = (
        "accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    );
    let page = s
        .send(Method::GET, authorize.as_str(), &[accept], Body::Empty)
        .await;
    assert_eq!(page.status, 200);
    let first_view = page.header(REQUEST_ID).expect("a page view").to_owned();
    let (csrf, trans) = lynkco_cookies(&s);
    let password = [
        ("request_type", "RESPONSE"),
        ("signInName", lynkco_double::DEMO_EMAIL),
        ("password", lynkco_double::DEMO_PASSWORD),
    ];
    bare_lynkco_self_asserted(&mut s, &csrf, &trans, &password).await;
    let confirmed = lynkco_confirmed("CombinedSigninAndSignup", &csrf, &trans, &first_view);
    let phone_page = s
        .send(
            Method::GET,
            confirmed.as_str(),
            &[("accept", "text/html")],
            Body::Empty,
        )
        .await;
    assert_eq!(phone_page.status, 200);
    let page_view = phone_page
        .header(REQUEST_ID)
        .expect("a page view")
        .to_owned();

    // Here the engine stores its flow and waits for the user.
    let code = doubles.code(Kind::Lynkco);
    let (csrf, trans) = lynkco_cookies(&s);
    let verification = [
        ("verificationCode", code.as_str()),
        ("request_type", "RESPONSE"),
    ];
    bare_lynkco_self_asserted(&mut s, &csrf, &trans, &verification).await;
    let to = lynkco_confirmed("SelfAsserted", &csrf, &trans, &page_view);
    let referer = [("referer", confirmed.as_str())];
    let redirect = s
        .send(Method::GET, to.as_str(), &referer, Body::Empty)
        .await;
    let location = redirect.location().expect("the app redirect");
    assert!(location.starts_with(REDIRECT_URI), "{location}");
    let auth_code = query_value(&Url::parse(&location).expect("a URL"), "code");
    let scope = format!("{SCOPE_BASE}.read {SCOPE_BASE}.write openid profile offline_access");
    let grant = [
        ("client_info", "1"),
        ("scope", scope.as_str()),
        ("code", auth_code.as_str()),
        ("grant_type", "authorization_code"),
        ("code_verifier", pkce.verifier.as_str()),
        ("redirect_uri", REDIRECT_URI),
        ("client_id", CLIENT_ID),
    ];
    let tokens = s
        .send(
            Method::POST,
            &format!("{LYNKCO}oauth2/v2.0/token"),
            &[],
            Body::Form(&grant),
        )
        .await;
    assert_eq!(tokens.status, 200);
    let tokens = tokens.json();
    let access_token = tokens["access_token"].as_str().expect("an access token");
    let ccc = s
        .send(
            Method::POST,
            &format!("{}/validate-session", lynkco_double::IAM_ORIGIN),
            &[("x-auth-token", access_token), ("api-version", "1")],
            Body::Json(json!({"deviceUuid": uuid_v4(), "isLogin": true})),
        )
        .await;
    assert_eq!(ccc.status, 200);
    let ccc = ccc.json();
    let ccc_expires_at = jwt_exp(ccc["cccToken"].as_str().expect("cccToken")).expect("its exp");
    let email = tokens["id_token"].as_str().and_then(jwt_email);
    assert!(tokens["refresh_token"].is_string() && tokens["expires_in"].is_number());
    std::hint::black_box((ccc_expires_at, email));
    s.requests
}

/// FlameConnect as the provider (MSAL's auth-code flow) signs in: discovery, the authorize page
/// (PKCE, `state`, a hashed nonce) and its SETTINGS, the password, `confirmed` and its
/// same-origin hop up to the app redirect (never fetched), the code for tokens, the id_token's
/// nonce, audience and expiry checked.
async fn bare_flameconnect(bare: &Bare) -> usize {
    use flame_double::{CLIENT_ID, ORIGIN, POLICY, REDIRECT_URI, TENANT};
    let mut s = Script::new(bare);
    let base = format!("{ORIGIN}/{TENANT}/{POLICY}");
    let discovery = s
        .get(&format!("{base}/v2.0/.well-known/openid-configuration"))
        .await
        .json();
    let endpoint = |name: &str| {
        let found = Url::parse(discovery[name].as_str().expect(name)).expect("a URL");
        assert_eq!(origin(found.as_str()), ORIGIN);
        found
    };
    let mut authorize = endpoint("authorization_endpoint");
    let token_endpoint = endpoint("token_endpoint");
    let pkce = Pkce::generate();
    let state = token_urlsafe16();
    let nonce = sha256_hex(&token_urlsafe16());
    let scope = format!("{} openid profile offline_access", flame_double::SCOPE);
    authorize
        .query_pairs_mut()
        .append_pair("client_id", CLIENT_ID)
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", REDIRECT_URI)
        .append_pair("scope", &scope)
        .append_pair("state", &state)
        .append_pair("code_challenge", &pkce.challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("nonce", &nonce)
        .append_pair("client_info", "1");
    let first = s.get(authorize.as_str()).await;
    let page = s.follow(first).await;
    assert_eq!(page.status, 200);
    let settings = page_settings(&String::from_utf8_lossy(&page.body)).expect("csrf, transId");
    // flameconnect sends `tx` and `csrf_token` with their `=` unencoded.
    let tx = keep_equals(&settings.trans_id);
    let signed_in = s
        .send(
            Method::POST,
            &format!("{base}/SelfAsserted?tx={tx}&p={POLICY}"),
            &[
                ("x-csrf-token", settings.csrf.as_str()),
                XHR,
                ("referer", authorize.as_str()),
                ("origin", ORIGIN),
                ("accept", "application/json, text/javascript, */*; q=0.01"),
            ],
            Body::Form(&[
                ("request_type", "RESPONSE"),
                ("email", flame_double::DEMO_EMAIL),
                ("password", flame_double::DEMO_PASSWORD),
            ]),
        )
        .await;
    assert_eq!(signed_in.status, 200);
    assert_eq!(signed_in.json()["status"], "200");
    let csrf = keep_equals(&settings.csrf);
    let mut next = format!(
        "{base}/api/CombinedSigninAndSignup/confirmed?rememberMe=false&csrf_token={csrf}&tx={tx}&p={POLICY}"
    );
    while !next.starts_with(REDIRECT_URI) {
        next = s.get(&next).await.location().expect("a redirect");
    }
    let redirect = Url::parse(&next).expect("a URL");
    assert_eq!(query_value(&redirect, "state"), state);
    let code = query_value(&redirect, "code");
    let grant = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT_URI),
        ("scope", scope.as_str()),
        ("client_id", CLIENT_ID),
        ("code_verifier", pkce.verifier.as_str()),
        ("client_info", "1"),
    ];
    let answer = s
        .send(
            Method::POST,
            token_endpoint.as_str(),
            &[],
            Body::Form(&grant),
        )
        .await;
    assert_eq!(answer.status, 200);
    let tokens = answer.json();
    let id_token = tokens["id_token"].as_str().expect("an id_token");
    let claims = jwt_claims(id_token).expect("its claims");
    assert_eq!(claims["nonce"], nonce.as_str());
    assert_eq!(claims["aud"], CLIENT_ID);
    assert!(claims["exp"].as_u64().expect("exp") > unix_seconds());
    assert!(tokens["refresh_token"].is_string() && tokens["expires_in"].is_number());
    std::hint::black_box(jwt_email(id_token));
    s.requests
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// The value of `name` in a URL's query.
fn query_value(url: &Url, name: &str) -> String {
    let (_, value) = url
        .query_pairs()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no {name} in the URL"));
    value.into_owned()
}

async fn bare_flow(bare: &Bare, doubles: &Doubles, kind: Kind) -> usize {
    match kind {
        Kind::Librus => bare_librus(bare).await,
        Kind::Xiaomi => bare_xiaomi(bare).await,
        Kind::XiaomiSms => bare_xiaomi_sms(bare, doubles).await,
        Kind::Lynkco => bare_lynkco(bare, doubles).await,
        Kind::FlameConnect => bare_flameconnect(bare).await,
    }
}

struct Bench {
    engine: Engine,
    bare: Bare,
    doubles: Arc<Doubles>,
    /// One Stepgate user per flow of a round.
    users: Arc<Vec<i64>>,
    /// How long each account removal (one DELETE, one commit) took.
    commits: Mutex<Vec<Duration>>,
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

impl Bench {
    /// Runs `flows` complete flows of `kind`, `workers` at a time; returns the wall time. The
    /// engine's accounts are removed afterwards and the B2C doubles' transactions expired, outside
    /// the timing.
    async fn run(&self, side: Side, kind: Kind, flows: usize, workers: usize) -> Duration {
        assert!(flows <= self.users.len());
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let tasks: Vec<_> = (0..workers)
            .map(|_| {
                let engine = self.engine.clone();
                let bare = self.bare.clone();
                let doubles = self.doubles.clone();
                let users = self.users.clone();
                let next = next.clone();
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= flows {
                            break;
                        }
                        match side {
                            Side::Engine => {
                                engine_connect(&engine, &doubles, kind, users[i]).await;
                            }
                            Side::Bare => {
                                bare_flow(&bare, &doubles, kind).await;
                            }
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("a worker");
        }
        let elapsed = started.elapsed();
        if side == Side::Engine {
            self.remove_accounts().await;
        }
        self.doubles.expire_transactions();
        elapsed
    }

    async fn remove_accounts(&self) {
        let accounts = self.engine.accounts();
        for &user in self.users.iter() {
            for account in accounts.list(user).await.expect("the user's accounts") {
                let t = Instant::now();
                accounts.remove(user, account.id).await.expect("removed");
                self.commits.lock().expect("commits").push(t.elapsed());
            }
        }
    }

    async fn measure(&self, kind: Kind, workers: usize) -> Row {
        self.measure_with(kind, workers, FLOWS, WARM_UP, ROUNDS)
            .await
    }

    async fn measure_with(
        &self,
        kind: Kind,
        workers: usize,
        flows: usize,
        warm_up: usize,
        rounds: usize,
    ) -> Row {
        self.run(Side::Bare, kind, warm_up, workers).await;
        self.run(Side::Engine, kind, warm_up, workers).await;
        let (mut engine, mut bare) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            // Alternating which side goes first, so drift on the machine hits both alike.
            if round % 2 == 0 {
                bare.push(self.run(Side::Bare, kind, flows, workers).await);
                engine.push(self.run(Side::Engine, kind, flows, workers).await);
            } else {
                engine.push(self.run(Side::Engine, kind, flows, workers).await);
                bare.push(self.run(Side::Bare, kind, flows, workers).await);
            }
        }
        let mut ratios: Vec<f64> = engine
            .iter()
            .zip(&bare)
            .map(|(e, b)| e.as_secs_f64() / b.as_secs_f64())
            .collect();
        ratios.sort_by(f64::total_cmp);
        Row {
            kind,
            workers,
            flows,
            requests: bare_flow(&self.bare, &self.doubles, kind).await,
            engine: median(engine),
            bare: median(bare),
            ratios,
        }
    }
}

struct Row {
    kind: Kind,
    workers: usize,
    /// Flows per round.
    flows: usize,
    requests: usize,
    /// Median wall time of a round of `FLOWS` flows.
    engine: Duration,
    bare: Duration,
    /// Engine / bare per round, sorted.
    ratios: Vec<f64>,
}

impl Row {
    fn print(&self) {
        let per_flow = |d: Duration| d.as_secs_f64() * 1e3 / self.flows as f64;
        let per_second = |d: Duration| self.flows as f64 / d.as_secs_f64();
        println!(
            "  {:<19} {:>3} {:>4} {:>10.0} {:>9.3} {:>10.0} {:>9.3} {:>9.3} {:>6.3} ({:.3}–{:.3})",
            self.kind.label(),
            self.workers,
            self.requests,
            per_second(self.engine),
            per_flow(self.engine),
            per_second(self.bare),
            per_flow(self.bare),
            per_flow(self.engine) - per_flow(self.bare),
            self.engine.as_secs_f64() / self.bare.as_secs_f64(),
            self.ratios[0],
            self.ratios[self.ratios.len() - 1],
        );
    }
}

/// Stored sizes of one flow row, in bytes.
struct RowBytes {
    step: String,
    state: i64,
    view: i64,
    row: i64,
}

async fn row_bytes(engine: &Engine, flow_id: &str) -> RowBytes {
    let (step, state, view, row): (String, i64, i64, i64) = sqlx::query_as(
        "SELECT step, length(CAST(state AS BLOB)), coalesce(length(CAST(view AS BLOB)), 0),
                length(CAST(id AS BLOB)) + length(CAST(kind AS BLOB))
                + length(CAST(provider AS BLOB)) + length(CAST(step AS BLOB))
                + coalesce(length(CAST(owner AS BLOB)), 0) + length(CAST(state AS BLOB))
                + coalesce(length(CAST(view AS BLOB)), 0) + 3 * 8
         FROM flows WHERE id = $1",
    )
    .bind(flow_id)
    .fetch_one(engine.pool())
    .await
    .expect("the flow's row");
    RowBytes {
        step,
        state,
        view,
        row,
    }
}

/// Pages in use (the file's pages less the free list).
async fn pages_in_use(engine: &Engine) -> i64 {
    let count: i64 = sqlx::query_scalar("PRAGMA page_count")
        .fetch_one(engine.pool())
        .await
        .expect("page_count");
    let free: i64 = sqlx::query_scalar("PRAGMA freelist_count")
        .fetch_one(engine.pool())
        .await
        .expect("freelist_count");
    count - free
}

/// Starts one flow of `kind` per user, all left waiting at their first step, and measures what
/// they store; then walks the first flow on through the steps it waits at before its code.
async fn pending_flows(bench: &Bench, kind: Kind) {
    let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(bench.engine.pool())
        .await
        .expect("page_size");
    let before = pages_in_use(&bench.engine).await;
    let mut flows = Vec::new();
    for &user_id in bench.users.iter() {
        match start_flow(&bench.engine, kind, user_id).await {
            Ok(Progress::Next(flow)) => flows.push(flow.flow_id),
            other => panic!("{kind:?}: a waiting step expected, got {other:?}"),
        }
    }
    let growth = (pages_in_use(&bench.engine).await - before) * page_size;
    let mut rows = vec![row_bytes(&bench.engine, &flows[0]).await];
    let first_step = rows[0].step.clone();
    let mut flow_id = flows[0].clone();
    for &next in kind.submits() {
        if let Submit::Code = next {
            break;
        }
        let fields = submit_input(&bench.doubles, kind, next);
        flow_id = match bench
            .engine
            .submit_flow(&flow_id, Some(OWNER), &fields)
            .await
        {
            Ok(Progress::Next(step)) => step.flow_id,
            other => panic!("{kind:?}: a further step expected, got {other:?}"),
        };
        rows.push(row_bytes(&bench.engine, &flow_id).await);
    }
    println!("bytes stored per pending flow ({}):", kind.label());
    for r in &rows {
        println!(
            "  waiting at {:<10} sealed state {:>5} B ({} B plaintext), view {:>4} B, row {:>5} B",
            r.step,
            r.state,
            r.state - 28,
            r.view,
            r.row,
        );
    }
    println!(
        "  {} flows waiting at {first_step} grew the database by {} B: {} B per flow (pages, indexes included)",
        flows.len(),
        growth,
        growth / flows.len() as i64
    );
}

/// A flow with waiting steps, through the engine one user after another, each engine call timed
/// on its own.
async fn engine_steps(bench: &Bench, kind: Kind) {
    let mut calls: Vec<Vec<Duration>> = vec![Vec::new(); kind.calls().len()];
    for &user_id in bench.users.iter() {
        let times = engine_connect(&bench.engine, &bench.doubles, kind, user_id).await;
        for (call, time) in calls.iter_mut().zip(times) {
            call.push(time);
        }
    }
    bench.remove_accounts().await;
    bench.doubles.expire_transactions();
    println!(
        "{} in the engine, step by step (median of {}):",
        kind.label(),
        bench.users.len()
    );
    let steps: Vec<String> = kind
        .calls()
        .iter()
        .zip(calls)
        .map(|((name, what), times)| {
            let ms = median(times).as_secs_f64() * 1e3;
            format!("{name} {ms:.3} ms ({what})")
        })
        .collect();
    println!("  {}", steps.join(" | "));
}

#[tokio::main]
async fn main() {
    // The database goes in a new folder under the first argument (default: the system's
    // temporary folder); `-- /dev/shm` puts it on tmpfs, where a commit waits for no disk.
    let dir = match std::env::args().nth(1) {
        Some(parent) => tempfile::tempdir_in(parent),
        None => tempfile::tempdir(),
    }
    .expect("a temporary folder");
    println!("database: {}", dir.path().display());
    let doubles = Arc::new(Doubles::spawn().await);
    let upstreams = doubles.upstreams();
    let engine = Engine::open(engine_config(dir.path(), &upstreams))
        .await
        .expect("the engine opens");
    let registrations: Vec<_> = (0..FLOWS)
        .map(|i| {
            let engine = engine.clone();
            tokio::spawn(async move {
                let email = format!("bench{i}@example.org");
                engine
                    .register(
                        &email,
                        "bench-password-quiet-harbor",
                        "bench-password-quiet-harbor",
                    )
                    .await
                    .expect("registered")
                    .id
            })
        })
        .collect();
    let mut users = Vec::new();
    for registration in registrations {
        users.push(registration.await.expect("a registration"));
    }
    let bench = Bench {
        engine,
        bare: Bare::new(&upstreams),
        doubles: doubles.clone(),
        users: Arc::new(users),
        commits: Mutex::new(Vec::new()),
    };

    // First, while no row was ever deleted (no free pages to reuse).
    for kind in [Kind::XiaomiSms, Kind::Lynkco] {
        pending_flows(&bench, kind).await;
    }
    println!();

    let mut rows = Vec::new();
    for (kind, workers) in [
        (Kind::Librus, 1),
        (Kind::Librus, AT_ONCE),
        (Kind::Xiaomi, 1),
        (Kind::Xiaomi, AT_ONCE),
        (Kind::XiaomiSms, 1),
        (Kind::Lynkco, 1),
        (Kind::FlameConnect, 1),
        (Kind::FlameConnect, AT_ONCE),
    ] {
        rows.push(bench.measure(kind, workers).await);
    }
    println!(
        "complete connects, {FLOWS} per round, median of {ROUNDS} rounds after a warm-up of {WARM_UP} \
         (bare: the same requests with plain reqwest, no engine, no database):"
    );
    println!(
        "  {:<19} {:>3} {:>4} {:>10} {:>9} {:>10} {:>9} {:>9} {:>6} (rounds)",
        "flow", "at", "reqs", "engine/s", "ms/flow", "bare/s", "ms/flow", "extra ms", "ratio"
    );
    for row in &rows {
        row.print();
    }
    println!("  (at 8 at once, ms/flow is wall time / flows)");

    // The same flows when every upstream answer takes 20 ms, a near real service's round trip:
    // what a user would see of the engine's cost.
    doubles.set_latency(LATENCY);
    println!(
        "the same with {} ms per upstream answer (10 flows a round, median of 3 rounds):",
        LATENCY.as_millis()
    );
    let all = [
        Kind::Librus,
        Kind::Xiaomi,
        Kind::XiaomiSms,
        Kind::Lynkco,
        Kind::FlameConnect,
    ];
    for kind in all {
        bench.measure_with(kind, 1, 10, 2, 3).await.print();
    }
    doubles.set_latency(Duration::ZERO);
    for kind in [Kind::XiaomiSms, Kind::Lynkco] {
        engine_steps(&bench, kind).await;
    }
    println!("engine writes per flow:");
    for kind in all {
        println!("  {:<19} {}", kind.label(), kind.writes());
    }
    let commits = std::mem::take(&mut *bench.commits.lock().expect("commits"));
    let n = commits.len();
    println!(
        "one SQLite write commit here (an account DELETE, WAL, synchronous=FULL): median {:.3} ms of {n}",
        median(commits).as_secs_f64() * 1e3
    );
}
