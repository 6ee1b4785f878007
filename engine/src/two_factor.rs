//! The TOTP second factor of local accounts: enrolment (through the web TOTP provider's
//! registration callback, or an authenticator app), verification with replay refusal, and a
//! per-account back-off on wrong codes.

use sqlx::{Row, SqlitePool};

use crate::crypto::SecretBox;
use crate::totp;
use crate::users::UserId;
use crate::ErrorCode;

/// How long a registration token or a pending authenticator-app secret lives.
pub const ENROLLMENT_TTL_SECONDS: i64 = 10 * 60;
/// The TOTP provider's callback must be this fresh (its `timestamp`).
pub const CALLBACK_MAX_AGE_SECONDS: i64 = 60;
/// Wrong codes an account may make before the back-off starts.
pub const FREE_FAILURES: i64 = 3;
/// The back-off doubles from this with each further wrong code...
pub const FIRST_BACKOFF_SECONDS: i64 = 5;
/// ...up to this.
pub const MAX_BACKOFF_SECONDS: i64 = 15 * 60;

/// Where the web TOTP provider lives and how Stepgate names itself there.
#[derive(Debug, Clone)]
pub struct TotpProviderConfig {
    /// e.g. `https://totp.example.org` (no trailing slash).
    pub base_url: String,
    /// The service name seeds are stored under, and the `otpauth://` issuer.
    pub issuer: String,
}

impl TotpProviderConfig {
    /// The deep link to the user's code: by seed id when we hold one, else by service and
    /// account (the provider looks the seed up).
    pub fn deep_link(&self, seed_id: Option<&str>, email: &str) -> String {
        let base = format!(
            "{}/dashboard/simple-totp",
            self.base_url.trim_end_matches('/')
        );
        match seed_id {
            Some(id) => format!("{base}?seedId={}", totp::encode_component(id)),
            None => format!(
                "{base}?serviceName={}&accountIdentifier={}",
                totp::encode_component(&self.issuer),
                totp::encode_component(email)
            ),
        }
    }

    /// The provider's `action=add` link that creates a seed and calls `callback` back.
    pub fn registration_link(&self, email: &str, callback: &str, reg_token: &str) -> String {
        format!(
            "{}/dashboard/simple-totp?action=add&service={}&account={}&callback={}&regToken={}",
            self.base_url.trim_end_matches('/'),
            totp::encode_component(&self.issuer),
            totp::encode_component(email),
            totp::encode_component(callback),
            totp::encode_component(reg_token)
        )
    }
}

/// What the TOTP provider sends to the registration callback (query parameters).
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

/// A user's second factor, as far as the UI may know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpStatus {
    pub seed_id: Option<String>,
    pub digits: u8,
}

/// A new authenticator-app secret, shown once while the user sets the app up.
#[derive(Debug, Clone)]
pub struct AppEnrollment {
    pub otpauth_uri: String,
    pub secret_base32: String,
}

fn db_error(e: sqlx::Error) -> ErrorCode {
    tracing::error!(error = %e, "two-factor store failed");
    ErrorCode::Unknown
}

fn associated_data(user_id: UserId) -> Vec<u8> {
    format!("stepgate:totp-secret:user:{user_id}").into_bytes()
}

fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[derive(Clone)]
pub struct TwoFactor {
    pool: SqlitePool,
    secrets: SecretBox,
    pub provider: TotpProviderConfig,
}

impl TwoFactor {
    pub fn new(pool: SqlitePool, secrets: SecretBox, provider: TotpProviderConfig) -> Self {
        Self {
            pool,
            secrets,
            provider,
        }
    }

    pub async fn status(&self, user_id: UserId) -> Result<Option<TotpStatus>, ErrorCode> {
        let row = sqlx::query("SELECT seed_id, digits FROM totp_credentials WHERE user_id = ?")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?
            .into_iter()
            .next();
        row.map(|row| {
            let digits: i64 = row.try_get("digits").map_err(db_error)?;
            Ok(TotpStatus {
                seed_id: row.try_get("seed_id").map_err(db_error)?,
                digits: digits as u8,
            })
        })
        .transpose()
    }

