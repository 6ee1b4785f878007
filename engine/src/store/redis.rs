//! The Redis connection (`STEPGATE_REDIS_URL`), shared by every instance for hot state: pending
//! flows (`flows/redis_store.rs`), throttle counters, the TOTP back-off and renewal leases (each
//! concern's Redis implementation of its hot-state trait). Without a Redis URL all of it stays
//! in the database.
//!
//! Every key lives under one prefix (`STEPGATE_REDIS_PREFIX`, default `stepgate:`), so several
//! deployments (or test runs) can share one Redis. Every read-modify-write is one Lua script,
//! which Redis runs atomically, so instances never interleave inside one.
//!
//! Expiry is always relative (`PX`) and computed from the engine's clock: tests run on a
//! manual clock set in 2023, so an absolute `PEXPIREAT` would drop their keys at once. Timestamps
//! inside values are the engine's clock too, and decide what a value means (a flow is expired
//! when its `expires_at` has passed, whether or not Redis has dropped it yet).

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// How long one Redis command (or connecting) may take.
const REDIS_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to Redis and the prefix of every key Stepgate writes there. Cheap to clone
/// (one multiplexed connection, reconnected on failure, shared by all clones).
#[derive(Clone)]
pub struct Redis {
    conn: ConnectionManager,
    prefix: Arc<str>,
}

impl Redis {
    /// Connects to `url` (`redis://host:port/db`); fails at once when Redis cannot be reached.
    pub async fn connect(url: &str, prefix: &str) -> redis::RedisResult<Redis> {
        let client = redis::Client::open(url)?;
        // The client's defaults (500 ms per answer, 1 s to connect) turn a busy moment under
        // load into failed sign-ins; the database waits up to 5 s for a lock, and so does this.
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_connection_timeout(Some(REDIS_TIMEOUT));
        let conn = client.get_connection_manager_with_config(config).await?;
        Ok(Redis {
            conn,
            prefix: prefix.into(),
        })
    }

    /// [`Redis::connect`] for opening an engine, whose errors are sqlx's: a Redis that cannot
    /// be used is a configuration error (the URL itself is left out: it may hold a password).
    pub(crate) async fn connect_for_engine(url: &str, prefix: &str) -> Result<Redis, sqlx::Error> {
        Self::connect(url, prefix).await.map_err(|e| {
            sqlx::Error::Configuration(format!("STEPGATE_REDIS_URL: cannot use Redis: {e}").into())
        })
    }

    /// The full key for `name` (`<prefix><name>`).
    pub(crate) fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// A handle on the shared connection, for one command or script.
    pub(crate) fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }
}

/// Milliseconds from `now` until `until`, at least 1 (`PX` refuses 0 and negatives).
pub(crate) fn millis_until(now: i64, until: i64) -> i64 {
    until.saturating_sub(now).max(0).saturating_mul(1000).max(1)
}

/// For tests that need a Redis: a connection under a fresh random prefix when
/// `STEPGATE_TEST_REDIS_URL` is set, `None` (with a note on stderr) otherwise.
#[cfg(test)]
pub(crate) async fn test_redis(test: &str) -> Option<Redis> {
    let Some(url) = std::env::var("STEPGATE_TEST_REDIS_URL")
        .ok()
        .filter(|url| !url.is_empty())
    else {
        eprintln!("{test}: skipped, STEPGATE_TEST_REDIS_URL is not set");
        return None;
    };
    let prefix = test_prefix();
    Some(
        Redis::connect(&url, &prefix)
            .await
            .expect("connect to Redis"),
    )
}

/// A key prefix no other test (or earlier run) uses.
#[cfg(test)]
pub(crate) fn test_prefix() -> String {
    use rand::Rng;
    format!("sgtest:{:016x}:", rand::thread_rng().gen::<u64>())
}
