//! What the engine's test modules share: an engine on a manual clock in a temporary folder,
//! form input, flow steps that answer with only the error code of a refusal, an account with
//! TOTP on, a [`TwoFactor`] store with a user (and a seed from the TOTP site), and a provider's
//! engine against its double (with the B2C pages a user's browser reads).

use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sandbox::faults::Fault;
use sandbox::hosts::Hosts;

use crate::accounts::store::{CheckOutcome, ConnectedAccount};
use crate::base::clock::{ManualClock, SystemClock};
use crate::base::crypto::SecretBox;
use crate::base::email::Email;
use crate::base::secrets::SecretKey;
use crate::flows::upstream::{HttpSession, UpstreamMap, Upstreams};
use crate::providers::{Input, Purpose, StepError};
use crate::second_factor::enrolment::RegistrationCallback;
use crate::second_factor::totp;
use crate::second_factor::totp_site::TotpSite;
use crate::second_factor::two_factor::TwoFactor;
use crate::sign_in::users::{User, UserId, UserStore};
use crate::store::db;
use crate::view::{FieldKind, FlowView, StepView};
use crate::{Completion, Engine, EngineConfig, ErrorCode, Progress};

/// The TOTP site test engines link to.
pub(crate) fn totp_site() -> TotpSite {
    TotpSite {
        base_url: "http://totp.test".into(),
        issuer: "Stepgate".into(),
    }
}

/// An engine configuration with its database in `dir` (or on the test Postgres server), and
/// Redis under a prefix of its own when `STEPGATE_TEST_REDIS_URL` is set.
pub(crate) async fn test_config(dir: &Path) -> EngineConfig {
    let mut config = EngineConfig::new(
        db::test_database_url(dir).await,
        SecretKey([7; 32]),
        totp_site(),
    );
    config.redis_url = test_redis_url();
    config.redis_prefix = test_redis_prefix(dir);
    // Tests' webhook receivers listen on 127.0.0.1 (the policy's own tests allow nothing).
    config.webhook_allow =
        crate::apps::webhook_destination::WebhookAllow::parse("127.0.0.1").unwrap();
    // Passkeys need a host name (WebAuthn refuses addresses); the tests' authenticators
    // answer for this origin (`second_factor/soft_authenticator.rs`).
    config.public_url = Some(PASSKEY_ORIGIN.into());
    config
}

/// The origin test engines serve passkeys for.
pub(crate) const PASSKEY_ORIGIN: &str = "http://localhost:3000";

/// The Redis server of the Postgres + Redis run of the suite, if this is that run.
pub(crate) fn test_redis_url() -> Option<String> {
    std::env::var("STEPGATE_TEST_REDIS_URL")
        .ok()
        .filter(|url| !url.is_empty())
}

/// One key prefix per test folder: tests share the Redis server, never each other's keys, and
/// a test that reopens its folder finds its keys again.
pub(crate) fn test_redis_prefix(dir: &Path) -> String {
    let remembered = dir.join("redis-prefix");
    if let Ok(prefix) = std::fs::read_to_string(&remembered) {
        return prefix;
    }
    let prefix = format!("test:{}:", crate::flows::flow::FlowId::random());
    std::fs::write(&remembered, &prefix).expect("cannot write into the test's folder");
    prefix
}

/// An engine on a manual clock, its database in `dir`.
pub(crate) async fn engine_in(dir: &tempfile::TempDir) -> (Engine, ManualClock) {
    engine_with(test_config(dir.path()).await).await
}

/// An engine opened with `config` on a manual clock.
pub(crate) async fn engine_with(config: EngineConfig) -> (Engine, ManualClock) {
    let clock = ManualClock::at(1_700_000_000);
    (
        Engine::open_with_clock(config, Arc::new(clock.clone()))
            .await
            .unwrap(),
        clock,
    )
}

