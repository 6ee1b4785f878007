//! Turning the TOTP second factor on and off: through the TOTP site (a single-use registration
//! token in its `action=add` link, then its registration callback with the new seed), through
//! an authenticator app (a pending secret, confirmed by the app's first code), and turning it
//! off with a current code.

use crate::second_factor::totp;
use crate::second_factor::two_factor::{db_error, TwoFactor};
use crate::sign_in::users::UserId;
use crate::ErrorCode;

/// How long a registration token or a pending authenticator-app secret lives.
pub const ENROLLMENT_TTL_SECONDS: i64 = 10 * 60;
/// The TOTP site's callback must be this fresh (its `timestamp`).
pub const CALLBACK_MAX_AGE_SECONDS: i64 = 60;

/// What the TOTP site sends to the registration callback (query parameters).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct RegistrationCallback {
    pub success: Option<String>,
    #[serde(rename = "seedId")]
    pub seed_id: Option<String>,
    pub seed: Option<String>,
    pub code: Option<String>,
    #[serde(rename = "regToken")]
    pub reg_token: Option<String>,
    pub timestamp: Option<String>,
    pub error: Option<String>,
}

/// A new authenticator-app secret, shown once while the user sets the app up.
#[derive(Debug, Clone)]
pub struct AppEnrollment {
    pub otpauth_uri: String,
    pub secret_base32: String,
}

fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(text.as_bytes()))
}

impl TwoFactor {
    /// A fresh single-use registration token for the TOTP site's `action=add` link.
    pub async fn begin_site_enrollment(
        &self,
        user_id: UserId,
        now: i64,
    ) -> Result<String, ErrorCode> {
        let token = hex::encode(totp::random_secret());
        sqlx::query(
            "INSERT INTO totp_registrations (token_hash, user_id, expires_at) VALUES ($1, $2, $3)",
        )
        .bind(sha256_hex(&token))
        .bind(user_id)
        .bind(now + ENROLLMENT_TTL_SECONDS)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(token)
    }

