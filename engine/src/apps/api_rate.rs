//! The app API's rate per key: a token bucket per API key id, behind [`ApiRateBuckets`]. With
//! Redis the bucket lives there ([`RedisApiRate`]), so every instance behind a balancer draws
//! from the same bucket (one Lua script, timed by Redis' own clock so instances' clocks need
//! not agree); without Redis the engine keeps its buckets in memory ([`MemoryApiRate`]), which
//! is exact for the one instance there is. `Engine::open` chooses one.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use redis::Script;

use crate::store::redis::Redis;

/// Where the API's token buckets are kept.
#[async_trait]
pub trait ApiRateBuckets: Send + Sync {
    /// Takes one request token from API key `key_id`'s bucket (refilled at `per_second`, at
    /// most `burst`): `Ok` to serve, or the whole seconds until a token is there (at least 1).
    async fn take(&self, key_id: &str, per_second: f64, burst: f64) -> Result<(), u64>;
}

/// Buckets kept before idle full ones are dropped (revoked keys, keys not used for a while).
const MAX_BUCKETS: usize = 10_000;

/// In-memory buckets for a Stepgate without Redis (one instance).
#[derive(Default)]
pub struct MemoryApiRate {
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl MemoryApiRate {
    fn take_at(&self, key_id: &str, per_second: f64, burst: f64, now: Instant) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key_id) {
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * per_second < burst
            });
        }
        let (tokens, at) = buckets.entry(key_id.to_owned()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * per_second).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / per_second).ceil().max(1.0) as u64)
        }
    }
}

#[async_trait]
impl ApiRateBuckets for MemoryApiRate {
    async fn take(&self, key_id: &str, per_second: f64, burst: f64) -> Result<(), u64> {
        self.take_at(key_id, per_second, burst, Instant::now())
    }
}

/// The buckets in Redis, shared by every instance.
pub struct RedisApiRate {
    redis: Redis,
}

impl RedisApiRate {
    pub fn new(redis: Redis) -> Self {
        Self { redis }
    }
}

#[async_trait]
impl ApiRateBuckets for RedisApiRate {
    /// A Redis failure lets the request through: the rate is a courtesy limit, not a lock.
    async fn take(&self, key_id: &str, per_second: f64, burst: f64) -> Result<(), u64> {
        match take(&self.redis, key_id, per_second, burst).await {
            Ok(0) => Ok(()),
            Ok(wait) => Err(wait),
            Err(e) => {
                tracing::warn!(error = %e, "the API rate bucket in Redis failed; request let through");
                Ok(())
            }
        }
    }
}

/// KEYS[1]: the bucket; ARGV: tokens per second, burst. Returns 0 when a token was taken,
/// else the whole seconds until one is there (at least 1).
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local rate = tonumber(ARGV[1])
        local burst = tonumber(ARGV[2])
        local time = redis.call('TIME')
        local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
        local saved = redis.call('HMGET', KEYS[1], 'tokens', 'at')
        local tokens = tonumber(saved[1]) or burst
        local at = tonumber(saved[2]) or now
        tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
        local wait = 0
        if tokens >= 1 then
            tokens = tokens - 1
        else
            wait = math.max(1, math.ceil((1 - tokens) / rate))
        end
        redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
        -- A bucket left alone refills; once full it is the same as no bucket.
        redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
        return wait
        ",
    )
});

async fn take(redis: &Redis, key_id: &str, per_second: f64, burst: f64) -> redis::RedisResult<u64> {
    TAKE.key(redis.key(&format!("api_rate:{key_id}")))
        .arg(per_second)
        .arg(burst)
        .invoke_async(&mut redis.conn())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_memory_bucket_refills_at_its_rate_and_keeps_keys_apart() {
        let buckets = MemoryApiRate::default();
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(buckets.take_at("a", 0.5, 3.0, start), Ok(()));
        }
        assert_eq!(buckets.take_at("a", 0.5, 3.0, start), Err(2));
        assert_eq!(buckets.take_at("b", 0.5, 3.0, start), Ok(()), "another key");
        let later = start + Duration::from_secs(2);
        assert_eq!(
            buckets.take_at("a", 0.5, 3.0, later),
            Ok(()),
            "one token back"
        );
        assert_eq!(buckets.take_at("a", 0.5, 3.0, later), Err(2));
    }
}
