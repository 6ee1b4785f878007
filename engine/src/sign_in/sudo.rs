//! "Confirm it's you" (sudo mode, as GitHub has it): before a sensitive act (an API key, the
//! webhook, turning 2FA off, a new password, admin acts) the signed-in user types the password
//! again, and a current TOTP code when 2FA is on. That holds for [`SUDO_SECONDS`], for this
//! session only: the session row remembers until when (`sessions.confirmed_until`), so a stolen
//! cookie alone cannot do these things. Signing in does not count: a confirmation is always its
//! own step, so a session that is only borrowed never holds it.
//!
//! The password is throttled exactly like a sign-in (the same per-account and per-address
//! counters, claimed before the hash is checked), and the code by the TOTP back-off, so the
//! confirm form is no side door for guessing.

use std::net::IpAddr;

use crate::base::clock::Clock;
use crate::base::email::Email;
use crate::base::fields::MAX_FIELD_BYTES;
use crate::second_factor::two_factor::TwoFactor;
use crate::sign_in::password::PasswordHasher;
use crate::sign_in::sessions::SessionStore;
use crate::sign_in::sessions::SessionToken;
use crate::sign_in::throttle::SignInAttempt;
use crate::sign_in::throttle::SignInThrottle;
use crate::sign_in::users::User;
use crate::sign_in::users::UserStore;
use crate::{ErrorCode, SignInRefusal};
use std::sync::Arc;

/// How long one confirmation holds (GitHub's sudo mode holds a few hours; ten minutes is enough
/// for one act, and is what the settings pages say).
pub const SUDO_SECONDS: i64 = 10 * 60;

/// Where a signed-in session stands with respect to sudo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SudoState {
    pub user: User,
    /// Unix seconds until which sensitive acts need no new confirmation; `None`: confirm first.
    pub confirmed_until: Option<i64>,
}

/// Confirming it's you before a sensitive act: the password (throttled like a sign-in) and,
/// with 2FA on, a code.
#[derive(Clone)]
pub struct Sudo {
    pub(crate) sessions: SessionStore,
    pub(crate) users: UserStore,
    pub(crate) hasher: PasswordHasher,
    pub(crate) throttle: SignInThrottle,
    pub(crate) two_factor: TwoFactor,
    pub(crate) clock: Arc<dyn Clock>,
}

impl Sudo {
    /// The session's user and whether it is confirmed now; `None` for no live session.
    pub async fn sudo_state(&self, session: &SessionToken) -> Result<Option<SudoState>, ErrorCode> {
        let now = self.clock.now();
        Ok(self
            .sessions
            .lookup(session, now)
            .await?
            .map(|live| SudoState {
                user: live.user,
                confirmed_until: live.confirmed_until.filter(|&until| until > now),
            }))
    }

    /// The session's user if it confirmed who it is within the last [`SUDO_SECONDS`]:
    /// `not_signed_in` without a live session, `confirm_identity_required` otherwise.
    pub async fn require_sudo(&self, session: &SessionToken) -> Result<User, ErrorCode> {
        let state = self
            .sudo_state(session)
            .await?
            .ok_or(ErrorCode::NotSignedIn)?;
        match state.confirmed_until {
            Some(_) => Ok(state.user),
            None => Err(ErrorCode::ConfirmIdentityRequired),
        }
    }

    /// Confirms the session's user: the password, then (when 2FA is on) a current `code`.
    /// Throttled like a sign-in from `address`. On success this session is confirmed for
    /// [`SUDO_SECONDS`].
    pub async fn confirm_identity(
        &self,
        session: &SessionToken,
        password: &str,
        code: Option<&str>,
        address: Option<IpAddr>,
    ) -> Result<(), SignInRefusal> {
        let user = self
            .sessions
            .user_of(session, self.clock.now())
            .await?
            .ok_or(ErrorCode::NotSignedIn)?;
        if password.is_empty() {
            return Err(ErrorCode::MissingFields.into());
        }
        if password.len() > MAX_FIELD_BYTES || code.is_some_and(|c| c.len() > MAX_FIELD_BYTES) {
            return Err(ErrorCode::FieldTooLong.into());
        }
        self.check_current_password(&user, password, address)
            .await?;
        if self.two_factor.status(user.id).await?.is_some() {
            let code = code.map(str::trim).filter(|c| !c.is_empty());
            let code = code.ok_or(ErrorCode::MissingFields)?;
            self.two_factor
                .verify(user.id, code, self.clock.now())
                .await?;
        }
        let now = self.clock.now();
        self.sessions.confirm(session, now + SUDO_SECONDS).await?;
        tracing::info!(user_id = user.id, "a session confirmed its user (sudo)");
        Ok(())
    }

