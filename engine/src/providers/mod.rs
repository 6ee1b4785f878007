//! A provider says how one kind of login talks: which steps it has and what each step sends. It
//! reads like the list of its steps (Home Assistant's `async_step_*`): each step gets a
//! [`StepContext`] and the provider's own typed state, and answers with a [`Step`] from a small
//! vocabulary. The engine ([`crate::Engine`]) does the rest for every provider alike: it stores
//! and seals flows, counts attempts, enforces expiry, seals tokens and refuses an account that
//! is already connected.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::flows::upstream::{HttpSession, UpstreamRequest};
use crate::sign_in::users::UserId;
use crate::view::StepView;
use crate::ErrorCode;

pub mod api;
pub mod b2c;
pub mod flameconnect;
pub mod librus;
pub mod local;
pub mod lynkco;
pub mod xiaomi;
pub mod xiaomi_api;

/// The fields a user submitted at a step, by name.
pub type Input = BTreeMap<String, String>;

/// Why a flow runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "purpose", rename_all = "snake_case")]
pub enum Purpose {
    /// Signing in to Stepgate itself.
    SignIn,
    /// Connecting a third-party account to user `user_id`.
    Connect { user_id: UserId },
    /// Signing in again to account `account_id` of user `user_id` (its tokens were refused).
    Reauth { user_id: UserId, account_id: i64 },
}

/// What a step may use: why the flow runs, the time, and the flow's own HTTP session (its
/// cookie jar is saved with the flow). No globals: everything a step needs is here or in the
/// provider itself.
pub struct StepContext<'a> {
    pub purpose: Purpose,
    /// Unix seconds.
    pub now: i64,
    pub http: &'a mut HttpSession,
}

/// An error a step ends with: its code, the field it is about (if one), and the provider's own
/// words (shown under our sentence; never a secret).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StepError {
    pub code: ErrorCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl StepError {
    pub fn new(code: ErrorCode) -> Self {
        StepError {
            code,
            field: None,
            detail: None,
        }
    }

    /// The error is about one field (the page puts it next to that field).
    pub fn on(mut self, field: &str) -> Self {
        self.field = Some(field.to_owned());
        self
    }

    /// The provider's own message, e.g. Librus' `errors[0].message`.
    pub fn detail(mut self, text: impl Into<String>) -> Self {
        self.detail = Some(text.into());
        self
    }
}

impl From<ErrorCode> for StepError {
    fn from(code: ErrorCode) -> Self {
        StepError::new(code)
    }
}

/// A third-party account a flow connected: who it is and what to keep (sealed at rest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    /// The provider's stable id for the account (the login, the user id): unique per user.
    pub account_id: String,
    /// What the user recognises it by.
    pub display_name: String,
    /// Tokens, cookies and other secrets, as the provider's JSON.
    pub secrets: serde_json::Value,
}

/// What a step answers (Home Assistant's form / create_entry / abort, plus "try again").
#[derive(Debug, Clone, PartialEq)]
pub enum Step<S> {
    /// The flow waits for the user at step `step`, shown as `view`, with `state` kept for it.
    Show {
        step: &'static str,
        view: StepView,
        state: S,
    },
    /// A wrong answer: the same step again with this error. Counts an attempt; the flow ends
    /// with `too_many_attempts` at the limit. The state is kept as it was.
    Retry(StepError),
    /// Not now: the same step again with this error (e.g. the account is cooling down). No
    /// attempt is counted.
    Wait(StepError),
    /// The flow ends with this error; its state and upstream session are discarded.
    Abort(StepError),
    /// A local account proved who it is: the app opens a session for it.
    SignedIn { user_id: UserId },
    /// A third-party account is connected.
    Connected(NewAccount),
}

impl<S> Step<S> {
    /// Shorthand for an abort with a bare code.
    pub fn abort(code: ErrorCode) -> Self {
        Step::Abort(StepError::new(code))
    }

    /// Shorthand for a retry with a bare code.
    pub fn retry(code: ErrorCode) -> Self {
        Step::Retry(StepError::new(code))
    }

