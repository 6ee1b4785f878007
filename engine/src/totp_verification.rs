//! Checking a TOTP code: the account's back-off on wrong codes first, then the code, then the
//! replay check, which advances the last accepted step atomically (compare-and-set) so that a
//! code is accepted once.
//!
//! The back-off's counters (wrong codes in a row, the last one's time) are in the database, or
//! in Redis when the engine has one (`redis_counters.rs`); the last accepted step stays in the
//! database, next to the secret it belongs to.

use sqlx::Row;

use crate::redis_counters::{totp_clear_failures, totp_failures, totp_record_failure};
use crate::redis_store::Redis;
use crate::totp;
use crate::two_factor::{db_error, TwoFactor};
use crate::users::UserId;
use crate::ErrorCode;

/// Wrong codes an account may make before the back-off starts.
pub const FREE_FAILURES: i64 = 3;
/// The back-off doubles from this with each further wrong code...
pub const FIRST_BACKOFF_SECONDS: i64 = 5;
/// ...up to this.
pub const MAX_BACKOFF_SECONDS: i64 = 15 * 60;

fn redis_error(e: redis::RedisError) -> ErrorCode {
    tracing::error!(error = %e, "the TOTP back-off in Redis failed");
    ErrorCode::Unknown
}

impl TwoFactor {
    /// Keeps the back-off's counters in `redis` (when given) instead of the database.
    pub fn with_redis(mut self, redis: Option<Redis>) -> Self {
        self.backoff_redis = redis;
        self
    }

    /// Verifies a code for `user_id`: back-off first, then the code, then the replay check,
    /// which advances the last accepted step atomically (compare-and-set).
    pub async fn verify(&self, user_id: UserId, code: &str, now: i64) -> Result<(), ErrorCode> {
        self.check_backoff(user_id, now).await?;
        let row =
            sqlx::query("SELECT secret_sealed, digits FROM totp_credentials WHERE user_id = $1")
                .bind(user_id)
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?
                .into_iter()
                .next()
                .ok_or(ErrorCode::TwoFactorOff)?;
        let sealed: Vec<u8> = row.try_get("secret_sealed").map_err(db_error)?;
        let digits: i64 = row.try_get("digits").map_err(db_error)?;
        let secret = self.open(user_id, &sealed)?;
        let code = totp::normalise_code(code);
        if code.is_empty() {
            return Err(ErrorCode::MissingFields);
        }
        let Some(step) = totp::matching_step(&secret, &code, now, digits as u8) else {
            self.record_failure(user_id, now).await?;
            return Err(ErrorCode::InvalidCode);
        };
        let advanced = sqlx::query(
            "INSERT INTO totp_used_steps (user_id, last_step) VALUES ($1, $2)
             ON CONFLICT(user_id) DO UPDATE SET last_step = excluded.last_step
             WHERE totp_used_steps.last_step < excluded.last_step",
        )
        .bind(user_id)
        .bind(step)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        if advanced.rows_affected() != 1 {
            // ASVS 2.8.5: reuse is refused and logged (never the code itself).
            tracing::warn!(user_id, step, "refused a replayed TOTP code");
            self.record_failure(user_id, now).await?;
            return Err(ErrorCode::CodeUsed);
        }
        self.clear_failures(user_id).await?;
        Ok(())
    }

    /// The wait imposed after `failures` wrong codes in a row.
    pub fn backoff_after(failures: i64) -> i64 {
        if failures < FREE_FAILURES {
            return 0;
        }
        let doublings = (failures - FREE_FAILURES).min(20) as u32;
        (FIRST_BACKOFF_SECONDS << doublings).min(MAX_BACKOFF_SECONDS)
    }

