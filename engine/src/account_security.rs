//! What a signed-in user changes about their own sign-in: turning 2FA off (a sensitive act:
//! the session must have confirmed its user, `sudo.rs`).

use crate::engine::Engine;
use crate::sessions::SessionToken;
use crate::two_factor::db_error;
use crate::ErrorCode;

impl Engine {
    /// Turns TOTP off for the session's user. The session must be confirmed (sudo), and with
    /// 2FA on that confirmation took a current code, so no second code is asked here (one
    /// would also have to wait for the next time step: a code is accepted once).
    pub async fn turn_off_totp(&self, session: &SessionToken) -> Result<(), ErrorCode> {
        let user = self.require_sudo(session).await?;
        let removed = sqlx::query("DELETE FROM totp_credentials WHERE user_id = $1")
            .bind(user.id)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        if removed.rows_affected() == 0 {
            return Err(ErrorCode::TwoFactorOff);
        }
        tracing::info!(user_id = user.id, "two-factor authentication turned off");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::sudo::tests::{enable_app_totp, PASSWORD};
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
        let secret = enable_app_totp(&engine, &user).await;
        assert_eq!(
            engine.turn_off_totp(&session).await,
            Err(ErrorCode::ConfirmIdentityRequired)
        );
        assert!(engine.totp_status(&user).await.unwrap().is_some());

        clock.advance(30);
        let code = crate::totp::code_at(&secret, engine.now(), 6);
        engine
            .confirm_identity(&session, PASSWORD, Some(&code), None)
            .await
            .unwrap();
        engine.turn_off_totp(&session).await.unwrap();
        assert_eq!(engine.totp_status(&user).await.unwrap(), None);
        assert_eq!(
            engine.turn_off_totp(&session).await,
            Err(ErrorCode::TwoFactorOff)
        );
    }
}
