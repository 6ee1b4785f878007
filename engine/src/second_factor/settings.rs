//! The security settings of a signed-in user, as the app calls them: the engine supplies the
//! time and the TOTP site, so the app passes neither (no `engine.now()` in the app).

use crate::base::clock::Clock;
use crate::second_factor::enrolment::{AppEnrollment, RegistrationCallback};
use crate::second_factor::passkeys::{PasskeyRegistrationStart, PasskeySummary, Passkeys};
use crate::second_factor::recovery_codes::RecoveryCodes;
use crate::second_factor::two_factor::TotpStatus;
use crate::second_factor::two_factor::TwoFactor;
use crate::sign_in::session_list::Sessions;
use crate::sign_in::sessions::SessionToken;
use crate::sign_in::users::User;
use crate::ErrorCode;
use std::sync::Arc;

/// Turning TOTP on (by the web TOTP site or an authenticator app) and off with a code, adding
/// and removing passkeys; turning the first second factor on ends the user's other sessions.
#[derive(Clone)]
pub struct SecondFactorSettings {
    pub(crate) two_factor: TwoFactor,
    pub(crate) passkeys: Passkeys,
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

    /// `user`'s passkeys, oldest first.
    pub async fn passkeys(&self, user: &User) -> Result<Vec<PasskeySummary>, ErrorCode> {
        self.passkeys.list(user.id).await
    }

    /// Options for adding a passkey to `user`, and the sealed state the browser sends back.
    pub async fn start_passkey_registration(
        &self,
        user: &User,
    ) -> Result<PasskeyRegistrationStart, ErrorCode> {
        self.passkeys
            .start_registration(user.id, &user.email, self.clock.now())
            .await
    }

    /// Keeps the passkey the browser made. When it is the account's first second factor,
    /// every other session of the user ends (each was opened with the password alone) and the
    /// first recovery codes are made, to be shown once.
    pub async fn finish_passkey_registration(
        &self,
        user: &User,
        session: &SessionToken,
        name: &str,
        sealed_state: &str,
        answer: &str,
    ) -> Result<(PasskeySummary, Option<RecoveryCodes>), ErrorCode> {
        let first = self.two_factor.status(user.id).await?.is_none()
            && !self.passkeys.has_any(user.id).await?;
        let added = self
            .passkeys
            .finish_registration(user.id, name, sealed_state, answer, self.clock.now())
            .await?;
        if !first {
            return Ok((added, None));
        }
        self.sessions.end_sessions_but(user.id, session).await?;
        let codes = self
            .two_factor
            .first_recovery_codes(user.id, self.clock.now())
            .await?;
        Ok((added, codes))
    }

    /// Removes `user`'s passkey `credential_id` (the app asks "Confirm it's you" first).
    pub async fn remove_passkey(&self, user: &User, credential_id: &str) -> Result<(), ErrorCode> {
        self.passkeys.remove(user.id, credential_id).await
    }
}
