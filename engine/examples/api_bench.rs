//! The helper of `scripts/bench-api.sh`: credential reads through the real server's HTTP API.
//!
//! `api_bench setup DATA_DIR KEYS OUT_FILE` opens the engine on a running server's data folder
//! (its `stepgate.db` and `secret.key`; upstreams from `STEPGATE_UPSTREAMS`, as the server has
//! them), registers KEYS users, connects a FlameConnect account for each through the engine
//! against the sandbox and creates one API key per account; writes `ACCOUNT_ID KEY` lines to
//! OUT_FILE.
//!
//! `api_bench load ORIGIN KEYS_FILE SECONDS CONNECTIONS` sends
//! `GET /api/v1/accounts/{id}/credentials` with `Authorization: Bearer KEY`, CONNECTIONS
//! requests in flight at once (one keep-alive connection each), the keys taken round-robin so
//! each key stays well under its rate limit (10/s, burst 20) as long as the total rate is under
//! 10 × KEYS per second; one second of warm-up, then SECONDS measured. Prints requests/s, p50,
//! p99 and max latency, and the count of each status (429s included).
//!
//! `api_bench load ORIGIN KEYS_FILE SECONDS CONNECTIONS live` sends `GET /health/live` the same
//! way instead: the server's HTTP stack with nothing behind it, the bound a read is held to.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::base::secrets::SecretKey;
use engine::flows::upstream::UpstreamMap;
use engine::providers::Purpose;
use engine::{Completion, Engine, EngineConfig, Progress};
use sandbox::flameconnect as flame_double;

fn usage() -> ! {
    eprintln!(
        "usage: api_bench setup DATA_DIR KEYS OUT_FILE | api_bench load ORIGIN KEYS_FILE SECONDS CONNECTIONS [live]"
    );
    std::process::exit(2)
}

fn arg(args: &[String], i: usize) -> &str {
    args.get(i).map(String::as_str).unwrap_or_else(|| usage())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match arg(&args, 1) {
        "setup" => {
            let keys = arg(&args, 3).parse().unwrap_or_else(|_| usage());
            setup(arg(&args, 2), keys, arg(&args, 4)).await;
        }
        "load" => {
            let seconds = arg(&args, 4).parse().unwrap_or_else(|_| usage());
            let connections = arg(&args, 5).parse().unwrap_or_else(|_| usage());
            let live = args.get(6).is_some_and(|a| a == "live");
            load(arg(&args, 2), arg(&args, 3), seconds, connections, live).await;
        }
        _ => usage(),
    }
}

async fn setup(data_dir: &str, keys: usize, out: &str) {
    let dir = std::path::Path::new(data_dir);
    let mut config = EngineConfig::new(
        engine::store::db::sqlite_url_in(dir),
        SecretKey::load_or_create(None, dir).expect("the server's key"),
        engine::second_factor::totp_site::TotpSite {
            base_url: "http://totp.test".into(),
            issuer: "Stepgate".into(),
        },
    );
    config.upstreams = UpstreamMap::parse(&std::env::var("STEPGATE_UPSTREAMS").unwrap_or_default())
        .expect("STEPGATE_UPSTREAMS");
    let engine = Engine::open(config).await.expect("the engine opens");
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (engine, next) = (engine.clone(), next.clone());
            tokio::spawn(async move {
                let mut lines = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= keys {
                        break lines;
                    }
                    let email = format!("api-bench{i}@example.org");
                    let user = engine
                        .register(
                            &email,
                            "bench-password-quiet-harbor",
                            "bench-password-quiet-harbor",
                        )
                        .await
                        .expect("registered")
                        .id;
                    let fields = [
                        ("email", flame_double::DEMO_EMAIL),
                        ("password", flame_double::DEMO_PASSWORD),
                    ]
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect();
                    let progress = engine
                        .start_flow(
                            "flameconnect",
                            Purpose::Connect { user_id: user },
                            Some("api-bench".into()),
                            &fields,
                        )
                        .await;
                    let Ok(Progress::Done(Completion::Connected(account))) = progress else {
                        panic!("connected expected, got {progress:?}");
                    };
                    let (_, secret) = engine
                        .api_keys()
                        .create(user, "api-bench", &[account.id])
                        .await
                        .expect("a key");
                    lines.push(format!("{} {}\n", account.id, secret.as_str()));
                }
            })
        })
        .collect();
    let mut text = String::new();
    for task in tasks {
        text.extend(task.await.expect("a setup task"));
    }
    std::fs::write(out, text).expect("the keys file");
    engine.pool().close().await;
}

async fn load(origin: &str, keys_file: &str, seconds: u64, connections: usize, live: bool) {
    let keys: Arc<Vec<(String, String)>> = Arc::new(
        std::fs::read_to_string(keys_file)
            .expect("the keys file")
            .lines()
            .map(|line| {
                let (id, key) = line.split_once(' ').expect("ACCOUNT_ID KEY");
                let url = if live {
                    format!("{origin}/health/live")
                } else {
                    format!("{origin}/api/v1/accounts/{id}/credentials")
                };
                (url, format!("Bearer {key}"))
            })
            .collect(),
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .expect("a client");
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let warm_until = started + Duration::from_secs(1);
    let until = warm_until + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (client, keys, next) = (client.clone(), keys.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let (url, bearer) = &keys[i % keys.len()];
                    let t = Instant::now();
                    if t >= until {
                        break (latencies, statuses);
                    }
                    let response = client
                        .get(url)
                        .header("authorization", bearer)
                        .send()
                        .await
                        .expect("the server answers");
                    let status = response.status().as_u16();
                    let body = response.bytes().await.expect("a body");
                    if t >= warm_until {
                        latencies.push(t.elapsed());
                        *statuses.entry(status).or_default() += 1;
                        if status == 200 && !live {
                            assert!(body.windows(12).any(|w| w == b"access_token"));
                        }
                    }
                }
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for task in tasks {
        let (l, s) = task.await.expect("a client task");
        latencies.extend(l);
        for (status, n) in s {
            *statuses.entry(status).or_default() += n;
        }
    }
    latencies.sort();
    let n = latencies.len();
    let pct = |p: usize| latencies[(n * p / 100).min(n - 1)].as_secs_f64() * 1e3;
    let statuses: Vec<String> = statuses.iter().map(|(s, n)| format!("{s}: {n}")).collect();
    println!(
        "  {:<12} {:>11} {:>6} {:>9} {:>10.0} {:>8.3} {:>8.3} {:>8.3}  {}",
        if live { "/health/live" } else { "credentials" },
        connections,
        keys.len(),
        n,
        n as f64 / seconds as f64,
        pct(50),
        pct(99),
        latencies[n - 1].as_secs_f64() * 1e3,
        statuses.join(", "),
    );
}
