//! Checking a TOTP code: a claim on the account's second-factor attempts first
//! (`attempts.rs`: counted before the code is looked at, so a burst is capped),
//! then the code, then the replay check, which advances the last accepted step atomically
//! (compare-and-set) so that a code is accepted once.
//!
//! The attempt counts are in the database, or in Redis when the engine has one; the last
//! accepted step stays in the database, next to the secret it belongs to.

use sqlx::Row;

use crate::base::metrics;
use crate::second_factor::attempts::SecondFactorAttempts;
pub use crate::second_factor::attempts::{
    FIRST_BACKOFF_SECONDS, FREE_FAILURES, MAX_BACKOFF_SECONDS,
};
use crate::second_factor::totp;
use crate::second_factor::two_factor::{db_error, TwoFactor};
use crate::sign_in::users::UserId;
use crate::ErrorCode;

impl TwoFactor {
    /// Keeps the attempt counts in `attempts` (the engine's choice: the database or Redis).
    pub fn with_attempts(mut self, attempts: SecondFactorAttempts) -> Self {
        self.attempts = attempts;
        self
    }

    /// Verifies a code for `user_id`: the attempt is claimed first (`rate_limited` while the
    /// account waits), then the code is checked, then the replay check advances the last
    /// accepted step atomically (compare-and-set). A wrong or replayed code keeps its claim.
    pub async fn verify(&self, user_id: UserId, code: &str, now: i64) -> Result<(), ErrorCode> {
        let answer = self.check_code(user_id, code, now).await;
        metrics::second_factor_try(metrics::SecondFactor::Totp, &answer);
        answer
    }

    async fn check_code(&self, user_id: UserId, code: &str, now: i64) -> Result<(), ErrorCode> {
        let code = totp::normalise_code(code);
        if code.is_empty() {
            return Err(ErrorCode::MissingFields);
        }
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
        self.attempts.claim(user_id, now).await?;
        #[cfg(test)]
        self.codes_checked
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let Some(step) = totp::matching_step(&secret, &code, now, digits as u8) else {
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
        .await;
        let advanced = match advanced {
            Ok(advanced) => advanced,
            Err(e) => {
                // A right code we failed to record is not the guesser's wrong answer.
                self.attempts.not_checked(user_id).await?;
                return Err(db_error(e));
            }
        };
        if advanced.rows_affected() != 1 {
            // ASVS 2.8.5: reuse is refused and logged (never the code itself).
            tracing::warn!(user_id, step, "refused a replayed TOTP code");
            return Err(ErrorCode::CodeUsed);
        }
        self.attempts.succeeded(user_id).await
    }

    /// The wait imposed after `failures` wrong codes in a row.
    pub fn backoff_after(failures: i64) -> i64 {
        crate::second_factor::attempts::backoff_after(failures)
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
        let attempts = match crate::test_support::test_redis_url() {
            Some(url) => SecondFactorAttempts::new(std::sync::Arc::new(
                crate::second_factor::attempts::RedisSecondFactorCounts::new(
                    crate::store::redis::Redis::connect(&url, &crate::store::redis::test_prefix())
                        .await
                        .unwrap(),
                ),
            )),
            None => return (tf, user),
        };
        (tf.with_attempts(attempts), user)
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_burst_of_wrong_codes_is_checked_only_as_often_as_the_free_tries() {
        let dir = tempfile::tempdir().unwrap();
        let (tf, user) = enrolled(&dir).await;
        let t = NOW + 120;
        let tasks: Vec<_> = (0..40)
            .map(|_| {
                let tf = tf.clone();
                tokio::spawn(async move { tf.verify(user, "000000", t).await })
            })
            .collect();
        for task in tasks {
            let answer = task.await.unwrap();
            assert!(
                matches!(answer, Err(ErrorCode::InvalidCode | ErrorCode::RateLimited)),
                "{answer:?}"
            );
        }
        assert_eq!(tf.codes_checked(), FREE_FAILURES as u64);
        let right = totp::code_at(&seed_secret(), t, 6);
        assert_eq!(
            tf.verify(user, &right, t).await,
            Err(ErrorCode::RateLimited)
        );
        assert_eq!(
            tf.codes_checked(),
            FREE_FAILURES as u64,
            "refused unchecked"
        );
    }
}
