//! [`Engine`]: the one object the app talks to. It owns the database, the stores and the
//! providers, and runs every flow by the same rules.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::SqlitePool;

use crate::accounts::{AccountStore, ConnectedAccount};
use crate::clock::{Clock, SystemClock};
use crate::crypto::SecretBox;
use crate::email::Email;
use crate::flow::DEFAULT_FLOW_TTL;
use crate::password::PasswordHasher;
use crate::providers::{local::LocalProvider, AnyProvider, Input, Provider, Purpose, StepError};
use crate::secrets::SecretKey;
use crate::sessions::{SessionStore, SessionToken};
use crate::sign_in_throttle::{SignInAttempt, SignInThrottle};
use crate::store::{FlowStore, SqliteFlowStore};
use crate::two_factor::{TotpProviderConfig, TwoFactor};
use crate::upstream::{UpstreamMap, Upstreams, DEFAULT_STEP_TIMEOUT};
use crate::users::{User, UserId, UserStore};
use crate::view::FlowView;
use crate::{db, ErrorCode};

/// The longest value any form field may carry; longer input is refused before any work.
pub const MAX_FIELD_BYTES: usize = 1024;
pub const MIN_PASSWORD_CHARS: usize = 8;

pub struct EngineConfig {
    /// `sqlite://…` URL of the database.
    pub database_url: String,
    pub flow_ttl: Duration,
    /// Password hashes allowed to run at once.
    pub hash_slots: usize,
    /// Seals secrets at rest (TOTP seeds).
    pub secret_key: SecretKey,
    pub totp_provider: TotpProviderConfig,
    /// Where third-party origins are reached (`STEPGATE_UPSTREAMS`); empty: the real hosts.
    pub upstreams: UpstreamMap,
    /// How long one upstream request may take.
    pub step_timeout: Duration,
}

impl EngineConfig {
    pub fn new(
        database_url: impl Into<String>,
        secret_key: SecretKey,
        totp_provider: TotpProviderConfig,
    ) -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Self {
            database_url: database_url.into(),
            flow_ttl: DEFAULT_FLOW_TTL,
            hash_slots: cores.max(2),
            secret_key,
            totp_provider,
            upstreams: UpstreamMap::default(),
            step_timeout: DEFAULT_STEP_TIMEOUT,
        }
    }
}

/// Why a sign-in was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInRefusal {
    Code(ErrorCode),
    /// Too many failed passwords for this account or from this address: the password was not
    /// even checked. `retry_after` is in seconds.
    Throttled {
        retry_after: i64,
    },
}

impl From<ErrorCode> for SignInRefusal {
    fn from(code: ErrorCode) -> Self {
        SignInRefusal::Code(code)
    }
}

impl From<StepError> for SignInRefusal {
    fn from(error: StepError) -> Self {
        SignInRefusal::Code(error.code)
    }
}

/// What a finished flow produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// A local account proved who it is: the app opens a session for it.
    SignedIn { user_id: UserId },
    /// A third-party account was connected (and stored).
    Connected(ConnectedAccount),
}

/// Where a flow stands after a step.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    Next(FlowView),
    Done(Completion),
}

