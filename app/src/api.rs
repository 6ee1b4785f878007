//! Server functions: the browser's whole API. Each is a few lines that hand the work to the
//! engine; the form-backed ones also work as plain form posts without WebAssembly.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

/// What the browser may know about the signed-in account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub email: String,
}

/// The second-factor step of a sign-in, as the code page renders it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeStep {
    pub flow_id: String,
    /// Whether a TOTP code is asked for (an account with passkeys alone is asked for one of
    /// them only).
    pub totp: bool,
    /// The TOTP provider's page for this account's seed.
    pub deep_link: String,
    pub digits: u8,
    /// Options for `navigator.credentials.get` (JSON) when one of the account's passkeys may
    /// answer instead.
    pub passkey_options: Option<String>,
}

/// The account's second factor, for the security settings page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwoFactorStatus {
    pub email: String,
    pub two_factor_on: bool,
    /// True when the seed lives at the web TOTP provider (a seed id is stored).
    pub via_totp_site: bool,
    pub recovery_codes_left: i64,
    /// Whether the account has a passkey (a second factor too: recovery codes are its way
    /// back as well).
    pub has_passkeys: bool,
    /// A set just made, shown this once.
    pub new_recovery_codes: Option<Vec<String>>,
}

/// A new authenticator-app secret, shown once while the app is set up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppEnrollmentView {
    pub otpauth_uri: String,
    pub secret: String,
    /// The `otpauth://` URI as an SVG QR code.
    pub qr_svg: String,
}

#[cfg(feature = "ssr")]
pub(crate) mod ssr {
    use engine::sign_in::sessions::SessionToken;
    use engine::sign_in::users::UserId;
    use engine::Engine;

    use crate::error::AppError;
    use crate::session::{clear_login_cookie, session_token, set_session_cookie};

    /// A new account is signed in at once: a brand-new session replaces whatever the browser
    /// held.
    pub async fn open_session_and_go_home(
        engine: &Engine,
        user_id: UserId,
    ) -> Result<(), AppError> {
        let token = engine.open_session(user_id).await?;
        go_home_signed_in(engine, &token).await
    }

    /// Every factor passed and the engine opened `session`: it replaces whatever session the
    /// browser held.
    pub async fn go_home_signed_in(
        engine: &Engine,
        session: &SessionToken,
    ) -> Result<(), AppError> {
        go_signed_in_to(engine, session, "/").await
    }

    /// [`go_home_signed_in`], landing on `page` (a path of ours) instead of home.
    pub async fn go_signed_in_to(
        engine: &Engine,
        session: &SessionToken,
        page: &str,
    ) -> Result<(), AppError> {
        if let Some(old) = session_token() {
            engine.close_session(&old).await?;
        }
        // For the sessions list: which browser and address this session was opened from.
        let agent = crate::session::user_agent();
        engine
            .note_session_client(session, agent.as_deref(), crate::session::client_address())
            .await?;
        set_session_cookie(session);
        clear_login_cookie();
        leptos_axum::redirect(page);
        Ok(())
    }

    pub async fn sign_in(email: &str, password: &str) -> Result<(), AppError> {
        use crate::session::{
            clear_session_cookie, client_address, engine, session_token, set_login_cookie,
        };
        use engine::sign_in::sessions::SessionToken;
        use engine::Completion;
        use engine::Progress;

        let engine = engine()?;
        let login = SessionToken::random();
        match engine
            .sign_in(Some(login.digest()), email, password, client_address())
            .await?
        {
            Progress::Done(Completion::SignedIn { session, .. }) => {
                go_home_signed_in(&engine, &session).await
            }
            Progress::Done(Completion::Connected(_) | Completion::Reauthenticated(_)) => {
                Err(engine::ErrorCode::Unknown.into())
            }
            Progress::Next(view) => {
                // First factor passed: the old session (if any) ends, and a new id carries the flow.
                if let Some(old) = session_token() {
                    engine.close_session(&old).await?;
                    clear_session_cookie();
                }
                set_login_cookie(&login);
                leptos_axum::redirect(&format!("/login/code?flow={}", view.flow_id));
                Ok(())
            }
        }
    }