    fn map_state<T>(self, f: impl FnOnce(S) -> T) -> Step<T> {
        match self {
            Step::Show { step, view, state } => Step::Show {
                step,
                view,
                state: f(state),
            },
            Step::Retry(e) => Step::Retry(e),
            Step::Wait(e) => Step::Wait(e),
            Step::Abort(e) => Step::Abort(e),
            Step::SignedIn { user_id } => Step::SignedIn { user_id },
            Step::Connected(a) => Step::Connected(a),
        }
    }
}

/// An error code ends the flow: a step written as `Result<Step<S>, ErrorCode>` (so `?` works
/// inside it) finishes with `.unwrap_or_else(Step::from)`.
impl<S> From<ErrorCode> for Step<S> {
    fn from(code: ErrorCode) -> Self {
        Step::abort(code)
    }
}

/// What a health check learnt about a connected account's kept secrets.
#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    /// The upstream accepted them. `Some(secrets)` when the check had to renew them (a refresh
    /// grant rotates the refresh token): the engine stores these in place of the old ones.
    Accepted(Option<serde_json::Value>),
    /// The upstream refused them: the account needs the user to sign in again.
    Rejected,
    /// The upstream could not be asked (down, slow, out of shape): nothing is known, so the
    /// account is not marked ("degraded", never "needs sign-in").
    Unreachable(ErrorCode),
}

/// One kind of login. `State` is what the flow keeps between the user's steps: an enum with a
/// variant per waiting step, serialised and sealed by the engine (never hand-rolled JSON).
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    type State: Serialize + DeserializeOwned + Send + Sync;

    /// The name flows are stored under, and that URLs and tests use.
    fn name(&self) -> &'static str;

    /// The name people know the service by ("Librus").
    fn title(&self) -> &'static str;

    /// The first form, as the connect page shows it before anything is sent.
    fn first_view(&self) -> StepView;

    /// The first step: the answer to [`Provider::first_view`]'s form.
    async fn start(&self, cx: &mut StepContext<'_>, input: &Input) -> Step<Self::State>;

    /// A later step, with the state the previous step left.
    async fn submit(
        &self,
        cx: &mut StepContext<'_>,
        state: Self::State,
        input: &Input,
    ) -> Step<Self::State>;

    /// A cheap check of an account's kept secrets: an authenticated call, or a refresh where
    /// that is the only way. `http` is a fresh session (empty cookie jar).
    async fn check(&self, http: &mut HttpSession, now: i64, secrets: &serde_json::Value) -> Health;

    /// Renews the account's session without the user (a refresh grant, Synergia's
    /// `refreshToken`, a new `serviceToken` from Xiaomi's `passToken`): `Accepted(Some(new
    /// secrets))` when renewed, `Accepted(None)` when there is nothing to renew, `Rejected` when
    /// the provider wants the user again. `http` is a fresh session.
    async fn renew(&self, http: &mut HttpSession, now: i64, secrets: &serde_json::Value) -> Health;

    /// When the kept secrets stop working (Unix seconds; the earliest expiry), if known.
    fn expires_at(&self, secrets: &serde_json::Value) -> Option<i64>;

    /// What the user's own apps get through the API: the usable credentials out of the kept
    /// secrets, never a refresh token or anything else that only renews them.
    fn app_credentials(&self, secrets: &serde_json::Value) -> serde_json::Value;

    /// The provider's own API, as the API proxy may reach it (`None`: the proxy has nowhere to
    /// send this provider's requests).
    fn api(&self) -> Option<&'static api::ProviderApi> {
        None
    }

    /// Puts the account's credentials into an app's `request` for [`Provider::api`] (a bearer
    /// token, cookies, a signature): `needs_sign_in` when the kept secrets lack what it takes.
    fn authorize_api_request(
        &self,
        _request: UpstreamRequest,
        _secrets: &serde_json::Value,
        _now: i64,
    ) -> Result<UpstreamRequest, ErrorCode> {
        Err(ErrorCode::ProxyNotAllowed)
    }

    /// What the first form is filled in with when the user signs in to account
    /// `display_name` again (reauth): by default the first field holds the account name.
    fn reauth_prefill(&self, display_name: &str, _secrets: &serde_json::Value) -> Input {
        let mut prefill = Input::new();
        if let StepView::Form { fields, .. } = self.first_view() {
            if let Some(first) = fields.first() {
                prefill.insert(first.name.clone(), display_name.to_owned());
            }
        }
        prefill
    }
}

