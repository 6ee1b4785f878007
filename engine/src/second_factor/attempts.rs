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
//! the engine has one (one Lua script per claim, `redis_counters.rs`).

use sqlx::Row;

use crate::sign_in::users::UserId;
use crate::store::db::Pool;
use crate::store::redis::Redis;
use crate::store::redis_counters::{
    second_factor_claim, second_factor_clear, second_factor_give_back,
};
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

/// The accounts' second-factor guess counts.
#[derive(Clone)]
pub struct SecondFactorAttempts {
    pool: Pool,
    /// With Redis the counts live there, and the table stays empty.
    redis: Option<Redis>,
}

impl SecondFactorAttempts {
    pub fn new(pool: Pool, redis: Option<Redis>) -> Self {
        Self { pool, redis }
    }

    /// Claims one check of a second factor for `user_id` at `now`, counted as a wrong guess
    /// until [`SecondFactorAttempts::succeeded`]. `rate_limited` while the account waits out
    /// its back-off; such a refusal writes nothing (hammering does not lengthen the wait).
    pub async fn claim(&self, user_id: UserId, now: i64) -> Result<(), ErrorCode> {
        if let Some(redis) = &self.redis {
            let wait = second_factor_claim(redis, user_id, now)
                .await
                .map_err(redis_error)?;
            return match wait {
                None => Ok(()),
                Some(_) => Err(ErrorCode::RateLimited),
            };
        }
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

    /// The claimed check found the right answer: the account starts over.
    pub async fn succeeded(&self, user_id: UserId) -> Result<(), ErrorCode> {
        if let Some(redis) = &self.redis {
            return second_factor_clear(redis, user_id)
                .await
                .map_err(redis_error);
        }
        sqlx::query("DELETE FROM second_factor_failures WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// A claim whose check never happened (our own failure, not the guesser's): the account
    /// gets it back.
    pub async fn not_checked(&self, user_id: UserId) -> Result<(), ErrorCode> {
        if let Some(redis) = &self.redis {
            return second_factor_give_back(redis, user_id)
                .await
                .map_err(redis_error);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{register_owner, test_redis_url, NOW};

    /// Counts on the test database in `dir`, in Redis too when this is the Postgres + Redis run.
    async fn attempts(dir: &tempfile::TempDir) -> (SecondFactorAttempts, UserId) {
        let (engine, _) = crate::test_support::engine_in(dir).await;
        let user = register_owner(&engine).await;
        let redis = match test_redis_url() {
            Some(url) => Some(
                Redis::connect(&url, &crate::store::redis::test_prefix())
                    .await
                    .unwrap(),
            ),
            None => None,
        };
        (
            SecondFactorAttempts::new(engine.pool().clone(), redis),
            user,
        )
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
}