    /// A plain form post (no WebAssembly) that was refused goes back to its page with the
    /// sentence and the email it carried, so nothing typed but the password is lost.
    pub fn back_to_form<F: leptos::server_fn::ServerFn>(page: &str, email: &str, error: AppError) {
        back_to_form_with::<F>(page, &[("email", email.trim())], error);
    }

    /// [`back_to_form`] with other `fields` (never a password) in the page's query.
    pub fn back_to_form_with<F: leptos::server_fn::ServerFn>(
        page: &str,
        fields: &[(&str, &str)],
        error: AppError,
    ) {
        use leptos::server_fn::error::ServerFnUrlError;
        if !crate::session::is_plain_form_post() {
            return;
        }
        // Any absolute base will do: only the path and query are used.
        let Ok(mut url) =
            ServerFnUrlError::new(F::PATH, error).to_url(&format!("http://stepgate{page}"))
        else {
            return;
        };
        for (name, value) in fields {
            if value.len() <= 2048 {
                url.query_pairs_mut().append_pair(name, value);
            }
        }
        leptos_axum::redirect(&format!(
            "{}?{}",
            url.path(),
            url.query().unwrap_or_default()
        ));
    }

    pub fn input(pairs: [(&str, String); 2]) -> engine::providers::Input {
        pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }
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

/// Checks email and password. Without 2FA this signs in and goes home; with 2FA it swaps the
/// browser's cookie for a new login cookie bound to the flow and goes to the code page.
#[server(prefix = "/api", endpoint = "sign_in")]
pub async fn sign_in(email: String, password: String) -> Result<(), AppError> {
    let result = ssr::sign_in(&email, &password).await;
    if let Err(error) = &result {
        ssr::back_to_form::<SignIn>("/login", &email, error.clone());
    }
    result
}

/// The code step of a sign-in under way in this browser.
#[server(prefix = "/api", endpoint = "second_factor_step")]
pub async fn second_factor_step(flow: String) -> Result<CodeStep, AppError> {
    use crate::session::{engine, login_token};
    use engine::view::{CodeChannel, StepView};

    let owner = login_token().map(|t| t.digest());
    let view = engine()?
        .flow_view("local", &flow, owner.as_deref())
        .await?;
    match view.step {
        StepView::Code {
            channel: CodeChannel::Totp { deep_link },
            digits,
            passkey,
        } => Ok(CodeStep {
            flow_id: view.flow_id,
            totp: true,
            deep_link,
            digits,
            passkey_options: passkey,
        }),
        StepView::Passkey { options } => Ok(CodeStep {
            flow_id: view.flow_id,
            totp: false,
            deep_link: String::new(),
            digits: 6,
            passkey_options: Some(options),
        }),
        _ => Err(engine::ErrorCode::FlowExpired.into()),
    }
}

/// Checks the second-factor code; on success opens a new session and goes home.
#[server(prefix = "/api", endpoint = "verify_code")]
pub async fn verify_code(flow_id: String, code: String) -> Result<(), AppError> {
    use crate::session::{engine, login_token};
    use engine::Completion;
    use engine::Progress;

    let engine = engine()?;
    let owner = login_token().map(|t| t.digest());
    let input = ssr::input([("code", code), ("flow_id", flow_id.clone())]);
    match engine
        .submit_provider_flow("local", &flow_id, owner.as_deref(), &input)
        .await?
    {
        Progress::Done(Completion::SignedIn { session, .. }) => {
            ssr::go_home_signed_in(&engine, &session).await
        }
        // A sign-in flow ends signed in; anything else is not what this page started.
        Progress::Done(Completion::Connected(_) | Completion::Reauthenticated(_))
        | Progress::Next(_) => Err(engine::ErrorCode::Unknown.into()),
    }
}

/// What the sign-up page must say before anything is typed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignUpRules {
    /// No admin yet: the next account is the admin, whatever the mode.
    pub first_account: bool,
    pub needs_invite: bool,
    pub closed: bool,
}

