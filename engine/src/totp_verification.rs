//! Checking a TOTP code: the account's back-off on wrong codes first, then the code, then the
//! replay check, which advances the last accepted step atomically (compare-and-set) so that a
//! code is accepted once.

use sqlx::Row;

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

impl TwoFactor {
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
        sqlx::query("DELETE FROM second_factor_failures WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
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
        sqlx::query(
            "INSERT INTO second_factor_failures (user_id, failures, last_failure_at) VALUES ($1, 1, $2)
             ON CONFLICT(user_id) DO UPDATE SET failures = failures + 1, last_failure_at = excluded.last_failure_at",
        )
        .bind(user_id)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{enrolled, seed_secret, NOW};

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
