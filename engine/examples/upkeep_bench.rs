//! App API reads and token upkeep on this machine:
//! `cargo run --release -p engine --example upkeep_bench`.
//!
//! Starts the FlameConnect and Lynk & Co doubles in-process and an engine on a new SQLite file in
//! the temporary folder (WAL, `synchronous=FULL`, as the server runs it), connects
//! [`FLAME_ACCOUNTS`] FlameConnect and [`LYNKCO_ACCOUNTS`] Lynk & Co accounts through the engine
//! (each for its own Stepgate user, each with its own API key), then prints:
//! 1. credential reads per second through [`Engine::app_credentials_for_key`] (what
//!    `GET /api/v1/accounts/{id}/credentials` calls, audit-log entry included) and through
//!    [`Engine::app_credentials`] (no audit entry), 1 and 8 readers at once, with p50 and p99
//!    latency. The tokens are fresh, so no read renews anything: the doubles' refresh counters
//!    are checked unchanged;
//! 2. renewals per second with the doubles answering after 20 ms (a near real service): every
//!    account of both doubles made due now and [`Engine::run_due_renewals`] passes run until
//!    none is due (up to [`engine::accounts::upkeep::DEFAULT_CONCURRENCY`] at once, half of them
//!    per provider), beside the bound `concurrency ÷ latency`; then FlameConnect's accounts
//!    alone, and again while every Lynk & Co refresh stalls (the ratio of the two says whether
//!    a stalled provider slows the others). Each round checks that the refresh grants the
//!    doubles received equal the accounts renewed.
//!
//! `cargo run --release -p engine --example upkeep_bench -- /dev/shm` puts the database on tmpfs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::base::secrets::SecretKey;
use engine::flows::upstream::UpstreamMap;
use engine::providers::Purpose;
use engine::{Completion, Engine, EngineConfig, Progress};
use sandbox::flameconnect::{self as flame_double, FlameConnectSandbox};
use sandbox::lynkco::{self as lynkco_double, LynkcoSandbox};

const FLAME_ACCOUNTS: usize = 600;
const LYNKCO_ACCOUNTS: usize = 200;
/// Reads per measurement (after a warm-up of [`WARM_UP_READS`]).
const READS: usize = 20_000;
const WARM_UP_READS: usize = 1_000;
/// Rounds per renewal measurement (the median is printed, the range beside it).
const RENEWAL_ROUNDS: usize = 3;
/// A realistic upstream round trip.
const LATENCY: Duration = Duration::from_millis(20);
const OWNER: &str = "bench";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provider {
    FlameConnect,
    Lynkco,
}

/// One connected account, its owner and the public part of its API key.
#[derive(Clone)]
struct Account {
    provider: Provider,
    user: i64,
    id: i64,
    key_id: String,
}

struct Doubles {
    flame: FlameConnectSandbox,
    lynkco: LynkcoSandbox,
}

impl Doubles {
    fn refreshes(&self, provider: Provider) -> usize {
        match provider {
            Provider::FlameConnect => self.flame.refreshes(),
            Provider::Lynkco => self.lynkco.refreshes(),
        }
    }

    fn all_refreshes(&self) -> (usize, usize) {
        (self.flame.refreshes(), self.lynkco.refreshes())
    }

    fn set_latency(&self, latency: Duration) {
        self.flame.set_latency(latency);
        self.lynkco.set_latency(latency);
    }
}

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
    // A stalled provider's renewals give up after this (the stall rounds wait for them).
    config.step_timeout = Duration::from_secs(2);
    config
}

