//! Configuration from the environment (see the README's table).

use std::path::PathBuf;

use engine::secrets::SecretKey;

pub const DEMO_EMAIL: &str = "demo@stepgate.test";
pub const DEMO_PASSWORD: &str = "quiet-lantern-ferry";
/// The service name Stepgate's seeds carry at the TOTP provider and in authenticator apps.
pub const TOTP_ISSUER: &str = "Stepgate";

pub struct Config {
    /// `STEPGATE_DATA`: the SQLite file and the key file live here.
    pub data_dir: PathBuf,
    /// `DATABASE_URL`, else `sqlite://$STEPGATE_DATA/stepgate.db`. `postgres://…` lets
    /// several instances share one database.
    pub database_url: String,
    /// `STEPGATE_REDIS_URL` (optional): pending flows, throttle counters and renewal leases in
    /// Redis rather than in the database.
    pub redis_url: Option<String>,
    /// `STEPGATE_REDIS_PREFIX` (default `stepgate:`): what this Stepgate's Redis keys start with.
    pub redis_prefix: String,
    /// From `STEPGATE_KEY` or `$STEPGATE_DATA/secret.key`: encrypts secrets at rest. Loaded
    /// (and the file created) at start-up so a bad key stops the server before it serves.
    pub key: SecretKey,
    /// `STEPGATE_TOTP_PROVIDER_URL`: the web TOTP provider (its origin is the only one whose
    /// messages the sign-in page accepts).
    pub totp_provider_url: String,
    /// `STEPGATE_PUBLIC_URL`: how browsers reach Stepgate (for the provider's callback).
    pub public_url: String,
    /// `STEPGATE_DEMO` (default off; `1` or `true` turns it on): create the demo account (never
    /// an admin). Its password is published, so it is for trying Stepgate out only.
    pub demo: bool,
    /// `STEPGATE_TRUST_PROXY` (default off): a proxy in front appends the client's address to
    /// `X-Forwarded-For`; throttling counts that address instead of the proxy's.
    pub trust_proxy: bool,
    /// `STEPGATE_UPSTREAMS`: `REAL_ORIGIN=BASE_URL` pairs pointing third parties at doubles.
    pub upstreams: engine::upstream::UpstreamMap,
    /// `STEPGATE_STEP_TIMEOUT` (seconds, default 10): how long one upstream request may take.
    pub step_timeout: std::time::Duration,
    /// `STEPGATE_ACCOUNT_CHECK_INTERVAL` (seconds, default 60): how often opening the accounts
    /// page checks an account with its provider.
    pub account_check_interval: i64,
    /// `STEPGATE_UPKEEP_INTERVAL` (seconds, default 15): how often the token upkeep looks for
    /// accounts due for renewal.
    pub upkeep_interval: std::time::Duration,
    /// `STEPGATE_REGISTRATION` (`open`, `invite` or `closed`; default `invite`): who may
    /// register once the first account (the admin) exists.
    pub registration: engine::registration::RegistrationMode,
}

fn flag(name: &str, default: bool) -> bool {
    match std::env::var(name).as_deref() {
        Ok("0") | Ok("false") | Ok("off") | Ok("no") => false,
        Ok("1") | Ok("true") | Ok("on") | Ok("yes") => true,
        _ => default,
    }
}

impl Config {
    pub fn from_env(site_addr: std::net::SocketAddr) -> Result<Config, Box<dyn std::error::Error>> {
        let data_dir =
            PathBuf::from(std::env::var("STEPGATE_DATA").unwrap_or_else(|_| "./data".into()));
        std::fs::create_dir_all(&data_dir)
            .map_err(|e| format!("cannot create the data folder {}: {e}", data_dir.display()))?;
        let database_url = std::env::var("DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| engine::db::sqlite_url_in(&data_dir));
        let redis_url = std::env::var("STEPGATE_REDIS_URL")
            .ok()
            .filter(|u| !u.is_empty());
        let redis_prefix = std::env::var("STEPGATE_REDIS_PREFIX")
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| engine::DEFAULT_REDIS_PREFIX.into());
        let key =
            SecretKey::load_or_create(std::env::var("STEPGATE_KEY").ok().as_deref(), &data_dir)?;
        let demo = flag("STEPGATE_DEMO", false);
        let trust_proxy = flag("STEPGATE_TRUST_PROXY", false);
        let upstreams = engine::upstream::UpstreamMap::parse(
            &std::env::var("STEPGATE_UPSTREAMS").unwrap_or_default(),
        )
        .map_err(|e| format!("STEPGATE_UPSTREAMS: {e}"))?;
        let step_timeout = match std::env::var("STEPGATE_STEP_TIMEOUT") {
            Ok(text) => std::time::Duration::from_secs(text.parse().map_err(|_| {
                format!("STEPGATE_STEP_TIMEOUT: `{text}` is not a number of seconds")
            })?),
            Err(_) => engine::upstream::DEFAULT_STEP_TIMEOUT,
        };
        let account_check_interval = match std::env::var("STEPGATE_ACCOUNT_CHECK_INTERVAL") {
            Ok(text) => text.parse().map_err(|_| {
                format!("STEPGATE_ACCOUNT_CHECK_INTERVAL: `{text}` is not a number of seconds")
            })?,
            Err(_) => engine::DEFAULT_CHECK_INTERVAL,
        };
        let upkeep_interval = match std::env::var("STEPGATE_UPKEEP_INTERVAL") {
            Ok(text) => std::time::Duration::from_secs(text.parse().map_err(|_| {
                format!("STEPGATE_UPKEEP_INTERVAL: `{text}` is not a number of seconds")
            })?),
            Err(_) => std::time::Duration::from_secs(15),
        };
        let registration = match std::env::var("STEPGATE_REGISTRATION") {
            Ok(text) if !text.is_empty() => engine::registration::RegistrationMode::parse(&text)
                .ok_or_else(|| {
                    format!("STEPGATE_REGISTRATION: `{text}` is not one of open, invite, closed")
                })?,
            _ => engine::registration::RegistrationMode::default(),
        };
        let totp_provider_url = std::env::var("STEPGATE_TOTP_PROVIDER_URL")
            .unwrap_or_else(|_| "http://127.0.0.1:3100".into())
            .trim_end_matches('/')
            .to_owned();
        let public_url = std::env::var("STEPGATE_PUBLIC_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| format!("http://{site_addr}"))
            .trim_end_matches('/')
            .to_owned();
        Ok(Config {
            data_dir,
            database_url,
            redis_url,
            redis_prefix,
            key,
            demo,
            trust_proxy,
            upstreams,
            step_timeout,
            account_check_interval,
            upkeep_interval,
            registration,
            totp_provider_url,
            public_url,
        })
    }
}
