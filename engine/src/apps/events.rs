//! What happens to a connected account, told once: each event is written to the account's audit
//! log (shown on its page; never a secret) and, for the events a user's apps subscribe to
//! (`account.connected`, `account.needs_sign_in`, `account.recovered`, `account.removed`), sent
//! to the user's
//! webhook. Failing to record an event never fails what caused it: it is logged instead.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::store::db::{Conn, Pool};

use crate::accounts::store::AccountStore;
use crate::accounts::store::ConnectedAccount;
use crate::apps::read_counts::ReadCounts;
use crate::apps::webhooks::WebhookStore;
use crate::base::clock::Clock;
use crate::sign_in::users::UserId;
use crate::ErrorCode;
use std::sync::Arc;

/// Something that happened to a connected account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountEvent {
    Connected,
    SignedInAgain,
    /// Its tokens were renewed (by the upkeep, a check, or before an app read them).
    Renewed,
    /// The provider refused its tokens.
    NeedsSignIn,
    /// A renewal or check could not reach the provider.
    Unreachable(ErrorCode),
    /// It works again after it needed sign-in or could not be renewed or checked: told once,
    /// when it turns back (after the event that shows it, e.g. `renewed` or `signed_in_again`).
    Recovered,
    /// An app read its credentials with API key `key_id` (its public part, `sgk_<id>`).
    /// Counted per minute (`apps/read_counts.rs`), not written one by one.
    ApiRead {
        key_id: String,
    },
    /// An app called the provider's API through the proxy with API key `key_id`.
    ApiProxied {
        key_id: String,
    },
    Removed,
    /// A sign-in link was made for it: by its owner, or (`for_apps`) for the owner's apps.
    SignInLinkMade {
        for_apps: bool,
    },
    /// Its owner revoked a sign-in link.
    SignInLinkRevoked,
    /// Signed in again through a sign-in link (in place of `SignedInAgain`).
    SignedInWithLink,
}

impl AccountEvent {
    /// The audit log's name for the event.
    pub fn name(&self) -> &'static str {
        match self {
            AccountEvent::Connected => "connected",
            AccountEvent::SignedInAgain => "signed_in_again",
            AccountEvent::Renewed => "renewed",
            AccountEvent::NeedsSignIn => "needs_sign_in",
            AccountEvent::Unreachable(_) => "unreachable",
            AccountEvent::Recovered => "recovered",
            AccountEvent::ApiRead { .. } => "api_read",
            AccountEvent::ApiProxied { .. } => "api_proxy",
            AccountEvent::Removed => "removed",
            AccountEvent::SignInLinkMade { for_apps: false } => "sign_in_link_made",
            AccountEvent::SignInLinkMade { for_apps: true } => "sign_in_link_made_for_apps",
            AccountEvent::SignInLinkRevoked => "sign_in_link_revoked",
            AccountEvent::SignedInWithLink => "signed_in_with_link",
        }
    }

    /// The webhook event type, for the events apps are told about.
    pub fn webhook_type(&self) -> Option<&'static str> {
        match self {
            AccountEvent::Connected => Some("account.connected"),
            AccountEvent::NeedsSignIn => Some("account.needs_sign_in"),
            AccountEvent::Recovered => Some("account.recovered"),
            AccountEvent::Removed => Some("account.removed"),
            _ => None,
        }
    }
}

/// One line of an account's audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: i64,
    /// [`AccountEvent::name`].
    pub event: String,
    /// The error code, for failures.
    pub code: Option<ErrorCode>,
    /// The API key (its public part) that read the credentials, for reads.
    pub api_key: Option<String>,
    /// For `api_read`: how many reads the key made in the minute ending at `at`.
    #[serde(default)]
    pub reads: Option<i64>,
}

fn db_error(e: sqlx::Error) -> ErrorCode {
    tracing::error!(error = %e, "audit log query failed");
    ErrorCode::Unknown
}

#[derive(Clone)]
pub struct AuditLog {
    pool: Pool,
}