fn input(pairs: &[(&str, &str)]) -> engine::providers::Input {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Connects one account of `provider` for Stepgate user `user` through the engine.
async fn connect(engine: &Engine, doubles: &Doubles, provider: Provider, user: i64) -> i64 {
    let purpose = Purpose::Connect { user_id: user };
    let mut progress = match provider {
        Provider::FlameConnect => {
            let fields = input(&[
                ("email", flame_double::DEMO_EMAIL),
                ("password", flame_double::DEMO_PASSWORD),
            ]);
            engine
                .start_flow("flameconnect", purpose, Some(OWNER.into()), &fields)
                .await
        }
        Provider::Lynkco => {
            let fields = input(&[
                ("email", lynkco_double::DEMO_EMAIL),
                ("password", lynkco_double::DEMO_PASSWORD),
                ("vin", lynkco_double::DEMO_VIN),
            ]);
            engine
                .start_flow("lynkco", purpose, Some(OWNER.into()), &fields)
                .await
        }
    };
    if let Ok(Progress::Next(flow)) = &progress {
        let code = doubles
            .lynkco
            .latest_code(lynkco_double::DEMO_EMAIL)
            .expect("a code was sent");
        progress = engine
            .submit_flow(&flow.flow_id, Some(OWNER), &input(&[("code", &code)]))
            .await;
    }
    match progress {
        Ok(Progress::Done(Completion::Connected(account))) => account.id,
        other => panic!("{provider:?}: connected expected, got {other:?}"),
    }
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadPath {
    /// `app_credentials_for_key`: the API's read, with its audit-log entry.
    ForKey,
    /// `app_credentials`: the same without the audit entry.
    Plain,
}

/// `reads` credential reads, `readers` at once, round-robin over the accounts; answers the wall
/// time and each read's latency.
async fn reads(
    engine: &Engine,
    accounts: &Arc<Vec<Account>>,
    path: ReadPath,
    readers: usize,
    reads: usize,
) -> (Duration, Vec<Duration>) {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..readers)
        .map(|_| {
            let (engine, accounts, next) = (engine.clone(), accounts.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= reads {
                        break;
                    }
                    let a = &accounts[i % accounts.len()];
                    let t = Instant::now();
                    let answer = match path {
                        ReadPath::ForKey => {
                            engine
                                .app_credentials_for_key(a.user, a.id, &a.key_id)
                                .await
                        }
                        ReadPath::Plain => engine.app_credentials(a.user, a.id).await,
                    }
                    .expect("the credentials");
                    latencies.push(t.elapsed());
                    assert!(answer["credentials"]["access_token"].is_string());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(reads);
    for task in tasks {
        latencies.extend(task.await.expect("a reader"));
    }
    let wall = started.elapsed();
    latencies.sort();
    (wall, latencies)
}

/// Accounts whose renewal is due at the engine's now.
async fn due_now(engine: &Engine) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM connected_accounts WHERE renew_due_at <= $1")
        .bind(engine.now())
        .fetch_one(engine.pool())
        .await
        .expect("a count")
}

/// Makes every account of `providers` due now and runs upkeep passes until none is due;
/// answers the wall time. Checks that each account was renewed exactly once.
async fn renew_all(
    engine: &Engine,
    doubles: &Doubles,
    accounts: &[Account],
    providers: &[Provider],
) -> Duration {
    let mine: Vec<&Account> = accounts
        .iter()
        .filter(|a| providers.contains(&a.provider))
        .collect();
    let now = make_due(engine, &mine).await;
    let before: Vec<usize> = providers.iter().map(|p| doubles.refreshes(*p)).collect();
    let started = Instant::now();
    let mut handled = 0;
    loop {
        match engine.run_due_renewals().await.expect("an upkeep pass") {
            0 => break,
            n => handled += n,
        }
    }
    let wall = started.elapsed();
    assert_eq!(due_now(engine).await, 0, "none is due any more");
    assert_eq!(handled, mine.len(), "each account handled once");
    let refreshes: usize = providers
        .iter()
        .zip(before)
        .map(|(p, before)| doubles.refreshes(*p) - before)
        .sum();
    assert_eq!(
        refreshes,
        mine.len(),
        "one refresh grant per account renewed"
    );
    for a in &mine {
        let account = engine.accounts().get(a.user, a.id).await.expect("stored");
        assert_eq!(
            account.status,
            engine::accounts::store::AccountStatus::Active
        );
        assert!(account.renewed_at.is_some_and(|at| at >= now));
        assert!(account.renew_due_at.is_some_and(|due| due > now + 60));
    }
    wall
}

/// Makes `accounts` due now; answers the engine's now.
async fn make_due(engine: &Engine, accounts: &[&Account]) -> i64 {
    let now = engine.now();
    for a in accounts {
        engine
            .accounts()
            .schedule_renewal(a.id, now)
            .await
            .expect("scheduled");
    }
    now
}

/// Every account of both doubles due at once while Lynk & Co's refresh stalls: answers the
/// time until every FlameConnect account was renewed (the upkeep pass itself goes on until the
/// stalled requests time out).
async fn renew_flame_beside_a_stalled_lynkco(
    engine: &Engine,
    doubles: &Doubles,
    accounts: &[Account],
) -> Duration {
    let flame: Vec<&Account> = accounts
        .iter()
        .filter(|a| a.provider == Provider::FlameConnect)
        .collect();
    let all: Vec<&Account> = accounts.iter().collect();
    doubles
        .lynkco
        .set_fault("refresh", sandbox::faults::Fault::Stall);
    make_due(engine, &all).await;
    let before = doubles.flame.refreshes();
    let started = Instant::now();
    let pass = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run_due_renewals().await.expect("an upkeep pass") }
    });
    while doubles.flame.refreshes() - before < flame.len() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let wall = started.elapsed();
    pass.await
        .expect("the pass ends when the stalled requests time out");
    doubles.lynkco.clear_faults();
    // The Lynk & Co accounts now wait out a back-off: renew them so the next round starts clean.
    renew_all(engine, doubles, accounts, &[Provider::Lynkco]).await;
    wall
}

