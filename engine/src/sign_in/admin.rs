//! What the admin (the first account, see `sign_in/registration.rs`) sees and does on `/admin/users`:
//! every account with its sign-in facts, invites, disabling and enabling an account, resetting
//! its second factor. Each act checks that the caller is an admin and is written to the admin
//! audit log (who, what, whom, when) in the same transaction as the act itself.
//!
//! The operator at the server's command line (`stepgate user …`) does the same acts through the
//! `operator_*` methods, by email and without an admin account (holding the database and its key
//! is the authority there): the same code paths, logged with [`COMMAND_LINE_ACTOR`] as the actor.
//!
//! Disabling takes effect at once: the account's sessions are deleted with the flag, its API
//! keys are refused from then on (`apps/api_keys.rs` reads the flag on every call), and a sign-in
//! that completes later is refused ([`Engine::admit_signed_in`]).

use sqlx::Row;

use crate::base::clock::Clock;
use crate::base::email::Email;
use crate::sign_in::invites::{InviteStore, InviteSummary, NewInvite, INVITE_TTL_SECONDS};
use crate::sign_in::sessions::SessionStore;
use crate::sign_in::sessions::SessionToken;
use crate::sign_in::users::{User, UserId};
use crate::store::db::Pool;
use crate::ErrorCode;
use std::sync::Arc;

/// One account as the admin page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRow {
    pub id: UserId,
    pub email: String,
    pub created_at: i64,
    pub last_sign_in_at: Option<i64>,
    /// A TOTP seed or a passkey: a second factor the admin can reset.
    pub two_factor_on: bool,
    /// TOTP seeds and passkeys, counted.
    pub second_factors: i64,
    /// Sessions not yet expired.
    pub live_sessions: i64,
    pub is_admin: bool,
    pub disabled_at: Option<i64>,
}

/// What an admin did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAction {
    InviteCreated,
    AccountDisabled,
    AccountEnabled,
    SecondFactorReset,
    /// Only from the command line (`stepgate user add`).
    AccountAdded,
    /// Only from the command line (`stepgate user make-admin`, `user add --admin`).
    AdminGranted,
}

impl AdminAction {
    const ALL: [AdminAction; 6] = [
        AdminAction::InviteCreated,
        AdminAction::AccountDisabled,
        AdminAction::AccountEnabled,
        AdminAction::SecondFactorReset,
        AdminAction::AccountAdded,
        AdminAction::AdminGranted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AdminAction::InviteCreated => "invite_created",
            AdminAction::AccountDisabled => "account_disabled",
            AdminAction::AccountEnabled => "account_enabled",
            AdminAction::SecondFactorReset => "second_factor_reset",
            AdminAction::AccountAdded => "account_added",
            AdminAction::AdminGranted => "admin_granted",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == text)
    }

    /// In words, for the log on the page.
    pub fn describe(self) -> &'static str {
        match self {
            AdminAction::InviteCreated => "made an invite link",
            AdminAction::AccountDisabled => "disabled the account",
            AdminAction::AccountEnabled => "enabled the account",
            AdminAction::SecondFactorReset => "reset the second factor of",
            AdminAction::AccountAdded => "added the account",
            AdminAction::AdminGranted => "made an admin of",
        }
    }
}

/// One line of the admin audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminAuditEntry {
    pub at: i64,
    /// The admin's email, or [`COMMAND_LINE_ACTOR`].
    pub admin_email: String,
    pub action: AdminAction,
    pub target_email: Option<String>,
}

/// Who the audit log names for an act done at the server's command line (no account did it).
pub const COMMAND_LINE_ACTOR: &str = "command line";

/// Who does an admin act: an admin signed in on the page, or the operator at the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Actor<'a> {
    Admin(&'a User),
    CommandLine,
}

impl Actor<'_> {
    fn id(self) -> Option<UserId> {
        match self {
            Actor::Admin(user) => Some(user.id),
            Actor::CommandLine => None,
        }
    }

    fn name(&self) -> &str {
        match self {
            Actor::Admin(user) => &user.email,
            Actor::CommandLine => COMMAND_LINE_ACTOR,
        }
    }
}