/// The registration rules right now (`STEPGATE_REGISTRATION`, and whether an admin exists).
#[server(prefix = "/api", endpoint = "registration_rules")]
pub async fn registration_rules() -> Result<SignUpRules, AppError> {
    use crate::session::{engine, settings};
    use engine::sign_in::registration::RegistrationMode;

    let mode = settings()?.registration;
    let has_admin = engine()?.has_admin().await?;
    Ok(SignUpRules {
        first_account: !has_admin,
        needs_invite: has_admin && mode == RegistrationMode::Invite,
        closed: has_admin && mode == RegistrationMode::Closed,
    })
}

/// Creates an account by `STEPGATE_REGISTRATION`'s rules (with the invite link's token, when
/// invite-only), signs it in and goes home.
#[server(prefix = "/api", endpoint = "register")]
pub async fn register(
    email: String,
    password: String,
    confirm_password: String,
    invite: Option<String>,
) -> Result<(), AppError> {
    use crate::session::{client_address, engine, settings};
    use engine::sign_in::registration::SignUp;

    let result = async {
        let engine = engine()?;
        let signed_up = engine
            .sign_up(SignUp {
                mode: settings()?.registration,
                email: &email,
                password: &password,
                confirm: &confirm_password,
                invite: invite.as_deref(),
                address: client_address(),
            })
            .await
            .map_err(|refusal| {
                let weak = refusal
                    == engine::sign_in::registration::SignUpRefusal::Code(
                        engine::ErrorCode::PasswordTooWeak,
                    );
                AppError {
                    // zxcvbn's own advice says what makes this password guessable.
                    detail: weak
                        .then(|| engine::sign_in::password_policy::advice_for(&email, &password))
                        .flatten(),
                    ..refusal.into()
                }
            })?;
        ssr::open_session_and_go_home(&engine, signed_up.user.id).await
    }
    .await;
    if let Err(error) = &result {
        // The invite goes back with the refused form (it came in the page's own URL).
        let page = match invite
            .as_deref()
            .and_then(engine::sign_in::invites::InviteToken::parse)
        {
            Some(token) => format!("/register?invite={}", token.as_str()),
            None => "/register".to_owned(),
        };
        ssr::back_to_form::<Register>(&page, &email, error.clone());
    }
    result
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

/// Whether the signed-in account has 2FA on.
#[server(prefix = "/api", endpoint = "security_status")]
pub async fn security_status() -> Result<TwoFactorStatus, AppError> {
    use crate::session::{engine, signed_in_user};

    let user = signed_in_user().await?;
    let engine = engine()?;
    let status = engine.totp_status(&user).await?;
    Ok(TwoFactorStatus {
        recovery_codes_left: engine.recovery_codes_left(&user).await?,
        has_passkeys: engine.has_passkeys(&user).await?,
        new_recovery_codes: crate::recovery_codes::ssr::take_new_codes(),
        email: user.email,
        two_factor_on: status.is_some(),
        via_totp_site: status.is_some_and(|s| s.seed_id.is_some()),
    })
}

/// Whether the signed-in account has 2FA on, and nothing else: the setup popup's polling asks
/// this (the full status would take the new recovery codes meant for the reloaded page).
#[server(prefix = "/api", endpoint = "two_factor_is_on")]
pub async fn two_factor_is_on() -> Result<bool, AppError> {
    use crate::session::{engine, signed_in_user};

    let user = signed_in_user().await?;
    Ok(engine()?.totp_status(&user).await?.is_some())
}

/// The TOTP site's `action=add` link with a fresh single-use registration token. Fetched
/// before the click, so the popup can open synchronously inside the click handler.
#[server(prefix = "/api", endpoint = "totp_site_setup_link")]
pub async fn totp_site_setup_link() -> Result<String, AppError> {
    use crate::session::{engine, settings, signed_in_user};

    let user = signed_in_user().await?;
    let callback = format!("{}/settings/security/totp-callback", settings()?.public_url);
    Ok(engine()?.totp_site_setup_link(&user, &callback).await?)
}

/// Starts authenticator-app setup: a new secret, as a QR code and as text.
#[server(prefix = "/api", endpoint = "begin_app_enrollment")]
pub async fn begin_app_enrollment() -> Result<AppEnrollmentView, AppError> {
    use crate::session::{engine, signed_in_user};

    let user = signed_in_user().await?;
    let enrollment = engine()?.begin_app_enrollment(&user).await?;
    let qr_svg = qrcode::QrCode::new(enrollment.otpauth_uri.as_bytes())
        .map_err(|_| AppError::from(engine::ErrorCode::Unknown))?
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(200, 200)
        .build();
    Ok(AppEnrollmentView {
        otpauth_uri: enrollment.otpauth_uri,
        secret: enrollment.secret_base32,
        qr_svg,
    })
}

/// Turns 2FA on once the authenticator app shows a valid code; the first recovery codes go
/// to the page's next rendering (the island reloads it).
#[server(prefix = "/api", endpoint = "confirm_app_enrollment")]
pub async fn confirm_app_enrollment(code: String) -> Result<(), AppError> {
    use crate::session::{engine, signed_in_user};

    let user = signed_in_user().await?;
    let token = crate::session::current_session()?;
    let codes = engine()?
        .confirm_app_enrollment(&user, &token, &code)
        .await?;
    if let Some(codes) = codes {
        crate::recovery_codes::ssr::keep_new_codes(&codes);
    }
    Ok(())
}

/// Turns 2FA off. A sensitive act: the session must have confirmed its user (password and a
/// current code, `require_sudo`), which is why no code is asked here.
#[server(prefix = "/api", endpoint = "disable_two_factor")]
pub async fn disable_two_factor() -> Result<(), AppError> {
    use crate::session::{engine, require_sudo};

    require_sudo().await?;
    let token = crate::session::current_session()?;
    engine()?.turn_off_totp(&token).await?;
    leptos_axum::redirect("/settings/security?off=1");
    Ok(())
}

/// What the confirm-it's-you page needs to know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmPageData {
    pub email: String,
    /// A current code is asked too.
    pub two_factor_on: bool,
}

