//! What a user's own apps (Home Assistant, homebridge, scripts) get for a connected account
//! through the API: the provider's usable credentials, renewed first when they are about to
//! expire (never refresh tokens or `passToken`: those stay in Stepgate).

use serde_json::json;

use crate::accounts::store::ConnectedAccount;
use crate::accounts::upkeep::Upkeep;
use crate::apps::events::AccountEvents;
use crate::sign_in::users::UserId;
use crate::ErrorCode;

/// The credentials handed to the users' own apps, renewed first when due.
#[derive(Clone)]
pub struct AppCredentials {
    pub(crate) upkeep: Upkeep,
    pub(crate) events: AccountEvents,
}

impl AppCredentials {
    /// The fresh credentials of account `account_id` of `user_id`: `not_found` when it is not
    /// theirs, `needs_sign_in` when the provider refused its tokens, the provider's error when
    /// a needed renewal could not reach it.
    pub async fn app_credentials(
        &self,
        user_id: UserId,
        account_id: i64,
    ) -> Result<serde_json::Value, ErrorCode> {
        Ok(self.credentials_read(user_id, account_id).await?.1)
    }

    /// [`Engine::app_credentials`] read by API key `key_id` (its public part): the read is
    /// counted in the account's audit log, naming the key (`apps/read_counts.rs`).
    pub async fn app_credentials_for_key(
        &self,
        user_id: UserId,
        account_id: i64,
        key_id: &str,
    ) -> Result<serde_json::Value, ErrorCode> {
        let (account, answer) = self.credentials_read(user_id, account_id).await?;
        let read = crate::apps::events::AccountEvent::ApiRead {
            key_id: key_id.to_owned(),
        };
        self.events.account_event(user_id, &account, read).await;
        Ok(answer)
    }

    /// The account (renewed first when due) and what an app gets of it.
    async fn credentials_read(
        &self,
        user_id: UserId,
        account_id: i64,
    ) -> Result<(ConnectedAccount, serde_json::Value), ErrorCode> {
        let (account, secrets) = self.upkeep.fresh_account(user_id, account_id).await?;
        let provider = self
            .upkeep
            .providers
            .get(account.provider.as_str())
            .ok_or(ErrorCode::NotFound)?;
        let answer = json!({
            "account_id": account.id,
            "provider": account.provider,
            "name": account.display_name,
            "credentials": provider.app_credentials(&secrets),
            "expires_at": provider.expires_at(&secrets),
            "renewed_at": account.renewed_at,
        });
        Ok((account, answer))
    }
}
