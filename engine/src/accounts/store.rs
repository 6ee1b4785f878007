//! Connected third-party accounts: one row per account a user connected, its secrets (tokens,
//! cookies) sealed with AES-256-GCM and bound to the user, the provider and the account, so a
//! sealed value copied onto another row does not open there.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::store::db::{Conn, Pool};
use crate::store::reseal::{self, ResealPass, SealedColumn};

use crate::base::crypto::SecretBox;
use crate::providers::NewAccount;
use crate::sign_in::users::UserId;
use crate::ErrorCode;

/// Where an account stands with its upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    /// The kept secrets work (or nothing has said otherwise).
    Active,
    /// The upstream refused the kept secrets: the user must sign in again (reauth).
    NeedsSignIn,
    /// The upstream could not be asked at the last check; the secrets may still be good.
    Degraded,
}

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::NeedsSignIn => "needs_sign_in",
            AccountStatus::Degraded => "degraded",
        }
    }

    fn parse(text: &str) -> AccountStatus {
        match text {
            "needs_sign_in" => AccountStatus::NeedsSignIn,
            "degraded" => AccountStatus::Degraded,
            _ => AccountStatus::Active,
        }
    }
}

/// A check that started this long ago and never finished (its server went away) no longer
/// counts as under way.
pub const CHECK_STALE_AFTER: i64 = 120;

/// What the accounts page shows of a connected account (no secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectedAccount {
    pub id: i64,
    pub provider: String,
    pub account_key: String,
    pub display_name: String,
    pub status: AccountStatus,
    pub connected_at: i64,
    /// When the last health check started (unix seconds).
    pub checked_at: Option<i64>,
    /// When the last health check finished (none while one is under way).
    pub check_finished_at: Option<i64>,
    /// The error code of the last check that could not reach the upstream.
    pub last_error: Option<ErrorCode>,
    /// When the account's tokens were last renewed (token upkeep).
    pub renewed_at: Option<i64>,
    /// When they are renewed next (none: not scheduled, e.g. while it needs sign-in).
    pub renew_due_at: Option<i64>,
}

impl ConnectedAccount {
    /// A health check of this account is under way (started, not finished, not stale).
    pub fn checking(&self, now: i64) -> bool {
        // A claim clears `check_finished_at` (seconds are too coarse to compare the two).
        match (self.checked_at, self.check_finished_at) {
            (Some(started), None) => now - started < CHECK_STALE_AFTER,
            _ => false,
        }
    }
}

const ACCOUNT_COLUMNS: &str = "id, provider, account_key, display_name, status, connected_at, checked_at, check_finished_at, last_error, renewed_at, renew_due_at";

fn account_of(row: &sqlx::any::AnyRow) -> Result<ConnectedAccount, ErrorCode> {
    let status: String = row.try_get("status").map_err(db_error)?;
    let last_error: Option<String> = row.try_get("last_error").map_err(db_error)?;
    Ok(ConnectedAccount {
        id: row.try_get("id").map_err(db_error)?,
        provider: row.try_get("provider").map_err(db_error)?,
        account_key: row.try_get("account_key").map_err(db_error)?,
        display_name: row.try_get("display_name").map_err(db_error)?,
        status: AccountStatus::parse(&status),
        connected_at: row.try_get("connected_at").map_err(db_error)?,
        checked_at: row.try_get("checked_at").map_err(db_error)?,
        check_finished_at: row.try_get("check_finished_at").map_err(db_error)?,
        last_error: last_error.and_then(|code| serde_json::from_value(code.into()).ok()),
        renewed_at: row.try_get("renewed_at").map_err(db_error)?,
        renew_due_at: row.try_get("renew_due_at").map_err(db_error)?,
    })
}

/// How a finished health check leaves an account.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckOutcome {
    /// Accepted; with renewed secrets to store in place of the old ones.
    Accepted(Option<serde_json::Value>),
    Rejected,
    Unreachable(ErrorCode),
}

fn db_error(e: sqlx::Error) -> ErrorCode {
    tracing::error!(error = %e, "accounts query failed");
    ErrorCode::Unknown
}

fn associated_data(user_id: UserId, provider: &str, account_key: &str) -> Vec<u8> {
    format!("connected_account:{user_id}:{provider}:{account_key}").into_bytes()
}

