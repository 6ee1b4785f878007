//! API keys: how a user's own apps read their connected accounts through `/api/v1`.
//!
//! A key reads `sgk_<key id>_<secret>`: 64 random bits of public id (16 hex digits), which
//! finds the row, and 256 random bits of secret (64 hex digits), of which only a SHA-256 is
//! kept, so neither a database copy nor a log line can be replayed as a key (the same rule as
//! session cookies, `sign_in/sessions.rs`). Hex keeps the key URL-safe and free of the `_` separator.
//! A key is scoped to the connected accounts its user picked; removing an account removes it
//! from every scope (`ON DELETE CASCADE`), revoking a key deletes its row. A key may expire
//! (30, 90 or 365 days after it was made, or never): an expired key is refused with
//! `api_key_expired`, so the app can say why, and stays in the list until revoked.

use std::sync::Arc;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::store::db::Pool;

use crate::base::clock::Clock;
use crate::base::fields::MAX_FIELD_BYTES;
use crate::sign_in::users::UserId;
use crate::ErrorCode;

/// What every key starts with, so a leaked one is easy to recognise (secret scanners).
pub const KEY_PREFIX: &str = "sgk_";
/// `last_used_at` is written at most this often per key: a busy app does not turn every read
/// into a write.
pub const LAST_USED_EVERY: i64 = 60;

/// The lifetimes a key can be given, in days (besides never).
pub const LIFETIME_DAYS: [u32; 3] = [30, 90, 365];

const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;

/// A key as its owner sees it in the list (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// The public part of the key (`sgk_<id>_…`).
    pub id: String,
    pub name: String,
    /// The connected accounts (ids) this key may read.
    pub account_ids: Vec<i64>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds, to the minute ([`LAST_USED_EVERY`]); none if never used.
    pub last_used_at: Option<i64>,
    /// Unix seconds from which the key is refused; none: it never expires.
    pub expires_at: Option<i64>,
}

/// The whole key, shown to its owner once, right after creating it. Its `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeySecret(String);

impl ApiKeySecret {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKeySecret(…)")
    }
}

/// Who an accepted key speaks for, and what it may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiCaller {
    pub user_id: UserId,
    pub key_id: String,
    /// Connected account ids.
    pub scope: Vec<i64>,
}

impl ApiCaller {
    pub fn may_read(&self, account_id: i64) -> bool {
        self.scope.contains(&account_id)
    }
}

fn db_error(e: sqlx::Error) -> ErrorCode {
    tracing::error!(error = %e, "api key query failed");
    ErrorCode::Unknown
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    hex::encode(buf)
}

fn secret_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The id and secret of a key of the shape we issue; anything else never reaches the database.
fn parse_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (is_hex(id, ID_BYTES * 2) && is_hex(secret, SECRET_BYTES * 2)).then_some((id, secret))
}

#[derive(Clone)]
pub struct ApiKeyStore {
    pool: Pool,
    clock: Arc<dyn Clock>,
}

impl ApiKeyStore {
    pub fn new(pool: Pool, clock: Arc<dyn Clock>) -> Self {
        Self { pool, clock }
    }

    /// Creates a key named `name` that may read `account_ids` and never expires; see
    /// [`ApiKeyStore::create_expiring`].
    pub async fn create(
        &self,
        user_id: UserId,
        name: &str,
        account_ids: &[i64],
    ) -> Result<(ApiKey, ApiKeySecret), ErrorCode> {
        self.create_expiring(user_id, name, account_ids, None).await
    }

