//! Recovery codes: ten single-use codes made when the first second factor is turned on, the
//! way back in when the authenticator is lost. Only each code's SHA-256 digest is kept (bound
//! to its user); a code has 80 random bits, so the digest cannot be searched back to it.
//!
//! Using one is a second-factor guess like any other: claimed in the account's attempts first
//! (`attempts.rs`), then a single `DELETE` of its digest decides, so a code works once even when
//! sent twice at the same moment. A new set replaces the old one in one transaction.

use crate::base::metrics;
use crate::second_factor::two_factor::{db_error, TwoFactor};
use crate::sign_in::users::UserId;
use crate::ErrorCode;

/// Codes in a set.
pub const RECOVERY_CODE_COUNT: usize = 10;
/// Characters of a code, before the dashes that group them by four.
const CODE_CHARS: usize = 16;
/// No `0 o 1 i l`: a code is read off paper.
const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";

/// A new set of codes, to be shown once (nothing keeps them but their digests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryCodes(pub Vec<String>);

impl RecoveryCodes {
    /// The set as a text file, one code per line.
    pub fn as_text(&self) -> String {
        let mut text = String::from(
            "Stepgate recovery codes: each signs in once, in place of a second factor.\n\n",
        );
        for code in &self.0 {
            text.push_str(code);
            text.push('\n');
        }
        text
    }
}