/// The confirm page's data: whose password, and whether a code is asked too.
#[server(prefix = "/api", endpoint = "confirm_view")]
pub async fn confirm_view() -> Result<ConfirmPageData, AppError> {
    use crate::session::{engine, signed_in_user};

    let user = signed_in_user().await?;
    let two_factor_on = engine()?.totp_status(&user).await?.is_some();
    Ok(ConfirmPageData {
        email: user.email,
        two_factor_on,
    })
}

/// Confirms it's the user (password, and a current code when 2FA is on): sensitive acts need
/// no new confirmation for ten minutes in this session. Then back to `next` (a path of ours).
#[server(prefix = "/api", endpoint = "confirm_identity")]
pub async fn confirm_identity(
    password: String,
    code: Option<String>,
    next: String,
) -> Result<(), AppError> {
    use crate::session::{client_address, engine, safe_return_path, CONFIRM_PAGE};

    let next = safe_return_path(&next).unwrap_or("/").to_owned();
    let result: Result<(), AppError> = async {
        let token = crate::session::current_session()?;
        engine()?
            .confirm_identity(&token, &password, code.as_deref(), client_address())
            .await?;
        leptos_axum::redirect(&crate::session::with_query_pair(&next, "confirmed", "1"));
        Ok(())
    }
    .await;
    if let Err(error) = &result {
        ssr::back_to_form_with::<ConfirmIdentity>(CONFIRM_PAGE, &[("next", &next)], error.clone());
    }
    result
}
