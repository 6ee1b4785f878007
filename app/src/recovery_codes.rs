//! Recovery codes in the browser's API: the set made when the first second factor is turned on
//! (or on request) handed to `/settings/security` once, and signing in with one at
//! `/login/recovery`.

use leptos::prelude::*;

use crate::error::AppError;

#[cfg(feature = "ssr")]
pub mod ssr {
    use crate::one_time_secret;

    /// The cookie that carries a new set to the security page's next rendering (one minute,
    /// that page only; `one_time_secret.rs`).
    pub const NEW_CODES_COOKIE: &str = "stepgate_recovery_codes";
    pub const PAGE: &str = "/settings/security";

    fn joined(codes: &engine::second_factor::recovery_codes::RecoveryCodes) -> String {
        codes.0.join(".")
    }

    /// Hands a new set to the next rendering of the security page.
    pub fn keep_new_codes(codes: &engine::second_factor::recovery_codes::RecoveryCodes) {
        one_time_secret::hand_over(NEW_CODES_COOKIE, PAGE, &joined(codes));
    }

    /// The same hand-over as a `Set-Cookie` value, for the TOTP site's callback (an axum
    /// handler, outside the server functions' context).
    pub fn new_codes_cookie(
        codes: &engine::second_factor::recovery_codes::RecoveryCodes,
        https: bool,
    ) -> String {
        one_time_secret::hand_over_header(NEW_CODES_COOKIE, PAGE, &joined(codes), https)
    }

    /// The set just made, if the browser brought it back; the cookie is cleared.
    pub fn take_new_codes() -> Option<Vec<String>> {
        one_time_secret::take(NEW_CODES_COOKIE, PAGE, |value| {
            value.len() <= 400
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        })
        .map(|value| value.split('.').map(str::to_owned).collect())
    }
}

/// A new set of recovery codes (the old set dies), after "Confirm it's you"; back on the
/// security page, which shows the new set once.
#[server(prefix = "/api", endpoint = "make_recovery_codes")]
pub async fn make_recovery_codes() -> Result<(), AppError> {
    use crate::session::{current_session, engine, require_sudo};

    require_sudo().await?;
    let codes = engine()?.new_recovery_codes(&current_session()?).await?;
    ssr::keep_new_codes(&codes);
    leptos_axum::redirect(ssr::PAGE);
    Ok(())
}

/// The code step of a sign-in answered with a recovery code. Signed in, the security page
/// says how many codes are left (and that the lost factor can be set up again there).
#[server(prefix = "/api", endpoint = "use_recovery_code")]
pub async fn use_recovery_code(flow_id: String, recovery_code: String) -> Result<(), AppError> {
    use crate::session::{engine, login_token};
    use engine::{Completion, Progress};

    let result: Result<(), AppError> = async {
        let engine = engine()?;
        let owner = login_token().map(|t| t.digest());
        match engine
            .sign_in_with_recovery_code(&flow_id, owner.as_deref(), &recovery_code)
            .await?
        {
            Progress::Done(Completion::SignedIn { session, .. }) => {
                crate::api::ssr::go_signed_in_to(
                    &engine,
                    &session,
                    "/settings/security?recovered=1",
                )
                .await
            }
            Progress::Done(Completion::Connected(_) | Completion::Reauthenticated(_))
            | Progress::Next(_) => Err(engine::ErrorCode::Unknown.into()),
        }
    }
    .await;
    if let Err(error) = &result {
        crate::api::ssr::back_to_form_with::<UseRecoveryCode>(
            "/login/recovery",
            &[("flow", &flow_id)],
            error.clone(),
        );
    }
    result
}
