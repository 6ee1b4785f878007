//! The sessions a user can see and end (`/settings/sessions`): when each was opened and last
//! used, the browser and system it was opened from (parsed from the `User-Agent` it sent) and
//! the client address. A session is named in the page by a public id derived from its stored
//! digest, never by the digest itself (what flows are bound to) nor by the token.

use std::net::IpAddr;

use sha2::{Digest, Sha256};

use crate::base::clock::Clock;
use crate::sign_in::sessions::SessionStore;
use crate::sign_in::sessions::SessionToken;
use crate::sign_in::users::UserId;
use crate::store::db::Pool;
use crate::ErrorCode;
use std::sync::Arc;

/// The longest `User-Agent` kept for a session (they are short; anything longer is junk).
const MAX_USER_AGENT: usize = 512;

/// One of the user's sessions, as the sessions page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// A public name for this session (32 hex digits); see [`public_id`].
    pub id: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds, to the minute (`sessions::LAST_USED_EVERY`).
    pub last_used_at: i64,
    /// "Firefox", "Chrome", "Safari", … or "Unknown browser".
    pub browser: String,
    /// "Linux", "Windows", "macOS", "Android", "iOS", … or "Unknown system".
    pub os: String,
    pub address: Option<String>,
    /// The session the list was asked for ("This browser").
    pub current: bool,
}

/// A sessions row as the list reads it: token digest, created, last used, `User-Agent`, address.
type SessionRow = (String, i64, i64, Option<String>, Option<String>);

fn db_error(e: sqlx::Error) -> ErrorCode {
    tracing::error!(error = %e, "session list query failed");
    ErrorCode::Unknown
}

/// The page's name for the session stored under `token_hash`: a digest of the digest, so the
/// page reveals nothing a flow or a cookie could be matched with.
fn public_id(token_hash: &str) -> String {
    let digest = Sha256::digest(format!("stepgate:session-id:{token_hash}").as_bytes());
    hex::encode(&digest[..16])
}

/// The browser family a `User-Agent` names (order matters: Edge and Opera say "Chrome" too,
/// Chrome says "Safari").
pub fn browser_family(user_agent: &str) -> &'static str {
    let ua = user_agent;
    let families: [(&str, &str); 9] = [
        ("Edg/", "Edge"),
        ("OPR/", "Opera"),
        ("SamsungBrowser/", "Samsung Internet"),
        ("Firefox/", "Firefox"),
        ("Chromium/", "Chromium"),
        ("Chrome/", "Chrome"),
        ("CriOS/", "Chrome"),
        ("FxiOS/", "Firefox"),
        ("Safari/", "Safari"),
    ];
    families
        .iter()
        .find(|(marker, _)| ua.contains(marker))
        .map(|(_, family)| *family)
        .or_else(|| ua.starts_with("curl/").then_some("curl"))
        .unwrap_or("Unknown browser")
}

/// The operating system family a `User-Agent` names.
pub fn os_family(user_agent: &str) -> &'static str {
    let ua = user_agent;
    if ua.contains("Windows") {
        "Windows"
    } else if ua.contains("iPhone") || ua.contains("iPad") || ua.contains("iPod") {
        "iOS"
    } else if ua.contains("Android") {
        "Android"
    } else if ua.contains("CrOS") {
        "ChromeOS"
    } else if ua.contains("Mac OS X") || ua.contains("Macintosh") {
        "macOS"
    } else if ua.contains("Linux") || ua.contains("X11") {
        "Linux"
    } else {
        "Unknown system"
    }
}

/// The sessions a user can see and end (the list on `/settings/sessions`).
#[derive(Clone)]
pub struct Sessions {
    pub(crate) pool: Pool,
    pub(crate) sessions: SessionStore,
    pub(crate) clock: Arc<dyn Clock>,
}

impl Sessions {
    /// How long an unused session lives, in seconds (`STEPGATE_SESSION_IDLE`).
    pub fn session_idle_seconds(&self) -> i64 {
        self.sessions.idle()
    }

