//! What a signed-in user changes about their own sign-in: turning 2FA off, a new set of
//! recovery codes and changing the password (sensitive acts: the session must have confirmed its user, `sign_in/sudo.rs`). Both end
//! the user's other sessions, which were opened under the old rules.

use std::net::IpAddr;

use crate::base::clock::Clock;
use crate::base::fields::MAX_FIELD_BYTES;
use crate::second_factor::passkeys::Passkeys;
use crate::second_factor::recovery_codes::RecoveryCodes;
use crate::second_factor::two_factor::{db_error, TwoFactor};
use crate::sign_in::password::PasswordHasher;
use crate::sign_in::session_list::Sessions;
use crate::sign_in::sessions::SessionToken;
use crate::sign_in::sudo::Sudo;
use crate::sign_in::users::UserStore;
use crate::store::db::Pool;
use crate::{ErrorCode, SignInRefusal};

/// Turning 2FA off and changing the password (both after sudo).
#[derive(Clone)]
pub struct AccountSecurity {
    pub(crate) pool: Pool,
    pub(crate) users: UserStore,
    pub(crate) hasher: PasswordHasher,
    pub(crate) sudo: Sudo,
    pub(crate) sessions: Sessions,
    pub(crate) two_factor: TwoFactor,
    pub(crate) passkeys: Passkeys,
    pub(crate) clock: std::sync::Arc<dyn Clock>,
}

impl AccountSecurity {
    /// A new set of recovery codes for the session's user (sudo first: the set in hand is
    /// a way in); the old set stops working. `two_factor_off` without a second factor.
    pub async fn new_recovery_codes(
        &self,
        session: &SessionToken,
    ) -> Result<RecoveryCodes, ErrorCode> {
        let user = self.sudo.require_sudo(session).await?;
        if self.two_factor.status(user.id).await?.is_none() {
            return Err(ErrorCode::TwoFactorOff);
        }
        self.two_factor
            .new_recovery_codes(user.id, self.clock.now())
            .await
    }

    /// Turns TOTP off for the session's user. The session must be confirmed (sudo), and with
    /// 2FA on that confirmation took a current code, so no second code is asked here (one
    /// would also have to wait for the next time step: a code is accepted once).
    pub async fn turn_off_totp(&self, session: &SessionToken) -> Result<(), ErrorCode> {
        let user = self.sudo.require_sudo(session).await?;
        let removed = sqlx::query("DELETE FROM totp_credentials WHERE user_id = $1")
            .bind(user.id)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        if removed.rows_affected() == 0 {
            return Err(ErrorCode::TwoFactorOff);
        }
        // No factor left for them to stand in for (passkeys are one, too).
        if !self.passkeys.has_any(user.id).await? {
            self.two_factor.drop_recovery_codes(user.id).await?;
        }
        tracing::info!(user_id = user.id, "two-factor authentication turned off");
        self.sessions.end_sessions_but(user.id, session).await?;
        Ok(())
    }

    /// Changes the session's user's password: the current one (throttled like a sign-in),
    /// then the new one twice under the rules of registering. Every other session of the user
    /// ends; `session` stays. How many ended.
    pub async fn change_password(
        &self,
        session: &SessionToken,
        current: &str,
        new: &str,
        confirm: &str,
        address: Option<IpAddr>,
    ) -> Result<u64, SignInRefusal> {
        let user = self.sudo.require_sudo(session).await?;
        for field in [current, new, confirm] {
            if field.is_empty() {
                return Err(ErrorCode::MissingFields.into());
            }
            if field.len() > MAX_FIELD_BYTES {
                return Err(ErrorCode::FieldTooLong.into());
            }
        }
        crate::sign_in::password_policy::check_for(&user.email, new)?;
        if new != confirm {
            return Err(ErrorCode::PasswordMismatch.into());
        }
        self.sudo
            .check_current_password(&user, current, address)
            .await?;
        let hash = self.hasher.hash(new).await?;
        self.users.set_password_hash(user.id, &hash).await?;
        let ended = self.sessions.end_sessions_but(user.id, session).await?;
        tracing::info!(user_id = user.id, ended, "password changed");
        Ok(ended)
    }
}

#[cfg(test)]
mod tests {
    use crate::sign_in::sudo::tests::{enable_app_totp, PASSWORD};
    use crate::test_support::engine_in;
    use crate::ErrorCode;

