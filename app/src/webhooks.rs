//! Server functions of the webhooks page (`pages/webhooks.rs`): what the page shows, saving the
//! URL, removing it. Thin: the engine keeps the URL, its secret and the deliveries
//! (`engine/src/apps/webhooks.rs`).
//!
//! The signing secret reaches the page once through a one-minute cookie sent only to
//! `/settings/webhooks` (`one_time_secret.rs` says why and how), so it is never in a URL or a
//! log, and the database keeps it only sealed.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

/// How many deliveries the log shows.
pub const LOG_LENGTH: i64 = 20;

/// One line of the delivery log, in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRow {
    pub id: String,
    pub event_type: String,
    /// Unix seconds.
    pub created_at: i64,
    pub attempts: i64,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// "Delivered (HTTP 204)", "Retrying at … (HTTP 500)", "Failed (could not connect)".
    pub result: String,
}

/// What `/settings/webhooks` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhooksPageData {
    /// The URL, if one is set.
    pub url: Option<String>,
    /// When the URL (and its secret) was set, unix seconds.
    pub since: Option<i64>,
    pub deliveries: Vec<DeliveryRow>,
    /// The signing secret just made, shown this once.
    pub new_secret: Option<String>,
    /// The user lets apps have sign-in links (the `account.needs_sign_in` webhook, the API).
    pub sign_in_links_for_apps: bool,
}

#[cfg(feature = "ssr")]
mod ssr {
    use engine::apps::webhooks::{Delivery, DeliveryStatus, SECRET_PREFIX};

    use super::DeliveryRow;
    use crate::one_time_secret;
    use crate::pages::accounts::utc_minute;

    const SECRET_COOKIE: &str = "stepgate_webhook_secret";
    pub const PAGE: &str = "/settings/webhooks";

    /// Hands the new secret to the next rendering of the page.
    pub fn keep_new_secret(secret: &str) {
        one_time_secret::hand_over(SECRET_COOKIE, PAGE, secret);
    }

    /// The secret just made, if the browser brought it back; the cookie is cleared.
    pub fn take_new_secret() -> Option<String> {
        one_time_secret::take(SECRET_COOKIE, PAGE, |value| {
            value.starts_with(SECRET_PREFIX)
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_+/=".contains(&b))
        })
    }

    /// A delivery as the log shows it.
    /// A refused save of a plain form post goes back to the page with the error and the URL
    /// as typed (it is no secret), so nothing is lost without WebAssembly either.
    pub fn back_to_page(url: &str, error: crate::error::AppError) {
        use leptos::server_fn::error::ServerFnUrlError;
        use leptos::server_fn::ServerFn;

        if !crate::session::is_plain_form_post() {
            return;
        }
        let base = format!("http://stepgate{PAGE}");
        let Ok(mut back) = ServerFnUrlError::new(super::SaveWebhook::PATH, error).to_url(&base)
        else {
            return;
        };
        if url.len() <= 1024 {
            back.query_pairs_mut().append_pair("value.url", url);
        }
        leptos_axum::redirect(&format!(
            "{}?{}",
            back.path(),
            back.query().unwrap_or_default()
        ));
    }

    pub fn row(d: Delivery) -> DeliveryRow {
        let answer = match (&d.last_status, &d.last_error) {
            (Some(code), _) => format!("HTTP {code}"),
            (None, Some(error)) => error.clone(),
            (None, None) => String::new(),
        };
        let with_answer = |text: String| {
            if answer.is_empty() {
                text
            } else {
                format!("{text} ({answer})")
            }
        };
        let (status, result) = match d.status {
            DeliveryStatus::Delivered => ("delivered", with_answer("Delivered".into())),
            DeliveryStatus::Failed => ("failed", with_answer("Failed".into())),
            DeliveryStatus::Pending if d.attempts == 0 => ("pending", "Sending…".into()),
            DeliveryStatus::Pending => (
                "pending",
                with_answer(match d.next_attempt_at {
                    Some(at) => format!("Retrying at {}", utc_minute(at)),
                    None => "Retrying".into(),
                }),
            ),
        };
        DeliveryRow {
            id: d.id,
            event_type: d.event_type,
            created_at: d.created_at,
            attempts: d.attempts,
            status: status.into(),
            result,
        }
    }
}

/// The user's webhook URL, the latest deliveries, and the secret just made (once).
#[server(prefix = "/api", endpoint = "webhooks_view")]
pub async fn webhooks_view() -> Result<WebhooksPageData, AppError> {
    use crate::session::{engine, signed_in_user};

    let user = signed_in_user().await?;
    let engine = engine()?;
    let endpoint = engine.webhook_endpoint(user.id).await?;
    let deliveries = engine
        .webhook_deliveries(user.id, LOG_LENGTH)
        .await?
        .into_iter()
        .map(ssr::row)
        .collect();
    let (url, since) = endpoint.unzip();
    Ok(WebhooksPageData {
        url,
        since,
        deliveries,
        new_secret: ssr::take_new_secret(),
        sign_in_links_for_apps: engine.sign_in_links_for_apps(user.id).await?,
    })
}

/// Saves `url` as the user's webhook URL with a new signing secret, then shows the page with
/// the secret (see the module's note on how it gets there).
#[server(prefix = "/api", endpoint = "save_webhook")]
pub async fn save_webhook(url: String) -> Result<(), AppError> {
    use crate::session::{engine, require_sudo};

    // A sensitive act: confirm it's you first. (The URL does not ride along in the confirm
    // page's address: one may carry a token, and addresses end up in logs and history.)
    let user = require_sudo().await?;
    let secret = match engine()?.set_webhook_url(user.id, &url).await {
        Ok(secret) => secret,
        Err(code) => {
            ssr::back_to_page(&url, code.into());
            return Err(code.into());
        }
    };
    ssr::keep_new_secret(secret.as_str());
    leptos_axum::redirect(&format!("{}?saved=1", ssr::PAGE));
    Ok(())
}

/// Removes the user's webhook URL: nothing more is sent.
#[server(prefix = "/api", endpoint = "remove_webhook")]
pub async fn remove_webhook() -> Result<(), AppError> {
    use crate::session::{engine, require_sudo};

    // A sensitive act: confirm it's you first.
    let user = require_sudo().await?;
    engine()?.remove_webhook(user.id).await?;
    leptos_axum::redirect(&format!("{}?removed=1", ssr::PAGE));
    Ok(())
}
