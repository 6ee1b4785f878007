//! Server functions of the API keys page (`pages/api_keys.rs`): what the page shows, creating a
//! key, revoking one. Thin: the engine keeps the keys (`engine/src/apps/api_keys.rs`).
//!
//! The new key's secret reaches the page once through a one-minute cookie sent only to
//! `/settings/api-keys` (`one_time_secret.rs` says why and how), so it stays in no URL, no log
//! and not in the database (which keeps only a SHA-256 of it).

use std::collections::HashMap;

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

/// A connected account a key can be given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeChoice {
    pub id: i64,
    /// The provider and account name: "Librus demo.parent".
    pub label: String,
}

/// The lifetime the form picks unless told otherwise (GitHub suggests 30 days for its tokens;
/// an app's key lives longer, and "Never" stays one choice away).
pub const DEFAULT_LIFETIME: &str = "90";

/// One key in the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRow {
    pub id: String,
    pub name: String,
    /// The accounts it may read, as [`ScopeChoice::label`]s.
    pub scope: Vec<String>,
    /// Unix seconds (to the minute).
    pub last_used_at: Option<i64>,
    pub created_at: i64,
    /// Unix seconds from which the key is refused; `None`: never.
    pub expires_at: Option<i64>,
    /// Past its expiry now: apps using it get `api_key_expired`.
    pub expired: bool,
}

/// What `/settings/api-keys` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeysPageData {
    pub keys: Vec<KeyRow>,
    pub accounts: Vec<ScopeChoice>,
    /// The key just created, shown this once.
    pub new_key: Option<String>,
}

#[cfg(feature = "ssr")]
mod ssr {
    use crate::one_time_secret;

    const NEW_KEY_COOKIE: &str = "stepgate_new_api_key";
    pub const PAGE: &str = "/settings/api-keys";

    /// Hands the new key to the next rendering of the page.
    pub fn keep_new_key(secret: &str) {
        one_time_secret::hand_over(NEW_KEY_COOKIE, PAGE, secret);
    }

    /// The key just created, if the browser brought it back; the cookie is cleared.
    pub fn take_new_key() -> Option<String> {
        one_time_secret::take(NEW_KEY_COOKIE, PAGE, |value| {
            value.starts_with(engine::apps::api_keys::KEY_PREFIX)
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
    }
}

/// The user's keys, the accounts a new key can be given, and the key just created (once).
#[server(prefix = "/api", endpoint = "api_keys_view")]
pub async fn api_keys_view() -> Result<ApiKeysPageData, AppError> {
    use crate::session::{engine, signed_in_user};

    let user = signed_in_user().await?;
    let engine = engine()?;
    let accounts: Vec<ScopeChoice> = engine
        .connected_accounts(user.id)
        .await?
        .into_iter()
        .map(|a| ScopeChoice {
            id: a.id,
            label: format!(
                "{} {}",
                engine.title_of(&a.provider).unwrap_or(a.provider.as_str()),
                a.display_name
            ),
        })
        .collect();
    let label_of = |id: i64| {
        accounts
            .iter()
            .find(|a| a.id == id)
            .map(|a| a.label.clone())
    };
    let now = engine.now();
    let keys = engine
        .list_api_keys(user.id)
        .await?
        .into_iter()
        .map(|k| KeyRow {
            scope: k
                .account_ids
                .iter()
                .filter_map(|&id| label_of(id))
                .collect(),
            id: k.id,
            name: k.name,
            last_used_at: k.last_used_at,
            created_at: k.created_at,
            expires_at: k.expires_at,
            expired: k.expires_at.is_some_and(|at| at <= now),
        })
        .collect();
    Ok(ApiKeysPageData {
        keys,
        accounts,
        new_key: ssr::take_new_key(),
    })
}

/// A key's lifetime as the form's `expires` field says it: `"30"`, `"90"` (also when the field
/// is missing), `"365"` days, or `"never"`.
#[cfg(feature = "ssr")]
fn lifetime_days(expires: Option<&str>) -> Result<Option<u32>, AppError> {
    // Which lifetimes exist is the engine's rule (`invalid_request` for any other).
    match expires.unwrap_or(DEFAULT_LIFETIME) {
        "never" => Ok(None),
        days => days
            .parse::<u32>()
            .map(Some)
            .map_err(|_| AppError::from(engine::ErrorCode::InvalidRequest)),
    }
}

/// Creates a key named `name` for the ticked accounts (`accounts[<id>]`), expiring after
/// `expires` days (or never), then shows the page
/// with its secret (see the module's note on how it gets there). A sensitive act: an
/// unconfirmed session goes to "Confirm it's you" first, and comes back to the form with the
/// name and the ticked accounts filled in again.
#[server(prefix = "/api", endpoint = "create_api_key")]
pub async fn create_api_key(
    name: String,
    accounts: Option<HashMap<String, String>>,
    expires: Option<String>,
) -> Result<(), AppError> {
    use crate::session::{engine, require_sudo_keeping};

    let account_ids = accounts
        .unwrap_or_default()
        .keys()
        .map(|id| id.parse::<i64>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| AppError::from(engine::ErrorCode::InvalidRequest))?;
    let scope = account_ids
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let days = lifetime_days(expires.as_deref())?;
    let expires = days.map_or_else(|| "never".to_owned(), |d| d.to_string());
    let user =
        require_sudo_keeping(&[("name", &name), ("scope", &scope), ("expires", &expires)]).await?;
    let (_, secret) = engine()?
        .create_api_key(user.id, &name, &account_ids, days)
        .await?;
    ssr::keep_new_key(secret.as_str());
    leptos_axum::redirect(&format!("{}?created=1", ssr::PAGE));
    Ok(())
}

/// Revokes key `key_id`: apps using it are refused from now on.
#[server(prefix = "/api", endpoint = "revoke_api_key")]
pub async fn revoke_api_key(key_id: String) -> Result<(), AppError> {
    use crate::session::{engine, signed_in_user};

    let user = signed_in_user().await?;
    engine()?.revoke_api_key(user.id, &key_id).await?;
    leptos_axum::redirect(&format!("{}?revoked=1", ssr::PAGE));
    Ok(())
}
