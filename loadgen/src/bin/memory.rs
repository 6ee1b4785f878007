//! `scripts/bench-memory.sh`'s driver: the resident memory of a real `stepgate serve` process
//! holding 10,000 connected accounts, 1,000 pending flows and 1,000 API keys, against the bound
//! of 100 MiB RSS.
//!
//! 1. Seeds the database through the engine's public API before the server starts (same
//!    `STEPGATE_KEY`): `--users` users (one argon2id hash shared, `UserStore::create`), each
//!    with an open session, `--accounts-per-user` FlameConnect accounts (`AccountStore::add`,
//!    the secrets FlameConnect's flow keeps, access tokens valid for 30 days so no read renews
//!    anything), one API key scoped to those accounts, and one Lynk & Co connect flow started
//!    against the sandbox's double and left waiting at its code step.
//! 2. Starts the sandbox and one release server on SQLite, and reads the server's RSS.
//! 3. Every key lists its accounts (`GET /api/v1/accounts`) and reads each account's
//!    credentials once (`GET /api/v1/accounts/{id}/credentials`), `--concurrency` requests at
//!    once; every answer is checked against what was seeded. Then the server sits `--settle`
//!    seconds (the read counters are flushed every second).
//! 4. Prints `VmRSS` and `VmHWM` (the peak) from `/proc/<pid>/status` against the bound, what
//!    the RSS is made of (`/proc/<pid>/smaps`), and the counts the database actually holds; exits
//!    non-zero when the peak exceeds the bound or any request failed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engine::providers::{NewAccount, Purpose};
use engine::Progress;
use loadgen::{http_client, machine_note, BoxError, Mode, Rig};
use rand::Rng;

/// The bound the figure is measured against.
const BOUND_MIB: f64 = 100.0;
const PASSWORD: &str = "memory-password-1-quiet-harbor";
/// How long the seeded access tokens live: far enough that no read renews them.
const TOKEN_LIFETIME: i64 = 30 * 24 * 3600;

struct Args {
    users: usize,
    accounts_per_user: usize,
    concurrency: usize,
    settle: u64,
}

fn usage() -> ! {
    eprintln!(
        "usage: memory [--users 1000] [--accounts-per-user 10] [--concurrency 32] [--settle 3]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        users: 1000,
        accounts_per_user: 10,
        concurrency: 32,
        settle: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage())
        };
        match arg.as_str() {
            "--users" => args.users = value(),
            "--accounts-per-user" => args.accounts_per_user = value(),
            "--concurrency" => args.concurrency = value(),
            "--settle" => args.settle = value() as u64,
            _ => usage(),
        }
    }
    if args.users == 0 || args.accounts_per_user == 0 || args.concurrency == 0 {
        usage()
    }
    args
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    match run(args).await {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("memory: {e}");
            std::process::exit(1);
        }
    }
}

/// What one user's API key may read: the key and each account's id and seeded access token.
struct KeyPlan {
    secret: String,
    accounts: Vec<(i64, String)>,
}

/// `len` characters of base64url, the alphabet of the JWTs and refresh tokens B2C hands out.
fn url_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A JWT-shaped token about as long as B2C's (header, claims, RS256 signature).
fn jwt_like(claims_len: usize) -> String {
    format!(
        "eyJhbGciOiJSUzI1NiIsImtpZCI6IlgifQ.{}.{}",
        url_token(claims_len),
        url_token(342)
    )
}

/// FlameConnect's secrets as its flow keeps them (engine/src/providers/flameconnect.rs).
fn flame_secrets(expires_at: i64) -> (serde_json::Value, String) {
    let access_token = jwt_like(900);
    let secrets = serde_json::json!({
        "access_token": access_token,
        "refresh_token": format!("eyJraWQiOiJjcGltY29yZV8wOSJ9.{}", url_token(600)),
        "id_token": jwt_like(700),
        "expires_at": expires_at,
    });
    (secrets, access_token)
}

