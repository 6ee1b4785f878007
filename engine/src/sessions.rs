//! Signed-in sessions. The cookie carries 256 random bits; the database keeps only their
//! SHA-256, so neither a database copy nor a log line can be replayed as a cookie.

use crate::db::Pool;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::users::{User, UserId};
use crate::ErrorCode;

/// Absolute session lifetime: ASVS 3.3.2 asks for re-authentication after 12 hours.
pub const SESSION_TTL_SECONDS: i64 = 12 * 60 * 60;

/// Finds the token cookie named `plain` (or `secure`, its `__Host-` form) in a `Cookie`
/// request header; values not of the shape we issue are ignored.
pub fn token_cookie(header: &str, plain: &str, secure: &str) -> Option<SessionToken> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == plain || *name == secure)
        .and_then(|(_, value)| SessionToken::from_cookie(value))
}

/// Finds our session cookie in a `Cookie` request header (plain or `__Host-` name).
pub fn token_from_cookie_header(header: &str) -> Option<SessionToken> {
    token_cookie(header, COOKIE_NAME, SECURE_COOKIE_NAME)
}

pub const COOKIE_NAME: &str = "stepgate_session";
/// Over https the `__Host-` prefix pins the cookie to this host and path `/` (ASVS 3.4.4).
pub const SECURE_COOKIE_NAME: &str = "__Host-stepgate_session";

/// The secret value of a session cookie.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken(String);

impl SessionToken {
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        SessionToken(hex::encode(bytes))
    }

    /// Accepts only values of the shape we issue, so junk never reaches the database.
    pub fn from_cookie(value: &str) -> Option<Self> {
        (value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| SessionToken(value.to_owned()))
    }

    pub fn as_cookie_value(&self) -> &str {
        &self.0
    }

    /// What is stored and what flows are bound to.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }
}

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken(..)")
    }
}

fn db_error(e: sqlx::Error) -> ErrorCode {
    tracing::error!(error = %e, "session store failed");
    ErrorCode::Unknown
}

#[derive(Clone)]
pub struct SessionStore {
    pool: Pool,
}

impl SessionStore {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    pub async fn create(&self, user_id: UserId, now: i64) -> Result<SessionToken, ErrorCode> {
        let token = SessionToken::random();
        sqlx::query("INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(token.digest())
            .bind(user_id)
            .bind(now)
            .bind(now + SESSION_TTL_SECONDS)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(token)
    }

    /// A session opened by completing flow `flow_id`: one per flow. Completing the same flow
    /// again (its first answer was lost with a crashed instance) gives that session a new
    /// token rather than opening another; the lost token stops working.
    pub async fn create_for_flow(
        &self,
        user_id: UserId,
        flow_id: &str,
        now: i64,
    ) -> Result<SessionToken, ErrorCode> {
        let token = SessionToken::random();
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, created_at, expires_at, flow_id)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (flow_id) DO UPDATE SET token_hash = excluded.token_hash,
                 created_at = excluded.created_at, expires_at = excluded.expires_at",
        )
        .bind(token.digest())
        .bind(user_id)
        .bind(now)
        .bind(now + SESSION_TTL_SECONDS)
        .bind(flow_id)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(token)
    }

    /// The user a live session belongs to: one query, as it runs on every page view.
    pub async fn user_of(&self, token: &SessionToken, now: i64) -> Result<Option<User>, ErrorCode> {
        let found: Vec<(UserId, String)> = sqlx::query_as(
            "SELECT users.id, users.email FROM sessions JOIN users ON users.id = sessions.user_id
             WHERE sessions.token_hash = $1 AND sessions.expires_at > $2",
        )
        .bind(token.digest())
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(found
            .into_iter()
            .next()
            .map(|(id, email)| User { id, email }))
    }

    pub async fn delete(&self, token: &SessionToken) -> Result<(), ErrorCode> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token.digest())
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    pub async fn purge_expired(&self, now: i64) -> Result<u64, ErrorCode> {
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(done.rows_affected())
    }
}
