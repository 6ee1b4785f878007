//! Server functions: the browser's whole API. Each is a few lines that hand the work to the
//! engine; they also work as plain form posts when WebAssembly is not running.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

/// What the browser may know about the signed-in account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub email: String,
}

/// The signed-in account, or `None` for a visitor.
#[server(prefix = "/api", endpoint = "current_account")]
pub async fn current_account() -> Result<Option<Account>, AppError> {
    use crate::session::{engine, session_token};
    let Some(token) = session_token() else {
        return Ok(None);
    };
    let user = engine()?.session_user(&token).await?;
    Ok(user.map(|u| Account { email: u.email }))
}

/// Checks email and password; on success opens a new session and goes home.
#[server(prefix = "/api", endpoint = "sign_in")]
pub async fn sign_in(email: String, password: String) -> Result<(), AppError> {
    use crate::session::{engine, session_token, set_session_cookie};
    use engine::providers::{Completion, Input};
    use engine::Progress;

    let engine = engine()?;
    let input = Input::from([
        ("email".to_owned(), email),
        ("password".to_owned(), password),
    ]);
    match engine.start_flow("local", None, &input).await? {
        Progress::Done(Completion::SignedIn { user_id }) => {
            // A new session id at every sign-in (ASVS 3.2.1): the old one, if any, is ended.
            if let Some(old) = session_token() {
                engine.close_session(&old).await?;
            }
            let token = engine.open_session(user_id).await?;
            set_session_cookie(&token);
            leptos_axum::redirect("/");
            Ok(())
        }
        Progress::Next(_) => Err(engine::ErrorCode::Unknown.into()),
    }
}

/// Creates an account, signs it in and goes home.
#[server(prefix = "/api", endpoint = "register")]
pub async fn register(
    email: String,
    password: String,
    confirm_password: String,
) -> Result<(), AppError> {
    use crate::session::{engine, session_token, set_session_cookie};

    let engine = engine()?;
    let user = engine
        .register(&email, &password, &confirm_password)
        .await?;
    if let Some(old) = session_token() {
        engine.close_session(&old).await?;
    }
    let token = engine.open_session(user.id).await?;
    set_session_cookie(&token);
    leptos_axum::redirect("/");
    Ok(())
}

/// Ends the session on the server, deletes the cookie and goes to the sign-in page.
#[server(prefix = "/api", endpoint = "sign_out")]
pub async fn sign_out() -> Result<(), AppError> {
    use crate::session::{clear_session_cookie, engine, session_token};

    if let Some(token) = session_token() {
        engine()?.close_session(&token).await?;
    }
    clear_session_cookie();
    leptos_axum::redirect("/login");
    Ok(())
}
