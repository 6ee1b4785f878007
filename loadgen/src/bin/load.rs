//! `scripts/bench-load.sh`'s driver: password sign-ins and connected-account flows per second
//! through the real release server, over HTTP, as plain form posts (the pages work without
//! WebAssembly, so this is exactly what a browser sends).
//!
//! 1. Seeds the users through the engine's public API on the database the servers will use
//!    (same `STEPGATE_KEY`): `--clients` users with their own password (`Engine::register`, so
//!    argon2id at today's parameters), and `--connect-users` users who only hold a session for
//!    the connect part (one hash shared, `UserStore::create`, `Engine::open_session`).
//! 2. Starts the sandbox and the release server: one instance on SQLite, or with `--postgres`
//!    two instances on Postgres + Redis (requests alternate between them).
//! 3. Sign-ins: `--clients` concurrent clients (default 1,000), each with its own account and its
//!    own `X-Forwarded-For` address (the servers run with `STEPGATE_TRUST_PROXY=1`), each
//!    posting `/api/sign_in` again as soon as the last one answered, for `--warmup` +
//!    `--seconds`. A sign-in counts when it ends in the redirect home with a new session cookie;
//!    anything else is an error (a throttled client waits the `retry_after` it was given).
//!    Afterwards each client opens `/` with its last cookie (must be 200).
//! 4. Connected accounts: for each number in `--connect-clients`, that many concurrent clients
//!    connect the sandbox's `--provider` account (default Xiaomi without 2FA: one form post, three
//!    upstream requests, the cheapest complete flow), each flow for a fresh user, for
//!    `--connect-seconds`. A flow counts when it ends at `/accounts?connected=ID`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use loadgen::{
    client_address, form_body, http_client, machine_note, post_form, print_run_header, BoxError,
    Latencies, Mode, Rig,
};

const PASSWORD: &str = "load-password-1-quiet-harbor";

struct Args {
    mode: Mode,
    clients: usize,
    seconds: u64,
    warmup: u64,
    connect_clients: Vec<usize>,
    connect_seconds: u64,
    connect_users: usize,
    provider: String,
    sign_in: bool,
    connect: bool,
    instances: Option<usize>,
}

fn usage() -> ! {
    eprintln!(
        "usage: load [--postgres] [--instances N] [--clients 1000] [--seconds 60] [--warmup 20] \
         [--connect-clients 8,64] [--connect-seconds 10] [--connect-users 30000] \
         [--provider xiaomi|flameconnect|librus] [--no-sign-in] [--no-connect]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        mode: Mode::Sqlite,
        clients: 1000,
        seconds: 60,
        warmup: 20,
        connect_clients: vec![8, 64],
        connect_seconds: 10,
        connect_users: 30_000,
        provider: "xiaomi".into(),
        sign_in: true,
        connect: true,
        instances: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--postgres" => args.mode = Mode::Postgres,
            "--instances" => args.instances = Some(value().parse().unwrap_or_else(|_| usage())),
            "--clients" => args.clients = value().parse().unwrap_or_else(|_| usage()),
            "--seconds" => args.seconds = value().parse().unwrap_or_else(|_| usage()),
            "--warmup" => args.warmup = value().parse().unwrap_or_else(|_| usage()),
            "--connect-clients" => {
                args.connect_clients = value()
                    .split(',')
                    .map(|n| n.trim().parse().unwrap_or_else(|_| usage()))
                    .collect()
            }
            "--connect-seconds" => {
                args.connect_seconds = value().parse().unwrap_or_else(|_| usage())
            }
            "--connect-users" => args.connect_users = value().parse().unwrap_or_else(|_| usage()),
            "--provider" => args.provider = value(),
            "--no-sign-in" => args.sign_in = false,
            "--no-connect" => args.connect = false,
            _ => usage(),
        }
    }
    args
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    if let Err(e) = run(args).await {
        eprintln!("load: {e}");
        std::process::exit(1);
    }
}

fn user_email(i: usize) -> String {
    format!("load{i}@example.org")
}

