//! Where the first-factor throttle keeps its counters, behind [`ThrottleCounters`]: the
//! database ([`DatabaseThrottleCounters`], one compare-and-set per key) or Redis
//! ([`RedisThrottleCounters`], one Lua script per operation that reads and writes all of an
//! attempt's counters atomically, by the same rules). `Engine::open` chooses one; the rules
//! themselves (what an attempt's keys are, how long each waits) are `throttle.rs`'.

use std::sync::LazyLock;

use async_trait::async_trait;
use redis::{RedisResult, Script};
use sqlx::Row;

use crate::store::db::Pool;
use crate::store::redis::Redis;
use crate::ErrorCode;

/// How one kind of key is throttled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleRule {
    /// Failures allowed before any wait.
    pub free_failures: i64,
    /// The wait after the first failure past the free ones; it doubles with each further one...
    pub first_wait: i64,
    /// ...up to this many seconds.
    pub max_wait: i64,
    /// Failures checked per window at most; further tries wait for the window to end.
    pub max_failures_per_window: i64,
    /// The window's length in seconds; counters start over after it.
    pub window: i64,
}

impl ThrottleRule {
    /// The wait imposed once `failures` tries have failed in a row.
    pub fn wait_after(&self, failures: i64) -> i64 {
        if failures < self.free_failures {
            return 0;
        }
        let doublings = (failures - self.free_failures).min(30) as u32;
        self.first_wait
            .saturating_mul(1 << doublings)
            .min(self.max_wait)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Account,
    Address,
    /// Registrations per client address ([`SignInThrottle::claim_registration`]).
    Registration,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Account => "account",
            Scope::Address => "address",
            Scope::Registration => "registration",
        }
    }
}

/// The counters of throttle keys (a scope and a key's digest), wherever they are kept.
#[async_trait]
pub trait ThrottleCounters: Send + Sync {
    /// Counts one try against every key (with its rule) unless one of them must wait: `None`
    /// when it was counted on all of them, else the longest wait in seconds (at least 1), and
    /// then nothing is written (hammering a waiting key does not extend its wait).
    async fn claim(
        &self,
        keys: &[(Scope, &str, ThrottleRule)],
        now: i64,
    ) -> Result<Option<i64>, ErrorCode>;

    /// Gives each key one try back, and the wait it started.
    async fn give_back(&self, keys: &[(Scope, &str)], now: i64) -> Result<(), ErrorCode>;

    /// A right password: the account key starts over, the address key gets one try back.
    async fn succeeded(
        &self,
        account: &str,
        address: Option<&str>,
        now: i64,
    ) -> Result<(), ErrorCode>;

    /// Drops counters whose window (at most `longest_window` seconds) has ended.
    async fn purge_expired(&self, longest_window: i64, now: i64) -> Result<u64, ErrorCode>;

    /// The failures counted on a key, for tests.
    #[cfg(test)]
    async fn failures(&self, scope: Scope, key: &str) -> Option<i64>;
}

fn db_error(e: sqlx::Error) -> ErrorCode {
    tracing::error!(error = %e, "sign-in throttle query failed");
    ErrorCode::Unknown
}

fn redis_error(e: redis::RedisError) -> ErrorCode {
    tracing::error!(error = %e, "sign-in throttle in Redis failed");
    ErrorCode::Unknown
}

/// A key's counters as stored.
#[derive(Debug, Clone, Copy)]
struct Counters {
    failures: i64,
    window_start: i64,
    next_try_at: i64,
}

/// The counters in the `sign_in_throttle` table.
#[derive(Clone)]
pub struct DatabaseThrottleCounters {
    pool: Pool,
}

impl DatabaseThrottleCounters {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    async fn counters(&self, scope: Scope, key: &str) -> Result<Option<Counters>, ErrorCode> {
        let row = sqlx::query(
            "SELECT failures, window_start, next_try_at FROM sign_in_throttle WHERE scope = $1 AND key = $2",
        )
        .bind(scope.as_str())
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.map(|row| {
            Ok(Counters {
                failures: row.try_get("failures").map_err(db_error)?,
                window_start: row.try_get("window_start").map_err(db_error)?,
                next_try_at: row.try_get("next_try_at").map_err(db_error)?,
            })
        })
        .transpose()
    }

    /// The wait `counters` impose at `now` under `rule`, if any; counters of a finished
    /// window impose none.
    fn wait(rule: ThrottleRule, counters: Counters, now: i64) -> Option<i64> {
        if now - counters.window_start >= rule.window {
            return None;
        }
        if counters.failures >= rule.max_failures_per_window {
            return Some(counters.window_start + rule.window - now);
        }
        (now < counters.next_try_at).then(|| counters.next_try_at - now)
    }