    /// Checks `user`'s current password, throttled like a sign-in (claimed before the hash is
    /// checked): `wrong_password` when it is not right.
    pub(crate) async fn check_current_password(
        &self,
        user: &User,
        password: &str,
        address: Option<IpAddr>,
    ) -> Result<(), SignInRefusal> {
        let attempt = SignInAttempt::new(&Email::parse(&user.email)?, address);
        if let Err(throttled) = self.throttle.claim(&attempt, self.clock.now()).await? {
            tracing::warn!(
                retry_after = throttled.retry_after,
                "throttled a password confirmation"
            );
            return Err(SignInRefusal::Throttled {
                retry_after: throttled.retry_after,
            });
        }
        let stored = self
            .users
            .find_by_email(&Email::parse(&user.email)?)
            .await?;
        let checked = self
            .hasher
            .verify(password, stored.as_ref().map(|c| c.password_hash.as_str()))
            .await;
        match checked {
            Ok(true) => {
                self.throttle.succeeded(&attempt, self.clock.now()).await?;
                Ok(())
            }
            // The claim stays: it counts as a failure, as at sign-in.
            Ok(false) => Err(ErrorCode::WrongPassword.into()),
            // Never checked (busy hasher): not a failure of this account's.
            Err(code) => {
                self.throttle
                    .not_checked(&attempt, self.clock.now())
                    .await?;
                Err(code.into())
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::test_support::engine_in;
    use crate::Engine;

    pub(crate) const PASSWORD: &str = "correct-horse-battery-staple-17";

    /// Turns TOTP on for `user` from `session` through the authenticator-app route; returns
    /// the secret.
    pub(crate) async fn enable_app_totp(
        engine: &Engine,
        user: &User,
        session: &SessionToken,
    ) -> Vec<u8> {
        let enrollment = engine.begin_app_enrollment(user).await.unwrap();
        let secret = crate::second_factor::totp::base32_decode(&enrollment.secret_base32).unwrap();
        let code = crate::second_factor::totp::code_at(&secret, engine.now(), 6);
        engine
            .confirm_app_enrollment(user, session, &code)
            .await
            .unwrap();
        secret
    }

    async fn signed_in(engine: &Engine, email: &str) -> (User, SessionToken) {
        let user = engine.register(email, PASSWORD, PASSWORD).await.unwrap();
        let session = engine.open_session(user.id).await.unwrap();
        (user, session)
    }

    fn from(address: &str) -> Option<IpAddr> {
        Some(address.parse().unwrap())
    }

    #[tokio::test]
    async fn sudo_holds_ten_minutes_for_the_confirming_session_only() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, clock) = engine_in(&dir).await;
        let (user, session) = signed_in(&engine, "sudo@example.org").await;
        let other = engine.open_session(user.id).await.unwrap();
        assert_eq!(
            engine.require_sudo(&session).await,
            Err(ErrorCode::ConfirmIdentityRequired),
            "signing in is not a confirmation"
        );

        engine
            .confirm_identity(&session, PASSWORD, None, from("192.0.2.1"))
            .await
            .unwrap();
        assert_eq!(engine.require_sudo(&session).await, Ok(user.clone()));
        assert_eq!(
            engine.require_sudo(&other).await,
            Err(ErrorCode::ConfirmIdentityRequired),
            "another session of the same user is not confirmed"
        );

        clock.advance(SUDO_SECONDS - 1);
        assert_eq!(engine.require_sudo(&session).await, Ok(user));
        clock.advance(1);
        assert_eq!(
            engine.require_sudo(&session).await,
            Err(ErrorCode::ConfirmIdentityRequired),
            "sudo ends after ten minutes"
        );
        assert_eq!(
            engine.require_sudo(&SessionToken::random()).await,
            Err(ErrorCode::NotSignedIn)
        );
    }

    #[tokio::test]
    async fn a_wrong_password_confirms_nothing_and_is_throttled_like_a_sign_in() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let (_, session) = signed_in(&engine, "wrong@example.org").await;
        for _ in 0..3 {
            assert_eq!(
                engine
                    .confirm_identity(&session, "not-my-password-at-all", None, from("192.0.2.2"))
                    .await,
                Err(SignInRefusal::Code(ErrorCode::WrongPassword))
            );
        }
        let checks = engine.local_accounts.hasher.checks_run();
        assert_eq!(
            engine
                .confirm_identity(&session, PASSWORD, None, from("192.0.2.2"))
                .await,
            Err(SignInRefusal::Throttled { retry_after: 1 }),
            "the same counters as sign-in: even the right password waits"
        );
        assert_eq!(
            engine.local_accounts.hasher.checks_run(),
            checks,
            "a throttled try hashes nothing"
        );
        assert_eq!(
            engine.require_sudo(&session).await,
            Err(ErrorCode::ConfirmIdentityRequired)
        );
        assert_eq!(
            engine
                .confirm_identity(&session, "", None, from("192.0.2.2"))
                .await,
            Err(SignInRefusal::Code(ErrorCode::MissingFields))
        );
    }

    #[tokio::test]
    async fn with_two_factor_on_a_current_code_is_needed_too() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, clock) = engine_in(&dir).await;
        let (user, session) = signed_in(&engine, "totp-sudo@example.org").await;
        let elsewhere = engine.open_session(user.id).await.unwrap();
        let secret = enable_app_totp(&engine, &user, &session).await;
        assert_eq!(
            engine.session_user(&elsewhere).await.unwrap(),
            None,
            "turning 2FA on ends the other sessions"
        );
        assert!(engine.session_user(&session).await.unwrap().is_some());
        clock.advance(30);
        assert_eq!(
            engine
                .confirm_identity(&session, PASSWORD, None, from("192.0.2.3"))
                .await,
            Err(SignInRefusal::Code(ErrorCode::MissingFields))
        );
        assert_eq!(
            engine
                .confirm_identity(&session, PASSWORD, Some("000000"), from("192.0.2.3"))
                .await,
            Err(SignInRefusal::Code(ErrorCode::InvalidCode))
        );
        assert_eq!(
            engine.require_sudo(&session).await,
            Err(ErrorCode::ConfirmIdentityRequired)
        );
        let code = crate::second_factor::totp::code_at(&secret, engine.now(), 6);
        engine
            .confirm_identity(&session, PASSWORD, Some(&code), from("192.0.2.3"))
            .await
            .unwrap();
        assert_eq!(engine.require_sudo(&session).await, Ok(user));
    }
}
