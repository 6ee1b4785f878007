//! What the load and crash-soak drivers share: a throw-away rig (data folder, key, database,
//! the sandbox and N release-server instances as child processes that can be killed with
//! SIGKILL and restarted), seeding through the engine's public API, plain HTML form posts the
//! way a browser without WebAssembly sends them, and latency statistics.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use engine::base::secrets::SecretKey;
use engine::second_factor::totp_site::TotpSite;
use engine::{Engine, EngineConfig};
use rand::Rng;
use sandbox::doubles::{Double, DOUBLES};
use tokio::process::{Child, Command};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where the instances keep their state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One SQLite file in the run's data folder (the embedded default).
    Sqlite,
    /// A fresh database on the Postgres server `STEPGATE_TEST_DATABASE_URL` names, and Redis at
    /// `STEPGATE_TEST_REDIS_URL` with a key prefix of its own (both from
    /// `scripts/lib/services.sh`).
    Postgres,
}

impl Mode {
    /// Instances started when the command names no number: one on SQLite (its single file),
    /// two scaled out, so every flow crosses instances.
    pub fn default_instances(self) -> usize {
        match self {
            Mode::Sqlite => 1,
            Mode::Postgres => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Sqlite => "SQLite",
            Mode::Postgres => "Postgres + Redis",
        }
    }
}

/// Runs `work(i)` for every `i` in `0..count`, `workers` at a time (seeding a bench's data
/// through the engine); the answers in the order of `i`, or the first error.
pub async fn for_each_index<T, E, F, Fut>(
    count: usize,
    workers: usize,
    work: F,
) -> Result<Vec<T>, E>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    let work = std::sync::Arc::new(work);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (work, next) = (work.clone(), next.clone());
            tokio::spawn(async move {
                let mut done = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= count {
                        break Ok::<_, E>(done);
                    }
                    done.push((i, work(i).await?));
                }
            })
        })
        .collect();
    let mut all = Vec::with_capacity(count);
    for task in tasks {
        let done = task
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        all.extend(done?);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, answer)| answer).collect())
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The repository root (the binaries run from there, as `scripts/run.sh` runs the server).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("loadgen/ sits in the repository")
        .to_path_buf()
}