    /// Reads only: the longest wait any of the attempt's keys imposes.
    async fn current_wait(
        &self,
        keys: &[(Scope, &str, ThrottleRule)],
        now: i64,
    ) -> Result<Option<i64>, ErrorCode> {
        let mut longest = None;
        for &(scope, key, rule) in keys {
            if let Some(counters) = self.counters(scope, key).await? {
                if let Some(wait) = Self::wait(rule, counters, now) {
                    longest = longest.max(Some(wait));
                }
            }
        }
        Ok(longest)
    }

    /// Counts one try against `key` unless it must wait. Compare-and-set on the counters read,
    /// so concurrent tries (even from other server instances) are each counted once.
    async fn claim_key(
        &self,
        scope: Scope,
        key: &str,
        rule: ThrottleRule,
        now: i64,
    ) -> Result<Option<i64>, ErrorCode> {
        loop {
            let stored = self.counters(scope, key).await?;
            let fresh = Counters {
                failures: 0,
                window_start: now,
                next_try_at: now,
            };
            let current = match stored {
                Some(c) if now - c.window_start < rule.window => c,
                _ => fresh,
            };
            if let Some(wait) = Self::wait(rule, current, now) {
                return Ok(Some(wait.max(1)));
            }
            let failures = current.failures + 1;
            let next_try_at = now + rule.wait_after(failures);
            let written = match stored {
                None => sqlx::query(
                    "INSERT INTO sign_in_throttle (scope, key, failures, window_start, next_try_at)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (scope, key) DO NOTHING",
                )
                .bind(scope.as_str())
                .bind(key)
                .bind(failures)
                .bind(current.window_start)
                .bind(next_try_at)
                .execute(&self.pool)
                .await
                .map_err(db_error)?,
                Some(old) => sqlx::query(
                    "UPDATE sign_in_throttle SET failures = $1, window_start = $2, next_try_at = $3
                     WHERE scope = $4 AND key = $5 AND failures = $6 AND window_start = $7 AND next_try_at = $8",
                )
                .bind(failures)
                .bind(current.window_start)
                .bind(next_try_at)
                .bind(scope.as_str())
                .bind(key)
                .bind(old.failures)
                .bind(old.window_start)
                .bind(old.next_try_at)
                .execute(&self.pool)
                .await
                .map_err(db_error)?,
            };
            if written.rows_affected() == 1 {
                return Ok(None);
            }
            // Another try changed the counters between our read and write: read them again.
        }
    }

    async fn give_back_one(&self, scope: Scope, key: &str, now: i64) -> Result<(), ErrorCode> {
        sqlx::query(
            "UPDATE sign_in_throttle SET failures = CASE WHEN failures > 0 THEN failures - 1 ELSE 0 END,
                 next_try_at = CASE WHEN next_try_at < $1 THEN next_try_at ELSE $1 END
             WHERE scope = $2 AND key = $3",
        )
        .bind(now)
        .bind(scope.as_str())
        .bind(key)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }
}

#[async_trait]
impl ThrottleCounters for DatabaseThrottleCounters {
    async fn claim(
        &self,
        keys: &[(Scope, &str, ThrottleRule)],
        now: i64,
    ) -> Result<Option<i64>, ErrorCode> {
        // A throttled try writes nothing, so hammering a waiting account does not extend it.
        if let Some(wait) = self.current_wait(keys, now).await? {
            return Ok(Some(wait.max(1)));
        }
        for &(scope, key, rule) in keys {
            if let Some(wait) = self.claim_key(scope, key, rule, now).await? {
                return Ok(Some(wait));
            }
        }
        Ok(None)
    }

    async fn give_back(&self, keys: &[(Scope, &str)], now: i64) -> Result<(), ErrorCode> {
        for &(scope, key) in keys {
            self.give_back_one(scope, key, now).await?;
        }
        Ok(())
    }

    async fn succeeded(
        &self,
        account: &str,
        address: Option<&str>,
        now: i64,
    ) -> Result<(), ErrorCode> {
        sqlx::query("DELETE FROM sign_in_throttle WHERE scope = $1 AND key = $2")
            .bind(Scope::Account.as_str())
            .bind(account)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        if let Some(address) = address {
            self.give_back_one(Scope::Address, address, now).await?;
        }
        Ok(())
    }

    async fn purge_expired(&self, longest_window: i64, now: i64) -> Result<u64, ErrorCode> {
        let done = sqlx::query("DELETE FROM sign_in_throttle WHERE window_start + $1 <= $2")
            .bind(longest_window)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(done.rows_affected())
    }