fn random_code() -> String {
    use rand::Rng;
    let mut rng = rand::rngs::OsRng;
    let chars: Vec<char> = (0..CODE_CHARS)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    chars
        .chunks(4)
        .map(|group| group.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// What a typed code is compared as: lower case, without spaces or dashes.
pub fn normalise(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The digest kept for `code` of `user_id`.
fn digest(user_id: UserId, code: &str) -> String {
    use sha2::{Digest, Sha256};
    let bound = format!("stepgate:recovery-code:{user_id}:{}", normalise(code));
    hex::encode(Sha256::digest(bound.as_bytes()))
}

impl TwoFactor {
    /// How many unused recovery codes `user_id` has.
    pub async fn recovery_codes_left(&self, user_id: UserId) -> Result<i64, ErrorCode> {
        sqlx::query_scalar("SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)
    }

    /// A new set for `user_id`; the old set, used or not, stops working.
    pub async fn new_recovery_codes(
        &self,
        user_id: UserId,
        now: i64,
    ) -> Result<RecoveryCodes, ErrorCode> {
        let codes: Vec<String> = (0..RECOVERY_CODE_COUNT).map(|_| random_code()).collect();
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        for code in &codes {
            sqlx::query(
                "INSERT INTO recovery_codes (user_id, digest, created_at) VALUES ($1, $2, $3)",
            )
            .bind(user_id)
            .bind(digest(user_id, code))
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
        tracing::info!(user_id, "made a new set of recovery codes");
        Ok(RecoveryCodes(codes))
    }

    /// A first set for `user_id` when it has none (its first second factor was just turned
    /// on); `None` when a set exists already.
    pub async fn first_recovery_codes(
        &self,
        user_id: UserId,
        now: i64,
    ) -> Result<Option<RecoveryCodes>, ErrorCode> {
        if self.recovery_codes_left(user_id).await? > 0 {
            return Ok(None);
        }
        self.new_recovery_codes(user_id, now).await.map(Some)
    }

    /// Uses up one of `user_id`'s recovery codes in place of the second factor: claimed as a
    /// guess first (`rate_limited` while the account waits), then deleted; `invalid_code` when it
    /// is not (or no longer) one of the set. How many are left after it.
    pub async fn use_recovery_code(
        &self,
        user_id: UserId,
        code: &str,
        now: i64,
    ) -> Result<i64, ErrorCode> {
        let answer = self.take_recovery_code(user_id, code, now).await;
        metrics::second_factor_try(metrics::SecondFactor::RecoveryCode, &answer);
        answer
    }

    async fn take_recovery_code(
        &self,
        user_id: UserId,
        code: &str,
        now: i64,
    ) -> Result<i64, ErrorCode> {
        let normalised = normalise(code);
        if normalised.is_empty() {
            return Err(ErrorCode::MissingFields);
        }
        self.attempts.claim(user_id, now).await?;
        let used = sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1 AND digest = $2")
            .bind(user_id)
            .bind(digest(user_id, &normalised))
            .execute(&self.pool)
            .await;
        match used {
            Ok(used) if used.rows_affected() == 1 => {}
            Ok(_) => return Err(ErrorCode::InvalidCode),
            Err(e) => {
                self.attempts.not_checked(user_id).await?;
                return Err(db_error(e));
            }
        }
        self.attempts.succeeded(user_id).await?;
        let left = self.recovery_codes_left(user_id).await?;
        // Logged: a code in place of the factor is worth a look in the logs.
        tracing::warn!(user_id, left, "signed in with a recovery code");
        Ok(left)
    }

    /// Drops `user_id`'s recovery codes (no second factor left for them to stand in for).
    pub async fn drop_recovery_codes(&self, user_id: UserId) -> Result<(), ErrorCode> {
        sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
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
    use crate::test_support::NOW;

    #[test]
    fn codes_are_sixteen_unambiguous_characters_in_groups_of_four() {
        let code = random_code();
        assert_eq!(code.len(), 19, "{code}");
        assert_eq!(code.split('-').count(), 4);
        assert!(normalise(&code).bytes().all(|b| ALPHABET.contains(&b)));
        assert_eq!(normalise(" ABCD-efgh ijkl-mnop "), "abcdefghijklmnop");
    }

    #[tokio::test]
    async fn a_code_works_once_and_only_its_digest_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let (tf, user) = crate::test_support::enrolled(&dir).await;
        let codes = tf.first_recovery_codes(user, NOW).await.unwrap().unwrap();
        assert_eq!(codes.0.len(), RECOVERY_CODE_COUNT);
        assert_eq!(
            tf.first_recovery_codes(user, NOW).await.unwrap(),
            None,
            "a set exists: no second first set"
        );
        let stored: Vec<String> = sqlx::query_scalar("SELECT digest FROM recovery_codes")
            .fetch_all(&tf.pool)
            .await
            .unwrap();
        assert_eq!(stored.len(), RECOVERY_CODE_COUNT);
        for code in &codes.0 {
            assert!(!stored.iter().any(|d| d.contains(&normalise(code))));
            assert!(stored.contains(&digest(user, code)));
        }
        // Typed in capitals with spaces, it is the same code.
        let typed = codes.0[3].to_uppercase().replace('-', " ");
        assert_eq!(tf.use_recovery_code(user, &typed, NOW).await, Ok(9));
        assert_eq!(
            tf.use_recovery_code(user, &codes.0[3], NOW).await,
            Err(ErrorCode::InvalidCode)
        );
        assert_eq!(tf.recovery_codes_left(user).await, Ok(9));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn one_code_sent_eight_times_at_once_signs_in_once() {
        let dir = tempfile::tempdir().unwrap();
        let (tf, user) = crate::test_support::enrolled(&dir).await;
        let codes = tf.new_recovery_codes(user, NOW).await.unwrap();
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (tf, code) = (tf.clone(), codes.0[0].clone());
                tokio::spawn(async move { tf.use_recovery_code(user, &code, NOW).await })
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
    async fn a_new_set_kills_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let (tf, user) = crate::test_support::enrolled(&dir).await;
        let old = tf.new_recovery_codes(user, NOW).await.unwrap();
        let new = tf.new_recovery_codes(user, NOW).await.unwrap();
        assert_eq!(
            tf.use_recovery_code(user, &old.0[0], NOW).await,
            Err(ErrorCode::InvalidCode)
        );
        assert_eq!(tf.use_recovery_code(user, &new.0[0], NOW).await, Ok(9));
    }

    #[tokio::test]
    async fn wrong_recovery_codes_count_in_the_second_factor_back_off() {
        use crate::second_factor::attempts::FREE_FAILURES;
        let dir = tempfile::tempdir().unwrap();
        let (tf, user) = crate::test_support::enrolled(&dir).await;
        let codes = tf.new_recovery_codes(user, NOW).await.unwrap();
        for _ in 0..FREE_FAILURES {
            assert_eq!(
                tf.use_recovery_code(user, "aaaa-bbbb-cccc-dddd", NOW).await,
                Err(ErrorCode::InvalidCode)
            );
        }
        // A right code now waits, unchecked, and stays usable...
        assert_eq!(
            tf.use_recovery_code(user, &codes.0[0], NOW).await,
            Err(ErrorCode::RateLimited)
        );
        // ...and TOTP codes wait too: one count for every kind of second factor.
        assert_eq!(
            tf.verify(user, "123456", NOW).await,
            Err(ErrorCode::RateLimited)
        );
        let later = NOW + TwoFactor::backoff_after(FREE_FAILURES);
        assert_eq!(tf.use_recovery_code(user, &codes.0[0], later).await, Ok(9));
    }
}