/// Why the operator's command was refused: one sentence for the terminal, and a stable
/// [`code`](OperatorError::code) for scripts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperatorError {
    #[error("no account has the email {0}")]
    NoSuchAccount(String),
    #[error("{0} is the only admin: make another account an admin first (stepgate user make-admin EMAIL)")]
    LastAdmin(String),
    #[error("an invite must last from 1 to {max} days, not {0}", max = MAX_INVITE_DAYS)]
    InviteLifetime(i64),
    #[error("{}", .0.message())]
    Refused(ErrorCode),
}

impl OperatorError {
    pub fn code(&self) -> &'static str {
        match self {
            OperatorError::NoSuchAccount(_) => "no_such_account",
            OperatorError::LastAdmin(_) => "last_admin",
            OperatorError::InviteLifetime(_) => "invite_lifetime",
            OperatorError::Refused(code) => code.as_str(),
        }
    }
}

impl From<ErrorCode> for OperatorError {
    fn from(code: ErrorCode) -> Self {
        OperatorError::Refused(code)
    }
}

/// The longest invite the command line makes (the page's are [`INVITE_TTL_SECONDS`]).
pub const MAX_INVITE_DAYS: i64 = 90;

fn db_error(e: sqlx::Error) -> ErrorCode {
    tracing::error!(error = %e, "admin store failed");
    ErrorCode::Unknown
}

