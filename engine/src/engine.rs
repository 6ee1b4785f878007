//! [`Engine`]: the one facade the app and the server call. [`Engine::open`] builds each
//! concern's service once (choosing, once, where hot state lives: the database or Redis), and
//! every method here is a few lines that hand the call to the service that owns it. Nothing
//! below this file imports it; `engine/README.md` maps the services' folders.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::accounts::app_credentials::AppCredentials;
use crate::accounts::health::AccountHealth;
use crate::accounts::leases::{DatabaseLeaseOnly, RedisLeases, RenewalLocks, SharedLeases};
use crate::accounts::proxy::{ApiProxy, ProxyAnswer, ProxyRequest};
use crate::accounts::sign_in_links::{
    SignInLinkMade, SignInLinkSummary, SignInLinkTicket, SignInLinks,
};
use crate::accounts::store::{AccountStore, CheckOutcome, ConnectedAccount};
use crate::accounts::upkeep::Upkeep;
use crate::apps::api_keys::{ApiCaller, ApiKey, ApiKeySecret, ApiKeyStore};
use crate::apps::api_rate::{ApiRateBuckets, MemoryApiRate, RedisApiRate};
use crate::apps::events::{AccountEvent, AccountEvents, AuditEntry, AuditLog};
use crate::apps::read_counts::ReadCounts;
use crate::apps::webhooks::{Delivery, WebhookSealed, WebhookSecret, WebhookStore};
use crate::base::clock::{Clock, SystemClock};
use crate::base::crypto::SecretBox;
use crate::base::secrets::Keyring;
use crate::flows::flow::{FlowId, DEFAULT_FLOW_TTL};
use crate::flows::redis_store::RedisFlowStore;
use crate::flows::runner::{Completion, FlowRunner, Progress};
use crate::flows::sign_in_link_flow::{SignInLinkFlows, SignInLinkPage};
use crate::flows::store::{FlowStore, SqliteFlowStore};
use crate::flows::upstream::{UpstreamMap, Upstreams, DEFAULT_STEP_TIMEOUT};
use crate::providers::{
    local::LocalProvider, AnyProvider, Input, Provider, ProviderRegistry, Purpose, StepError,
};
use crate::second_factor::attempts::{RedisSecondFactorCounts, SecondFactorAttempts};
use crate::second_factor::enrolment::{AppEnrollment, RegistrationCallback};
use crate::second_factor::passkeys::{self, PasskeyRegistrationStart, PasskeySummary, Passkeys};
use crate::second_factor::recovery_codes::RecoveryCodes;
use crate::second_factor::settings::SecondFactorSettings;
use crate::second_factor::totp_site::TotpSite;
use crate::second_factor::two_factor::{SeedTable, TotpStatus, TwoFactor};
use crate::sign_in::account_security::AccountSecurity;
use crate::sign_in::admin::{AccountRow, Admin, AdminAuditEntry};
use crate::sign_in::invites::{InviteSummary, NewInvite};
use crate::sign_in::local_accounts::{LocalAccounts, SignInRefusal};
use crate::sign_in::password::PasswordHasher;
use crate::sign_in::registration::{Registration, SignUp, SignUpRefusal, SignedUp};
use crate::sign_in::session_list::{SessionInfo, Sessions};
use crate::sign_in::sessions::{SessionStore, SessionToken};
use crate::sign_in::sudo::{Sudo, SudoState};
use crate::sign_in::throttle::SignInThrottle;
use crate::sign_in::throttle_counters::{
    DatabaseThrottleCounters, RedisThrottleCounters, ThrottleCounters,
};
use crate::sign_in::users::{User, UserId, UserStore};
use crate::store::db::{self, Pool};
use crate::store::redis::Redis;
use crate::store::reseal::{ResealCount, ResealPass, SealedKind, SealedReport};
use crate::view::{FlowView, StepView};
use crate::ErrorCode;

/// The Redis key prefix when `STEPGATE_REDIS_PREFIX` does not name one.
pub const DEFAULT_REDIS_PREFIX: &str = "stepgate:";

pub struct EngineConfig {
    /// `sqlite://…` or `postgres://…` URL of the database.
    pub database_url: String,
    pub flow_ttl: Duration,
    /// Password hashes allowed to run at once.
    pub hash_slots: usize,
    /// How long a sign-in waits for a hashing slot before it is told `server_busy`.
    pub hash_queue_wait: Duration,
    /// Seal secrets at rest (TOTP seeds, accounts' tokens, flow state…): the newest seals,
    /// every one opens. A ring read from a key file is read again when a value names a key it
    /// lacks.
    pub keys: Keyring,
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
    /// same (`apps/webhook_destination.rs`). Empty: none.
    pub webhook_allow: crate::apps::webhook_destination::WebhookAllow,
    /// `STEPGATE_SESSION_IDLE`: seconds a session may go unused before it ends (besides its
    /// 12-hour lifetime).
    pub session_idle: i64,
    /// `STEPGATE_PUBLIC_URL`: where browsers reach Stepgate. Its host is the passkeys' relying
    /// party; with an IP address (or none) passkeys are off (WebAuthn refuses addresses).
    pub public_url: Option<String>,
    /// How many renewals run at once (`STEPGATE_UPKEEP_CONCURRENCY`), per provider too.
    pub upkeep_limits: crate::accounts::upkeep::UpkeepLimits,
}

impl EngineConfig {
    pub fn new(
        database_url: impl Into<String>,
        keys: impl Into<Keyring>,
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
            keys: keys.into(),
            totp_site,
            upstreams: UpstreamMap::default(),
            step_timeout: DEFAULT_STEP_TIMEOUT,
            account_check_interval: crate::accounts::health::DEFAULT_CHECK_INTERVAL,
            redis_url: None,
            redis_prefix: DEFAULT_REDIS_PREFIX.into(),
            webhook_allow: Default::default(),
            session_idle: crate::sign_in::sessions::DEFAULT_IDLE_SECONDS,
            public_url: None,
            upkeep_limits: Default::default(),
        }
    }
}