#[derive(Clone)]
pub struct Engine {
    pub(crate) pool: SqlitePool,
    pub(crate) flows: Arc<dyn FlowStore>,
    users: UserStore,
    sessions: SessionStore,
    pub(crate) accounts: AccountStore,
    pub(crate) hasher: PasswordHasher,
    two_factor: TwoFactor,
    throttle: SignInThrottle,
    pub(crate) providers: Arc<HashMap<&'static str, Arc<dyn AnyProvider>>>,
    pub(crate) upstreams: Upstreams,
    /// Seals flow state (bound to the flow id).
    pub(crate) secrets: SecretBox,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) flow_ttl: Duration,
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
        let users = UserStore::new(pool.clone());
        let hasher = PasswordHasher::new(config.hash_slots);
        let secrets = SecretBox::new(&config.secret_key);
        let two_factor = TwoFactor::new(pool.clone(), secrets.clone(), config.totp_provider);
        let local: Arc<dyn AnyProvider> = Arc::new(LocalProvider::new(
            users.clone(),
            hasher.clone(),
            two_factor.clone(),
        ));
        let mut providers = HashMap::from([(local.name(), local)]);
        providers.extend(
            crate::providers::connectable()
                .into_iter()
                .map(|p| (p.name(), p)),
        );
        Ok(Engine {
            flows: Arc::new(SqliteFlowStore::new(pool.clone())),
            sessions: SessionStore::new(pool.clone()),
            throttle: SignInThrottle::new(pool.clone()),
            accounts: AccountStore::new(pool.clone(), secrets.clone()),
            upstreams: Upstreams::new(config.upstreams, config.step_timeout),
            secrets,
            users,
            hasher,
            two_factor,
            providers: Arc::new(providers),
            clock,
            flow_ttl: config.flow_ttl,
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

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub fn two_factor(&self) -> &TwoFactor {
        &self.two_factor
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// Creates a local account. Nothing is written unless every check passes.
    pub async fn register(
        &self,
        email: &str,
        password: &str,
        confirm: &str,
    ) -> Result<User, ErrorCode> {
        for field in [email, password, confirm] {
            if field.trim().is_empty() {
                return Err(ErrorCode::MissingFields);
            }
            if field.len() > MAX_FIELD_BYTES {
                return Err(ErrorCode::FieldTooLong);
            }
        }
        let email = Email::parse(email)?;
        if password.chars().count() < MIN_PASSWORD_CHARS {
            return Err(ErrorCode::PasswordTooShort);
        }
        if password != confirm {
            return Err(ErrorCode::PasswordMismatch);
        }
        if self.users.find_by_email(&email).await?.is_some() {
            return Err(ErrorCode::EmailTaken);
        }
        let hash = self.hasher.hash(password).await?;
        let id = self.users.create(&email, &hash, self.clock.now()).await?;
        Ok(User {
            id,
            email: email.to_string(),
        })
    }

    /// Creates the account if its email is free; `true` when it was created.
    pub async fn ensure_user(&self, email: &str, password: &str) -> Result<bool, ErrorCode> {
        match self.register(email, password, password).await {
            Ok(_) => Ok(true),
            Err(ErrorCode::EmailTaken) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Signs in to a local account with email and password, throttled per account and per
    /// client `address` (see [`crate::sign_in_throttle`]): a throttled try is refused before
    /// any hashing. Otherwise this is the `local` provider's first step.
    pub async fn sign_in(
        &self,
        owner: Option<String>,
        email: &str,
        password: &str,
        address: Option<IpAddr>,
    ) -> Result<Progress, SignInRefusal> {
        let input: Input = [("email", email), ("password", password)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        check_field_sizes(&input)?;
        crate::providers::required(&input, "password")?;
        let attempt = SignInAttempt::new(&Email::parse(email)?, address);
        if let Err(throttled) = self.throttle.claim(&attempt, self.clock.now()).await? {
            tracing::warn!(retry_after = throttled.retry_after, "throttled a sign-in");
            return Err(SignInRefusal::Throttled {
                retry_after: throttled.retry_after,
            });
        }
        let progress = self
            .start_flow("local", Purpose::SignIn, owner, &input)
            .await?;
        // The password was right (whatever factor comes next): the account starts over.
        self.throttle.succeeded(&attempt, self.clock.now()).await?;
        Ok(progress)
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
    use crate::clock::ManualClock;
    use crate::flow::{FlowId, MAX_ATTEMPTS};

    pub(crate) fn test_config(dir: &tempfile::TempDir) -> EngineConfig {
        EngineConfig::new(
            db::sqlite_url_in(dir.path()),
            SecretKey([7; 32]),
            TotpProviderConfig {
                base_url: "http://totp.test".into(),
                issuer: "Stepgate".into(),
            },
        )
    }

    async fn engine_in(dir: &tempfile::TempDir) -> (Engine, ManualClock) {
        let clock = ManualClock::at(1_700_000_000);
        let config = test_config(dir);
        (
            Engine::open_with_clock(config, Arc::new(clock.clone()))
                .await
                .unwrap(),
            clock,
        )
    }

    /// `start_flow` for a sign-in, with only the error code of a refusal.
    async fn start(
        engine: &Engine,
        provider: &str,
        owner: Option<String>,
        input: &Input,
    ) -> Result<Progress, ErrorCode> {
        engine
            .start_flow(provider, Purpose::SignIn, owner, input)
            .await
            .map_err(|e| e.code)
    }

    /// `submit_flow`, with only the error code of a refusal.
    async fn submit(
        engine: &Engine,
        flow_id: &str,
        owner: Option<&str>,
        input: &Input,
    ) -> Result<Progress, ErrorCode> {
        engine
            .submit_flow(flow_id, owner, input)
            .await
            .map_err(|e| e.code)
    }

    fn input(pairs: &[(&str, &str)]) -> Input {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    async fn user_count(engine: &Engine) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(engine.pool())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn registered_user_signs_in_with_the_right_password_only() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let user = engine
            .register("Ada@Example.org", "lovelace-1815", "lovelace-1815")
            .await
            .unwrap();
        assert_eq!(user.email, "ada@example.org");

        let ok = start(
            &engine,
            "local",
            None,
            &input(&[("email", "ada@example.org"), ("password", "lovelace-1815")]),
        )
        .await;
        assert_eq!(
            ok,
            Ok(Progress::Done(Completion::SignedIn { user_id: user.id }))
        );

        let wrong = start(
            &engine,
            "local",
            None,
            &input(&[("email", "ada@example.org"), ("password", "lovelace-1816")]),
        )
        .await;
        assert_eq!(wrong, Err(ErrorCode::InvalidAuth));
    }

    #[tokio::test]
    async fn unknown_user_gets_the_same_answer_as_a_wrong_password() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let answer = start(
            &engine,
            "local",
            None,
            &input(&[
                ("email", "nobody@example.org"),
                ("password", "whatever-it-is"),
            ]),
        )
        .await;
        assert_eq!(answer, Err(ErrorCode::InvalidAuth));
    }

    #[tokio::test]
    async fn bad_registrations_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let long = "x".repeat(MAX_FIELD_BYTES + 1);
        let cases = [
            ("", "password-1", "password-1", ErrorCode::MissingFields),
            ("a@example.org", "", "", ErrorCode::MissingFields),
            (
                "not-an-email",
                "password-1",
                "password-1",
                ErrorCode::InvalidEmail,
            ),
            (
                "a@example.org",
                "short",
                "short",
                ErrorCode::PasswordTooShort,
            ),
            (
                "a@example.org",
                "password-1",
                "password-2",
                ErrorCode::PasswordMismatch,
            ),
            ("a@example.org", &long, &long, ErrorCode::FieldTooLong),
        ];
        for (email, password, confirm, expected) in cases {
            assert_eq!(
                engine.register(email, password, confirm).await,
                Err(expected),
                "{email} {password}"
            );
        }
        assert_eq!(user_count(&engine).await, 0);

        engine
            .register("a@example.org", "password-1", "password-1")
            .await
            .unwrap();
        assert_eq!(
            engine
                .register("A@example.org", "password-9", "password-9")
                .await,
            Err(ErrorCode::EmailTaken)
        );
        assert_eq!(user_count(&engine).await, 1);
    }

    #[tokio::test]
    async fn oversized_sign_in_fields_are_refused_before_hashing() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let long = "x".repeat(MAX_FIELD_BYTES + 1);
        let answer = start(
            &engine,
            "local",
            None,
            &input(&[("email", "a@example.org"), ("password", &long)]),
        )
        .await;
        assert_eq!(answer, Err(ErrorCode::FieldTooLong));
    }

    #[tokio::test]
    async fn sessions_are_fresh_tokens_that_end_when_closed() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, clock) = engine_in(&dir).await;
        let user = engine
            .register("s@example.org", "password-1", "password-1")
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

        clock.advance(crate::sessions::SESSION_TTL_SECONDS);
        assert_eq!(
            engine.session_user(&second).await.unwrap(),
            None,
            "sessions expire"
        );
    }

    /// A provider with one code step: "123456" is right, anything else is wrong,
    /// "boom" fails the flow outright.
    struct CodeStep;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct CodeState {
        user_id: i64,
    }

    #[async_trait::async_trait]
    impl Provider for CodeStep {
        type State = CodeState;
        fn name(&self) -> &'static str {
            "code_step"
        }
        fn title(&self) -> &'static str {
            "Code step"
        }
        fn first_view(&self) -> crate::view::StepView {
            crate::view::StepView::form(Vec::new(), "Start")
        }
        async fn start(
            &self,
            _cx: &mut crate::providers::StepContext<'_>,
            _input: &Input,
        ) -> crate::providers::Step<CodeState> {
            crate::providers::Step::Show {
                step: "code",
                view: crate::view::StepView::Code {
                    channel: crate::view::CodeChannel::Sms,
                    digits: 6,
                },
                state: CodeState { user_id: 42 },
            }
        }
        async fn submit(
            &self,
            _cx: &mut crate::providers::StepContext<'_>,
            state: CodeState,
            input: &Input,
        ) -> crate::providers::Step<CodeState> {
            use crate::providers::Step;
            match input.get("code").map(String::as_str) {
                Some("123456") => Step::SignedIn {
                    user_id: state.user_id,
                },
                Some("boom") => Step::abort(ErrorCode::TokenError),
                _ => Step::retry(ErrorCode::InvalidCode),
            }
        }
    }

    async fn code_step_engine(dir: &tempfile::TempDir) -> (Engine, ManualClock, String) {
        let (engine, clock) = engine_in(dir).await;
        let engine = engine.with_provider(CodeStep);
        let Ok(Progress::Next(view)) =
            start(&engine, "code_step", Some("owner".into()), &Input::new()).await
        else {
            panic!("the code step should be shown");
        };
        (engine, clock, view.flow_id)
    }

    fn code(c: &str) -> Input {
        input(&[("code", c)])
    }

    #[tokio::test]
    async fn a_wrong_code_keeps_the_flow_for_another_try() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _, id) = code_step_engine(&dir).await;
        assert_eq!(
            submit(&engine, &id, Some("owner"), &code("000000")).await,
            Err(ErrorCode::InvalidCode)
        );
        assert_eq!(
            submit(&engine, &id, Some("owner"), &code("123456")).await,
            Ok(Progress::Done(Completion::SignedIn { user_id: 42 }))
        );
        // Completing consumes the flow.
        assert_eq!(
            submit(&engine, &id, Some("owner"), &code("123456")).await,
            Err(ErrorCode::FlowExpired)
        );
    }

    #[tokio::test]
    async fn the_fifth_wrong_code_ends_the_flow() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _, id) = code_step_engine(&dir).await;
        for _ in 1..MAX_ATTEMPTS {
            assert_eq!(
                submit(&engine, &id, Some("owner"), &code("000000")).await,
                Err(ErrorCode::InvalidCode)
            );
        }
        assert_eq!(
            submit(&engine, &id, Some("owner"), &code("000000")).await,
            Err(ErrorCode::TooManyAttempts)
        );
        assert_eq!(
            submit(&engine, &id, Some("owner"), &code("123456")).await,
            Err(ErrorCode::FlowExpired)
        );
    }

    #[tokio::test]
    async fn an_expired_flow_answers_flow_expired_even_with_the_right_code() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, clock, id) = code_step_engine(&dir).await;
        clock.advance(DEFAULT_FLOW_TTL.as_secs() as i64);
        assert_eq!(
            submit(&engine, &id, Some("owner"), &code("123456")).await,
            Err(ErrorCode::FlowExpired)
        );
    }

    #[tokio::test]
    async fn another_session_cannot_continue_the_flow() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _, id) = code_step_engine(&dir).await;
        assert_eq!(
            submit(&engine, &id, Some("intruder"), &code("123456")).await,
            Err(ErrorCode::FlowExpired)
        );
        assert_eq!(
            submit(&engine, &id, None, &code("123456")).await,
            Err(ErrorCode::FlowExpired)
        );
        // The owner still can.
        assert!(submit(&engine, &id, Some("owner"), &code("123456"))
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn a_failed_step_discards_the_flow() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _, id) = code_step_engine(&dir).await;
        assert_eq!(
            submit(&engine, &id, Some("owner"), &code("boom")).await,
            Err(ErrorCode::TokenError)
        );
        assert_eq!(
            submit(&engine, &id, Some("owner"), &code("123456")).await,
            Err(ErrorCode::FlowExpired)
        );
    }

    #[tokio::test]
    async fn a_flow_survives_reopening_the_engine() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _, id) = code_step_engine(&dir).await;
        engine.pool().close().await;
        drop(engine);
        let (reopened, _) = engine_in(&dir).await;
        let reopened = reopened.with_provider(CodeStep);
        assert_eq!(
            submit(&reopened, &id, Some("owner"), &code("123456")).await,
            Ok(Progress::Done(Completion::SignedIn { user_id: 42 }))
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_closed_session_is_refused_on_every_pooled_connection() {
        // Sign-out must hold on every pooled connection, not only on the one that deleted the
        // row (a connection with a stale read snapshot would still see the session).
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let user = engine
            .register("pool@example.org", "password-1", "password-1")
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

    /// Registers a user with TOTP on (enrolled through an authenticator app) and returns the
    /// secret, so tests can compute codes.
    async fn user_with_totp(engine: &Engine, email: &str) -> (User, Vec<u8>) {
        let user = engine
            .register(email, "password-1", "password-1")
            .await
            .unwrap();
        let tf = engine.two_factor();
        let enrollment = tf
            .begin_app_enrollment(user.id, email, engine.now())
            .await
            .unwrap();
        let secret = crate::totp::base32_decode(&enrollment.secret_base32).unwrap();
        let code = crate::totp::code_at(&secret, engine.now(), 6);
        tf.confirm_app_enrollment(user.id, &code, engine.now())
            .await
            .unwrap();
        (user, secret)
    }

    #[tokio::test]
    async fn password_then_totp_signs_in_and_the_step_carries_the_fallback_deep_link() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, clock) = engine_in(&dir).await;
        let (user, secret) = user_with_totp(&engine, "two@example.org").await;
        let credentials = input(&[("email", "two@example.org"), ("password", "password-1")]);
        let Ok(Progress::Next(view)) =
            start(&engine, "local", Some("o".into()), &credentials).await
        else {
            panic!("the password should lead to the code step");
        };
        assert_eq!(
            view.step,
            crate::view::StepView::Code {
                channel: crate::view::CodeChannel::Totp {
                    deep_link: "http://totp.test/dashboard/simple-totp?serviceName=Stepgate&accountIdentifier=two%40example.org".into()
                },
                digits: 6
            }
        );
        // A reloaded page gets the same step back.
        assert_eq!(
            engine.flow_view(&view.flow_id, Some("o")).await,
            Ok(view.clone())
        );
        clock.advance(30);
        let code = crate::totp::code_at(&secret, engine.now(), 6);
        assert_eq!(
            submit(
                &engine,
                &view.flow_id,
                Some("o"),
                &input(&[("code", &code)])
            )
            .await,
            Ok(Progress::Done(Completion::SignedIn { user_id: user.id }))
        );
    }

    #[tokio::test]
    async fn five_wrong_totp_codes_end_the_sign_in_with_too_many_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, clock) = engine_in(&dir).await;
        let (_, secret) = user_with_totp(&engine, "five@example.org").await;
        let credentials = input(&[("email", "five@example.org"), ("password", "password-1")]);
        let Ok(Progress::Next(view)) =
            start(&engine, "local", Some("o".into()), &credentials).await
        else {
            panic!("the password should lead to the code step");
        };
        for attempt in 1..=MAX_ATTEMPTS {
            // Wait out the per-account back-off so every try reaches the code check.
            clock.advance(crate::two_factor::MAX_BACKOFF_SECONDS.min(60));
            let expected = if attempt < MAX_ATTEMPTS {
                ErrorCode::InvalidCode
            } else {
                ErrorCode::TooManyAttempts
            };
            assert_eq!(
                submit(
                    &engine,
                    &view.flow_id,
                    Some("o"),
                    &input(&[("code", "000000")])
                )
                .await,
                Err(expected),
                "attempt {attempt}"
            );
        }
        let code = crate::totp::code_at(&secret, engine.now(), 6);
        assert_eq!(
            submit(
                &engine,
                &view.flow_id,
                Some("o"),
                &input(&[("code", &code)])
            )
            .await,
            Err(ErrorCode::FlowExpired)
        );
    }

    #[tokio::test]
    async fn a_new_flow_does_not_reset_the_account_back_off() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let (_, secret) = user_with_totp(&engine, "back@example.org").await;
        let credentials = input(&[("email", "back@example.org"), ("password", "password-1")]);
        for _ in 0..crate::two_factor::FREE_FAILURES {
            let Ok(Progress::Next(view)) =
                start(&engine, "local", Some("o".into()), &credentials).await
            else {
                panic!("code step expected");
            };
            let wrong = submit(
                &engine,
                &view.flow_id,
                Some("o"),
                &input(&[("code", "000000")]),
            )
            .await;
            assert_eq!(wrong, Err(ErrorCode::InvalidCode));
        }
        let Ok(Progress::Next(view)) =
            start(&engine, "local", Some("o".into()), &credentials).await
        else {
            panic!("code step expected");
        };
        let code = crate::totp::code_at(&secret, engine.now() + 30, 6);
        assert_eq!(
            submit(
                &engine,
                &view.flow_id,
                Some("o"),
                &input(&[("code", &code)])
            )
            .await,
            Err(ErrorCode::RateLimited)
        );
    }

    #[tokio::test]
    async fn unknown_and_malformed_flow_ids_answer_flow_expired() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        for id in ["nonsense".to_string(), FlowId::random().to_string()] {
            assert_eq!(
                submit(&engine, &id, None, &Input::new()).await,
                Err(ErrorCode::FlowExpired)
            );
        }
    }

    // First-factor throttling (sign_in_throttle.rs), through the engine as the app uses it.

    fn from(address: &str) -> Option<IpAddr> {
        Some(address.parse().unwrap())
    }

    async fn try_password(
        engine: &Engine,
        email: &str,
        password: &str,
        address: &str,
    ) -> Result<(), SignInRefusal> {
        engine
            .sign_in(None, email, password, from(address))
            .await
            .map(|_| ())
    }

    const WRONG: Result<(), SignInRefusal> = Err(SignInRefusal::Code(ErrorCode::InvalidAuth));

    #[tokio::test]
    async fn failed_passwords_slow_the_account_down_one_second_doubling() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, clock) = engine_in(&dir).await;
        engine
            .register("t@example.org", "password-1", "password-1")
            .await
            .unwrap();
        for _ in 0..2 {
            assert_eq!(
                try_password(&engine, "t@example.org", "nope-nope", "192.0.2.1").await,
                WRONG
            );
        }
        // The third failure is still checked, and starts the wait.
        assert_eq!(
            try_password(&engine, "t@example.org", "nope-nope", "192.0.2.1").await,
            WRONG
        );
        assert_eq!(
            try_password(&engine, "t@example.org", "password-1", "192.0.2.1").await,
            Err(SignInRefusal::Throttled { retry_after: 1 }),
            "even the right password waits: the wait must not tell which one is right"
        );
        clock.advance(1);
        assert_eq!(
            try_password(&engine, "t@example.org", "nope-nope", "192.0.2.1").await,
            WRONG
        );
        assert_eq!(
            try_password(&engine, "t@example.org", "nope-nope", "192.0.2.1").await,
            Err(SignInRefusal::Throttled { retry_after: 2 })
        );
        // Another address is slowed just the same: the account is what is protected.
        assert_eq!(
            try_password(&engine, "t@example.org", "nope-nope", "198.51.100.7").await,
            Err(SignInRefusal::Throttled { retry_after: 2 })
        );
        clock.advance(2);
        // The owner, after the wait: signed in, and the account starts over.
        assert!(
            try_password(&engine, "t@example.org", "password-1", "192.0.2.1")
                .await
                .is_ok()
        );
        for _ in 0..3 {
            assert_eq!(
                try_password(&engine, "t@example.org", "nope-nope", "192.0.2.1").await,
                WRONG
            );
        }
    }

    #[tokio::test]
    async fn unknown_emails_are_throttled_exactly_like_real_accounts() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, clock) = engine_in(&dir).await;
        engine
            .register("real@example.org", "password-1", "password-1")
            .await
            .unwrap();
        let mut answers = Vec::new();
        for email in ["real@example.org", "ghost@example.org"] {
            let mut seen = Vec::new();
            for _ in 0..6 {
                seen.push(try_password(&engine, email, "nope-nope", "192.0.2.2").await);
                clock.advance(1);
            }
            answers.push(seen);
            clock.advance(3600);
        }
        assert_eq!(answers[0], answers[1]);
        assert!(answers[0]
            .iter()
            .any(|a| matches!(a, Err(SignInRefusal::Throttled { .. }))));
    }

    #[tokio::test]
    async fn throttled_tries_spend_no_hashing() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        for _ in 0..3 {
            assert_eq!(
                try_password(&engine, "h@example.org", "nope-nope", "192.0.2.3").await,
                WRONG
            );
        }
        let checks = engine.hasher.checks_run();
        for _ in 0..50 {
            assert!(matches!(
                try_password(&engine, "h@example.org", "nope-nope", "192.0.2.3").await,
                Err(SignInRefusal::Throttled { .. })
            ));
        }
        assert_eq!(engine.hasher.checks_run(), checks);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_burst_sent_at_once_is_throttled_like_one_sent_in_turn() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let tasks: Vec<_> = (0..30)
            .map(|_| {
                let engine = engine.clone();
                tokio::spawn(async move {
                    try_password(&engine, "b@example.org", "nope-nope", "192.0.2.4").await
                })
            })
            .collect();
        let mut checked = 0;
        for t in tasks {
            if t.await.unwrap() == WRONG {
                checked += 1;
            }
        }
        // Three free tries, and the third one starts the wait: no more than three are checked.
        assert_eq!(checked, 3);
    }

    #[tokio::test]
    async fn an_address_failing_against_many_accounts_is_slowed() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let free = crate::sign_in_throttle::ADDRESS_RULE.free_failures;
        for n in 0..free {
            // One try per account: no account is slowed, only the address adds up.
            assert_eq!(
                try_password(
                    &engine,
                    &format!("victim{n}@example.org"),
                    "password1",
                    "203.0.113.9"
                )
                .await,
                WRONG
            );
        }
        assert!(matches!(
            try_password(
                &engine,
                "victim-next@example.org",
                "password1",
                "203.0.113.9"
            )
            .await,
            Err(SignInRefusal::Throttled { .. })
        ));
        // Someone elsewhere is not affected.
        assert_eq!(
            try_password(
                &engine,
                "victim-next@example.org",
                "password1",
                "192.0.2.200"
            )
            .await,
            WRONG
        );
    }

    #[tokio::test]
    async fn a_restart_keeps_the_counters() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        for _ in 0..3 {
            assert_eq!(
                try_password(&engine, "r@example.org", "nope-nope", "192.0.2.5").await,
                WRONG
            );
        }
        engine.pool().close().await;
        drop(engine);
        let (reopened, _) = engine_in(&dir).await;
        assert_eq!(
            try_password(&reopened, "r@example.org", "nope-nope", "192.0.2.5").await,
            Err(SignInRefusal::Throttled { retry_after: 1 })
        );
    }

    #[tokio::test]
    async fn bad_input_is_refused_before_the_throttle_counts_it() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        for _ in 0..10 {
            assert_eq!(
                try_password(&engine, "not-an-email", "nope-nope", "192.0.2.6").await,
                Err(SignInRefusal::Code(ErrorCode::InvalidEmail))
            );
        }
        assert_eq!(
            try_password(&engine, "fine@example.org", "nope-nope", "192.0.2.6").await,
            WRONG
        );
    }
}