fn lynkco_input() -> engine::providers::Input {
    [
        ("email", sandbox::lynkco::DEMO_EMAIL),
        ("password", sandbox::lynkco::DEMO_PASSWORD),
        ("vin", sandbox::lynkco::DEMO_VIN),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Users, sessions, accounts, keys and waiting flows, `workers` users at a time.
async fn seed(engine: &engine::Engine, args: &Args) -> Result<Vec<KeyPlan>, BoxError> {
    // One hash for everyone: nobody signs in with a password here, and 1,000 argon2id hashes
    // would only make the seeding slow.
    let hash = engine::sign_in::password::PasswordHasher::new(1)
        .hash(PASSWORD)
        .await
        .map_err(|e| format!("hash: {e}"))?;
    let users = engine::sign_in::users::UserStore::new(engine.pool().clone());
    let now = loadgen::unix_now();
    let (count, per_user) = (args.users, args.accounts_per_user);
    let seeding = engine.clone();
    let plans = loadgen::for_each_index(count, 8, move |u| {
        let (engine, users, hash) = (seeding.clone(), users.clone(), hash.clone());
        async move {
            let email = engine::base::email::Email::parse(&format!("memory{u}@example.org"))
                .map_err(|e| format!("email: {e}"))?;
            let user = users
                .create(&email, &hash, now)
                .await
                .map_err(|e| format!("user: {e}"))?;
            // The flow belongs to the browser session that started it, as on the page.
            let session = engine
                .open_session(user)
                .await
                .map_err(|e| format!("session: {e}"))?;
            let mut accounts = Vec::with_capacity(per_user);
            for k in 0..per_user {
                let name = format!("home{k}.memory{u}@example.org");
                let (secrets, access_token) = flame_secrets(now + TOKEN_LIFETIME);
                let account = NewAccount {
                    account_id: name.replace(['.', '@'], "_"),
                    display_name: name,
                    secrets,
                };
                let added = engine
                    .accounts()
                    .add(user, "flameconnect", &account, now)
                    .await
                    .map_err(|e| format!("account: {e}"))?;
                accounts.push((added.id, access_token));
            }
            let ids: Vec<i64> = accounts.iter().map(|(id, _)| *id).collect();
            let (_, secret) = engine
                .create_api_key(user, "home-assistant", &ids, None)
                .await
                .map_err(|e| format!("api key: {e}"))?;
            let progress = engine
                .start_flow(
                    "lynkco",
                    Purpose::Connect { user_id: user },
                    Some(session.digest()),
                    &lynkco_input(),
                )
                .await
                .map_err(|e| format!("lynkco flow: {e:?}"))?;
            if !matches!(progress, Progress::Next(_)) {
                return Err(format!(
                    "lynkco flow: a code step expected, got {progress:?}"
                ));
            }
            Ok(KeyPlan {
                secret: secret.into_string(),
                accounts,
            })
        }
    })
    .await?;
    // A connect flow schedules the first renewal before the token expires; `add` leaves it
    // unset, so set it as a connect would (the upkeep loop then has them to look at).
    sqlx::query("UPDATE connected_accounts SET renew_due_at = $1")
        .bind(now + TOKEN_LIFETIME - 300)
        .execute(engine.pool())
        .await?;
    Ok(plans)
}

/// Memory figures of one process, in kB as `/proc` gives them.
#[derive(Debug, Default, Clone, Copy)]
struct Memory {
    rss: u64,
    peak: u64,
    anon: u64,
    file: u64,
    shmem: u64,
    threads: u64,
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn memory_of(pid: u32) -> Result<Memory, BoxError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let mut m = Memory::default();
    for line in status.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let value = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        match name {
            "VmRSS" => m.rss = value,
            "VmHWM" => m.peak = value,
            "RssAnon" => m.anon = value,
            "RssFile" => m.file = value,
            "RssShmem" => m.shmem = value,
            "Threads" => m.threads = value,
            _ => {}
        }
    }
    if m.rss == 0 {
        return Err(format!("no VmRSS in /proc/{pid}/status").into());
    }
    Ok(m)
}

fn memory_line(m: &Memory) -> String {
    format!(
        "RSS {:.1} MiB (anonymous {:.1}, file-backed {:.1}, shared {:.1}; {} threads), peak so far {:.1} MiB",
        mib(m.rss),
        mib(m.anon),
        mib(m.file),
        mib(m.shmem),
        m.threads,
        mib(m.peak)
    )
}

/// The resident kB per mapping name in `/proc/<pid>/smaps` (nameless mappings: `[anonymous]`:
/// the allocator's arenas beside `[heap]`), largest first.
fn rss_by_mapping(pid: u32) -> Result<Vec<(String, u64)>, BoxError> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    let mut by_name: BTreeMap<String, u64> = BTreeMap::new();
    let mut current = String::new();
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if !first.ends_with(':') {
            // A mapping's header: address range, perms, offset, device, inode, [name].
            let name: Vec<&str> = fields.skip(4).collect();
            current = if name.is_empty() {
                "[anonymous]".to_owned()
            } else {
                name.join(" ")
            };
        } else if first == "Rss:" {
            let kb: u64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            *by_name.entry(current.clone()).or_default() += kb;
        }
    }
    let mut sorted: Vec<(String, u64)> = by_name.into_iter().collect();
    sorted.sort_by_key(|(_, kb)| std::cmp::Reverse(*kb));
    Ok(sorted)
}

