//! Server functions of sign-in links (`engine/src/accounts/sign_in_links.rs`): on the account's
//! page, making one (shown once), listing and revoking them; on the link's own pages, which
//! need no Stepgate session, opening it and running its account's sign-in steps; on the
//! webhooks page, the owner's opt-in that lets apps have links.
//!
//! The token must not linger: `/sign-in-link/{token}` trades it for a ticket kept in an
//! HttpOnly cookie for `/sign-in-link` only (SameSite=Lax, an hour), and goes on to
//! `/sign-in-link`, whose address holds no token. Those pages' forms post to
//! `/sign-in-link/step`, under the cookie's path. A new owner's link reaches the account page
//! once, in a one-minute cookie (`one_time_secret.rs`), never in a URL.

use std::collections::HashMap;

use engine::view::StepView;
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

/// One live link, as the account page lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRow {
    /// What revoking it names (opens nothing).
    pub id: String,
    /// Unix seconds.
    pub created_at: i64,
    pub expires_at: i64,
    /// Made for the owner's apps (webhook, API) rather than by the owner.
    pub for_apps: bool,
}

/// The account page's sign-in links: the live ones, and the one just made (shown this once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountLinks {
    pub links: Vec<LinkRow>,
    pub new_link: Option<String>,
}

/// What a sign-in link's page shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkPageView {
    /// The account's sign-in step.
    Step {
        /// "Lynk & Co".
        title: String,
        /// The account's name.
        account: String,
        flow_id: Option<String>,
        view: Box<StepView>,
        /// What the first form starts with (the account's name; Lynk & Co's VIN).
        values: Vec<(String, String)>,
    },
    /// The account was signed in again through the link.
    Done { title: String, account: String },
}

#[cfg(feature = "ssr")]
pub(crate) mod ssr {
    use engine::accounts::sign_in_links::{SignInLinkTicket, LINK_PATH};

    use crate::one_time_secret;
    use crate::session::{cookie_headers, set_http_only_cookie};

    const TICKET_COOKIE: &str = "stepgate_sign_in_link";
    const SECURE_TICKET_COOKIE: &str = "__Secure-stepgate_sign_in_link";
    /// Long enough for the provider's steps and a code that is slow to come; opening the link
    /// again starts over (it works until used).
    const TICKET_SECONDS: i64 = 60 * 60;
    const NEW_LINK_COOKIE: &str = "stepgate_new_sign_in_link";
    pub const ACCOUNT_PAGE: &str = "/accounts/account";

    pub fn keep_ticket(ticket: &SignInLinkTicket) {
        set_http_only_cookie(
            TICKET_COOKIE,
            SECURE_TICKET_COOKIE,
            ticket.as_str(),
            LINK_PATH,
            "Lax",
            TICKET_SECONDS,
        );
    }

    /// The ticket this browser keeps, if it has the shape we issue.
    pub fn ticket() -> Option<SignInLinkTicket> {
        cookie_headers()
            .iter()
            .flat_map(|h| h.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(name, _)| *name == TICKET_COOKIE || *name == SECURE_TICKET_COOKIE)
            .find_map(|(_, value)| SignInLinkTicket::parse(value))
    }

    /// Hands the link just made for account `account_id` to the account page's next rendering.
    pub fn keep_new_link(account_id: i64, url: &str) {
        one_time_secret::hand_over(
            NEW_LINK_COOKIE,
            ACCOUNT_PAGE,
            &format!("{account_id}~{url}"),
        );
    }

    /// The link just made for account `account_id`, if the browser brought it back (once).
    pub fn take_new_link(account_id: i64) -> Option<String> {
        let prefix = format!("{account_id}~");
        let value = one_time_secret::take(NEW_LINK_COOKIE, ACCOUNT_PAGE, |value| {
            value.starts_with(&prefix)
                && value.contains(LINK_PATH)
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"~:/.-_[]".contains(&b))
        })?;
        value.strip_prefix(&prefix).map(str::to_owned)
    }

    /// A page answered with an error carries its status (404 for a link that is not valid, 410
    /// for a used or expired one), not 200.
    pub fn set_page_status(error: &crate::error::AppError) {
        if let Some(response) = leptos::prelude::use_context::<leptos_axum::ResponseOptions>() {
            if let Ok(status) = http::StatusCode::from_u16(error.code.http_status()) {
                response.set_status(status);
            }
        }
    }

    /// The account page, with `note` saying what just happened.
    pub fn account_page(account_id: i64, note: &str) -> String {
        format!("{ACCOUNT_PAGE}?id={account_id}&link={note}")
    }
}