fn median(rates: &mut [f64]) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

#[tokio::main]
async fn main() {
    let dir = match std::env::args().nth(1) {
        Some(parent) => tempfile::tempdir_in(parent),
        None => tempfile::tempdir(),
    }
    .expect("a temporary folder");
    println!("database: {}", dir.path().display());
    let doubles = Doubles {
        flame: FlameConnectSandbox::spawn().await,
        lynkco: LynkcoSandbox::spawn().await,
    };
    let upstreams = [doubles.flame.upstreams(), doubles.lynkco.upstreams()].join(" ");
    let engine = Engine::open(engine_config(dir.path(), &upstreams))
        .await
        .expect("the engine opens");

    // Users, accounts and keys (nothing timed).
    let kinds: Vec<Provider> = std::iter::repeat_n(Provider::FlameConnect, FLAME_ACCOUNTS)
        .chain(std::iter::repeat_n(Provider::Lynkco, LYNKCO_ACCOUNTS))
        .collect();
    let registrations: Vec<_> = (0..kinds.len())
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
    let mut accounts = Vec::new();
    for (registration, provider) in registrations.into_iter().zip(kinds) {
        let user = registration.await.expect("a registration");
        // One at a time: a Lynk & Co code is read from the double's inbox by email.
        let id = connect(&engine, &doubles, provider, user).await;
        let (key, _secret) = engine
            .api_keys()
            .create(user, "bench", &[id])
            .await
            .expect("a key");
        accounts.push(Account {
            provider,
            user,
            id,
            key_id: key.id,
        });
    }
    let accounts = Arc::new(accounts);
    println!(
        "{FLAME_ACCOUNTS} FlameConnect and {LYNKCO_ACCOUNTS} Lynk & Co accounts connected, one user and one API key each\n"
    );

    // 1. Credential reads with fresh tokens.
    let refreshes_before = doubles.all_refreshes();
    println!(
        "credential reads, fresh tokens (no renewal), {READS} reads round-robin over all {} accounts after a warm-up of {WARM_UP_READS}:",
        accounts.len()
    );
    println!(
        "  {:<40} {:>7} {:>10} {:>9} {:>9} {:>9}",
        "path", "readers", "reads/s", "p50 ms", "p99 ms", "max ms"
    );
    for path in [ReadPath::ForKey, ReadPath::Plain] {
        for readers in [1, 8] {
            reads(&engine, &accounts, path, readers, WARM_UP_READS).await;
            let (wall, latencies) = reads(&engine, &accounts, path, readers, READS).await;
            let label = match path {
                ReadPath::ForKey => "app_credentials_for_key (API, audited)",
                ReadPath::Plain => "app_credentials (no audit entry)",
            };
            println!(
                "  {:<40} {:>7} {:>10.0} {:>9.3} {:>9.3} {:>9.3}",
                label,
                readers,
                READS as f64 / wall.as_secs_f64(),
                ms(percentile(&latencies, 50)),
                ms(percentile(&latencies, 99)),
                ms(*latencies.last().expect("reads")),
            );
        }
    }
    let refreshes_after = doubles.all_refreshes();
    assert_eq!(
        refreshes_before, refreshes_after,
        "no read renewed anything"
    );
    println!(
        "  refresh grants seen by the doubles during the reads: {} (FlameConnect {} → {}, Lynk & Co {} → {})\n",
        (refreshes_after.0 - refreshes_before.0) + (refreshes_after.1 - refreshes_before.1),
        refreshes_before.0,
        refreshes_after.0,
        refreshes_before.1,
        refreshes_after.1,
    );

    // 2. Renewals: every account due at once; upkeep passes until none is due.
    let limits = engine::accounts::upkeep::UpkeepLimits::default();
    doubles.set_latency(LATENCY);
    println!(
        "renewals, upstream answers after {} ms, {} at once ({} per provider); median of {RENEWAL_ROUNDS} rounds:",
        LATENCY.as_millis(),
        limits.total,
        limits.per_provider,
    );
    let n_all = accounts.len();
    let n_of = |p: Provider| accounts.iter().filter(|a| a.provider == p).count() as f64;
    // The bound: each provider renews its share at once, one round trip each for FlameConnect
    // (the refresh grant), two for Lynk & Co (the refresh grant, then a new CCC token); the
    // pass ends when the slower of the two is done.
    let share_rate =
        |round_trips: f64| limits.per_provider as f64 / (LATENCY.as_secs_f64() * round_trips);
    let bound = n_all as f64
        / (n_of(Provider::FlameConnect) / share_rate(1.0))
            .max(n_of(Provider::Lynkco) / share_rate(2.0));
    let mut rates: Vec<f64> = (0..RENEWAL_ROUNDS).map(|_| 0.0).collect();
    for rate in rates.iter_mut() {
        let wall = renew_all(
            &engine,
            &doubles,
            &accounts,
            &[Provider::FlameConnect, Provider::Lynkco],
        )
        .await;
        *rate = n_all as f64 / wall.as_secs_f64();
    }
    let both = median(&mut rates);
    println!(
        "  both providers ({n_all} accounts): {both:.0} renewals/s (range {:.0}–{:.0}); bound {bound:.0}/s (each provider's {} at once ÷ its round trips × {} ms); ratio {:.2}",
        rates[0],
        rates[rates.len() - 1],
        limits.per_provider,
        LATENCY.as_millis(),
        both / bound,
    );
    let n_flame = accounts
        .iter()
        .filter(|a| a.provider == Provider::FlameConnect)
        .count();
    let mut alone: Vec<f64> = Vec::new();
    let mut beside_stall: Vec<f64> = Vec::new();
    for _ in 0..RENEWAL_ROUNDS {
        let wall = renew_all(&engine, &doubles, &accounts, &[Provider::FlameConnect]).await;
        alone.push(n_flame as f64 / wall.as_secs_f64());
        let wall = renew_flame_beside_a_stalled_lynkco(&engine, &doubles, &accounts).await;
        beside_stall.push(n_flame as f64 / wall.as_secs_f64());
    }
    let (alone, beside_stall) = (median(&mut alone), median(&mut beside_stall));
    let share = limits.per_provider as f64 / LATENCY.as_secs_f64();
    println!(
        "  FlameConnect alone ({n_flame} accounts): {alone:.0} renewals/s; bound its share {} ÷ {} ms = {share:.0}/s; ratio {:.2}",
        limits.per_provider,
        LATENCY.as_millis(),
        alone / share,
    );
    println!(
        "  FlameConnect while Lynk & Co's refresh stalls: {beside_stall:.0} renewals/s; against alone: ratio {:.2} (goal ≥ 0.90)",
        beside_stall / alone,
    );
    println!();
    println!(
        "(each round checks: handled = refresh grants seen by the double = accounts, none due after, all active)"
    );
}
