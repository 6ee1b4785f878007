//! Guesses at a second factor, per account: the one place every second factor (TOTP codes
//! today; passkeys and recovery codes later) asks before it checks what was sent.
//!
//! A check is *claimed* first: counted as a wrong guess, atomically, before the code is looked
//! at, and only then checked; a right answer clears the account's count. So guesses sent all at
//! once are capped as surely as guesses sent one by one: 40 codes sent together on one sign-in
//! get [`FREE_FAILURES`] checks, and the rest wait out the back-off without being looked at.
//! (Checking first and counting after, as before, let every one of a burst through the check
//! before any was counted.) Each sign-in also ends after `flow::MAX_ATTEMPTS` wrong answers.
//!
//! The rule is RFC 4226 §7.3's delay scheme: [`FREE_FAILURES`] wrong codes in a row are free,
//! then each further check waits [`FIRST_BACKOFF_SECONDS`], doubling, up to
//! [`MAX_BACKOFF_SECONDS`]. The counts live in the database (`second_factor_failures`, a
//! compare-and-set per claim, so instances sharing it count each claim once) or in Redis when
//! the engine has one (one Lua script per claim, below).

use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use redis::{RedisResult, Script};
use sqlx::Row;

use crate::sign_in::users::UserId;
use crate::store::db::Pool;
use crate::store::redis::Redis;
use crate::ErrorCode;

/// Wrong codes an account may make before the back-off starts.
pub const FREE_FAILURES: i64 = 3;
/// The back-off doubles from this with each further wrong code...
pub const FIRST_BACKOFF_SECONDS: i64 = 5;
/// ...up to this.
pub const MAX_BACKOFF_SECONDS: i64 = 15 * 60;

fn db_error(e: sqlx::Error) -> ErrorCode {
    tracing::error!(error = %e, "second-factor attempt counting failed");
    ErrorCode::Unknown
}

fn redis_error(e: redis::RedisError) -> ErrorCode {
    tracing::error!(error = %e, "second-factor attempt counting in Redis failed");
    ErrorCode::Unknown
}

/// The wait before the next check after `failures` wrong codes in a row.
pub fn backoff_after(failures: i64) -> i64 {
    if failures < FREE_FAILURES {
        return 0;
    }
    let doublings = (failures - FREE_FAILURES).min(20) as u32;
    (FIRST_BACKOFF_SECONDS << doublings).min(MAX_BACKOFF_SECONDS)
}

/// Where the accounts' second-factor guess counts are kept: the database
/// ([`DatabaseSecondFactorCounts`]) or Redis ([`RedisSecondFactorCounts`]); `Engine::open`
/// chooses one.
#[async_trait]
pub trait SecondFactorCounts: Send + Sync {
    /// See [`SecondFactorAttempts::claim`].
    async fn claim(&self, user_id: UserId, now: i64) -> Result<(), ErrorCode>;
    /// See [`SecondFactorAttempts::succeeded`].
    async fn succeeded(&self, user_id: UserId) -> Result<(), ErrorCode>;
    /// See [`SecondFactorAttempts::not_checked`].
    async fn not_checked(&self, user_id: UserId) -> Result<(), ErrorCode>;
}

/// The accounts' second-factor guess counts.
#[derive(Clone)]
pub struct SecondFactorAttempts {
    counts: Arc<dyn SecondFactorCounts>,
}

impl SecondFactorAttempts {
    pub fn new(counts: Arc<dyn SecondFactorCounts>) -> Self {
        Self { counts }
    }

    /// The counts in the database (one instance, or tests).
    pub fn in_database(pool: Pool) -> Self {
        Self::new(Arc::new(DatabaseSecondFactorCounts { pool }))
    }

    /// Claims one check of a second factor for `user_id` at `now`, counted as a wrong guess
    /// until [`SecondFactorAttempts::succeeded`]. `rate_limited` while the account waits out
    /// its back-off; such a refusal writes nothing (hammering does not lengthen the wait).
    pub async fn claim(&self, user_id: UserId, now: i64) -> Result<(), ErrorCode> {
        self.counts.claim(user_id, now).await
    }

    /// The claimed check found the right answer: the account starts over.
    pub async fn succeeded(&self, user_id: UserId) -> Result<(), ErrorCode> {
        self.counts.succeeded(user_id).await
    }

    /// A claim whose check never happened (our own failure, not the guesser's): the account
    /// gets it back.
    pub async fn not_checked(&self, user_id: UserId) -> Result<(), ErrorCode> {
        self.counts.not_checked(user_id).await
    }
}

/// The counts in the `second_factor_failures` table.
pub struct DatabaseSecondFactorCounts {
    pool: Pool,
}