    #[cfg(test)]
    async fn failures(&self, scope: Scope, key: &str) -> Option<i64> {
        self.counters(scope, key).await.unwrap().map(|c| c.failures)
    }
}

/// The counters in Redis, shared by every instance.
#[derive(Clone)]
pub struct RedisThrottleCounters {
    redis: Redis,
}

impl RedisThrottleCounters {
    pub fn new(redis: Redis) -> Self {
        Self { redis }
    }

    /// The Redis key of one counter.
    fn key(&self, scope: Scope, key: &str) -> String {
        self.redis
            .key(&format!("throttle:{}:{key}", scope.as_str()))
    }
}

#[async_trait]
impl ThrottleCounters for RedisThrottleCounters {
    async fn claim(
        &self,
        keys: &[(Scope, &str, ThrottleRule)],
        now: i64,
    ) -> Result<Option<i64>, ErrorCode> {
        let keys: Vec<_> = keys
            .iter()
            .map(|&(scope, key, rule)| (self.key(scope, key), rule))
            .collect();
        let wait = throttle_claim(&self.redis, &keys, now)
            .await
            .map_err(redis_error)?;
        Ok(wait.map(|wait| wait.max(1)))
    }

    async fn give_back(&self, keys: &[(Scope, &str)], now: i64) -> Result<(), ErrorCode> {
        let keys: Vec<String> = keys
            .iter()
            .map(|&(scope, key)| self.key(scope, key))
            .collect();
        throttle_give_back(&self.redis, &keys, now)
            .await
            .map_err(redis_error)
    }

    async fn succeeded(
        &self,
        account: &str,
        address: Option<&str>,
        now: i64,
    ) -> Result<(), ErrorCode> {
        let account = self.key(Scope::Account, account);
        let address = address.map(|a| self.key(Scope::Address, a));
        throttle_succeeded(&self.redis, &account, address.as_deref(), now)
            .await
            .map_err(redis_error)
    }

    /// Redis' keys expire by themselves.
    async fn purge_expired(&self, _longest_window: i64, _now: i64) -> Result<u64, ErrorCode> {
        Ok(0)
    }

    #[cfg(test)]
    async fn failures(&self, scope: Scope, key: &str) -> Option<i64> {
        throttle_counters(&self.redis, &self.key(scope, key))
            .await
            .unwrap()
            .map(|c| c.0)
    }
}

/// Extra life for a throttle key past its window's end (instances' clocks may differ a little;
/// counters of a finished window impose nothing whatever their key's age).
const THROTTLE_GRACE_MS: i64 = 60_000;

/// Claims one try against every key of an attempt, or none of them.
///
/// KEYS: the attempt's counters (account, then address). ARGV[1]: now; then for each key its
/// rule: free failures, first wait, max wait, max failures per window, window. A counter is a
/// hash (`f` failures, `w` window start, `n` next try at). Answers 0 when the try was counted
/// on every key, or the longest wait (seconds, > 0) any key imposes, writing nothing then (so
/// hammering a waiting account does not extend its wait). The rules are the database's
/// (`DatabaseThrottleCounters::wait` and `ThrottleRule::wait_after`).
static THROTTLE_CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local now = tonumber(ARGV[1])
local current = {}
local longest = 0
for i, key in ipairs(KEYS) do
  local base = 1 + (i - 1) * 5
  local cap, window = tonumber(ARGV[base + 4]), tonumber(ARGV[base + 5])
  local c = redis.call('HMGET', key, 'f', 'w', 'n')
  local f, w, n = tonumber(c[1]), tonumber(c[2]), tonumber(c[3])
  if f == nil or w == nil or n == nil or now - w >= window then
    f, w, n = 0, now, now
  end
  local wait = 0
  if f >= cap then
    wait = w + window - now
  elseif now < n then
    wait = n - now
  end
  if wait > longest then longest = wait end
  current[i] = {f, w}
end
if longest > 0 then return longest end
for i, key in ipairs(KEYS) do
  local base = 1 + (i - 1) * 5
  local free, first, maxw = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  local window = tonumber(ARGV[base + 5])
  local f, w = current[i][1] + 1, current[i][2]
  local wait = 0
  if f >= free then
    wait = math.min(first * 2 ^ math.min(f - free, 30), maxw)
  end
  redis.call('HSET', key, 'f', f, 'w', w, 'n', now + wait)
  redis.call('PEXPIRE', key, math.max((w + window - now) * 1000, 1) + tonumber(ARGV[2 + #KEYS * 5]))
end
return 0",
    )
});

