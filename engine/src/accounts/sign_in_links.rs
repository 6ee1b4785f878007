//! Sign-in links: a single-use link that opens the sign-in steps of one connected account for
//! whoever holds the phone its provider texts the codes to, with no Stepgate session. The owner
//! makes one on the account's page; with the owner's opt-in, their apps get one (the
//! `account.needs_sign_in` webhook, the API). A link works for 24 hours, ends when its account
//! is signed in through it or when the owner revokes it, dies with its account, and only ever
//! renews that one account (the flow it opens is that account's reauth; another upstream
//! account is `wrong_account` and leaves the link open).
//!
//! The token is `<id>.<base64url(HMAC-SHA256(K, "link:" id))>`, K a key derived from Stepgate's
//! master key. The database keeps the id and the token's SHA-256 only, so a copy of it opens no
//! link, while Stepgate can show an apps' link again (an API answer, a webhook) by computing it
//! anew. Opening a link in a browser trades the token for a ticket, `<id>.<nonce>.<mac>`, which
//! the link's pages keep in a cookie: the token leaves the address bar at once, and the flow
//! that browser starts belongs to that ticket alone (its owner is the ticket's digest, which no
//! browser session's owner can be).

use std::sync::Arc;

use data_encoding::BASE64URL_NOPAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::accounts::store::{AccountStore, ConnectedAccount};
use crate::apps::events::{AccountEvent, AuditLog, LinksForWebhooks};
use crate::apps::webhooks::WebhookStore;
use crate::base::clock::Clock;
use crate::base::crypto::SecretBox;
use crate::sign_in::users::UserId;
use crate::store::db::{Conn, Pool};
use crate::ErrorCode;

/// How long a link works.
pub const SIGN_IN_LINK_TTL_SECONDS: i64 = 24 * 60 * 60;
/// Where the links' pages are: a link is `{base}{LINK_PATH}/{token}`.
pub const LINK_PATH: &str = "/sign-in-link";
/// What the links' key is derived with (a new label makes every link void).
const KEY_LABEL: &str = "stepgate sign-in links v1";
/// An ended link's row is kept this long past its expiry (opening it says "expired", not
/// "not valid"), then purged.
const KEPT_AFTER_EXPIRY: i64 = 7 * 24 * 60 * 60;
/// Hex digits of a link id (128 random bits) and of a ticket's nonce.
const ID_HEX: usize = 32;
/// Base64url characters of an HMAC-SHA256 tag without padding.
const MAC_CHARS: usize = 43;

/// Who a link was made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MadeFor {
    /// The owner, on the account's page (shown once).
    Owner,
    /// The owner's apps (webhook, API), with their opt-in; shown to them again while it lives.
    Apps,
}

impl MadeFor {
    fn as_str(self) -> &'static str {
        match self {
            MadeFor::Owner => "owner",
            MadeFor::Apps => "apps",
        }
    }

    fn parse(text: &str) -> MadeFor {
        match text {
            "apps" => MadeFor::Apps,
            _ => MadeFor::Owner,
        }
    }
}

/// A link just made (or an apps' link shown again): its URL and when it stops working. The URL
/// opens the link: its `Debug` hides it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignInLinkMade {
    pub url: String,
    /// Unix seconds.
    pub expires_at: i64,
}

impl std::fmt::Debug for SignInLinkMade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignInLinkMade")
            .field("url", &"…")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A live link as the account's page lists it (never its token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignInLinkSummary {
    /// Names the link to revoke it (the token's public half; it opens nothing).
    pub id: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub made_for: MadeFor,
}

/// What a browser that opened a link keeps (in a cookie) instead of its token. Its `Debug`
/// hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct SignInLinkTicket(String);