/// `start_flow` for a sign-in, with only the error code of a refusal.
pub(crate) async fn start(
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
pub(crate) async fn submit(
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

/// Form input from `(field, value)` pairs.
pub(crate) fn input(pairs: &[(&str, &str)]) -> Input {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Registers `email` with `password` as open registration does (the first account of an
/// installation is its admin).
pub(crate) async fn sign_up_open(
    engine: &Engine,
    email: &str,
    password: &str,
) -> crate::sign_in::registration::SignedUp {
    use crate::sign_in::registration::{RegistrationMode, SignUp};
    engine
        .sign_up(SignUp {
            mode: RegistrationMode::Open,
            email,
            password,
            confirm: password,
            invite: None,
            address: None,
        })
        .await
        .unwrap()
}

/// Registers the user who owns the accounts in a test: `owner@example.org`.
pub(crate) async fn register_owner(engine: &Engine) -> UserId {
    engine
        .register(
            "owner@example.org",
            "password-1-quiet-harbor",
            "password-1-quiet-harbor",
        )
        .await
        .unwrap()
        .id
}

/// Registers a user with TOTP on (enrolled through an authenticator app) and returns the
/// secret, so tests can compute codes.
pub(crate) async fn user_with_totp(engine: &Engine, email: &str) -> (User, Vec<u8>) {
    let user = engine
        .register(email, "password-1-quiet-harbor", "password-1-quiet-harbor")
        .await
        .unwrap();
    let tf = engine.two_factor();
    let enrollment = tf
        .begin_app_enrollment(user.id, email, engine.now())
        .await
        .unwrap();
    let secret = totp::base32_decode(&enrollment.secret_base32).unwrap();
    let code = totp::code_at(&secret, engine.now(), 6);
    tf.confirm_app_enrollment(user.id, &code, engine.now())
        .await
        .unwrap();
    (user, secret)
}

// The two-factor store on its own.

/// When the two-factor tests run.
pub(crate) const NOW: i64 = 1_700_000_010;
/// The seed the TOTP site hands out in the two-factor tests.
pub(crate) const SEED: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

/// A two-factor store with one user (TOTP off).
pub(crate) async fn two_factor_in(dir: &tempfile::TempDir) -> (TwoFactor, UserId) {
    let pool = db::connect(&db::test_database_url(dir.path()).await)
        .await
        .unwrap();
    let users = UserStore::new(pool.clone());
    let user = users
        .create(&Email::parse("t@example.org").unwrap(), "hash", NOW)
        .await
        .unwrap();
    let two_factor = TwoFactor::new(pool, SecretBox::new(&SecretKey([3; 32])), totp_site());
    (two_factor, user)
}

/// [`SEED`], decoded.
pub(crate) fn seed_secret() -> Vec<u8> {
    totp::base32_decode(SEED).unwrap()
}

/// The TOTP site's successful registration callback for [`SEED`].
pub(crate) fn callback(reg_token: &str, code: &str, timestamp: i64) -> RegistrationCallback {
    RegistrationCallback {
        success: Some("true".into()),
        seed_id: Some("seed_abc123".into()),
        seed: Some(SEED.into()),
        code: Some(code.into()),
        reg_token: Some(reg_token.into()),
        timestamp: Some(timestamp.to_string()),
        error: None,
    }
}

/// A two-factor store with one user, enrolled through the TOTP site at [`NOW`].
pub(crate) async fn enrolled(dir: &tempfile::TempDir) -> (TwoFactor, UserId) {
    let (tf, user) = two_factor_in(dir).await;
    let token = tf.begin_site_enrollment(user, NOW).await.unwrap();
    let code = totp::code_at(&seed_secret(), NOW, 6);
    tf.complete_site_enrollment(user, &callback(&token, &code, NOW), NOW)
        .await
        .unwrap();
    (tf, user)
}

// A provider against its double.

/// The browser session that starts the flows in a provider's tests.
pub(crate) const OWNER: &str = "owner";

/// An engine configuration in `dir` whose upstreams are `upstreams` (`REAL=BASE` pairs, as a
/// double hands them out).
pub(crate) async fn provider_config(dir: &Path, upstreams: &str) -> EngineConfig {
    let mut config = test_config(dir).await;
    config.upstreams = UpstreamMap::parse(upstreams).unwrap();
    // Short, so a stalled step is seen quickly.
    config.step_timeout = Duration::from_secs(1);
    // Every health check asked for runs (the tests check one account several times).
    config.account_check_interval = 0;
    config
}

/// A provider's tests: an engine on the system clock (the doubles keep real time) that sends
/// every upstream request to `sandbox`, and the owner who connects accounts. The engine serves
/// every connectable provider, as the server does; `provider` names the one under test.
pub(crate) struct ProviderSetup<D> {
    pub(crate) engine: Engine,
    pub(crate) user_id: UserId,
    pub(crate) sandbox: D,
    provider: &'static str,
    dir: tempfile::TempDir,
}

impl<D: Deref<Target = Hosts>> ProviderSetup<D> {
    pub(crate) async fn new(provider: &'static str, sandbox: D) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let engine = Self::open(dir.path(), &sandbox).await;
        let user_id = register_owner(&engine).await;
        ProviderSetup {
            engine,
            user_id,
            sandbox,
            provider,
            dir,
        }
    }

    async fn open(dir: &Path, sandbox: &D) -> Engine {
        let config = provider_config(dir, &sandbox.upstreams()).await;
        Engine::open_with_clock(config, Arc::new(SystemClock))
            .await
            .unwrap()
    }

    /// The folder of the test's database (and its other files).
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Closes the engine and opens a new one on the same database: a server restart.
    pub(crate) async fn reopen(&mut self) {
        self.engine.pool.close().await;
        self.engine = Self::open(self.dir.path(), &self.sandbox).await;
    }

    /// Starts a flow connecting an account of the owner's with the form `pairs`.
    pub(crate) async fn start(&self, pairs: &[(&str, &str)]) -> Result<Progress, StepError> {
        let connect = Purpose::Connect {
            user_id: self.user_id,
        };
        self.start_for(connect, pairs).await
    }

    /// Starts a flow for `purpose` (a connect or a reauth) with the form `pairs`.
    pub(crate) async fn start_for(
        &self,
        purpose: Purpose,
        pairs: &[(&str, &str)],
    ) -> Result<Progress, StepError> {
        self.engine
            .start_flow(self.provider, purpose, Some(OWNER.into()), &input(pairs))
            .await
    }

    /// Submits the form `pairs` to the step `flow` waits at.
    pub(crate) async fn submit(
        &self,
        flow: &FlowView,
        pairs: &[(&str, &str)],
    ) -> Result<Progress, StepError> {
        self.engine
            .submit_flow(&flow.flow_id, Some(OWNER), &input(pairs))
            .await
    }

    /// The owner's account `id`, as stored.
    pub(crate) async fn stored(&self, id: i64) -> ConnectedAccount {
        self.engine.accounts().get(self.user_id, id).await.unwrap()
    }

    /// The secrets kept for the owner's account `id`.
    pub(crate) async fn stored_secrets(&self, id: i64) -> serde_json::Value {
        self.engine
            .accounts()
            .secrets(self.user_id, id)
            .await
            .unwrap()
    }

    /// Runs the health check of every account of the owner's now.
    pub(crate) async fn check(&self) -> Vec<(i64, CheckOutcome)> {
        self.engine.check_accounts_now(self.user_id).await.unwrap()
    }

    /// A fresh upstream session, as the engine gives one to a step or a health check.
    pub(crate) fn session(&self) -> HttpSession {
        let map = UpstreamMap::parse(&self.sandbox.upstreams()).unwrap();
        Upstreams::new(map, Duration::from_secs(1)).session()
    }
}

/// The account a flow connected; anything else fails the test.
pub(crate) fn connected(progress: Result<Progress, StepError>) -> ConnectedAccount {
    match progress {
        Ok(Progress::Done(Completion::Connected(account))) => account,
        other => panic!("connected expected, got {other:?}"),
    }
}

// B2C sign-in (Lynk & Co, FlameConnect).

/// Each fault at a B2C step with what it does to the flow: a failed request, too much data or a
/// redirect Stepgate does not follow ends it with its error; B2C's pages out of shape (`None`)
/// offer the user the manual way instead.
pub(crate) const B2C_FAULTS: [(Fault, Option<ErrorCode>); 9] = [
    (Fault::Stall, Some(ErrorCode::Timeout)),
    (Fault::Unavailable503, Some(ErrorCode::ServiceUnavailable)),
    (Fault::Reset, Some(ErrorCode::CannotConnect)),
    (Fault::Garbage, None),
    (Fault::WrongShape, None),
    (Fault::Endless, Some(ErrorCode::UpstreamTooLarge)),
    (Fault::LoopbackRedirect, Some(ErrorCode::BadRedirect)),
    (Fault::RedirectLoop, Some(ErrorCode::BadRedirect)),
    (Fault::HttpRedirect, Some(ErrorCode::BadRedirect)),
];

/// What a B2C fault does at the token endpoint or after it: answers out of shape end the flow
/// with the provider's fault, since the manual way would end at the same endpoint.
pub(crate) fn past_the_pages(expected: Option<ErrorCode>) -> Option<ErrorCode> {
    expected.or(Some(ErrorCode::UpstreamOutOfShape))
}

/// This process's resident memory in MiB, from /proc/self/status (Linux). Other tests share
/// the process: compare growth across the work being measured, not the total.
pub(crate) fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib / 1024
}

/// The hostile answers an upstream might send, each with the code its step must fail with.
pub(crate) const HOSTILE_FAULTS: [(Fault, ErrorCode); 4] = [
    (Fault::Endless, ErrorCode::UpstreamTooLarge),
    (Fault::LoopbackRedirect, ErrorCode::BadRedirect),
    (Fault::RedirectLoop, ErrorCode::BadRedirect),
    (Fault::HttpRedirect, ErrorCode::BadRedirect),
];

/// Checks a flow's answer to a fault (`at` says which, for the message): `Some(code)` ends the
/// flow with that error; `None` moves it to a next step, which is returned.
pub(crate) fn answer_to_fault(
    answer: Result<Progress, StepError>,
    expected: Option<ErrorCode>,
    at: &str,
) -> Option<FlowView> {
    match (expected, answer) {
        (Some(code), Err(error)) => {
            assert_eq!(error.code, code, "{at}");
            None
        }
        (None, Ok(Progress::Next(view))) => Some(view),
        (expected, answer) => panic!("{at}: {expected:?} expected, got {answer:?}"),
    }
}

/// The manual step's link to the provider's own sign-in page, labelled `label` (asserting the
/// view is that step: one Redirect URL field and Connect).
pub(crate) fn manual_link(view: &FlowView, label: &str) -> String {
    let StepView::Form {
        fields,
        submit,
        links,
        ..
    } = &view.step
    else {
        panic!("a form expected: {view:?}");
    };
    assert_eq!(
        (
            fields[0].name.as_str(),
            fields[0].label.as_str(),
            fields[0].kind
        ),
        ("redirect_url", "Redirect URL", FieldKind::Url)
    );
    assert_eq!(submit, "Connect");
    assert_eq!(links[0].label, label);
    links[0].url.clone()
}

/// The value of `<input … name="{name}" … value="…">` in a page.
pub(crate) fn html_input_value(page: &str, name: &str) -> String {
    let at = page
        .find(&format!("name=\"{name}\""))
        .unwrap_or_else(|| panic!("no {name} in {page}"));
    let rest = &page[at..];
    let start = rest.find("value=\"").unwrap() + 7;
    let end = rest[start..].find('"').unwrap();
    rest[start..start + end]
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// A user's browser on a double's sign-in pages: it keeps cookies and follows no redirects.
pub(crate) struct Browser(reqwest::Client);

impl Browser {
    pub(crate) fn new() -> Browser {
        Browser(
            reqwest::Client::builder()
                .cookie_store(true)
                // As a browser: redirects over http(s) are followed (B2C's routing hops), an
                // app's custom scheme is where it stops.
                .redirect(reqwest::redirect::Policy::custom(|attempt| {
                    if matches!(attempt.url().scheme(), "http" | "https")
                        && attempt.previous().len() < 10
                    {
                        attempt.follow()
                    } else {
                        attempt.stop()
                    }
                }))
                .build()
                .unwrap(),
        )
    }

    /// Opens `link`; the page must load.
    pub(crate) async fn open(&self, link: &str) -> String {
        let page = self.0.get(link).send().await.unwrap();
        assert_eq!(page.status(), 200);
        page.text().await.unwrap()
    }

    /// Sends a page's form to `url`; the page that answers.
    pub(crate) async fn send_form(&self, url: &str, fields: &[(&str, &str)]) -> String {
        self.0
            .post(url)
            .form(fields)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// Everything the database holds, to search for secrets in clear: the SQLite files in `dir`
/// (the pool is closed first so the WAL is written back), or, on Postgres, every table's rows
/// as text (bytes there read as hex).
pub(crate) async fn stored_bytes(pool: &db::Pool, dir: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    if db::dialect(pool) == db::Dialect::Postgres {
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT CAST(table_name AS TEXT) FROM information_schema.tables
             WHERE table_schema = 'public'",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        assert!(tables.len() > 5, "the schema is there: {tables:?}");
        for table in tables {
            let rows: Vec<String> =
                sqlx::query_scalar(&format!("SELECT CAST(t AS TEXT) FROM \"{table}\" t"))
                    .fetch_all(pool)
                    .await
                    .unwrap();
            for row in rows {
                bytes.extend(row.into_bytes());
            }
        }
    }
    pool.close().await;
    for file in std::fs::read_dir(dir).unwrap() {
        bytes.extend(std::fs::read(file.unwrap().path()).unwrap());
    }
    bytes
}

/// The user a step signed in (its session opened), if it did.
pub(crate) fn signed_in_user(progress: Result<Progress, ErrorCode>) -> Option<UserId> {
    match progress {
        Ok(Progress::Done(Completion::SignedIn { user_id, .. })) => Some(user_id),
        _ => None,
    }
}