    /// Checks the TOTP site's registration callback and, if it holds, turns TOTP on.
    pub async fn complete_site_enrollment(
        &self,
        user_id: UserId,
        callback: &RegistrationCallback,
        now: i64,
    ) -> Result<(), ErrorCode> {
        let reg_token = callback
            .reg_token
            .as_deref()
            .ok_or(ErrorCode::InvalidRegistration)?;
        // Consume the token first: single use, bound to this user, unexpired.
        let consumed = sqlx::query("DELETE FROM totp_registrations WHERE token_hash = $1 AND user_id = $2 AND expires_at > $3")
            .bind(sha256_hex(reg_token))
            .bind(user_id)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        if consumed.rows_affected() != 1 {
            return Err(ErrorCode::InvalidRegistration);
        }
        if callback.success.as_deref() != Some("true") {
            return Err(ErrorCode::EnrollmentCancelled);
        }
        let timestamp: i64 = callback
            .timestamp
            .as_deref()
            .and_then(|t| t.trim().parse().ok())
            .ok_or(ErrorCode::InvalidRegistration)?;
        // TOTP sites send seconds or milliseconds; both are accepted.
        let timestamp = if timestamp > 100_000_000_000 {
            timestamp / 1000
        } else {
            timestamp
        };
        if (now - timestamp).abs() > CALLBACK_MAX_AGE_SECONDS {
            return Err(ErrorCode::RegistrationExpired);
        }
        let secret = callback
            .seed
            .as_deref()
            .and_then(totp::base32_decode)
            .ok_or(ErrorCode::InvalidRegistration)?;
        if secret.len() < 16 {
            // RFC 4226 §4 R6: at least 128 bits.
            return Err(ErrorCode::InvalidRegistration);
        }
        let code = totp::normalise_code(callback.code.as_deref().unwrap_or_default());
        let digits = match code.len() {
            6 => 6,
            8 => 8,
            _ => return Err(ErrorCode::InvalidRegistration),
        };
        let step =
            totp::matching_step(&secret, &code, now, digits).ok_or(ErrorCode::InvalidCode)?;
        let seed_id = callback
            .seed_id
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= 255);
        self.store_credential(user_id, &secret, digits, seed_id, step, now)
            .await
    }

    /// Starts authenticator-app enrolment: a new secret, kept sealed until the first code.
    pub async fn begin_app_enrollment(
        &self,
        user_id: UserId,
        email: &str,
        now: i64,
    ) -> Result<AppEnrollment, ErrorCode> {
        let secret = totp::random_secret();
        sqlx::query(
            "INSERT INTO totp_pending (user_id, secret_sealed, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT(user_id) DO UPDATE SET secret_sealed = excluded.secret_sealed, expires_at = excluded.expires_at",
        )
        .bind(user_id)
        .bind(self.seal(user_id, &secret))
        .bind(now + ENROLLMENT_TTL_SECONDS)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(AppEnrollment {
            otpauth_uri: totp::otpauth_uri(&self.site.issuer, email, &secret, 6),
            secret_base32: totp::base32_encode(&secret),
        })
    }

    /// Turns TOTP on once the authenticator app shows a valid current code.
    pub async fn confirm_app_enrollment(
        &self,
        user_id: UserId,
        code: &str,
        now: i64,
    ) -> Result<(), ErrorCode> {
        let sealed: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT secret_sealed FROM totp_pending WHERE user_id = $1 AND expires_at > $2",
        )
        .bind(user_id)
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?
        .into_iter()
        .next();
        let sealed = sealed.ok_or(ErrorCode::InvalidRegistration)?;
        let secret = self.open(user_id, &sealed)?;
        let code = totp::normalise_code(code);
        if code.is_empty() {
            return Err(ErrorCode::MissingFields);
        }
        let step = totp::matching_step(&secret, &code, now, 6).ok_or(ErrorCode::InvalidCode)?;
        self.store_credential(user_id, &secret, 6, None, step, now)
            .await?;
        sqlx::query("DELETE FROM totp_pending WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Turns TOTP off; a current code proves the user still holds the factor.
    pub async fn disable(&self, user_id: UserId, code: &str, now: i64) -> Result<(), ErrorCode> {
        self.verify(user_id, code, now).await?;
        sqlx::query("DELETE FROM totp_credentials WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn store_credential(
        &self,
        user_id: UserId,
        secret: &[u8],
        digits: u8,
        seed_id: Option<&str>,
        used_step: i64,
        now: i64,
    ) -> Result<(), ErrorCode> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let inserted = sqlx::query(
            "INSERT INTO totp_credentials (user_id, secret_sealed, digits, seed_id, enabled_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT(user_id) DO NOTHING",
        )
        .bind(user_id)
        .bind(self.seal(user_id, secret))
        .bind(i64::from(digits))
        .bind(seed_id)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        if inserted.rows_affected() != 1 {
            return Err(ErrorCode::AlreadyConfigured);
        }
        // The code that confirmed enrolment counts as used: it cannot also sign in.
        sqlx::query(
            "INSERT INTO totp_used_steps (user_id, last_step) VALUES ($1, $2)
             ON CONFLICT(user_id) DO UPDATE SET last_step = CASE WHEN excluded.last_step > totp_used_steps.last_step
                 THEN excluded.last_step ELSE totp_used_steps.last_step END",
        )
        .bind(user_id)
        .bind(used_step)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(())
    }

    /// Drops expired registration tokens and pending secrets.
    pub async fn purge_expired(&self, now: i64) -> Result<(), ErrorCode> {
        for sql in [
            "DELETE FROM totp_registrations WHERE expires_at <= $1",
            "DELETE FROM totp_pending WHERE expires_at <= $1",
        ] {
            sqlx::query(sql)
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err(db_error)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::second_factor::two_factor::TotpStatus;
    use crate::test_support::{callback, enrolled, seed_secret, two_factor_in, NOW, SEED};

    #[tokio::test]
    async fn site_enrollment_stores_the_seed_id_and_turns_totp_on() {
        let dir = tempfile::tempdir().unwrap();
        let (tf, user) = enrolled(&dir).await;
        assert_eq!(
            tf.status(user).await.unwrap(),
            Some(TotpStatus {
                seed_id: Some("seed_abc123".into()),
                digits: 6
            })
        );
    }

    #[tokio::test]
    async fn the_enrollment_code_cannot_also_be_the_first_sign_in_code() {
        let dir = tempfile::tempdir().unwrap();
        let (tf, user) = enrolled(&dir).await;
        let same = totp::code_at(&seed_secret(), NOW, 6);
        assert_eq!(tf.verify(user, &same, NOW).await, Err(ErrorCode::CodeUsed));
        let next = totp::code_at(&seed_secret(), NOW + 30, 6);
        assert_eq!(tf.verify(user, &next, NOW + 30).await, Ok(()));
    }

    #[tokio::test]
    async fn registration_tokens_are_single_use_bound_to_the_user_and_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let (tf, user) = two_factor_in(&dir).await;
        let code = totp::code_at(&seed_secret(), NOW, 6);

        let token = tf.begin_site_enrollment(user, NOW).await.unwrap();
        assert_eq!(
            tf.complete_site_enrollment(user + 1, &callback(&token, &code, NOW), NOW)
                .await,
            Err(ErrorCode::InvalidRegistration),
            "another user's token"
        );
        let token = tf.begin_site_enrollment(user, NOW).await.unwrap();
        assert_eq!(
            tf.complete_site_enrollment(user, &callback(&token, &code, NOW - 61), NOW)
                .await,
            Err(ErrorCode::RegistrationExpired),
            "a callback older than 60 s"
        );
        assert_eq!(
            tf.complete_site_enrollment(user, &callback(&token, &code, NOW), NOW)
                .await,
            Err(ErrorCode::InvalidRegistration),
            "the token was used up by the refused attempt"
        );
        let token = tf.begin_site_enrollment(user, NOW).await.unwrap();
        let later = NOW + ENROLLMENT_TTL_SECONDS;
        assert_eq!(
            tf.complete_site_enrollment(user, &callback(&token, &code, later), later)
                .await,
            Err(ErrorCode::InvalidRegistration),
            "a token older than 10 minutes"
        );
        assert_eq!(tf.status(user).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_callback_whose_code_does_not_match_its_seed_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (tf, user) = two_factor_in(&dir).await;
        let token = tf.begin_site_enrollment(user, NOW).await.unwrap();
        let wrong = totp::code_at(&seed_secret(), NOW + 300, 6);
        assert_eq!(
            tf.complete_site_enrollment(user, &callback(&token, &wrong, NOW), NOW)
                .await,
            Err(ErrorCode::InvalidCode)
        );
        assert_eq!(tf.status(user).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_cancelled_enrollment_leaves_totp_off() {
        let dir = tempfile::tempdir().unwrap();
        let (tf, user) = two_factor_in(&dir).await;
        let token = tf.begin_site_enrollment(user, NOW).await.unwrap();
        let cancelled = RegistrationCallback {
            success: Some("false".into()),
            error: Some("user_cancelled".into()),
            reg_token: Some(token),
            ..Default::default()
        };
        assert_eq!(
            tf.complete_site_enrollment(user, &cancelled, NOW).await,
            Err(ErrorCode::EnrollmentCancelled)
        );
        assert_eq!(tf.status(user).await.unwrap(), None);
    }

    #[tokio::test]
    async fn eight_digit_seeds_are_supported() {
        let dir = tempfile::tempdir().unwrap();
        let (tf, user) = two_factor_in(&dir).await;
        let token = tf.begin_site_enrollment(user, NOW).await.unwrap();
        let code = totp::code_at(&seed_secret(), NOW, 8);
        tf.complete_site_enrollment(user, &callback(&token, &code, NOW), NOW)
            .await
            .unwrap();
        assert_eq!(tf.status(user).await.unwrap().unwrap().digits, 8);
        let next = totp::code_at(&seed_secret(), NOW + 30, 8);
        assert_eq!(tf.verify(user, &next, NOW + 30).await, Ok(()));
    }

    #[tokio::test]
    async fn authenticator_app_enrollment_needs_a_valid_code_and_has_no_seed_id() {
        let dir = tempfile::tempdir().unwrap();
        let (tf, user) = two_factor_in(&dir).await;
        let enrollment = tf
            .begin_app_enrollment(user, "t@example.org", NOW)
            .await
            .unwrap();
        assert!(enrollment
            .otpauth_uri
            .starts_with("otpauth://totp/Stepgate:t%40example.org?secret="));
        let secret = totp::base32_decode(&enrollment.secret_base32).unwrap();
        assert_eq!(
            tf.confirm_app_enrollment(user, "000000", NOW).await,
            Err(ErrorCode::InvalidCode)
        );
        assert_eq!(tf.status(user).await.unwrap(), None);
        let code = totp::code_at(&secret, NOW, 6);
        tf.confirm_app_enrollment(user, &format!("{} {}", &code[..3], &code[3..]), NOW)
            .await
            .unwrap();
        assert_eq!(
            tf.status(user).await.unwrap(),
            Some(TotpStatus {
                seed_id: None,
                digits: 6
            })
        );
    }

    #[tokio::test]
    async fn turning_totp_off_needs_a_current_code() {
        let dir = tempfile::tempdir().unwrap();
        let (tf, user) = enrolled(&dir).await;
        assert_eq!(
            tf.disable(user, "000000", NOW + 30).await,
            Err(ErrorCode::InvalidCode)
        );
        assert!(tf.status(user).await.unwrap().is_some());
        let code = totp::code_at(&seed_secret(), NOW + 60, 6);
        tf.disable(user, &code, NOW + 60).await.unwrap();
        assert_eq!(tf.status(user).await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_seed_is_not_in_the_database_file_in_clear() {
        let dir = tempfile::tempdir().unwrap();
        let (tf, _) = enrolled(&dir).await;
        let bytes = crate::test_support::stored_bytes(&tf.pool, dir.path()).await;
        let raw = seed_secret();
        assert!(!bytes.windows(SEED.len()).any(|w| w == SEED.as_bytes()));
        assert!(!bytes.windows(raw.len()).any(|w| w == raw.as_slice()));
    }
}
