//! `scripts/crash-soak.sh`'s driver: 1,000 flows through the release server over HTTP while a
//! supervisor `kill -9`s a random instance at random moments and starts it again.
//!
//! - Before any server runs, seeds through the engine's public API (same `STEPGATE_KEY`):
//!   sign-in users with a password and TOTP turned on (an authenticator-app seed enrolled with
//!   the code of a minute ago, so every later code is fresh), and connect users that hold an
//!   open session.
//! - Flows (shuffled, `--concurrency` at once): a sign-in with the second factor (`/api/sign_in`
//!   → `/login/code?flow=…` with the login cookie → `/api/verify_code` with the TOTP code this
//!   program computes), a FlameConnect connect (one form post, six upstream requests) and a
//!   Lynk & Co connect (password → SMS code read from the sandbox's inbox → code; the flow waits
//!   at its `code` step in between). Consecutive requests of a flow go to alternate instances,
//!   and a request that fails (connection refused or cut, a 5xx, `unknown`) is sent again to
//!   the other instance (with one instance: again, once it is back).
//! - At the end every instance is up again and the database is checked: every sign-in user has
//!   exactly one session, every connect user exactly one session and exactly one connected
//!   account whose sealed tokens open, no duplicate rows, and the integrity check passes
//!   (SQLite `PRAGMA integrity_check` and `foreign_key_check`; Postgres `pg_amcheck` with the
//!   amcheck extension). It prints the counts and exits 1 on any violation.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use loadgen::{
    client_address, form_body, http_client, machine_note, post_form, print_run_header, random_ms,
    unix_now, Answer, BoxError, Instance, Mode, Rig,
};
use rand::seq::SliceRandom;
use rand::Rng;
use tokio::sync::Mutex;

const PASSWORD: &str = "soak-password-1-quiet-harbor";
const LYNKCO_EMAIL: &str = "demo@lynkco.test";

struct Args {
    mode: Mode,
    flows: usize,
    concurrency: usize,
    instances: Option<usize>,
    kill_min_ms: u64,
    kill_max_ms: u64,
    down_max_ms: u64,
    /// Flow starts are spread over this many seconds (so the kills land all along the run).
    spread: u64,
}

fn usage() -> ! {
    eprintln!(
        "usage: crash_soak [--postgres] [--instances N] [--flows 1000] [--concurrency 24] \
         [--kill-every MIN_MS-MAX_MS (300-2500)] [--down-max-ms 1000] [--spread SECONDS (90)]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        mode: Mode::Sqlite,
        flows: 1000,
        concurrency: 24,
        instances: None,
        kill_min_ms: 300,
        kill_max_ms: 2500,
        down_max_ms: 1000,
        spread: 90,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--postgres" => args.mode = Mode::Postgres,
            "--instances" => args.instances = Some(value().parse().unwrap_or_else(|_| usage())),
            "--flows" => args.flows = value().parse().unwrap_or_else(|_| usage()),
            "--concurrency" => args.concurrency = value().parse().unwrap_or_else(|_| usage()),
            "--kill-every" => {
                let v = value();
                let (a, b) = v.split_once('-').unwrap_or_else(|| usage());
                args.kill_min_ms = a.parse().unwrap_or_else(|_| usage());
                args.kill_max_ms = b.parse().unwrap_or_else(|_| usage());
            }
            "--down-max-ms" => args.down_max_ms = value().parse().unwrap_or_else(|_| usage()),
            "--spread" => args.spread = value().parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    args
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    TotpSignIn,
    FlameConnect,
    Lynkco,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::TotpSignIn => "sign-in with TOTP",
            Kind::FlameConnect => "FlameConnect connect",
            Kind::Lynkco => "Lynk & Co connect (SMS code)",
        }
    }
}