/// The live sign-in links to the signed-in user's account `account_id`, and the one just made.
#[server(prefix = "/api", endpoint = "account_sign_in_links")]
pub async fn account_sign_in_links(account_id: i64) -> Result<AccountLinks, AppError> {
    use crate::session::{engine, signed_in_user};
    use engine::accounts::sign_in_links::MadeFor;

    let user = signed_in_user().await?;
    let links = engine()?
        .sign_in_links(user.id, account_id)
        .await?
        .into_iter()
        .map(|link| LinkRow {
            id: link.id,
            created_at: link.created_at,
            expires_at: link.expires_at,
            for_apps: link.made_for == MadeFor::Apps,
        })
        .collect();
    Ok(AccountLinks {
        links,
        new_link: ssr::take_new_link(account_id),
    })
}

/// Makes a sign-in link to the signed-in user's account `account_id` and shows it once on the
/// account's page. (No "Confirm it's you": the owner is signed in, and a link can only renew
/// that account, with its provider's password and code.)
#[server(prefix = "/api", endpoint = "make_sign_in_link")]
pub async fn make_sign_in_link(account_id: i64) -> Result<(), AppError> {
    use crate::session::{engine, link_base, signed_in_user};

    let result: Result<(), AppError> = async {
        let user = signed_in_user().await?;
        let made = engine()?
            .make_sign_in_link(user.id, account_id, link_base().as_deref())
            .await?;
        ssr::keep_new_link(account_id, &made.url);
        leptos_axum::redirect(&ssr::account_page(account_id, "made"));
        Ok(())
    }
    .await;
    if let Err(error) = &result {
        back_to_account::<MakeSignInLink>(account_id, error.clone());
    }
    result
}

/// Revokes the signed-in user's live link `link_id` to account `account_id`.
#[server(prefix = "/api", endpoint = "revoke_sign_in_link")]
pub async fn revoke_sign_in_link(account_id: i64, link_id: String) -> Result<(), AppError> {
    use crate::session::{engine, signed_in_user};

    let result: Result<(), AppError> = async {
        let user = signed_in_user().await?;
        engine()?
            .revoke_sign_in_link(user.id, account_id, &link_id)
            .await?;
        leptos_axum::redirect(&ssr::account_page(account_id, "revoked"));
        Ok(())
    }
    .await;
    if let Err(error) = &result {
        back_to_account::<RevokeSignInLink>(account_id, error.clone());
    }
    result
}

/// Revokes every live link to the signed-in user's account `account_id`.
#[server(prefix = "/api", endpoint = "revoke_sign_in_links")]
pub async fn revoke_sign_in_links(account_id: i64) -> Result<(), AppError> {
    use crate::session::{engine, signed_in_user};

    let result: Result<(), AppError> = async {
        let user = signed_in_user().await?;
        engine()?.revoke_sign_in_links(user.id, account_id).await?;
        leptos_axum::redirect(&ssr::account_page(account_id, "all_revoked"));
        Ok(())
    }
    .await;
    if let Err(error) = &result {
        back_to_account::<RevokeSignInLinks>(account_id, error.clone());
    }
    result
}

/// A refused act of a plain form post goes back to the account's page with the sentence.
#[cfg(feature = "ssr")]
fn back_to_account<F: leptos::server_fn::ServerFn>(account_id: i64, error: AppError) {
    crate::api::ssr::back_to_form_with::<F>(
        ssr::ACCOUNT_PAGE,
        &[("id", &account_id.to_string())],
        error,
    );
}

/// Opens sign-in link `token` (rendering `/sign-in-link/{token}`): keeps its ticket in this
/// browser and goes on to `/sign-in-link`, so the token leaves the address bar. A link that no
/// longer works is refused with its sentence and status (404 or 410).
#[server(prefix = "/api", endpoint = "open_sign_in_link")]
pub async fn open_sign_in_link(token: String) -> Result<(), AppError> {
    use crate::session::engine;

    let result: Result<(), AppError> = async {
        let ticket = engine()?.open_sign_in_link(&token).await?;
        ssr::keep_ticket(&ticket);
        leptos_axum::redirect(engine::accounts::sign_in_links::LINK_PATH);
        Ok(())
    }
    .await;
    if let Err(error) = &result {
        ssr::set_page_status(error);
    }
    result
}

/// What `/sign-in-link` shows this browser: its link's account and sign-in step (`flow`: the
/// step its flow waits at), or, with `done`, that the link signed the account in again.
#[server(prefix = "/api", endpoint = "sign_in_link_view")]
pub async fn sign_in_link_view(flow: Option<String>, done: bool) -> Result<LinkPageView, AppError> {
    use crate::session::engine;

    let result: Result<LinkPageView, AppError> = async {
        let engine = engine()?;
        let ticket = ssr::ticket().ok_or(engine::ErrorCode::SignInLinkInvalid)?;
        let title = |provider: &str| engine.title_of(provider).unwrap_or(provider).to_owned();
        if done {
            if let Some(account) = engine.finished_sign_in_link(&ticket).await? {
                return Ok(LinkPageView::Done {
                    title: title(&account.provider),
                    account: account.display_name,
                });
            }
        }
        let flow = flow.filter(|f| !f.is_empty());
        let page = engine.sign_in_link_page(&ticket, flow.as_deref()).await?;
        let (flow_id, view) = match page.flow {
            Some(flow) => (Some(flow.flow_id), flow.step),
            None => (None, page.first_view),
        };
        Ok(LinkPageView::Step {
            title: title(&page.account.provider),
            account: page.account.display_name,
            flow_id,
            view: Box::new(view),
            values: page.prefill.into_iter().collect(),
        })
    }
    .await;
    if let Err(error) = &result {
        ssr::set_page_status(error);
    }
    result
}

