//! The app API's rate per key: a token bucket per API key id. With Redis the bucket lives there,
//! so every instance behind a balancer draws from the same bucket (one Lua script, timed by
//! Redis' own clock so instances' clocks need not agree); without Redis the server keeps its
//! buckets in memory, which is exact for the one instance there is.

use std::sync::LazyLock;

use redis::Script;

use crate::store::redis::Redis;
use crate::Engine;

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

impl Engine {
    /// Takes one request token from API key `key_id`'s shared bucket: `Ok` to serve, or the
    /// seconds to wait. `None` when there is no Redis (the caller keeps the buckets). A Redis
    /// failure lets the request through: the rate is a courtesy limit, not a lock.
    pub async fn take_api_token(
        &self,
        key_id: &str,
        per_second: f64,
        burst: f64,
    ) -> Option<Result<(), u64>> {
        let redis = self.redis.as_ref()?;
        Some(match take(redis, key_id, per_second, burst).await {
            Ok(0) => Ok(()),
            Ok(wait) => Err(wait),
            Err(e) => {
                tracing::warn!(error = %e, "the API rate bucket in Redis failed; request let through");
                Ok(())
            }
        })
    }
}

async fn take(redis: &Redis, key_id: &str, per_second: f64, burst: f64) -> redis::RedisResult<u64> {
    TAKE.key(redis.key(&format!("api_rate:{key_id}")))
        .arg(per_second)
        .arg(burst)
        .invoke_async(&mut redis.conn())
        .await
}
