//! Signed-in sessions. The cookie carries 256 random bits; the database keeps only their
//! SHA-256, so neither a database copy nor a log line can be replayed as a cookie.

use crate::store::db::{Conn, Pool};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::sign_in::users::{User, UserId};
use crate::ErrorCode;

/// Absolute session lifetime: ASVS 3.3.2 asks for re-authentication after 12 hours.
pub const SESSION_TTL_SECONDS: i64 = 12 * 60 * 60;
/// A session unused this long ends (`STEPGATE_SESSION_IDLE` sets another; ASVS 3.3.2).
pub const DEFAULT_IDLE_SECONDS: i64 = 2 * 60 * 60;
/// `last_used_at` is written at most this often per session, so a page view is not a write.
pub const LAST_USED_EVERY: i64 = 60;

/// Finds the token cookie in a `Cookie` request header: over https only the `secure` name (the
/// `__Host-` form, which only this host can set), over http only the `plain` one. A plain-named
/// cookie over https may have been planted by a sibling subdomain (login CSRF), so it is
/// ignored there. Values not of the shape we issue are ignored.
pub fn token_cookie(header: &str, plain: &str, secure: &str, https: bool) -> Option<SessionToken> {
    let wanted = if https { secure } else { plain };
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == wanted)
        .find_map(|(_, value)| SessionToken::from_cookie(value))
}

/// Finds our session cookie in a `Cookie` request header (see [`token_cookie`]).
pub fn token_from_cookie_header(header: &str, https: bool) -> Option<SessionToken> {
    token_cookie(header, COOKIE_NAME, SECURE_COOKIE_NAME, https)
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

/// A live session as its lookup finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LiveSession {
    pub user: User,
    /// Until when (unix seconds) its user confirmed who they are ("sudo", `sign_in/sudo.rs`).
    pub confirmed_until: Option<i64>,
}

#[derive(Clone)]
pub struct SessionStore {
    pool: Pool,
    /// See [`DEFAULT_IDLE_SECONDS`].
    idle: i64,
}

impl SessionStore {
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            idle: DEFAULT_IDLE_SECONDS,
        }
    }

    /// The idle timeout, seconds.
    pub fn idle(&self) -> i64 {
        self.idle
    }

    /// The same store with another idle timeout (seconds).
    pub fn with_idle(mut self, idle: i64) -> Self {
        self.idle = idle.max(1);
        self
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
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        Self::create_for_flow_in(&mut conn, user_id, flow_id, now).await
    }

    /// [`SessionStore::create_for_flow`] on `conn` (the flow's finishing transaction).
    pub(crate) async fn create_for_flow_in(
        conn: &mut Conn,
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
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
        Ok(token)
    }

    /// The user a live session belongs to: one query, as it runs on every page view (and a
    /// write at most once a minute, noting the use for the idle timeout and the list).
    pub async fn user_of(&self, token: &SessionToken, now: i64) -> Result<Option<User>, ErrorCode> {
        Ok(self.lookup(token, now).await?.map(|live| live.user))
    }

    /// A live session: not past its lifetime, and used within the idle timeout.
    pub(crate) async fn lookup(
        &self,
        token: &SessionToken,
        now: i64,
    ) -> Result<Option<LiveSession>, ErrorCode> {
        let found: Vec<(UserId, String, i64, Option<i64>)> = sqlx::query_as(
            "SELECT users.id, users.email, COALESCE(sessions.last_used_at, sessions.created_at),
                 sessions.confirmed_until
             FROM sessions JOIN users ON users.id = sessions.user_id
             WHERE sessions.token_hash = $1 AND sessions.expires_at > $2
                 AND COALESCE(sessions.last_used_at, sessions.created_at) > $3",
        )
        .bind(token.digest())
        .bind(now)
        .bind(now - self.idle)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let Some((id, email, last_used, confirmed_until)) = found.into_iter().next() else {
            return Ok(None);
        };
        if now - last_used >= LAST_USED_EVERY {
            sqlx::query("UPDATE sessions SET last_used_at = $1 WHERE token_hash = $2")
                .bind(now)
                .bind(token.digest())
                .execute(&self.pool)
                .await
                .map_err(db_error)?;
        }
        Ok(Some(LiveSession {
            user: User { id, email },
            confirmed_until,
        }))
    }

    /// Marks the session confirmed (sudo) until `until`; this session only.
    pub(crate) async fn confirm(&self, token: &SessionToken, until: i64) -> Result<(), ErrorCode> {
        sqlx::query("UPDATE sessions SET confirmed_until = $1 WHERE token_hash = $2")
            .bind(until)
            .bind(token.digest())
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
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
        let done = sqlx::query(
            "DELETE FROM sessions WHERE expires_at <= $1 OR COALESCE(last_used_at, created_at) <= $2",
        )
        .bind(now)
        .bind(now - self.idle)
        .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_https_only_the_host_prefixed_name_is_read() {
        let token = SessionToken::random();
        let value = token.as_cookie_value();
        let plain = format!("other=1; {COOKIE_NAME}={value}");
        let secure = format!("{SECURE_COOKIE_NAME}={value}; other=1");
        assert_eq!(token_from_cookie_header(&plain, false), Some(token.clone()));
        assert_eq!(
            token_from_cookie_header(&plain, true),
            None,
            "a plain name over https may be a sibling subdomain's plant"
        );
        assert_eq!(token_from_cookie_header(&secure, true), Some(token.clone()));
        assert_eq!(token_from_cookie_header(&secure, false), None);
        // A planted plain cookie beside the real one changes nothing over https.
        let planted = SessionToken::random();
        let both = format!(
            "{COOKIE_NAME}={}; {SECURE_COOKIE_NAME}={value}",
            planted.as_cookie_value()
        );
        assert_eq!(token_from_cookie_header(&both, true), Some(token));
        assert_eq!(
            token_from_cookie_header(&format!("{COOKIE_NAME}=junk"), false),
            None
        );
    }
}
