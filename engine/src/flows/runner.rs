//! The flow runner: every provider's flows by the same rules. It creates and stores flows,
//! seals their state (the provider's typed state, why the flow runs, and the upstream cookie
//! jar) bound to the flow id, counts wrong answers, enforces expiry and ownership, consumes a
//! finished flow exactly once, and stores connected accounts (refusing one already connected).

use serde::{Deserialize, Serialize};

use crate::accounts::sign_in_links::SignInLinks;
use crate::accounts::store::AccountStore;
use crate::accounts::store::ConnectedAccount;
use crate::accounts::upkeep::Upkeep;
use crate::apps::events::AccountEvent;
use crate::apps::events::AccountEvents;
use crate::base::clock::Clock;
use crate::base::crypto::SecretBox;
use crate::base::fields::check_field_sizes;
use crate::base::metrics;
use crate::flows::flow::{Flow, FlowId, FlowKind, MAX_ATTEMPTS};
use crate::flows::store::FlowStore;
use crate::flows::upstream::HttpSession;
use crate::flows::upstream::Upstreams;
use crate::providers::ProviderRegistry;
use crate::providers::{AnyProvider, Input, NewAccount, Purpose, Step, StepContext, StepError};
use crate::sign_in::admin::Admin;
use crate::sign_in::sessions::SessionStore;
use crate::sign_in::sessions::SessionToken;
use crate::sign_in::users::UserId;
use crate::store::db::{WriteTx, Writes};
use crate::view::{FlowView, StepView};
use crate::ErrorCode;
use std::sync::Arc;
use std::time::Duration;

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

/// What is sealed into a flow between steps.
#[derive(Serialize, Deserialize)]
struct SealedFlow {
    purpose: Purpose,
    state: serde_json::Value,
    /// The upstream cookie jar ([`HttpSession::save`]).
    http: String,
    /// The sign-in link this reauth runs for (`accounts/sign_in_links.rs`): finishing it uses
    /// the link. (Absent from flows sealed before links existed.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    link: Option<String>,
}

/// The `purpose` label of the flow metrics.
fn purpose_label(purpose: Purpose) -> &'static str {
    match purpose {
        Purpose::SignIn => "sign_in",
        Purpose::Connect { .. } => "connect",
        Purpose::Reauth { .. } => "reauth",
    }
}

/// Counts a sign-in step's outcome (a local sign-in flow's first step or a later one).
fn count_sign_in(second_factor: bool, answer: &Result<Progress, StepError>) {
    let done = answer
        .as_ref()
        .map(|progress| matches!(progress, Progress::Done(_)))
        .map_err(|e| e.code);
    if let Some(outcome) = metrics::SignInOutcome::of_step(second_factor, done) {
        metrics::sign_in(outcome);
    }
}

fn kind_of(purpose: Purpose) -> FlowKind {
    match purpose {
        Purpose::SignIn => FlowKind::Login,
        Purpose::Connect { .. } | Purpose::Reauth { .. } => FlowKind::Connect,
    }
}

/// A step that must end within `limit` (all its upstream requests together, however each one
/// is timed): past it, `timeout`, and a stored flow stays at the step it was at.
async fn within_deadline<S>(
    limit: std::time::Duration,
    step: impl std::future::Future<Output = Step<S>>,
) -> Step<S> {
    tokio::time::timeout(limit, step).await.unwrap_or_else(|_| {
        tracing::warn!(?limit, "a step ran past its deadline");
        Step::Wait(StepError::new(ErrorCode::Timeout))
    })
}

/// Runs every provider's flows by the same rules (see the module doc).
#[derive(Clone)]
pub struct FlowRunner {
    /// A finished flow's result is written in one transaction of this database.
    pub(crate) writes: Writes,
    pub(crate) flows: Arc<dyn FlowStore>,
    pub(crate) providers: ProviderRegistry,
    pub(crate) upstreams: Upstreams,
    /// Seals flow state (bound to the flow id).
    pub(crate) secrets: SecretBox,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) flow_ttl: Duration,
    pub(crate) accounts: AccountStore,
    pub(crate) sessions: SessionStore,
    pub(crate) events: AccountEvents,
    pub(crate) upkeep: Upkeep,
    pub(crate) admin: Admin,
    /// Checks and uses the sign-in link a reauth runs for.
    pub(crate) sign_in_links: SignInLinks,
}

impl FlowRunner {
    fn provider(&self, name: &str) -> Result<Arc<dyn AnyProvider>, ErrorCode> {
        self.providers.get(name).ok_or(ErrorCode::NotFound)
    }

    /// The providers a user can connect: (name, title), in the picker's order.
    pub fn connectable(&self) -> &[(&'static str, &'static str)] {
        self.providers.connectable()
    }