/// One flow's user: a sign-in user (password + TOTP seed) or a connect user (a session).
#[derive(Clone)]
struct Subject {
    user_id: i64,
    email: String,
    secret: Option<Vec<u8>>,
    session_cookie: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ending {
    /// The client saw the flow complete.
    Completed,
    /// An attempt whose answer was lost (its instance was killed) completed it; a retry was
    /// told so (`flow_expired`, or `already_configured` for a connect). The database says
    /// whether it really did.
    CompletedAnswerLost,
    /// Gave up (after too many restarts): a violation.
    Failed,
    /// `flow_expired` without any lost answer before it: the flow was lost. A violation.
    FlowLost,
}

#[derive(Debug, Default, Clone)]
struct Notes {
    reached_step: usize,
    requests: usize,
    retried_requests: usize,
    restarts: usize,
    waited_for_next_totp_step: usize,
    throttled_seconds: u64,
    errors: BTreeMap<String, usize>,
}

struct FlowResult {
    kind: Kind,
    subject: Subject,
    ending: Ending,
    notes: Notes,
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    match run(args).await {
        Ok(0) => {}
        Ok(violations) => {
            eprintln!("crash soak: {violations} violation(s)");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("crash soak: {e}");
            std::process::exit(2);
        }
    }
}

async fn run(args: Args) -> Result<usize, BoxError> {
    print_run_header("crash_soak");
    let instance_count = args.instances.unwrap_or(args.mode.default_instances());
    let mut rig = Rig::new(args.mode, "soak").await?;
    println!(
        "database: {}, {instance_count} instance(s), data in {}",
        args.mode.name(),
        rig.dir.display()
    );

    // The mix: 40 % sign-ins with TOTP, 30 % FlameConnect, 30 % Lynk & Co.
    let totp_count = args.flows * 2 / 5;
    let lynkco_count = (args.flows - totp_count) / 2;
    let flame_count = args.flows - totp_count - lynkco_count;
    let started = Instant::now();
    let engine = rig.engine().await?;
    let totp_users = seed_totp_users(&engine, totp_count).await?;
    let connect_users = seed_session_users(&engine, flame_count + lynkco_count).await?;
    engine.pool().close().await;
    drop(engine);
    println!(
        "seeded {totp_count} users with a password and TOTP on, {} users with a session, in {:.1} s",
        flame_count + lynkco_count,
        started.elapsed().as_secs_f64()
    );
    let mut flows: Vec<(Kind, Subject)> = totp_users
        .into_iter()
        .map(|s| (Kind::TotpSignIn, s))
        .chain(
            connect_users
                .iter()
                .take(flame_count)
                .cloned()
                .map(|s| (Kind::FlameConnect, s)),
        )
        .chain(
            connect_users
                .iter()
                .skip(flame_count)
                .cloned()
                .map(|s| (Kind::Lynkco, s)),
        )
        .collect();
    flows.shuffle(&mut rand::thread_rng());

    let http = http_client(Some(Duration::from_secs(30)));
    rig.start_sandbox(&http).await?;
    rig.start_instances(instance_count, &http).await?;
    let origins = Arc::new(rig.origins());
    println!("servers: {}", origins.join(", "));
    let instances = Arc::new(Mutex::new(std::mem::take(&mut rig.instances)));

    // The supervisor.
    let stop = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(AtomicUsize::new(0));
    let supervisor = tokio::spawn(supervise(
        instances.clone(),
        http.clone(),
        stop.clone(),
        kills.clone(),
        (args.kill_min_ms, args.kill_max_ms, args.down_max_ms),
    ));

    let lynkco_inbox = format!(
        "http://{}/inbox.json",
        rig.double(sandbox::lynkco::B2C_ORIGIN)
    );
    let inbox_lock = Arc::new(Mutex::new(()));
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let flows = Arc::new(flows);
    let progress = Arc::new(AtomicUsize::new(0));
    let gap = Duration::from_secs(args.spread).as_secs_f64() / args.flows.max(1) as f64;
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (http, origins, flows, next, inbox_lock, lynkco_inbox, progress) = (
                http.clone(),
                origins.clone(),
                flows.clone(),
                next.clone(),
                inbox_lock.clone(),
                lynkco_inbox.clone(),
                progress.clone(),
            );
            tokio::spawn(async move {
                let mut results = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((kind, subject)) = flows.get(i).cloned() else {
                        break results;
                    };
                    let due = started + Duration::from_secs_f64(gap * i as f64);
                    tokio::time::sleep_until(due.into()).await;
                    let mut driver = Driver {
                        http: &http,
                        origins: &origins,
                        next_instance: i,
                        address: client_address(i),
                        notes: Notes::default(),
                        lost_answer: false,
                    };
                    let ending = match kind {
                        Kind::TotpSignIn => driver.totp_sign_in(&subject).await,
                        Kind::FlameConnect => driver.flameconnect(&subject).await,
                        Kind::Lynkco => driver.lynkco(&subject, &inbox_lock, &lynkco_inbox).await,
                    };
                    results.push(FlowResult {
                        kind,
                        subject,
                        ending,
                        notes: driver.notes,
                    });
                    let done = progress.fetch_add(1, Ordering::Relaxed) + 1;
                    if done % 100 == 0 {
                        eprintln!("  {done} flows done");
                    }
                }
            })
        })
        .collect();
    let mut results = Vec::new();
    for w in workers {
        results.extend(w.await?);
    }
    let flow_seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    supervisor.await?;
    // Every instance up again before the checks.
    let mut instances = instances.lock().await;
    let mut starts = Vec::new();
    for instance in instances.iter_mut() {
        if !instance.is_running() {
            instance.start()?;
        }
        instance.wait_ready(&http, Duration::from_secs(60)).await?;
        starts.push(instance.starts);
    }
    rig.instances = std::mem::take(&mut *instances);
    drop(instances);

    println!(
        "\n{} flows in {:.1} s (starts spread over {} s, at most {} at once); {} kill -9; server starts per instance: {:?}",
        results.len(),
        flow_seconds,
        args.spread,
        args.concurrency,
        kills.load(Ordering::Relaxed),
        starts
    );
    let violations = report_and_check(&rig, &results).await?;
    println!("after: {}", machine_note());
    rig.stop().await;
    rig.clean_up(violations == 0).await;
    Ok(violations)
}