/// [`Provider`] with its state as JSON, so the engine can hold any provider in one map.
#[async_trait]
pub trait AnyProvider: Send + Sync {
    fn name(&self) -> &'static str;
    fn title(&self) -> &'static str;
    fn first_view(&self) -> StepView;
    async fn start(&self, cx: &mut StepContext<'_>, input: &Input) -> Step<serde_json::Value>;
    async fn submit(
        &self,
        cx: &mut StepContext<'_>,
        state: serde_json::Value,
        input: &Input,
    ) -> Step<serde_json::Value>;
    async fn check(&self, http: &mut HttpSession, now: i64, secrets: &serde_json::Value) -> Health;
    async fn renew(&self, http: &mut HttpSession, now: i64, secrets: &serde_json::Value) -> Health;
    fn expires_at(&self, secrets: &serde_json::Value) -> Option<i64>;
    fn app_credentials(&self, secrets: &serde_json::Value) -> serde_json::Value;
    fn reauth_prefill(&self, display_name: &str, secrets: &serde_json::Value) -> Input;
    fn api(&self) -> Option<&'static api::ProviderApi>;
    fn authorize_api_request(
        &self,
        request: UpstreamRequest,
        secrets: &serde_json::Value,
        now: i64,
    ) -> Result<UpstreamRequest, ErrorCode>;
}

fn to_json<S: Serialize>(state: S) -> serde_json::Value {
    serde_json::to_value(state).expect("provider state serialises")
}

#[async_trait]
impl<P: Provider> AnyProvider for P {
    fn name(&self) -> &'static str {
        Provider::name(self)
    }

    fn title(&self) -> &'static str {
        Provider::title(self)
    }

    fn first_view(&self) -> StepView {
        Provider::first_view(self)
    }

    async fn start(&self, cx: &mut StepContext<'_>, input: &Input) -> Step<serde_json::Value> {
        Provider::start(self, cx, input).await.map_state(to_json)
    }

    async fn submit(
        &self,
        cx: &mut StepContext<'_>,
        state: serde_json::Value,
        input: &Input,
    ) -> Step<serde_json::Value> {
        let Ok(state) = serde_json::from_value::<P::State>(state) else {
            // A flow stored by another version of this provider: it cannot go on.
            tracing::warn!(
                provider = Provider::name(self),
                "a flow's state no longer fits its provider"
            );
            return Step::abort(ErrorCode::FlowExpired);
        };
        Provider::submit(self, cx, state, input)
            .await
            .map_state(to_json)
    }

    async fn check(&self, http: &mut HttpSession, now: i64, secrets: &serde_json::Value) -> Health {
        Provider::check(self, http, now, secrets).await
    }

    async fn renew(&self, http: &mut HttpSession, now: i64, secrets: &serde_json::Value) -> Health {
        Provider::renew(self, http, now, secrets).await
    }

    fn expires_at(&self, secrets: &serde_json::Value) -> Option<i64> {
        Provider::expires_at(self, secrets)
    }

    fn app_credentials(&self, secrets: &serde_json::Value) -> serde_json::Value {
        Provider::app_credentials(self, secrets)
    }

    fn reauth_prefill(&self, display_name: &str, secrets: &serde_json::Value) -> Input {
        Provider::reauth_prefill(self, display_name, secrets)
    }

    fn api(&self) -> Option<&'static api::ProviderApi> {
        Provider::api(self)
    }

    fn authorize_api_request(
        &self,
        request: UpstreamRequest,
        secrets: &serde_json::Value,
        now: i64,
    ) -> Result<UpstreamRequest, ErrorCode> {
        Provider::authorize_api_request(self, request, secrets, now)
    }
}

/// A URL written in a provider's own code (a constant, or constants put together): a typo
/// there is a bug that the provider's first test finds.
pub(crate) fn fixed_url(text: &str) -> url::Url {
    url::Url::parse(text).unwrap_or_else(|e| panic!("a provider's own URL `{text}`: {e}"))
}

/// One step (all its upstream requests) must finish within this.
pub const WHOLE_STEP: std::time::Duration = std::time::Duration::from_secs(30);

/// The input naming which of a form's buttons was pressed ([`crate::view::ActionSpec`]).
pub const ACTION_FIELD: &str = "action";