#[async_trait]
impl SecondFactorCounts for DatabaseSecondFactorCounts {
    async fn claim(&self, user_id: UserId, now: i64) -> Result<(), ErrorCode> {
        loop {
            let stored = sqlx::query(
                "SELECT failures, last_failure_at FROM second_factor_failures WHERE user_id = $1",
            )
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
            let written = match stored {
                None => sqlx::query(
                    "INSERT INTO second_factor_failures (user_id, failures, last_failure_at)
                     VALUES ($1, 1, $2) ON CONFLICT (user_id) DO NOTHING",
                )
                .bind(user_id)
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err(db_error)?,
                Some(row) => {
                    let failures: i64 = row.try_get("failures").map_err(db_error)?;
                    let last: i64 = row.try_get("last_failure_at").map_err(db_error)?;
                    if now < last + backoff_after(failures) {
                        return Err(ErrorCode::RateLimited);
                    }
                    // Compare-and-set: a claim that changed the count since our read wins, and
                    // this one reads again.
                    sqlx::query(
                        "UPDATE second_factor_failures SET failures = $1, last_failure_at = $2
                         WHERE user_id = $3 AND failures = $4 AND last_failure_at = $5",
                    )
                    .bind(failures + 1)
                    .bind(now)
                    .bind(user_id)
                    .bind(failures)
                    .bind(last)
                    .execute(&self.pool)
                    .await
                    .map_err(db_error)?
                }
            };
            if written.rows_affected() == 1 {
                return Ok(());
            }
        }
    }

    async fn succeeded(&self, user_id: UserId) -> Result<(), ErrorCode> {
        sqlx::query("DELETE FROM second_factor_failures WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn not_checked(&self, user_id: UserId) -> Result<(), ErrorCode> {
        sqlx::query(
            "UPDATE second_factor_failures
             SET failures = CASE WHEN failures > 0 THEN failures - 1 ELSE 0 END
             WHERE user_id = $1",
        )
        .bind(user_id)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }
}

/// The counts in Redis, shared by every instance.
pub struct RedisSecondFactorCounts {
    redis: Redis,
}

impl RedisSecondFactorCounts {
    pub fn new(redis: Redis) -> Self {
        Self { redis }
    }
}

#[async_trait]
impl SecondFactorCounts for RedisSecondFactorCounts {
    async fn claim(&self, user_id: UserId, now: i64) -> Result<(), ErrorCode> {
        let wait = second_factor_claim(&self.redis, user_id, now)
            .await
            .map_err(redis_error)?;
        match wait {
            None => Ok(()),
            Some(_) => Err(ErrorCode::RateLimited),
        }
    }

    async fn succeeded(&self, user_id: UserId) -> Result<(), ErrorCode> {
        second_factor_clear(&self.redis, user_id)
            .await
            .map_err(redis_error)
    }

    async fn not_checked(&self, user_id: UserId) -> Result<(), ErrorCode> {
        second_factor_give_back(&self.redis, user_id)
            .await
            .map_err(redis_error)
    }
}

/// How long an account's second-factor failure count outlives its last claim. The database
/// keeps it until the next right answer; here a day without guesses also starts it over, so
/// keys of accounts nobody signs in to again do not pile up. The longest back-off is 15
/// minutes, so someone guessing keeps the count alive; one who pauses a day gets the three
/// free tries back (three codes in a million per day).
pub const SECOND_FACTOR_FAILURES_TTL_SECONDS: i64 = 24 * 3600;

/// Claims one second-factor check (`second_factor/attempts.rs`). KEYS[1]: the account's count
/// (`f` wrong in a row, `l` last claim at). ARGV: now, free failures, first wait, max wait,
/// expiry in ms. Answers 0 when the claim was counted (`f` + 1, `l` = now), else the seconds
/// left to wait, writing nothing. The rule is `second_factor_attempts::backoff_after`.
static SECOND_FACTOR_CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local now = tonumber(ARGV[1])
local free, first, maxw = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local c = redis.call('HMGET', KEYS[1], 'f', 'l')
local f, l = tonumber(c[1]), tonumber(c[2])
if f == nil or l == nil then
  f = 0
else
  local wait = 0
  if f >= free then
    wait = math.min(first * 2 ^ math.min(f - free, 20), maxw)
  end
  if now < l + wait then
    return l + wait - now
  end
end
redis.call('HSET', KEYS[1], 'f', f + 1, 'l', now)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 0",
    )
});

/// A claim whose check never happened: the account gets it back (`f` - 1, not below 0).
static SECOND_FACTOR_GIVE_BACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local f = tonumber(redis.call('HGET', KEYS[1], 'f'))
if f and f > 0 then
  redis.call('HSET', KEYS[1], 'f', f - 1)
end
return 1",
    )
});

fn second_factor_key(redis: &Redis, user_id: i64) -> String {
    redis.key(&format!("second_factor_failures:{user_id}"))
}

