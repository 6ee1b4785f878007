//! Connected-account flows on this machine: `cargo run --release -p engine --example connect_bench`.
//!
//! Starts the Librus and Xiaomi doubles in-process and an engine on a temporary SQLite file (on
//! disk; WAL and `synchronous=FULL`, as the server runs it), then prints:
//! 1. complete connects per second, one at a time and 8 at a time, for Librus and for Xiaomi
//!    without 2FA, and one at a time for Xiaomi with the SMS code (send code, then verify);
//! 2. the engine's time per flow over a bare `reqwest` script that makes the same requests in
//!    the same order against the same doubles (one shared client, a cookie map per origin,
//!    redirects walked by hand; no engine, no database): medians of several rounds after a
//!    warm-up, the two sides alternating which goes first;
//! 3. the bytes a pending flow keeps in the `flows` table (a Xiaomi flow waiting at its 2FA
//!    step, then at its code step), and what one SQLite write commit costs here.
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

use engine::providers::{Input, Purpose};
use engine::secrets::SecretKey;
use engine::upstream::UpstreamMap;
use engine::{Completion, Engine, EngineConfig, Progress};
use md5::{Digest, Md5};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::Method;
use sandbox::librus::{self as librus_double, LibrusSandbox};
use sandbox::xiaomi::{self as xiaomi_double, Xiaomi, XiaomiSandbox};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Librus,
    Xiaomi,
    XiaomiSms,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Librus => "Librus",
            Kind::Xiaomi => "Xiaomi, no 2FA",
            Kind::XiaomiSms => "Xiaomi, SMS code",
        }
    }

    /// SQLite writes the engine makes in one flow (reads aside).
    fn writes(self) -> &'static str {
        match self {
            Kind::Librus | Kind::Xiaomi => "1 (the account)",
            Kind::XiaomiSms => "4 (flow insert, update, delete; the account) + 2 reads",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Engine,
    Bare,
}