    /// A fresh single-use registration token for the provider's `action=add` link.
    pub async fn begin_provider_enrollment(
        &self,
        user_id: UserId,
        now: i64,
    ) -> Result<String, ErrorCode> {
        let token = hex::encode(totp::random_secret());
        sqlx::query(
            "INSERT INTO totp_registrations (token_hash, user_id, expires_at) VALUES (?, ?, ?)",
        )
        .bind(sha256_hex(&token))
        .bind(user_id)
        .bind(now + ENROLLMENT_TTL_SECONDS)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(token)
    }

    /// Checks the provider's registration callback and, if it holds, turns TOTP on.
    pub async fn complete_provider_enrollment(
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
        let consumed = sqlx::query("DELETE FROM totp_registrations WHERE token_hash = ? AND user_id = ? AND expires_at > ?")
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
        // Providers send seconds or milliseconds; both are accepted.
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
            "INSERT INTO totp_pending (user_id, secret_sealed, expires_at) VALUES (?, ?, ?)
             ON CONFLICT(user_id) DO UPDATE SET secret_sealed = excluded.secret_sealed, expires_at = excluded.expires_at",
        )
        .bind(user_id)
        .bind(self.secrets.seal(&secret, &associated_data(user_id)))
        .bind(now + ENROLLMENT_TTL_SECONDS)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(AppEnrollment {
            otpauth_uri: totp::otpauth_uri(&self.provider.issuer, email, &secret, 6),
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
            "SELECT secret_sealed FROM totp_pending WHERE user_id = ? AND expires_at > ?",
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
        sqlx::query("DELETE FROM totp_pending WHERE user_id = ?")
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Turns TOTP off; a current code proves the user still holds the factor.
    pub async fn disable(&self, user_id: UserId, code: &str, now: i64) -> Result<(), ErrorCode> {
        self.verify(user_id, code, now).await?;
        sqlx::query("DELETE FROM totp_credentials WHERE user_id = ?")
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
            "INSERT INTO totp_credentials (user_id, secret_sealed, digits, seed_id, enabled_at) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT(user_id) DO NOTHING",
        )
        .bind(user_id)
        .bind(self.secrets.seal(secret, &associated_data(user_id)))
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
            "INSERT INTO totp_used_steps (user_id, last_step) VALUES (?, ?)
             ON CONFLICT(user_id) DO UPDATE SET last_step = max(last_step, excluded.last_step)",
        )
        .bind(user_id)
        .bind(used_step)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(())
    }

    fn open(&self, user_id: UserId, sealed: &[u8]) -> Result<Vec<u8>, ErrorCode> {
        self.secrets.open(sealed, &associated_data(user_id)).map_err(|e| {
            tracing::error!(user_id, error = %e, "a TOTP secret did not decrypt: wrong STEPGATE_KEY or key file?");
            ErrorCode::Unknown
        })
    }

