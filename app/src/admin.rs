//! Server functions of the admin page (`pages/admin.rs`) and of the header every signed-in page
//! shows. Thin: the engine decides who is an admin and does the acts (`engine/src/sign_in/admin.rs`).
//!
//! A new invite link reaches the page once through a one-minute cookie sent only to
//! `/admin/users` (`one_time_secret.rs` says why), so it is in no URL the admin did not open,
//! no log, and not in the database (which keeps only its SHA-256).

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

/// What the header needs to know about the visitor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NavAccount {
    pub is_admin: bool,
}

/// One account in the admin's list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRowView {
    pub id: i64,
    pub email: String,
    /// Unix seconds.
    pub created_at: i64,
    pub last_sign_in_at: Option<i64>,
    pub two_factor_on: bool,
    pub live_sessions: i64,
    pub is_admin: bool,
    pub disabled: bool,
    /// The signed-in admin's own row (it cannot be disabled).
    pub is_me: bool,
}

/// One invite in the list (never its token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteRowView {
    pub created_at: i64,
    pub expires_at: i64,
    /// "Not used yet", "Used by …", "Expired".
    pub state: String,
}

/// One line of the admin audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRowView {
    pub at: i64,
    pub admin: String,
    /// "disabled the account", …
    pub what: String,
    pub whom: Option<String>,
}

/// What `/admin/users` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminPageData {
    /// `open`, `invite` or `closed`.
    pub registration: String,
    pub accounts: Vec<AccountRowView>,
    pub invites: Vec<InviteRowView>,
    pub audit: Vec<AuditRowView>,
    /// The invite link just made, shown this once.
    pub new_invite: Option<String>,
}

/// How many invites and log lines the page shows.
pub const LIST_LENGTH: i64 = 50;

#[cfg(feature = "ssr")]
mod ssr {
    use crate::one_time_secret;

    const NEW_INVITE_COOKIE: &str = "stepgate_new_invite";
    pub const PAGE: &str = "/admin/users";

    pub fn keep_new_invite(token: &str) {
        one_time_secret::hand_over(NEW_INVITE_COOKIE, PAGE, token);
    }

    pub fn take_new_invite() -> Option<String> {
        one_time_secret::take(NEW_INVITE_COOKIE, PAGE, |value| {
            engine::sign_in::invites::InviteToken::parse(value).is_some()
        })
    }

    /// A page answered with an error carries its status (403 for a non-admin), not 200.
    pub fn set_page_status(error: &crate::error::AppError) {
        if let Some(response) = leptos::prelude::use_context::<leptos_axum::ResponseOptions>() {
            if let Ok(status) = http::StatusCode::from_u16(error.code.http_status()) {
                response.set_status(status);
            }
        }
    }
}

/// Whether the visitor is signed in (`None` if not) and an admin: the header's links.
#[server(prefix = "/api", endpoint = "nav_status")]
pub async fn nav_status() -> Result<Option<NavAccount>, AppError> {
    use crate::session::{engine, session_token};
    let Some(token) = session_token() else {
        return Ok(None);
    };
    let engine = engine()?;
    let Some(user) = engine.session_user(&token).await? else {
        return Ok(None);
    };
    Ok(Some(NavAccount {
        is_admin: engine.is_admin(&user).await?,
    }))
}

/// Everything `/admin/users` shows; `admin_only` (403) for anyone but an admin.
#[server(prefix = "/api", endpoint = "admin_view")]
pub async fn admin_view() -> Result<AdminPageData, AppError> {
    use crate::pages::accounts::utc_minute;
    use crate::session::{engine, settings, signed_in_user};

    let result = async {
        let admin = signed_in_user().await?;
        let engine = engine()?;
        let now = engine.now();
        let accounts = engine
            .admin_accounts(&admin)
            .await?
            .into_iter()
            .map(|a| AccountRowView {
                is_me: a.id == admin.id,
                id: a.id,
                email: a.email,
                created_at: a.created_at,
                last_sign_in_at: a.last_sign_in_at,
                two_factor_on: a.two_factor_on,
                live_sessions: a.live_sessions,
                is_admin: a.is_admin,
                disabled: a.disabled_at.is_some(),
            })
            .collect();
        let invites = engine
            .admin_invites(&admin, LIST_LENGTH)
            .await?
            .into_iter()
            .map(|i| InviteRowView {
                created_at: i.created_at,
                expires_at: i.expires_at,
                state: match (i.used_at, i.used_by) {
                    (Some(at), Some(by)) => format!("Used by {by} at {}", utc_minute(at)),
                    (Some(at), None) => format!("Used at {}", utc_minute(at)),
                    (None, _) if i.expires_at <= now => "Expired".into(),
                    (None, _) => "Not used yet".into(),
                },
            })
            .collect();
        let audit = engine
            .admin_audit_log(&admin, LIST_LENGTH)
            .await?
            .into_iter()
            .map(|e| AuditRowView {
                at: e.at,
                admin: e.admin_email,
                what: e.action.describe().to_owned(),
                whom: e.target_email,
            })
            .collect();
        let public_url = settings()?.public_url;
        Ok(AdminPageData {
            registration: settings()?.registration.as_str().to_owned(),
            accounts,
            invites,
            audit,
            new_invite: ssr::take_new_invite()
                .map(|token| format!("{public_url}/register?invite={token}")),
        })
    }
    .await;
    if let Err(error) = &result {
        ssr::set_page_status(error);
    }
    result
}

/// One admin act from the page: `act` is `invite`, `disable`, `enable` or `reset_2fa`;
/// `account` names the account (not for `invite`). Every admin act is a sensitive act: an
/// unconfirmed session goes to "Confirm it's you" first and comes back to the page.
#[server(prefix = "/api", endpoint = "admin_act")]
pub async fn admin_act(act: String, account: Option<i64>) -> Result<(), AppError> {
    use crate::session::{engine, require_sudo};
    use engine::ErrorCode;

    let result = async {
        let admin = require_sudo().await?;
        let engine = engine()?;
        let target = || account.ok_or(AppError::from(ErrorCode::MissingFields));
        match act.as_str() {
            "invite" => {
                let invite = engine.admin_create_invite(&admin).await?;
                ssr::keep_new_invite(invite.token.as_str());
            }
            "disable" => engine.admin_disable(&admin, target()?).await?,
            "enable" => engine.admin_enable(&admin, target()?).await?,
            "reset_2fa" => engine.admin_reset_second_factor(&admin, target()?).await?,
            _ => return Err(ErrorCode::InvalidRequest.into()),
        }
        Ok(())
    }
    .await;
    // A refused plain form post goes back to the page with its sentence (leptos_axum does
    // that for every server function called by a form).
    if result.is_ok() {
        leptos_axum::redirect(&format!("{}?done={act}", ssr::PAGE));
    }
    result
}