/// The engine's configuration, built in one place.
fn engine_config(dir: &std::path::Path, upstreams: &str) -> EngineConfig {
    let key = SecretKey::load_or_create(Some(&"05".repeat(32)), dir).expect("a 64-hex-digit key");
    let mut config = EngineConfig::new(
        engine::db::sqlite_url_in(dir),
        key,
        engine::totp_site::TotpSite {
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

/// One complete connect through the engine, for Stepgate user `user_id`.
async fn engine_connect(engine: &Engine, codes: &Xiaomi, kind: Kind, user_id: i64) {
    let purpose = Purpose::Connect { user_id };
    let owner = Some(OWNER.to_owned());
    let done = match kind {
        Kind::Librus => {
            let fields = input(&[
                ("login", librus_double::DEMO_LOGIN),
                ("password", librus_double::DEMO_PASSWORD),
            ]);
            engine.start_flow("librus", purpose, owner, &fields).await
        }
        Kind::Xiaomi => {
            let fields = input(&[
                ("username", xiaomi_double::DEMO_USER),
                ("password", xiaomi_double::DEMO_PASSWORD),
            ]);
            engine.start_flow("xiaomi", purpose, owner, &fields).await
        }
        Kind::XiaomiSms => {
            let fields = input(&[
                ("username", xiaomi_double::DEMO_2FA_USER),
                ("password", xiaomi_double::DEMO_PASSWORD),
            ]);
            let flow = match engine.start_flow("xiaomi", purpose, owner, &fields).await {
                Ok(Progress::Next(flow)) => flow,
                other => panic!("the two_factor step expected, got {other:?}"),
            };
            let send = input(&[("action", "send_code")]);
            let code_step = match engine.submit_flow(&flow.flow_id, Some(OWNER), &send).await {
                Ok(Progress::Next(step)) => step,
                other => panic!("the code step expected, got {other:?}"),
            };
            let code = codes
                .latest_code(xiaomi_double::DEMO_2FA_USER)
                .expect("a code was sent");
            let fields = input(&[("code", code.as_str())]);
            engine
                .submit_flow(&code_step.flow_id, Some(OWNER), &fields)
                .await
        }
    };
    assert!(
        matches!(done, Ok(Progress::Done(Completion::Connected(_)))),
        "{kind:?}: {done:?}"
    );
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
    location: Option<String>,
    pragma: Option<String>,
    body: Vec<u8>,
}

impl Answer {
    /// The body as JSON (Xiaomi's `&&&START&&&` stripped).
    fn json(&self) -> serde_json::Value {
        let text = std::str::from_utf8(&self.body).expect("UTF-8");
        let text = text.strip_prefix(JSON_PREFIX).unwrap_or(text);
        serde_json::from_str(text).expect("a JSON answer")
    }
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

    async fn send(
        &mut self,
        method: Method,
        real: &str,
        headers: &[(&'static str, &str)],
        form: Option<&[(&str, &str)]>,
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
        if let Some(form) = form {
            request = request.form(form);
        }
        let response = request.send().await.expect("the double answers");
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let pragma = response
            .headers()
            .get("extension-pragma")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let jar = self.jar.entry(origin.to_owned()).or_default();
        for value in response.headers().get_all(SET_COOKIE) {
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
            location,
            pragma,
            body,
        }
    }

    async fn get(&mut self, real: &str) -> Answer {
        self.send(Method::GET, real, &[], None).await
    }

    /// Walks redirects by hand until an answer that is not one.
    async fn follow(&mut self, mut answer: Answer) -> Answer {
        for _ in 0..10 {
            if !(300..400).contains(&answer.status) {
                return answer;
            }
            let next = answer.location.take().expect("a Location");
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
            None,
        )
        .await;
    assert_eq!(entry.status, 302);
    let authorization = entry.location.expect("to the authorization");
    assert_eq!(s.get(&authorization).await.status, 200);
    let login = s
        .send(
            Method::POST,
            &format!("{LIBRUS_API}/OAuth/Authorization?client_id=46"),
            &[XHR],
            Some(&[
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
async fn bare_xiaomi_password(s: &mut Script<'_>, user: &str) -> serde_json::Value {
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
        Some(&[
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
        .pragma
        .as_deref()
        .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok());
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

async fn bare_xiaomi_sms(bare: &Bare, codes: &Xiaomi) -> usize {
    let mut s = Script::new(bare);
    let answer = bare_xiaomi_password(&mut s, xiaomi_double::DEMO_2FA_USER).await;
    let notification = answer["notificationUrl"].as_str().expect("2FA wanted");
    let notification = url::Url::parse(notification).expect("a URL");
    let context = notification
        .query_pairs()
        .find(|(k, _)| k == "context")
        .expect("a context")
        .1
        .into_owned();
    let mut list_url = notification.clone();
    list_url.set_path("/identity/list");
    let list = s.get(list_url.as_str()).await.json();
    assert_eq!(list["flag"], 4);
    let dc = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        * 1000;
    let sent = s
        .send(
            Method::POST,
            &format!("{ACCOUNT}/identity/auth/sendPhoneTicket?_dc={dc}&sid=xiaomiio&context={context}&mask=0&_locale=en_US"),
            &[XHR],
            Some(&[("retry", "0"), ("icode", ""), ("_json", "true")]),
        )
        .await
        .json();
    assert_eq!(sent["code"], 0);
    let code = codes
        .latest_code(xiaomi_double::DEMO_2FA_USER)
        .expect("a code was sent");
    let verified = s
        .send(
            Method::POST,
            &format!("{ACCOUNT}/identity/auth/verifyPhone?_dc={dc}&sid=xiaomiio&context={context}&mask=0"),
            &[XHR],
            Some(&[
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
        pragma = answer.pragma.or(pragma);
        next = answer.location.expect("a redirect toward STS");
    }
    assert!(pragma.is_some());
    bare_open_sts(&mut s, &next).await;
    s.requests
}

async fn bare_flow(bare: &Bare, codes: &Xiaomi, kind: Kind) -> usize {
    match kind {
        Kind::Librus => bare_librus(bare).await,
        Kind::Xiaomi => bare_xiaomi(bare).await,
        Kind::XiaomiSms => bare_xiaomi_sms(bare, codes).await,
    }
}

struct Bench {
    engine: Engine,
    bare: Bare,
    codes: Xiaomi,
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
    /// engine's accounts are removed afterwards, outside the timing.
    async fn run(&self, side: Side, kind: Kind, flows: usize, workers: usize) -> Duration {
        assert!(flows <= self.users.len());
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let tasks: Vec<_> = (0..workers)
            .map(|_| {
                let engine = self.engine.clone();
                let bare = self.bare.clone();
                let codes = self.codes.clone();
                let users = self.users.clone();
                let next = next.clone();
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= flows {
                            break;
                        }
                        match side {
                            Side::Engine => engine_connect(&engine, &codes, kind, users[i]).await,
                            Side::Bare => {
                                bare_flow(&bare, &codes, kind).await;
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
            requests: bare_flow(&self.bare, &self.codes, kind).await,
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
            "  {:<17} {:>3} {:>4} {:>10.0} {:>9.3} {:>10.0} {:>9.3} {:>9.3} {:>6.3} ({:.3}–{:.3})",
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
         FROM flows WHERE id = ?",
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

/// Starts one Xiaomi 2FA flow per user (all left pending) and measures what they store.
async fn pending_flows(bench: &Bench) {
    let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(bench.engine.pool())
        .await
        .expect("page_size");
    let before = pages_in_use(&bench.engine).await;
    let mut flows = Vec::new();
    for &user_id in bench.users.iter() {
        match start_two_factor(&bench.engine, user_id).await {
            Ok(Progress::Next(flow)) => flows.push(flow.flow_id),
            other => panic!("the two_factor step expected, got {other:?}"),
        }
    }
    let growth = (pages_in_use(&bench.engine).await - before) * page_size;
    let waiting = row_bytes(&bench.engine, &flows[0]).await;
    let send = input(&[("action", "send_code")]);
    let code_step = match bench
        .engine
        .submit_flow(&flows[0], Some(OWNER), &send)
        .await
    {
        Ok(Progress::Next(step)) => step,
        other => panic!("the code step expected, got {other:?}"),
    };
    let at_code = row_bytes(&bench.engine, &code_step.flow_id).await;
    println!("bytes stored per pending flow (Xiaomi, SMS 2FA user):");
    for r in [&waiting, &at_code] {
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
        "  {} flows waiting at two_factor grew the database by {} B: {} B per flow (pages, indexes included)",
        flows.len(),
        growth,
        growth / flows.len() as i64
    );
}

/// The SMS flow through the engine, step by step (each call timed on its own).
async fn sms_steps(bench: &Bench) {
    let (mut start, mut send, mut verify) = (Vec::new(), Vec::new(), Vec::new());
    for &user_id in bench.users.iter() {
        let t = Instant::now();
        let started = start_two_factor(&bench.engine, user_id).await;
        start.push(t.elapsed());
        let Ok(Progress::Next(flow)) = started else {
            panic!("the two_factor step expected, got {started:?}");
        };
        let fields = input(&[("action", "send_code")]);
        let t = Instant::now();
        let sent = bench
            .engine
            .submit_flow(&flow.flow_id, Some(OWNER), &fields)
            .await;
        send.push(t.elapsed());
        let Ok(Progress::Next(step)) = sent else {
            panic!("the code step expected, got {sent:?}");
        };
        let code = bench
            .codes
            .latest_code(xiaomi_double::DEMO_2FA_USER)
            .expect("a code was sent");
        let fields = input(&[("code", code.as_str())]);
        let t = Instant::now();
        let done = bench
            .engine
            .submit_flow(&step.flow_id, Some(OWNER), &fields)
            .await;
        verify.push(t.elapsed());
        assert!(matches!(done, Ok(Progress::Done(Completion::Connected(_)))));
    }
    bench.remove_accounts().await;
    let ms = |d: Vec<Duration>| median(d).as_secs_f64() * 1e3;
    println!(
        "Xiaomi SMS flow in the engine, step by step (median of {}):",
        bench.users.len()
    );
    println!(
        "  start {:.3} ms (2 requests; flow insert) | send code {:.3} ms (2 requests; flow read, update) | verify {:.3} ms (4 requests; flow read, delete, account insert)",
        ms(start),
        ms(send),
        ms(verify)
    );
}

/// A Xiaomi connect for the SMS-2FA demo user, up to its first waiting step.
async fn start_two_factor(
    engine: &Engine,
    user_id: i64,
) -> Result<Progress, engine::providers::StepError> {
    let fields = input(&[
        ("username", xiaomi_double::DEMO_2FA_USER),
        ("password", xiaomi_double::DEMO_PASSWORD),
    ]);
    engine
        .start_flow(
            "xiaomi",
            Purpose::Connect { user_id },
            Some(OWNER.to_owned()),
            &fields,
        )
        .await
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
    let librus = LibrusSandbox::spawn().await;
    let xiaomi = XiaomiSandbox::spawn().await;
    let upstreams = format!("{} {}", librus.upstreams(), xiaomi.upstreams());
    let engine = Engine::open(engine_config(dir.path(), &upstreams))
        .await
        .expect("the engine opens");
    let registrations: Vec<_> = (0..FLOWS)
        .map(|i| {
            let engine = engine.clone();
            tokio::spawn(async move {
                let email = format!("bench{i}@example.org");
                engine
                    .register(&email, "bench-password", "bench-password")
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
        codes: xiaomi.xiaomi.clone(),
        users: Arc::new(users),
        commits: Mutex::new(Vec::new()),
    };

    // First, while no row was ever deleted (no free pages to reuse).
    pending_flows(&bench).await;
    println!();

    let mut rows = Vec::new();
    for (kind, workers) in [
        (Kind::Librus, 1),
        (Kind::Librus, AT_ONCE),
        (Kind::Xiaomi, 1),
        (Kind::Xiaomi, AT_ONCE),
        (Kind::XiaomiSms, 1),
    ] {
        rows.push(bench.measure(kind, workers).await);
    }
    println!(
        "complete connects, {FLOWS} per round, median of {ROUNDS} rounds after a warm-up of {WARM_UP} \
         (bare: the same requests with plain reqwest, no engine, no database):"
    );
    println!(
        "  {:<17} {:>3} {:>4} {:>10} {:>9} {:>10} {:>9} {:>9} {:>6} (rounds)",
        "flow", "at", "reqs", "engine/s", "ms/flow", "bare/s", "ms/flow", "extra ms", "ratio"
    );
    for row in &rows {
        row.print();
    }
    println!("  (at 8 at once, ms/flow is wall time / flows)");

    // The same flows when every upstream answer takes 20 ms, a near real service's round trip:
    // what a user would see of the engine's cost.
    librus.set_latency(LATENCY);
    xiaomi.set_latency(LATENCY);
    println!(
        "the same with {} ms per upstream answer (10 flows a round, median of 3 rounds):",
        LATENCY.as_millis()
    );
    for kind in [Kind::Librus, Kind::Xiaomi, Kind::XiaomiSms] {
        bench.measure_with(kind, 1, 10, 2, 3).await.print();
    }
    librus.set_latency(Duration::ZERO);
    xiaomi.set_latency(Duration::ZERO);
    sms_steps(&bench).await;
    println!("engine writes per flow:");
    for kind in [Kind::Librus, Kind::Xiaomi, Kind::XiaomiSms] {
        println!("  {:<17} {}", kind.label(), kind.writes());
    }
    let commits = std::mem::take(&mut *bench.commits.lock().expect("commits"));
    let n = commits.len();
    println!(
        "one SQLite write commit here (an account DELETE, WAL, synchronous=FULL): median {:.3} ms of {n}",
        median(commits).as_secs_f64() * 1e3
    );
    drop(librus);
}
