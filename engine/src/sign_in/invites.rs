//! Invite links: how an invite-only Stepgate (`STEPGATE_REGISTRATION=invite`, the default) takes
//! a new account. An admin makes one ([`crate::Engine::admin_create_invite`]); it works once,
//! for seven days. The token (256 random bits) is shown to the admin once; the database keeps
//! only its SHA-256, so a copy of the database cannot be replayed as invites.

use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::sign_in::users::UserId;
use crate::store::db::Pool;
use crate::ErrorCode;

/// How long an invite works.
pub const INVITE_TTL_SECONDS: i64 = 7 * 24 * 60 * 60;

/// A new invite's token (64 hex digits), as it goes into the link `/register?invite=…`.
#[derive(Clone, PartialEq, Eq)]
pub struct InviteToken(String);

impl InviteToken {
    fn random() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        InviteToken(hex::encode(bytes))
    }

    /// The token, given alone or as the whole link pasted (`…/register?invite=<token>`);
    /// accepts only the shape we issue: anything else is no invite of ours.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let text = match text.split_once("invite=") {
            Some((_, rest)) => rest.split(['&', '#']).next().unwrap_or_default(),
            None => text,
        };
        (text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| InviteToken(text.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What is stored.
    pub(crate) fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }
}

impl std::fmt::Debug for InviteToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InviteToken(..)")
    }
}

/// A new invite: the token is seen this once.
#[derive(Debug, Clone)]
pub struct NewInvite {
    pub token: InviteToken,
    pub expires_at: i64,
}

impl NewInvite {
    /// The link to hand out: Stepgate's sign-up page with the invite filled in.
    pub fn link(&self, public_url: &str) -> String {
        format!(
            "{}/register?invite={}",
            public_url.trim_end_matches('/'),
            self.token.as_str()
        )
    }
}

/// An invite as the admin page lists it (never its token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteSummary {
    pub created_at: i64,
    pub expires_at: i64,
    pub created_by: Option<String>,
    pub used_at: Option<i64>,
    pub used_by: Option<String>,
}

pub(crate) fn db_error(e: sqlx::Error) -> ErrorCode {
    tracing::error!(error = %e, "invite store failed");
    ErrorCode::Unknown
}

#[derive(Clone)]
pub struct InviteStore {
    pool: Pool,
}

impl InviteStore {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// Makes an invite that works for `lifetime` seconds, by `admin` (`None`: the command
    /// line), inside the transaction that records the act.
    pub(crate) async fn create(
        conn: &mut sqlx::AnyConnection,
        admin: Option<UserId>,
        now: i64,
        lifetime: i64,
    ) -> Result<NewInvite, ErrorCode> {
        let token = InviteToken::random();
        let expires_at = now + lifetime;
        sqlx::query(
            "INSERT INTO invites (digest, created_by, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(token.digest())
        .bind(admin)
        .bind(now)
        .bind(expires_at)
        .execute(conn)
        .await
        .map_err(db_error)?;
        Ok(NewInvite { token, expires_at })
    }

    /// Why `token` cannot be used at `now`, if it cannot (reads only; registering redeems it).
    pub async fn refusal(&self, token: &str, now: i64) -> Result<Option<ErrorCode>, ErrorCode> {
        let Some(token) = InviteToken::parse(token) else {
            return Ok(Some(ErrorCode::InviteInvalid));
        };
        let row = sqlx::query("SELECT expires_at, used_at FROM invites WHERE digest = $1")
            .bind(token.digest())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        let Some(row) = row else {
            return Ok(Some(ErrorCode::InviteInvalid));
        };
        let used_at: Option<i64> = row.try_get("used_at").map_err(db_error)?;
        let expires_at: i64 = row.try_get("expires_at").map_err(db_error)?;
        Ok(if used_at.is_some() {
            Some(ErrorCode::InviteUsed)
        } else if expires_at <= now {
            Some(ErrorCode::InviteExpired)
        } else {
            None
        })
    }

    /// Spends `token` on `user`, inside the registration's transaction: one statement, so of
    /// two registrations racing for one invite exactly one gets it.
    pub(crate) async fn redeem(
        conn: &mut sqlx::AnyConnection,
        token: &str,
        user: UserId,
        now: i64,
    ) -> Result<bool, ErrorCode> {
        let Some(token) = InviteToken::parse(token) else {
            return Ok(false);
        };
        let done = sqlx::query(
            "UPDATE invites SET used_at = $1, used_by = $2
             WHERE digest = $3 AND used_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .bind(user)
        .bind(token.digest())
        .execute(conn)
        .await
        .map_err(db_error)?;
        Ok(done.rows_affected() == 1)
    }

    /// The latest invites, newest first.
    pub async fn recent(&self, limit: i64) -> Result<Vec<InviteSummary>, ErrorCode> {
        let rows = sqlx::query(
            "SELECT i.created_at, i.expires_at, i.used_at, c.email AS created_by, u.email AS used_by
             FROM invites i LEFT JOIN users c ON c.id = i.created_by LEFT JOIN users u ON u.id = i.used_by
             ORDER BY i.created_at DESC, i.digest LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.into_iter()
            .map(|row| {
                Ok(InviteSummary {
                    created_at: row.try_get("created_at").map_err(db_error)?,
                    expires_at: row.try_get("expires_at").map_err(db_error)?,
                    created_by: row.try_get("created_by").map_err(db_error)?,
                    used_at: row.try_get("used_at").map_err(db_error)?,
                    used_by: row.try_get("used_by").map_err(db_error)?,
                })
            })
            .collect()
    }
}
