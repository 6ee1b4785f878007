//! Passkeys in the browser's API. The ceremonies need JavaScript (`navigator.credentials`), so
//! `public/passkeys.js` asks these server functions for a ceremony's options, runs it, and
//! posts the answer in a plain form: no WebAssembly, so `/login` stays script-light. Without
//! JavaScript the password (+ code) path works as before.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

/// A ceremony for `public/passkeys.js`: the options for `navigator.credentials` (JSON, as
/// webauthn-rs writes them) and what the answer goes back with (a sign-in's flow id, or a
/// registration's sealed state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasskeyCeremony {
    pub options: String,
    pub state: String,
}

/// One passkey of the signed-in account, as the security page lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasskeyRow {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// The security page's passkeys: whether they can be used here, and the account's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasskeyOverview {
    pub available: bool,
    pub passkeys: Vec<PasskeyRow>,
}

/// Whether this Stepgate offers passkeys (its public URL names a host, not an IP address).
/// Only server-rendered pages ask (`/login` has no islands).
pub fn passkeys_offered() -> bool {
    #[cfg(feature = "ssr")]
    {
        crate::session::engine().is_ok_and(|engine| engine.passkeys_available())
    }
    #[cfg(not(feature = "ssr"))]
    {
        false
    }
}

#[cfg(feature = "ssr")]
mod ssr {
    use crate::error::AppError;
    use engine::{Completion, Progress};

    /// A passkey's answer to sign-in flow `flow_id`, from the browser session's login cookie;
    /// signed in, the browser goes home.
    pub async fn sign_in(flow_id: &str, answer: &str) -> Result<(), AppError> {
        use crate::session::{engine, login_token};

        let engine = engine()?;
        let owner = login_token().map(|t| t.digest());
        match engine
            .sign_in_with_passkey(flow_id, owner.as_deref(), answer)
            .await?
        {
            Progress::Done(Completion::SignedIn { session, .. }) => {
                crate::api::ssr::go_home_signed_in(&engine, &session).await
            }
            Progress::Done(Completion::Connected(_) | Completion::Reauthenticated(_))
            | Progress::Next(_) => Err(engine::ErrorCode::Unknown.into()),
        }
    }
}

/// Whether passkeys work here and the signed-in account's passkeys.
#[server(prefix = "/api", endpoint = "passkey_settings")]
pub async fn passkey_settings() -> Result<PasskeyOverview, AppError> {
    use crate::session::{engine, signed_in_user};

    let user = signed_in_user().await?;
    let engine = engine()?;
    let passkeys = engine
        .passkeys(&user)
        .await?
        .into_iter()
        .map(|p| PasskeyRow {
            id: p.id,
            name: p.name,
            created_at: p.created_at,
            last_used_at: p.last_used_at,
        })
        .collect();
    Ok(PasskeyOverview {
        available: engine.passkeys_available(),
        passkeys,
    })
}

/// "Sign in with a passkey" on `/login` (and its autofill, asked on every view of the page): a
/// new sign-in flow whose step any discoverable passkey of this Stepgate may answer. It belongs
/// to the browser's login cookie, made only when there is none: viewing `/login` must not cut off
/// a sign-in waiting at its code step in another tab.
#[server(prefix = "/api", endpoint = "passkey_sign_in_options")]
pub async fn passkey_sign_in_options() -> Result<PasskeyCeremony, AppError> {
    use crate::session::{engine, login_token, set_login_cookie};
    use engine::sign_in::sessions::SessionToken;
    use engine::view::StepView;

    let (login, new) = match login_token() {
        Some(login) => (login, false),
        None => (SessionToken::random(), true),
    };
    let view = engine()?
        .start_passkey_sign_in(Some(login.digest()))
        .await?;
    let StepView::Passkey { options } = view.step else {
        return Err(engine::ErrorCode::Unknown.into());
    };
    if new {
        set_login_cookie(&login);
    }
    Ok(PasskeyCeremony {
        options,
        state: view.flow_id,
    })
}

/// The passkey's answer to "Sign in with a passkey" (a plain form post from
/// `public/passkeys.js`); a refusal goes back to `/login` with its sentence.
#[server(prefix = "/api", endpoint = "sign_in_with_passkey")]
pub async fn sign_in_with_passkey(flow_id: String, passkey: String) -> Result<(), AppError> {
    let result = ssr::sign_in(&flow_id, &passkey).await;
    if let Err(error) = &result {
        crate::api::ssr::back_to_form_with::<SignInWithPasskey>("/login", &[], error.clone());
    }
    result
}

/// A passkey as the second factor on the code step; a refusal goes back to that step with its
/// sentence.
#[server(prefix = "/api", endpoint = "verify_passkey")]
pub async fn verify_passkey(flow_id: String, passkey: String) -> Result<(), AppError> {
    let result = ssr::sign_in(&flow_id, &passkey).await;
    if let Err(error) = &result {
        crate::api::ssr::back_to_form_with::<VerifyPasskey>(
            "/login/code",
            &[("flow", &flow_id)],
            error.clone(),
        );
    }
    result
}

/// Options for adding a passkey to the signed-in account, with the sealed state its answer
/// goes back with.
#[server(prefix = "/api", endpoint = "passkey_registration_options")]
pub async fn passkey_registration_options() -> Result<PasskeyCeremony, AppError> {
    use crate::session::{engine, signed_in_user};

    let user = signed_in_user().await?;
    let start = engine()?.start_passkey_registration(&user).await?;
    Ok(PasskeyCeremony {
        options: start.options,
        state: start.sealed_state,
    })
}

/// Keeps the passkey the browser made, under the name the user gave; back on the security
/// page (which shows the first recovery codes when this was the first second factor).
#[server(prefix = "/api", endpoint = "add_passkey")]
pub async fn add_passkey(name: String, state: String, passkey: String) -> Result<(), AppError> {
    use crate::session::{current_session, engine, signed_in_user};

    let result: Result<(), AppError> = async {
        let user = signed_in_user().await?;
        let (_, codes) = engine()?
            .finish_passkey_registration(&user, &current_session()?, &name, &state, &passkey)
            .await?;
        if let Some(codes) = codes {
            crate::recovery_codes::ssr::keep_new_codes(&codes);
        }
        leptos_axum::redirect("/settings/security?passkey=added");
        Ok(())
    }
    .await;
    if let Err(error) = &result {
        crate::api::ssr::back_to_form_with::<AddPasskey>(
            "/settings/security",
            &[("passkey_name", name.trim())],
            error.clone(),
        );
    }
    result
}

/// Removes one of the signed-in account's passkeys, after "Confirm it's you".
#[server(prefix = "/api", endpoint = "remove_passkey")]
pub async fn remove_passkey(id: String) -> Result<(), AppError> {
    use crate::session::{engine, require_sudo};

    let result: Result<(), AppError> = async {
        let user = require_sudo().await?;
        engine()?.remove_passkey(&user, &id).await?;
        leptos_axum::redirect("/settings/security?passkey=removed");
        Ok(())
    }
    .await;
    if let Err(error) = &result {
        if error.code != engine::ErrorCode::ConfirmIdentityRequired {
            crate::api::ssr::back_to_form_with::<RemovePasskey>(
                "/settings/security",
                &[],
                error.clone(),
            );
        }
    }
    result
}
