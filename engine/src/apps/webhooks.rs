//! Webhooks: each user may name one URL that is told, as signed JSON, when one of their
//! connected accounts is connected, needs signing in again or is removed.
//!
//! The scheme is Standard Webhooks (<https://www.standardwebhooks.com>, spec.md "Signature
//! scheme"): the secret reads `whsec_<base64 of 32 random bytes>`; each request carries
//! `webhook-id` (`msg_…`, the same on every retry, so receivers can drop duplicates),
//! `webhook-timestamp` (unix seconds of the attempt) and `webhook-signature: v1,<base64
//! HMAC-SHA256 over "{id}.{timestamp}.{body}" keyed with the decoded secret>`. The body is
//! `{"type", "timestamp" (RFC 3339), "data"}` and never holds a token: callers pass only ids,
//! provider and account names. The one secret a delivery may carry, a sign-in link (with its
//! owner's opt-in), is stored sealed beside the body and joins its `data` only when sent.
//!
//! The secret is shown once, when the URL is saved. Signing needs it back, so it is kept sealed
//! with [`SecretBox`] bound to its user (a hash would not do, and a database copy must not be
//! able to sign). Deliveries are rows: a pass leases the due ones (like the token renewals in
//! `accounts/store.rs`, so two instances never send one delivery at once), sends each with a 10 s
//! timeout, and on anything but a 2xx tries again after [`RETRY_AFTER`], then gives up.
//! Webhook URLs are the user's own, so they get their own HTTP client, not the upstream map,
//! and go only where `apps/webhook_destination.rs` lets them: judged on save and again at every
//! attempt, which connects to the addresses just judged.

use std::sync::Arc;
use std::time::Duration;

use data_encoding::BASE64;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sqlx::Row;

use crate::store::db::{Conn, Pool};

use crate::apps::webhook_destination::{Destinations, Refusal, WebhookAllow};
use crate::base::clock::Clock;
use crate::base::crypto::SecretBox;
use crate::base::fields::MAX_FIELD_BYTES;
use crate::base::metrics;
use crate::dates::rfc3339;
use crate::sign_in::users::UserId;
use crate::ErrorCode;

/// What every signing secret starts with (Standard Webhooks).
pub const SECRET_PREFIX: &str = "whsec_";
const SECRET_BYTES: usize = 32;
/// Seconds to wait before the 2nd, 3rd, … attempt; after the last one the delivery has failed
/// (7 attempts over about 7 hours).
pub const RETRY_AFTER: [i64; 6] = [5, 30, 120, 600, 3600, 21600];
/// How long one attempt may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// A delivery's lease: well over [`ATTEMPT_TIMEOUT`], so it outlives the attempt; a dead
/// worker's lease runs out and another sends the delivery.
const LEASE_SECONDS: i64 = 60;
/// Deliveries sent by one pass (at once).
const BATCH: i64 = 32;
/// Finished deliveries kept per user for the log.
const KEPT_PER_USER: i64 = 100;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not sent yet, or to be tried again at `next_attempt_at`.
    Pending,
    /// The URL answered 2xx.
    Delivered,
    /// Every attempt failed, or the URL was removed first.
    Failed,
}

impl DeliveryStatus {
    fn from_db(text: &str) -> Self {
        match text {
            "delivered" => Self::Delivered,
            "failed" => Self::Failed,
            _ => Self::Pending,
        }
    }
}

/// One line of the delivery log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// `msg_…`, the `webhook-id` header.
    pub id: String,
    pub event_type: String,
    /// Unix seconds.
    pub created_at: i64,
    pub status: DeliveryStatus,
    pub attempts: i64,
    /// The HTTP status of the last answer.
    pub last_status: Option<u16>,
    /// Why the last attempt failed without an answer ("timed out", …).
    pub last_error: Option<String>,
    pub delivered_at: Option<i64>,
    pub next_attempt_at: Option<i64>,
}

/// A signing secret, shown to its owner once. Its `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(…)")
    }
}

