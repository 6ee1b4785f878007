//! Server functions of the connected accounts: the list, the provider picker, one connect
//! step of any provider, and removal. The pages that call them are plain server-rendered forms
//! (`pages/accounts.rs`, `pages/connect.rs`): no WebAssembly.

use std::collections::HashMap;

use engine::view::StepView;
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

/// One row of the accounts page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRow {
    pub id: i64,
    /// "Librus".
    pub provider: String,
    /// "librus": where "Sign in again" leads.
    pub provider_name: String,
    pub name: String,
    pub status: RowStatus,
    /// The status in words ("Needs sign-in").
    pub status_label: String,
    /// Why the last check could not reach the provider, in words.
    pub problem: Option<String>,
    /// Unix seconds.
    pub connected_at: i64,
}

/// An account's status as the list shows it: the engine's `AccountStatus`, or a health check
/// under way. On the wire (and in `data-status`, which `public/accounts.js` reads) its
/// snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowStatus {
    Active,
    NeedsSignIn,
    Degraded,
    Checking,
}

impl RowStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RowStatus::Active => "active",
            RowStatus::NeedsSignIn => "needs_sign_in",
            RowStatus::Degraded => "degraded",
            RowStatus::Checking => "checking",
        }
    }

    /// The status in words.
    pub fn label(self) -> &'static str {
        match self {
            RowStatus::Checking => "Checking…",
            RowStatus::NeedsSignIn => "Needs sign-in",
            RowStatus::Degraded => "Provider unreachable",
            RowStatus::Active => "Connected",
        }
    }
}

#[cfg(feature = "ssr")]
impl From<engine::accounts::store::AccountStatus> for RowStatus {
    fn from(status: engine::accounts::store::AccountStatus) -> Self {
        use engine::accounts::store::AccountStatus;
        match status {
            AccountStatus::Active => RowStatus::Active,
            AccountStatus::NeedsSignIn => RowStatus::NeedsSignIn,
            AccountStatus::Degraded => RowStatus::Degraded,
        }
    }
}

#[cfg(feature = "ssr")]
fn row_of(
    engine: &engine::Engine,
    a: engine::accounts::store::ConnectedAccount,
    now: i64,
) -> AccountRow {
    let status = if a.checking(now) {
        RowStatus::Checking
    } else {
        a.status.into()
    };
    AccountRow {
        id: a.id,
        provider: engine
            .title_of(&a.provider)
            .unwrap_or(a.provider.as_str())
            .to_owned(),
        provider_name: a.provider.clone(),
        name: a.display_name,
        status,
        status_label: status.label().to_owned(),
        problem: (status == RowStatus::Degraded)
            .then(|| a.last_error.map(|code| code.message().to_owned()))
            .flatten(),
        connected_at: a.connected_at,
    }
}

/// A provider the picker offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderChoice {
    pub name: String,
    pub title: String,
}

/// What the connect page renders: the provider, and the step its flow waits at (the first form
/// when no flow has started).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectStepView {
    pub provider: String,
    pub title: String,
    pub flow_id: Option<String>,
    pub view: StepView,
    /// Signing in to this connected account again (reauth), with its name.
    pub reauth: Option<(i64, String)>,
    /// Values the first form starts with (a reauth fills in the account name).
    pub values: Vec<(String, String)>,
}

#[cfg(feature = "ssr")]
mod ssr {
    use engine::sign_in::users::User;

    use crate::error::AppError;
    use crate::session::{session_token, signed_in_user};

    /// The signed-in user and the owner key that binds connect flows to this browser session.
    pub async fn user_and_owner() -> Result<(User, String), AppError> {
        let user = signed_in_user().await?;
        let owner = session_token()
            .map(|t| t.digest())
            .ok_or(AppError::from(engine::ErrorCode::NotSignedIn))?;
        Ok((user, owner))
    }
}

/// The signed-in user's connected accounts. Opening the page also checks, in the background,
/// every account not checked in the last minute: those rows say "Checking…" until the answer
/// is in (`public/accounts.js` asks [`account_statuses`]); the page never waits on a provider.
#[server(prefix = "/api", endpoint = "connected_accounts")]
pub async fn connected_accounts() -> Result<Vec<AccountRow>, AppError> {
    use crate::session::{engine, signed_in_user};

    let user = signed_in_user().await?;
    let engine = engine()?;
    if let Err(code) = engine.check_accounts_in_background(user.id).await {
        tracing::warn!(%code, "could not start the accounts' health checks");
    }
    let now = engine.now();
    let accounts = engine.connected_accounts(user.id).await?;
    Ok(accounts
        .into_iter()
        .map(|a| row_of(&engine, a, now))
        .collect())
}

/// The accounts' rows as they stand now, without starting checks (what the page polls while
/// a check is under way).
#[server(prefix = "/api", endpoint = "account_statuses", input = leptos::server_fn::codec::GetUrl)]
pub async fn account_statuses() -> Result<Vec<AccountRow>, AppError> {
    use crate::session::{engine, signed_in_user};

    let user = signed_in_user().await?;
    let engine = engine()?;
    let now = engine.now();
    let accounts = engine.connected_accounts(user.id).await?;
    Ok(accounts
        .into_iter()
        .map(|a| row_of(&engine, a, now))
        .collect())
}

