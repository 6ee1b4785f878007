//! [`Engine`]: the one object the app talks to. It owns the database, the stores and the
//! providers, and runs every flow by the same rules. Local accounts (registering, signing in)
//! are in `local_accounts.rs`, the flow runner in `flow_runner.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::store::db::Pool;

use crate::accounts::store::{AccountStore, ConnectedAccount};
use crate::apps::api_keys::ApiKeyStore;
use crate::base::clock::{Clock, SystemClock};
use crate::base::crypto::SecretBox;
use crate::base::secrets::SecretKey;
use crate::flows::flow::DEFAULT_FLOW_TTL;
use crate::flows::redis_store::RedisFlowStore;
use crate::flows::store::{FlowStore, SqliteFlowStore};
use crate::flows::upstream::{UpstreamMap, Upstreams, DEFAULT_STEP_TIMEOUT};
use crate::providers::{local::LocalProvider, AnyProvider, Input, Provider};
use crate::second_factor::totp_site::TotpSite;
use crate::second_factor::two_factor::TwoFactor;
use crate::sign_in::password::PasswordHasher;
use crate::sign_in::sessions::{SessionStore, SessionToken};
use crate::sign_in::throttle::SignInThrottle;
use crate::sign_in::users::{User, UserId, UserStore};
use crate::store::redis::Redis;
use crate::view::FlowView;
use crate::{store::db, ErrorCode};

/// The Redis key prefix when `STEPGATE_REDIS_PREFIX` does not name one.
pub const DEFAULT_REDIS_PREFIX: &str = "stepgate:";

/// The longest value any form field may carry; longer input is refused before any work.
pub const MAX_FIELD_BYTES: usize = 1024;

pub struct EngineConfig {
    /// `sqlite://…` or `postgres://…` URL of the database.
    pub database_url: String,
    pub flow_ttl: Duration,
    /// Password hashes allowed to run at once.
    pub hash_slots: usize,
    /// How long a sign-in waits for a hashing slot before it is told `server_busy`.
    pub hash_queue_wait: Duration,
    /// Seals secrets at rest (TOTP seeds).
    pub secret_key: SecretKey,
    /// The web TOTP service the second factor links to.
    pub totp_site: TotpSite,
    /// Where third-party origins are reached (`STEPGATE_UPSTREAMS`); empty: the real hosts.
    pub upstreams: UpstreamMap,
    /// How long one upstream request may take.
    pub step_timeout: Duration,
    /// Seconds between two health checks of one account started by page views.
    pub account_check_interval: i64,
    /// `redis://…`: pending flows, throttle counters and renewal leases live there instead of
    /// in the database (several instances sharing hot state). `None`: the database keeps them.
    pub redis_url: Option<String>,
    /// What every Redis key starts with (several Stepgates, or tests, may share one Redis).
    pub redis_prefix: String,
    /// `STEPGATE_WEBHOOK_ALLOW`: internal addresses and host names webhooks may reach all the
    /// same (`webhook_destination.rs`). Empty: none.
    pub webhook_allow: crate::apps::webhook_destination::WebhookAllow,
    /// `STEPGATE_SESSION_IDLE`: seconds a session may go unused before it ends (besides its
    /// 12-hour lifetime).
    pub session_idle: i64,
}

impl EngineConfig {
    pub fn new(
        database_url: impl Into<String>,
        secret_key: SecretKey,
        totp_site: TotpSite,
    ) -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Self {
            database_url: database_url.into(),
            flow_ttl: DEFAULT_FLOW_TTL,
            hash_slots: cores.max(2),
            hash_queue_wait: crate::sign_in::password::DEFAULT_QUEUE_WAIT,
            secret_key,
            totp_site,
            upstreams: UpstreamMap::default(),
            step_timeout: DEFAULT_STEP_TIMEOUT,
            account_check_interval: crate::accounts::health::DEFAULT_CHECK_INTERVAL,
            redis_url: None,
            redis_prefix: DEFAULT_REDIS_PREFIX.into(),
            webhook_allow: Default::default(),
            session_idle: crate::sign_in::sessions::DEFAULT_IDLE_SECONDS,
        }
    }
}

/// What a finished flow produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// A local account proved who it is: the app opens a session for it.
    /// The session is open already: the app sets its cookie. (The engine opens it so that
    /// completing a flow and opening its session cannot come apart in a crash.)
    SignedIn {
        user_id: UserId,
        session: SessionToken,
    },
    /// A third-party account was connected (and stored).
    Connected(ConnectedAccount),
    /// A connected account was signed in again: its secrets were replaced in place.
    Reauthenticated(ConnectedAccount),
}

