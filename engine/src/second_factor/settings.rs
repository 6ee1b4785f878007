//! The security settings of a signed-in user, as the app calls them: the engine supplies the
//! time and the TOTP site, so the app passes neither (no `engine.now()` in the app).

use crate::base::clock::Clock;
use crate::second_factor::enrolment::{AppEnrollment, RegistrationCallback};
use crate::second_factor::recovery_codes::RecoveryCodes;
use crate::second_factor::two_factor::TotpStatus;
use crate::second_factor::two_factor::TwoFactor;
use crate::sign_in::session_list::Sessions;
use crate::sign_in::sessions::SessionToken;
use crate::sign_in::users::User;
use crate::ErrorCode;
use std::sync::Arc;

/// Turning TOTP on (by the web TOTP site or an authenticator app) and off with a code; turning
/// it on ends the user's other sessions.
#[derive(Clone)]
pub struct SecondFactorSettings {
    pub(crate) two_factor: TwoFactor,
    pub(crate) sessions: Sessions,
    pub(crate) clock: Arc<dyn Clock>,
}

impl SecondFactorSettings {
    /// Whether `user` has TOTP on, and how.
    pub async fn totp_status(&self, user: &User) -> Result<Option<TotpStatus>, ErrorCode> {
        self.two_factor.status(user.id).await
    }

    /// The TOTP site's `action=add` link for `user`, with a fresh single-use registration
    /// token; the site sends the user back to `callback_url`.
    pub async fn totp_site_setup_link(
        &self,
        user: &User,
        callback_url: &str,
    ) -> Result<String, ErrorCode> {
        let tf = &self.two_factor;
        let token = tf.begin_site_enrollment(user.id, self.clock.now()).await?;
        Ok(tf.site.registration_link(&user.email, callback_url, &token))
    }

    /// The TOTP site's callback for the signed-in `user` of `session`. With 2FA on, every
    /// other session of the user ends (each was opened without the second factor). The
    /// account's first recovery codes, when it had none, to be shown once.
    pub async fn complete_totp_site_setup(
        &self,
        user: &User,
        session: &SessionToken,
        callback: &RegistrationCallback,
    ) -> Result<Option<RecoveryCodes>, ErrorCode> {
        self.two_factor
            .complete_site_enrollment(user.id, callback, self.clock.now())
            .await?;
        self.sessions.end_sessions_but(user.id, session).await?;
        self.two_factor
            .first_recovery_codes(user.id, self.clock.now())
            .await
    }

    /// A new authenticator-app secret for `user`, pending until a valid code confirms it.
    pub async fn begin_app_enrollment(&self, user: &User) -> Result<AppEnrollment, ErrorCode> {
        self.two_factor
            .begin_app_enrollment(user.id, &user.email, self.clock.now())
            .await
    }

    /// Turns TOTP on once the authenticator app shows a valid code; every other session of
    /// the user ends (each was opened without the second factor). The account's first
    /// recovery codes, when it had none, to be shown once.
    pub async fn confirm_app_enrollment(
        &self,
        user: &User,
        session: &SessionToken,
        code: &str,
    ) -> Result<Option<RecoveryCodes>, ErrorCode> {
        self.two_factor
            .confirm_app_enrollment(user.id, code, self.clock.now())
            .await?;
        self.sessions.end_sessions_but(user.id, session).await?;
        self.two_factor
            .first_recovery_codes(user.id, self.clock.now())
            .await
    }

    /// How many unused recovery codes `user` has.
    pub async fn recovery_codes_left(&self, user: &User) -> Result<i64, ErrorCode> {
        self.two_factor.recovery_codes_left(user.id).await
    }

    /// Turns TOTP off; a current code is required.
    pub async fn disable_totp(&self, user: &User, code: &str) -> Result<(), ErrorCode> {
        self.two_factor
            .disable(user.id, code, self.clock.now())
            .await
    }
}
