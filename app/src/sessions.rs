//! Server functions of the sessions page (`pages/sessions.rs`) and of the password change
//! (`pages/password.rs`). Thin: the engine keeps the sessions (`engine/src/sign_in/session_list.rs`)
//! and checks the passwords (`engine/src/sign_in/account_security.rs`).

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

/// One session in the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRow {
    pub id: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds, to the minute.
    pub last_used_at: i64,
    pub browser: String,
    pub os: String,
    pub address: Option<String>,
    /// "This browser".
    pub current: bool,
}

/// What `/settings/sessions` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionsPageData {
    pub sessions: Vec<SessionRow>,
    /// How long an unused session lives, in seconds (said on the page).
    pub idle_seconds: i64,
}

/// This user's live sessions, this browser's first.
#[server(prefix = "/api", endpoint = "sessions_view")]
pub async fn sessions_view() -> Result<SessionsPageData, AppError> {
    use crate::session::{current_session, engine};

    let engine = engine()?;
    let sessions = engine
        .list_sessions(&current_session()?)
        .await?
        .into_iter()
        .map(|s| SessionRow {
            id: s.id,
            created_at: s.created_at,
            last_used_at: s.last_used_at,
            browser: s.browser,
            os: s.os,
            address: s.address,
            current: s.current,
        })
        .collect();
    Ok(SessionsPageData {
        sessions,
        idle_seconds: engine.session_idle_seconds(),
    })
}

/// Signs out session `session_id` of this user (this browser's own: signed out here too).
#[server(prefix = "/api", endpoint = "sign_out_session")]
pub async fn sign_out_session(session_id: String) -> Result<(), AppError> {
    use crate::session::{clear_session_cookie, current_session, engine};

    let own = engine()?
        .end_session(&current_session()?, &session_id)
        .await?;
    if own {
        clear_session_cookie();
        leptos_axum::redirect("/login");
    } else {
        leptos_axum::redirect("/settings/sessions?ended=1");
    }
    Ok(())
}

/// Signs out every other session of this user; this browser stays signed in.
#[server(prefix = "/api", endpoint = "sign_out_other_sessions")]
pub async fn sign_out_other_sessions() -> Result<(), AppError> {
    use crate::session::{current_session, engine};

    let ended = engine()?.end_other_sessions(&current_session()?).await?;
    leptos_axum::redirect(&format!("/settings/sessions?ended_others={ended}"));
    Ok(())
}

/// Whether the password page may show its form now (the session is confirmed), and where to
/// confirm otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordPageData {
    pub email: String,
    /// Not confirmed lately: the link to "Confirm it's you", coming back here.
    pub confirm_first: Option<String>,
}

pub const PASSWORD_PAGE: &str = "/settings/password";

/// The password page's data. A sensitive act: without a confirmation in the last ten minutes
/// the page sends the browser to confirm first, before anything is typed.
#[server(prefix = "/api", endpoint = "password_view")]
pub async fn password_view() -> Result<PasswordPageData, AppError> {
    use crate::session::{confirm_link, current_session, engine};

    let state = engine()?
        .sudo_state(&current_session()?)
        .await?
        .ok_or(AppError::from(engine::ErrorCode::NotSignedIn))?;
    Ok(PasswordPageData {
        email: state.user.email,
        confirm_first: state
            .confirmed_until
            .is_none()
            .then(|| confirm_link(PASSWORD_PAGE)),
    })
}

/// Changes the password: the current one, the new one twice (the rules of registering). The
/// user's other sessions end; this one stays.
#[server(prefix = "/api", endpoint = "change_password")]
pub async fn change_password(
    current_password: String,
    new_password: String,
    confirm_password: String,
) -> Result<(), AppError> {
    use crate::session::{client_address, current_session, engine, require_sudo};

    let result = async {
        let user = require_sudo().await?;
        let ended = engine()?
            .change_password(
                &current_session()?,
                &current_password,
                &new_password,
                &confirm_password,
                client_address(),
            )
            .await
            .map_err(|refusal| {
                let weak =
                    refusal == engine::SignInRefusal::Code(engine::ErrorCode::PasswordTooWeak);
                AppError {
                    // zxcvbn's own advice says what makes this password guessable.
                    detail: weak
                        .then(|| {
                            engine::sign_in::password_policy::advice_for(&user.email, &new_password)
                        })
                        .flatten(),
                    ..refusal.into()
                }
            })?;
        leptos_axum::redirect(&format!("{PASSWORD_PAGE}?changed=1&ended={ended}"));
        Ok::<(), AppError>(())
    }
    .await;
    if let Err(error) = &result {
        if error.code != engine::ErrorCode::ConfirmIdentityRequired {
            crate::api::ssr::back_to_form_with::<ChangePassword>(PASSWORD_PAGE, &[], error.clone());
        }
    }
    result
}