impl SignInLinkTicket {
    /// A ticket as the browser sends it back, if it has the shape we issue (its MAC is checked
    /// when it is used).
    pub fn parse(text: &str) -> Option<SignInLinkTicket> {
        let mut parts = text.split('.');
        let (Some(id), Some(nonce), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        (is_id(id) && is_id(nonce) && is_mac(mac)).then(|| SignInLinkTicket(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The link it names (not yet checked).
    fn link_id(&self) -> &str {
        self.0.split('.').next().unwrap_or_default()
    }

    /// The owner of the flow this ticket's browser runs: no browser session's owner (a hex
    /// digest) can be the same.
    fn flow_owner(&self) -> String {
        format!("link:{}", hex::encode(Sha256::digest(self.0.as_bytes())))
    }
}

impl std::fmt::Debug for SignInLinkTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignInLinkTicket(…)")
    }
}

/// A live link, found by its ticket: the one account its flow may renew, whose it is, and who
/// owns that flow.
#[derive(Debug, Clone)]
pub struct LiveLink {
    pub id: String,
    pub user_id: UserId,
    pub account: ConnectedAccount,
    pub flow_owner: String,
}

fn is_id(text: &str) -> bool {
    text.len() == ID_HEX
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_mac(text: &str) -> bool {
    text.len() == MAC_CHARS
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn random_hex() -> String {
    let mut bytes = [0u8; ID_HEX / 2];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// What the database keeps of a token.
fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Equal digests, compared in constant time (how many leading characters match is not told).
fn same_digest(a: &str, b: &str) -> bool {
    crate::base::crypto::constant_time_eq(a.as_bytes(), b.as_bytes())
}

/// The links' own keys, derived from the master keys: links and tickets are made with the
/// newest and checked against every key of the ring, so a key rotation does not void the links
/// that are out (their rows keep only digests, which no re-seal can renew).
#[derive(Clone)]
struct LinkKey(SecretBox);

fn mac_over(key: &[u8; 32], text: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(text.as_bytes());
    mac
}

fn token_with(key: &[u8; 32], id: &str) -> String {
    let tag = mac_over(key, &format!("link:{id}")).finalize().into_bytes();
    format!("{id}.{}", BASE64URL_NOPAD.encode(&tag))
}

impl LinkKey {
    /// The derived key of each master key, newest first.
    fn keys(&self) -> Vec<[u8; 32]> {
        self.0
            .keyring()
            .keys()
            .iter()
            .map(|key| key.derive(KEY_LABEL))
            .collect()
    }

    fn newest(&self) -> [u8; 32] {
        self.0.keyring().newest().derive(KEY_LABEL)
    }

    /// Link `id`'s token: always the same for one id and key.
    fn token(&self, id: &str) -> String {
        token_with(&self.newest(), id)
    }

    /// Link `id`'s token under each key of the ring, newest first (a link made before a
    /// rotation has one of the older).
    fn tokens(&self, id: &str) -> Vec<String> {
        self.keys().iter().map(|key| token_with(key, id)).collect()
    }

    fn ticket(&self, id: &str) -> SignInLinkTicket {
        let nonce = random_hex();
        let tag = mac_over(&self.newest(), &format!("ticket:{id}.{nonce}"))
            .finalize()
            .into_bytes();
        SignInLinkTicket(format!("{id}.{nonce}.{}", BASE64URL_NOPAD.encode(&tag)))
    }

    /// Whether we issued `ticket`, under any key of the ring (checked in constant time).
    fn issued(&self, ticket: &SignInLinkTicket) -> bool {
        let Some((signed, tag)) = ticket.0.rsplit_once('.') else {
            return false;
        };
        let Ok(tag) = BASE64URL_NOPAD.decode(tag.as_bytes()) else {
            return false;
        };
        self.keys().iter().any(|key| {
            mac_over(key, &format!("ticket:{signed}"))
                .verify_slice(&tag)
                .is_ok()
        })
    }
}

/// A link's row.
struct LinkRow {
    user_id: UserId,
    account_id: i64,
    digest: String,
    expires_at: i64,
    used_at: Option<i64>,
    revoked_at: Option<i64>,
}

impl LinkRow {
    /// Why the link no longer opens, if it does not. Used first: the person who used it is
    /// told so, whatever happened since.
    fn refusal(&self, now: i64) -> Option<ErrorCode> {
        if self.used_at.is_some() {
            Some(ErrorCode::SignInLinkUsed)
        } else if self.expires_at <= now {
            Some(ErrorCode::SignInLinkExpired)
        } else if self.revoked_at.is_some() {
            Some(ErrorCode::SignInLinkInvalid)
        } else {
            None
        }
    }
}

fn db_error(e: sqlx::Error) -> ErrorCode {
    tracing::error!(error = %e, "sign-in link query failed");
    ErrorCode::Unknown
}

/// Sign-in links and their rows (see the module doc).
#[derive(Clone)]
pub struct SignInLinks {
    pool: Pool,
    clock: Arc<dyn Clock>,
    key: LinkKey,
    accounts: AccountStore,
    audit: AuditLog,
    webhooks: WebhookStore,
    /// Where links made without a request point (`STEPGATE_PUBLIC_URL`, or the address the
    /// server listens on); `None`: links are paths only.
    public_url: Option<String>,
}

impl SignInLinks {
    pub fn new(
        pool: Pool,
        clock: Arc<dyn Clock>,
        secrets: &SecretBox,
        accounts: AccountStore,
        webhooks: WebhookStore,
        public_url: Option<String>,
    ) -> Self {
        Self {
            audit: AuditLog::new(pool.clone()),
            pool,
            clock,
            key: LinkKey(secrets.clone()),
            accounts,
            webhooks,
            public_url: public_url.map(|url| url.trim_end_matches('/').to_owned()),
        }
    }

    fn url(&self, base: Option<&str>, token: &str) -> String {
        let base = base.or(self.public_url.as_deref()).unwrap_or_default();
        format!("{}{LINK_PATH}/{token}", base.trim_end_matches('/'))
    }

    async fn record(&self, user_id: UserId, account_id: i64, event: AccountEvent) {
        let now = self.clock.now();
        if let Err(code) = self.audit.record(user_id, account_id, &event, now).await {
            tracing::error!(account = account_id, %code, event = event.name(), "a sign-in link event was not recorded");
        }
    }

    /// A new link to the user's account `account_id`, made by its owner (shown to them once),
    /// pointing at `base` (where the owner reached Stepgate), or at the public URL without one.
    pub async fn make(
        &self,
        user_id: UserId,
        account_id: i64,
        base: Option<&str>,
    ) -> Result<SignInLinkMade, ErrorCode> {
        self.accounts.get(user_id, account_id).await?;
        let made = self
            .insert(user_id, account_id, MadeFor::Owner, base)
            .await?;
        made.ok_or(ErrorCode::Unknown)
    }

    /// Stores a new link; `None` when the account has an open apps' link already (`made_for`
    /// apps: at most one, see the migration).
    async fn insert(
        &self,
        user_id: UserId,
        account_id: i64,
        made_for: MadeFor,
        base: Option<&str>,
    ) -> Result<Option<SignInLinkMade>, ErrorCode> {
        let now = self.clock.now();
        let id = random_hex();
        let token = self.key.token(&id);
        let expires_at = now + SIGN_IN_LINK_TTL_SECONDS;
        let inserted = sqlx::query(
            "INSERT INTO sign_in_links (id, user_id, account_id, digest, made_for, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT DO NOTHING",
        )
        .bind(&id)
        .bind(user_id)
        .bind(account_id)
        .bind(digest(&token))
        .bind(made_for.as_str())
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        if inserted.rows_affected() == 0 {
            return Ok(None);
        }
        let for_apps = made_for == MadeFor::Apps;
        self.record(
            user_id,
            account_id,
            AccountEvent::SignInLinkMade { for_apps },
        )
        .await;
        Ok(Some(SignInLinkMade {
            url: self.url(base, &token),
            expires_at,
        }))
    }

    /// The user's live links to account `account_id` (neither used, revoked nor expired),
    /// newest first.
    pub async fn live(
        &self,
        user_id: UserId,
        account_id: i64,
    ) -> Result<Vec<SignInLinkSummary>, ErrorCode> {
        let rows = sqlx::query(
            "SELECT id, created_at, expires_at, made_for FROM sign_in_links
             WHERE user_id = $1 AND account_id = $2 AND used_at IS NULL AND revoked_at IS NULL
               AND expires_at > $3
             ORDER BY created_at DESC, id",
        )
        .bind(user_id)
        .bind(account_id)
        .bind(self.clock.now())
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                let made_for: String = row.try_get("made_for").map_err(db_error)?;
                Ok(SignInLinkSummary {
                    id: row.try_get("id").map_err(db_error)?,
                    created_at: row.try_get("created_at").map_err(db_error)?,
                    expires_at: row.try_get("expires_at").map_err(db_error)?,
                    made_for: MadeFor::parse(&made_for),
                })
            })
            .collect()
    }

    /// Revokes the user's live link `link_id` to account `account_id`; `not_found` when there
    /// is no such live link.
    pub async fn revoke(
        &self,
        user_id: UserId,
        account_id: i64,
        link_id: &str,
    ) -> Result<(), ErrorCode> {
        let now = self.clock.now();
        let done = sqlx::query(
            "UPDATE sign_in_links SET revoked_at = $1
             WHERE id = $2 AND user_id = $3 AND account_id = $4
               AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .bind(link_id)
        .bind(user_id)
        .bind(account_id)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Err(ErrorCode::NotFound);
        }
        self.record(user_id, account_id, AccountEvent::SignInLinkRevoked)
            .await;
        Ok(())
    }

    /// Revokes every live link to the user's account `account_id` (apps' links too); how many.
    pub async fn revoke_all(&self, user_id: UserId, account_id: i64) -> Result<u64, ErrorCode> {
        self.accounts.get(user_id, account_id).await?;
        let done = sqlx::query(
            "UPDATE sign_in_links SET revoked_at = $1
             WHERE user_id = $2 AND account_id = $3
               AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $1",
        )
        .bind(self.clock.now())
        .bind(user_id)
        .bind(account_id)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        let revoked = done.rows_affected();
        for _ in 0..revoked {
            self.record(user_id, account_id, AccountEvent::SignInLinkRevoked)
                .await;
        }
        Ok(revoked)
    }

    // What the owner's apps get.

    /// Whether the user lets their apps have sign-in links.
    pub async fn for_apps_allowed(&self, user_id: UserId) -> Result<bool, ErrorCode> {
        let on: Option<i64> =
            sqlx::query_scalar("SELECT sign_in_links_for_apps FROM users WHERE id = $1")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_error)?;
        Ok(on.unwrap_or(0) != 0)
    }

    /// Lets the user's apps have sign-in links, or not. Turned off, the links apps were given
    /// are revoked (each noted in its account's activity).
    pub async fn allow_for_apps(&self, user_id: UserId, on: bool) -> Result<(), ErrorCode> {
        sqlx::query("UPDATE users SET sign_in_links_for_apps = $1 WHERE id = $2")
            .bind(i64::from(on))
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        if on {
            return Ok(());
        }
        let now = self.clock.now();
        let revoked = sqlx::query(
            "UPDATE sign_in_links SET revoked_at = $1
             WHERE user_id = $2 AND made_for = 'apps'
               AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $1
             RETURNING account_id",
        )
        .bind(now)
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        for row in revoked {
            let account_id: i64 = row.try_get("account_id").map_err(db_error)?;
            self.record(user_id, account_id, AccountEvent::SignInLinkRevoked)
                .await;
        }
        Ok(())
    }

    /// The live link the user's apps have for account `account_id`, computed again from its
    /// id, or a new one when there is none (the last one used, revoked or expired):
    /// `sign_in_links_off` unless the user lets apps have links, `not_found` when the account
    /// is not theirs. Asked at once on two instances, both answer the same link.
    pub async fn for_apps(
        &self,
        user_id: UserId,
        account_id: i64,
    ) -> Result<SignInLinkMade, ErrorCode> {
        if !self.for_apps_allowed(user_id).await? {
            return Err(ErrorCode::SignInLinksOff);
        }
        self.accounts.get(user_id, account_id).await?;
        // Another instance may make the link between our look and our insert: then look again.
        for _ in 0..3 {
            if let Some(made) = self.open_apps_link(user_id, account_id).await? {
                return Ok(made);
            }
            if let Some(made) = self
                .insert(user_id, account_id, MadeFor::Apps, None)
                .await?
            {
                return Ok(made);
            }
        }
        Err(ErrorCode::Unknown)
    }

    /// The account's open apps' link, if it still works. One that expired, or whose token no
    /// longer matches (the master key changed), is closed, so a new one can be made.
    async fn open_apps_link(
        &self,
        user_id: UserId,
        account_id: i64,
    ) -> Result<Option<SignInLinkMade>, ErrorCode> {
        let now = self.clock.now();
        let row = sqlx::query(
            "SELECT id, digest, expires_at FROM sign_in_links
             WHERE user_id = $1 AND account_id = $2 AND made_for = 'apps'
               AND used_at IS NULL AND revoked_at IS NULL",
        )
        .bind(user_id)
        .bind(account_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        let Some(row) = row else { return Ok(None) };
        let id: String = row.try_get("id").map_err(db_error)?;
        let stored: String = row.try_get("digest").map_err(db_error)?;
        let expires_at: i64 = row.try_get("expires_at").map_err(db_error)?;
        // Made under any key of the ring: shown again with the token it was made with.
        let token = self
            .key
            .tokens(&id)
            .into_iter()
            .find(|token| same_digest(&digest(token), &stored));
        if let Some(token) = token.filter(|_| expires_at > now) {
            return Ok(Some(SignInLinkMade {
                url: self.url(None, &token),
                expires_at,
            }));
        }
        // Closed without an event: it ended by itself (its activity says when it was made).
        sqlx::query(
            "UPDATE sign_in_links SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(&id)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(None)
    }

    // Opening a link, and the flow it runs.

    /// The row of link `id`, if it exists and its account is still its user's.
    async fn row(&self, id: &str) -> Result<Option<LinkRow>, ErrorCode> {
        let row = sqlx::query(
            "SELECT l.user_id, l.account_id, l.digest, l.expires_at, l.used_at, l.revoked_at
             FROM sign_in_links l
             JOIN connected_accounts a ON a.id = l.account_id AND a.user_id = l.user_id
             WHERE l.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.map(|row| {
            Ok(LinkRow {
                user_id: row.try_get("user_id").map_err(db_error)?,
                account_id: row.try_get("account_id").map_err(db_error)?,
                digest: row.try_get("digest").map_err(db_error)?,
                expires_at: row.try_get("expires_at").map_err(db_error)?,
                used_at: row.try_get("used_at").map_err(db_error)?,
                revoked_at: row.try_get("revoked_at").map_err(db_error)?,
            })
        })
        .transpose()
    }

    /// Opens link `token` (as its URL carries it): a ticket for the browser's cookie if the
    /// link is live. Unknown, revoked or its account gone: `sign_in_link_invalid`; used:
    /// `sign_in_link_used`; past its 24 hours: `sign_in_link_expired`. Opening uses nothing:
    /// someone whose code timed out opens it again.
    pub async fn open(&self, token: &str) -> Result<SignInLinkTicket, ErrorCode> {
        let (id, mac) = token.split_once('.').ok_or(ErrorCode::SignInLinkInvalid)?;
        if !is_id(id) || !is_mac(mac) {
            return Err(ErrorCode::SignInLinkInvalid);
        }
        let row = self.row(id).await?.ok_or(ErrorCode::SignInLinkInvalid)?;
        if !same_digest(&digest(token), &row.digest) {
            return Err(ErrorCode::SignInLinkInvalid);
        }
        if let Some(refusal) = row.refusal(self.clock.now()) {
            return Err(refusal);
        }
        Ok(self.key.ticket(id))
    }

    /// The ticket's link and its row, whatever its state; `sign_in_link_invalid` for a ticket we
    /// did not issue or a link that is gone.
    async fn ticket_row(&self, ticket: &SignInLinkTicket) -> Result<LinkRow, ErrorCode> {
        if !self.key.issued(ticket) {
            return Err(ErrorCode::SignInLinkInvalid);
        }
        self.row(ticket.link_id())
            .await?
            .ok_or(ErrorCode::SignInLinkInvalid)
    }

    /// The live link `ticket` names, with its account; refused as [`SignInLinks::open`] does.
    pub async fn live_by_ticket(&self, ticket: &SignInLinkTicket) -> Result<LiveLink, ErrorCode> {
        let row = self.ticket_row(ticket).await?;
        if let Some(refusal) = row.refusal(self.clock.now()) {
            return Err(refusal);
        }
        let account = self.accounts.get(row.user_id, row.account_id).await?;
        Ok(LiveLink {
            id: ticket.link_id().to_owned(),
            user_id: row.user_id,
            account,
            flow_owner: ticket.flow_owner(),
        })
    }

    /// The account `ticket`'s link signed in, once it has: `Some` when used, `None` while it
    /// is live; refused when revoked, expired or gone.
    pub async fn finished_by_ticket(
        &self,
        ticket: &SignInLinkTicket,
    ) -> Result<Option<ConnectedAccount>, ErrorCode> {
        let row = self.ticket_row(ticket).await?;
        match row.refusal(self.clock.now()) {
            Some(ErrorCode::SignInLinkUsed) => {
                Ok(Some(self.accounts.get(row.user_id, row.account_id).await?))
            }
            Some(refusal) => Err(refusal),
            None => Ok(None),
        }
    }

    /// Refuses link `link_id` unless it is live and for account `account_id` of `user_id`
    /// (the runner asks before a link's reauth stores anything).
    pub async fn check_live(
        &self,
        link_id: &str,
        user_id: UserId,
        account_id: i64,
    ) -> Result<(), ErrorCode> {
        let row = self
            .row(link_id)
            .await?
            .filter(|row| row.user_id == user_id && row.account_id == account_id)
            .ok_or(ErrorCode::SignInLinkInvalid)?;
        row.refusal(self.clock.now()).map_or(Ok(()), Err)
    }

    /// Marks link `link_id` used, on `conn` (the reauth's finishing transaction): its account
    /// was signed in through it.
    pub(crate) async fn mark_used_in(
        &self,
        conn: &mut Conn,
        link_id: &str,
    ) -> Result<(), ErrorCode> {
        let done =
            sqlx::query("UPDATE sign_in_links SET used_at = $1 WHERE id = $2 AND used_at IS NULL")
                .bind(self.clock.now())
                .bind(link_id)
                .execute(&mut *conn)
                .await
                .map_err(db_error)?;
        if done.rows_affected() == 0 {
            // Another browser finished with the same link a moment before: the account was
            // renewed both times, and the link is used all the same.
            tracing::info!(link = link_id, "a sign-in link was used twice at once");
        }
        Ok(())
    }

    /// Drops links that ended more than a week ago.
    pub async fn purge_expired(&self, now: i64) -> Result<u64, ErrorCode> {
        let done = sqlx::query("DELETE FROM sign_in_links WHERE expires_at < $1")
            .bind(now - KEPT_AFTER_EXPIRY)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(done.rows_affected())
    }
}

#[async_trait::async_trait]
impl LinksForWebhooks for SignInLinks {
    async fn link_for_webhook(
        &self,
        user_id: UserId,
        account: &ConnectedAccount,
    ) -> Option<String> {
        // Made only for a user with a webhook (nobody else would get it).
        match self.webhooks.endpoint(user_id).await {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return None,
        }
        match self.for_apps(user_id, account.id).await {
            Ok(made) => Some(made.url),
            Err(ErrorCode::SignInLinksOff) => None,
            Err(code) => {
                tracing::warn!(account = account.id, %code, "no sign-in link for the webhook");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use sandbox::flameconnect::{self as flame, FlameConnectSandbox};
    use sandbox::lynkco::{self as lynk, LynkcoSandbox};

    use super::*;
    use crate::accounts::store::AccountStatus;
    use crate::providers::{NewAccount, StepError};
    use crate::store::db::{dialect, Dialect};
    use crate::test_support::{connected, engine_in, input, register_owner, ProviderSetup};
    use crate::{Completion, Engine, Progress};

    const BASE: &str = "https://stepgate.example.org";

    /// The token of a link's URL.
    fn token_of(made: &SignInLinkMade) -> String {
        made.url
            .strip_prefix(&format!("{BASE}{LINK_PATH}/"))
            .unwrap_or_else(|| panic!("a link under {BASE}{LINK_PATH}/ expected"))
            .to_owned()
    }

    fn events(log: &[crate::apps::events::AuditEntry]) -> Vec<&str> {
        log.iter().rev().map(|e| e.event.as_str()).collect()
    }

    type Flame = ProviderSetup<FlameConnectSandbox>;

    /// FlameConnect's demo account connected, then refused by FlameConnect: it needs sign-in.
    async fn needing_sign_in() -> (Flame, ConnectedAccount) {
        let s = Flame::new("flameconnect", FlameConnectSandbox::spawn().await).await;
        let account = connected(
            s.start(&[
                ("email", flame::DEMO_EMAIL),
                ("password", flame::DEMO_PASSWORD),
            ])
            .await,
        );
        s.sandbox.revoke(flame::DEMO_EMAIL);
        s.check().await;
        assert_eq!(
            s.stored(account.id).await.status,
            AccountStatus::NeedsSignIn
        );
        (s, account)
    }

    fn sign_in_as(email: &str) -> crate::providers::Input {
        input(&[("email", email), ("password", flame::DEMO_PASSWORD)])
    }

    fn reauthenticated(progress: Result<Progress, StepError>) -> ConnectedAccount {
        match progress {
            Ok(Progress::Done(Completion::Reauthenticated(account))) => account,
            other => panic!("reauthenticated expected, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_link_signs_its_account_in_again_once_without_a_session() {
        let (s, account) = needing_sign_in().await;
        let made = s
            .engine
            .make_sign_in_link(s.user_id, account.id, Some(BASE))
            .await
            .unwrap();
        let token = token_of(&made);
        assert!(made.expires_at > s.engine.now() + SIGN_IN_LINK_TTL_SECONDS - 60);
        let ticket = s.engine.open_sign_in_link(&token).await.unwrap();
        assert_ne!(ticket.as_str(), token, "the cookie never carries the token");

        let page = s.engine.sign_in_link_page(&ticket, None).await.unwrap();
        assert_eq!(page.account.id, account.id);
        assert_eq!(page.prefill["email"], flame::DEMO_EMAIL);
        assert!(page.flow.is_none());
        assert_eq!(s.engine.finished_sign_in_link(&ticket).await.unwrap(), None);

        let again = reauthenticated(
            s.engine
                .submit_sign_in_link_step(&ticket, None, &sign_in_as(flame::DEMO_EMAIL))
                .await,
        );
        assert_eq!(again.id, account.id);
        assert_eq!(s.stored(account.id).await.status, AccountStatus::Active);
        let finished = s.engine.finished_sign_in_link(&ticket).await.unwrap();
        assert_eq!(finished.map(|a| a.id), Some(account.id));

        // Used: refused when opened again, and its ticket starts nothing more.
        assert_eq!(
            s.engine.open_sign_in_link(&token).await.unwrap_err(),
            ErrorCode::SignInLinkUsed
        );
        let more = s
            .engine
            .submit_sign_in_link_step(&ticket, None, &sign_in_as(flame::DEMO_EMAIL))
            .await;
        assert_eq!(more.unwrap_err().code, ErrorCode::SignInLinkUsed);
        assert!(s
            .engine
            .sign_in_links(s.user_id, account.id)
            .await
            .unwrap()
            .is_empty());
        let log = s.engine.audit_log(s.user_id, account.id).await.unwrap();
        assert_eq!(
            events(&log),
            [
                "connected",
                "needs_sign_in",
                "sign_in_link_made",
                "signed_in_with_link",
                "recovered"
            ]
        );
    }

    #[tokio::test]
    async fn another_upstream_account_is_wrong_account_and_leaves_the_link_open() {
        let (s, account) = needing_sign_in().await;
        let made = s
            .engine
            .make_sign_in_link(s.user_id, account.id, Some(BASE))
            .await
            .unwrap();
        let ticket = s.engine.open_sign_in_link(&token_of(&made)).await.unwrap();
        let wrong = s
            .engine
            .submit_sign_in_link_step(&ticket, None, &sign_in_as(flame::OTHER_EMAIL))
            .await;
        assert_eq!(wrong.unwrap_err().code, ErrorCode::WrongAccount);
        // Nothing changed: not stored as another account, not renewed, the link still open.
        assert_eq!(
            s.engine.connected_accounts(s.user_id).await.unwrap().len(),
            1
        );
        assert_eq!(
            s.stored(account.id).await.status,
            AccountStatus::NeedsSignIn
        );
        assert_eq!(
            s.engine
                .sign_in_links(s.user_id, account.id)
                .await
                .unwrap()
                .len(),
            1
        );
        s.engine.open_sign_in_link(&token_of(&made)).await.unwrap();
        reauthenticated(
            s.engine
                .submit_sign_in_link_step(&ticket, None, &sign_in_as(flame::DEMO_EMAIL))
                .await,
        );
    }

    #[tokio::test]
    async fn a_link_renews_only_its_own_account() {
        let (s, demo) = needing_sign_in().await;
        let other = connected(
            s.start(&[
                ("email", flame::OTHER_EMAIL),
                ("password", flame::DEMO_PASSWORD),
            ])
            .await,
        );
        let secrets_before = s.stored_secrets(other.id).await;
        let made = s
            .engine
            .make_sign_in_link(s.user_id, demo.id, Some(BASE))
            .await
            .unwrap();
        let ticket = s.engine.open_sign_in_link(&token_of(&made)).await.unwrap();
        // Signing in to the user's other account through it changes that account in no way.
        let wrong = s
            .engine
            .submit_sign_in_link_step(&ticket, None, &sign_in_as(flame::OTHER_EMAIL))
            .await;
        assert_eq!(wrong.unwrap_err().code, ErrorCode::WrongAccount);
        assert_eq!(s.stored_secrets(other.id).await, secrets_before);
        // Another user's link cannot be made to one's account, nor one's link to theirs.
        let stranger = s
            .engine
            .register(
                "stranger@example.org",
                "password-1-quiet-harbor",
                "password-1-quiet-harbor",
            )
            .await
            .unwrap();
        assert_eq!(
            s.engine
                .make_sign_in_link(stranger.id, demo.id, Some(BASE))
                .await
                .unwrap_err(),
            ErrorCode::NotFound
        );
        assert_eq!(
            s.engine
                .revoke_sign_in_links(stranger.id, demo.id)
                .await
                .unwrap_err(),
            ErrorCode::NotFound
        );
        let mine = s.engine.sign_in_links(s.user_id, demo.id).await.unwrap();
        assert_eq!(
            s.engine
                .revoke_sign_in_link(stranger.id, demo.id, &mine[0].id)
                .await
                .unwrap_err(),
            ErrorCode::NotFound
        );
        assert!(s
            .engine
            .sign_in_links(stranger.id, demo.id)
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn a_link_flow_belongs_to_the_browser_that_opened_it_and_finishes_with_the_sms_code() {
        let s = ProviderSetup::new("lynkco", LynkcoSandbox::spawn().await).await;
        let first = s
            .start(&[
                ("email", lynk::DEMO_EMAIL),
                ("password", lynk::DEMO_PASSWORD),
                ("vin", lynk::DEMO_VIN),
            ])
            .await;
        let Ok(Progress::Next(flow)) = first else {
            panic!("the code step expected, got {first:?}");
        };
        let code = s.sandbox.latest_code(lynk::DEMO_EMAIL).unwrap();
        let account = connected(s.submit(&flow, &[("code", &code)]).await);
        s.sandbox.revoke(lynk::DEMO_EMAIL);
        s.check().await;

        let made = s
            .engine
            .make_sign_in_link(s.user_id, account.id, Some(BASE))
            .await
            .unwrap();
        let phone = s.engine.open_sign_in_link(&token_of(&made)).await.unwrap();
        let page = s.engine.sign_in_link_page(&phone, None).await.unwrap();
        assert_eq!(page.prefill["vin"], lynk::DEMO_VIN);
        let sent = s
            .engine
            .submit_sign_in_link_step(
                &phone,
                None,
                &input(&[
                    ("email", lynk::DEMO_EMAIL),
                    ("password", lynk::DEMO_PASSWORD),
                    ("vin", lynk::DEMO_VIN),
                ]),
            )
            .await;
        let Ok(Progress::Next(code_step)) = sent else {
            panic!("the code step expected, got {sent:?}");
        };
        let waiting = s
            .engine
            .sign_in_link_page(&phone, Some(&code_step.flow_id))
            .await
            .unwrap();
        assert_eq!(waiting.flow.unwrap().step, code_step.step);

        let code = s.sandbox.latest_code(lynk::DEMO_EMAIL).unwrap();
        let by_code = input(&[("code", code.as_str())]);
        // Another browser that opened the same link, and the owner's own session, cannot
        // continue this browser's flow.
        let elsewhere = s.engine.open_sign_in_link(&token_of(&made)).await.unwrap();
        let foreign = s
            .engine
            .submit_sign_in_link_step(&elsewhere, Some(&code_step.flow_id), &by_code)
            .await;
        assert_eq!(foreign.unwrap_err().code, ErrorCode::FlowExpired);
        let owners = s
            .engine
            .submit_flow(
                &code_step.flow_id,
                Some(crate::test_support::OWNER),
                &by_code,
            )
            .await;
        assert_eq!(owners.unwrap_err().code, ErrorCode::FlowExpired);
        // A ticket we did not issue (another link's id under this MAC) opens nothing.
        let forged = SignInLinkTicket::parse(&format!(
            "{}{}",
            "0".repeat(ID_HEX),
            &phone.as_str()[ID_HEX..]
        ))
        .unwrap();
        assert_eq!(
            s.engine.sign_in_link_page(&forged, None).await.unwrap_err(),
            ErrorCode::SignInLinkInvalid
        );

        let again = reauthenticated(
            s.engine
                .submit_sign_in_link_step(&phone, Some(&code_step.flow_id), &by_code)
                .await,
        );
        assert_eq!(again.id, account.id);
        assert_eq!(s.stored(account.id).await.status, AccountStatus::Active);
        assert_eq!(
            s.engine
                .open_sign_in_link(&token_of(&made))
                .await
                .unwrap_err(),
            ErrorCode::SignInLinkUsed
        );
    }

    /// An engine on a manual clock with its owner and one account (no provider is asked).
    async fn on_manual_clock(
        dir: &tempfile::TempDir,
    ) -> (
        Engine,
        crate::base::clock::ManualClock,
        UserId,
        ConnectedAccount,
    ) {
        let (engine, clock) = engine_in(dir).await;
        let user_id = register_owner(&engine).await;
        let account = engine
            .accounts()
            .add(
                user_id,
                "flameconnect",
                &NewAccount {
                    account_id: flame::DEMO_EMAIL.into(),
                    display_name: flame::DEMO_EMAIL.into(),
                    secrets: serde_json::json!({}),
                },
                engine.now(),
            )
            .await
            .unwrap();
        (engine, clock, user_id, account)
    }

    #[tokio::test]
    async fn revoked_expired_and_removed_links_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, clock, user, account) = on_manual_clock(&dir).await;
        let make = || engine.make_sign_in_link(user, account.id, Some(BASE));

        let revoked = make().await.unwrap();
        let ticket = engine.open_sign_in_link(&token_of(&revoked)).await.unwrap();
        let live = engine.sign_in_links(user, account.id).await.unwrap();
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].made_for, MadeFor::Owner);
        engine
            .revoke_sign_in_link(user, account.id, &live[0].id)
            .await
            .unwrap();
        assert_eq!(
            engine
                .open_sign_in_link(&token_of(&revoked))
                .await
                .unwrap_err(),
            ErrorCode::SignInLinkInvalid
        );
        assert_eq!(
            engine.sign_in_link_page(&ticket, None).await.unwrap_err(),
            ErrorCode::SignInLinkInvalid,
            "a browser that opened it before is refused too"
        );
        assert_eq!(
            engine
                .revoke_sign_in_link(user, account.id, &live[0].id)
                .await
                .unwrap_err(),
            ErrorCode::NotFound
        );

        let expiring = make().await.unwrap();
        clock.advance(SIGN_IN_LINK_TTL_SECONDS - 1);
        engine
            .open_sign_in_link(&token_of(&expiring))
            .await
            .unwrap();
        clock.advance(1);
        assert_eq!(
            engine
                .open_sign_in_link(&token_of(&expiring))
                .await
                .unwrap_err(),
            ErrorCode::SignInLinkExpired
        );
        assert!(engine
            .sign_in_links(user, account.id)
            .await
            .unwrap()
            .is_empty());

        let (one, two) = (make().await.unwrap(), make().await.unwrap());
        assert_ne!(one.url, two.url);
        assert_eq!(
            engine.revoke_sign_in_links(user, account.id).await.unwrap(),
            2
        );
        for made in [&one, &two] {
            assert_eq!(
                engine.open_sign_in_link(&token_of(made)).await.unwrap_err(),
                ErrorCode::SignInLinkInvalid
            );
        }

        // A week after they ended, their rows are purged.
        let count = || async {
            let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sign_in_links")
                .fetch_one(engine.pool())
                .await
                .unwrap();
            rows
        };
        assert_eq!(count().await, 4);
        clock.advance(SIGN_IN_LINK_TTL_SECONDS + KEPT_AFTER_EXPIRY + 1);
        engine.purge_expired().await.unwrap();
        assert_eq!(count().await, 0);

        let orphan = make().await.unwrap();
        engine.remove_account(user, account.id).await.unwrap();
        assert_eq!(
            engine
                .open_sign_in_link(&token_of(&orphan))
                .await
                .unwrap_err(),
            ErrorCode::SignInLinkInvalid
        );
        assert_eq!(count().await, 0, "the removed account's links went with it");

        let log = engine.audit_log(user, account.id).await.unwrap();
        assert_eq!(
            events(&log),
            [
                "sign_in_link_made",
                "sign_in_link_revoked",
                "sign_in_link_made",
                "sign_in_link_made",
                "sign_in_link_made",
                "sign_in_link_revoked",
                "sign_in_link_revoked",
                "sign_in_link_made",
                "removed"
            ]
        );
    }

    #[tokio::test]
    async fn malformed_and_forged_tokens_are_not_valid() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _, user, account) = on_manual_clock(&dir).await;
        let token = token_of(
            &engine
                .make_sign_in_link(user, account.id, Some(BASE))
                .await
                .unwrap(),
        );
        let (id, mac) = token.split_once('.').unwrap();
        let flipped = format!(
            "{id}.{}{}",
            if mac.starts_with('A') { 'B' } else { 'A' },
            &mac[1..]
        );
        for bad in [
            String::new(),
            "nonsense".into(),
            id.to_owned(),
            format!("{id}."),
            flipped,
            format!("{}.{mac}", "f".repeat(ID_HEX)),
            format!("{token}x"),
            token.to_uppercase(),
        ] {
            assert_eq!(
                engine.open_sign_in_link(&bad).await.unwrap_err(),
                ErrorCode::SignInLinkInvalid,
                "{bad}"
            );
        }
        for bad in ["", "a.b.c", &token, &format!("{token}.x.y")] {
            assert!(SignInLinkTicket::parse(bad).is_none(), "{bad}");
        }
        engine.open_sign_in_link(&token).await.unwrap();
    }

    #[tokio::test]
    async fn apps_get_links_only_with_the_opt_in_computed_again_while_they_live() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, clock, user, account) = on_manual_clock(&dir).await;
        assert!(!engine.sign_in_links_for_apps(user).await.unwrap());
        assert_eq!(
            engine.app_sign_in_link(user, account.id).await.unwrap_err(),
            ErrorCode::SignInLinksOff
        );
        engine.set_sign_in_links_for_apps(user, true).await.unwrap();
        assert!(engine.sign_in_links_for_apps(user).await.unwrap());

        let first = engine.app_sign_in_link(user, account.id).await.unwrap();
        assert!(first.url.starts_with(&format!(
            "{}{LINK_PATH}/",
            crate::test_support::PASSKEY_ORIGIN
        )));
        clock.advance(60);
        let again = engine.app_sign_in_link(user, account.id).await.unwrap();
        assert_eq!(again, first, "the same link, computed again from its id");
        let live = engine.sign_in_links(user, account.id).await.unwrap();
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].made_for, MadeFor::Apps);
        // The owner's own links are apart from it.
        engine
            .make_sign_in_link(user, account.id, Some(BASE))
            .await
            .unwrap();
        assert_eq!(
            engine.app_sign_in_link(user, account.id).await.unwrap(),
            first
        );

        // Expired: a new one.
        clock.advance(SIGN_IN_LINK_TTL_SECONDS);
        let next = engine.app_sign_in_link(user, account.id).await.unwrap();
        assert_ne!(next.url, first.url);
        // Revoked by the owner: a new one.
        let live = engine.sign_in_links(user, account.id).await.unwrap();
        engine
            .revoke_sign_in_link(user, account.id, &live[0].id)
            .await
            .unwrap();
        let after_revoke = engine.app_sign_in_link(user, account.id).await.unwrap();
        assert_ne!(after_revoke.url, next.url);

        // Asked at once (two instances): one link, the same answer for all.
        let answers = asked_at_once(&engine, user, account.id).await;
        assert!(answers.iter().all(|a| *a == after_revoke), "{answers:?}");

        // Off: the apps' link is revoked, and none is handed out.
        engine
            .set_sign_in_links_for_apps(user, false)
            .await
            .unwrap();
        assert!(engine
            .sign_in_links(user, account.id)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            engine
                .open_sign_in_link(&after_revoke.url[after_revoke.url.rfind('/').unwrap() + 1..])
                .await
                .unwrap_err(),
            ErrorCode::SignInLinkInvalid
        );
        assert_eq!(
            engine.app_sign_in_link(user, account.id).await.unwrap_err(),
            ErrorCode::SignInLinksOff
        );
        // Only the account's owner.
        engine.set_sign_in_links_for_apps(user, true).await.unwrap();
        assert_eq!(
            engine
                .app_sign_in_link(user + 1, account.id)
                .await
                .unwrap_err(),
            ErrorCode::SignInLinksOff
        );
    }

    /// [`Engine::app_sign_in_link`] asked eight times at once, on separate tasks.
    async fn asked_at_once(engine: &Engine, user: UserId, account: i64) -> Vec<SignInLinkMade> {
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let engine = engine.clone();
                tokio::spawn(async move { engine.app_sign_in_link(user, account).await.unwrap() })
            })
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap());
        }
        answers
    }

    #[tokio::test]
    async fn an_apps_link_once_used_is_replaced_by_a_new_one() {
        let (s, account) = needing_sign_in().await;
        s.engine
            .set_sign_in_links_for_apps(s.user_id, true)
            .await
            .unwrap();
        let given = s
            .engine
            .app_sign_in_link(s.user_id, account.id)
            .await
            .unwrap();
        let token = &given.url[given.url.rfind('/').unwrap() + 1..];
        let ticket = s.engine.open_sign_in_link(token).await.unwrap();
        reauthenticated(
            s.engine
                .submit_sign_in_link_step(&ticket, None, &sign_in_as(flame::DEMO_EMAIL))
                .await,
        );
        let next = s
            .engine
            .app_sign_in_link(s.user_id, account.id)
            .await
            .unwrap();
        assert_ne!(next.url, given.url);
        assert_eq!(
            s.engine.open_sign_in_link(token).await.unwrap_err(),
            ErrorCode::SignInLinkUsed
        );
    }

    /// What a test receiver got: each request's body.
    type Bodies = Arc<Mutex<Vec<String>>>;

    async fn receiver() -> (String, Bodies) {
        let seen: Bodies = Arc::default();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post({
                let seen = seen.clone();
                move |body: String| async move {
                    seen.lock().unwrap().push(body);
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, seen)
    }

    /// The events the receiver got so far, as JSON, in order (sends due at once go out
    /// together: call it after each event).
    async fn delivered(s: &Flame, seen: &Bodies) -> Vec<serde_json::Value> {
        s.engine.deliver_webhooks_now().await.unwrap();
        let bodies = seen.lock().unwrap().clone();
        bodies
            .iter()
            .map(|b| serde_json::from_str(b).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn the_needs_sign_in_webhook_carries_a_link_only_with_the_opt_in_and_the_database_none() {
        let s = Flame::new("flameconnect", FlameConnectSandbox::spawn().await).await;
        let (url, seen) = receiver().await;
        s.engine.set_webhook_url(s.user_id, &url).await.unwrap();
        let account = connected(
            s.start(&[
                ("email", flame::DEMO_EMAIL),
                ("password", flame::DEMO_PASSWORD),
            ])
            .await,
        );
        delivered(&s, &seen).await;
        s.sandbox.revoke(flame::DEMO_EMAIL);
        s.check().await;
        let told = delivered(&s, &seen).await;
        assert_eq!(told[1]["type"], "account.needs_sign_in");
        assert!(
            told[1]["data"].get("sign_in_link").is_none(),
            "off by default"
        );

        // Opted in: the next time it needs sign-in, the webhook brings the apps' link.
        s.engine
            .set_sign_in_links_for_apps(s.user_id, true)
            .await
            .unwrap();
        let owner_link = s
            .engine
            .make_sign_in_link(s.user_id, account.id, Some(BASE))
            .await
            .unwrap();
        let ticket = s
            .engine
            .open_sign_in_link(&token_of(&owner_link))
            .await
            .unwrap();
        reauthenticated(
            s.engine
                .submit_sign_in_link_step(&ticket, None, &sign_in_as(flame::DEMO_EMAIL))
                .await,
        );
        delivered(&s, &seen).await;
        s.sandbox.revoke(flame::DEMO_EMAIL);
        s.check().await;
        let told = delivered(&s, &seen).await;
        let kinds: Vec<&str> = told.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "account.connected",
                "account.needs_sign_in",
                "account.recovered",
                "account.needs_sign_in"
            ]
        );
        let link = told[3]["data"]["sign_in_link"].as_str().unwrap().to_owned();
        assert_eq!(told[3]["data"]["account_id"], account.id);
        assert_eq!(
            link,
            s.engine
                .app_sign_in_link(s.user_id, account.id)
                .await
                .unwrap()
                .url
        );
        // It works: whoever the app sends it to signs the account in again.
        let token = &link[link.rfind('/').unwrap() + 1..];
        let phone = s.engine.open_sign_in_link(token).await.unwrap();
        reauthenticated(
            s.engine
                .submit_sign_in_link_step(&phone, None, &sign_in_as(flame::DEMO_EMAIL))
                .await,
        );

        // Neither token is anywhere in the database, nor a link's MAC alone.
        let owner_token = token_of(&owner_link);
        let secrets = [
            owner_token.as_str(),
            owner_token.split_once('.').unwrap().1,
            token,
            token.split_once('.').unwrap().1,
        ];
        let stored = everything_stored(&s.engine, s.dir()).await;
        let (owner_id, _) = owner_token.split_once('.').unwrap();
        assert!(stored.contains(owner_id), "the scan sees what is stored");
        for secret in secrets {
            assert!(!stored.contains(secret), "{secret} is stored");
        }
    }

    /// Every value the database holds, as text (SQLite: its files, write-ahead log too).
    async fn everything_stored(engine: &Engine, dir: &std::path::Path) -> String {
        match dialect(engine.pool()) {
            Dialect::Sqlite => {
                let mut all = String::new();
                for entry in std::fs::read_dir(dir).unwrap() {
                    let bytes = std::fs::read(entry.unwrap().path()).unwrap_or_default();
                    all.push_str(&String::from_utf8_lossy(&bytes));
                }
                all
            }
            Dialect::Postgres => {
                let mut all = String::new();
                for table in [
                    "sign_in_links",
                    "webhook_deliveries",
                    "account_audit",
                    "flows",
                    "users",
                    "connected_accounts",
                ] {
                    let rows: Vec<String> =
                        sqlx::query_scalar(&format!("SELECT CAST(t AS TEXT) FROM {table} t"))
                            .fetch_all(engine.pool())
                            .await
                            .unwrap();
                    all.push_str(&rows.join("\n"));
                }
                all
            }
        }
    }
}