/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`: the `webhook-signature` value.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", BASE64.encode(&mac.finalize().into_bytes()))
}

/// The key bytes of a `whsec_…` secret.
pub fn secret_key(secret: &str) -> Option<Vec<u8>> {
    BASE64
        .decode(secret.strip_prefix(SECRET_PREFIX)?.as_bytes())
        .ok()
}

/// An http(s) URL with a host, at most 1 KiB.
fn parse_url(url: &str) -> Result<String, ErrorCode> {
    let url = url.trim();
    if url.len() > MAX_FIELD_BYTES {
        return Err(ErrorCode::InvalidUrl);
    }
    let parsed = url::Url::parse(url).map_err(|_| ErrorCode::InvalidUrl)?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
        return Err(ErrorCode::InvalidUrl);
    }
    Ok(url.to_owned())
}

fn associated_data(user_id: UserId) -> String {
    format!("webhook:user:{user_id}")
}

fn delivery_associated_data(id: &str) -> String {
    format!("webhook:delivery:{id}")
}

/// `body` with the sealed part of its data put back, as it is sent. A sealed part that does
/// not open (a changed key) is left out: the event still goes, without it.
fn with_secret(secrets: &SecretBox, id: &str, body: String, sealed: Option<&[u8]>) -> String {
    let Some(sealed) = sealed else { return body };
    let opened = secrets
        .open(sealed, delivery_associated_data(id).as_bytes())
        .ok()
        .and_then(|plain| serde_json::from_slice::<serde_json::Value>(&plain).ok());
    let (Some(serde_json::Value::Object(secret)), Ok(mut event)) =
        (opened, serde_json::from_str::<serde_json::Value>(&body))
    else {
        tracing::error!(delivery = id, "a webhook's sealed data does not open");
        return body;
    };
    if let Some(data) = event.get_mut("data").and_then(|d| d.as_object_mut()) {
        data.extend(secret);
    }
    event.to_string()
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    buf
}

fn db_error(e: sqlx::Error) -> ErrorCode {
    tracing::error!(error = %e, "webhook query failed");
    ErrorCode::Unknown
}

/// The client one attempt is sent with: a short timeout, no redirects (a 3xx is a failed
/// attempt, as in Standard Webhooks senders), no proxy from the environment (a proxy would
/// resolve the name again, and reach what it likes), and for a host name only the addresses
/// that were judged (`pin`: no second lookup, so DNS rebinding finds nothing to change).
fn webhook_client(
    pin: Option<&(String, Vec<std::net::SocketAddr>)>,
) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .timeout(ATTEMPT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent("Stepgate-Webhooks/1");
    if let Some((host, addresses)) = pin {
        builder = builder.resolve_to_addrs(host, addresses);
    }
    builder.build()
}

/// The code a refused destination is answered with on save.
fn refusal_code(refusal: Refusal) -> ErrorCode {
    match refusal {
        Refusal::Address(_) => ErrorCode::WebhookAddressRefused,
        Refusal::NotFound => ErrorCode::WebhookHostNotFound,
        Refusal::NoHost => ErrorCode::InvalidUrl,
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Attempt {
    /// The URL answered with this status.
    Answered(u16),
    /// No answer: why, in a few words (never the URL or the secret, and for a refused
    /// destination never anything learnt by connecting: it was not connected to).
    NoAnswer(&'static str),
}

#[derive(Clone)]
pub struct WebhookStore {
    pool: Pool,
    secrets: SecretBox,
    clock: Arc<dyn Clock>,
    /// Where webhooks may go.
    destinations: Destinations,
    /// This store's name as a lease holder (random).
    owner: Arc<str>,
}

impl WebhookStore {
    pub fn new(pool: Pool, secrets: SecretBox, clock: Arc<dyn Clock>, allow: WebhookAllow) -> Self {
        Self {
            pool,
            secrets,
            clock,
            destinations: Destinations::new(allow),
            owner: hex::encode(random_bytes::<8>()).into(),
        }
    }

    /// The same store resolving host names with `destinations` (tests).
    #[cfg(test)]
    pub(crate) fn with_destinations(mut self, destinations: Destinations) -> Self {
        self.destinations = destinations;
        self
    }

    /// Sets the user's URL (replacing any) and returns its new signing secret, which is never
    /// shown again. `invalid_url` for anything but an http(s) URL of at most 1 KiB;
    /// `webhook_address_refused` when its host is, or resolves to, an address webhooks may
    /// not reach; `webhook_host_not_found` when its host name does not resolve.
    pub async fn set_url(&self, user_id: UserId, url: &str) -> Result<WebhookSecret, ErrorCode> {
        let url = parse_url(url)?;
        let parsed = url::Url::parse(&url).map_err(|_| ErrorCode::InvalidUrl)?;
        match tokio::time::timeout(ATTEMPT_TIMEOUT, self.destinations.check(&parsed)).await {
            Ok(Ok(_)) => {}
            Ok(Err(refusal)) => return Err(refusal_code(refusal)),
            Err(_) => return Err(ErrorCode::WebhookHostNotFound),
        }
        let key = random_bytes::<SECRET_BYTES>();
        let sealed = self.secrets.seal(&key, associated_data(user_id).as_bytes());
        sqlx::query(
            "INSERT INTO webhook_endpoints (user_id, url, secret_sealed, created_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id) DO UPDATE SET
                 url = excluded.url, secret_sealed = excluded.secret_sealed,
                 created_at = excluded.created_at",
        )
        .bind(user_id)
        .bind(&url)
        .bind(sealed)
        .bind(self.clock.now())
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(WebhookSecret(format!(
            "{SECRET_PREFIX}{}",
            BASE64.encode(&key)
        )))
    }

    /// Removes the user's URL; deliveries not sent yet are marked failed.
    pub async fn remove(&self, user_id: UserId) -> Result<(), ErrorCode> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        sqlx::query("DELETE FROM webhook_endpoints WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        sqlx::query(
            "UPDATE webhook_deliveries
             SET status = 'failed', next_attempt_at = NULL, last_error = 'webhook removed'
             WHERE user_id = $1 AND status = 'pending'",
        )
        .bind(user_id)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    /// The user's URL and when it (and its secret) was set; never the secret.
    pub async fn endpoint(&self, user_id: UserId) -> Result<Option<(String, i64)>, ErrorCode> {
        let row = sqlx::query("SELECT url, created_at FROM webhook_endpoints WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.map(|row| {
            Ok((
                row.try_get("url").map_err(db_error)?,
                row.try_get("created_at").map_err(db_error)?,
            ))
        })
        .transpose()
    }

    /// Queues event `event_type` with `data` for the user's URL, to be sent at once by the
    /// next pass; nothing if the user has no URL. `data` must hold no secret.
    pub async fn enqueue(
        &self,
        user_id: UserId,
        event_type: &str,
        data: &serde_json::Value,
        now: i64,
    ) -> Result<(), ErrorCode> {
        self.enqueue_with_secret(user_id, event_type, data, None, now)
            .await
    }

    /// [`WebhookStore::enqueue`], and `secret` (an object: a sign-in link) added to `data`
    /// when it is sent. Until then it is kept sealed, bound to the delivery: the stored body
    /// never holds it.
    pub async fn enqueue_with_secret(
        &self,
        user_id: UserId,
        event_type: &str,
        data: &serde_json::Value,
        secret: Option<&serde_json::Value>,
        now: i64,
    ) -> Result<(), ErrorCode> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        self.enqueue_in(&mut conn, user_id, event_type, data, secret, now)
            .await
    }

    /// [`WebhookStore::enqueue_with_secret`] on `conn` (in the transaction of the event).
    pub(crate) async fn enqueue_in(
        &self,
        conn: &mut Conn,
        user_id: UserId,
        event_type: &str,
        data: &serde_json::Value,
        secret: Option<&serde_json::Value>,
        now: i64,
    ) -> Result<(), ErrorCode> {
        let id = format!("msg_{}", hex::encode(random_bytes::<16>()));
        let body = serde_json::json!({
            "type": event_type,
            "timestamp": rfc3339(now),
            "data": data,
        })
        .to_string();
        let sealed = secret.map(|secret| {
            self.secrets.seal(
                secret.to_string().as_bytes(),
                delivery_associated_data(&id).as_bytes(),
            )
        });
        let added = sqlx::query(
            "INSERT INTO webhook_deliveries (id, user_id, event_type, body, created_at, next_attempt_at, sealed_data)
             SELECT $1, user_id, $2, $3, $4, $5, $6 FROM webhook_endpoints WHERE user_id = $7",
        )
        .bind(&id)
        .bind(event_type)
        .bind(&body)
        .bind(now)
        .bind(now)
        .bind(sealed)
        .bind(user_id)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
        if added.rows_affected() > 0 {
            // The log keeps the latest deliveries only.
            sqlx::query(
                "DELETE FROM webhook_deliveries
                 WHERE user_id = $1 AND status != 'pending' AND id NOT IN (
                     SELECT id FROM webhook_deliveries WHERE user_id = $2
                     ORDER BY created_at DESC, rowid DESC LIMIT $3
                 )",
            )
            .bind(user_id)
            .bind(user_id)
            .bind(KEPT_PER_USER)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        }
        Ok(())
    }

    /// The user's latest `limit` deliveries, newest first.
    pub async fn deliveries(
        &self,
        user_id: UserId,
        limit: i64,
    ) -> Result<Vec<Delivery>, ErrorCode> {
        let rows = sqlx::query(
            "SELECT id, event_type, created_at, status, attempts, last_status, last_error,
                    delivered_at, next_attempt_at
             FROM webhook_deliveries WHERE user_id = $1
             ORDER BY created_at DESC, rowid DESC LIMIT $2",
        )
        .bind(user_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                let status: String = row.try_get("status").map_err(db_error)?;
                let last_status: Option<i64> = row.try_get("last_status").map_err(db_error)?;
                Ok(Delivery {
                    id: row.try_get("id").map_err(db_error)?,
                    event_type: row.try_get("event_type").map_err(db_error)?,
                    created_at: row.try_get("created_at").map_err(db_error)?,
                    status: DeliveryStatus::from_db(&status),
                    attempts: row.try_get("attempts").map_err(db_error)?,
                    last_status: last_status.and_then(|s| u16::try_from(s).ok()),
                    last_error: row.try_get("last_error").map_err(db_error)?,
                    delivered_at: row.try_get("delivered_at").map_err(db_error)?,
                    next_attempt_at: row.try_get("next_attempt_at").map_err(db_error)?,
                })
            })
            .collect()
    }

    /// Sends the deliveries due at `now` (leased to this store, all at once) and records each
    /// outcome; returns how many were attempted.
    pub async fn deliver_due(&self, now: i64) -> Result<usize, ErrorCode> {
        let claimed = sqlx::query(
            "UPDATE webhook_deliveries SET lease_until = $1, lease_owner = $2
             WHERE id IN (
                 SELECT id FROM webhook_deliveries
                 WHERE status = 'pending' AND next_attempt_at <= $3
                   AND (lease_until IS NULL OR lease_until < $4)
                 ORDER BY next_attempt_at LIMIT $5
             )
             -- Checked again on the row itself: on Postgres a concurrent claim that waited for
             -- this row's lock must see the lease just taken, not its subquery's old snapshot.
             AND (lease_until IS NULL OR lease_until < $4)
             RETURNING id, user_id, body, attempts, sealed_data",
        )
        .bind(now + LEASE_SECONDS)
        .bind(&*self.owner)
        .bind(now)
        .bind(now)
        .bind(BATCH)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let count = claimed.len();
        let mut sends = tokio::task::JoinSet::new();
        for row in claimed {
            let id: String = row.try_get("id").map_err(db_error)?;
            let user_id: UserId = row.try_get("user_id").map_err(db_error)?;
            let body: String = row.try_get("body").map_err(db_error)?;
            let sealed: Option<Vec<u8>> = row.try_get("sealed_data").map_err(db_error)?;
            let body = with_secret(&self.secrets, &id, body, sealed.as_deref());
            let attempts: i64 = row.try_get("attempts").map_err(db_error)?;
            let Some((url, key)) = self.signing_endpoint(user_id).await? else {
                self.give_up(&id, "no webhook URL").await?;
                continue;
            };
            let destinations = self.destinations.clone();
            sends.spawn(async move {
                let attempt = send(&destinations, &url, &key, &id, now, body).await;
                (id, attempts, attempt)
            });
        }
        while let Some(done) = sends.join_next().await {
            let Ok((id, attempts, attempt)) = done else {
                continue; // a panicked send: its lease runs out and it is tried again
            };
            self.record(&id, attempts + 1, &attempt, now).await?;
        }
        Ok(count)
    }

    /// The user's URL and key, if they have one that opens.
    async fn signing_endpoint(
        &self,
        user_id: UserId,
    ) -> Result<Option<(String, Vec<u8>)>, ErrorCode> {
        let row =
            sqlx::query("SELECT url, secret_sealed FROM webhook_endpoints WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_error)?;
        let Some(row) = row else { return Ok(None) };
        let sealed: Vec<u8> = row.try_get("secret_sealed").map_err(db_error)?;
        match self
            .secrets
            .open(&sealed, associated_data(user_id).as_bytes())
        {
            Ok(key) => Ok(Some((row.try_get("url").map_err(db_error)?, key))),
            Err(_) => {
                tracing::error!(user = user_id, "a webhook secret does not open");
                Ok(None)
            }
        }
    }

    async fn give_up(&self, id: &str, why: &str) -> Result<(), ErrorCode> {
        metrics::webhook_delivery("failed");
        sqlx::query(
            "UPDATE webhook_deliveries
             SET status = 'failed', next_attempt_at = NULL, last_error = $1,
                 lease_until = NULL, lease_owner = NULL
             WHERE id = $2 AND lease_owner = $3",
        )
        .bind(why)
        .bind(id)
        .bind(&*self.owner)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// Stores the outcome of attempt number `attempts` of delivery `id` made at `now`.
    async fn record(
        &self,
        id: &str,
        attempts: i64,
        attempt: &Attempt,
        now: i64,
    ) -> Result<(), ErrorCode> {
        let (status, error) = match attempt {
            Attempt::Answered(code) => (Some(i64::from(*code)), None),
            Attempt::NoAnswer(why) => (None, Some(*why)),
        };
        let delivered = matches!(attempt, Attempt::Answered(code) if (200..300).contains(code));
        let retry = usize::try_from(attempts - 1)
            .ok()
            .and_then(|i| RETRY_AFTER.get(i));
        let (state, next) = match (delivered, retry) {
            (true, _) => ("delivered", None),
            (false, Some(after)) => ("pending", Some(now + after)),
            (false, None) => ("failed", None),
        };
        metrics::webhook_delivery(match state {
            "pending" => "retrying",
            done => done,
        });
        if !delivered {
            tracing::info!(
                delivery = id,
                attempts,
                ?status,
                error,
                state,
                "a webhook was not delivered"
            );
        }
        sqlx::query(
            "UPDATE webhook_deliveries
             SET status = $1, attempts = $2, last_status = $3, last_error = $4, next_attempt_at = $5,
                 delivered_at = $6, lease_until = NULL, lease_owner = NULL
             WHERE id = $7 AND lease_owner = $8",
        )
        .bind(state)
        .bind(attempts)
        .bind(status)
        .bind(error)
        .bind(next)
        .bind(delivered.then_some(now))
        .bind(id)
        .bind(&*self.owner)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }
}

/// One signed POST, if `url` still goes where webhooks may (its name may resolve elsewhere
/// now); then only to the addresses just judged.
async fn send(
    destinations: &Destinations,
    url: &str,
    key: &[u8],
    id: &str,
    now: i64,
    body: String,
) -> Attempt {
    let Ok(parsed) = url::Url::parse(url) else {
        return Attempt::NoAnswer("not sent: the URL does not parse");
    };
    let checked = match tokio::time::timeout(ATTEMPT_TIMEOUT, destinations.check(&parsed)).await {
        Ok(Ok(checked)) => checked,
        Ok(Err(refusal)) => return Attempt::NoAnswer(refusal.delivery_words()),
        Err(_) => return Attempt::NoAnswer("timed out"),
    };
    let Ok(client) = webhook_client(checked.pin.as_ref()) else {
        return Attempt::NoAnswer("request failed");
    };
    let signature = sign(key, id, now, &body);
    let sent = client
        .post(url)
        .header("webhook-id", id)
        .header("webhook-timestamp", now.to_string())
        .header("webhook-signature", signature)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await;
    match sent {
        Ok(response) => Attempt::Answered(response.status().as_u16()),
        Err(e) if e.is_timeout() => Attempt::NoAnswer("timed out"),
        Err(e) if e.is_connect() => Attempt::NoAnswer("could not connect"),
        Err(_) => Attempt::NoAnswer("request failed"),
    }
}

impl WebhookStore {
    /// Sends the webhook deliveries due now; returns how many were attempted.
    pub async fn deliver_now(&self) -> Result<usize, ErrorCode> {
        self.deliver_due(self.clock.now()).await
    }

    /// Runs [`WebhookStore::deliver_now`] every `every` until the task is dropped.
    pub fn spawn_delivery(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match store.deliver_now().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(deliveries = n, "sent due webhooks"),
                    Err(code) => tracing::warn!(%code, "the webhook delivery pass failed"),
                }
            }
        })
    }
}

/// Which sealed webhook values a re-seal pass walks: the endpoints' signing secrets (bound to
/// their user) or the deliveries' sealed data (bound to the delivery; NULL when there is none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookSealed {
    Secrets,
    DeliveryData,
}

impl WebhookStore {
    /// One batch of a re-seal pass over `which` (`store/reseal.rs`).
    pub async fn reseal_batch(
        &self,
        which: WebhookSealed,
        pass: &mut crate::store::reseal::ResealPass,
        limit: usize,
    ) -> Result<usize, ErrorCode> {
        use crate::store::reseal::{reseal_batch, SealedColumn};
        match which {
            WebhookSealed::Secrets => {
                let column = SealedColumn {
                    table: "webhook_endpoints",
                    id: "user_id",
                    id_is_text: false,
                    column: "secret_sealed",
                    more_columns: "",
                };
                let aad =
                    |row: &sqlx::any::AnyRow| Ok(associated_data(row.try_get("id")?).into_bytes());
                reseal_batch(&self.pool, &self.secrets, &column, aad, pass, limit).await
            }
            WebhookSealed::DeliveryData => {
                let column = SealedColumn {
                    table: "webhook_deliveries",
                    id: "id",
                    id_is_text: true,
                    column: "sealed_data",
                    more_columns: "",
                };
                let aad = |row: &sqlx::any::AnyRow| {
                    let id: String = row.try_get("id")?;
                    Ok(delivery_associated_data(&id).into_bytes())
                };
                reseal_batch(&self.pool, &self.secrets, &column, aad, pass, limit).await
            }
        }
        .map_err(db_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::webhook_destination::TableResolver;
    use crate::test_support::{engine_in, engine_with, test_config};
    use crate::Engine;
    use std::sync::atomic::{AtomicU16, Ordering};
    use std::sync::Mutex;

    use axum::http::{HeaderMap, StatusCode};

    /// What a test receiver saw: headers and raw body of each request.
    type Seen = Arc<Mutex<Vec<(HeaderMap, String)>>>;

    /// An HTTP receiver on 127.0.0.1:0 answering `status` (changeable) to every POST.
    async fn receiver(status: u16) -> (String, Seen, Arc<AtomicU16>) {
        let seen: Seen = Arc::default();
        let answer = Arc::new(AtomicU16::new(status));
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post({
                let (seen, answer) = (seen.clone(), answer.clone());
                move |headers: HeaderMap, body: String| async move {
                    seen.lock().unwrap().push((headers, body));
                    StatusCode::from_u16(answer.load(Ordering::SeqCst)).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, seen, answer)
    }

    async fn user(engine: &Engine, email: &str) -> UserId {
        engine
            .register(email, "password-1-quiet-harbor", "password-1-quiet-harbor")
            .await
            .unwrap()
            .id
    }

    fn connected() -> serde_json::Value {
        serde_json::json!({"account_id": 7, "provider": "flameconnect", "name": "demo@flameconnect.test"})
    }

    fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
        headers.get(name).unwrap().to_str().unwrap()
    }

    /// `engine` looking host names up in a table (a public address for `example.org`), with
    /// `allow` as `STEPGATE_WEBHOOK_ALLOW`; nothing is ever sent to the public address.
    fn with_table(mut engine: Engine, allow: &str) -> (Engine, Arc<TableResolver>) {
        let table = Arc::new(TableResolver::default());
        table.set("example.org", &["93.184.215.14"]);
        let allow = WebhookAllow::parse(allow).unwrap();
        engine.webhooks = engine
            .webhooks
            .clone()
            .with_destinations(Destinations::with_resolver(allow, table.clone()));
        (engine, table)
    }

    #[test]
    fn the_signature_matches_the_standard_webhooks_test_vector() {
        // From the Standard Webhooks reference libraries' tests.
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            sign(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                r#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn timestamps_read_as_rfc_3339_in_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_798_761_599), "2026-12-31T23:59:59Z");
    }

    #[tokio::test]
    async fn only_http_urls_are_taken_and_each_save_makes_a_new_secret() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let (engine, _) = with_table(engine, "127.0.0.1");
        let user = user(&engine, "w@example.org").await;
        let hooks = engine.webhooks();
        let long = format!("https://example.org/{}", "a".repeat(MAX_FIELD_BYTES));
        for bad in [
            "",
            "example.org/hook",
            "ftp://example.org/",
            "javascript:alert(1)",
            "http://",
            &long,
        ] {
            assert_eq!(
                hooks.set_url(user, bad).await.err(),
                Some(ErrorCode::InvalidUrl),
                "{bad}"
            );
        }
        assert_eq!(hooks.endpoint(user).await.unwrap(), None);

        let first = hooks
            .set_url(user, " https://example.org/hook ")
            .await
            .unwrap();
        assert!(first.as_str().starts_with(SECRET_PREFIX));
        assert_eq!(secret_key(first.as_str()).unwrap().len(), 32);
        assert!(!format!("{first:?}").contains(&first.as_str()[6..]));
        assert_eq!(
            hooks.endpoint(user).await.unwrap(),
            Some(("https://example.org/hook".to_owned(), engine.now()))
        );
        let second = hooks.set_url(user, "http://127.0.0.1:9/x").await.unwrap();
        assert_ne!(first, second);
        assert_eq!(
            hooks.endpoint(user).await.unwrap().unwrap().0,
            "http://127.0.0.1:9/x"
        );

        hooks.remove(user).await.unwrap();
        assert_eq!(hooks.endpoint(user).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_user_without_a_url_enqueues_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let user = user(&engine, "n@example.org").await;
        engine
            .webhooks()
            .enqueue(user, "account.connected", &connected(), engine.now())
            .await
            .unwrap();
        assert!(engine
            .webhooks()
            .deliveries(user, 10)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(engine.deliver_webhooks_now().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn the_secret_is_not_stored_in_clear() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let (engine, _) = with_table(engine, "");
        let user = user(&engine, "s@example.org").await;
        let secret = engine
            .webhooks()
            .set_url(user, "https://example.org/h")
            .await
            .unwrap();
        let key = secret_key(secret.as_str()).unwrap();
        let bytes = crate::test_support::stored_bytes(engine.pool(), dir.path()).await;
        assert!(bytes
            .windows(16)
            .any(|w| w == b"https://example.org/h".get(..16).unwrap()));
        let encoded = &secret.as_str()[SECRET_PREFIX.len()..];
        assert!(!bytes
            .windows(encoded.len())
            .any(|w| w == encoded.as_bytes()));
        assert!(!bytes.windows(key.len()).any(|w| w == key.as_slice()));
    }

    #[tokio::test]
    async fn a_2xx_answer_delivers_signed_json_once() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let user = user(&engine, "d@example.org").await;
        let (url, seen, _) = receiver(204).await;
        let secret = engine.webhooks().set_url(user, &url).await.unwrap();
        let at = engine.now();
        engine
            .webhooks()
            .enqueue(user, "account.connected", &connected(), at)
            .await
            .unwrap();

        assert_eq!(engine.deliver_webhooks_now().await.unwrap(), 1);
        assert_eq!(engine.deliver_webhooks_now().await.unwrap(), 0, "sent once");
        let seen = seen.lock().unwrap().clone();
        let [(headers, body)] = seen.as_slice() else {
            panic!("one request: {seen:?}")
        };
        let id = header(headers, "webhook-id");
        assert!(id.starts_with("msg_"));
        assert_eq!(header(headers, "webhook-timestamp"), at.to_string());
        assert_eq!(header(headers, "content-type"), "application/json");
        // Checked independently of `sign`: HMAC-SHA256 over id.timestamp.body.
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&secret_key(secret.as_str()).unwrap()).unwrap();
        mac.update(format!("{id}.{at}.{body}").as_bytes());
        let expected = format!("v1,{}", BASE64.encode(&mac.finalize().into_bytes()));
        assert_eq!(header(headers, "webhook-signature"), expected);
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "account.connected", "timestamp": "2023-11-14T22:13:20Z", "data": connected()})
        );

        let log = engine.webhooks().deliveries(user, 10).await.unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].id, id);
        assert_eq!(log[0].event_type, "account.connected");
        assert_eq!(log[0].status, DeliveryStatus::Delivered);
        assert_eq!((log[0].attempts, log[0].last_status), (1, Some(204)));
        assert_eq!(
            (log[0].delivered_at, log[0].next_attempt_at),
            (Some(at), None)
        );
    }

    #[tokio::test]
    async fn a_500_is_retried_with_backoff_then_given_up() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, clock) = engine_in(&dir).await;
        let user = user(&engine, "r@example.org").await;
        let (url, seen, answer) = receiver(500).await;
        engine.webhooks().set_url(user, &url).await.unwrap();
        engine
            .webhooks()
            .enqueue(user, "account.removed", &connected(), engine.now())
            .await
            .unwrap();

        assert_eq!(engine.deliver_webhooks_now().await.unwrap(), 1);
        let log = &engine.webhooks().deliveries(user, 10).await.unwrap()[0];
        assert_eq!(
            (log.status, log.attempts, log.last_status),
            (DeliveryStatus::Pending, 1, Some(500))
        );
        assert_eq!(log.next_attempt_at, Some(engine.now() + 5));
        clock.advance(4);
        assert_eq!(
            engine.deliver_webhooks_now().await.unwrap(),
            0,
            "not before its time"
        );

        for (attempt, wait) in RETRY_AFTER.iter().enumerate() {
            let log = &engine.webhooks().deliveries(user, 10).await.unwrap()[0];
            assert_eq!(log.attempts, attempt as i64 + 1);
            clock.advance(*wait);
            assert_eq!(engine.deliver_webhooks_now().await.unwrap(), 1);
        }
        let log = &engine.webhooks().deliveries(user, 10).await.unwrap()[0];
        assert_eq!(
            (log.status, log.attempts, log.next_attempt_at),
            (DeliveryStatus::Failed, 7, None)
        );
        assert_eq!(seen.lock().unwrap().len(), 7);
        let ids: std::collections::HashSet<_> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|(h, _)| header(h, "webhook-id").to_owned())
            .collect();
        assert_eq!(ids.len(), 1, "every retry carries the same id");

        // A later event, answered 200 after one 500, is delivered on its retry.
        answer.store(500, Ordering::SeqCst);
        engine
            .webhooks()
            .enqueue(user, "account.connected", &connected(), engine.now())
            .await
            .unwrap();
        engine.deliver_webhooks_now().await.unwrap();
        answer.store(200, Ordering::SeqCst);
        clock.advance(5);
        engine.deliver_webhooks_now().await.unwrap();
        let log = &engine.webhooks().deliveries(user, 10).await.unwrap()[0];
        assert_eq!(
            (log.status, log.attempts, log.last_status),
            (DeliveryStatus::Delivered, 2, Some(200))
        );
    }

    #[tokio::test]
    async fn an_unreachable_url_is_retried() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, clock) = engine_in(&dir).await;
        let user = user(&engine, "u@example.org").await;
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", closed.local_addr().unwrap());
        drop(closed);
        engine.webhooks().set_url(user, &url).await.unwrap();
        engine
            .webhooks()
            .enqueue(user, "account.needs_sign_in", &connected(), engine.now())
            .await
            .unwrap();

        assert_eq!(engine.deliver_webhooks_now().await.unwrap(), 1);
        let log = &engine.webhooks().deliveries(user, 10).await.unwrap()[0];
        assert_eq!(
            (log.status, log.attempts, log.last_status),
            (DeliveryStatus::Pending, 1, None)
        );
        assert_eq!(log.last_error.as_deref(), Some("could not connect"));
        clock.advance(5);
        assert_eq!(engine.deliver_webhooks_now().await.unwrap(), 1);
        assert_eq!(
            engine.webhooks().deliveries(user, 10).await.unwrap()[0].attempts,
            2
        );

        engine.webhooks().remove(user).await.unwrap();
        let log = &engine.webhooks().deliveries(user, 10).await.unwrap()[0];
        assert_eq!(
            log.status,
            DeliveryStatus::Failed,
            "no URL, nothing more to try"
        );
        clock.advance(3600);
        assert_eq!(engine.deliver_webhooks_now().await.unwrap(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_workers_never_send_one_delivery_twice() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let user = user(&engine, "l@example.org").await;
        let (url, seen, _) = receiver(200).await;
        engine.webhooks().set_url(user, &url).await.unwrap();
        for _ in 0..20 {
            engine
                .webhooks()
                .enqueue(user, "account.connected", &connected(), engine.now())
                .await
                .unwrap();
        }
        let other = WebhookStore::new(
            engine.pool().clone(),
            engine.runner.secrets.clone(),
            engine.clock.clone(),
            WebhookAllow::parse("127.0.0.1").unwrap(),
        );
        let now = engine.now();
        let (a, b) = tokio::join!(engine.webhooks().deliver_due(now), other.deliver_due(now));
        assert_eq!(a.unwrap() + b.unwrap(), 20);
        let seen = seen.lock().unwrap();
        let ids: std::collections::HashSet<_> = seen
            .iter()
            .map(|(h, _)| header(h, "webhook-id").to_owned())
            .collect();
        assert_eq!((seen.len(), ids.len()), (20, 20));
    }

    #[tokio::test]
    async fn internal_addresses_are_refused_on_save_unless_the_admin_allows_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path()).await;
        config.webhook_allow = WebhookAllow::default();
        let (engine, _) = engine_with(config).await;
        let user = user(&engine, "p@example.org").await;
        let hooks = engine.webhooks();
        for refused in [
            "http://127.0.0.1:9/x",
            "http://localhost:8123/api/webhook/x",
            "http://10.0.0.5:8500/",
            "http://192.168.1.20:8123/api/webhook/x",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00:ec2::254]/latest/meta-data/",
            "http://[::ffff:127.0.0.1]:9/x",
            "http://[64:ff9b::a00:5]/",
            "http://100.64.0.1/",
            "http://0.0.0.0:9/",
            "http://[fe80::1]/",
        ] {
            assert_eq!(
                hooks.set_url(user, refused).await.err(),
                Some(ErrorCode::WebhookAddressRefused),
                "{refused}"
            );
        }
        assert_eq!(hooks.endpoint(user).await.unwrap(), None);

        // STEPGATE_WEBHOOK_ALLOW=192.168.1.20/32: the household's Home Assistant, nothing else.
        let (engine, table) = with_table(engine, "192.168.1.20/32 homeassistant.local");
        table.set("homeassistant.local", &["192.168.1.77"]);
        let hooks = engine.webhooks();
        assert_eq!(
            hooks
                .set_url(user, "https://missing.example/hook")
                .await
                .err(),
            Some(ErrorCode::WebhookHostNotFound)
        );
        hooks
            .set_url(user, "http://192.168.1.20:8123/api/webhook/stepgate")
            .await
            .unwrap();
        hooks
            .set_url(user, "http://homeassistant.local:8123/api/webhook/stepgate")
            .await
            .unwrap();
        assert_eq!(
            hooks.set_url(user, "http://192.168.1.21:8123/").await.err(),
            Some(ErrorCode::WebhookAddressRefused)
        );
        assert_eq!(
            hooks.endpoint(user).await.unwrap().unwrap().0,
            "http://homeassistant.local:8123/api/webhook/stepgate"
        );
    }

    #[tokio::test]
    async fn a_delivery_goes_to_the_address_judged_and_not_to_one_the_name_turned_into() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, clock) = engine_in(&dir).await;
        let (engine, table) = with_table(engine, "127.0.0.1");
        let user = user(&engine, "b@example.org").await;
        let (url, seen, _) = receiver(204).await;
        // `hooks.test` exists only in the table: the request reaching the receiver went to
        // the address the check found, not to a second lookup.
        let port = url::Url::parse(&url).unwrap().port().unwrap();
        table.set("hooks.test", &["127.0.0.1"]);
        engine
            .webhooks()
            .set_url(user, &format!("http://hooks.test:{port}/hook"))
            .await
            .unwrap();
        engine
            .webhooks()
            .enqueue(user, "account.connected", &connected(), engine.now())
            .await
            .unwrap();
        assert_eq!(engine.deliver_webhooks_now().await.unwrap(), 1);
        assert_eq!(seen.lock().unwrap().len(), 1);
        assert_eq!(
            engine.webhooks().deliveries(user, 10).await.unwrap()[0].status,
            DeliveryStatus::Delivered
        );

        // The name now resolves to the owner's network: nothing is sent, and the log says why
        // without anything a connection would have told.
        table.set("hooks.test", &["10.0.0.5"]);
        engine
            .webhooks()
            .enqueue(user, "account.removed", &connected(), engine.now())
            .await
            .unwrap();
        assert_eq!(engine.deliver_webhooks_now().await.unwrap(), 1);
        let log = &engine.webhooks().deliveries(user, 10).await.unwrap()[0];
        assert_eq!(
            (log.event_type.as_str(), log.status, log.last_status),
            ("account.removed", DeliveryStatus::Pending, None)
        );
        assert_eq!(
            log.last_error.as_deref(),
            Some("not sent: the host resolves to a private address")
        );
        assert_eq!(seen.lock().unwrap().len(), 1, "nothing more was sent");
        // Back to the receiver: the retry goes out.
        table.set("hooks.test", &["127.0.0.1"]);
        clock.advance(RETRY_AFTER[0]);
        assert_eq!(engine.deliver_webhooks_now().await.unwrap(), 1);
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_redirect_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let user = user(&engine, "x@example.org").await;
        let (target, seen, _) = receiver(204).await;
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move || async move {
                (StatusCode::TEMPORARY_REDIRECT, [("location", target)])
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        engine.webhooks().set_url(user, &url).await.unwrap();
        engine
            .webhooks()
            .enqueue(user, "account.connected", &connected(), engine.now())
            .await
            .unwrap();
        assert_eq!(engine.deliver_webhooks_now().await.unwrap(), 1);
        let log = &engine.webhooks().deliveries(user, 10).await.unwrap()[0];
        assert_eq!(
            (log.status, log.last_status),
            (DeliveryStatus::Pending, Some(307))
        );
        assert!(
            seen.lock().unwrap().is_empty(),
            "the redirect's target saw nothing"
        );
    }
}