    async fn check_backoff(&self, user_id: UserId, now: i64) -> Result<(), ErrorCode> {
        if let Some(redis) = &self.backoff_redis {
            let failures = totp_failures(redis, user_id).await.map_err(redis_error)?;
            return match failures {
                Some((failures, last)) if now < last + Self::backoff_after(failures) => {
                    Err(ErrorCode::RateLimited)
                }
                _ => Ok(()),
            };
        }
        let row = sqlx::query(
            "SELECT failures, last_failure_at FROM second_factor_failures WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?
        .into_iter()
        .next();
        if let Some(row) = row {
            let failures: i64 = row.try_get("failures").map_err(db_error)?;
            let last: i64 = row.try_get("last_failure_at").map_err(db_error)?;
            if now < last + Self::backoff_after(failures) {
                return Err(ErrorCode::RateLimited);
            }
        }
        Ok(())
    }

    async fn record_failure(&self, user_id: UserId, now: i64) -> Result<(), ErrorCode> {
        if let Some(redis) = &self.backoff_redis {
            return totp_record_failure(redis, user_id, now)
                .await
                .map_err(redis_error);
        }
        sqlx::query(
            "INSERT INTO second_factor_failures (user_id, failures, last_failure_at) VALUES ($1, 1, $2)
             ON CONFLICT(user_id) DO UPDATE SET failures = second_factor_failures.failures + 1, last_failure_at = excluded.last_failure_at",
        )
        .bind(user_id)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// A right code: the account's back-off starts over.
    async fn clear_failures(&self, user_id: UserId) -> Result<(), ErrorCode> {
        if let Some(redis) = &self.backoff_redis {
            return totp_clear_failures(redis, user_id)
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{seed_secret, NOW};

    /// An enrolled store (`test_support::enrolled`), its back-off in Redis when
    /// `STEPGATE_TEST_REDIS_URL` is set.
    async fn enrolled(dir: &tempfile::TempDir) -> (TwoFactor, UserId) {
        let (tf, user) = crate::test_support::enrolled(dir).await;
        let redis = match crate::test_support::test_redis_url() {
            Some(url) => Some(
                Redis::connect(&url, &crate::redis_store::test_prefix())
                    .await
                    .unwrap(),
            ),
            None => None,
        };
        (tf.with_redis(redis), user)
    }

    #[tokio::test]
    async fn a_code_is_accepted_once_and_older_steps_never() {
        let dir = tempfile::tempdir().unwrap();
        let (tf, user) = enrolled(&dir).await;
        let t = NOW + 60;
        let code = totp::code_at(&seed_secret(), t, 6);
        assert_eq!(tf.verify(user, &code, t).await, Ok(()));
        assert_eq!(tf.verify(user, &code, t).await, Err(ErrorCode::CodeUsed));
        // The previous step's code is still inside the skew window but is now in the past.
        let previous = totp::code_at(&seed_secret(), t - 30, 6);
        assert_eq!(
            tf.verify(user, &previous, t).await,
            Err(ErrorCode::CodeUsed)
        );
    }

    #[tokio::test]
    async fn concurrent_submissions_of_one_code_let_exactly_one_through() {
        let dir = tempfile::tempdir().unwrap();
        let (tf, user) = enrolled(&dir).await;
        let t = NOW + 90;
        let code = totp::code_at(&seed_secret(), t, 6);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (tf, code) = (tf.clone(), code.clone());
                tokio::spawn(async move { tf.verify(user, &code, t).await })
            })
            .collect();
        let mut accepted = 0;
        for task in tasks {
            if task.await.unwrap().is_ok() {
                accepted += 1;
            }
        }
        assert_eq!(accepted, 1);
    }

    #[tokio::test]
    async fn wrong_codes_back_off_per_account_and_success_resets() {
        let dir = tempfile::tempdir().unwrap();
        let (tf, user) = enrolled(&dir).await;
        let mut t = NOW + 30;
        for _ in 0..FREE_FAILURES {
            assert_eq!(
                tf.verify(user, "000000", t).await,
                Err(ErrorCode::InvalidCode)
            );
        }
        // Now even the right code waits out the back-off...
        let right = totp::code_at(&seed_secret(), t, 6);
        assert_eq!(
            tf.verify(user, &right, t).await,
            Err(ErrorCode::RateLimited)
        );
        // ...and is accepted once it has passed.
        t += TwoFactor::backoff_after(FREE_FAILURES);
        let right = totp::code_at(&seed_secret(), t, 6);
        assert_eq!(tf.verify(user, &right, t).await, Ok(()));
        assert_eq!(
            tf.verify(user, "000000", t + 30).await,
            Err(ErrorCode::InvalidCode)
        );
    }

    #[test]
    fn the_backoff_doubles_and_is_capped() {
        assert_eq!(TwoFactor::backoff_after(FREE_FAILURES - 1), 0);
        assert_eq!(TwoFactor::backoff_after(FREE_FAILURES), 5);
        assert_eq!(TwoFactor::backoff_after(FREE_FAILURES + 1), 10);
        assert_eq!(
            TwoFactor::backoff_after(FREE_FAILURES + 100),
            MAX_BACKOFF_SECONDS
        );
    }
}