/// Where hot state lives, chosen once in [`Engine::open`]: every instance's share in Redis
/// (`STEPGATE_REDIS_URL`), or the database's.
struct HotState {
    flows: Arc<dyn FlowStore>,
    throttle: Arc<dyn ThrottleCounters>,
    second_factor: SecondFactorAttempts,
    leases: Arc<dyn SharedLeases>,
    api_rate: Arc<dyn ApiRateBuckets>,
}

impl HotState {
    fn in_redis(redis: Redis, clock: Arc<dyn Clock>) -> Self {
        Self {
            flows: Arc::new(RedisFlowStore::new(redis.clone(), clock)),
            throttle: Arc::new(RedisThrottleCounters::new(redis.clone())),
            second_factor: SecondFactorAttempts::new(Arc::new(RedisSecondFactorCounts::new(
                redis.clone(),
            ))),
            leases: Arc::new(RedisLeases::new(redis.clone())),
            api_rate: Arc::new(RedisApiRate::new(redis)),
        }
    }

    fn in_database(pool: &Pool) -> Self {
        Self {
            flows: Arc::new(SqliteFlowStore::new(pool.clone())),
            throttle: Arc::new(DatabaseThrottleCounters::new(pool.clone())),
            second_factor: SecondFactorAttempts::in_database(pool.clone()),
            leases: Arc::new(DatabaseLeaseOnly),
            // One instance: its buckets are exact in memory.
            api_rate: Arc::new(MemoryApiRate::default()),
        }
    }
}

#[derive(Clone)]
pub struct Engine {
    pub(crate) pool: Pool,
    /// The Redis hot state lives in, when there is one (readiness looks at it).
    redis: Option<Redis>,
    pub(crate) clock: Arc<dyn Clock>,
    providers: ProviderRegistry,
    pub(crate) flows: Arc<dyn FlowStore>,
    session_store: SessionStore,
    pub(crate) accounts: AccountStore,
    api_keys: ApiKeyStore,
    api_rate: Arc<dyn ApiRateBuckets>,
    pub(crate) webhooks: WebhookStore,
    two_factor: TwoFactor,
    throttle: SignInThrottle,
    /// Every store's sealing keys (one ring, shared): the re-seal walks them all with it.
    secrets: SecretBox,
    // The services, one per concern. Behind `Arc`s: they hold each other's clones, and an
    // `Engine` is cloned into every request's futures, which must stay small.
    pub(crate) runner: Arc<FlowRunner>,
    pub(crate) local_accounts: Arc<LocalAccounts>,
    pub(crate) registration: Arc<Registration>,
    pub(crate) session_list: Arc<Sessions>,
    pub(crate) sudo: Arc<Sudo>,
    pub(crate) account_security: Arc<AccountSecurity>,
    pub(crate) admin: Arc<Admin>,
    pub(crate) second_factor: Arc<SecondFactorSettings>,
    pub(crate) events: Arc<AccountEvents>,
    pub(crate) health: Arc<AccountHealth>,
    pub(crate) upkeep: Arc<Upkeep>,
    pub(crate) sign_in_links: Arc<SignInLinks>,
    pub(crate) link_flows: Arc<SignInLinkFlows>,
    pub(crate) app_credentials: Arc<AppCredentials>,
    pub(crate) proxy: Arc<ApiProxy>,
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
        // back-off counters, renewal leases, API rate buckets) so instances share it; without,
        // the database (and memory for the API's buckets). Chosen here, once.
        let redis = match &config.redis_url {
            Some(url) => Some(Redis::connect_for_engine(url, &config.redis_prefix).await?),
            None => None,
        };
        let hot = match &redis {
            Some(redis) => HotState::in_redis(redis.clone(), clock.clone()),
            None => HotState::in_database(&pool),
        };
        let users = UserStore::new(pool.clone());
        let writes = crate::store::db::Writes::new(&pool);
        let hasher = PasswordHasher::new(config.hash_slots).with_queue_wait(config.hash_queue_wait);
        let secrets = SecretBox::with_keyring(config.keys);
        crate::store::key_check::verify_or_record(&pool, &secrets, clock.now())
            .await
            .map_err(|e| match e {
                crate::store::key_check::KeyCheckError::Database(e) => e,
                wrong => sqlx::Error::Configuration(wrong.to_string().into()),
            })?;
        let two_factor = TwoFactor::new(pool.clone(), secrets.clone(), config.totp_site)
            .with_attempts(hot.second_factor);
        let passkeys = Passkeys::new(
            pool.clone(),
            secrets.clone(),
            passkeys::relying_party(config.public_url.as_deref()),
            two_factor.attempts.clone(),
        );
        let throttle = SignInThrottle::new(hot.throttle);
        let session_store = SessionStore::new(pool.clone()).with_idle(config.session_idle);
        let accounts = AccountStore::new(pool.clone(), secrets.clone());
        let webhooks = WebhookStore::new(
            pool.clone(),
            secrets.clone(),
            clock.clone(),
            config.webhook_allow,
        );
        let sign_in_links = SignInLinks::new(
            pool.clone(),
            clock.clone(),
            &secrets,
            accounts.clone(),
            webhooks.clone(),
            config.public_url.clone(),
        );
        let upstreams = Upstreams::new(config.upstreams, config.step_timeout);
        let providers = ProviderRegistry::new(Arc::new(LocalProvider::new(
            users.clone(),
            hasher.clone(),
            two_factor.clone(),
            passkeys.clone(),
        )));