/// Everything one run needs, and the processes it started.
pub struct Rig {
    pub mode: Mode,
    pub dir: PathBuf,
    pub database_url: String,
    /// The Postgres server's own URL (to create and check the run's database).
    pub admin_url: Option<String>,
    pub redis_url: Option<String>,
    pub redis_prefix: String,
    pub key_hex: String,
    /// The sandbox's own port (the TOTP site).
    pub sandbox_port: u16,
    /// Where each simulated host listens: every row of `sandbox::doubles::DOUBLES`, on a free
    /// port of its own.
    pub doubles: Vec<(&'static Double, String)>,
    pub instances: Vec<Instance>,
    sandbox: Option<Child>,
}

/// One release-server process on its own port; it can be killed and started again.
pub struct Instance {
    pub index: usize,
    pub port: u16,
    child: Option<Child>,
    env: Vec<(String, String)>,
    log: PathBuf,
    pub starts: u32,
}

impl Instance {
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The running process's id (the memory benchmark reads its `/proc/<pid>/status`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn start(&mut self) -> Result<(), BoxError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(repo_root().join("target/release/stepgate"))
            .current_dir(repo_root())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    /// `kill -9`: no graceful shutdown, whatever it was doing is cut off.
    pub async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Waits until `GET /login` answers 200.
    pub async fn wait_ready(
        &self,
        http: &reqwest::Client,
        within: Duration,
    ) -> Result<(), BoxError> {
        let until = Instant::now() + within;
        let url = format!("{}/login", self.origin());
        loop {
            if let Ok(answer) = http.get(&url).send().await {
                if answer.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > until {
                return Err(format!(
                    "instance {} did not answer on {url} within {within:?} (log: {})",
                    self.index,
                    self.log.display()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Rig {
    /// Makes the data folder, the key and the database (Postgres: a new database on the
    /// server from `STEPGATE_TEST_DATABASE_URL`). Nothing is started yet.
    pub async fn new(mode: Mode, tag: &str) -> Result<Rig, BoxError> {
        // `LOADGEN_DATA_ROOT=/dev/shm` puts the SQLite file (and the logs) on tmpfs.
        let root = std::env::var("LOADGEN_DATA_ROOT")
            .map(PathBuf::from)
            .unwrap_or_else(|_| repo_root().join("target").join("loadgen"));
        let dir = root.join(format!("{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let key: [u8; 32] = rand::random();
        let key_hex = hex::encode(key);
        let suffix: u32 = rand::random();
        let (database_url, admin_url, redis_url) = match mode {
            Mode::Sqlite => (engine::store::db::sqlite_url_in(&dir), None, None),
            Mode::Postgres => {
                let admin = std::env::var("STEPGATE_TEST_DATABASE_URL").map_err(|_| {
                    "--postgres needs STEPGATE_TEST_DATABASE_URL and STEPGATE_TEST_REDIS_URL \
                     (source scripts/lib/services.sh; start_services)"
                })?;
                let redis = std::env::var("STEPGATE_TEST_REDIS_URL")
                    .map_err(|_| "--postgres needs STEPGATE_TEST_REDIS_URL")?;
                let name = format!("sg_{tag}_{suffix:08x}");
                sqlx::any::install_default_drivers();
                let pool = sqlx::AnyPool::connect(&admin).await?;
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&pool)
                    .await?;
                pool.close().await;
                let base = admin
                    .rsplit_once('/')
                    .map(|(base, _)| base.to_owned())
                    .unwrap_or(admin.clone());
                (format!("{base}/{name}"), Some(admin), Some(redis))
            }
        };
        let doubles = DOUBLES
            .iter()
            .map(|d| (d, format!("127.0.0.1:{}", free_port())))
            .collect();
        Ok(Rig {
            mode,
            dir,
            database_url,
            admin_url,
            redis_url,
            redis_prefix: format!("stepgate-{tag}-{suffix:08x}:"),
            key_hex,
            sandbox_port: free_port(),
            doubles,
            instances: Vec::new(),
            sandbox: None,
        })
    }

    /// Where the double of `origin` listens (`HOST:PORT`).
    pub fn double(&self, origin: &str) -> &str {
        let double = sandbox::doubles::double_of(origin);
        self.doubles
            .iter()
            .find(|(d, _)| *d == double)
            .map(|(_, addr)| addr.as_str())
            .expect("every double has an address")
    }

    pub fn upstreams(&self) -> String {
        sandbox::doubles::upstreams(&self.doubles)
    }

    pub fn secret_key(&self) -> SecretKey {
        SecretKey::load_or_create(Some(&self.key_hex), &self.dir).expect("a valid key")
    }

    /// An engine on the run's database with the servers' key (for seeding and checking).
    pub async fn engine(&self) -> Result<Engine, BoxError> {
        let mut config = EngineConfig::new(
            &self.database_url,
            self.secret_key(),
            TotpSite {
                base_url: format!("http://127.0.0.1:{}", self.sandbox_port),
                issuer: "Stepgate".into(),
            },
        );
        config.upstreams = engine::flows::upstream::UpstreamMap::parse(&self.upstreams())
            .map_err(|e| format!("upstreams: {e}"))?;
        // The same Redis as the servers: whatever the engine keeps there (TOTP counters,
        // throttling) is seen by both.
        config.redis_url = self.redis_url.clone();
        config.redis_prefix = self.redis_prefix.clone();
        Ok(Engine::open(config).await?)
    }

    /// Starts the sandbox (every double on the rig's ports).
    pub async fn start_sandbox(&mut self, http: &reqwest::Client) -> Result<(), BoxError> {
        let log = std::fs::File::create(self.dir.join("sandbox.log"))?;
        let mut command = Command::new(repo_root().join("target/release/sandbox"));
        command.env(
            "STEPGATE_SANDBOX_ADDR",
            format!("127.0.0.1:{}", self.sandbox_port),
        );
        for (double, addr) in &self.doubles {
            command.env(double.addr_var, addr);
        }
        let child = command
            .env("STEPGATE_APP_ORIGIN", "http://127.0.0.1:1")
            .env("RUST_LOG", "warn")
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        self.sandbox = Some(child);
        let url = format!(
            "http://{}/inbox.json",
            self.double(sandbox::lynkco::B2C_ORIGIN)
        );
        for _ in 0..200 {
            if http.get(&url).send().await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err("the sandbox did not start".into())
    }

    /// Adds `count` server instances on the shared database (and Redis) and starts them.
    pub async fn start_instances(
        &mut self,
        count: usize,
        http: &reqwest::Client,
    ) -> Result<(), BoxError> {
        for index in 0..count {
            let port = free_port();
            let data = self.dir.join(format!("instance-{index}"));
            std::fs::create_dir_all(&data)?;
            let mut env: Vec<(String, String)> = vec![
                ("LEPTOS_SITE_ADDR".into(), format!("127.0.0.1:{port}")),
                ("STEPGATE_DATA".into(), data.display().to_string()),
                ("DATABASE_URL".into(), self.database_url.clone()),
                ("STEPGATE_KEY".into(), self.key_hex.clone()),
                ("STEPGATE_DEMO".into(), "0".into()),
                // The drivers register their own users.
                ("STEPGATE_REGISTRATION".into(), "open".into()),
                (
                    "STEPGATE_TOTP_PROVIDER_URL".into(),
                    format!("http://127.0.0.1:{}", self.sandbox_port),
                ),
                ("STEPGATE_UPSTREAMS".into(), self.upstreams()),
                // Each simulated client sends its own X-Forwarded-For address (see README:
                // per-address throttling counts a password try until it succeeds).
                ("STEPGATE_TRUST_PROXY".into(), "1".into()),
                ("RUST_LOG".into(), "warn".into()),
            ];
            if let Some(redis) = &self.redis_url {
                env.push(("STEPGATE_REDIS_URL".into(), redis.clone()));
                env.push(("STEPGATE_REDIS_PREFIX".into(), self.redis_prefix.clone()));
            }
            let mut instance = Instance {
                index,
                port,
                child: None,
                env,
                log: self.dir.join(format!("instance-{index}.log")),
                starts: 0,
            };
            instance.start()?;
            self.instances.push(instance);
        }
        for instance in &self.instances {
            instance.wait_ready(http, Duration::from_secs(60)).await?;
        }
        Ok(())
    }

    pub fn origins(&self) -> Vec<String> {
        self.instances.iter().map(Instance::origin).collect()
    }

    pub async fn stop(&mut self) {
        for instance in &mut self.instances {
            instance.kill9().await;
        }
        if let Some(mut child) = self.sandbox.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Drops the run's Postgres database (SQLite: the folder is kept for a look afterwards
    /// unless `remove_files`).
    pub async fn clean_up(&self, remove_files: bool) {
        if let (Some(admin), Mode::Postgres) = (&self.admin_url, self.mode) {
            if let Ok(pool) = sqlx::AnyPool::connect(admin).await {
                let name = self.database_url.rsplit('/').next().unwrap_or_default();
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&pool)
                    .await;
                pool.close().await;
            }
        }
        if remove_files {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A client that does not follow redirects (the drivers read each `Location`) and keeps many
/// connections open.
pub fn http_client(timeout: Option<Duration>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(usize::MAX)
        .tcp_nodelay(true);
    if let Some(t) = timeout {
        builder = builder.timeout(t);
    }
    builder.build().expect("an HTTP client")
}

/// `application/x-www-form-urlencoded`, as a browser encodes a form.
pub fn form_body(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What one form post came back with.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// The redirect's target, as sent.
    pub location: Option<String>,
    /// Cookies set: name → value (an empty value: deleted).
    pub cookies: HashMap<String, String>,
    /// The error code (`flow_expired`, …), from the redirect back to the form (`__err`, base64
    /// JSON) or a JSON body.
    pub error: Option<String>,
    /// The error's JSON (`{"code": …, "retry_after": …}`).
    pub error_json: Option<String>,
}

impl Answer {
    pub fn query_value(&self, name: &str) -> Option<String> {
        let location = self.location.as_deref()?;
        let query = location.split_once('?')?.1;
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == name).then(|| percent_decode(v))
        })
    }

    /// Seconds to wait, when the error says.
    pub fn retry_after(&self) -> Option<u64> {
        let json: serde_json::Value = serde_json::from_str(self.error_json.as_deref()?).ok()?;
        json["retry_after"].as_u64()
    }
}

/// Standard or URL-safe base64, padding optional.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn error_code_in(text: &str) -> Option<String> {
    let json: serde_json::Value = serde_json::from_str(text).ok()?;
    json["code"].as_str().map(str::to_owned)
}

/// Posts a form the way a browser without WebAssembly does (`Accept: text/html`, the page's
/// `Origin` and `Referer`), with `cookie` and an `X-Forwarded-For` address. `page` is the path
/// of the page the form is on (a refused post is redirected back there with the error).
pub async fn post_form(
    http: &reqwest::Client,
    origin: &str,
    path: &str,
    page: &str,
    body: String,
    cookie: Option<&str>,
    address: &str,
) -> Result<Answer, reqwest::Error> {
    let mut request = http
        .post(format!("{origin}{path}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "text/html")
        .header("origin", origin)
        .header("referer", format!("{origin}{page}"))
        .header("x-forwarded-for", address)
        .body(body);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.to_owned());
    let mut cookies = HashMap::new();
    for value in response.headers().get_all("set-cookie") {
        if let Ok(text) = value.to_str() {
            let pair = text.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                cookies.insert(name.trim().to_owned(), value.trim().to_owned());
            }
        }
    }
    let text = response.text().await?;
    let mut answer = Answer {
        status,
        location,
        cookies,
        error: None,
        error_json: None,
    };
    answer.error_json = answer
        .query_value("__err")
        .and_then(|e| base64_decode(&e))
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .or_else(|| (status >= 400).then(|| text.clone()));
    answer.error = answer
        .error_json
        .as_deref()
        .and_then(error_code_in)
        .or_else(|| (status >= 400).then(|| format!("http_{status}")));
    Ok(answer)
}

/// The address client `i` signs in from (behind the trusted-proxy setting).
pub fn client_address(i: usize) -> String {
    let n = i + 1;
    format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255)
}

/// Latencies in microseconds.
#[derive(Default, Clone)]
pub struct Latencies(pub Vec<u64>);

impl Latencies {
    pub fn record(&mut self, d: Duration) {
        self.0.push(d.as_micros() as u64);
    }

    pub fn merge(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    /// p in 0..=100, in milliseconds.
    pub fn percentile_ms(&mut self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0.sort_unstable();
        let rank = ((p / 100.0) * (self.0.len() as f64 - 1.0)).round() as usize;
        self.0[rank.min(self.0.len() - 1)] as f64 / 1000.0
    }
}

/// The engine's TOTP code for a base32 seed at `unix_seconds`.
pub fn totp_code(secret: &[u8], unix_seconds: i64) -> String {
    engine::second_factor::totp::code_at(secret, unix_seconds, 6)
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

/// A random duration in `[low, high)` milliseconds.
pub fn random_ms(low: u64, high: u64) -> Duration {
    Duration::from_millis(rand::thread_rng().gen_range(low..high.max(low + 1)))
}

/// Load average and core count, for the record.
pub fn machine_note() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!(
        "{cores} cores, load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// The lines every driver starts with: which tool, the exact command, the machine.
pub fn print_run_header(tool: &str) {
    let command: Vec<String> = std::env::args().collect();
    println!("tool: loadgen `{tool}` (Rust: tokio + reqwest, plain HTML form posts)");
    println!("command: {}", command.join(" "));
    println!("machine: {}", machine_note());
}