    /// Verifies a code for `user_id`: back-off first, then the code, then the replay check,
    /// which advances the last accepted step atomically (compare-and-set).
    pub async fn verify(&self, user_id: UserId, code: &str, now: i64) -> Result<(), ErrorCode> {
        self.check_backoff(user_id, now).await?;
        let row =
            sqlx::query("SELECT secret_sealed, digits FROM totp_credentials WHERE user_id = ?")
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
            "INSERT INTO totp_used_steps (user_id, last_step) VALUES (?, ?)
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
        sqlx::query("DELETE FROM second_factor_failures WHERE user_id = ?")
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
            "SELECT failures, last_failure_at FROM second_factor_failures WHERE user_id = ?",
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
            "INSERT INTO second_factor_failures (user_id, failures, last_failure_at) VALUES (?, 1, ?)
             ON CONFLICT(user_id) DO UPDATE SET failures = failures + 1, last_failure_at = excluded.last_failure_at",
        )
        .bind(user_id)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// Drops expired registration tokens and pending secrets.
    pub async fn purge_expired(&self, now: i64) -> Result<(), ErrorCode> {
        for sql in [
            "DELETE FROM totp_registrations WHERE expires_at <= ?",
            "DELETE FROM totp_pending WHERE expires_at <= ?",
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
    use crate::db;
    use crate::email::Email;
    use crate::secrets::SecretKey;
    use crate::users::UserStore;

    const NOW: i64 = 1_700_000_010;
    const SEED: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

    async fn setup(dir: &tempfile::TempDir) -> (TwoFactor, UserId) {
        let pool = db::connect(&db::sqlite_url_in(dir.path())).await.unwrap();
        let users = UserStore::new(pool.clone());
        let user = users
            .create(&Email::parse("t@example.org").unwrap(), "hash", NOW)
            .await
            .unwrap();
        let two_factor = TwoFactor::new(pool, SecretBox::new(&SecretKey([3; 32])), provider());
        (two_factor, user)
    }

    fn provider() -> TotpProviderConfig {
        TotpProviderConfig {
            base_url: "https://totp.example.org/".into(),
            issuer: "Stepgate".into(),
        }
    }

    fn secret() -> Vec<u8> {
        totp::base32_decode(SEED).unwrap()
    }

    fn callback(reg_token: &str, code: &str, timestamp: i64) -> RegistrationCallback {
        RegistrationCallback {
            success: Some("true".into()),
            seed_id: Some("seed_abc123".into()),
            seed: Some(SEED.into()),
            code: Some(code.into()),
            reg_token: Some(reg_token.into()),
            timestamp: Some(timestamp.to_string()),
            error: None,
        }
    }

    async fn enrolled(dir: &tempfile::TempDir) -> (TwoFactor, UserId) {
        let (tf, user) = setup(dir).await;
        let token = tf.begin_provider_enrollment(user, NOW).await.unwrap();
        let code = totp::code_at(&secret(), NOW, 6);
        tf.complete_provider_enrollment(user, &callback(&token, &code, NOW), NOW)
            .await
            .unwrap();
        (tf, user)
    }

    #[test]
    fn deep_link_uses_the_seed_id_when_there_is_one_else_service_and_account() {
        let p = provider();
        assert_eq!(
            p.deep_link(Some("seed_abc/123"), "a@example.org"),
            "https://totp.example.org/dashboard/simple-totp?seedId=seed_abc%2F123"
        );
        assert_eq!(
            p.deep_link(None, "a+b@example.org"),
            "https://totp.example.org/dashboard/simple-totp?serviceName=Stepgate&accountIdentifier=a%2Bb%40example.org"
        );
    }

    #[tokio::test]
    async fn provider_enrollment_stores_the_seed_id_and_turns_totp_on() {
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
        let same = totp::code_at(&secret(), NOW, 6);
        assert_eq!(tf.verify(user, &same, NOW).await, Err(ErrorCode::CodeUsed));
        let next = totp::code_at(&secret(), NOW + 30, 6);
        assert_eq!(tf.verify(user, &next, NOW + 30).await, Ok(()));
    }

    #[tokio::test]
    async fn a_code_is_accepted_once_and_older_steps_never() {
        let dir = tempfile::tempdir().unwrap();
        let (tf, user) = enrolled(&dir).await;
        let t = NOW + 60;
        let code = totp::code_at(&secret(), t, 6);
        assert_eq!(tf.verify(user, &code, t).await, Ok(()));
        assert_eq!(tf.verify(user, &code, t).await, Err(ErrorCode::CodeUsed));
        // The previous step's code is still inside the skew window but is now in the past.
        let previous = totp::code_at(&secret(), t - 30, 6);
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
        let code = totp::code_at(&secret(), t, 6);
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
    async fn registration_tokens_are_single_use_bound_to_the_user_and_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let (tf, user) = setup(&dir).await;
        let code = totp::code_at(&secret(), NOW, 6);

        let token = tf.begin_provider_enrollment(user, NOW).await.unwrap();
        assert_eq!(
            tf.complete_provider_enrollment(user + 1, &callback(&token, &code, NOW), NOW)
                .await,
            Err(ErrorCode::InvalidRegistration),
            "another user's token"
        );
        let token = tf.begin_provider_enrollment(user, NOW).await.unwrap();
        assert_eq!(
            tf.complete_provider_enrollment(user, &callback(&token, &code, NOW - 61), NOW)
                .await,
            Err(ErrorCode::RegistrationExpired),
            "a callback older than 60 s"
        );
        assert_eq!(
            tf.complete_provider_enrollment(user, &callback(&token, &code, NOW), NOW)
                .await,
            Err(ErrorCode::InvalidRegistration),
            "the token was used up by the refused attempt"
        );
        let token = tf.begin_provider_enrollment(user, NOW).await.unwrap();
        let later = NOW + ENROLLMENT_TTL_SECONDS;
        assert_eq!(
            tf.complete_provider_enrollment(user, &callback(&token, &code, later), later)
                .await,
            Err(ErrorCode::InvalidRegistration),
            "a token older than 10 minutes"
        );
        assert_eq!(tf.status(user).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_callback_whose_code_does_not_match_its_seed_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (tf, user) = setup(&dir).await;
        let token = tf.begin_provider_enrollment(user, NOW).await.unwrap();
        let wrong = totp::code_at(&secret(), NOW + 300, 6);
        assert_eq!(
            tf.complete_provider_enrollment(user, &callback(&token, &wrong, NOW), NOW)
                .await,
            Err(ErrorCode::InvalidCode)
        );
        assert_eq!(tf.status(user).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_cancelled_enrollment_leaves_totp_off() {
        let dir = tempfile::tempdir().unwrap();
        let (tf, user) = setup(&dir).await;
        let token = tf.begin_provider_enrollment(user, NOW).await.unwrap();
        let cancelled = RegistrationCallback {
            success: Some("false".into()),
            error: Some("user_cancelled".into()),
            reg_token: Some(token),
            ..Default::default()
        };
        assert_eq!(
            tf.complete_provider_enrollment(user, &cancelled, NOW).await,
            Err(ErrorCode::EnrollmentCancelled)
        );
        assert_eq!(tf.status(user).await.unwrap(), None);
    }

    #[tokio::test]
    async fn eight_digit_seeds_are_supported() {
        let dir = tempfile::tempdir().unwrap();
        let (tf, user) = setup(&dir).await;
        let token = tf.begin_provider_enrollment(user, NOW).await.unwrap();
        let code = totp::code_at(&secret(), NOW, 8);
        tf.complete_provider_enrollment(user, &callback(&token, &code, NOW), NOW)
            .await
            .unwrap();
        assert_eq!(tf.status(user).await.unwrap().unwrap().digits, 8);
        let next = totp::code_at(&secret(), NOW + 30, 8);
        assert_eq!(tf.verify(user, &next, NOW + 30).await, Ok(()));
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
        let right = totp::code_at(&secret(), t, 6);
        assert_eq!(
            tf.verify(user, &right, t).await,
            Err(ErrorCode::RateLimited)
        );
        // ...and is accepted once it has passed.
        t += TwoFactor::backoff_after(FREE_FAILURES);
        let right = totp::code_at(&secret(), t, 6);
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

    #[tokio::test]
    async fn authenticator_app_enrollment_needs_a_valid_code_and_has_no_seed_id() {
        let dir = tempfile::tempdir().unwrap();
        let (tf, user) = setup(&dir).await;
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
        let code = totp::code_at(&secret(), NOW + 60, 6);
        tf.disable(user, &code, NOW + 60).await.unwrap();
        assert_eq!(tf.status(user).await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_seed_is_not_in_the_database_file_in_clear() {
        let dir = tempfile::tempdir().unwrap();
        let (tf, _) = enrolled(&dir).await;
        tf.pool.close().await;
        let mut bytes = Vec::new();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
        }
        let raw = secret();
        assert!(!bytes.windows(SEED.len()).any(|w| w == SEED.as_bytes()));
        assert!(!bytes.windows(raw.len()).any(|w| w == raw.as_slice()));
    }
}