/// Where a flow stands after a step.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    Next(FlowView),
    Done(Completion),
}

#[derive(Clone)]
pub struct Engine {
    pub(crate) pool: Pool,
    pub(crate) flows: Arc<dyn FlowStore>,
    pub(crate) users: UserStore,
    pub(crate) sessions: SessionStore,
    pub(crate) accounts: AccountStore,
    api_keys: ApiKeyStore,
    pub(crate) hasher: PasswordHasher,
    two_factor: TwoFactor,
    pub(crate) throttle: SignInThrottle,
    pub(crate) providers: Arc<HashMap<&'static str, Arc<dyn AnyProvider>>>,
    /// The registered third-party providers as (name, title), in the picker's order.
    pub(crate) connectable: Arc<Vec<(&'static str, &'static str)>>,
    pub(crate) upstreams: Upstreams,
    /// Seals flow state (bound to the flow id).
    pub(crate) secrets: SecretBox,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) flow_ttl: Duration,
    /// See [`EngineConfig::account_check_interval`].
    pub(crate) check_interval: i64,
    /// This process's name as a renewal lease holder (random per engine).
    pub(crate) worker_id: Arc<str>,
    /// Shared hot state when `STEPGATE_REDIS_URL` is set (also the app API's rate buckets).
    pub(crate) redis: Option<Redis>,
    /// One lock per account for renewals wanted now (see `upkeep.rs`).
    pub(crate) renewal_locks: crate::accounts::upkeep::RenewalLocks,
    /// The users' webhook URLs and deliveries (see `webhooks.rs`).
    pub(crate) webhooks: crate::apps::webhooks::WebhookStore,
    /// What happened to each connected account (see `events.rs`).
    pub(crate) audit: crate::apps::events::AuditLog,
}

pub(crate) fn check_field_sizes(input: &Input) -> Result<(), ErrorCode> {
    if input.values().any(|v| v.len() > MAX_FIELD_BYTES) {
        return Err(ErrorCode::FieldTooLong);
    }
    Ok(())
}

impl Engine {
    pub async fn open(config: EngineConfig) -> Result<Engine, sqlx::Error> {
        Self::open_with_clock(config, Arc::new(SystemClock)).await
    }