    /// Notes which browser (`User-Agent`) and address opened the session, for the list.
    pub async fn note_session_client(
        &self,
        session: &SessionToken,
        user_agent: Option<&str>,
        address: Option<IpAddr>,
    ) -> Result<(), ErrorCode> {
        let user_agent = user_agent.map(|ua| {
            let mut end = ua.len().min(MAX_USER_AGENT);
            while !ua.is_char_boundary(end) {
                end -= 1;
            }
            &ua[..end]
        });
        sqlx::query(
            "UPDATE sessions SET user_agent = $1, client_address = $2 WHERE token_hash = $3",
        )
        .bind(user_agent)
        .bind(address.map(|a| a.to_string()))
        .bind(session.digest())
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// The live sessions of `current`'s user, most recently used first; `not_signed_in`
    /// without a live `current`.
    pub async fn list_sessions(
        &self,
        current: &SessionToken,
    ) -> Result<Vec<SessionInfo>, ErrorCode> {
        let user = self
            .sessions
            .user_of(current, self.clock.now())
            .await?
            .ok_or(ErrorCode::NotSignedIn)?;
        let now = self.clock.now();
        let rows: Vec<SessionRow> = sqlx::query_as(
            "SELECT token_hash, created_at, COALESCE(last_used_at, created_at), user_agent,
                 client_address
             FROM sessions
             WHERE user_id = $1 AND expires_at > $2 AND COALESCE(last_used_at, created_at) > $3
             ORDER BY COALESCE(last_used_at, created_at) DESC, created_at DESC",
        )
        .bind(user.id)
        .bind(now)
        .bind(now - self.sessions.idle())
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let current_hash = current.digest();
        let mut sessions: Vec<SessionInfo> = rows
            .into_iter()
            .map(
                |(hash, created_at, last_used_at, user_agent, address)| SessionInfo {
                    id: public_id(&hash),
                    created_at,
                    last_used_at,
                    browser: browser_family(user_agent.as_deref().unwrap_or_default()).into(),
                    os: os_family(user_agent.as_deref().unwrap_or_default()).into(),
                    address,
                    current: hash == current_hash,
                },
            )
            .collect();
        // This browser first, then the others by last use.
        sessions.sort_by_key(|s| !s.current);
        Ok(sessions)
    }

    /// Ends the session the list names `id` (one of `current`'s user's); `not_found` if there
    /// is none. True when that was `current` itself (this browser is signed out).
    pub async fn end_session(&self, current: &SessionToken, id: &str) -> Result<bool, ErrorCode> {
        let user = self
            .sessions
            .user_of(current, self.clock.now())
            .await?
            .ok_or(ErrorCode::NotSignedIn)?;
        let hashes: Vec<String> =
            sqlx::query_scalar("SELECT token_hash FROM sessions WHERE user_id = $1")
                .bind(user.id)
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?;
        let hash = hashes
            .into_iter()
            .find(|hash| public_id(hash) == id)
            .ok_or(ErrorCode::NotFound)?;
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1 AND user_id = $2")
            .bind(&hash)
            .bind(user.id)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        tracing::info!(user_id = user.id, "a session was signed out from the list");
        Ok(hash == current.digest())
    }

    /// Ends every session of `current`'s user but `current`; how many ended.
    pub async fn end_other_sessions(&self, current: &SessionToken) -> Result<u64, ErrorCode> {
        let user = self
            .sessions
            .user_of(current, self.clock.now())
            .await?
            .ok_or(ErrorCode::NotSignedIn)?;
        self.end_sessions_but(user.id, current).await
    }

    /// Ends every session of `user_id` but `keep` (a password change, 2FA on or off).
    pub(crate) async fn end_sessions_but(
        &self,
        user_id: UserId,
        keep: &SessionToken,
    ) -> Result<u64, ErrorCode> {
        let done = sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND token_hash <> $2")
            .bind(user_id)
            .bind(keep.digest())
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        if done.rows_affected() > 0 {
            tracing::info!(
                user_id,
                ended = done.rows_affected(),
                "ended the user's other sessions"
            );
        }
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign_in::sudo::tests::PASSWORD;
    use crate::test_support::engine_in;

    const FIREFOX_LINUX: &str =
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
    const CHROME_WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
    const EDGE_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0";
    const CHROME_ANDROID: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36";

    #[test]
    fn browser_and_system_families_come_from_the_user_agent() {
        let cases = [
            (FIREFOX_LINUX, "Firefox", "Linux"),
            (CHROME_WINDOWS, "Chrome", "Windows"),
            (SAFARI_IPHONE, "Safari", "iOS"),
            (EDGE_MAC, "Edge", "macOS"),
            (CHROME_ANDROID, "Chrome", "Android"),
            ("curl/8.5.0", "curl", "Unknown system"),
            ("", "Unknown browser", "Unknown system"),
        ];
        for (ua, browser, os) in cases {
            assert_eq!((browser_family(ua), os_family(ua)), (browser, os), "{ua}");
        }
    }

    #[tokio::test]
    async fn the_list_shows_each_session_and_ends_one_or_all_others() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, clock) = engine_in(&dir).await;
        let user = engine
            .register("list@example.org", PASSWORD, PASSWORD)
            .await
            .unwrap();
        let stranger = engine
            .register("stranger@example.org", PASSWORD, PASSWORD)
            .await
            .unwrap();
        let laptop = engine.open_session(user.id).await.unwrap();
        engine
            .note_session_client(&laptop, Some(FIREFOX_LINUX), "192.0.2.7".parse().ok())
            .await
            .unwrap();
        clock.advance(120);
        let phone = engine.open_session(user.id).await.unwrap();
        engine
            .note_session_client(&phone, Some(SAFARI_IPHONE), "2001:db8::1".parse().ok())
            .await
            .unwrap();
        let tablet = engine.open_session(user.id).await.unwrap();
        let theirs = engine.open_session(stranger.id).await.unwrap();

        let listed = engine.list_sessions(&laptop).await.unwrap();
        assert_eq!(listed.len(), 3, "only this user's sessions");
        assert!(listed[0].current, "this browser first");
        assert_eq!(
            (listed[0].browser.as_str(), listed[0].os.as_str()),
            ("Firefox", "Linux")
        );
        assert_eq!(listed[0].address.as_deref(), Some("192.0.2.7"));
        let phone_row = listed.iter().find(|s| s.browser == "Safari").unwrap();
        assert_eq!(phone_row.os, "iOS");
        assert_eq!(phone_row.address.as_deref(), Some("2001:db8::1"));
        assert_eq!(phone_row.created_at, engine.now());
        assert!(!phone_row.current);
        assert!(listed.iter().all(|s| s.id.len() == 32
            && !s.id.contains(&laptop.digest())
            && s.id != laptop.digest()[..32]));

        // Another user's session id is not found from here.
        let theirs_id = engine.list_sessions(&theirs).await.unwrap()[0].id.clone();
        assert_eq!(
            engine.end_session(&laptop, &theirs_id).await,
            Err(ErrorCode::NotFound)
        );
        assert!(engine.session_user(&theirs).await.unwrap().is_some());

        assert!(!engine.end_session(&laptop, &phone_row.id).await.unwrap());
        assert_eq!(engine.session_user(&phone).await.unwrap(), None);
        assert!(engine.session_user(&tablet).await.unwrap().is_some());

        assert_eq!(engine.end_other_sessions(&laptop).await.unwrap(), 1);
        assert_eq!(engine.session_user(&tablet).await.unwrap(), None);
        assert_eq!(
            engine.session_user(&laptop).await.unwrap(),
            Some(user),
            "this browser stays signed in"
        );
        assert!(
            engine.session_user(&theirs).await.unwrap().is_some(),
            "nobody else's"
        );
    }