impl AuditLog {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    pub async fn record(
        &self,
        user_id: UserId,
        account_id: i64,
        event: &AccountEvent,
        at: i64,
    ) -> Result<(), ErrorCode> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        Self::record_in(&mut conn, user_id, account_id, event, at).await
    }

    /// [`AuditLog::record`] on `conn` (in the transaction of what it records).
    pub(crate) async fn record_in(
        conn: &mut Conn,
        user_id: UserId,
        account_id: i64,
        event: &AccountEvent,
        at: i64,
    ) -> Result<(), ErrorCode> {
        let (code, key) = match event {
            AccountEvent::Unreachable(code) => (Some(code.as_str()), None),
            AccountEvent::ApiRead { key_id } | AccountEvent::ApiProxied { key_id } => {
                (None, Some(key_id.as_str()))
            }
            _ => (None, None),
        };
        sqlx::query(
            "INSERT INTO account_audit (user_id, account_id, at, event, code, api_key)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(user_id)
        .bind(account_id)
        .bind(at)
        .bind(event.name())
        .bind(code)
        .bind(key)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// The newest `limit` entries of the user's account `account_id`, newest first.
    pub async fn list(
        &self,
        user_id: UserId,
        account_id: i64,
        limit: i64,
    ) -> Result<Vec<AuditEntry>, ErrorCode> {
        let rows = sqlx::query(
            "SELECT at, event, code, api_key FROM account_audit
             WHERE user_id = $1 AND account_id = $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(user_id)
        .bind(account_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                let code: Option<String> = row.try_get("code").map_err(db_error)?;
                Ok(AuditEntry {
                    at: row.try_get("at").map_err(db_error)?,
                    event: row.try_get("event").map_err(db_error)?,
                    code: code.and_then(|c| serde_json::from_value(c.into()).ok()),
                    api_key: row.try_get("api_key").map_err(db_error)?,
                    reads: None,
                })
            })
            .collect()
    }
}

/// The sign-in link an `account.needs_sign_in` webhook carries when the account's owner lets
/// apps have them (`accounts/sign_in_links.rs` makes it; a trait, so this room does not import
/// that one).
#[async_trait::async_trait]
pub trait LinksForWebhooks: Send + Sync {
    /// The link's URL, or `None` when the owner has not opted in (or it could not be made).
    async fn link_for_webhook(&self, user_id: UserId, account: &ConnectedAccount)
        -> Option<String>;
}

/// Records what happens to connected accounts and tells the users' webhooks.
#[derive(Clone)]
pub struct AccountEvents {
    pub(crate) accounts: AccountStore,
    pub(crate) audit: AuditLog,
    pub(crate) webhooks: WebhookStore,
    pub(crate) clock: Arc<dyn Clock>,
    /// Sign-in links for the `account.needs_sign_in` webhook.
    pub(crate) sign_in_links: Option<Arc<dyn LinksForWebhooks>>,
    /// The apps' credential reads, counted (shown in the audit log).
    pub(crate) reads: ReadCounts,
}

impl AccountEvents {
    /// Records `event` of `account` (see the module doc).
    pub async fn account_event(
        &self,
        user_id: UserId,
        account: &ConnectedAccount,
        event: AccountEvent,
    ) {
        let now = self.clock.now();
        if let AccountEvent::ApiRead { key_id } = &event {
            // Hot: counted in memory, written in batches (read_counts.rs).
            self.reads.count(user_id, account.id, key_id, now);
            return;
        }
        if let Err(code) = self.audit.record(user_id, account.id, &event, now).await {
            tracing::error!(account = account.id, %code, event = event.name(), "an account event was not recorded");
        }
        if let Some(kind) = event.webhook_type() {
            self.send_webhook(user_id, kind, account, &event, now).await;
        }
    }

    /// Records `event` of `account` on `conn`, in the transaction of what caused it: its audit
    /// line and its webhook delivery commit with it, or neither does. For the events a
    /// finishing flow tells (no sign-in link rides along: that is `needs_sign_in`'s alone).
    pub(crate) async fn record_in(
        &self,
        conn: &mut Conn,
        user_id: UserId,
        account: &ConnectedAccount,
        event: AccountEvent,
        now: i64,
    ) -> Result<(), ErrorCode> {
        debug_assert!(!matches!(
            event,
            AccountEvent::NeedsSignIn | AccountEvent::ApiRead { .. }
        ));
        AuditLog::record_in(conn, user_id, account.id, &event, now).await?;
        if let Some(kind) = event.webhook_type() {
            self.webhooks
                .enqueue_in(conn, user_id, kind, &webhook_data(account), None, now)
                .await?;
        }
        Ok(())
    }

    /// [`AccountEvents::record_in`] of [`AccountEvent::Recovered`] when `before` (the account
    /// as it was) needed sign-in or was degraded.
    pub(crate) async fn recovered_in(
        &self,
        conn: &mut Conn,
        user_id: UserId,
        before: &ConnectedAccount,
        now: i64,
    ) -> Result<(), ErrorCode> {
        if before.status == crate::accounts::store::AccountStatus::Active {
            return Ok(());
        }
        self.record_in(conn, user_id, before, AccountEvent::Recovered, now)
            .await
    }

    /// [`AccountEvent::Recovered`] when `before` (the account as it was before something that
    /// proved it works) needed sign-in or was degraded.
    pub async fn recovered_if_it_was_down(&self, user_id: UserId, before: &ConnectedAccount) {
        if before.status != crate::accounts::store::AccountStatus::Active {
            self.account_event(user_id, before, AccountEvent::Recovered)
                .await;
        }
    }

    /// The account's audit log, newest first (its owner's only).
    pub async fn audit_log(
        &self,
        user_id: UserId,
        account_id: i64,
    ) -> Result<Vec<AuditEntry>, ErrorCode> {
        const SHOWN: i64 = 100;
        // What this instance counted so far is shown at once (another instance's within its
        // next flush, a second).
        let _ = self.reads.flush().await;
        let mut entries = self.audit.list(user_id, account_id, SHOWN).await?;
        let reads = self.reads.list(user_id, account_id, SHOWN).await?;
        entries.extend(reads.into_iter().map(|r| AuditEntry {
            at: r.last_at,
            event: "api_read".into(),
            code: None,
            api_key: Some(r.api_key),
            reads: Some(r.reads),
        }));
        // Newest first; the sort is stable, so events of one second keep their order.
        entries.sort_by_key(|e| std::cmp::Reverse(e.at));
        entries.truncate(SHOWN as usize);
        Ok(entries)
    }

    /// Removes the user's account and its secrets, and tells the audit log and the webhook.
    pub async fn remove_account(&self, user_id: UserId, account_id: i64) -> Result<(), ErrorCode> {
        let account = self.accounts.get(user_id, account_id).await?;
        self.accounts.remove(user_id, account_id).await?;
        self.account_event(user_id, &account, AccountEvent::Removed)
            .await;
        Ok(())
    }

    async fn send_webhook(
        &self,
        user_id: UserId,
        kind: &str,
        account: &ConnectedAccount,
        event: &AccountEvent,
        now: i64,
    ) {
        let data = webhook_data(account);
        // With the owner's opt-in, a sign-in link apps can push to the phone; sealed until sent.
        let link = match (event, &self.sign_in_links) {
            (AccountEvent::NeedsSignIn, Some(links)) => {
                links.link_for_webhook(user_id, account).await
            }
            _ => None,
        };
        let secret = link.map(|url| serde_json::json!({ "sign_in_link": url }));
        if let Err(code) = self
            .webhooks
            .enqueue_with_secret(user_id, kind, &data, secret.as_ref(), now)
            .await
        {
            tracing::error!(account = account.id, %code, kind, "a webhook was not queued");
        }
    }
}

/// What a webhook tells of an account: what apps need to find it; never a token.
fn webhook_data(account: &ConnectedAccount) -> serde_json::Value {
    serde_json::json!({
        "account_id": account.id,
        "provider": account.provider,
        "name": account.display_name,
    })
}

#[cfg(test)]
mod tests {
    use sandbox::flameconnect::{self as double, FlameConnectSandbox};

    use super::*;
    use crate::test_support::{connected, ProviderSetup};

    fn events(log: &[AuditEntry]) -> Vec<&str> {
        log.iter().rev().map(|e| e.event.as_str()).collect()
    }

    /// The owner's webhook deliveries' event types, oldest first.
    async fn webhooks_sent<D>(s: &ProviderSetup<D>) -> Vec<String> {
        s.engine
            .webhooks()
            .deliveries(s.user_id, 10)
            .await
            .unwrap()
            .into_iter()
            .rev()
            .map(|d| d.event_type)
            .collect()
    }

    #[tokio::test]
    async fn an_accounts_life_is_in_its_audit_log_and_its_webhook_without_secrets() {
        let s = ProviderSetup::new("flameconnect", FlameConnectSandbox::spawn().await).await;
        s.engine
            .webhooks()
            .set_url(s.user_id, "http://127.0.0.1:9/stepgate-hook")
            .await
            .unwrap();
        let account = connected(
            s.start(&[
                ("email", double::DEMO_EMAIL),
                ("password", double::DEMO_PASSWORD),
            ])
            .await,
        );
        s.check().await;
        s.sandbox.revoke(double::DEMO_EMAIL);
        s.check().await;
        s.check().await;
        s.sandbox
            .set_fault("refresh", sandbox::faults::Fault::Unavailable503);
        s.check().await;
        let log = s.engine.audit_log(s.user_id, account.id).await.unwrap();
        assert_eq!(
            events(&log),
            ["connected", "renewed", "needs_sign_in", "unreachable"],
            "needs_sign_in is told once, when the account turns"
        );
        assert_eq!(log[0].code, Some(ErrorCode::ServiceUnavailable));

        s.engine
            .remove_account(s.user_id, account.id)
            .await
            .unwrap();
        let log = s.engine.audit_log(s.user_id, account.id).await.unwrap();
        assert_eq!(log[0].event, "removed");
        let sent = webhooks_sent(&s).await;
        assert_eq!(
            sent,
            [
                "account.connected",
                "account.needs_sign_in",
                "account.removed"
            ]
        );
        let bodies: Vec<String> =
            sqlx::query_scalar("SELECT CAST(body AS TEXT) FROM webhook_deliveries")
                .fetch_all(s.engine.pool())
                .await
                .unwrap_or_default();
        for body in &bodies {
            assert!(!body.contains("token"), "{body}");
        }
        // Another user sees nothing of it.
        assert!(s
            .engine
            .audit_log(s.user_id + 1, account.id)
            .await
            .unwrap()
            .is_empty());
        let raw: Vec<(String, Option<String>)> =
            sqlx::query_as("SELECT event, code FROM account_audit")
                .fetch_all(s.engine.pool())
                .await
                .unwrap();
        assert!(raw
            .iter()
            .all(|(e, c)| !e.contains("token") && c.as_deref().is_none_or(|c| c.len() < 40)));
    }

    /// `account.recovered` is told once when an account works again: after a degraded spell
    /// (a good renewal) and after needing sign-in (signed in again); not after a good check
    /// of an account that was fine.
    #[tokio::test]
    async fn an_account_that_works_again_is_told_as_recovered_once() {
        let s = ProviderSetup::new("flameconnect", FlameConnectSandbox::spawn().await).await;
        s.engine
            .webhooks()
            .set_url(s.user_id, "http://127.0.0.1:9/stepgate-hook")
            .await
            .unwrap();
        let credentials = [
            ("email", double::DEMO_EMAIL),
            ("password", double::DEMO_PASSWORD),
        ];
        let account = connected(s.start(&credentials).await);
        s.check().await;
        s.sandbox
            .set_fault("refresh", sandbox::faults::Fault::Unavailable503);
        s.check().await;
        s.check().await;
        s.sandbox.clear_faults();
        s.check().await;
        s.check().await;
        s.sandbox.revoke(double::DEMO_EMAIL);
        s.check().await;
        let reauth = crate::providers::Purpose::Reauth {
            user_id: s.user_id,
            account_id: account.id,
        };
        let again = s.start_for(reauth, &credentials).await;
        assert!(again.is_ok(), "{again:?}");
        let log = s.engine.audit_log(s.user_id, account.id).await.unwrap();
        assert_eq!(
            events(&log),
            [
                "connected",
                "renewed",
                "unreachable",
                "unreachable",
                "renewed",
                "recovered",
                "renewed",
                "needs_sign_in",
                "signed_in_again",
                "recovered"
            ]
        );
        let sent = webhooks_sent(&s).await;
        assert_eq!(
            sent,
            [
                "account.connected",
                "account.recovered",
                "account.needs_sign_in",
                "account.recovered"
            ]
        );
    }
}