/// A right password. KEYS[1]: the account's counters, dropped; KEYS[2] (if any): the
/// address's, which gets this try back (`f` - 1, not below 0) and the wait it started
/// (`n` = min(n, now)). ARGV[1]: now.
static THROTTLE_SUCCEEDED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('DEL', KEYS[1])
if KEYS[2] then
  local c = redis.call('HMGET', KEYS[2], 'f', 'n')
  if c[1] and c[2] then
    local f = math.max(tonumber(c[1]) - 1, 0)
    local n = math.min(tonumber(c[2]), tonumber(ARGV[1]))
    redis.call('HSET', KEYS[2], 'f', f, 'n', n)
  end
end
return 1",
    )
});

/// A try that was claimed but whose password was never checked (the hasher was busy, the
/// database failed): every key in KEYS gets it back (`f` - 1, not below 0) and the wait it
/// started (`n` = min(n, now)). ARGV[1]: now.
static THROTTLE_GIVE_BACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
for _, key in ipairs(KEYS) do
  local c = redis.call('HMGET', key, 'f', 'n')
  if c[1] and c[2] then
    local f = math.max(tonumber(c[1]) - 1, 0)
    local n = math.min(tonumber(c[2]), tonumber(ARGV[1]))
    redis.call('HSET', key, 'f', f, 'n', n)
  end
end
return 1",
    )
});

/// See [`THROTTLE_GIVE_BACK`].
pub(crate) async fn throttle_give_back(
    redis: &Redis,
    keys: &[String],
    now: i64,
) -> RedisResult<()> {
    let mut script = THROTTLE_GIVE_BACK.prepare_invoke();
    for key in keys {
        script.key(key);
    }
    let _: i64 = script.arg(now).invoke_async(&mut redis.conn()).await?;
    Ok(())
}

/// Claims a try against `keys` (full key names with their rules) at `now`: `None` when it
/// was counted, `Some(wait)` when one of them must wait first.
pub(crate) async fn throttle_claim(
    redis: &Redis,
    keys: &[(String, ThrottleRule)],
    now: i64,
) -> RedisResult<Option<i64>> {
    let mut script = THROTTLE_CLAIM.prepare_invoke();
    script.arg(now);
    for (key, rule) in keys {
        script
            .key(key)
            .arg(rule.free_failures)
            .arg(rule.first_wait)
            .arg(rule.max_wait)
            .arg(rule.max_failures_per_window)
            .arg(rule.window);
    }
    script.arg(THROTTLE_GRACE_MS);
    let wait: i64 = script.invoke_async(&mut redis.conn()).await?;
    Ok((wait > 0).then_some(wait))
}

/// See [`THROTTLE_SUCCEEDED`].
pub(crate) async fn throttle_succeeded(
    redis: &Redis,
    account: &str,
    address: Option<&str>,
    now: i64,
) -> RedisResult<()> {
    let mut script = THROTTLE_SUCCEEDED.key(account);
    if let Some(address) = address {
        script.key(address);
    }
    let _: i64 = script.arg(now).invoke_async(&mut redis.conn()).await?;
    Ok(())
}

/// A throttle key's counters as stored (failures, window start, next try at), for tests.
#[cfg(test)]
pub(crate) async fn throttle_counters(
    redis: &Redis,
    key: &str,
) -> RedisResult<Option<(i64, i64, i64)>> {
    let c: (Option<i64>, Option<i64>, Option<i64>) = redis::cmd("HMGET")
        .arg(key)
        .arg("f")
        .arg("w")
        .arg("n")
        .query_async(&mut redis.conn())
        .await?;
    Ok(match c {
        (Some(f), Some(w), Some(n)) => Some((f, w, n)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign_in::throttle::{ACCOUNT_RULE, ADDRESS_RULE};
    use crate::store::redis::test_redis;

    const NOW: i64 = 1_700_000_000;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_claims_are_each_counted_once_and_a_burst_is_throttled() {
        let Some(redis) = test_redis("redis throttle burst").await else {
            return;
        };
        let keys = vec![
            (redis.key("throttle:account:x"), ACCOUNT_RULE),
            (redis.key("throttle:address:y"), ADDRESS_RULE),
        ];
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (redis, keys) = (redis.clone(), keys.clone());
                tokio::spawn(async move { throttle_claim(&redis, &keys, NOW).await.unwrap() })
            })
            .collect();
        let mut counted = 0;
        for task in tasks {
            counted += usize::from(task.await.unwrap().is_none());
        }
        // Three free tries; the third starts a one-second wait, which stops the rest.
        assert_eq!(counted as i64, ACCOUNT_RULE.free_failures);
        let account = throttle_counters(&redis, &keys[0].0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(account, (3, NOW, NOW + 1));
        let address = throttle_counters(&redis, &keys[1].0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(address, (3, NOW, NOW), "both keys or neither");
    }
}