        let session_list = Sessions {
            pool: pool.clone(),
            sessions: session_store.clone(),
            clock: clock.clone(),
        };
        let admin = Admin {
            pool: pool.clone(),
            sessions: session_store.clone(),
            clock: clock.clone(),
        };
        let events = AccountEvents {
            accounts: accounts.clone(),
            audit: AuditLog::new(pool.clone()),
            webhooks: webhooks.clone(),
            clock: clock.clone(),
            sign_in_links: Some(Arc::new(sign_in_links.clone())),
            reads: ReadCounts::new(pool.clone(), writes.clone()),
        };
        let upkeep = Upkeep {
            accounts: accounts.clone(),
            providers: providers.clone(),
            upstreams: upstreams.clone(),
            events: events.clone(),
            clock: clock.clone(),
            renewal_locks: RenewalLocks::new(hot.leases),
            worker_id: FlowId::random().to_string().into(),
            limits: config.upkeep_limits,
            writes: writes.clone(),
            queued_outcomes: Default::default(),
            #[cfg(test)]
            batches_stored: Default::default(),
        };
        let runner = FlowRunner {
            writes: writes.clone(),
            flows: hot.flows.clone(),
            providers: providers.clone(),
            upstreams: upstreams.clone(),
            secrets: secrets.clone(),
            clock: clock.clone(),
            flow_ttl: config.flow_ttl,
            accounts: accounts.clone(),
            sessions: session_store.clone(),
            events: events.clone(),
            upkeep: upkeep.clone(),
            admin: admin.clone(),
            sign_in_links: sign_in_links.clone(),
        };
        let sudo = Sudo {
            sessions: session_store.clone(),
            users: users.clone(),
            hasher: hasher.clone(),
            throttle: throttle.clone(),
            two_factor: two_factor.clone(),
            clock: clock.clone(),
        };
        Ok(Engine {
            link_flows: Arc::new(SignInLinkFlows {
                links: sign_in_links.clone(),
                runner: runner.clone(),
            }),
            sign_in_links: Arc::new(sign_in_links),
            local_accounts: Arc::new(LocalAccounts {
                users: users.clone(),
                hasher: hasher.clone(),
                throttle: throttle.clone(),
                clock: clock.clone(),
                runner: runner.clone(),
            }),
            registration: Arc::new(Registration {
                pool: pool.clone(),
                users: users.clone(),
                hasher: hasher.clone(),
                throttle: throttle.clone(),
                clock: clock.clone(),
            }),
            account_security: Arc::new(AccountSecurity {
                pool: pool.clone(),
                users,
                hasher,
                sudo: sudo.clone(),
                sessions: session_list.clone(),
                two_factor: two_factor.clone(),
                passkeys: passkeys.clone(),
                clock: clock.clone(),
            }),
            second_factor: Arc::new(SecondFactorSettings {
                two_factor: two_factor.clone(),
                passkeys,
                sessions: session_list.clone(),
                clock: clock.clone(),
            }),
            proxy: Arc::new(ApiProxy {
                upkeep: upkeep.clone(),
                events: events.clone(),
                upstreams: upstreams.clone(),
            }),
            health: Arc::new(AccountHealth {
                accounts: accounts.clone(),
                providers: providers.clone(),
                upstreams,
                events: events.clone(),
                clock: clock.clone(),
                check_interval: config.account_check_interval,
            }),
            app_credentials: Arc::new(AppCredentials {
                upkeep: upkeep.clone(),
                events: events.clone(),
            }),
            flows: hot.flows,
            api_rate: hot.api_rate,
            api_keys: ApiKeyStore::new(pool.clone(), clock.clone()),
            runner: Arc::new(runner),
            sudo: Arc::new(sudo),
            session_list: Arc::new(session_list),
            admin: Arc::new(admin),
            events: Arc::new(events),
            upkeep: Arc::new(upkeep),
            session_store,
            accounts,
            webhooks,
            two_factor,
            throttle,
            providers,
            clock,
            pool,
            redis,
            secrets,
        })
    }

    /// Adds (or replaces) a provider; the engine (and its clones) run its flows like every
    /// other's.
    pub fn with_provider(self, provider: impl Provider) -> Engine {
        self.providers
            .add(Arc::new(provider) as Arc<dyn AnyProvider>);
        self
    }

    /// The connected accounts' store, for tools and tests (the app calls the methods below).
    pub fn accounts(&self) -> &AccountStore {
        &self.accounts
    }

    /// The API keys' store, for tools and tests.
    pub fn api_keys(&self) -> &ApiKeyStore {
        &self.api_keys
    }

    /// The database, for tools (loadgen seeds and checks through it) and tests.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Whether this instance can serve now: the database (and its migrations) and Redis, each
    /// looked at within a bound (`/health/ready`).
    pub async fn readiness(&self) -> crate::store::readiness::Readiness {
        crate::store::readiness::look(&self.pool, self.redis.as_ref()).await
    }

    /// The second factor's store, for tools and tests.
    pub fn two_factor(&self) -> &TwoFactor {
        &self.two_factor
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    // Keys

    /// The keys the engine seals and opens with now, newest first.
    pub fn keyring(&self) -> Keyring {
        self.secrets.keyring()
    }

    /// Seals every sealed value again under the newest key, kind after kind, in batches of
    /// `batch` (each its own short transaction; values written meanwhile are left alone), and
    /// calls `progress` after each batch with the kind's counts so far. Stopped at any point,
    /// a new call goes on where it stopped (what is done is skipped). Ends with the counts per
    /// kind; [`Engine::sealed_with_old_keys`] then tells whether an old key is still needed.
    pub async fn reseal_all(
        &self,
        batch: usize,
        mut progress: impl FnMut(SealedKind, &ResealCount) + Send,
    ) -> Result<SealedReport, ErrorCode> {
        self.walk_sealed(batch.max(1), false, &mut progress).await
    }

    /// What is still sealed under a key older than the newest, per kind (nothing written):
    /// when [`SealedReport::old_keys_unused`], the older keys may be dropped from the ring.
    pub async fn sealed_with_old_keys(&self) -> Result<SealedReport, ErrorCode> {
        self.walk_sealed(500, true, &mut |_, _| {}).await
    }

    async fn walk_sealed(
        &self,
        batch: usize,
        check_only: bool,
        progress: &mut (dyn FnMut(SealedKind, &ResealCount) + Send),
    ) -> Result<SealedReport, ErrorCode> {
        let mut report = SealedReport::default();
        for kind in SealedKind::ALL {
            let mut pass = if check_only {
                ResealPass::check()
            } else {
                ResealPass::new()
            };
            while !pass.is_done() {
                self.reseal_batch(kind, &mut pass, batch).await?;
                progress(kind, &pass.count);
            }
            report.kinds.push((kind, pass.count));
        }
        Ok(report)
    }

    /// One batch of `pass` over `kind`, by the store that owns it.
    async fn reseal_batch(
        &self,
        kind: SealedKind,
        pass: &mut ResealPass,
        limit: usize,
    ) -> Result<usize, ErrorCode> {
        match kind {
            SealedKind::KeyCheck => {
                crate::store::key_check::reseal_batch(&self.pool, &self.secrets, pass, limit)
                    .await
                    .map_err(|e| {
                        tracing::error!(error = %e, "re-sealing the key check failed");
                        ErrorCode::Unknown
                    })
            }
            SealedKind::TotpSeeds => {
                self.two_factor
                    .reseal_batch(SeedTable::Enabled, pass, limit)
                    .await
            }
            SealedKind::TotpSetups => {
                self.two_factor
                    .reseal_batch(SeedTable::Pending, pass, limit)
                    .await
            }
            SealedKind::AccountSecrets => self.accounts.reseal_batch(pass, limit).await,
            SealedKind::WebhookSecrets => {
                self.webhooks
                    .reseal_batch(WebhookSealed::Secrets, pass, limit)
                    .await
            }
            SealedKind::WebhookDeliveries => {
                self.webhooks
                    .reseal_batch(WebhookSealed::DeliveryData, pass, limit)
                    .await
            }
            SealedKind::Flows => Ok(self.flows.reseal_batch(&self.secrets, pass, limit).await?),
        }
    }

    // Sessions

    /// Opens a new session for `user_id`: always a fresh token (ASVS 3.2.1).
    pub async fn open_session(&self, user_id: UserId) -> Result<SessionToken, ErrorCode> {
        self.session_store.create(user_id, self.clock.now()).await
    }

    pub async fn session_user(&self, token: &SessionToken) -> Result<Option<User>, ErrorCode> {
        self.session_store.user_of(token, self.clock.now()).await
    }

    pub async fn close_session(&self, token: &SessionToken) -> Result<(), ErrorCode> {
        self.session_store.delete(token).await
    }

    /// Drops expired flows and sessions; the server calls this every minute.
    pub async fn purge_expired(&self) -> Result<(u64, u64), ErrorCode> {
        let now = self.clock.now();
        let flows = self.flows.purge_expired(now).await?;
        self.two_factor.purge_expired(now).await?;
        self.throttle.purge_expired(now).await?;
        let sessions = self.session_store.purge_expired(now).await?;
        self.sign_in_links.purge_expired(now).await?;
        Ok((flows, sessions))
    }

    // The app API

    /// Takes one request token from API key `key_id`'s bucket: `Ok` to serve, or the seconds
    /// to wait (shared by every instance with Redis).
    pub async fn take_api_token(
        &self,
        key_id: &str,
        per_second: f64,
        burst: f64,
    ) -> Result<(), u64> {
        self.api_rate.take(key_id, per_second, burst).await
    }

    /// The user's connected accounts, oldest first.
    pub async fn connected_accounts(
        &self,
        user_id: UserId,
    ) -> Result<Vec<ConnectedAccount>, ErrorCode> {
        self.accounts.list(user_id).await
    }

    /// One of the user's connected accounts; `not_found` when it is not theirs.
    pub async fn connected_account(
        &self,
        user_id: UserId,
        account_id: i64,
    ) -> Result<ConnectedAccount, ErrorCode> {
        self.accounts.get(user_id, account_id).await
    }

    /// The user's API keys.
    pub async fn list_api_keys(&self, user_id: UserId) -> Result<Vec<ApiKey>, ErrorCode> {
        self.api_keys.list(user_id).await
    }

    /// Makes an API key for `account_ids` of the user, living `days` (`None`: until revoked);
    /// the secret is shown once.
    pub async fn create_api_key(
        &self,
        user_id: UserId,
        name: &str,
        account_ids: &[i64],
        days: Option<u32>,
    ) -> Result<(ApiKey, ApiKeySecret), ErrorCode> {
        self.api_keys
            .create_expiring(user_id, name, account_ids, days)
            .await
    }

    pub async fn revoke_api_key(&self, user_id: UserId, key_id: &str) -> Result<(), ErrorCode> {
        self.api_keys.revoke(user_id, key_id).await
    }

    /// The live key `key` (as an app sends it), or why it is refused.
    pub async fn authenticate_api_key(&self, key: &str) -> Result<ApiCaller, ErrorCode> {
        self.api_keys.authenticate(key).await
    }

    /// The user's webhook URL and when it was set, if there is one.
    pub async fn webhook_endpoint(
        &self,
        user_id: UserId,
    ) -> Result<Option<(String, i64)>, ErrorCode> {
        self.webhooks.endpoint(user_id).await
    }

    /// The user's last `limit` webhook deliveries, newest first.
    pub async fn webhook_deliveries(
        &self,
        user_id: UserId,
        limit: i64,
    ) -> Result<Vec<Delivery>, ErrorCode> {
        self.webhooks.deliveries(user_id, limit).await
    }

    /// Sets the user's webhook URL (checked against the destination policy); its signing
    /// secret is shown once.
    pub async fn set_webhook_url(
        &self,
        user_id: UserId,
        url: &str,
    ) -> Result<WebhookSecret, ErrorCode> {
        self.webhooks.set_url(user_id, url).await
    }

    pub async fn remove_webhook(&self, user_id: UserId) -> Result<(), ErrorCode> {
        self.webhooks.remove(user_id).await
    }

    /// The webhooks' store, for tests and tools.
    pub fn webhooks(&self) -> &WebhookStore {
        &self.webhooks
    }

    /// Sends the webhook deliveries due now; returns how many were attempted.
    pub async fn deliver_webhooks_now(&self) -> Result<usize, ErrorCode> {
        self.webhooks.deliver_now().await
    }

    /// Runs [`Engine::deliver_webhooks_now`] every `every` until the task is dropped.
    pub fn spawn_webhook_delivery(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        self.webhooks.spawn_delivery(every)
    }

    // Sessions

    /// How long an unused session lives, in seconds (`STEPGATE_SESSION_IDLE`).
    pub fn session_idle_seconds(&self) -> i64 {
        self.session_list.session_idle_seconds()
    }

    /// Notes which browser (`User-Agent`) and address opened the session, for the list.
    pub async fn note_session_client(
        &self,
        session: &SessionToken,
        user_agent: Option<&str>,
        address: Option<IpAddr>,
    ) -> Result<(), ErrorCode> {
        self.session_list
            .note_session_client(session, user_agent, address)
            .await
    }

    /// The live sessions of `current`'s user, most recently used first; `not_signed_in`
    /// without a live `current`.
    pub async fn list_sessions(
        &self,
        current: &SessionToken,
    ) -> Result<Vec<SessionInfo>, ErrorCode> {
        self.session_list.list_sessions(current).await
    }

    /// Ends the session the list names `id` (one of `current`'s user's); `not_found` if there
    /// is none. True when that was `current` itself (this browser is signed out).
    pub async fn end_session(&self, current: &SessionToken, id: &str) -> Result<bool, ErrorCode> {
        self.session_list.end_session(current, id).await
    }

    /// Ends every session of `current`'s user but `current`; how many ended.
    pub async fn end_other_sessions(&self, current: &SessionToken) -> Result<u64, ErrorCode> {
        self.session_list.end_other_sessions(current).await
    }

    // Admin

    /// Whether `user` is an admin (and not disabled).
    pub async fn is_admin(&self, user: &User) -> Result<bool, ErrorCode> {
        self.admin.is_admin(user).await
    }

    /// Every account, oldest first.
    pub async fn admin_accounts(&self, admin: &User) -> Result<Vec<AccountRow>, ErrorCode> {
        self.admin.admin_accounts(admin).await
    }

    /// The latest invites (never their tokens), newest first.
    pub async fn admin_invites(
        &self,
        admin: &User,
        limit: i64,
    ) -> Result<Vec<InviteSummary>, ErrorCode> {
        self.admin.admin_invites(admin, limit).await
    }

    /// The latest admin acts, newest first.
    pub async fn admin_audit_log(
        &self,
        admin: &User,
        limit: i64,
    ) -> Result<Vec<AdminAuditEntry>, ErrorCode> {
        self.admin.admin_audit_log(admin, limit).await
    }

    /// A new invite link's token (single use, seven days): shown to the admin this once.
    pub async fn admin_create_invite(&self, admin: &User) -> Result<NewInvite, ErrorCode> {
        self.admin.admin_create_invite(admin).await
    }

    /// Disables account `target`: its sessions end now, its API keys are refused from now on,
    /// and it cannot sign in until enabled again. An admin cannot disable their own account.
    pub async fn admin_disable(&self, admin: &User, target: UserId) -> Result<(), ErrorCode> {
        self.admin.admin_disable(admin, target).await
    }

    /// Enables account `target` again: it may sign in (its old sessions stay ended).
    pub async fn admin_enable(&self, admin: &User, target: UserId) -> Result<(), ErrorCode> {
        self.admin.admin_enable(admin, target).await
    }

    /// Turns account `target`'s TOTP off (its owner lost the authenticator): the password alone
    /// signs in, and 2FA can be set up again. Its sessions end, as when 2FA is turned off.
    /// `two_factor_off` when it was not on.
    pub async fn admin_reset_second_factor(
        &self,
        admin: &User,
        target: UserId,
    ) -> Result<(), ErrorCode> {
        self.admin.admin_reset_second_factor(admin, target).await
    }

    // LocalAccounts

    /// Creates a local account outside the registration rules: never the admin, no invite, no
    /// throttle (the demo account, and tests). The sign-up page registers through
    /// [`Engine::sign_up`]. Nothing is written unless every check passes.
    pub async fn register(
        &self,
        email: &str,
        password: &str,
        confirm: &str,
    ) -> Result<User, ErrorCode> {
        self.local_accounts.register(email, password, confirm).await
    }

    /// Creates the account if its email is free; `true` when it was created.
    pub async fn ensure_user(&self, email: &str, password: &str) -> Result<bool, ErrorCode> {
        self.local_accounts.ensure_user(email, password).await
    }

    /// Signs in to a local account with email and password, throttled per account and per
    /// client `address` (see [`crate::sign_in::throttle`]): a throttled try is refused before
    /// any hashing. Otherwise this is the `local` provider's first step.
    pub async fn sign_in(
        &self,
        owner: Option<String>,
        email: &str,
        password: &str,
        address: Option<IpAddr>,
    ) -> Result<Progress, SignInRefusal> {
        self.local_accounts
            .sign_in(owner, email, password, address)
            .await
    }

    // Registration

    /// Whether this Stepgate has its admin yet (if not, the next registration is free).
    pub async fn has_admin(&self) -> Result<bool, ErrorCode> {
        self.registration.has_admin().await
    }

    /// Registers an account by the rules of `request.mode` (see the module's note). Nothing is
    /// written unless every check passes; a refused invite is named in words (unknown, used,
    /// expired).
    pub async fn sign_up(&self, request: SignUp<'_>) -> Result<SignedUp, SignUpRefusal> {
        self.registration.sign_up(request).await
    }

    // Sudo

    /// The session's user and whether it is confirmed now; `None` for no live session.
    pub async fn sudo_state(&self, session: &SessionToken) -> Result<Option<SudoState>, ErrorCode> {
        self.sudo.sudo_state(session).await
    }

    /// The session's user if it confirmed who it is within the last [`SUDO_SECONDS`]:
    /// `not_signed_in` without a live session, `confirm_identity_required` otherwise.
    pub async fn require_sudo(&self, session: &SessionToken) -> Result<User, ErrorCode> {
        self.sudo.require_sudo(session).await
    }

    /// Confirms the session's user: the password, then (when 2FA is on) a current `code`.
    /// Throttled like a sign-in from `address`. On success this session is confirmed for
    /// [`SUDO_SECONDS`].
    pub async fn confirm_identity(
        &self,
        session: &SessionToken,
        password: &str,
        code: Option<&str>,
        address: Option<IpAddr>,
    ) -> Result<(), SignInRefusal> {
        self.sudo
            .confirm_identity(session, password, code, address)
            .await
    }

    // AccountSecurity

    /// Turns TOTP off for the session's user. The session must be confirmed (sudo), and with
    /// 2FA on that confirmation took a current code, so no second code is asked here (one
    /// would also have to wait for the next time step: a code is accepted once).
    pub async fn turn_off_totp(&self, session: &SessionToken) -> Result<(), ErrorCode> {
        self.account_security.turn_off_totp(session).await
    }

    /// Changes the session's user's password: the current one (throttled like a sign-in),
    /// then the new one twice under the rules of registering. Every other session of the user
    /// ends; `session` stays. How many ended.
    pub async fn change_password(
        &self,
        session: &SessionToken,
        current: &str,
        new: &str,
        confirm: &str,
        address: Option<IpAddr>,
    ) -> Result<u64, SignInRefusal> {
        self.account_security
            .change_password(session, current, new, confirm, address)
            .await
    }

    // SecondFactorSettings

    /// Whether `user` has TOTP on, and how.
    pub async fn totp_status(&self, user: &User) -> Result<Option<TotpStatus>, ErrorCode> {
        self.second_factor.totp_status(user).await
    }

    /// The TOTP site's `action=add` link for `user`, with a fresh single-use registration
    /// token; the site sends the user back to `callback_url`.
    pub async fn totp_site_setup_link(
        &self,
        user: &User,
        callback_url: &str,
    ) -> Result<String, ErrorCode> {
        self.second_factor
            .totp_site_setup_link(user, callback_url)
            .await
    }

    /// The TOTP site's callback for the signed-in `user` of `session`. With 2FA on, every
    /// other session of the user ends (each was opened without the second factor). The first
    /// recovery codes, when the account had none, to be shown once.
    pub async fn complete_totp_site_setup(
        &self,
        user: &User,
        session: &SessionToken,
        callback: &RegistrationCallback,
    ) -> Result<Option<RecoveryCodes>, ErrorCode> {
        self.second_factor
            .complete_totp_site_setup(user, session, callback)
            .await
    }

    /// A new authenticator-app secret for `user`, pending until a valid code confirms it.
    pub async fn begin_app_enrollment(&self, user: &User) -> Result<AppEnrollment, ErrorCode> {
        self.second_factor.begin_app_enrollment(user).await
    }

    /// Turns TOTP on once the authenticator app shows a valid code; every other session of
    /// the user ends (each was opened without the second factor). The first recovery codes,
    /// when the account had none, to be shown once.
    pub async fn confirm_app_enrollment(
        &self,
        user: &User,
        session: &SessionToken,
        code: &str,
    ) -> Result<Option<RecoveryCodes>, ErrorCode> {
        self.second_factor
            .confirm_app_enrollment(user, session, code)
            .await
    }

    /// How many unused recovery codes `user` has.
    pub async fn recovery_codes_left(&self, user: &User) -> Result<i64, ErrorCode> {
        self.second_factor.recovery_codes_left(user).await
    }

    /// A new set of recovery codes for the session's user, after sudo; the old set dies.
    pub async fn new_recovery_codes(
        &self,
        session: &SessionToken,
    ) -> Result<RecoveryCodes, ErrorCode> {
        self.account_security.new_recovery_codes(session).await
    }

    /// The code step of sign-in flow `flow_id`, answered with a recovery code instead of the
    /// TOTP code. Signing in so is logged and told to the user's webhook
    /// (`second_factor.recovery_code_used`, with how many codes are left).
    pub async fn sign_in_with_recovery_code(
        &self,
        flow_id: &str,
        owner: Option<&str>,
        code: &str,
    ) -> Result<Progress, StepError> {
        let input: Input = [("recovery_code".to_owned(), code.to_owned())].into();
        let progress = self
            .runner
            .submit_provider_flow("local", flow_id, owner, &input)
            .await?;
        if let Progress::Done(Completion::SignedIn { user_id, .. }) = &progress {
            let left = self.two_factor.recovery_codes_left(*user_id).await?;
            let data = serde_json::json!({ "recovery_codes_left": left });
            self.webhooks
                .enqueue(
                    *user_id,
                    "second_factor.recovery_code_used",
                    &data,
                    self.now(),
                )
                .await?;
        }
        Ok(progress)
    }

    // Passkeys

    /// Whether passkeys can be used here (`STEPGATE_PUBLIC_URL` names a host, not an address).
    pub fn passkeys_available(&self) -> bool {
        self.second_factor.passkeys.available()
    }

    /// `user`'s passkeys, oldest first.
    pub async fn passkeys(&self, user: &User) -> Result<Vec<PasskeySummary>, ErrorCode> {
        self.second_factor.passkeys(user).await
    }

    /// Whether `user` has a passkey (a second factor, like TOTP).
    pub async fn has_passkeys(&self, user: &User) -> Result<bool, ErrorCode> {
        self.second_factor.passkeys.has_any(user.id).await
    }

    /// Options for adding a passkey to `user` (`navigator.credentials.create`), and the sealed
    /// state the browser sends back with its answer.
    pub async fn start_passkey_registration(
        &self,
        user: &User,
    ) -> Result<PasskeyRegistrationStart, ErrorCode> {
        self.second_factor.start_passkey_registration(user).await
    }

    /// Keeps the passkey the browser made, named `name`. As the account's first second factor,
    /// it ends the user's other sessions and makes the first recovery codes (shown once).
    pub async fn finish_passkey_registration(
        &self,
        user: &User,
        session: &SessionToken,
        name: &str,
        sealed_state: &str,
        answer: &str,
    ) -> Result<(PasskeySummary, Option<RecoveryCodes>), ErrorCode> {
        self.second_factor
            .finish_passkey_registration(user, session, name, sealed_state, answer)
            .await
    }

    /// Removes `user`'s passkey `credential_id` (the app confirms it's them first).
    pub async fn remove_passkey(&self, user: &User, credential_id: &str) -> Result<(), ErrorCode> {
        self.second_factor.remove_passkey(user, credential_id).await
    }

    /// Starts "Sign in with a passkey" in the browser session `owner`: a flow whose step asks
    /// any discoverable passkey of this Stepgate (`StepView::Passkey`).
    pub async fn start_passkey_sign_in(
        &self,
        owner: Option<String>,
    ) -> Result<FlowView, StepError> {
        let input: Input = [(
            crate::providers::local::PASSKEY_SIGN_IN.to_owned(),
            String::new(),
        )]
        .into();
        match self
            .runner
            .start_flow("local", Purpose::SignIn, owner, &input)
            .await?
        {
            Progress::Next(view) => Ok(view),
            Progress::Done(_) => Err(ErrorCode::Unknown.into()),
        }
    }

    /// A passkey's `answer` (the browser's `PublicKeyCredential` as JSON) to sign-in flow
    /// `flow_id`: a sign-in by passkey alone, or the second factor after the password.
    pub async fn sign_in_with_passkey(
        &self,
        flow_id: &str,
        owner: Option<&str>,
        answer: &str,
    ) -> Result<Progress, StepError> {
        let input: Input = [(
            crate::providers::local::PASSKEY_ANSWER.to_owned(),
            answer.to_owned(),
        )]
        .into();
        self.runner
            .submit_provider_flow("local", flow_id, owner, &input)
            .await
    }

    /// Turns TOTP off; a current code is required.
    pub async fn disable_totp(&self, user: &User, code: &str) -> Result<(), ErrorCode> {
        self.second_factor.disable_totp(user, code).await
    }

    // AccountEvents

    /// Records `event` of `account` (see the module doc).
    pub async fn account_event(
        &self,
        user_id: UserId,
        account: &ConnectedAccount,
        event: AccountEvent,
    ) {
        self.events.account_event(user_id, account, event).await
    }

    /// The account's audit log, newest first (its owner's only).
    pub async fn audit_log(
        &self,
        user_id: UserId,
        account_id: i64,
    ) -> Result<Vec<AuditEntry>, ErrorCode> {
        self.events.audit_log(user_id, account_id).await
    }

    /// Removes the user's account and its secrets, and tells the audit log and the webhook.
    pub async fn remove_account(&self, user_id: UserId, account_id: i64) -> Result<(), ErrorCode> {
        self.events.remove_account(user_id, account_id).await
    }

    /// Writes the apps' reads counted so far (`apps/read_counts.rs`); the server calls it
    /// when it shuts down. Returns how many reads it wrote.
    pub async fn flush_read_counts(&self) -> Result<i64, ErrorCode> {
        self.events.reads.flush().await
    }

    /// Runs [`Engine::flush_read_counts`] every `every` until the task is dropped.
    pub fn spawn_read_count_flusher(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        self.events.reads.spawn_flusher(every)
    }

    // AccountHealth

    /// Claims the user's accounts due for a check and checks them on background tasks.
    /// Returns the ids being checked (the page shows them as "checking…").
    pub async fn check_accounts_in_background(
        &self,
        user_id: UserId,
    ) -> Result<Vec<i64>, ErrorCode> {
        self.health.check_accounts_in_background(user_id).await
    }

    /// Checks the user's accounts due for a check and waits for the answers (tests, tools).
    pub async fn check_accounts_now(
        &self,
        user_id: UserId,
    ) -> Result<Vec<(i64, CheckOutcome)>, ErrorCode> {
        self.health.check_accounts_now(user_id).await
    }

    /// What the reauth form of account `account_id` starts with: its provider's name and the
    /// first form's values (the account name; for some providers more, e.g. Lynk & Co's VIN).
    pub async fn reauth_prefill(
        &self,
        user_id: UserId,
        account_id: i64,
    ) -> Result<(ConnectedAccount, Input), ErrorCode> {
        self.health.reauth_prefill(user_id, account_id).await
    }

    // Upkeep

    /// One pass of the upkeep: leases the accounts due now and renews them. Returns how many
    /// it handled.
    pub async fn run_due_renewals(&self) -> Result<usize, ErrorCode> {
        self.upkeep.run_due_renewals().await
    }

    /// Runs [`Engine::run_due_renewals`] every `every` until the task is dropped.
    pub fn spawn_upkeep(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        self.upkeep.spawn_upkeep(every)
    }

    // AppCredentials

    /// The fresh credentials of account `account_id` of `user_id`: `not_found` when it is not
    /// theirs, `needs_sign_in` when the provider refused its tokens, the provider's error when
    /// a needed renewal could not reach it.
    pub async fn app_credentials(
        &self,
        user_id: UserId,
        account_id: i64,
    ) -> Result<serde_json::Value, ErrorCode> {
        self.app_credentials
            .app_credentials(user_id, account_id)
            .await
    }

    /// [`Engine::app_credentials`] read by API key `key_id` (its public part): the read is
    /// counted in the account's audit log, naming the key (`apps/read_counts.rs`).
    pub async fn app_credentials_for_key(
        &self,
        user_id: UserId,
        account_id: i64,
        key_id: &str,
    ) -> Result<serde_json::Value, ErrorCode> {
        self.app_credentials
            .app_credentials_for_key(user_id, account_id, key_id)
            .await
    }

    // ApiProxy

    /// Sends an app's `request` (API key `key_id`) to the provider's API of account
    /// `account_id` with its credentials put in (`accounts::proxy`).
    pub async fn proxy_api_request(
        &self,
        user_id: UserId,
        account_id: i64,
        key_id: &str,
        request: ProxyRequest,
    ) -> Result<ProxyAnswer, ErrorCode> {
        self.proxy
            .forward(user_id, account_id, key_id, request)
            .await
    }

    // Sign-in links

    /// A new sign-in link to the user's account `account_id`, shown to its owner once:
    /// `{base}/sign-in-link/{token}`, `base` being where the owner reached Stepgate (without
    /// one, `STEPGATE_PUBLIC_URL`). `not_found` when the account is not theirs.
    pub async fn make_sign_in_link(
        &self,
        user_id: UserId,
        account_id: i64,
        base: Option<&str>,
    ) -> Result<SignInLinkMade, ErrorCode> {
        self.sign_in_links.make(user_id, account_id, base).await
    }

    /// The live sign-in links to the user's account `account_id`, newest first.
    pub async fn sign_in_links(
        &self,
        user_id: UserId,
        account_id: i64,
    ) -> Result<Vec<SignInLinkSummary>, ErrorCode> {
        self.sign_in_links.live(user_id, account_id).await
    }

    /// Revokes live sign-in link `link_id` to the user's account `account_id`.
    pub async fn revoke_sign_in_link(
        &self,
        user_id: UserId,
        account_id: i64,
        link_id: &str,
    ) -> Result<(), ErrorCode> {
        self.sign_in_links
            .revoke(user_id, account_id, link_id)
            .await
    }

    /// Revokes every live sign-in link to the user's account `account_id`; how many.
    pub async fn revoke_sign_in_links(
        &self,
        user_id: UserId,
        account_id: i64,
    ) -> Result<u64, ErrorCode> {
        self.sign_in_links.revoke_all(user_id, account_id).await
    }

    /// The live sign-in link the user's apps have for account `account_id` (the same URL while
    /// it lives), or a new one: `sign_in_links_off` unless the user lets apps have them,
    /// `not_found` when the account is not theirs.
    pub async fn app_sign_in_link(
        &self,
        user_id: UserId,
        account_id: i64,
    ) -> Result<SignInLinkMade, ErrorCode> {
        self.sign_in_links.for_apps(user_id, account_id).await
    }

    /// Whether the user lets their apps have sign-in links (webhook and API).
    pub async fn sign_in_links_for_apps(&self, user_id: UserId) -> Result<bool, ErrorCode> {
        self.sign_in_links.for_apps_allowed(user_id).await
    }

    /// Lets the user's apps have sign-in links, or not (off revokes those they have).
    pub async fn set_sign_in_links_for_apps(
        &self,
        user_id: UserId,
        on: bool,
    ) -> Result<(), ErrorCode> {
        self.sign_in_links.allow_for_apps(user_id, on).await
    }

    /// Opens sign-in link `token` in a browser: the ticket its pages keep instead, or why the
    /// link is refused (`sign_in_link_invalid`, `_used`, `_expired`).
    pub async fn open_sign_in_link(&self, token: &str) -> Result<SignInLinkTicket, ErrorCode> {
        self.sign_in_links.open(token).await
    }

    /// What the page of `ticket`'s link shows: its account and the step of its flow `flow_id`.
    pub async fn sign_in_link_page(
        &self,
        ticket: &SignInLinkTicket,
        flow_id: Option<&str>,
    ) -> Result<SignInLinkPage, ErrorCode> {
        self.link_flows.page(ticket, flow_id).await
    }

    /// One step of `ticket`'s link: the first form (no `flow_id`) or a later one.
    pub async fn submit_sign_in_link_step(
        &self,
        ticket: &SignInLinkTicket,
        flow_id: Option<&str>,
        input: &Input,
    ) -> Result<Progress, StepError> {
        self.link_flows.submit(ticket, flow_id, input).await
    }

    /// The account `ticket`'s link signed in again, once it has (`None` while it is live).
    pub async fn finished_sign_in_link(
        &self,
        ticket: &SignInLinkTicket,
    ) -> Result<Option<ConnectedAccount>, ErrorCode> {
        self.sign_in_links.finished_by_ticket(ticket).await
    }

    // FlowRunner

    /// The providers a user can connect: (name, title), in the picker's order.
    pub fn connectable(&self) -> &[(&'static str, &'static str)] {
        self.runner.connectable()
    }

    /// The title of connectable provider `name` ("Librus").
    pub fn title_of(&self, name: &str) -> Option<&'static str> {
        self.runner.title_of(name)
    }

    /// The first form of `provider` (what its connect page shows before anything is sent).
    pub fn first_view(&self, provider: &str) -> Result<StepView, ErrorCode> {
        self.runner.first_view(provider)
    }

    /// The step a flow of `provider` waits at, for its owner (to render it again after a
    /// reload).
    pub async fn flow_view(
        &self,
        provider: &str,
        flow_id: &str,
        owner: Option<&str>,
    ) -> Result<FlowView, ErrorCode> {
        self.runner.flow_view(provider, flow_id, owner).await
    }

    /// Runs the first step of `provider`'s flow, for `purpose`, in the browser session `owner`.
    pub async fn start_flow(
        &self,
        provider_name: &str,
        purpose: Purpose,
        owner: Option<String>,
        input: &Input,
    ) -> Result<Progress, StepError> {
        self.runner
            .start_flow(provider_name, purpose, owner, input)
            .await
    }

    /// Runs the next step of a stored flow (see [`Engine::live_flow`] for who may).
    pub async fn submit_flow(
        &self,
        flow_id: &str,
        owner: Option<&str>,
        input: &Input,
    ) -> Result<Progress, StepError> {
        self.runner.submit_flow(flow_id, owner, input).await
    }

    /// [`Engine::submit_flow`] for a page of `provider`: another provider's flow is refused.
    pub async fn submit_provider_flow(
        &self,
        provider: &str,
        flow_id: &str,
        owner: Option<&str>,
        input: &Input,
    ) -> Result<Progress, StepError> {
        self.runner
            .submit_provider_flow(provider, flow_id, owner, input)
            .await
    }
}

/// Issue 20's acceptance: a key rotation across every sealed value.
#[cfg(test)]
#[path = "key_rotation_tests.rs"]
mod key_rotation_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::engine_in;

    #[test]
    fn an_engine_stays_small_enough_to_clone_into_every_request() {
        // Each server function holds an `Engine` in its future; with the services inline it was
        // 36 KiB and nested page renders overflowed a worker thread's stack.
        let size = std::mem::size_of::<Engine>();
        assert!(size <= 8 * 1024, "an Engine is {size} bytes");
    }

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