    /// Creates a key named `name` that may read `account_ids` (the user's own connected
    /// accounts; any other is `not_found`, and nothing is created), expiring `lifetime_days`
    /// from now (one of [`LIFETIME_DAYS`]; any other is `invalid_request`) or never. Returns
    /// the key and its secret, which is never seen again.
    pub async fn create_expiring(
        &self,
        user_id: UserId,
        name: &str,
        account_ids: &[i64],
        lifetime_days: Option<u32>,
    ) -> Result<(ApiKey, ApiKeySecret), ErrorCode> {
        if lifetime_days.is_some_and(|days| !LIFETIME_DAYS.contains(&days)) {
            return Err(ErrorCode::InvalidRequest);
        }
        let name = name.trim();
        if name.is_empty() {
            return Err(ErrorCode::MissingFields);
        }
        if name.len() > MAX_FIELD_BYTES {
            return Err(ErrorCode::FieldTooLong);
        }
        let mut scope = account_ids.to_vec();
        scope.sort_unstable();
        scope.dedup();

        let id = random_hex(ID_BYTES);
        let secret = random_hex(SECRET_BYTES);
        let now = self.clock.now();
        let expires_at = lifetime_days.map(|days| now + i64::from(days) * 24 * 60 * 60);
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        sqlx::query(
            "INSERT INTO api_keys (id, user_id, name, secret_hash, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(user_id)
        .bind(name)
        .bind(hex::encode(secret_hash(&secret)))
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        for account_id in &scope {
            // Only the user's own accounts: the SELECT finds nothing for anyone else's.
            let added = sqlx::query(
                "INSERT INTO api_key_accounts (key_id, account_id)
                 SELECT $1, id FROM connected_accounts WHERE id = $2 AND user_id = $3",
            )
            .bind(&id)
            .bind(account_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            if added.rows_affected() == 0 {
                return Err(ErrorCode::NotFound);
            }
        }
        tx.commit().await.map_err(db_error)?;
        let key = ApiKey {
            id: id.clone(),
            name: name.to_owned(),
            account_ids: scope,
            created_at: now,
            last_used_at: None,
            expires_at,
        };
        Ok((key, ApiKeySecret(format!("{KEY_PREFIX}{id}_{secret}"))))
    }

    /// The user's keys, oldest first.
    pub async fn list(&self, user_id: UserId) -> Result<Vec<ApiKey>, ErrorCode> {
        let rows = sqlx::query(
            "SELECT k.id, k.name, k.created_at, k.last_used_at, k.expires_at, s.account_id
             FROM api_keys k LEFT JOIN api_key_accounts s ON s.key_id = k.id
             WHERE k.user_id = $1
             ORDER BY k.created_at, k.id, s.account_id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let mut keys: Vec<ApiKey> = Vec::new();
        for row in rows {
            let id: String = row.try_get("id").map_err(db_error)?;
            let account: Option<i64> = row.try_get("account_id").map_err(db_error)?;
            if keys.last().map(|k| &k.id) != Some(&id) {
                keys.push(ApiKey {
                    id,
                    name: row.try_get("name").map_err(db_error)?,
                    account_ids: Vec::new(),
                    created_at: row.try_get("created_at").map_err(db_error)?,
                    last_used_at: row.try_get("last_used_at").map_err(db_error)?,
                    expires_at: row.try_get("expires_at").map_err(db_error)?,
                });
            }
            if let (Some(key), Some(account)) = (keys.last_mut(), account) {
                key.account_ids.push(account);
            }
        }
        Ok(keys)
    }

    /// Revokes (deletes) key `key_id`; `not_found` if it is not this user's.
    pub async fn revoke(&self, user_id: UserId, key_id: &str) -> Result<(), ErrorCode> {
        let done = sqlx::query("DELETE FROM api_keys WHERE id = $1 AND user_id = $2")
            .bind(key_id)
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Err(ErrorCode::NotFound);
        }
        Ok(())
    }

    /// The caller a presented key speaks for; `invalid_api_key` for anything but a live key,
    /// `api_key_expired` for a right key past its expiry. Notes the use (at most once a minute
    /// per key).
    pub async fn authenticate(&self, key: &str) -> Result<ApiCaller, ErrorCode> {
        let (id, secret) = parse_key(key).ok_or(ErrorCode::InvalidApiKey)?;
        // A disabled account's keys are refused at once (admin.rs). One query on every API
        // request: the key with its scope, a row per account it may read.
        let rows = sqlx::query(
            "SELECT k.user_id, k.secret_hash, k.last_used_at, k.expires_at, a.account_id \
             FROM api_keys k JOIN users u ON u.id = k.user_id \
             LEFT JOIN api_key_accounts a ON a.key_id = k.id \
             WHERE k.id = $1 AND u.disabled_at IS NULL ORDER BY a.account_id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let row = rows.first().ok_or(ErrorCode::InvalidApiKey)?;
        let stored: String = row.try_get("secret_hash").map_err(db_error)?;
        let stored: [u8; 32] = hex::decode(stored)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(ErrorCode::InvalidApiKey)?;
        if !crate::base::crypto::constant_time_eq(&stored, &secret_hash(secret)) {
            return Err(ErrorCode::InvalidApiKey);
        }
        let user_id: UserId = row.try_get("user_id").map_err(db_error)?;
        let last_used: Option<i64> = row.try_get("last_used_at").map_err(db_error)?;
        let expires_at: Option<i64> = row.try_get("expires_at").map_err(db_error)?;
        let now = self.clock.now();
        // Told only to whoever holds the whole key: a wrong secret learns nothing of it.
        if expires_at.is_some_and(|at| at <= now) {
            return Err(ErrorCode::ApiKeyExpired);
        }
        if last_used.is_none_or(|at| now - at >= LAST_USED_EVERY) {
            sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
                .bind(now)
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(db_error)?;
        }
        let scope = rows
            .iter()
            .map(|row| row.try_get::<Option<i64>, _>("account_id"))
            .filter_map(Result::transpose)
            .collect::<Result<Vec<i64>, _>>()
            .map_err(db_error)?;
        Ok(ApiCaller {
            user_id,
            key_id: id.to_owned(),
            scope,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::NewAccount;
    use crate::test_support::engine_in;
    use crate::Engine;

    async fn user_with_accounts(engine: &Engine, email: &str, keys: &[&str]) -> (UserId, Vec<i64>) {
        let user = engine
            .register(email, "password-1-quiet-harbor", "password-1-quiet-harbor")
            .await
            .unwrap();
        let mut ids = Vec::new();
        for key in keys {
            let account = NewAccount {
                account_id: (*key).into(),
                display_name: (*key).into(),
                secrets: serde_json::json!({"oauth_token": "t"}),
            };
            let added = engine
                .accounts()
                .add(user.id, "librus", &account, engine.now())
                .await
                .unwrap();
            ids.push(added.id);
        }
        (user.id, ids)
    }

    #[tokio::test]
    async fn a_new_key_reads_as_its_user_with_its_scope_and_is_stored_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let (user, accounts) = user_with_accounts(&engine, "k@example.org", &["a", "b"]).await;
        let (key, secret) = engine
            .api_keys()
            .create(user, "  Home Assistant ", &[accounts[1], accounts[1]])
            .await
            .unwrap();
        assert_eq!(key.name, "Home Assistant");
        assert_eq!(key.account_ids, [accounts[1]]);
        let text = secret.as_str();
        let (id, hidden) = parse_key(text).expect("the key has our shape");
        assert_eq!(id, key.id);
        assert_eq!(hidden.len(), 64, "256 bits of secret");
        assert!(!format!("{secret:?}").contains(hidden));

        let caller = engine.api_keys().authenticate(text).await.unwrap();
        assert_eq!(caller.user_id, user);
        assert_eq!(caller.key_id, key.id);
        assert!(caller.may_read(accounts[1]) && !caller.may_read(accounts[0]));

        let stored: String = sqlx::query_scalar("SELECT secret_hash FROM api_keys")
            .fetch_one(engine.pool())
            .await
            .unwrap();
        assert!(!stored.contains(hidden));
        assert_eq!(stored, hex::encode(secret_hash(hidden)));
    }

    #[tokio::test]
    async fn wrong_malformed_and_revoked_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let (user, accounts) = user_with_accounts(&engine, "r@example.org", &["a"]).await;
        let (other, _) = user_with_accounts(&engine, "o@example.org", &[]).await;
        let keys = engine.api_keys();
        let (key, secret) = keys.create(user, "app", &accounts).await.unwrap();
        let text = secret.as_str();
        let flipped = format!(
            "{}{}",
            &text[..text.len() - 1],
            if text.ends_with('0') { '1' } else { '0' }
        );
        for bad in [
            "",
            "sgk_",
            &flipped,
            &text.to_uppercase(),
            &text.replacen("sgk_", "sgx_", 1),
            &format!("{text}0"),
        ] {
            assert_eq!(
                keys.authenticate(bad).await,
                Err(ErrorCode::InvalidApiKey),
                "{bad}"
            );
        }
        assert_eq!(keys.revoke(other, &key.id).await, Err(ErrorCode::NotFound));
        assert!(
            keys.authenticate(text).await.is_ok(),
            "another user cannot revoke it"
        );
        keys.revoke(user, &key.id).await.unwrap();
        assert_eq!(keys.authenticate(text).await, Err(ErrorCode::InvalidApiKey));
        assert_eq!(keys.revoke(user, &key.id).await, Err(ErrorCode::NotFound));
        assert!(keys.list(user).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_key_may_only_name_its_users_accounts_and_needs_a_name() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let (user, mine) = user_with_accounts(&engine, "m@example.org", &["a"]).await;
        let (_, theirs) = user_with_accounts(&engine, "t@example.org", &["b"]).await;
        let keys = engine.api_keys();
        assert_eq!(
            keys.create(user, "x", &[mine[0], theirs[0]]).await.err(),
            Some(ErrorCode::NotFound)
        );
        assert_eq!(
            keys.create(user, "x", &[999]).await.err(),
            Some(ErrorCode::NotFound)
        );
        assert_eq!(
            keys.create(user, "   ", &mine).await.err(),
            Some(ErrorCode::MissingFields)
        );
        assert!(
            keys.list(user).await.unwrap().is_empty(),
            "nothing half made"
        );
        // A key with no account reads nothing, but is a key.
        let (empty, _) = keys.create(user, "empty", &[]).await.unwrap();
        assert_eq!(keys.list(user).await.unwrap(), [empty]);
    }

    #[tokio::test]
    async fn the_list_shows_scope_and_last_use_written_at_most_once_a_minute() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, clock) = engine_in(&dir).await;
        let (user, accounts) = user_with_accounts(&engine, "l@example.org", &["a", "b"]).await;
        let keys = engine.api_keys();
        let (first, secret) = keys.create(user, "first", &accounts).await.unwrap();
        clock.advance(1);
        let (second, _) = keys.create(user, "second", &[]).await.unwrap();
        let listed = keys.list(user).await.unwrap();
        assert_eq!(listed, [first.clone(), second]);
        assert_eq!(listed[0].account_ids, accounts);
        assert_eq!(listed[0].last_used_at, None);

        let t0 = engine.now();
        keys.authenticate(secret.as_str()).await.unwrap();
        clock.advance(30);
        keys.authenticate(secret.as_str()).await.unwrap();
        assert_eq!(keys.list(user).await.unwrap()[0].last_used_at, Some(t0));
        clock.advance(30);
        keys.authenticate(secret.as_str()).await.unwrap();
        assert_eq!(
            keys.list(user).await.unwrap()[0].last_used_at,
            Some(t0 + 60)
        );
    }

    #[tokio::test]
    async fn a_key_given_a_lifetime_is_refused_as_expired_from_then_on() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, clock) = engine_in(&dir).await;
        let (user, accounts) = user_with_accounts(&engine, "e@example.org", &["a"]).await;
        let keys = engine.api_keys();
        let (month, month_secret) = keys
            .create_expiring(user, "month", &accounts, Some(30))
            .await
            .unwrap();
        // Listed oldest first: a second later, so the order does not hang on the random ids.
        clock.advance(1);
        let (forever, forever_secret) = keys.create(user, "forever", &accounts).await.unwrap();
        assert_eq!(month.expires_at, Some(engine.now() - 1 + 30 * 86_400));
        assert_eq!(forever.expires_at, None);
        assert_eq!(
            keys.list(user).await.unwrap(),
            [month.clone(), forever.clone()],
            "the list says when each expires"
        );
        assert_eq!(
            keys.create_expiring(user, "odd", &[], Some(7)).await.err(),
            Some(ErrorCode::InvalidRequest)
        );

        clock.advance(30 * 86_400 - 2);
        assert!(keys.authenticate(month_secret.as_str()).await.is_ok());
        clock.advance(1);
        assert_eq!(
            keys.authenticate(month_secret.as_str()).await,
            Err(ErrorCode::ApiKeyExpired)
        );
        // A wrong secret for the expired key's id is just a wrong key.
        let text = month_secret.as_str();
        let flipped = format!(
            "{}{}",
            &text[..text.len() - 1],
            if text.ends_with('0') { '1' } else { '0' }
        );
        assert_eq!(
            keys.authenticate(&flipped).await,
            Err(ErrorCode::InvalidApiKey)
        );
        clock.advance(10 * 365 * 86_400);
        assert!(keys.authenticate(forever_secret.as_str()).await.is_ok());
    }

    #[tokio::test]
    async fn removing_an_account_takes_it_out_of_every_scope() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let (user, accounts) = user_with_accounts(&engine, "c@example.org", &["a", "b"]).await;
        let keys = engine.api_keys();
        let (_, secret) = keys.create(user, "app", &accounts).await.unwrap();
        engine.accounts().remove(user, accounts[0]).await.unwrap();
        assert_eq!(keys.list(user).await.unwrap()[0].account_ids, [accounts[1]]);
        let caller = keys.authenticate(secret.as_str()).await.unwrap();
        assert_eq!(caller.scope, [accounts[1]]);
    }
}