#[derive(Default)]
struct Tally {
    lists: usize,
    reads: usize,
    throttled: usize,
    errors: BTreeMap<String, usize>,
}

/// `GET url` with the key; a `rate_limited` answer is retried after its `Retry-After`.
async fn get_json(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    tally: &mut Tally,
) -> Result<serde_json::Value, String> {
    for _ in 0..5 {
        let response = http
            .get(url)
            .header("authorization", format!("Bearer {key}"))
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| format!("transport: {e}"))?;
        let status = response.status().as_u16();
        if status == 429 {
            tally.throttled += 1;
            let wait = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(wait)).await;
            continue;
        }
        let text = response
            .text()
            .await
            .map_err(|e| format!("transport: {e}"))?;
        if status != 200 {
            return Err(format!("status {status}"));
        }
        return serde_json::from_str(&text).map_err(|_| "not JSON".to_owned());
    }
    Err("rate_limited 5 times".into())
}

/// Every key lists its accounts and reads each one's credentials once.
async fn read_everything(
    http: &reqwest::Client,
    origin: &str,
    plans: Arc<Vec<KeyPlan>>,
    concurrency: usize,
) -> Result<Tally, BoxError> {
    let next = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(Mutex::new(Tally::default()));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (http, origin, plans, next, total) = (
                http.clone(),
                origin.to_owned(),
                plans.clone(),
                next.clone(),
                total.clone(),
            );
            tokio::spawn(async move {
                let mut tally = Tally::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(plan) = plans.get(i) else { break };
                    let url = format!("{origin}/api/v1/accounts");
                    match get_json(&http, &url, &plan.secret, &mut tally).await {
                        Ok(list) => {
                            let listed = list["accounts"].as_array().map_or(0, Vec::len);
                            if listed == plan.accounts.len() {
                                tally.lists += 1;
                            } else {
                                *tally
                                    .errors
                                    .entry(format!("list of {listed} accounts"))
                                    .or_default() += 1;
                            }
                        }
                        Err(e) => *tally.errors.entry(format!("list: {e}")).or_default() += 1,
                    }
                    for (id, token) in &plan.accounts {
                        let url = format!("{origin}/api/v1/accounts/{id}/credentials");
                        match get_json(&http, &url, &plan.secret, &mut tally).await {
                            Ok(read) => {
                                if read["credentials"]["access_token"].as_str()
                                    == Some(token.as_str())
                                {
                                    tally.reads += 1;
                                } else {
                                    *tally
                                        .errors
                                        .entry("credentials: another token".into())
                                        .or_default() += 1;
                                }
                            }
                            Err(e) => {
                                *tally.errors.entry(format!("credentials: {e}")).or_default() += 1
                            }
                        }
                    }
                }
                let mut total = total.lock().unwrap();
                total.lists += tally.lists;
                total.reads += tally.reads;
                total.throttled += tally.throttled;
                for (k, v) in tally.errors {
                    *total.errors.entry(k).or_default() += v;
                }
            })
        })
        .collect();
    for w in workers {
        w.await?;
    }
    let tally = std::mem::take(&mut *total.lock().unwrap());
    Ok(tally)
}

/// What the database holds now.
struct Held {
    users: i64,
    sessions: i64,
    accounts: i64,
    pending_flows: i64,
    api_keys: i64,
    scoped: i64,
    reads_recorded: i64,
}

async fn held(rig: &Rig) -> Result<Held, BoxError> {
    let engine = rig.engine().await?;
    let pool = engine.pool();
    let count = |sql: &'static str| async move {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(pool)
            .await
            .map_err(|e| format!("{sql}: {e}"))
    };
    let pending_flows: i64 = sqlx::query_scalar("SELECT count(*) FROM flows WHERE expires_at > $1")
        .bind(loadgen::unix_now())
        .fetch_one(pool)
        .await?;
    let held = Held {
        users: count("SELECT count(*) FROM users").await?,
        sessions: count("SELECT count(*) FROM sessions").await?,
        accounts: count("SELECT count(*) FROM connected_accounts").await?,
        pending_flows,
        api_keys: count("SELECT count(*) FROM api_keys").await?,
        scoped: count("SELECT count(*) FROM api_key_accounts").await?,
        reads_recorded: count("SELECT coalesce(sum(reads), 0) FROM account_reads").await?,
    };
    pool.close().await;
    Ok(held)
}