/// Sends one step of this browser's sign-in link: the first form (no `flow_id`) or a later one.
/// Goes on to the next step, or to the page saying it is done. A refused step comes back with
/// its sentence, typed fields kept except secrets.
#[server(prefix = "/sign-in-link", endpoint = "step")]
pub async fn submit_sign_in_link_step(
    flow_id: Option<String>,
    fields: Option<HashMap<String, String>>,
) -> Result<(), AppError> {
    use crate::session::engine;
    use engine::accounts::sign_in_links::LINK_PATH;
    use engine::{Completion, Progress};

    let fields = fields.unwrap_or_default();
    let flow_id = flow_id.filter(|f| !f.is_empty());
    let ticket = ssr::ticket();
    let result: Result<(), AppError> = async {
        let ticket = ticket
            .as_ref()
            .ok_or(engine::ErrorCode::SignInLinkInvalid)?;
        let input = fields.clone().into_iter().collect();
        match engine()?
            .submit_sign_in_link_step(ticket, flow_id.as_deref(), &input)
            .await?
        {
            Progress::Next(view) => {
                leptos_axum::redirect(&format!("{LINK_PATH}?flow={}", view.flow_id));
            }
            Progress::Done(Completion::Reauthenticated(_)) => {
                leptos_axum::redirect(&format!("{LINK_PATH}?done=1"));
            }
            Progress::Done(_) => return Err(engine::ErrorCode::Unknown.into()),
        }
        Ok(())
    }
    .await;
    if let Err(error) = &result {
        // The flow may have ended (a provider's fault, too many tries): then the page starts
        // over from the first form with the sentence.
        let (still_runs, shown) = step_shown_next(ticket.as_ref(), flow_id.as_deref()).await;
        let query = match (&flow_id, still_runs) {
            (Some(flow), true) => vec![("flow".to_owned(), flow.clone())],
            _ => Vec::new(),
        };
        crate::components::back_to_step::<SubmitSignInLinkStep>(
            LINK_PATH,
            query,
            &fields,
            &shown,
            error.clone(),
        );
    }
    result
}

/// After a refused step: whether this browser's flow `flow_id` still waits for a step, and the
/// fields of the form the page shows next (that step's, or the first form's).
#[cfg(feature = "ssr")]
async fn step_shown_next(
    ticket: Option<&engine::accounts::sign_in_links::SignInLinkTicket>,
    flow_id: Option<&str>,
) -> (bool, Vec<engine::view::FieldSpec>) {
    let (Ok(engine), Some(ticket)) = (crate::session::engine(), ticket) else {
        return (false, Vec::new());
    };
    if let Some(id) = flow_id {
        if let Ok(page) = engine.sign_in_link_page(ticket, Some(id)).await {
            if let Some(flow) = page.flow {
                return (true, flow.step.fields().to_vec());
            }
        }
    }
    let first = engine
        .sign_in_link_page(ticket, None)
        .await
        .map(|page| page.first_view.fields().to_vec())
        .unwrap_or_default();
    (false, first)
}

/// Lets the signed-in user's apps have sign-in links (`on` is the checkbox, present when
/// ticked), or not. Turning it on is a sensitive act (apps get a way to the accounts' sign-in
/// steps): confirm it's you first. Turning it off is not.
#[server(prefix = "/api", endpoint = "set_sign_in_links_for_apps")]
pub async fn set_sign_in_links_for_apps(on: Option<String>) -> Result<(), AppError> {
    use crate::session::{engine, require_sudo_keeping, signed_in_user};

    let on = on.is_some();
    let user = if on {
        // Back from the confirm page, the box comes ticked again.
        require_sudo_keeping(&[("sign_in_links", "on")]).await?
    } else {
        signed_in_user().await?
    };
    engine()?.set_sign_in_links_for_apps(user.id, on).await?;
    leptos_axum::redirect(&format!(
        "/settings/webhooks?links={}",
        if on { "on" } else { "off" }
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use leptos::server_fn::ServerFn;

    #[test]
    fn a_links_steps_post_under_its_cookies_path() {
        assert_eq!(
            super::SubmitSignInLinkStep::PATH,
            crate::pages::sign_in_link::LINK_STEP_PATH
        );
    }
}