async fn supervise(
    instances: Arc<Mutex<Vec<Instance>>>,
    http: reqwest::Client,
    stop: Arc<AtomicBool>,
    kills: Arc<AtomicUsize>,
    (kill_min, kill_max, down_max): (u64, u64, u64),
) {
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(random_ms(kill_min, kill_max)).await;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let mut all = instances.lock().await;
        let victim = rand::thread_rng().gen_range(0..all.len());
        all[victim].kill9().await;
        kills.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(random_ms(0, down_max)).await;
        if let Err(e) = all[victim].start() {
            eprintln!("supervisor: restarting instance {victim}: {e}");
        }
        // The next kill waits until this instance serves again, so with two instances one
        // is always up.
        if let Err(e) = all[victim].wait_ready(&http, Duration::from_secs(60)).await {
            eprintln!("supervisor: {e}");
        }
    }
}

async fn seed_totp_users(engine: &engine::Engine, count: usize) -> Result<Vec<Subject>, BoxError> {
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (engine, next) = (engine.clone(), next.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break Ok::<_, String>(out);
                    }
                    let email = format!("soak-totp{i}@example.org");
                    let user = engine
                        .register(&email, PASSWORD, PASSWORD)
                        .await
                        .map_err(|e| format!("register: {e}"))?;
                    // Enrolled a minute ago: the enrolment's code is that step's, so every code
                    // from now on is unused.
                    let then = unix_now() - 60;
                    let enrolment = engine
                        .two_factor()
                        .begin_app_enrollment(user.id, &user.email, then)
                        .await
                        .map_err(|e| format!("begin enrolment: {e}"))?;
                    let secret =
                        engine::second_factor::totp::base32_decode(&enrolment.secret_base32)
                            .ok_or("the enrolment's secret is not base32")?;
                    engine
                        .two_factor()
                        .confirm_app_enrollment(user.id, &loadgen::totp_code(&secret, then), then)
                        .await
                        .map_err(|e| format!("confirm enrolment: {e}"))?;
                    out.push(Subject {
                        user_id: user.id,
                        email: user.email,
                        secret: Some(secret),
                        session_cookie: None,
                    });
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await??);
    }
    Ok(all)
}