async fn record(
    conn: &mut sqlx::AnyConnection,
    actor: Actor<'_>,
    action: AdminAction,
    target: Option<(UserId, &str)>,
    now: i64,
) -> Result<(), ErrorCode> {
    sqlx::query(
        "INSERT INTO admin_audit (at, admin_id, admin_email, action, target_id, target_email)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(now)
    .bind(actor.id())
    .bind(actor.name())
    .bind(action.as_str())
    .bind(target.map(|(id, _)| id))
    .bind(target.map(|(_, email)| email.to_owned()))
    .execute(conn)
    .await
    .map_err(db_error)?;
    tracing::info!(admin = actor.name(), action = action.as_str(), target = ?target.map(|(id, _)| id), "admin act");
    Ok(())
}

/// What an admin does (the list of users, invites, disabling, resetting a second factor), each
/// act checked to be an admin's and logged.
#[derive(Clone)]
pub struct Admin {
    pub(crate) pool: Pool,
    pub(crate) sessions: SessionStore,
    pub(crate) clock: Arc<dyn Clock>,
}

impl Admin {
    /// The admin's acts over `pool` alone, for the command line (`stepgate user …`), which
    /// opens the engine only to reach its database.
    pub fn new(pool: Pool, clock: Arc<dyn Clock>) -> Self {
        Self {
            sessions: SessionStore::new(pool.clone()),
            pool,
            clock,
        }
    }

    /// Whether `user` is an admin (and not disabled).
    pub async fn is_admin(&self, user: &User) -> Result<bool, ErrorCode> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT is_admin FROM users WHERE id = $1 AND disabled_at IS NULL")
                .bind(user.id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_error)?;
        Ok(found == Some(1))
    }

    async fn require_admin(&self, user: &User) -> Result<(), ErrorCode> {
        if self.is_admin(user).await? {
            Ok(())
        } else {
            tracing::warn!(
                user = user.id,
                "refused an admin page or act to a non-admin"
            );
            Err(ErrorCode::AdminOnly)
        }
    }

    /// Every account, oldest first.
    pub async fn admin_accounts(&self, admin: &User) -> Result<Vec<AccountRow>, ErrorCode> {
        self.require_admin(admin).await?;
        self.accounts().await
    }

    async fn accounts(&self) -> Result<Vec<AccountRow>, ErrorCode> {
        let rows = sqlx::query(
            "SELECT u.id, u.email, u.created_at, u.last_sign_in_at, u.is_admin, u.disabled_at,
                 (SELECT COUNT(*) FROM sessions s WHERE s.user_id = u.id AND s.expires_at > $1)
                     AS live_sessions,
                 (SELECT COUNT(*) FROM totp_credentials t WHERE t.user_id = u.id)
                   + (SELECT COUNT(*) FROM passkeys p WHERE p.user_id = u.id) AS second_factors
             FROM users u ORDER BY u.id",
        )
        .bind(self.clock.now())
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.into_iter()
            .map(|row| {
                let is_admin: i64 = row.try_get("is_admin").map_err(db_error)?;
                let second_factors: i64 = row.try_get("second_factors").map_err(db_error)?;
                Ok(AccountRow {
                    id: row.try_get("id").map_err(db_error)?,
                    email: row.try_get("email").map_err(db_error)?,
                    created_at: row.try_get("created_at").map_err(db_error)?,
                    last_sign_in_at: row.try_get("last_sign_in_at").map_err(db_error)?,
                    two_factor_on: second_factors > 0,
                    second_factors,
                    live_sessions: row.try_get("live_sessions").map_err(db_error)?,
                    is_admin: is_admin == 1,
                    disabled_at: row.try_get("disabled_at").map_err(db_error)?,
                })
            })
            .collect()
    }

    /// The latest invites (never their tokens), newest first.
    pub async fn admin_invites(
        &self,
        admin: &User,
        limit: i64,
    ) -> Result<Vec<InviteSummary>, ErrorCode> {
        self.require_admin(admin).await?;
        InviteStore::new(self.pool.clone()).recent(limit).await
    }

    /// The latest admin acts, newest first.
    pub async fn admin_audit_log(
        &self,
        admin: &User,
        limit: i64,
    ) -> Result<Vec<AdminAuditEntry>, ErrorCode> {
        self.require_admin(admin).await?;
        self.audit_log(limit).await
    }

    async fn audit_log(&self, limit: i64) -> Result<Vec<AdminAuditEntry>, ErrorCode> {
        let rows = sqlx::query(
            "SELECT at, admin_email, action, target_email FROM admin_audit
             ORDER BY at DESC, id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.into_iter()
            .filter_map(|row| {
                let action: String = match row.try_get("action") {
                    Ok(action) => action,
                    Err(e) => return Some(Err(db_error(e))),
                };
                // A line written by a newer Stepgate is skipped, not an error.
                let action = AdminAction::parse(&action)?;
                Some((|| {
                    Ok(AdminAuditEntry {
                        at: row.try_get("at").map_err(db_error)?,
                        admin_email: row.try_get("admin_email").map_err(db_error)?,
                        action,
                        target_email: row.try_get("target_email").map_err(db_error)?,
                    })
                })())
            })
            .collect()
    }

    /// A new invite link's token (single use, seven days): shown to the admin this once.
    pub async fn admin_create_invite(&self, admin: &User) -> Result<NewInvite, ErrorCode> {
        self.require_admin(admin).await?;
        self.create_invite(Actor::Admin(admin), INVITE_TTL_SECONDS)
            .await
    }

    async fn create_invite(&self, actor: Actor<'_>, lifetime: i64) -> Result<NewInvite, ErrorCode> {
        let now = self.clock.now();
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let invite = InviteStore::create(&mut tx, actor.id(), now, lifetime).await?;
        record(&mut tx, actor, AdminAction::InviteCreated, None, now).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(invite)
    }

    /// The email of account `id`, or `not_found`.
    async fn email_of(
        &self,
        conn: &mut sqlx::AnyConnection,
        id: UserId,
    ) -> Result<String, ErrorCode> {
        sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(conn)
            .await
            .map_err(db_error)?
            .ok_or(ErrorCode::NotFound)
    }

    /// Disables account `target`: its sessions end now, its API keys are refused from now on,
    /// and it cannot sign in until enabled again. An admin cannot disable their own account.
    pub async fn admin_disable(&self, admin: &User, target: UserId) -> Result<(), ErrorCode> {
        self.require_admin(admin).await?;
        if target == admin.id {
            return Err(ErrorCode::CannotDisableSelf);
        }
        self.disable(Actor::Admin(admin), target).await.map(drop)
    }

    /// `false` when it was disabled already (nothing done, nothing logged).
    async fn disable(&self, actor: Actor<'_>, target: UserId) -> Result<bool, ErrorCode> {
        let now = self.clock.now();
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        // The flag first, then the sessions: a sign-in completing meanwhile either finds the
        // flag (and removes its own session) or had its session in place before this delete.
        let flagged =
            sqlx::query("UPDATE users SET disabled_at = $1 WHERE id = $2 AND disabled_at IS NULL")
                .bind(now)
                .bind(target)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?
                .rows_affected();
        let email = self.email_of(&mut tx, target).await?;
        if flagged == 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(target)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        record(
            &mut tx,
            actor,
            AdminAction::AccountDisabled,
            Some((target, &email)),
            now,
        )
        .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(true)
    }

    /// Enables account `target` again: it may sign in (its old sessions stay ended).
    pub async fn admin_enable(&self, admin: &User, target: UserId) -> Result<(), ErrorCode> {
        self.require_admin(admin).await?;
        self.enable(Actor::Admin(admin), target).await.map(drop)
    }

    /// `false` when it was enabled already.
    async fn enable(&self, actor: Actor<'_>, target: UserId) -> Result<bool, ErrorCode> {
        let now = self.clock.now();
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let cleared = sqlx::query(
            "UPDATE users SET disabled_at = NULL WHERE id = $1 AND disabled_at IS NOT NULL",
        )
        .bind(target)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?
        .rows_affected();
        let email = self.email_of(&mut tx, target).await?;
        if cleared == 0 {
            return Ok(false);
        }
        record(
            &mut tx,
            actor,
            AdminAction::AccountEnabled,
            Some((target, &email)),
            now,
        )
        .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(true)
    }

    /// Turns account `target`'s TOTP off and removes its passkeys (its owner lost the
    /// authenticator): the password alone
    /// signs in, and 2FA can be set up again. Its sessions end, as when 2FA is turned off.
    /// `two_factor_off` when it was not on.
    pub async fn admin_reset_second_factor(
        &self,
        admin: &User,
        target: UserId,
    ) -> Result<(), ErrorCode> {
        self.require_admin(admin).await?;
        self.reset_second_factor(Actor::Admin(admin), target).await
    }

    async fn reset_second_factor(&self, actor: Actor<'_>, target: UserId) -> Result<(), ErrorCode> {
        let now = self.clock.now();
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let removed = sqlx::query("DELETE FROM totp_credentials WHERE user_id = $1")
            .bind(target)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?
            .rows_affected();
        // Passkeys are a second factor too: a lost phone may hold them.
        let removed = removed
            + sqlx::query("DELETE FROM passkeys WHERE user_id = $1")
                .bind(target)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?
                .rows_affected();
        let email = self.email_of(&mut tx, target).await?;
        if removed == 0 {
            return Err(ErrorCode::TwoFactorOff);
        }
        for sql in [
            "DELETE FROM totp_pending WHERE user_id = $1",
            "DELETE FROM recovery_codes WHERE user_id = $1",
        ] {
            sqlx::query(sql)
                .bind(target)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        }
        // The admin's own sessions stay: resetting one's own factor must not sign one out.
        if actor.id() != Some(target) {
            sqlx::query("DELETE FROM sessions WHERE user_id = $1")
                .bind(target)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        }
        record(
            &mut tx,
            actor,
            AdminAction::SecondFactorReset,
            Some((target, &email)),
            now,
        )
        .await?;
        tx.commit().await.map_err(db_error)
    }

    /// Makes `target` an admin; the first admin also fills the `first_admin` slot, so a new
    /// installation's next registration is no longer the free one. `false` when it was one.
    async fn grant_admin(
        &self,
        conn: &mut sqlx::AnyConnection,
        actor: Actor<'_>,
        target: &User,
    ) -> Result<bool, ErrorCode> {
        let granted = sqlx::query("UPDATE users SET is_admin = 1 WHERE id = $1 AND is_admin = 0")
            .bind(target.id)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?
            .rows_affected();
        sqlx::query(
            "INSERT INTO first_admin (slot, user_id) VALUES (1, $1) ON CONFLICT (slot) DO NOTHING",
        )
        .bind(target.id)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
        if granted == 0 {
            return Ok(false);
        }
        let now = self.clock.now();
        record(
            conn,
            actor,
            AdminAction::AdminGranted,
            Some((target.id, &target.email)),
            now,
        )
        .await?;
        Ok(true)
    }

    // The operator at the command line: the same acts, by email, logged as the command line's.

    /// The account with `email` (trimmed, any case).
    pub async fn operator_find(&self, email: &str) -> Result<User, OperatorError> {
        let typed = email.trim().to_owned();
        let Ok(email) = Email::parse(email) else {
            return Err(OperatorError::NoSuchAccount(typed));
        };
        let id: Option<UserId> = sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
            .bind(email.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        match id {
            Some(id) => Ok(User {
                id,
                email: email.as_str().to_owned(),
            }),
            None => Err(OperatorError::NoSuchAccount(typed)),
        }
    }

    /// Every account, oldest first (what the admin page lists).
    pub async fn operator_accounts(&self) -> Result<Vec<AccountRow>, OperatorError> {
        Ok(self.accounts().await?)
    }

    /// The latest admin acts, newest first.
    pub async fn operator_audit_log(
        &self,
        limit: i64,
    ) -> Result<Vec<AdminAuditEntry>, OperatorError> {
        Ok(self.audit_log(limit).await?)
    }

    /// A new single-use invite that works for `days` (1 to [`MAX_INVITE_DAYS`]).
    pub async fn operator_create_invite(&self, days: i64) -> Result<NewInvite, OperatorError> {
        if !(1..=MAX_INVITE_DAYS).contains(&days) {
            return Err(OperatorError::InviteLifetime(days));
        }
        Ok(self
            .create_invite(Actor::CommandLine, days * 24 * 60 * 60)
            .await?)
    }

    /// Disables the account with `email` as the page does; `false` when it was disabled
    /// already. The last enabled admin is refused: nobody could run the admin page after.
    pub async fn operator_disable(&self, email: &str) -> Result<bool, OperatorError> {
        let user = self.operator_find(email).await?;
        if self.is_admin(&user).await? {
            let others: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM users WHERE is_admin = 1 AND disabled_at IS NULL AND id <> $1",
            )
            .bind(user.id)
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
            if others == 0 {
                return Err(OperatorError::LastAdmin(user.email));
            }
        }
        Ok(self.disable(Actor::CommandLine, user.id).await?)
    }

    /// Enables the account with `email` again; `false` when it was not disabled.
    pub async fn operator_enable(&self, email: &str) -> Result<bool, OperatorError> {
        let user = self.operator_find(email).await?;
        Ok(self.enable(Actor::CommandLine, user.id).await?)
    }

    /// Removes the TOTP seed, passkeys and recovery codes of the account with `email` and ends
    /// its sessions, as the page's reset does; `false` when it had no second factor.
    pub async fn operator_reset_second_factor(&self, email: &str) -> Result<bool, OperatorError> {
        let user = self.operator_find(email).await?;
        match self.reset_second_factor(Actor::CommandLine, user.id).await {
            Ok(()) => Ok(true),
            Err(ErrorCode::TwoFactorOff) => Ok(false),
            Err(code) => Err(code.into()),
        }
    }

    /// Makes the account with `email` an admin; `false` when it was one already.
    pub async fn operator_make_admin(&self, email: &str) -> Result<bool, OperatorError> {
        let user = self.operator_find(email).await?;
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let granted = self.grant_admin(&mut tx, Actor::CommandLine, &user).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(granted)
    }

    /// Logs that the command line created `user` (through [`crate::Engine::register`], the
    /// password rules included) and, with `admin`, makes it an admin in the same transaction.
    pub async fn operator_account_added(
        &self,
        user: &User,
        admin: bool,
    ) -> Result<(), OperatorError> {
        let now = self.clock.now();
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        record(
            &mut tx,
            Actor::CommandLine,
            AdminAction::AccountAdded,
            Some((user.id, &user.email)),
            now,
        )
        .await?;
        if admin {
            self.grant_admin(&mut tx, Actor::CommandLine, user).await?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(())
    }

    /// Called once a sign-in opened `session` for `user_id`: notes the sign-in, or, when the
    /// account is disabled, removes the session and refuses. One statement does both checks
    /// after the session exists, and disabling sets the flag before it deletes sessions, so
    /// whichever comes second sees the other: no session of a disabled account survives.
    pub(crate) async fn admit_signed_in(
        &self,
        user_id: UserId,
        session: &SessionToken,
    ) -> Result<(), ErrorCode> {
        let admitted = sqlx::query(
            "UPDATE users SET last_sign_in_at = $1 WHERE id = $2 AND disabled_at IS NULL",
        )
        .bind(self.clock.now())
        .bind(user_id)
        .execute(&self.pool)
        .await
        .map_err(db_error)?
        .rows_affected()
            == 1;
        if admitted {
            return Ok(());
        }
        self.sessions.delete(session).await?;
        tracing::warn!(user_id, "refused a sign-in to a disabled account");
        Err(ErrorCode::AccountDisabled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{engine_in, input, sign_up_open, signed_in_user, start, submit};
    use crate::Engine;
    use crate::{Completion, Progress};

    const PASSWORD: &str = "correct-horse-battery-staple-17";

    /// The admin (first account) and one more account, in open mode.
    async fn admin_and_user(engine: &Engine) -> (User, User) {
        let admin = sign_up_open(engine, "admin@example.org", PASSWORD).await;
        let user = sign_up_open(engine, "user@example.org", PASSWORD).await;
        assert!(admin.is_admin && !user.is_admin);
        (admin.user, user.user)
    }

    async fn password_sign_in(engine: &Engine, email: &str) -> Result<Progress, ErrorCode> {
        start(
            engine,
            "local",
            None,
            &input(&[("email", email), ("password", PASSWORD)]),
        )
        .await
    }

    #[tokio::test]
    async fn a_disabled_account_loses_its_sessions_and_keys_at_once_and_cannot_sign_in() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let (admin, user) = admin_and_user(&engine).await;
        let sessions = [
            engine.open_session(user.id).await.unwrap(),
            engine.open_session(user.id).await.unwrap(),
        ];
        let admin_session = engine.open_session(admin.id).await.unwrap();
        let (_, key) = engine.api_keys().create(user.id, "app", &[]).await.unwrap();
        assert!(engine.api_keys().authenticate(key.as_str()).await.is_ok());

        engine.admin_disable(&admin, user.id).await.unwrap();
        for session in &sessions {
            assert_eq!(engine.session_user(session).await.unwrap(), None);
        }
        assert_eq!(
            engine
                .api_keys()
                .authenticate(key.as_str())
                .await
                .map(|c| c.user_id),
            Err(ErrorCode::InvalidApiKey)
        );
        // The right password is refused in words, and no session is left behind.
        assert_eq!(
            password_sign_in(&engine, &user.email).await,
            Err(ErrorCode::AccountDisabled)
        );
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE user_id = $1")
            .bind(user.id)
            .fetch_one(engine.pool())
            .await
            .unwrap();
        assert_eq!(left, 0);
        // A wrong password still reads as a wrong password: nothing is told without it.
        let wrong = start(
            &engine,
            "local",
            None,
            &input(&[
                ("email", &user.email),
                ("password", "not-the-password-at-all"),
            ]),
        )
        .await;
        assert_eq!(wrong, Err(ErrorCode::InvalidAuth));
        assert_eq!(
            engine.session_user(&admin_session).await.unwrap(),
            Some(admin.clone()),
            "the admin's own session is untouched"
        );

        engine.admin_enable(&admin, user.id).await.unwrap();
        assert!(signed_in_user(password_sign_in(&engine, &user.email).await).is_some());
        assert!(engine.api_keys().authenticate(key.as_str()).await.is_ok());
        for session in &sessions {
            assert_eq!(
                engine.session_user(session).await.unwrap(),
                None,
                "ended sessions stay ended"
            );
        }
    }

    #[tokio::test]
    async fn a_sign_in_waiting_for_its_code_is_refused_once_the_account_is_disabled() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, clock) = engine_in(&dir).await;
        let (admin, _) = admin_and_user(&engine).await;
        let (user, secret) = crate::test_support::user_with_totp(&engine, "totp@example.org").await;
        let flow = match start(
            &engine,
            "local",
            None,
            &input(&[
                ("email", &user.email),
                ("password", "password-1-quiet-harbor"),
            ]),
        )
        .await
        {
            Ok(Progress::Next(view)) => view.flow_id,
            other => panic!("expected the code step, got {other:?}"),
        };
        engine.admin_disable(&admin, user.id).await.unwrap();
        // The enrolment used this step's code: the next step's is the right one.
        clock.advance(30);
        let code = crate::second_factor::totp::code_at(&secret, engine.now(), 6);
        let answer = submit(&engine, &flow, None, &input(&[("code", &code)])).await;
        assert_eq!(answer, Err(ErrorCode::AccountDisabled));
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE user_id = $1")
            .bind(user.id)
            .fetch_one(engine.pool())
            .await
            .unwrap();
        assert_eq!(left, 0);
    }

    #[tokio::test]
    async fn only_an_admin_may_act_and_never_on_themself() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let (admin, user) = admin_and_user(&engine).await;
        assert_eq!(
            engine.admin_accounts(&user).await,
            Err(ErrorCode::AdminOnly)
        );
        assert_eq!(
            engine.admin_create_invite(&user).await.map(|_| ()),
            Err(ErrorCode::AdminOnly)
        );
        assert_eq!(
            engine.admin_disable(&user, admin.id).await,
            Err(ErrorCode::AdminOnly)
        );
        assert_eq!(
            engine.admin_reset_second_factor(&user, admin.id).await,
            Err(ErrorCode::AdminOnly)
        );
        assert_eq!(
            engine.admin_audit_log(&user, 10).await,
            Err(ErrorCode::AdminOnly)
        );
        assert_eq!(
            engine.admin_disable(&admin, admin.id).await,
            Err(ErrorCode::CannotDisableSelf)
        );
        assert_eq!(
            engine.admin_disable(&admin, 9_999).await,
            Err(ErrorCode::NotFound)
        );
        assert!(engine.is_admin(&admin).await.unwrap());
        assert!(engine.admin_audit_log(&admin, 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_list_shows_each_account_and_the_log_each_act() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, clock) = engine_in(&dir).await;
        let (admin, user) = admin_and_user(&engine).await;
        let (totp_user, _) = crate::test_support::user_with_totp(&engine, "totp@example.org").await;
        engine.open_session(user.id).await.unwrap();
        engine.open_session(user.id).await.unwrap();
        clock.advance(60);
        assert!(signed_in_user(password_sign_in(&engine, &user.email).await).is_some());

        let rows = engine.admin_accounts(&admin).await.unwrap();
        let emails: Vec<&str> = rows.iter().map(|r| r.email.as_str()).collect();
        assert_eq!(
            emails,
            ["admin@example.org", "user@example.org", "totp@example.org"]
        );
        let row = &rows[1];
        assert_eq!(row.live_sessions, 3);
        assert_eq!(row.last_sign_in_at, Some(engine.now()));
        assert_eq!(row.created_at, engine.now() - 60);
        assert!(!row.two_factor_on && !row.is_admin && row.disabled_at.is_none());
        assert!(rows[0].is_admin);
        assert!(rows[2].two_factor_on);
        assert_eq!(rows[2].last_sign_in_at, None, "never signed in");

        engine.admin_create_invite(&admin).await.unwrap();
        clock.advance(1);
        engine.admin_disable(&admin, user.id).await.unwrap();
        // Disabling twice does nothing the second time (and logs nothing).
        engine.admin_disable(&admin, user.id).await.unwrap();
        clock.advance(1);
        engine.admin_enable(&admin, user.id).await.unwrap();
        clock.advance(1);
        engine
            .admin_reset_second_factor(&admin, totp_user.id)
            .await
            .unwrap();
        let log = engine.admin_audit_log(&admin, 10).await.unwrap();
        let lines: Vec<(AdminAction, Option<&str>, &str)> = log
            .iter()
            .map(|e| (e.action, e.target_email.as_deref(), e.admin_email.as_str()))
            .collect();
        assert_eq!(
            lines,
            [
                (
                    AdminAction::SecondFactorReset,
                    Some("totp@example.org"),
                    "admin@example.org"
                ),
                (
                    AdminAction::AccountEnabled,
                    Some("user@example.org"),
                    "admin@example.org"
                ),
                (
                    AdminAction::AccountDisabled,
                    Some("user@example.org"),
                    "admin@example.org"
                ),
                (AdminAction::InviteCreated, None, "admin@example.org"),
            ]
        );
        assert_eq!(log[0].at, engine.now());
        let rows = engine.admin_accounts(&admin).await.unwrap();
        assert_eq!(rows[1].live_sessions, 0, "disabling ended them");
    }

    #[tokio::test]
    async fn a_reset_second_factor_lets_the_password_alone_sign_in() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let (admin, _) = admin_and_user(&engine).await;
        let (user, _) = crate::test_support::user_with_totp(&engine, "lost@example.org").await;
        let session = engine.open_session(user.id).await.unwrap();
        engine
            .two_factor()
            .new_recovery_codes(user.id, engine.now())
            .await
            .unwrap();
        let form = input(&[
            ("email", "lost@example.org"),
            ("password", "password-1-quiet-harbor"),
        ]);
        let sign_in = || start(&engine, "local", None, &form);
        assert!(
            matches!(sign_in().await, Ok(Progress::Next(_))),
            "code asked"
        );

        engine
            .admin_reset_second_factor(&admin, user.id)
            .await
            .unwrap();
        assert!(engine.totp_status(&user).await.unwrap().is_none());
        assert_eq!(
            engine.recovery_codes_left(&user).await,
            Ok(0),
            "codes dropped"
        );
        assert_eq!(engine.session_user(&session).await.unwrap(), None);
        assert!(matches!(
            sign_in().await,
            Ok(Progress::Done(Completion::SignedIn { .. }))
        ));
        assert_eq!(
            engine.admin_reset_second_factor(&admin, user.id).await,
            Err(ErrorCode::TwoFactorOff)
        );
    }

    /// The command line's acts go the page's way (sessions end, the factor goes) and each is
    /// logged as the command line's; an unknown email and the last admin are refused in words.
    #[tokio::test]
    async fn the_operator_acts_by_email_without_an_admin_account_and_is_logged() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, clock) = engine_in(&dir).await;
        let operator = Admin::new(engine.pool().clone(), Arc::new(clock.clone()));
        let first = engine
            .register("first@example.org", PASSWORD, PASSWORD)
            .await
            .unwrap();
        assert!(!engine.has_admin().await.unwrap());
        operator.operator_account_added(&first, true).await.unwrap();
        assert!(
            engine.has_admin().await.unwrap(),
            "the first admin fills the slot"
        );
        assert!(engine.is_admin(&first).await.unwrap());
        assert_eq!(
            operator.operator_disable(" FIRST@example.org ").await,
            Err(OperatorError::LastAdmin("first@example.org".into()))
        );

        let (user, _) = crate::test_support::user_with_totp(&engine, "totp@example.org").await;
        let session = engine.open_session(user.id).await.unwrap();
        assert_eq!(
            operator.operator_reset_second_factor(&user.email).await,
            Ok(true)
        );
        assert!(engine.totp_status(&user).await.unwrap().is_none());
        assert_eq!(engine.session_user(&session).await.unwrap(), None);
        assert_eq!(
            operator.operator_reset_second_factor(&user.email).await,
            Ok(false)
        );

        let session = engine.open_session(user.id).await.unwrap();
        assert_eq!(operator.operator_disable(&user.email).await, Ok(true));
        assert_eq!(engine.session_user(&session).await.unwrap(), None);
        assert_eq!(operator.operator_disable(&user.email).await, Ok(false));
        assert_eq!(operator.operator_enable(&user.email).await, Ok(true));
        assert_eq!(operator.operator_make_admin(&user.email).await, Ok(true));
        assert_eq!(operator.operator_make_admin(&user.email).await, Ok(false));
        // With a second admin the first may go.
        assert_eq!(operator.operator_disable(&first.email).await, Ok(true));

        let invite = operator.operator_create_invite(2).await.unwrap();
        assert_eq!(invite.expires_at, engine.now() + 2 * 24 * 60 * 60);
        assert_eq!(
            invite.link("https://sg.example.org/"),
            format!(
                "https://sg.example.org/register?invite={}",
                invite.token.as_str()
            )
        );
        assert_eq!(
            operator.operator_create_invite(0).await.map(|_| ()),
            Err(OperatorError::InviteLifetime(0))
        );

        let unknown = operator
            .operator_enable("nobody@example.org")
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), "no_such_account");
        assert_eq!(
            unknown.to_string(),
            "no account has the email nobody@example.org"
        );

        let log = operator.operator_audit_log(20).await.unwrap();
        let lines: Vec<(AdminAction, Option<&str>)> = log
            .iter()
            .rev()
            .map(|e| (e.action, e.target_email.as_deref()))
            .collect();
        assert_eq!(
            lines,
            [
                (AdminAction::AccountAdded, Some("first@example.org")),
                (AdminAction::AdminGranted, Some("first@example.org")),
                (AdminAction::SecondFactorReset, Some("totp@example.org")),
                (AdminAction::AccountDisabled, Some("totp@example.org")),
                (AdminAction::AccountEnabled, Some("totp@example.org")),
                (AdminAction::AdminGranted, Some("totp@example.org")),
                (AdminAction::AccountDisabled, Some("first@example.org")),
                (AdminAction::InviteCreated, None),
            ]
        );
        assert!(log.iter().all(|e| e.admin_email == COMMAND_LINE_ACTOR));
        // The page shows the same log to an admin.
        assert_eq!(engine.admin_audit_log(&user, 20).await.unwrap(), log);
    }
}