    #[tokio::test]
    async fn a_session_unused_for_the_idle_timeout_ends_and_use_keeps_it_alive() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::test_support::test_config(dir.path()).await;
        config.session_idle = 30 * 60;
        let (engine, clock) = crate::test_support::engine_with(config).await;
        let user = engine
            .register("idle@example.org", PASSWORD, PASSWORD)
            .await
            .unwrap();
        let busy = engine.open_session(user.id).await.unwrap();
        let idle = engine.open_session(user.id).await.unwrap();

        // Used every 20 minutes: alive for hours (until the 12-hour lifetime), the other not.
        for _ in 0..6 {
            clock.advance(20 * 60);
            assert_eq!(
                engine.session_user(&busy).await.unwrap(),
                Some(user.clone())
            );
        }
        assert_eq!(engine.session_user(&idle).await.unwrap(), None);
        assert_eq!(
            engine.list_sessions(&busy).await.unwrap().len(),
            1,
            "the idle one is not listed"
        );
        let last_used = engine.list_sessions(&busy).await.unwrap()[0].last_used_at;
        assert_eq!(last_used, engine.now());

        // Within the minute, a use writes nothing (the idle clock counts from the last write).
        clock.advance(59);
        engine.session_user(&busy).await.unwrap();
        assert_eq!(
            engine.list_sessions(&busy).await.unwrap()[0].last_used_at,
            last_used
        );

        // Unused for exactly the idle timeout: ended, and purged.
        clock.advance(30 * 60 - 59);
        assert_eq!(engine.session_user(&busy).await.unwrap(), None);
        let (_, purged) = engine.purge_expired().await.unwrap();
        assert_eq!(purged, 2);

        // The absolute lifetime holds however busy a session is.
        let session = engine.open_session(user.id).await.unwrap();
        let mut alive = 0;
        while engine.session_user(&session).await.unwrap().is_some() {
            clock.advance(10 * 60);
            alive += 10 * 60;
        }
        assert_eq!(alive, crate::sign_in::sessions::SESSION_TTL_SECONDS);
    }
}