    /// The title of connectable provider `name` ("Librus").
    pub fn title_of(&self, name: &str) -> Option<&'static str> {
        self.connectable()
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, title)| *title)
    }

    /// The first form of `provider` (what its connect page shows before anything is sent).
    pub fn first_view(&self, provider: &str) -> Result<StepView, ErrorCode> {
        Ok(self.provider(provider)?.first_view())
    }

    fn seal_state(&self, flow: &mut Flow, sealed: &SealedFlow) -> Result<(), ErrorCode> {
        let plain = serde_json::to_vec(sealed).map_err(|_| ErrorCode::Unknown)?;
        flow.state = self.secrets.seal(
            &plain,
            &crate::flows::store::state_associated_data(&flow.id.to_string()),
        );
        Ok(())
    }

    fn unseal(&self, flow: &Flow) -> Result<SealedFlow, ErrorCode> {
        let plain = self
            .secrets
            .open(
                &flow.state,
                &crate::flows::store::state_associated_data(&flow.id.to_string()),
            )
            .map_err(|_| {
                tracing::error!(flow = %flow.id, "a flow's state did not decrypt");
                ErrorCode::FlowExpired
            })?;
        serde_json::from_slice(&plain).map_err(|_| ErrorCode::FlowExpired)
    }

    /// The stored flow if it exists, belongs to `owner` and has not expired (an expired one is
    /// removed). Unknown, expired and foreign flows all answer `flow_expired`, so a flow id
    /// reveals nothing to anyone but its owner.
    /// With `provider`, a flow of another provider is refused the same way (a page of one
    /// provider cannot continue another's flow).
    async fn live_flow(
        &self,
        flow_id: &str,
        owner: Option<&str>,
        provider: Option<&str>,
    ) -> Result<Flow, ErrorCode> {
        let id: FlowId = flow_id.parse().map_err(|_| ErrorCode::FlowExpired)?;
        let flow = self.flows.get(&id).await?.ok_or(ErrorCode::FlowExpired)?;
        if flow.owner.as_deref() != owner || provider.is_some_and(|p| p != flow.provider) {
            return Err(ErrorCode::FlowExpired);
        }
        if flow.is_expired(self.clock.now()) {
            self.flows.remove(&id).await?;
            return Err(ErrorCode::FlowExpired);
        }
        Ok(flow)
    }

    /// The step a flow of `provider` waits at, for its owner (to render it again after a
    /// reload).
    pub async fn flow_view(
        &self,
        provider: &str,
        flow_id: &str,
        owner: Option<&str>,
    ) -> Result<FlowView, ErrorCode> {
        let flow = self.live_flow(flow_id, owner, Some(provider)).await?;
        let step = flow.view.ok_or(ErrorCode::FlowExpired)?;
        Ok(FlowView {
            flow_id: flow.id.to_string(),
            step,
        })
    }

    /// Runs the first step of `provider`'s flow, for `purpose`, in the browser session `owner`.
    pub async fn start_flow(
        &self,
        provider_name: &str,
        purpose: Purpose,
        owner: Option<String>,
        input: &Input,
    ) -> Result<Progress, StepError> {
        self.start_flow_for(provider_name, purpose, owner, input, None)
            .await
    }

    /// [`FlowRunner::start_flow`] of a reauth that sign-in link `link` runs: the link must be
    /// live when the flow finishes, and finishing it uses the link.
    pub(crate) async fn start_linked_flow(
        &self,
        provider_name: &str,
        purpose: Purpose,
        owner: String,
        input: &Input,
        link: &str,
    ) -> Result<Progress, StepError> {
        if !matches!(purpose, Purpose::Reauth { .. }) {
            return Err(ErrorCode::Unknown.into());
        }
        self.start_flow_for(
            provider_name,
            purpose,
            Some(owner),
            input,
            Some(link.to_owned()),
        )
        .await
    }

    /// [`FlowRunner::first_step`], counted: a started flow (of a provider that exists), and
    /// its end when the first step ended it.
    async fn start_flow_for(
        &self,
        provider_name: &str,
        purpose: Purpose,
        owner: Option<String>,
        input: &Input,
        link: Option<String>,
    ) -> Result<Progress, StepError> {
        let answer = self
            .first_step(provider_name, purpose, owner, input, link)
            .await;
        if let Ok(provider) = self.provider(provider_name) {
            let (provider, purpose_label) = (provider.name(), purpose_label(purpose));
            metrics::flow_started(provider, purpose_label);
            match &answer {
                Ok(Progress::Next(_)) => {}
                Ok(Progress::Done(_)) => metrics::flow_completed(provider, purpose_label),
                // Nothing was stored: the flow ends here.
                Err(e) => metrics::flow_failed(provider, purpose_label, e.code),
            }
        }
        if purpose == Purpose::SignIn {
            count_sign_in(false, &answer);
        }
        answer
    }

    async fn first_step(
        &self,
        provider_name: &str,
        purpose: Purpose,
        owner: Option<String>,
        input: &Input,
        link: Option<String>,
    ) -> Result<Progress, StepError> {
        check_field_sizes(input)?;
        let provider = self.provider(provider_name)?.clone();
        let mut http = self.upstreams.session().labelled(provider.name(), "start");
        let mut cx = StepContext {
            purpose,
            now: self.clock.now(),
            http: &mut http,
        };
        match within_deadline(
            self.upstreams.step_deadline(),
            provider.start(&mut cx, input),
        )
        .await
        {
            Step::Show { step, view, state } => {
                let mut flow = Flow::new(
                    kind_of(purpose),
                    provider.name(),
                    step,
                    owner,
                    self.clock.now(),
                    self.flow_ttl,
                );
                self.seal_state(
                    &mut flow,
                    &SealedFlow {
                        purpose,
                        state,
                        http: http.save()?,
                        link,
                    },
                )?;
                flow.view = Some(view.clone());
                self.flows.insert(&flow).await.map_err(ErrorCode::from)?;
                Ok(Progress::Next(FlowView {
                    flow_id: flow.id.to_string(),
                    step: view,
                }))
            }
            // Nothing is stored yet: a first step's error is simply the answer.
            Step::Retry(e) | Step::Wait(e) | Step::Abort(e) => Err(e),
            Step::SignedIn { user_id } => self.signed_in(purpose, user_id, None).await,
            Step::Connected(account) => {
                self.connected(None, purpose, provider.name(), account, link.as_deref())
                    .await
            }
        }
    }

    /// Runs the next step of a stored flow (see [`Engine::live_flow`] for who may).
    pub async fn submit_flow(
        &self,
        flow_id: &str,
        owner: Option<&str>,
        input: &Input,
    ) -> Result<Progress, StepError> {
        self.submit_flow_of(None, flow_id, owner, input).await
    }

    /// [`Engine::submit_flow`] for a page of `provider`: another provider's flow is refused.
    pub async fn submit_provider_flow(
        &self,
        provider: &str,
        flow_id: &str,
        owner: Option<&str>,
        input: &Input,
    ) -> Result<Progress, StepError> {
        self.submit_flow_of(Some(provider), flow_id, owner, input)
            .await
    }

    async fn submit_flow_of(
        &self,
        provider: Option<&str>,
        flow_id: &str,
        owner: Option<&str>,
        input: &Input,
    ) -> Result<Progress, StepError> {
        check_field_sizes(input)?;
        let flow = self.live_flow(flow_id, owner, provider).await?;
        let id = flow.id;
        let provider = self.provider(&flow.provider)?.clone();
        let sealed = self.unseal(&flow)?;
        let mut http: HttpSession = self
            .upstreams
            .restore(&sealed.http)?
            .labelled(provider.name(), &flow.step);
        let mut cx = StepContext {
            purpose: sealed.purpose,
            now: self.clock.now(),
            http: &mut http,
        };
        let purpose = sealed.purpose;
        let link = sealed.link.clone();
        let step = provider.submit(&mut cx, sealed.state.clone(), input);
        let step = within_deadline(self.upstreams.step_deadline(), step).await;
        // Whether the stored flow is removed, whatever the answer: then an error ends it.
        let ends = matches!(
            step,
            Step::Abort(_) | Step::SignedIn { .. } | Step::Connected(_)
        );
        let retried = matches!(step, Step::Retry(_));
        // In a block, so that every answer (an early `?` too) is counted below.
        let answer: Result<Progress, StepError> = async {
            match step {
                Step::Show { step, view, state } => {
                    let mut next = Flow {
                        step: step.to_owned(),
                        view: Some(view.clone()),
                        ..flow
                    };
                    self.seal_state(
                        &mut next,
                        &SealedFlow {
                            purpose,
                            state,
                            http: http.save()?,
                            link,
                        },
                    )?;
                    self.flows.update(&next).await.map_err(ErrorCode::from)?;
                    Ok(Progress::Next(FlowView {
                        flow_id: next.id.to_string(),
                        step: view,
                    }))
                }
                Step::Wait(error) => Err(error),
                Step::Retry(error) => {
                    // The answer was wrong; cookies the upstream set on the way are kept.
                    let mut kept = flow;
                    self.seal_state(
                        &mut kept,
                        &SealedFlow {
                            purpose,
                            state: sealed.state,
                            http: http.save()?,
                            link,
                        },
                    )?;
                    self.flows.update(&kept).await.map_err(ErrorCode::from)?;
                    let attempts = self
                        .flows
                        .record_attempt(&id)
                        .await
                        .map_err(ErrorCode::from)?
                        .ok_or(ErrorCode::FlowExpired)?;
                    if attempts >= MAX_ATTEMPTS {
                        self.flows.remove(&id).await.map_err(ErrorCode::from)?;
                        return Err(ErrorCode::TooManyAttempts.into());
                    }
                    Err(error)
                }
                Step::Abort(error) => {
                    // No silent retries: a failed flow is discarded with its upstream session.
                    self.flows.remove(&id).await.map_err(ErrorCode::from)?;
                    Err(error)
                }
                // The result and the flow's removal are one transaction (`finish`). Two submits
                // racing to complete one flow are kept apart by the provider (a code is accepted
                // once) and by the result's own uniqueness (one session per flow, one account per
                // upstream account).
                Step::SignedIn { user_id } => self.signed_in(purpose, user_id, Some(&id)).await,
                Step::Connected(account) => {
                    self.connected(
                        Some(&id),
                        purpose,
                        provider.name(),
                        account,
                        link.as_deref(),
                    )
                    .await
                }
            }
        }
        .await;
        let (name, purpose_label) = (provider.name(), purpose_label(purpose));
        match &answer {
            Ok(Progress::Done(_)) => metrics::flow_completed(name, purpose_label),
            Err(e) if ends || (retried && e.code == ErrorCode::TooManyAttempts) => {
                metrics::flow_failed(name, purpose_label, e.code)
            }
            _ => {}
        }
        if purpose == Purpose::SignIn {
            count_sign_in(true, &answer);
        }
        answer
    }

    /// Opens the session a sign-in ends with; one completing a stored flow is that flow's,
    /// written in the transaction that removes the flow.
    async fn signed_in(
        &self,
        purpose: Purpose,
        user_id: i64,
        flow: Option<&FlowId>,
    ) -> Result<Progress, StepError> {
        if purpose != Purpose::SignIn {
            tracing::error!("a provider signed in a local user from a connect flow");
            return Err(ErrorCode::Unknown.into());
        }
        let now = self.clock.now();
        let session = match flow {
            Some(id) => {
                let mut tx = self.begin().await?;
                let session =
                    SessionStore::create_for_flow_in(&mut tx, user_id, &id.to_string(), now)
                        .await?;
                self.finish(tx, Some(id)).await?;
                session
            }
            None => self.sessions.create(user_id, now).await?,
        };
        // A disabled account's password may be right; it is refused all the same (admin.rs).
        self.admin.admit_signed_in(user_id, &session).await?;
        Ok(Progress::Done(Completion::SignedIn { user_id, session }))
    }

    async fn begin(&self) -> Result<WriteTx, ErrorCode> {
        self.writes.begin().await.map_err(|e| {
            tracing::error!(error = %e, "a flow's result could not be stored");
            ErrorCode::Unknown
        })
    }

    /// Removes flow `id` (if any) in `tx`, the transaction that wrote its result, and commits:
    /// a finished flow is its result, its renewal schedule, audit line and webhook, and its
    /// removal, or none of them. Flows in Redis are removed right after the commit; a crash in
    /// between leaves a flow that completes again to the same result (its session replaced,
    /// its account found connected), never a removed flow without its result.
    async fn finish(&self, mut tx: WriteTx, id: Option<&FlowId>) -> Result<(), ErrorCode> {
        let removed_in_tx = match id {
            Some(id) => self
                .flows
                .remove_in(&mut tx, id)
                .await
                .map_err(ErrorCode::from)?
                .is_some(),
            None => true,
        };
        tx.commit().await.map_err(|e| {
            tracing::error!(error = %e, "a flow's result could not be committed");
            ErrorCode::Unknown
        })?;
        if let (Some(id), false) = (id, removed_in_tx) {
            self.flows.remove(id).await.map_err(ErrorCode::from)?;
        }
        Ok(())
    }

    /// Stores what a connect or reauth flow signed in to, and ends flow `flow` (when stored)
    /// in the same transaction. `link`: the sign-in link the reauth runs for.
    async fn connected(
        &self,
        flow: Option<&FlowId>,
        purpose: Purpose,
        provider: &str,
        account: NewAccount,
        link: Option<&str>,
    ) -> Result<Progress, StepError> {
        let now = self.clock.now();
        if link.is_some() && !matches!(purpose, Purpose::Reauth { .. }) {
            tracing::error!(provider, "a sign-in link ran something other than a reauth");
            return Err(ErrorCode::Unknown.into());
        }
        let due = self.upkeep.first_renewal_due(provider, &account);
        match purpose {
            Purpose::Connect { user_id } => {
                let mut tx = self.begin().await?;
                let stored = self
                    .accounts
                    .add_in(&mut tx, user_id, provider, &account, now, Some(due))
                    .await?;
                self.events
                    .record_in(&mut tx, user_id, &stored, AccountEvent::Connected, now)
                    .await?;
                self.finish(tx, flow).await?;
                Ok(Progress::Done(Completion::Connected(stored)))
            }
            // The same steps signed in again: that account's secrets are replaced in place
            // (or `wrong_account`, when the user signed in to another upstream account).
            Purpose::Reauth {
                user_id,
                account_id,
            } => {
                if let Some(link) = link {
                    // Revoked, used or expired while its steps ran: it renews nothing.
                    self.sign_in_links
                        .check_live(link, user_id, account_id)
                        .await?;
                }
                let mut tx = self.begin().await?;
                let before = self.accounts.get_in(&mut tx, user_id, account_id).await?;
                if before.provider != provider {
                    return Err(ErrorCode::NotFound.into());
                }
                let stored = self
                    .accounts
                    .reauth_in(&mut tx, user_id, &before, &account, now, Some(due))
                    .await?;
                // Only a reauth that signed in to that very account uses the link (another
                // one is `wrong_account` above, and the link stays open for another try).
                let event = match link {
                    Some(link) => {
                        self.sign_in_links.mark_used_in(&mut tx, link).await?;
                        AccountEvent::SignedInWithLink
                    }
                    None => AccountEvent::SignedInAgain,
                };
                self.events
                    .record_in(&mut tx, user_id, &stored, event, now)
                    .await?;
                self.events
                    .recovered_in(&mut tx, user_id, &before, now)
                    .await?;
                self.finish(tx, flow).await?;
                Ok(Progress::Done(Completion::Reauthenticated(stored)))
            }
            Purpose::SignIn => {
                tracing::error!(
                    provider,
                    "a provider connected an account outside a connect flow"
                );
                Err(ErrorCode::Unknown.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use axum::routing::get;
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::base::clock::ManualClock;
    use crate::flows::flow::DEFAULT_FLOW_TTL;
    use crate::flows::upstream::{UpstreamMap, UpstreamRequest};
    use crate::providers::Provider;
    use crate::test_support::{engine_in, engine_with, input, start, submit, test_config};
    use crate::view::{CodeChannel, FieldKind, FieldSpec};
    use crate::Engine;

    /// Plays a third party on a free port: `/set` sets a session cookie, `/check` answers
    /// whether it came back.
    async fn upstream() -> String {
        let router = axum::Router::new()
            .route(
                "/set",
                get(|| async {
                    (
                        [("set-cookie", "session=kept-secret-cookie; Path=/")],
                        "set",
                    )
                }),
            )
            .route(
                "/drip",
                get(|| async {
                    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
                    "drop"
                }),
            )
            .route(
                "/check",
                get(|headers: axum::http::HeaderMap| async move {
                    let cookie = headers
                        .get("cookie")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    if cookie.contains("session=kept-secret-cookie") {
                        "ok"
                    } else {
                        "no"
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        format!("https://upstream.example.test=http://{addr}")
    }

    /// Two steps against the upstream: start sets the cookie and keeps a secret in its state;
    /// the second step needs both, then connects account `input["account"]`.
    struct TwoStep;

    #[derive(Serialize, Deserialize)]
    enum TwoStepState {
        Code { verifier: String },
    }

    #[async_trait]
    impl Provider for TwoStep {
        type State = TwoStepState;
        fn name(&self) -> &'static str {
            "two_step"
        }
        fn title(&self) -> &'static str {
            "Two step"
        }
        async fn check(
            &self,
            _http: &mut HttpSession,
            _now: i64,
            _secrets: &serde_json::Value,
        ) -> crate::providers::Health {
            crate::providers::Health::Accepted(None)
        }
        async fn renew(
            &self,
            _http: &mut HttpSession,
            _now: i64,
            _secrets: &serde_json::Value,
        ) -> crate::providers::Health {
            crate::providers::Health::Accepted(None)
        }
        fn expires_at(&self, _secrets: &serde_json::Value) -> Option<i64> {
            None
        }
        fn app_credentials(&self, secrets: &serde_json::Value) -> serde_json::Value {
            secrets.clone()
        }
        fn first_view(&self) -> StepView {
            StepView::form(
                vec![FieldSpec::new("account", "Account", FieldKind::Text)],
                "Connect",
            )
        }
        async fn start(&self, cx: &mut StepContext<'_>, input: &Input) -> Step<TwoStepState> {
            let url = url::Url::parse("https://upstream.example.test/set").unwrap();
            if cx.http.send(UpstreamRequest::get(url)).await.is_err() {
                return Step::abort(ErrorCode::CannotConnect);
            }
            if input.get("account").map(String::as_str) == Some("now") {
                return Step::Connected(NewAccount {
                    account_id: "now".into(),
                    display_name: "Now".into(),
                    secrets: serde_json::json!({}),
                });
            }
            Step::Show {
                step: "code",
                view: StepView::form(
                    vec![FieldSpec::new("code", "Code", FieldKind::Code)],
                    "Verify",
                ),
                state: TwoStepState::Code {
                    verifier: "pkce-verifier-in-the-state".into(),
                },
            }
        }
        async fn submit(
            &self,
            cx: &mut StepContext<'_>,
            state: TwoStepState,
            input: &Input,
        ) -> Step<TwoStepState> {
            let TwoStepState::Code { verifier } = state;
            if input.get("code").map(String::as_str) == Some("many") {
                // Each request well within its own timeout; all of them together are not.
                let drip = url::Url::parse("https://upstream.example.test/drip").unwrap();
                for _ in 0..20 {
                    if cx
                        .http
                        .send(UpstreamRequest::get(drip.clone()))
                        .await
                        .is_err()
                    {
                        return Step::abort(ErrorCode::CannotConnect);
                    }
                }
                return Step::retry(ErrorCode::InvalidCode);
            }
            let url = url::Url::parse("https://upstream.example.test/check").unwrap();
            let Ok(answer) = cx.http.send(UpstreamRequest::get(url)).await else {
                return Step::abort(ErrorCode::CannotConnect);
            };
            match input.get("code").map(String::as_str) {
                Some("wait") => Step::Wait(ErrorCode::RateLimited.into()),
                Some("right")
                    if answer.text() == "ok" && verifier == "pkce-verifier-in-the-state" =>
                {
                    Step::Connected(NewAccount {
                        account_id: "acct-1".into(),
                        display_name: "Account one".into(),
                        secrets: serde_json::json!({"token": "secret-token"}),
                    })
                }
                _ => Step::Retry(StepError::new(ErrorCode::InvalidCode).on("code")),
            }
        }
    }

    async fn engine(dir: &tempfile::TempDir) -> (Engine, i64) {
        let mut config = test_config(dir.path()).await;
        config.upstreams = UpstreamMap::parse(&upstream().await).unwrap();
        let (engine, _) = engine_with(config).await;
        let engine = engine.with_provider(TwoStep);
        let user = engine
            .register(
                "owner@example.org",
                "password-1-quiet-harbor",
                "password-1-quiet-harbor",
            )
            .await
            .unwrap();
        (engine, user.id)
    }

    #[tokio::test]
    async fn a_step_has_a_total_deadline_and_its_flow_stays_at_its_step() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path()).await;
        config.upstreams = UpstreamMap::parse(&upstream().await).unwrap();
        // 500 ms a request, 1.5 s a step: the 20 requests of 400 ms take 8 s.
        config.step_timeout = std::time::Duration::from_millis(500);
        let (engine, _) = engine_with(config).await;
        let engine = engine.with_provider(TwoStep);
        let user_id = engine
            .register(
                "owner@example.org",
                "correct-horse-battery-staple-17",
                "correct-horse-battery-staple-17",
            )
            .await
            .unwrap()
            .id;
        let flow = started(&engine, user_id).await;
        let deadline = engine.runner.upstreams.step_deadline();
        let began = std::time::Instant::now();
        let answer = engine
            .submit_flow(&flow, Some("o"), &input(&[("code", "many")]))
            .await;
        assert_eq!(answer.unwrap_err().code, ErrorCode::Timeout);
        let took = began.elapsed();
        assert!(
            took >= deadline && took < deadline + std::time::Duration::from_secs(1),
            "{took:?}"
        );
        // Not counted as an attempt, and the flow goes on.
        let done = engine
            .submit_flow(&flow, Some("o"), &input(&[("code", "right")]))
            .await;
        assert!(matches!(done, Ok(Progress::Done(_))), "{done:?}");
    }

    async fn started(engine: &Engine, user_id: i64) -> String {
        match engine
            .start_flow(
                "two_step",
                Purpose::Connect { user_id },
                Some("o".into()),
                &input(&[("account", "acct")]),
            )
            .await
        {
            Ok(Progress::Next(view)) => view.flow_id,
            other => panic!("the code step should be shown, got {other:?}"),
        }
    }

    /// Makes every insert into `table` fail from now on (a fault injected in the database).
    async fn fail_inserts_into(engine: &Engine, table: &str) {
        use crate::store::db::{dialect, Dialect};
        let statements = match dialect(&engine.pool) {
            Dialect::Sqlite => vec![format!(
                "CREATE TRIGGER injected_fault BEFORE INSERT ON {table}
                 BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
            )],
            Dialect::Postgres => vec![
                "CREATE FUNCTION injected_fault() RETURNS trigger AS $$
                 BEGIN RAISE EXCEPTION 'injected fault'; END $$ LANGUAGE plpgsql"
                    .to_owned(),
                format!(
                    "CREATE TRIGGER injected_fault BEFORE INSERT ON {table}
                     FOR EACH ROW EXECUTE FUNCTION injected_fault()"
                ),
            ],
        };
        for statement in statements {
            sqlx::query(&statement).execute(&engine.pool).await.unwrap();
        }
    }

    async fn count(engine: &Engine, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&engine.pool)
            .await
            .unwrap()
    }

    /// A connect's result is one transaction: when a write after the account's fails (its
    /// audit line), there is no account, no renewal schedule, no audit line, no webhook; the
    /// flow stays and completes once the fault is gone, with each written once.
    #[tokio::test]
    async fn a_failure_after_the_account_write_leaves_nothing_behind() {
        use crate::store::db::{dialect, Dialect};
        let dir = tempfile::tempdir().unwrap();
        let (engine, user_id) = engine(&dir).await;
        engine
            .set_webhook_url(user_id, "http://127.0.0.1:9/stepgate-hook")
            .await
            .unwrap();
        let flow_id = started(&engine, user_id).await;
        fail_inserts_into(&engine, "account_audit").await;

        let failed = engine
            .submit_flow(&flow_id, Some("o"), &input(&[("code", "right")]))
            .await;
        assert_eq!(failed.unwrap_err().code, ErrorCode::Unknown);
        for table in ["connected_accounts", "account_audit", "webhook_deliveries"] {
            assert_eq!(count(&engine, table).await, 0, "{table}");
        }
        let id: FlowId = flow_id.parse().unwrap();
        assert!(
            engine.flows.get(&id).await.unwrap().is_some(),
            "the flow stays"
        );

        let drop = match dialect(&engine.pool) {
            Dialect::Sqlite => "DROP TRIGGER injected_fault",
            Dialect::Postgres => "DROP TRIGGER injected_fault ON account_audit",
        };
        sqlx::query(drop).execute(&engine.pool).await.unwrap();
        let done = engine
            .submit_flow(&flow_id, Some("o"), &input(&[("code", "right")]))
            .await;
        let Ok(Progress::Done(Completion::Connected(account))) = done else {
            panic!("connected expected, got {done:?}");
        };
        let stored = engine.accounts.get(user_id, account.id).await.unwrap();
        assert!(stored.renew_due_at.is_some(), "scheduled with the account");
        for table in ["connected_accounts", "account_audit", "webhook_deliveries"] {
            assert_eq!(count(&engine, table).await, 1, "{table}");
        }
        assert!(
            engine.flows.get(&id).await.unwrap().is_none(),
            "the flow is gone"
        );
    }

    #[tokio::test]
    async fn upstream_cookies_and_typed_state_carry_across_steps_sealed_at_rest() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, user_id) = engine(&dir).await;
        let flow_id = started(&engine, user_id).await;
        // The state as the flow store keeps it (a database row, or a Redis value).
        let id = flow_id.parse().unwrap();
        let state = engine.flows.get(&id).await.unwrap().unwrap().state;
        let stored = String::from_utf8_lossy(&state).into_owned();
        for secret in ["kept-secret-cookie", "pkce-verifier-in-the-state"] {
            assert!(!stored.contains(secret));
        }
        let done = engine
            .submit_flow(&flow_id, Some("o"), &input(&[("code", "right")]))
            .await;
        let Ok(Progress::Done(Completion::Connected(account))) = done else {
            panic!("connected expected, got {done:?}");
        };
        assert_eq!(account.account_key, "acct-1");
        assert_eq!(
            engine.accounts.secrets(user_id, account.id).await.unwrap()["token"],
            "secret-token"
        );
    }

    #[tokio::test]
    async fn the_same_account_is_refused_the_second_time() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, user_id) = engine(&dir).await;
        for expected in [None, Some(ErrorCode::AlreadyConfigured)] {
            let flow_id = started(&engine, user_id).await;
            let answer = engine
                .submit_flow(&flow_id, Some("o"), &input(&[("code", "right")]))
                .await;
            assert_eq!(answer.err().map(|e| e.code), expected);
        }
        assert_eq!(engine.accounts.list(user_id).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn retries_count_and_keep_the_field_waits_do_not_count() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, user_id) = engine(&dir).await;
        let flow_id = started(&engine, user_id).await;
        for _ in 0..10 {
            let wait = engine
                .submit_flow(&flow_id, Some("o"), &input(&[("code", "wait")]))
                .await;
            assert_eq!(wait.unwrap_err().code, ErrorCode::RateLimited);
        }
        for _ in 1..MAX_ATTEMPTS {
            let wrong = engine
                .submit_flow(&flow_id, Some("o"), &input(&[("code", "wrong")]))
                .await
                .unwrap_err();
            assert_eq!(wrong, StepError::new(ErrorCode::InvalidCode).on("code"));
        }
        let last = engine
            .submit_flow(&flow_id, Some("o"), &input(&[("code", "wrong")]))
            .await;
        assert_eq!(last.unwrap_err().code, ErrorCode::TooManyAttempts);
    }

    #[tokio::test]
    async fn a_provider_cannot_connect_an_account_from_a_sign_in() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine(&dir).await;
        let answer = engine
            .start_flow(
                "two_step",
                Purpose::SignIn,
                None,
                &input(&[("account", "now")]),
            )
            .await;
        assert_eq!(answer.unwrap_err().code, ErrorCode::Unknown);
    }

    /// A provider with one code step: "123456" is right, anything else is wrong,
    /// "boom" fails the flow outright.
    struct CodeStep;

    #[derive(Serialize, Deserialize)]
    struct CodeState {
        user_id: i64,
    }

    #[async_trait]
    impl Provider for CodeStep {
        type State = CodeState;
        fn name(&self) -> &'static str {
            "code_step"
        }
        fn title(&self) -> &'static str {
            "Code step"
        }
        async fn check(
            &self,
            _http: &mut HttpSession,
            _now: i64,
            _secrets: &serde_json::Value,
        ) -> crate::providers::Health {
            crate::providers::Health::Accepted(None)
        }
        async fn renew(
            &self,
            _http: &mut HttpSession,
            _now: i64,
            _secrets: &serde_json::Value,
        ) -> crate::providers::Health {
            crate::providers::Health::Accepted(None)
        }
        fn expires_at(&self, _secrets: &serde_json::Value) -> Option<i64> {
            None
        }
        fn app_credentials(&self, secrets: &serde_json::Value) -> serde_json::Value {
            secrets.clone()
        }
        fn first_view(&self) -> StepView {
            StepView::form(Vec::new(), "Start")
        }
        async fn start(&self, _cx: &mut StepContext<'_>, _input: &Input) -> Step<CodeState> {
            Step::Show {
                step: "code",
                view: StepView::Code {
                    channel: CodeChannel::Sms,
                    digits: 6,
                    passkey: None,
                },
                state: CodeState { user_id: 42 },
            }
        }
        async fn submit(
            &self,
            _cx: &mut StepContext<'_>,
            state: CodeState,
            input: &Input,
        ) -> Step<CodeState> {
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
        // The user CodeStep signs in, so a completion can open that user's session.
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, created_at) VALUES (42, 'u42@example.org', 'x', 0)",
        )
        .execute(engine.pool())
        .await
        .unwrap();
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
            crate::test_support::signed_in_user(
                submit(&engine, &id, Some("owner"), &code("123456")).await
            ),
            Some(42)
        );
        // Completing consumes the flow.
        assert_eq!(
            submit(&engine, &id, Some("owner"), &code("123456")).await,
            Err(ErrorCode::FlowExpired)
        );
    }

    #[tokio::test]
    async fn completing_a_flow_again_after_a_lost_answer_keeps_one_session() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _, id) = code_step_engine(&dir).await;
        let flow_id: FlowId = id.parse().unwrap();
        let pending = engine.flows.get(&flow_id).await.unwrap().unwrap();
        let session_of = |progress: Result<Progress, StepError>| match progress {
            Ok(Progress::Done(Completion::SignedIn { session, .. })) => session,
            other => panic!("not signed in: {other:?}"),
        };
        let lost = session_of(
            engine
                .submit_flow(&id, Some("owner"), &code("123456"))
                .await,
        );
        // As if the instance died after the session was written and before the flow was
        // removed: the flow is still there, and the browser never got the first answer.
        engine.flows.insert(&pending).await.unwrap();
        let kept = session_of(
            engine
                .submit_flow(&id, Some("owner"), &code("123456"))
                .await,
        );
        let sessions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE user_id = 42")
            .fetch_one(engine.pool())
            .await
            .unwrap();
        assert_eq!(
            sessions, 1,
            "one session per flow, however often it completes"
        );
        assert_eq!(engine.session_user(&lost).await.unwrap(), None);
        assert_eq!(
            engine.session_user(&kept).await.unwrap().map(|u| u.id),
            Some(42)
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
            crate::test_support::signed_in_user(
                submit(&reopened, &id, Some("owner"), &code("123456")).await
            ),
            Some(42)
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
}