async fn seed_session_users(
    engine: &engine::Engine,
    count: usize,
) -> Result<Vec<Subject>, BoxError> {
    let hash = engine::sign_in::password::PasswordHasher::new(1)
        .hash(PASSWORD)
        .await
        .map_err(|e| format!("hash: {e}"))?;
    let users = engine::sign_in::users::UserStore::new(engine.pool().clone());
    let now = unix_now();
    let mut all = Vec::with_capacity(count);
    for i in 0..count {
        let email = format!("soak-connect{i}@example.org");
        let parsed =
            engine::base::email::Email::parse(&email).map_err(|e| format!("email: {e}"))?;
        let id = users
            .create(&parsed, &hash, now)
            .await
            .map_err(|e| format!("user: {e}"))?;
        let token = engine
            .open_session(id)
            .await
            .map_err(|e| format!("session: {e}"))?;
        all.push(Subject {
            user_id: id,
            email,
            secret: None,
            session_cookie: Some(format!("stepgate_session={}", token.as_cookie_value())),
        });
    }
    Ok(all)
}

struct Driver<'a> {
    http: &'a reqwest::Client,
    origins: &'a [String],
    next_instance: usize,
    address: String,
    notes: Notes,
    /// An earlier request of this flow may have been carried out without its answer arriving.
    lost_answer: bool,
}

const MAX_RESTARTS: usize = 8;