async fn run(args: Args) -> Result<(), BoxError> {
    print_run_header("load");
    let instances = args.instances.unwrap_or(args.mode.default_instances());
    let mut rig = Rig::new(args.mode, "load").await?;
    println!(
        "database: {} ({}), {instances} instance(s), data in {}",
        args.mode.name(),
        if args.mode == Mode::Sqlite {
            "WAL, synchronous=FULL as the server sets it".to_owned()
        } else {
            rig.database_url.clone()
        },
        rig.dir.display()
    );

    // Seeding, before any server runs.
    let started = Instant::now();
    let engine = rig.engine().await?;
    let sign_in_users = if args.sign_in { args.clients } else { 0 };
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (engine, next) = (engine.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= sign_in_users {
                        break Ok::<(), engine::ErrorCode>(());
                    }
                    engine.register(&user_email(i), PASSWORD, PASSWORD).await?;
                }
            })
        })
        .collect();
    for w in workers {
        w.await?.map_err(|e| format!("registering: {e}"))?;
    }
    println!(
        "seeded {sign_in_users} users with their own argon2id hash (Engine::register) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let connect_users = if args.connect { args.connect_users } else { 0 };
    let started = Instant::now();
    let sessions = seed_session_users(&engine, connect_users).await?;
    println!(
        "seeded {connect_users} users with an open session (UserStore::create, Engine::open_session) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    engine.pool().close().await;
    drop(engine);

    let http = http_client(None);
    rig.start_sandbox(&http).await?;
    rig.start_instances(instances, &http).await?;
    let origins = Arc::new(rig.origins());
    println!("servers: {}", origins.join(", "));

    let result = async {
        if args.sign_in {
            sign_ins(&http, &origins, &args).await?;
        }
        if args.connect {
            connects(&http, &origins, &args, Arc::new(sessions)).await?;
        }
        Ok::<(), BoxError>(())
    }
    .await;
    println!("after: {}", machine_note());
    rig.stop().await;
    rig.clean_up(result.is_ok()).await;
    result
}

/// Users that only need a session (for the connect part): one argon2id hash for all of them
/// (the connect flows never check a password), each with its own session.
async fn seed_session_users(
    engine: &engine::Engine,
    count: usize,
) -> Result<Vec<String>, BoxError> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let hash = engine::sign_in::password::PasswordHasher::new(1)
        .hash(PASSWORD)
        .await
        .map_err(|e| format!("hash: {e}"))?;
    let users = engine::sign_in::users::UserStore::new(engine.pool().clone());
    let now = loadgen::unix_now();
    let engine = engine.clone();
    let all = loadgen::for_each_index(count, 8, move |i| {
        let (engine, users, hash) = (engine.clone(), users.clone(), hash.clone());
        async move {
            let email = engine::base::email::Email::parse(&format!("connect{i}@example.org"))?;
            let id = users.create(&email, &hash, now).await?;
            let token = engine.open_session(id).await?;
            Ok::<_, engine::ErrorCode>(format!("stepgate_session={}", token.as_cookie_value()))
        }
    })
    .await
    .map_err(|e| format!("session users: {e}"))?;
    Ok(all)
}

#[derive(Default)]
struct Tally {
    ok_in_window: usize,
    ok_total: usize,
    latencies: Latencies,
    errors: BTreeMap<String, usize>,
    last_cookie: Option<String>,
}

fn merge(into: &mut Tally, t: Tally) {
    into.ok_in_window += t.ok_in_window;
    into.ok_total += t.ok_total;
    into.latencies.merge(t.latencies);
    for (k, v) in t.errors {
        *into.errors.entry(k).or_default() += v;
    }
}

fn errors_text(errors: &BTreeMap<String, usize>) -> String {
    if errors.is_empty() {
        return "0".into();
    }
    let total: usize = errors.values().sum();
    let kinds: Vec<String> = errors.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("{total} ({})", kinds.join(", "))
}