/// The providers a user can connect now.
#[server(prefix = "/api", endpoint = "connectable_providers")]
pub async fn connectable_providers() -> Result<Vec<ProviderChoice>, AppError> {
    use crate::session::{engine, signed_in_user};

    signed_in_user().await?;
    Ok(engine()?
        .connectable()
        .iter()
        .map(|(name, title)| ProviderChoice {
            name: (*name).into(),
            title: (*title).into(),
        })
        .collect())
}

/// The step to show on `/accounts/connect/{provider}` (`flow` continues a started flow;
/// `reauth` signs in to that connected account again).
#[server(prefix = "/api", endpoint = "connect_step")]
pub async fn connect_step(
    provider: String,
    flow: Option<String>,
    reauth: Option<i64>,
) -> Result<ConnectStepView, AppError> {
    use crate::session::engine;

    let (user, owner) = ssr::user_and_owner().await?;
    let engine = engine()?;
    let title = engine
        .title_of(&provider)
        .ok_or(AppError::from(engine::ErrorCode::NotFound))?;
    let (reauth, values) = match reauth {
        Some(id) => {
            let (account, prefill) = engine.reauth_prefill(user.id, id).await?;
            if account.provider != provider {
                return Err(engine::ErrorCode::NotFound.into());
            }
            (
                Some((id, account.display_name)),
                prefill.into_iter().collect(),
            )
        }
        None => (None, Vec::new()),
    };
    let (flow_id, view) = match flow.filter(|f| !f.is_empty()) {
        Some(flow) => {
            let view = engine.flow_view(&provider, &flow, Some(&owner)).await?;
            (Some(view.flow_id), view.step)
        }
        None => (None, engine.first_view(&provider)?),
    };
    Ok(ConnectStepView {
        provider,
        title: title.into(),
        flow_id,
        view,
        reauth,
        values,
    })
}

/// Sends one connect step: the first form (no `flow_id`) or a later one. Goes on to the next
/// step's page, or back to the accounts list once connected. A refused step comes back to its
/// page with the sentence (and the provider's words), its typed fields kept except secrets.
#[server(prefix = "/api", endpoint = "submit_connect_step")]
pub async fn submit_connect_step(
    provider: String,
    flow_id: Option<String>,
    reauth: Option<i64>,
    fields: Option<HashMap<String, String>>,
) -> Result<(), AppError> {
    use crate::session::engine;
    use engine::providers::Purpose;
    use engine::{Completion, Progress};

    let fields = fields.unwrap_or_default();
    let flow_id = flow_id.filter(|f| !f.is_empty());
    let result: Result<(), AppError> = async {
        let (user, owner) = ssr::user_and_owner().await?;
        let engine = engine()?;
        let input = fields.clone().into_iter().collect();
        let purpose = match reauth {
            Some(account_id) => Purpose::Reauth {
                user_id: user.id,
                account_id,
            },
            None => Purpose::Connect { user_id: user.id },
        };
        let progress = match &flow_id {
            None => {
                engine
                    .start_flow(&provider, purpose, Some(owner), &input)
                    .await?
            }
            Some(id) => {
                engine
                    .submit_provider_flow(&provider, id, Some(&owner), &input)
                    .await?
            }
        };
        match progress {
            Progress::Next(view) => {
                let reauth = reauth.map(|id| format!("&reauth={id}")).unwrap_or_default();
                leptos_axum::redirect(&format!(
                    "/accounts/connect/{provider}?flow={}{reauth}",
                    view.flow_id
                ));
            }
            Progress::Done(Completion::Connected(account)) => {
                leptos_axum::redirect(&format!("/accounts?connected={}", account.id));
            }
            Progress::Done(Completion::Reauthenticated(account)) => {
                leptos_axum::redirect(&format!("/accounts?reauthed={}", account.id));
            }
            Progress::Done(Completion::SignedIn { .. }) => {
                return Err(engine::ErrorCode::Unknown.into());
            }
        }
        Ok(())
    }
    .await;
    if let Err(error) = &result {
        // A provider's fault can end the flow (nothing more to try on it): then the page starts
        // over from the first form with the sentence, instead of "expired".
        let (still_runs, shown) = step_shown_next(&provider, flow_id.as_deref()).await;
        back_to_step(
            &provider,
            flow_id.as_deref().filter(|_| still_runs),
            reauth,
            &fields,
            &shown,
            error.clone(),
        );
    }
    result
}

/// After a refused step: whether flow `flow_id` of this browser still waits for a step, and
/// the fields of the form the page will show (that step's, or the first form's).
#[cfg(feature = "ssr")]
async fn step_shown_next(
    provider: &str,
    flow_id: Option<&str>,
) -> (bool, Vec<engine::view::FieldSpec>) {
    let Ok(engine) = crate::session::engine() else {
        return (false, Vec::new());
    };
    if let (Some(id), Ok((_, owner))) = (flow_id, ssr::user_and_owner().await) {
        if let Ok(view) = engine.flow_view(provider, id, Some(&owner)).await {
            return (true, view.step.fields().to_vec());
        }
    }
    let first = engine
        .first_view(provider)
        .map(|view| view.fields().to_vec())
        .unwrap_or_default();
    (false, first)
}