/// The accounts' sealed secrets, bound to user, provider and account key.
const SEALED: SealedColumn = SealedColumn {
    table: "connected_accounts",
    id: "id",
    id_is_text: false,
    column: "secrets_sealed",
    more_columns: ", user_id, provider, account_key",
};

#[derive(Clone)]
pub struct AccountStore {
    pool: Pool,
    secrets: SecretBox,
}

impl AccountStore {
    pub fn new(pool: Pool, secrets: SecretBox) -> Self {
        Self { pool, secrets }
    }

    /// Stores a newly connected account; `already_configured` when this user has connected the
    /// same provider account before.
    pub async fn add(
        &self,
        user_id: UserId,
        provider: &str,
        account: &NewAccount,
        now: i64,
    ) -> Result<ConnectedAccount, ErrorCode> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        self.add_in(&mut conn, user_id, provider, account, now, None)
            .await
    }

    /// [`AccountStore::add`] on `conn` (a finishing flow's transaction), due for its first
    /// renewal at `renew_due_at`.
    pub(crate) async fn add_in(
        &self,
        conn: &mut Conn,
        user_id: UserId,
        provider: &str,
        account: &NewAccount,
        now: i64,
        renew_due_at: Option<i64>,
    ) -> Result<ConnectedAccount, ErrorCode> {
        let sealed = self.secrets.seal(
            account.secrets.to_string().as_bytes(),
            &associated_data(user_id, provider, &account.account_id),
        );
        let inserted = sqlx::query(
            "INSERT INTO connected_accounts (user_id, provider, account_key, display_name, secrets_sealed, connected_at, renew_due_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (user_id, provider, account_key) DO NOTHING
             RETURNING id",
        )
        .bind(user_id)
        .bind(provider)
        .bind(&account.account_id)
        .bind(&account.display_name)
        .bind(sealed)
        .bind(now)
        .bind(renew_due_at)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?;
        let id: i64 = inserted
            .ok_or(ErrorCode::AlreadyConfigured)?
            .try_get("id")
            .map_err(db_error)?;
        Ok(ConnectedAccount {
            id,
            provider: provider.to_owned(),
            account_key: account.account_id.clone(),
            display_name: account.display_name.clone(),
            status: AccountStatus::Active,
            connected_at: now,
            checked_at: None,
            check_finished_at: None,
            last_error: None,
            renewed_at: None,
            renew_due_at,
        })
    }

    /// Account `account_id` of `user_id`; `not_found` if it is not this user's.
    pub async fn get(
        &self,
        user_id: UserId,
        account_id: i64,
    ) -> Result<ConnectedAccount, ErrorCode> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        self.get_in(&mut conn, user_id, account_id).await
    }

    /// [`AccountStore::get`] on `conn`.
    pub(crate) async fn get_in(
        &self,
        conn: &mut Conn,
        user_id: UserId,
        account_id: i64,
    ) -> Result<ConnectedAccount, ErrorCode> {
        let row = sqlx::query(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM connected_accounts WHERE id = $1 AND user_id = $2"
        ))
        .bind(account_id)
        .bind(user_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?
        .ok_or(ErrorCode::NotFound)?;
        account_of(&row)
    }

    /// Signs account `account_id` in again: its secrets (and name) are replaced in place, so
    /// its id and connected-at stay, and the needs-sign-in mark is cleared. The flow must have
    /// signed in to the same upstream account: another one is `wrong_account`, and nothing
    /// changes. On `conn` (the finishing flow's transaction), with `stored` the account as read
    /// there; due for renewal at `renew_due_at`.
    pub(crate) async fn reauth_in(
        &self,
        conn: &mut Conn,
        user_id: UserId,
        stored: &ConnectedAccount,
        account: &NewAccount,
        now: i64,
        renew_due_at: Option<i64>,
    ) -> Result<ConnectedAccount, ErrorCode> {
        if stored.account_key != account.account_id {
            return Err(ErrorCode::WrongAccount);
        }
        let (account_id, provider) = (stored.id, stored.provider.as_str());
        let sealed = self.secrets.seal(
            account.secrets.to_string().as_bytes(),
            &associated_data(user_id, provider, &stored.account_key),
        );
        let done = sqlx::query(
            "UPDATE connected_accounts
             SET secrets_sealed = $1, display_name = $2, status = 'active', last_error = NULL,
                 check_finished_at = $3, renew_failures = 0, renew_due_at = $4
             WHERE id = $5 AND user_id = $6 AND provider = $7 AND account_key = $8",
        )
        .bind(sealed)
        .bind(&account.display_name)
        .bind(now)
        .bind(renew_due_at)
        .bind(account_id)
        .bind(user_id)
        .bind(provider)
        .bind(&stored.account_key)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
        if done.rows_affected() == 0 {
            // Removed while the reauth ran.
            return Err(ErrorCode::NotFound);
        }
        self.get_in(conn, user_id, account_id).await
    }

    /// Claims the user's accounts whose last check finished and started at least `min_age`
    /// seconds ago (or never ran, or went stale): their `checked_at` becomes `now`, so another page view or another
    /// instance does not check them again meanwhile. Returns the claimed accounts.
    pub async fn claim_checks(
        &self,
        user_id: UserId,
        now: i64,
        min_age: i64,
    ) -> Result<Vec<ConnectedAccount>, ErrorCode> {
        let rows = sqlx::query(&format!(
            "UPDATE connected_accounts SET checked_at = $1, check_finished_at = NULL
             WHERE user_id = $2 AND (
                 checked_at IS NULL
                 OR (check_finished_at IS NOT NULL AND checked_at <= $3)
                 OR checked_at <= $4
             )
             RETURNING {ACCOUNT_COLUMNS}"
        ))
        .bind(now)
        .bind(user_id)
        .bind(now - min_age)
        // A check under way is never claimed twice (a refresh grant rotates the refresh
        // token: a second one at once would find it spent), unless it went stale.
        .bind(now - CHECK_STALE_AFTER)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(account_of).collect()
    }

    /// Records what a check found. A rejection marks the account; an unreachable upstream
    /// makes it "degraded" but never clears a needs-sign-in mark (only a reauth does);
    /// renewed secrets replace the old ones.
    pub async fn finish_check(
        &self,
        account: &ConnectedAccount,
        user_id: UserId,
        outcome: &CheckOutcome,
        now: i64,
    ) -> Result<(), ErrorCode> {
        let query = match outcome {
            CheckOutcome::Accepted(renewed) => {
                let sealed = renewed.as_ref().map(|secrets| {
                    self.secrets.seal(
                        secrets.to_string().as_bytes(),
                        &associated_data(user_id, &account.provider, &account.account_key),
                    )
                });
                sqlx::query(
                    "UPDATE connected_accounts
                     SET status = CASE WHEN status = 'needs_sign_in' THEN status ELSE 'active' END,
                         last_error = NULL, check_finished_at = $1,
                         secrets_sealed = COALESCE($2, secrets_sealed)
                     WHERE id = $3 AND user_id = $4",
                )
                .bind(now)
                .bind(sealed)
            }
            CheckOutcome::Rejected => sqlx::query(
                "UPDATE connected_accounts
                 SET status = 'needs_sign_in', last_error = NULL, check_finished_at = $1
                 WHERE id = $2 AND user_id = $3",
            )
            .bind(now),
            CheckOutcome::Unreachable(code) => sqlx::query(
                "UPDATE connected_accounts
                 SET status = CASE WHEN status = 'needs_sign_in' THEN status ELSE 'degraded' END,
                     last_error = $1, check_finished_at = $2
                 WHERE id = $3 AND user_id = $4",
            )
            .bind(code.as_str())
            .bind(now),
        };
        query
            .bind(account.id)
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// The user's connected accounts, oldest first.
    pub async fn list(&self, user_id: UserId) -> Result<Vec<ConnectedAccount>, ErrorCode> {
        let rows = sqlx::query(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM connected_accounts WHERE user_id = $1 ORDER BY connected_at, id"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(account_of).collect()
    }

    /// An account's secrets, opened (for the app API and token upkeep).
    pub async fn secrets(
        &self,
        user_id: UserId,
        account_id: i64,
    ) -> Result<serde_json::Value, ErrorCode> {
        Ok(self.get_with_secrets(user_id, account_id).await?.1)
    }

    /// Account `account_id` of `user_id` and its secrets, opened, in one read.
    pub async fn get_with_secrets(
        &self,
        user_id: UserId,
        account_id: i64,
    ) -> Result<(ConnectedAccount, serde_json::Value), ErrorCode> {
        let row = sqlx::query(&format!(
            "SELECT {ACCOUNT_COLUMNS}, secrets_sealed FROM connected_accounts WHERE id = $1 AND user_id = $2"
        ))
        .bind(account_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?
        .ok_or(ErrorCode::NotFound)?;
        let account = account_of(&row)?;
        let sealed: Vec<u8> = row.try_get("secrets_sealed").map_err(db_error)?;
        let plain = self
            .secrets
            .open(
                &sealed,
                &associated_data(user_id, &account.provider, &account.account_key),
            )
            .map_err(|_| {
                tracing::error!(account_id, "an account's secrets did not decrypt");
                ErrorCode::Unknown
            })?;
        let secrets = serde_json::from_slice(&plain).map_err(|_| ErrorCode::Unknown)?;
        Ok((account, secrets))
    }

    /// One batch of a re-seal pass over the accounts' secrets (`store/reseal.rs`).
    pub async fn reseal_batch(
        &self,
        pass: &mut ResealPass,
        limit: usize,
    ) -> Result<usize, ErrorCode> {
        reseal::reseal_batch(
            &self.pool,
            &self.secrets,
            &SEALED,
            |row| {
                let provider: String = row.try_get("provider")?;
                let account_key: String = row.try_get("account_key")?;
                Ok(associated_data(
                    row.try_get("user_id")?,
                    &provider,
                    &account_key,
                ))
            },
            pass,
            limit,
        )
        .await
        .map_err(db_error)
    }

    /// Deletes the account and its secrets; `not_found` if it is not this user's.
    pub async fn remove(&self, user_id: UserId, account_id: i64) -> Result<(), ErrorCode> {
        let done = sqlx::query("DELETE FROM connected_accounts WHERE id = $1 AND user_id = $2")
            .bind(account_id)
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Err(ErrorCode::NotFound);
        }
        Ok(())
    }
}

/// A renewal that was claimed: whose account, which one, and its secrets at claim time.
#[derive(Debug, Clone)]
pub struct ClaimedRenewal {
    pub user_id: UserId,
    pub account: ConnectedAccount,
}

/// How a renewal ended, as the upkeep stores it.
#[derive(Debug, Clone, PartialEq)]
pub enum RenewalOutcome {
    /// New secrets (a rotated refresh token among them), next due at `next_due`.
    Renewed {
        secrets: serde_json::Value,
        next_due: i64,
    },
    /// Nothing to renew now; next due at `next_due`.
    Unchanged { next_due: i64 },
    /// The provider refused: the account needs sign-in and is not renewed again until then.
    Rejected,
    /// The provider could not be asked: degraded, tried again at `retry_at`.
    Unreachable { code: ErrorCode, retry_at: i64 },
}

impl AccountStore {
    /// Sets when account `account_id` is next renewed.
    pub async fn schedule_renewal(&self, account_id: i64, due_at: i64) -> Result<(), ErrorCode> {
        sqlx::query("UPDATE connected_accounts SET renew_due_at = $1 WHERE id = $2")
            .bind(due_at)
            .bind(account_id)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// The providers with accounts due for renewal at `now` that nobody holds a lease on.
    pub async fn providers_due(&self, now: i64) -> Result<Vec<String>, ErrorCode> {
        sqlx::query_scalar(
            "SELECT DISTINCT provider FROM connected_accounts
             WHERE renew_due_at <= $1 AND status != 'needs_sign_in'
               AND (lease_until IS NULL OR lease_until < $2)",
        )
        .bind(now)
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)
    }

    /// Leases up to `limit` accounts of `provider` due for renewal at `now` to `owner` until
    /// `lease_until`:
    /// an account leased by anyone whose lease has not run out is skipped, so one account is
    /// never renewed twice at once, whatever the number of workers or instances.
    pub async fn claim_due_renewals(
        &self,
        now: i64,
        lease_until: i64,
        owner: &str,
        provider: &str,
        limit: i64,
    ) -> Result<Vec<ClaimedRenewal>, ErrorCode> {
        let rows = sqlx::query(&format!(
            "UPDATE connected_accounts SET lease_until = $1, lease_owner = $2
             WHERE id IN (
                 SELECT id FROM connected_accounts
                 WHERE renew_due_at <= $3 AND status != 'needs_sign_in'
                   AND (lease_until IS NULL OR lease_until < $4) AND provider = $6
                 ORDER BY renew_due_at LIMIT $5
             )
             -- Checked again on the row itself: on Postgres a concurrent claim that waited for
             -- this row's lock must see the lease just taken, not its subquery's old snapshot.
             AND (lease_until IS NULL OR lease_until < $4)
             RETURNING user_id, {ACCOUNT_COLUMNS}"
        ))
        .bind(lease_until)
        .bind(owner)
        .bind(now)
        .bind(now)
        .bind(limit)
        .bind(provider)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                Ok(ClaimedRenewal {
                    user_id: row.try_get("user_id").map_err(db_error)?,
                    account: account_of(row)?,
                })
            })
            .collect()
    }

    /// Leases account `account_id` to `owner` if nobody holds it and it is still as the caller
    /// read it (`seen_due`, its renewal due time then): `true` when this call got it. A caller
    /// that read the account just before another instance renewed it and gave the lease back
    /// finds a new due time, and renews nothing.
    pub async fn claim_renewal(
        &self,
        account_id: i64,
        seen_due: Option<i64>,
        now: i64,
        lease_until: i64,
        owner: &str,
    ) -> Result<bool, ErrorCode> {
        let done = sqlx::query(
            "UPDATE connected_accounts SET lease_until = $1, lease_owner = $2
             WHERE id = $3 AND (lease_until IS NULL OR lease_until < $4)
               AND renew_due_at IS NOT DISTINCT FROM $5",
        )
        .bind(lease_until)
        .bind(owner)
        .bind(account_id)
        .bind(now)
        .bind(seen_due)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(done.rows_affected() == 1)
    }

    /// Whether anyone holds a live lease on the account.
    pub async fn renewal_under_way(&self, account_id: i64, now: i64) -> Result<bool, ErrorCode> {
        let until: Option<Option<i64>> =
            sqlx::query_scalar("SELECT lease_until FROM connected_accounts WHERE id = $1")
                .bind(account_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_error)?;
        Ok(until.flatten().is_some_and(|until| until >= now))
    }

    /// Stores a renewal's outcome and gives the lease back, in one statement: new secrets (the
    /// rotated refresh token) are written the moment the answer is in, together with the next
    /// due time, or not at all. Only the lease's holder may write (a worker whose lease ran out
    /// and was taken over writes nothing).
    pub async fn finish_renewal(
        &self,
        claimed: &ClaimedRenewal,
        owner: &str,
        outcome: &RenewalOutcome,
        now: i64,
    ) -> Result<bool, ErrorCode> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        self.finish_renewal_in(&mut conn, claimed, owner, outcome, now)
            .await
    }

    /// [`AccountStore::finish_renewal`] on `conn` (with the renewal's audit line).
    pub(crate) async fn finish_renewal_in(
        &self,
        conn: &mut Conn,
        claimed: &ClaimedRenewal,
        owner: &str,
        outcome: &RenewalOutcome,
        now: i64,
    ) -> Result<bool, ErrorCode> {
        let account = &claimed.account;
        let query = match outcome {
            RenewalOutcome::Renewed { secrets, next_due } => sqlx::query(
                "UPDATE connected_accounts
                 SET secrets_sealed = $1, renewed_at = $2, renew_due_at = $3, renew_failures = 0,
                     status = 'active', last_error = NULL, lease_until = NULL, lease_owner = NULL
                 WHERE id = $4 AND lease_owner = $5",
            )
            .bind(self.secrets.seal(
                secrets.to_string().as_bytes(),
                &associated_data(claimed.user_id, &account.provider, &account.account_key),
            ))
            .bind(now)
            .bind(next_due),
            RenewalOutcome::Unchanged { next_due } => sqlx::query(
                "UPDATE connected_accounts
                 SET renew_due_at = $1, renew_failures = 0, lease_until = NULL, lease_owner = NULL
                 WHERE id = $2 AND lease_owner = $3",
            )
            .bind(next_due),
            RenewalOutcome::Rejected => sqlx::query(
                "UPDATE connected_accounts
                 SET status = 'needs_sign_in', renew_due_at = NULL, last_error = NULL,
                     lease_until = NULL, lease_owner = NULL
                 WHERE id = $1 AND lease_owner = $2",
            ),
            RenewalOutcome::Unreachable { code, retry_at } => sqlx::query(
                "UPDATE connected_accounts
                 SET status = CASE WHEN status = 'needs_sign_in' THEN status ELSE 'degraded' END,
                     last_error = $1, renew_due_at = $2, renew_failures = renew_failures + 1,
                     lease_until = NULL, lease_owner = NULL
                 WHERE id = $3 AND lease_owner = $4",
            )
            .bind(code.as_str())
            .bind(*retry_at),
        };
        let done = query
            .bind(account.id)
            .bind(owner)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        Ok(done.rows_affected() == 1)
    }

    /// How many renewals in a row could not reach the provider (for the back-off).
    pub async fn renew_failures(&self, account_id: i64) -> Result<u32, ErrorCode> {
        let failures: Option<i64> =
            sqlx::query_scalar("SELECT renew_failures FROM connected_accounts WHERE id = $1")
                .bind(account_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_error)?;
        Ok(failures.unwrap_or(0).clamp(0, 30) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::secrets::SecretKey;

    async fn store(dir: &tempfile::TempDir) -> (AccountStore, UserId, UserId) {
        let pool =
            crate::store::db::connect(&crate::store::db::test_database_url(dir.path()).await)
                .await
                .unwrap();
        let users = crate::sign_in::users::UserStore::new(pool.clone());
        let a = users
            .create(
                &crate::base::email::Email::parse("a@example.org").unwrap(),
                "h",
                1,
            )
            .await
            .unwrap();
        let b = users
            .create(
                &crate::base::email::Email::parse("b@example.org").unwrap(),
                "h",
                1,
            )
            .await
            .unwrap();
        (
            AccountStore::new(pool, SecretBox::new(&SecretKey([9; 32]))),
            a,
            b,
        )
    }

    fn account(key: &str) -> NewAccount {
        NewAccount {
            account_id: key.into(),
            display_name: key.into(),
            secrets: serde_json::json!({"oauth_token": "secret-token-value"}),
        }
    }

    #[tokio::test]
    async fn the_same_account_connects_once_per_user() {
        let dir = tempfile::tempdir().unwrap();
        let (store, a, b) = store(&dir).await;
        store.add(a, "librus", &account("kid"), 10).await.unwrap();
        assert_eq!(
            store.add(a, "librus", &account("kid"), 11).await,
            Err(ErrorCode::AlreadyConfigured)
        );
        // Another user, or another provider, may connect an account of the same name.
        store.add(b, "librus", &account("kid"), 12).await.unwrap();
        store.add(a, "xiaomi", &account("kid"), 13).await.unwrap();
        let listed: Vec<_> = store
            .list(a)
            .await
            .unwrap()
            .into_iter()
            .map(|x| x.provider)
            .collect();
        assert_eq!(listed, ["librus", "xiaomi"]);
    }

    #[tokio::test]
    async fn secrets_are_sealed_and_only_their_owner_reads_or_removes_them() {
        let dir = tempfile::tempdir().unwrap();
        let (store, a, b) = store(&dir).await;
        let added = store.add(a, "librus", &account("kid"), 10).await.unwrap();
        assert_eq!(
            store.secrets(a, added.id).await.unwrap()["oauth_token"],
            "secret-token-value"
        );
        assert_eq!(store.secrets(b, added.id).await, Err(ErrorCode::NotFound));
        assert_eq!(store.remove(b, added.id).await, Err(ErrorCode::NotFound));
        let raw: Vec<u8> = sqlx::query_scalar("SELECT secrets_sealed FROM connected_accounts")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert!(!String::from_utf8_lossy(&raw).contains("secret-token-value"));
        store.remove(a, added.id).await.unwrap();
        assert!(store.list(a).await.unwrap().is_empty());
    }
}