async fn sign_ins(
    http: &reqwest::Client,
    origins: &Arc<Vec<String>>,
    args: &Args,
) -> Result<(), BoxError> {
    println!(
        "\nsign-ins: {} clients, each its own account and X-Forwarded-For address, POST /api/sign_in \
         (email + password, Accept: text/html) again as soon as answered; {} s warm-up, then {} s measured",
        args.clients, args.warmup, args.seconds
    );
    let start = Instant::now();
    let window_start = start + Duration::from_secs(args.warmup);
    let window_end = window_start + Duration::from_secs(args.seconds);
    let tasks: Vec<_> = (0..args.clients)
        .map(|i| {
            let (http, origins) = (http.clone(), origins.clone());
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let body = form_body(&[("email", &user_email(i)), ("password", PASSWORD)]);
                let address = client_address(i);
                let mut k = i;
                while Instant::now() < window_end {
                    let origin = &origins[k % origins.len()];
                    k += 1;
                    let sent = Instant::now();
                    let answer = post_form(
                        &http,
                        origin,
                        "/api/sign_in",
                        "/login",
                        body.clone(),
                        None,
                        &address,
                    )
                    .await;
                    let done = Instant::now();
                    match answer {
                        Ok(a) if a.error.is_none() && a.location.as_deref() == Some("/") => match a
                            .cookies
                            .get("stepgate_session")
                        {
                            Some(c) if c.len() == 64 => {
                                tally.ok_total += 1;
                                if done >= window_start && done <= window_end {
                                    tally.ok_in_window += 1;
                                    tally.latencies.record(done - sent);
                                }
                                tally.last_cookie = Some(format!("stepgate_session={c}"));
                            }
                            _ => *tally.errors.entry("no session cookie".into()).or_default() += 1,
                        },
                        Ok(a) => {
                            // A throttled client waits as the page tells a person to.
                            if let Some(wait) = a.retry_after() {
                                tokio::time::sleep(Duration::from_secs(wait)).await;
                            }
                            let kind = a.error.unwrap_or_else(|| {
                                format!("status {} to {:?}", a.status, a.location)
                            });
                            *tally.errors.entry(kind).or_default() += 1;
                        }
                        Err(e) => {
                            let kind = if e.is_timeout() {
                                "client timeout".to_owned()
                            } else if e.is_connect() {
                                "connect error".to_owned()
                            } else {
                                format!("transport: {e}")
                            };
                            *tally.errors.entry(kind).or_default() += 1;
                        }
                    }
                }
                tally
            })
        })
        .collect();
    let mut total = Tally::default();
    let mut cookies = Vec::new();
    for t in tasks {
        let mut t = t.await?;
        if let Some(c) = t.last_cookie.take() {
            cookies.push(c);
        }
        merge(&mut total, t);
    }
    let drained = start.elapsed().as_secs_f64();
    let rate = total.ok_in_window as f64 / args.seconds as f64;
    println!(
        "| instances | clients | measured | sign-ins in window | **sign-ins/s** | p50 | p99 | max | errors (whole run) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    println!(
        "| {} | {} | {} s | {} | **{:.1}** | {:.0} ms | {:.0} ms | {:.0} ms | {} |",
        origins.len(),
        args.clients,
        args.seconds,
        total.ok_in_window,
        rate,
        total.latencies.percentile_ms(50.0),
        total.latencies.percentile_ms(99.0),
        total.latencies.percentile_ms(100.0),
        errors_text(&total.errors)
    );
    println!(
        "({} sign-ins in all, warm-up and drain included; the last answer came {:.1} s after the start)",
        total.ok_total, drained
    );

    // Each client's last session opens the home page.
    let verified = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let cookies = Arc::new(cookies);
    let next = Arc::new(AtomicUsize::new(0));
    let checks: Vec<_> = (0..32)
        .map(|w| {
            let (http, origins, cookies, next, verified, failed) = (
                http.clone(),
                origins.clone(),
                cookies.clone(),
                next.clone(),
                verified.clone(),
                failed.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(cookie) = cookies.get(i) else { break };
                    let origin = &origins[(i + w) % origins.len()];
                    let ok = http
                        .get(format!("{origin}/"))
                        .header("accept", "text/html")
                        .header("cookie", cookie)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().as_u16() == 200);
                    if ok { &verified } else { &failed }.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for c in checks {
        c.await?;
    }
    println!(
        "sessions checked afterwards (GET / with each client's last cookie): {} open the home page, {} do not",
        verified.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    Ok(())
}

fn connect_fields(provider: &str) -> Vec<(&'static str, &'static str)> {
    match provider {
        "flameconnect" => vec![
            ("fields[email]", "demo@flameconnect.test"),
            ("fields[password]", "flame-demo"),
        ],
        "librus" => vec![
            ("fields[login]", "demo.parent"),
            ("fields[password]", "librus-demo"),
        ],
        _ => vec![
            ("fields[username]", "demo@xiaomi.test"),
            ("fields[password]", "xiaomi-demo"),
        ],
    }
}

async fn connects(
    http: &reqwest::Client,
    origins: &Arc<Vec<String>>,
    args: &Args,
    sessions: Arc<Vec<String>>,
) -> Result<(), BoxError> {
    let provider = args.provider.clone();
    let mut pairs = vec![("provider", provider.as_str()), ("flow_id", "")];
    pairs.extend(connect_fields(&provider));
    let body = Arc::new(form_body(&pairs));
    println!(
        "\nconnected accounts: POST /api/submit_connect_step ({provider}, the sandbox's demo account), \
         each flow for a user of its own with a session; 1 s warm-up, then {} s measured",
        args.connect_seconds
    );
    println!("| instances | clients | measured | flows | **flows/s** | p50 | p99 | max | errors |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let next = Arc::new(AtomicUsize::new(0));
    for &clients in &args.connect_clients {
        let start = Instant::now();
        let window_start = start + Duration::from_secs(1);
        let window_end = window_start + Duration::from_secs(args.connect_seconds);
        let ran_out = Arc::new(std::sync::Mutex::new(None::<Instant>));
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let page = format!("/accounts/connect/{provider}");
                let (http, origins, sessions, next, body, ran_out) = (
                    http.clone(),
                    origins.clone(),
                    sessions.clone(),
                    next.clone(),
                    body.clone(),
                    ran_out.clone(),
                );
                tokio::spawn(async move {
                    let mut tally = Tally::default();
                    let mut k = c;
                    while Instant::now() < window_end {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(cookie) = sessions.get(i) else {
                            ran_out.lock().unwrap().get_or_insert(Instant::now());
                            break;
                        };
                        let origin = &origins[k % origins.len()];
                        k += 1;
                        let sent = Instant::now();
                        let answer = post_form(
                            &http,
                            origin,
                            "/api/submit_connect_step",
                            &page,
                            (*body).clone(),
                            Some(cookie),
                            &client_address(c),
                        )
                        .await;
                        let done = Instant::now();
                        match answer {
                            Ok(a)
                                if a.error.is_none()
                                    && a.location
                                        .as_deref()
                                        .is_some_and(|l| l.starts_with("/accounts?connected=")) =>
                            {
                                tally.ok_total += 1;
                                if done >= window_start && done <= window_end {
                                    tally.ok_in_window += 1;
                                    tally.latencies.record(done - sent);
                                }
                            }
                            Ok(a) => {
                                let kind = a.error.unwrap_or_else(|| {
                                    format!("status {} to {:?}", a.status, a.location)
                                });
                                *tally.errors.entry(kind).or_default() += 1;
                            }
                            Err(e) => {
                                *tally.errors.entry(format!("transport: {e}")).or_default() += 1;
                            }
                        }
                    }
                    tally
                })
            })
            .collect();
        let mut total = Tally::default();
        for t in tasks {
            merge(&mut total, t.await?);
        }
        let ended = ran_out
            .lock()
            .unwrap()
            .unwrap_or(window_end)
            .min(window_end);
        let measured = ended.saturating_duration_since(window_start).as_secs_f64();
        println!(
            "| {} | {} | {:.1} s{} | {} | **{:.0}** | {:.1} ms | {:.1} ms | {:.1} ms | {} |",
            origins.len(),
            clients,
            measured,
            if ended < window_end {
                " (users ran out)"
            } else {
                ""
            },
            total.ok_in_window,
            total.ok_in_window as f64 / measured.max(0.001),
            total.latencies.percentile_ms(50.0),
            total.latencies.percentile_ms(99.0),
            total.latencies.percentile_ms(100.0),
            errors_text(&total.errors)
        );
    }
    Ok(())
}