async fn run(args: Args) -> Result<bool, BoxError> {
    let command: Vec<String> = std::env::args().collect();
    println!("tool: loadgen `memory` (Rust: engine seeding, tokio + reqwest for the app API)");
    println!("command: {}", command.join(" "));
    println!("machine: {}", machine_note());
    let mut rig = Rig::new(Mode::Sqlite, "memory").await?;
    println!("database: SQLite, data in {}", rig.dir.display());

    // The Lynk & Co flows are started against the sandbox's double, so it runs first.
    let http = http_client(Some(Duration::from_secs(60)));
    rig.start_sandbox(&http).await?;

    let started = Instant::now();
    let engine = rig.engine().await?;
    let seeded = seed(&engine, &args).await;
    engine.pool().close().await;
    drop(engine);
    let plans = Arc::new(match seeded {
        Ok(plans) => plans,
        Err(e) => {
            rig.stop().await;
            return Err(e);
        }
    });
    let accounts: usize = plans.iter().map(|p| p.accounts.len()).sum();
    println!(
        "seeded {} users (each with a session), {accounts} FlameConnect accounts, {} API keys, {} Lynk & Co flows waiting for their code, in {:.1} s",
        plans.len(),
        plans.len(),
        plans.len(),
        started.elapsed().as_secs_f64()
    );
    if let Ok(meta) = std::fs::metadata(rig.dir.join("stepgate.db")) {
        println!("database file: {:.1} MiB", mib(meta.len() / 1024));
    }

    let result = measure(&mut rig, &http, plans, &args).await;
    println!("after: {}", machine_note());
    rig.stop().await;
    let passed = matches!(result, Ok(true));
    rig.clean_up(passed).await;
    result
}

async fn measure(
    rig: &mut Rig,
    http: &reqwest::Client,
    plans: Arc<Vec<KeyPlan>>,
    args: &Args,
) -> Result<bool, BoxError> {
    rig.start_instances(1, http).await?;
    let instance = &rig.instances[0];
    let pid = instance.pid().ok_or("the server is not running")?;
    let origin = instance.origin();
    println!("server: {origin} (pid {pid}), target/release/stepgate serve");
    let at_start = memory_of(pid)?;
    println!(
        "right after start (GET /login answered): {}",
        memory_line(&at_start)
    );

    let started = Instant::now();
    let tally = read_everything(http, &origin, plans.clone(), args.concurrency).await?;
    let took = started.elapsed().as_secs_f64();
    let after_reads = memory_of(pid)?;
    println!(
        "reads: {} × GET /api/v1/accounts and {} × GET /api/v1/accounts/{{id}}/credentials answered as seeded, {} at once, in {took:.1} s ({} rate-limited and retried; errors: {})",
        tally.lists,
        tally.reads,
        args.concurrency,
        tally.throttled,
        if tally.errors.is_empty() {
            "0".to_owned()
        } else {
            format!("{:?}", tally.errors)
        }
    );
    println!("right after the reads: {}", memory_line(&after_reads));
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let settled = memory_of(pid)?;
    println!("after {} s idle: {}", args.settle, memory_line(&settled));

    let mappings = rss_by_mapping(pid)?;
    println!("largest resident mappings now:");
    for (name, kb) in mappings.iter().take(6) {
        println!("  {:>7.1} MiB  {name}", mib(*kb));
    }

    let held = held(rig).await?;
    println!(
        "held (counted in the database now): {} connected accounts, {} pending flows, {} API keys (scoped to {} accounts), {} users, {} sessions; credential reads recorded by the server: {}",
        held.accounts,
        held.pending_flows,
        held.api_keys,
        held.scoped,
        held.users,
        held.sessions,
        held.reads_recorded
    );
    println!("machine at measurement: {}", machine_note());
    let (rss, peak) = (mib(settled.rss), mib(settled.peak));
    println!(
        "\nRSS {rss:.1} MiB (peak {peak:.1} MiB, {:.1} MiB right after start) against a bound of {BOUND_MIB:.0} MiB: ratio {:.2} (peak {:.2})",
        mib(at_start.rss),
        rss / BOUND_MIB,
        peak / BOUND_MIB
    );

    let users = plans.len() as i64;
    let expected_accounts: i64 = plans.iter().map(|p| p.accounts.len() as i64).sum();
    let mut ok = true;
    if peak > BOUND_MIB {
        println!("FAIL: the peak exceeds the bound");
        ok = false;
    }
    if !tally.errors.is_empty() || tally.reads as i64 != expected_accounts {
        println!("FAIL: not every read was answered as seeded");
        ok = false;
    }
    if held.accounts != expected_accounts || held.pending_flows != users || held.api_keys != users {
        println!("FAIL: the database does not hold what was seeded");
        ok = false;
    }
    Ok(ok)
}