/// See [`SECOND_FACTOR_CLAIM`]: `None` when counted, `Some(wait)` when the account must wait.
pub(crate) async fn second_factor_claim(
    redis: &Redis,
    user_id: i64,
    now: i64,
) -> RedisResult<Option<i64>> {
    let wait: i64 = SECOND_FACTOR_CLAIM
        .key(second_factor_key(redis, user_id))
        .arg(now)
        .arg(FREE_FAILURES)
        .arg(FIRST_BACKOFF_SECONDS)
        .arg(MAX_BACKOFF_SECONDS)
        .arg(SECOND_FACTOR_FAILURES_TTL_SECONDS * 1000)
        .invoke_async(&mut redis.conn())
        .await?;
    Ok((wait > 0).then_some(wait))
}

/// See [`SECOND_FACTOR_GIVE_BACK`].
pub(crate) async fn second_factor_give_back(redis: &Redis, user_id: i64) -> RedisResult<()> {
    let _: i64 = SECOND_FACTOR_GIVE_BACK
        .key(second_factor_key(redis, user_id))
        .invoke_async(&mut redis.conn())
        .await?;
    Ok(())
}

/// A right answer: the account starts over.
pub(crate) async fn second_factor_clear(redis: &Redis, user_id: i64) -> RedisResult<()> {
    let _: i64 = redis::cmd("DEL")
        .arg(second_factor_key(redis, user_id))
        .query_async(&mut redis.conn())
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{register_owner, test_redis_url, NOW};

    /// Counts on the test database in `dir`, in Redis too when this is the Postgres + Redis run.
    async fn attempts(dir: &tempfile::TempDir) -> (SecondFactorAttempts, UserId) {
        let (engine, _) = crate::test_support::engine_in(dir).await;
        let user = register_owner(&engine).await;
        let attempts = match test_redis_url() {
            Some(url) => SecondFactorAttempts::new(Arc::new(RedisSecondFactorCounts::new(
                Redis::connect(&url, &crate::store::redis::test_prefix())
                    .await
                    .unwrap(),
            ))),
            None => SecondFactorAttempts::in_database(engine.pool().clone()),
        };
        (attempts, user)
    }

    #[test]
    fn the_backoff_doubles_and_is_capped() {
        assert_eq!(backoff_after(FREE_FAILURES - 1), 0);
        assert_eq!(backoff_after(FREE_FAILURES), 5);
        assert_eq!(backoff_after(FREE_FAILURES + 1), 10);
        assert_eq!(backoff_after(FREE_FAILURES + 100), MAX_BACKOFF_SECONDS);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_burst_of_claims_gets_the_free_ones_and_no_more() {
        let dir = tempfile::tempdir().unwrap();
        let (attempts, user) = attempts(&dir).await;
        let tasks: Vec<_> = (0..40)
            .map(|_| {
                let attempts = attempts.clone();
                tokio::spawn(async move { attempts.claim(user, NOW).await })
            })
            .collect();
        let mut granted = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(()) => granted += 1,
                Err(code) => assert_eq!(code, ErrorCode::RateLimited),
            }
        }
        assert_eq!(granted, FREE_FAILURES);
        // The wait runs from the last claim; then one more check, and a longer wait.
        let wait = backoff_after(FREE_FAILURES);
        assert_eq!(
            attempts.claim(user, NOW + wait - 1).await,
            Err(ErrorCode::RateLimited)
        );
        assert_eq!(attempts.claim(user, NOW + wait).await, Ok(()));
        assert_eq!(
            attempts.claim(user, NOW + wait + 5).await,
            Err(ErrorCode::RateLimited)
        );
        // A check that never happened is given back; a right answer clears the count.
        attempts.not_checked(user).await.unwrap();
        assert_eq!(attempts.claim(user, NOW + wait + 5).await, Ok(()));
        attempts.succeeded(user).await.unwrap();
        for _ in 0..FREE_FAILURES {
            assert_eq!(attempts.claim(user, NOW + wait + 5).await, Ok(()));
        }
    }

    #[tokio::test]
    async fn second_factor_claims_wait_out_the_backoff_and_clear() {
        let Some(redis) = crate::store::redis::test_redis("redis second-factor claims").await
        else {
            return;
        };
        for _ in 0..3 {
            assert_eq!(second_factor_claim(&redis, 7, NOW).await.unwrap(), None);
        }
        assert_eq!(
            second_factor_claim(&redis, 7, NOW + 1).await.unwrap(),
            Some(4)
        );
        assert_eq!(
            second_factor_claim(&redis, 8, NOW).await.unwrap(),
            None,
            "per account"
        );
        second_factor_give_back(&redis, 7).await.unwrap();
        assert_eq!(second_factor_claim(&redis, 7, NOW + 1).await.unwrap(), None);
        second_factor_clear(&redis, 7).await.unwrap();
        second_factor_clear(&redis, 7).await.unwrap();
        assert_eq!(second_factor_claim(&redis, 7, NOW + 1).await.unwrap(), None);
    }
}