/// A refused step of a plain form post goes back to its page: the flow (if it still runs),
/// the error, and the fields that are not secrets.
#[cfg(feature = "ssr")]
fn back_to_step(
    provider: &str,
    flow_id: Option<&str>,
    reauth: Option<i64>,
    fields: &HashMap<String, String>,
    shown: &[engine::view::FieldSpec],
    error: AppError,
) {
    use engine::ErrorCode;

    // An ended flow starts over from the first form.
    let ended = matches!(
        error.code,
        ErrorCode::FlowExpired | ErrorCode::TooManyAttempts
    );
    let mut query: Vec<(String, String)> = Vec::new();
    if let (Some(flow), false) = (flow_id, ended) {
        query.push(("flow".into(), flow.into()));
    }
    if let Some(account) = reauth {
        query.push(("reauth".into(), account.to_string()));
    }
    crate::components::back_to_step::<SubmitConnectStep>(
        &format!("/accounts/connect/{provider}"),
        query,
        fields,
        shown,
        error,
    );
}

/// Deletes a connected account and its tokens, then shows the list again.
#[server(prefix = "/api", endpoint = "remove_account")]
pub async fn remove_account(account_id: i64) -> Result<(), AppError> {
    use crate::session::{engine, signed_in_user};

    let user = signed_in_user().await?;
    engine()?.remove_account(user.id, account_id).await?;
    leptos_axum::redirect("/accounts?removed=1");
    Ok(())
}

/// One line of an account's activity, in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityRow {
    /// Unix seconds.
    pub at: i64,
    pub what: String,
}

/// What the account page shows: the row, its renewals, and its activity (newest first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountDetail {
    pub row: AccountRow,
    pub renewed_at: Option<i64>,
    pub renew_due_at: Option<i64>,
    /// The last failure, in words.
    pub last_error: Option<String>,
    pub activity: Vec<ActivityRow>,
}

/// An audit entry in words (the API key by its name when it still exists).
#[cfg(feature = "ssr")]
fn activity_words(
    entry: &engine::apps::events::AuditEntry,
    key_names: &HashMap<String, String>,
) -> String {
    let failure = entry.code.map(|code| code.message()).unwrap_or_default();
    match entry.event.as_str() {
        "connected" => "Connected.".to_owned(),
        "signed_in_again" => "Signed in again.".to_owned(),
        "renewed" => "Tokens renewed.".to_owned(),
        "needs_sign_in" => "The provider refused the tokens: needs sign-in.".to_owned(),
        "unreachable" => format!("Could not reach the provider: {failure}"),
        "recovered" => "Working again.".to_owned(),
        "api_read" => {
            // Counted per key and minute: "read 12 times" in the minute ending at `at`.
            let times = match entry.reads {
                Some(n) if n > 1 => format!(" {n} times"),
                _ => String::new(),
            };
            match entry.api_key.as_ref().and_then(|k| key_names.get(k)) {
                Some(name) => format!("Credentials read{times} with API key “{name}”."),
                None => format!("Credentials read{times} with an API key since revoked."),
            }
        }
        "api_proxy" => match entry.api_key.as_ref().and_then(|k| key_names.get(k)) {
            Some(name) => format!("Provider API called through Stepgate with API key “{name}”."),
            None => "Provider API called with an API key since revoked.".to_owned(),
        },
        "removed" => "Removed.".to_owned(),
        "sign_in_link_made" => "Sign-in link made.".to_owned(),
        "sign_in_link_made_for_apps" => "Sign-in link made for your apps.".to_owned(),
        "sign_in_link_revoked" => "Sign-in link revoked.".to_owned(),
        "signed_in_with_link" => "Signed in again with a sign-in link.".to_owned(),
        other => other.to_owned(),
    }
}

/// The account page's content for account `account_id` of the signed-in user.
#[server(prefix = "/api", endpoint = "account_page")]
pub async fn account_page(account_id: i64) -> Result<AccountDetail, AppError> {
    use crate::session::{engine, signed_in_user};

    let user = signed_in_user().await?;
    let engine = engine()?;
    let account = engine.connected_account(user.id, account_id).await?;
    let audit = engine.audit_log(user.id, account_id).await?;
    let key_names: HashMap<String, String> = engine
        .list_api_keys(user.id)
        .await?
        .into_iter()
        .map(|key| (key.id, key.name))
        .collect();
    let now = engine.now();
    Ok(AccountDetail {
        renewed_at: account.renewed_at,
        renew_due_at: account.renew_due_at,
        last_error: account.last_error.map(|code| code.message().to_owned()),
        activity: audit
            .iter()
            .map(|entry| ActivityRow {
                at: entry.at,
                what: activity_words(entry, &key_names),
            })
            .collect(),
        row: row_of(&engine, account, now),
    })
}