/// Runs a step's upstream work within [`WHOLE_STEP`] (else `timeout`).
pub async fn bounded<T>(
    work: impl std::future::Future<Output = Result<T, StepError>>,
) -> Result<T, StepError> {
    tokio::time::timeout(WHOLE_STEP, work)
        .await
        .unwrap_or_else(|_| Err(ErrorCode::Timeout.into()))
}

/// A check or renewal that must answer within `limit` (else `Unreachable(timeout)`).
pub async fn health_within(
    limit: std::time::Duration,
    work: impl std::future::Future<Output = Health>,
) -> Health {
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or(Health::Unreachable(ErrorCode::Timeout))
}

/// The named fields of `secrets`, for [`Provider::app_credentials`] (absent ones are left out).
pub fn pick(secrets: &serde_json::Value, names: &[&str]) -> serde_json::Value {
    let picked = names
        .iter()
        .filter_map(|name| Some(((*name).to_owned(), secrets.get(*name)?.clone())))
        .collect();
    serde_json::Value::Object(picked)
}

/// The earliest of the named Unix-seconds fields of `secrets`, for [`Provider::expires_at`].
pub fn earliest(secrets: &serde_json::Value, names: &[&str]) -> Option<i64> {
    names
        .iter()
        .filter_map(|name| secrets.get(*name)?.as_i64())
        .min()
}

/// The providers an engine runs, by name: `local` and the connectable ones, and any a test adds
/// ([`crate::Engine::with_provider`]). Cheap to clone; clones share one table.
#[derive(Clone)]
pub struct ProviderRegistry {
    by_name: Arc<RwLock<HashMap<&'static str, Arc<dyn AnyProvider>>>>,
    /// The connectable ones as (name, title), in the picker's order.
    connectable: Arc<Vec<(&'static str, &'static str)>>,
}

impl ProviderRegistry {
    /// `local` and every [`connectable`] provider.
    pub fn new(local: Arc<dyn AnyProvider>) -> Self {
        let connectable = connectable();
        let picker = connectable.iter().map(|p| (p.name(), p.title())).collect();
        let mut by_name = HashMap::from([(local.name(), local)]);
        by_name.extend(connectable.into_iter().map(|p| (p.name(), p)));
        Self {
            by_name: Arc::new(RwLock::new(by_name)),
            connectable: Arc::new(picker),
        }
    }

    /// Adds (or replaces) a provider; every clone of the registry sees it.
    pub fn add(&self, provider: Arc<dyn AnyProvider>) {
        let mut by_name = self.by_name.write().unwrap_or_else(|e| e.into_inner());
        by_name.insert(provider.name(), provider);
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn AnyProvider>> {
        let by_name = self.by_name.read().unwrap_or_else(|e| e.into_inner());
        by_name.get(name).cloned()
    }

    /// The providers a user can connect: (name, title), in the picker's order.
    pub fn connectable(&self) -> &[(&'static str, &'static str)] {
        &self.connectable
    }
}

/// The third-party providers a signed-in user can connect, in the order the picker shows them.
///
/// Adding a provider takes: its module under `providers/` (with its tests) and its `pub mod`
/// and one line here; its double under `sandbox/src/` (a `pub mod` in `sandbox/src/lib.rs` and
/// its start in `sandbox/src/main.rs`) and one line per host in `sandbox/src/doubles.rs`, from
/// which the scripts, the Playwright config and loadgen take ports and `STEPGATE_UPSTREAMS`;
/// its Playwright spec; and its demo password, one line in `DEMO_PASSWORDS` there too.
pub fn connectable() -> Vec<std::sync::Arc<dyn AnyProvider>> {
    vec![
        std::sync::Arc::new(librus::LibrusProvider),
        std::sync::Arc::new(xiaomi::XiaomiProvider),
        std::sync::Arc::new(lynkco::LynkcoProvider),
        std::sync::Arc::new(flameconnect::FlameConnectProvider),
    ]
}

/// A required, non-blank field.
pub fn required<'a>(input: &'a Input, name: &str) -> Result<&'a str, ErrorCode> {
    match input.get(name) {
        Some(value) if !value.trim().is_empty() => Ok(value),
        _ => Err(ErrorCode::MissingFields),
    }
}