    #[tokio::test]
    async fn turning_two_factor_off_needs_a_confirmed_session() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, clock) = engine_in(&dir).await;
        let user = engine
            .register("off@example.org", PASSWORD, PASSWORD)
            .await
            .unwrap();
        let session = engine.open_session(user.id).await.unwrap();
        let secret = enable_app_totp(&engine, &user, &session).await;
        assert_eq!(
            engine.recovery_codes_left(&user).await,
            Ok(10),
            "first set made"
        );
        assert_eq!(
            engine.turn_off_totp(&session).await,
            Err(ErrorCode::ConfirmIdentityRequired)
        );
        assert_eq!(
            engine.new_recovery_codes(&session).await.map(|c| c.0.len()),
            Err(ErrorCode::ConfirmIdentityRequired)
        );
        assert!(engine.totp_status(&user).await.unwrap().is_some());

        clock.advance(30);
        let code = crate::second_factor::totp::code_at(&secret, engine.now(), 6);
        engine
            .confirm_identity(&session, PASSWORD, Some(&code), None)
            .await
            .unwrap();
        let other = engine.open_session(user.id).await.unwrap();
        assert_eq!(
            engine.new_recovery_codes(&session).await.map(|c| c.0.len()),
            Ok(10)
        );
        engine.turn_off_totp(&session).await.unwrap();
        assert_eq!(engine.totp_status(&user).await.unwrap(), None);
        assert_eq!(
            engine.recovery_codes_left(&user).await,
            Ok(0),
            "codes dropped"
        );
        assert_eq!(
            engine.new_recovery_codes(&session).await.map(|c| c.0.len()),
            Err(ErrorCode::TwoFactorOff)
        );
        assert_eq!(
            engine.session_user(&other).await.unwrap(),
            None,
            "turning 2FA off ends the other sessions"
        );
        assert!(engine.session_user(&session).await.unwrap().is_some());
        assert_eq!(
            engine.turn_off_totp(&session).await,
            Err(ErrorCode::TwoFactorOff)
        );
    }

    #[tokio::test]
    async fn a_password_change_needs_the_current_password_and_ends_other_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _clock) = engine_in(&dir).await;
        let user = engine
            .register("change@example.org", PASSWORD, PASSWORD)
            .await
            .unwrap();
        let here = engine.open_session(user.id).await.unwrap();
        let phone = engine.open_session(user.id).await.unwrap();
        let laptop = engine.open_session(user.id).await.unwrap();
        const NEW: &str = "lantern-orchard-velvet-42";

        assert_eq!(
            engine
                .change_password(&here, PASSWORD, NEW, NEW, None)
                .await,
            Err(ErrorCode::ConfirmIdentityRequired.into()),
            "a sensitive act: confirm it's you first"
        );
        engine
            .confirm_identity(&here, PASSWORD, None, None)
            .await
            .unwrap();
        let refused = [
            ("not-my-password-at-all", NEW, NEW, ErrorCode::WrongPassword),
            (PASSWORD, "short", "short", ErrorCode::PasswordTooShort),
            (
                PASSWORD,
                "password1234",
                "password1234",
                ErrorCode::PasswordTooWeak,
            ),
            (
                PASSWORD,
                NEW,
                "lantern-orchard-velvet-43",
                ErrorCode::PasswordMismatch,
            ),
            ("", NEW, NEW, ErrorCode::MissingFields),
        ];
        for (current, new, confirm, code) in refused {
            assert_eq!(
                engine
                    .change_password(&here, current, new, confirm, None)
                    .await,
                Err(code.into()),
                "{code:?}"
            );
        }
        assert!(engine.session_user(&phone).await.unwrap().is_some());

        assert_eq!(
            engine
                .change_password(&here, PASSWORD, NEW, NEW, None)
                .await,
            Ok(2)
        );
        assert_eq!(engine.session_user(&phone).await.unwrap(), None);
        assert_eq!(engine.session_user(&laptop).await.unwrap(), None);
        assert_eq!(
            engine.session_user(&here).await.unwrap(),
            Some(user.clone())
        );
        assert!(engine
            .sign_in(None, "change@example.org", PASSWORD, None)
            .await
            .is_err());
        assert!(engine
            .sign_in(None, "change@example.org", NEW, None)
            .await
            .is_ok());
    }
}