impl Driver<'_> {
    fn note(&mut self, error: &str) {
        *self.notes.errors.entry(error.to_owned()).or_default() += 1;
    }

    /// Posts to the next instance; a failure (no answer, a 5xx, `unknown`, `server_busy`) is
    /// sent again to the other one, after a short pause.
    async fn send(&mut self, path: &str, page: &str, body: String, cookie: Option<&str>) -> Answer {
        let mut attempt = 0u32;
        loop {
            let origin = &self.origins[self.next_instance % self.origins.len()];
            self.next_instance += 1;
            self.notes.requests += 1;
            let answer = post_form(
                self.http,
                origin,
                path,
                page,
                body.clone(),
                cookie,
                &self.address,
            )
            .await;
            let failure = match &answer {
                Ok(a) if a.status >= 500 && a.error.is_none() => Some(format!("http {}", a.status)),
                Ok(a) => match a.error.as_deref() {
                    Some(e @ ("unknown" | "server_busy")) => Some(e.to_owned()),
                    Some(e) if e.starts_with("http_5") => Some(e.to_owned()),
                    _ => None,
                },
                Err(e) if e.is_connect() => Some("connection refused".into()),
                Err(e) if e.is_timeout() => Some("client timeout".into()),
                Err(_) => Some("connection cut".into()),
            };
            match (answer, failure) {
                (Ok(a), None) => return a,
                (_, Some(why)) => {
                    // Refused connections never reached a server; anything else may have.
                    if why != "connection refused" {
                        self.lost_answer = true;
                    }
                    self.note(&format!("retried: {why}"));
                    self.notes.retried_requests += 1;
                    attempt += 1;
                    let pause = if self.origins.len() == 1 {
                        200
                    } else {
                        20 * attempt.min(10) as u64
                    };
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                (Err(_), None) => unreachable!(),
            }
        }
    }

    async fn totp_sign_in(&mut self, s: &Subject) -> Ending {
        let secret = s.secret.clone().expect("a sign-in user has a seed");
        let sign_in = form_body(&[("email", &s.email), ("password", PASSWORD)]);
        'flow: for _ in 0..MAX_RESTARTS * 3 {
            if self.notes.restarts >= MAX_RESTARTS {
                break;
            }
            self.lost_answer = false;
            let a = self
                .send("/api/sign_in", "/login", sign_in.clone(), None)
                .await;
            if let Some(e) = &a.error {
                self.note(e);
                if e == "sign_in_throttled" {
                    // Password checks cut off by a kill count as failed tries (a try is
                    // counted before its hash and cleared only by a success): wait it out.
                    let wait = a.retry_after().unwrap_or(1);
                    self.notes.throttled_seconds += wait;
                    tokio::time::sleep(Duration::from_secs(wait) + Duration::from_millis(200))
                        .await;
                    continue;
                }
                self.notes.restarts += 1;
                continue;
            }
            let (Some(flow), Some(login)) =
                (a.query_value("flow"), a.cookies.get("stepgate_login"))
            else {
                self.note(&format!(
                    "unexpected answer to the password: {:?}",
                    a.location
                ));
                self.notes.restarts += 1;
                continue;
            };
            self.notes.reached_step += 1;
            let cookie = format!("stepgate_login={login}");
            // A new flow: answers lost before it do not concern it.
            self.lost_answer = false;
            let mut last_step = None;
            for _ in 0..12 {
                let now = unix_now();
                if last_step == Some(now / 30) {
                    self.notes.waited_for_next_totp_step += 1;
                    let wait = (30 - now % 30) as u64 * 1000 + 300;
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                    continue;
                }
                last_step = Some(now / 30);
                let code = loadgen::totp_code(&secret, now);
                let body = form_body(&[("flow_id", &flow), ("code", &code)]);
                let b = self
                    .send(
                        "/api/verify_code",
                        &format!("/login/code?flow={flow}"),
                        body,
                        Some(&cookie),
                    )
                    .await;
                match b.error.as_deref() {
                    None if b.location.as_deref() == Some("/")
                        && b.cookies
                            .get("stepgate_session")
                            .is_some_and(|c| c.len() == 64) =>
                    {
                        return Ending::Completed;
                    }
                    None => {
                        self.note(&format!("unexpected answer to the code: {:?}", b.location));
                        self.notes.restarts += 1;
                        continue 'flow;
                    }
                    // The killed instance had taken this step's code: the next one will do.
                    Some(e @ ("code_used" | "invalid_code")) => self.note(e),
                    Some("rate_limited") => {
                        self.note("rate_limited");
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                    Some("flow_expired") if self.lost_answer => {
                        return Ending::CompletedAnswerLost;
                    }
                    Some("flow_expired") => {
                        self.note("flow_expired without a lost answer");
                        return Ending::FlowLost;
                    }
                    Some(e) => {
                        self.note(e);
                        self.notes.restarts += 1;
                        continue 'flow;
                    }
                }
            }
            self.notes.restarts += 1;
        }
        Ending::Failed
    }

    async fn flameconnect(&mut self, s: &Subject) -> Ending {
        let cookie = s
            .session_cookie
            .clone()
            .expect("a connect user has a session");
        let body = form_body(&[
            ("provider", "flameconnect"),
            ("flow_id", ""),
            ("fields[email]", "demo@flameconnect.test"),
            ("fields[password]", "flame-demo"),
        ]);
        let mut lost_before = false;
        for _ in 0..MAX_RESTARTS {
            self.lost_answer = false;
            let a = self
                .send(
                    "/api/submit_connect_step",
                    "/accounts/connect/flameconnect",
                    body.clone(),
                    Some(&cookie),
                )
                .await;
            lost_before |= self.lost_answer;
            match a.error.as_deref() {
                None if a
                    .location
                    .as_deref()
                    .is_some_and(|l| l.starts_with("/accounts?connected=")) =>
                {
                    return Ending::Completed;
                }
                Some("already_configured") if lost_before => return Ending::CompletedAnswerLost,
                Some(e) => self.note(e),
                None => self.note(&format!("unexpected answer: {:?}", a.location)),
            }
            self.notes.restarts += 1;
        }
        Ending::Failed
    }

    async fn lynkco(&mut self, s: &Subject, inbox_lock: &Mutex<()>, inbox: &str) -> Ending {
        let cookie = s
            .session_cookie
            .clone()
            .expect("a connect user has a session");
        let start = form_body(&[
            ("provider", "lynkco"),
            ("flow_id", ""),
            ("fields[email]", LYNKCO_EMAIL),
            ("fields[password]", "lynkco-demo"),
            ("fields[vin]", "LYVXFEDC0KL123456"),
        ]);
        let mut lost_before = false;
        'flow: for _ in 0..MAX_RESTARTS {
            // Codes are read from the double's inbox by account: one start at a time, so the
            // newest code is this flow's.
            let (flow, code) = {
                let _one_at_a_time = inbox_lock.lock().await;
                let before = inbox_len(self.http, inbox).await;
                self.lost_answer = false;
                let a = self
                    .send(
                        "/api/submit_connect_step",
                        "/accounts/connect/lynkco",
                        start.clone(),
                        Some(&cookie),
                    )
                    .await;
                if let Some(e) = a.error.as_deref() {
                    self.note(e);
                    self.notes.restarts += 1;
                    continue 'flow;
                }
                let Some(flow) = a.query_value("flow") else {
                    self.note(&format!(
                        "unexpected answer to the password: {:?}",
                        a.location
                    ));
                    self.notes.restarts += 1;
                    continue 'flow;
                };
                self.notes.reached_step += 1;
                let mut code = None;
                for _ in 0..100 {
                    if let Some((len, newest)) = inbox_newest(self.http, inbox).await {
                        if len > before {
                            code = Some(newest);
                            break;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let Some(code) = code else {
                    self.note("no SMS code in the inbox");
                    self.notes.restarts += 1;
                    continue 'flow;
                };
                (flow, code)
            };
            self.lost_answer = false;
            let body = form_body(&[
                ("provider", "lynkco"),
                ("flow_id", &flow),
                ("fields[code]", &code),
            ]);
            let b = self
                .send(
                    "/api/submit_connect_step",
                    &format!("/accounts/connect/lynkco?flow={flow}"),
                    body,
                    Some(&cookie),
                )
                .await;
            lost_before |= self.lost_answer;
            match b.error.as_deref() {
                None if b
                    .location
                    .as_deref()
                    .is_some_and(|l| l.starts_with("/accounts?connected=")) =>
                {
                    return Ending::Completed;
                }
                Some("flow_expired") if self.lost_answer => return Ending::CompletedAnswerLost,
                Some("already_configured") if lost_before => return Ending::CompletedAnswerLost,
                Some("flow_expired") => {
                    self.note("flow_expired without a lost answer");
                    return Ending::FlowLost;
                }
                Some(e) => {
                    // E.g. the killed instance had already spent the provider's one-time code:
                    // the flow starts over.
                    self.note(&format!("code step: {e}"));
                }
                None => self.note(&format!("unexpected answer to the code: {:?}", b.location)),
            }
            self.notes.restarts += 1;
        }
        Ending::Failed
    }
}

async fn inbox_messages(http: &reqwest::Client, inbox: &str) -> Option<Vec<serde_json::Value>> {
    let answer = http.get(inbox).send().await.ok()?;
    answer.json::<Vec<serde_json::Value>>().await.ok()
}

async fn inbox_len(http: &reqwest::Client, inbox: &str) -> usize {
    inbox_messages(http, inbox)
        .await
        .map(|m| m.len())
        .unwrap_or(0)
}

/// The inbox's length and the newest code for the Lynk & Co demo account (newest first).
async fn inbox_newest(http: &reqwest::Client, inbox: &str) -> Option<(usize, String)> {
    let messages = inbox_messages(http, inbox).await?;
    let code = messages.iter().find(|m| {
        m["account"]
            .as_str()
            .is_some_and(|a| a.eq_ignore_ascii_case(LYNKCO_EMAIL))
    })?["code"]
        .as_str()?
        .to_owned();
    Some((messages.len(), code))
}

async fn count_by_user(pool: &sqlx::AnyPool, table: &str) -> Result<HashMap<i64, i64>, BoxError> {
    let rows: Vec<(i64, i64)> = sqlx::query_as(&format!(
        "SELECT user_id, COUNT(*) FROM {table} GROUP BY user_id"
    ))
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

async fn scalar(pool: &sqlx::AnyPool, sql: &str) -> Result<i64, BoxError> {
    Ok(sqlx::query_scalar(sql).fetch_one(pool).await?)
}

async fn report_and_check(rig: &Rig, results: &[FlowResult]) -> Result<usize, BoxError> {
    let mut violations: Vec<String> = Vec::new();
    // What the clients saw.
    let mut by_kind: BTreeMap<Kind, (usize, BTreeMap<Ending, usize>, Notes)> = BTreeMap::new();
    for r in results {
        let entry = by_kind.entry(r.kind).or_default();
        entry.0 += 1;
        *entry.1.entry(r.ending).or_default() += 1;
        let n = &mut entry.2;
        n.reached_step += r.notes.reached_step;
        n.requests += r.notes.requests;
        n.retried_requests += r.notes.retried_requests;
        n.restarts += r.notes.restarts;
        n.waited_for_next_totp_step += r.notes.waited_for_next_totp_step;
        n.throttled_seconds += r.notes.throttled_seconds;
        for (k, v) in &r.notes.errors {
            *n.errors.entry(k.clone()).or_default() += v;
        }
        match r.ending {
            Ending::Failed => violations.push(format!(
                "{} for {} never completed: {:?}",
                r.kind.name(),
                r.subject.email,
                r.notes.errors
            )),
            Ending::FlowLost => violations.push(format!(
                "{} for {}: the flow vanished (flow_expired with no lost answer before it)",
                r.kind.name(),
                r.subject.email
            )),
            _ => {}
        }
    }
    println!("\n| flow | flows | completed | completed, answer lost | failed | flow lost | steps reached | requests | retried on another instance | restarted flows | waited for the next TOTP step | waited out throttling |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (kind, (count, endings, n)) in &by_kind {
        let e = |k| endings.get(&k).copied().unwrap_or(0);
        println!(
            "| {} | {count} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} s |",
            kind.name(),
            e(Ending::Completed),
            e(Ending::CompletedAnswerLost),
            e(Ending::Failed),
            e(Ending::FlowLost),
            n.reached_step,
            n.requests,
            n.retried_requests,
            n.restarts,
            n.waited_for_next_totp_step,
            n.throttled_seconds
        );
    }
    for (kind, (_, _, n)) in &by_kind {
        if !n.errors.is_empty() {
            println!("  {}: {:?}", kind.name(), n.errors);
        }
    }

    // What the database holds.
    let engine = rig.engine().await?;
    let pool = engine.pool().clone();
    let sessions = count_by_user(&pool, "sessions").await?;
    let accounts = count_by_user(&pool, "connected_accounts").await?;
    let mut lost_sessions = 0;
    let mut duplicate_sessions = 0;
    let mut lost_accounts = 0;
    let mut duplicate_accounts = 0;
    let mut unreadable_tokens = 0;
    let mut accounts_checked = 0;
    for r in results {
        let id = r.subject.user_id;
        let s = sessions.get(&id).copied().unwrap_or(0);
        if s < 1 {
            lost_sessions += 1;
            violations.push(format!(
                "{} ({}, {:?}): no session",
                r.subject.email,
                r.kind.name(),
                r.ending
            ));
        } else if s > 1 {
            duplicate_sessions += 1;
            violations.push(format!(
                "{} ({}): {s} sessions",
                r.subject.email,
                r.kind.name()
            ));
        }
        let a = accounts.get(&id).copied().unwrap_or(0);
        match r.kind {
            Kind::TotpSignIn => {
                if a != 0 {
                    violations.push(format!(
                        "{}: {a} connected accounts, expected none",
                        r.subject.email
                    ));
                }
            }
            Kind::FlameConnect | Kind::Lynkco => {
                if a < 1 {
                    lost_accounts += 1;
                    violations.push(format!(
                        "{} ({}, {:?}): no connected account",
                        r.subject.email,
                        r.kind.name(),
                        r.ending
                    ));
                } else if a > 1 {
                    duplicate_accounts += 1;
                    violations.push(format!("{}: {a} connected accounts", r.subject.email));
                }
                for account in engine.accounts().list(id).await.unwrap_or_default() {
                    accounts_checked += 1;
                    let want = if r.kind == Kind::Lynkco {
                        "lynkco"
                    } else {
                        "flameconnect"
                    };
                    let readable = account.provider == want
                        && engine
                            .accounts()
                            .get_with_secrets(id, account.id)
                            .await
                            .is_ok_and(|(_, secrets)| {
                                secrets.as_object().is_some_and(|o| !o.is_empty())
                            });
                    if !readable {
                        unreadable_tokens += 1;
                        violations.push(format!(
                            "{}: account {} ({}) has no readable tokens",
                            r.subject.email, account.id, account.provider
                        ));
                    }
                }
            }
        }
    }
    let users = scalar(&pool, "SELECT COUNT(*) FROM users").await?;
    let session_rows = scalar(&pool, "SELECT COUNT(*) FROM sessions").await?;
    let distinct_sessions =
        scalar(&pool, "SELECT COUNT(DISTINCT token_hash) FROM sessions").await?;
    let account_rows = scalar(&pool, "SELECT COUNT(*) FROM connected_accounts").await?;
    let distinct_accounts = scalar(
        &pool,
        "SELECT COUNT(*) FROM (SELECT DISTINCT user_id, provider, account_key FROM connected_accounts) AS d",
    )
    .await?;
    let pending_flows = scalar(&pool, "SELECT COUNT(*) FROM flows").await?;
    if session_rows != distinct_sessions {
        violations.push(format!(
            "{session_rows} session rows, {distinct_sessions} distinct tokens"
        ));
    }
    if account_rows != distinct_accounts {
        violations.push(format!(
            "{account_rows} account rows, {distinct_accounts} distinct accounts"
        ));
    }
    if users != results.len() as i64 {
        violations.push(format!(
            "{users} users in the database, {} seeded",
            results.len()
        ));
    }
    let expected_accounts = results
        .iter()
        .filter(|r| r.kind != Kind::TotpSignIn)
        .count();
    println!("\ndatabase after the soak:");
    println!("| what | count | expected |");
    println!("|---|---:|---:|");
    println!("| users | {users} | {} |", results.len());
    println!(
        "| sessions (one per sign-in user from its TOTP sign-in, one per connect user from seeding) | {session_rows} | {} |",
        results.len()
    );
    println!("| users without their session (lost) | {lost_sessions} | 0 |");
    println!("| users with more than one session (duplicated) | {duplicate_sessions} | 0 |");
    println!("| connected accounts | {account_rows} | {expected_accounts} |");
    println!("| connect users without their account (lost) | {lost_accounts} | 0 |");
    println!(
        "| connect users with more than one account (duplicated) | {duplicate_accounts} | 0 |"
    );
    println!("| accounts whose sealed tokens do not open | {unreadable_tokens} (of {accounts_checked}) | 0 |");
    println!(
        "| pending flows left in the database (started by an answer that was lost; expire in 10 min) | {pending_flows} | any |"
    );
    if let Some(keys) = redis_flow_keys(rig) {
        println!(
            "| Redis keys under the run's prefix (pending flows and counters) | {keys} | any |"
        );
    }

    // Integrity.
    match rig.mode {
        Mode::Sqlite => {
            let check: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
                .fetch_all(&pool)
                .await?;
            let fk: Vec<sqlx::any::AnyRow> = sqlx::query("PRAGMA foreign_key_check")
                .fetch_all(&pool)
                .await?;
            println!("| `PRAGMA integrity_check` | {} | ok |", check.join("; "));
            println!("| `PRAGMA foreign_key_check` rows | {} | 0 |", fk.len());
            if check != ["ok"] {
                violations.push(format!("integrity_check: {check:?}"));
            }
            if !fk.is_empty() {
                violations.push(format!("{} foreign key violations", fk.len()));
            }
        }
        Mode::Postgres => {
            let (ok, text) = pg_amcheck(rig).await;
            println!(
                "| `pg_amcheck --install-missing --heapallindexed` | {} | ok |",
                if ok { "ok" } else { "FAILED" }
            );
            if !ok {
                println!("{text}");
                violations.push(format!("pg_amcheck: {text}"));
            }
        }
    }
    pool.close().await;
    if violations.is_empty() {
        println!("\nno violations");
    } else {
        println!("\n{} violation(s):", violations.len());
        for v in violations.iter().take(50) {
            println!("- {v}");
        }
    }
    Ok(violations.len())
}

fn redis_flow_keys(rig: &Rig) -> Option<usize> {
    let url = rig.redis_url.as_ref()?;
    let port = url.trim_end_matches('/').rsplit(':').next()?.to_owned();
    let out = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &port,
            "--scan",
            "--pattern",
            &format!("{}*", rig.redis_prefix),
        ])
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).lines().count())
}

async fn pg_amcheck(rig: &Rig) -> (bool, String) {
    let bin =
        std::env::var("STEPGATE_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
    // postgres://user@host:port/db
    let url = rig
        .database_url
        .trim_start_matches("postgres://")
        .trim_start_matches("postgresql://");
    let (user_host, db) = url.split_once('/').unwrap_or((url, "postgres"));
    let (user, host_port) = user_host.split_once('@').unwrap_or(("postgres", user_host));
    let (host, port) = host_port.split_once(':').unwrap_or((host_port, "5432"));
    let output = tokio::process::Command::new(format!("{bin}/pg_amcheck"))
        .args([
            "--install-missing",
            "--heapallindexed",
            "--parent-check",
            "-h",
            host,
            "-p",
            port,
            "-U",
            user,
            db,
        ])
        .output()
        .await;
    match output {
        Ok(o) => (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        ),
        Err(e) => (false, format!("could not run {bin}/pg_amcheck: {e}")),
    }
}