    pub async fn open_with_clock(
        config: EngineConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Engine, sqlx::Error> {
        let pool = db::connect(&config.database_url).await?;
        // With Redis, what is short-lived and hot lives there (pending flows, throttle and
        // back-off counters, renewal leases) so instances share it; without, the database.
        let redis = match &config.redis_url {
            Some(url) => Some(Redis::connect_for_engine(url, &config.redis_prefix).await?),
            None => None,
        };
        let flows: Arc<dyn FlowStore> = match &redis {
            Some(redis) => Arc::new(RedisFlowStore::new(redis.clone(), clock.clone())),
            None => Arc::new(SqliteFlowStore::new(pool.clone())),
        };
        let users = UserStore::new(pool.clone());
        let hasher = PasswordHasher::new(config.hash_slots).with_queue_wait(config.hash_queue_wait);
        let secrets = SecretBox::new(&config.secret_key);
        let two_factor = TwoFactor::new(pool.clone(), secrets.clone(), config.totp_site)
            .with_redis(redis.clone());
        let local: Arc<dyn AnyProvider> = Arc::new(LocalProvider::new(
            users.clone(),
            hasher.clone(),
            two_factor.clone(),
        ));
        let connectable = crate::providers::connectable();
        let picker = connectable.iter().map(|p| (p.name(), p.title())).collect();
        let mut providers = HashMap::from([(local.name(), local)]);
        providers.extend(connectable.into_iter().map(|p| (p.name(), p)));
        Ok(Engine {
            flows,
            sessions: SessionStore::new(pool.clone()).with_idle(config.session_idle),
            throttle: SignInThrottle::new(pool.clone()).with_redis(redis.clone()),
            accounts: AccountStore::new(pool.clone(), secrets.clone()),
            api_keys: ApiKeyStore::new(pool.clone(), clock.clone()),
            webhooks: crate::apps::webhooks::WebhookStore::new(
                pool.clone(),
                secrets.clone(),
                clock.clone(),
                config.webhook_allow,
            ),
            upstreams: Upstreams::new(config.upstreams, config.step_timeout),
            secrets,
            users,
            hasher,
            two_factor,
            providers: Arc::new(providers),
            connectable: Arc::new(picker),
            clock,
            flow_ttl: config.flow_ttl,
            check_interval: config.account_check_interval,
            worker_id: crate::flows::flow::FlowId::random().to_string().into(),
            redis: redis.clone(),
            renewal_locks: crate::accounts::upkeep::RenewalLocks::new(redis),
            audit: crate::apps::events::AuditLog::new(pool.clone()),
            pool,
        })
    }

    /// Adds (or replaces) a provider; the engine runs its flows like every other's.
    pub fn with_provider(mut self, provider: impl Provider) -> Engine {
        let provider: Arc<dyn AnyProvider> = Arc::new(provider);
        let mut providers = (*self.providers).clone();
        providers.insert(provider.name(), provider);
        self.providers = Arc::new(providers);
        self
    }

    /// The connected accounts.
    pub fn accounts(&self) -> &AccountStore {
        &self.accounts
    }

    /// The API keys of the users' own apps.
    pub fn api_keys(&self) -> &ApiKeyStore {
        &self.api_keys
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn two_factor(&self) -> &TwoFactor {
        &self.two_factor
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// Opens a new session for `user_id`: always a fresh token (ASVS 3.2.1).
    pub async fn open_session(&self, user_id: UserId) -> Result<SessionToken, ErrorCode> {
        self.sessions.create(user_id, self.clock.now()).await
    }

    pub async fn session_user(&self, token: &SessionToken) -> Result<Option<User>, ErrorCode> {
        self.sessions.user_of(token, self.clock.now()).await
    }

    pub async fn close_session(&self, token: &SessionToken) -> Result<(), ErrorCode> {
        self.sessions.delete(token).await
    }

    /// Drops expired flows and sessions; the server calls this every minute.
    pub async fn purge_expired(&self) -> Result<(u64, u64), ErrorCode> {
        let now = self.clock.now();
        let flows = self.flows.purge_expired(now).await?;
        self.two_factor.purge_expired(now).await?;
        self.throttle.purge_expired(now).await?;
        let sessions = self.sessions.purge_expired(now).await?;
        Ok((flows, sessions))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::engine_in;

    #[tokio::test]
    async fn sessions_are_fresh_tokens_that_end_when_closed() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, clock) = engine_in(&dir).await;
        let user = engine
            .register(
                "s@example.org",
                "password-1-quiet-harbor",
                "password-1-quiet-harbor",
            )
            .await
            .unwrap();
        let first = engine.open_session(user.id).await.unwrap();
        let second = engine.open_session(user.id).await.unwrap();
        assert_ne!(first, second);
        assert_eq!(
            engine.session_user(&first).await.unwrap(),
            Some(user.clone())
        );

        engine.close_session(&first).await.unwrap();
        assert_eq!(engine.session_user(&first).await.unwrap(), None);
        assert_eq!(engine.session_user(&second).await.unwrap(), Some(user));

        clock.advance(crate::sign_in::sessions::SESSION_TTL_SECONDS);
        assert_eq!(
            engine.session_user(&second).await.unwrap(),
            None,
            "sessions expire"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_closed_session_is_refused_on_every_pooled_connection() {
        // Sign-out must hold on every pooled connection, not only on the one that deleted the
        // row (a connection with a stale read snapshot would still see the session).
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let user = engine
            .register(
                "pool@example.org",
                "password-1-quiet-harbor",
                "password-1-quiet-harbor",
            )
            .await
            .unwrap();
        for _ in 0..5 {
            let token = engine.open_session(user.id).await.unwrap();
            let lookups = |engine: Engine, token: SessionToken| async move {
                let tasks: Vec<_> = (0..32)
                    .map(|_| {
                        let (engine, token) = (engine.clone(), token.clone());
                        tokio::spawn(
                            async move { engine.session_user(&token).await.unwrap().is_some() },
                        )
                    })
                    .collect();
                let mut found = Vec::new();
                for t in tasks {
                    found.push(t.await.unwrap());
                }
                found
            };
            assert!(lookups(engine.clone(), token.clone())
                .await
                .iter()
                .all(|&f| f));
            engine.close_session(&token).await.unwrap();
            assert!(lookups(engine.clone(), token.clone())
                .await
                .iter()
                .all(|&f| !f));
        }
    }
}
