//! Passkeys (WebAuthn, through `webauthn-rs`): a second factor after the password, or a sign-in
//! on their own with a discoverable credential (user verification required, no email typed).
//!
//! The relying party is the host of `STEPGATE_PUBLIC_URL`; WebAuthn refuses IP addresses, so
//! with an IP address (or no public URL) passkeys are off and every call answers
//! `passkeys_unavailable`. Only public keys and counters are stored (`passkeys` table); the
//! private keys never leave the authenticators.
//!
//! Where a ceremony's state waits: a sign-in's in its sealed flow (the local provider's state,
//! so it finishes on any instance and is used once with the flow); a registration's is sealed
//! (bound to the user, five minutes) and handed to the browser with the options, since the
//! user is signed in and a replay could only add the same credential again, which the table's
//! key refuses.
//!
//! Every check of an answer is a second-factor guess of the account (`attempts.rs`), like a
//! TOTP or recovery code. A counter that does not go up (when the authenticator keeps one) is
//! a cloned authenticator: refused in the same `UPDATE` that records a use, so two answers
//! carrying one counter cannot both pass.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sqlx::Row;
use webauthn_rs::prelude::{
    CreationChallengeResponse, DiscoverableAuthentication, DiscoverableKey, Passkey,
    PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential,
    RequestChallengeResponse, Url, Uuid, Webauthn, WebauthnBuilder,
};

use crate::base::crypto::SecretBox;
use crate::base::metrics;
use crate::second_factor::attempts::SecondFactorAttempts;
use crate::second_factor::two_factor::db_error;
use crate::sign_in::users::UserId;
use crate::store::db::Pool;
use crate::ErrorCode;

/// The longest name a passkey may be given (characters).
pub const MAX_PASSKEY_NAME: usize = 64;
/// How long the browser has to answer a registration's options.
const REGISTRATION_SECONDS: i64 = 5 * 60;

/// One of a user's passkeys, as the security settings list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeySummary {
    /// The credential's id (base64url): what "Remove" names.
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// A registration under way: the options for `navigator.credentials.create` (JSON) and the
/// ceremony's state, sealed, for the browser to send back with its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyRegistrationStart {
    pub options: String,
    pub sealed_state: String,
}

/// What a registration's sealed state holds.
#[derive(Serialize, Deserialize)]
struct PendingRegistration {
    user_id: UserId,
    user_handle: Uuid,
    expires_at: i64,
    state: PasskeyRegistration,
}

fn registration_aad(user_id: UserId) -> Vec<u8> {
    format!("stepgate:passkey-registration:user:{user_id}").into_bytes()
}

fn credential_key(id: &[u8]) -> String {
    data_encoding::BASE64URL_NOPAD.encode(id)
}

/// The relying party for pages served at `public_url`: `None` when there is no URL or its
/// host is an IP address (WebAuthn refuses them).
pub fn relying_party(public_url: Option<&str>) -> Option<Webauthn> {
    let url = Url::parse(public_url?).ok()?;
    let host = match url.host()? {
        url::Host::Domain(name) => name.to_owned(),
        url::Host::Ipv4(_) | url::Host::Ipv6(_) => return None,
    };
    let origin = Url::parse(&url.origin().ascii_serialization()).ok()?;
    WebauthnBuilder::new(&host, &origin)
        .ok()?
        .rp_name("Stepgate")
        .build()
        .map_err(|e| tracing::warn!(error = %e, "passkeys are off: no relying party"))
        .ok()
}

/// The answer the browser sent, read as webauthn-rs's type (any shape error is a refusal).
fn parse_answer<T: serde::de::DeserializeOwned>(answer: &str) -> Result<T, ErrorCode> {
    serde_json::from_str(answer).map_err(|e| {
        tracing::info!(error = %e, "a passkey answer did not parse");
        ErrorCode::PasskeyRefused
    })
}

fn to_json<T: Serialize>(value: &T) -> Result<String, ErrorCode> {
    serde_json::to_string(value).map_err(|_| ErrorCode::Unknown)
}

/// A stored passkey row.
struct StoredPasskey {
    user_id: UserId,
    user_handle: String,
    passkey: Passkey,
}

#[derive(Clone)]
pub struct Passkeys {
    pool: Pool,
    secrets: SecretBox,
    relying_party: Option<Arc<Webauthn>>,
    attempts: SecondFactorAttempts,
}

impl Passkeys {
    pub fn new(
        pool: Pool,
        secrets: SecretBox,
        relying_party: Option<Webauthn>,
        attempts: SecondFactorAttempts,
    ) -> Self {
        Self {
            pool,
            secrets,
            relying_party: relying_party.map(Arc::new),
            attempts,
        }
    }

    /// Whether passkeys can be used here at all (a host name in the public URL).
    pub fn available(&self) -> bool {
        self.relying_party.is_some()
    }

    fn webauthn(&self) -> Result<&Webauthn, ErrorCode> {
        self.relying_party
            .as_deref()
            .ok_or(ErrorCode::PasskeysUnavailable)
    }

    /// `user_id`'s passkeys, oldest first.
    pub async fn list(&self, user_id: UserId) -> Result<Vec<PasskeySummary>, ErrorCode> {
        let rows = sqlx::query(
            "SELECT credential_id, name, created_at, last_used_at FROM passkeys
             WHERE user_id = $1 ORDER BY created_at, credential_id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.into_iter()
            .map(|row| {
                Ok(PasskeySummary {
                    id: row.try_get("credential_id").map_err(db_error)?,
                    name: row.try_get("name").map_err(db_error)?,
                    created_at: row.try_get("created_at").map_err(db_error)?,
                    last_used_at: row.try_get("last_used_at").map_err(db_error)?,
                })
            })
            .collect()
    }

    /// Whether `user_id` has a passkey (then a sign-in with the password asks for a second
    /// factor).
    pub async fn has_any(&self, user_id: UserId) -> Result<bool, ErrorCode> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM passkeys WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(count > 0)
    }

    async fn stored_of_user(&self, user_id: UserId) -> Result<Vec<StoredPasskey>, ErrorCode> {
        let rows = sqlx::query(
            "SELECT user_id, user_handle, passkey FROM passkeys WHERE user_id = $1
             ORDER BY created_at, credential_id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.into_iter().map(stored_from_row).collect()
    }

    async fn stored_by_id(&self, credential_id: &str) -> Result<Option<StoredPasskey>, ErrorCode> {
        let row = sqlx::query(
            "SELECT user_id, user_handle, passkey FROM passkeys WHERE credential_id = $1",
        )
        .bind(credential_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?
        .into_iter()
        .next();
        row.map(stored_from_row).transpose()
    }

    /// Options for adding a passkey to `user_id` (named `email` on the authenticator): a
    /// discoverable credential with user verification; the account's passkeys are excluded, so
    /// one authenticator is not added twice.
    pub async fn start_registration(
        &self,
        user_id: UserId,
        email: &str,
        now: i64,
    ) -> Result<PasskeyRegistrationStart, ErrorCode> {
        let webauthn = self.webauthn()?;
        let existing = self.stored_of_user(user_id).await?;
        // One WebAuthn user id per account, random (it names the account to authenticators
        // and must not carry anything personal).
        let user_handle = match existing.first() {
            Some(stored) => stored.user_handle.parse().map_err(|_| ErrorCode::Unknown)?,
            None => Uuid::new_v4(),
        };
        let exclude = existing
            .iter()
            .map(|stored| stored.passkey.cred_id().clone())
            .collect();
        let (options, state): (CreationChallengeResponse, _) = webauthn
            .start_passkey_registration(user_handle, email, email, Some(exclude))
            .map_err(|e| {
                tracing::error!(error = %e, "passkey registration could not start");
                ErrorCode::Unknown
            })?;
        // "Sign in with a passkey" names no account: the credential must be discoverable.
        // (webauthn-rs does not export the type of this field, so it is set in the JSON.)
        let mut options = serde_json::to_value(&options).map_err(|_| ErrorCode::Unknown)?;
        options["publicKey"]["authenticatorSelection"]["residentKey"] = "required".into();
        options["publicKey"]["authenticatorSelection"]["requireResidentKey"] = true.into();
        let pending = PendingRegistration {
            user_id,
            user_handle,
            expires_at: now + REGISTRATION_SECONDS,
            state,
        };
        let sealed = self
            .secrets
            .seal(to_json(&pending)?.as_bytes(), &registration_aad(user_id));
        Ok(PasskeyRegistrationStart {
            options: to_json(&options)?,
            sealed_state: data_encoding::BASE64URL_NOPAD.encode(&sealed),
        })
    }

    /// Keeps the passkey the browser made for `user_id` from `start_registration`'s options,
    /// named `name`.
    pub async fn finish_registration(
        &self,
        user_id: UserId,
        name: &str,
        sealed_state: &str,
        answer: &str,
        now: i64,
    ) -> Result<PasskeySummary, ErrorCode> {
        let webauthn = self.webauthn()?;
        let name = name.trim();
        if name.is_empty() || name.chars().count() > MAX_PASSKEY_NAME {
            return Err(ErrorCode::PasskeyNameInvalid);
        }
        let pending: PendingRegistration = data_encoding::BASE64URL_NOPAD
            .decode(sealed_state.as_bytes())
            .ok()
            .and_then(|sealed| self.secrets.open(&sealed, &registration_aad(user_id)).ok())
            .and_then(|plain| serde_json::from_slice(&plain).ok())
            .ok_or(ErrorCode::PasskeyRefused)?;
        if pending.user_id != user_id || pending.expires_at <= now {
            return Err(ErrorCode::FlowExpired);
        }
        let credential: RegisterPublicKeyCredential = parse_answer(answer)?;
        let passkey = webauthn
            .finish_passkey_registration(&credential, &pending.state)
            .map_err(|e| {
                tracing::info!(user_id, error = %e, "a passkey registration was refused");
                ErrorCode::PasskeyRefused
            })?;
        let id = credential_key(passkey.cred_id());
        let added = sqlx::query(
            "INSERT INTO passkeys (credential_id, user_id, user_handle, name, passkey, counter, created_at)
             VALUES ($1, $2, $3, $4, $5, 0, $6)",
        )
        .bind(&id)
        .bind(user_id)
        .bind(pending.user_handle.to_string())
        .bind(name)
        .bind(to_json(&passkey)?)
        .bind(now)
        .execute(&self.pool)
        .await;
        match added {
            Ok(_) => {}
            // The same credential again (its id is the key).
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(ErrorCode::PasskeyRefused)
            }
            Err(e) => return Err(db_error(e)),
        }
        tracing::info!(user_id, "added a passkey");
        Ok(PasskeySummary {
            id,
            name: name.to_owned(),
            created_at: now,
            last_used_at: None,
        })
    }

    /// Removes passkey `credential_id` of `user_id`; `not_found` when it is not theirs.
    pub async fn remove(&self, user_id: UserId, credential_id: &str) -> Result<(), ErrorCode> {
        let done = sqlx::query("DELETE FROM passkeys WHERE user_id = $1 AND credential_id = $2")
            .bind(user_id)
            .bind(credential_id)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Err(ErrorCode::NotFound);
        }
        tracing::info!(user_id, "removed a passkey");
        Ok(())
    }

    /// Drops every passkey of `user_id` (an admin's reset of the second factor).
    pub async fn remove_all(&self, user_id: UserId) -> Result<(), ErrorCode> {
        sqlx::query("DELETE FROM passkeys WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Options asking for one of `user_id`'s passkeys as the second factor, and the state to
    /// keep in the flow; `None` when the account has none (or passkeys are off).
    pub async fn start_second_factor(
        &self,
        user_id: UserId,
    ) -> Result<Option<(String, PasskeyAuthentication)>, ErrorCode> {
        let Some(webauthn) = self.relying_party.as_deref() else {
            return Ok(None);
        };
        let stored = self.stored_of_user(user_id).await?;
        if stored.is_empty() {
            return Ok(None);
        }
        let keys: Vec<Passkey> = stored.into_iter().map(|s| s.passkey).collect();
        let (options, state): (RequestChallengeResponse, _) =
            webauthn.start_passkey_authentication(&keys).map_err(|e| {
                tracing::error!(error = %e, "passkey authentication could not start");
                ErrorCode::Unknown
            })?;
        Ok(Some((to_json(&options)?, state)))
    }

    /// Checks the browser's `answer` to `start_second_factor`'s options for `user_id`.
    pub async fn finish_second_factor(
        &self,
        user_id: UserId,
        state: &PasskeyAuthentication,
        answer: &str,
        now: i64,
    ) -> Result<(), ErrorCode> {
        let checked = self.check_second_factor(user_id, state, answer, now).await;
        metrics::second_factor_try(metrics::SecondFactor::Passkey, &checked);
        checked
    }

    async fn check_second_factor(
        &self,
        user_id: UserId,
        state: &PasskeyAuthentication,
        answer: &str,
        now: i64,
    ) -> Result<(), ErrorCode> {
        let webauthn = self.webauthn()?;
        let credential: PublicKeyCredential = parse_answer(answer)?;
        self.attempts.claim(user_id, now).await?;
        let result = webauthn.finish_passkey_authentication(&credential, state);
        self.record_use(user_id, result, now).await
    }

    /// Options for "Sign in with a passkey" (any discoverable passkey of this Stepgate), and
    /// the state to keep in the flow.
    pub fn start_discoverable(&self) -> Result<(String, DiscoverableAuthentication), ErrorCode> {
        let (options, state) = self
            .webauthn()?
            .start_discoverable_authentication()
            .map_err(|e| {
                tracing::error!(error = %e, "passkey sign-in could not start");
                ErrorCode::Unknown
            })?;
        Ok((to_json(&options)?, state))
    }

    /// The account whose passkey answered `start_discoverable`'s options.
    pub async fn finish_discoverable(
        &self,
        state: DiscoverableAuthentication,
        answer: &str,
        now: i64,
    ) -> Result<UserId, ErrorCode> {
        let checked = self.check_discoverable(state, answer, now).await;
        metrics::second_factor_try(metrics::SecondFactor::Passkey, &checked);
        checked
    }

    async fn check_discoverable(
        &self,
        state: DiscoverableAuthentication,
        answer: &str,
        now: i64,
    ) -> Result<UserId, ErrorCode> {
        let webauthn = self.webauthn()?;
        let credential: PublicKeyCredential = parse_answer(answer)?;
        let (user_handle, credential_id) = webauthn
            .identify_discoverable_authentication(&credential)
            .map_err(|_| ErrorCode::PasskeyRefused)?;
        let stored = self
            .stored_by_id(&credential_key(credential_id))
            .await?
            .filter(|stored| stored.user_handle == user_handle.to_string())
            .ok_or(ErrorCode::PasskeyRefused)?;
        let user_id = stored.user_id;
        self.attempts.claim(user_id, now).await?;
        let result = webauthn.finish_discoverable_authentication_v2(
            &credential,
            state,
            DiscoverableKey::from(&stored.passkey),
        );
        self.record_use(user_id, result, now).await?;
        Ok(user_id)
    }

    /// After a claimed check: a refusal is a failed guess; a pass records the new counter and
    /// backup flags, unless the counter did not go up (a clone), which is refused.
    async fn record_use(
        &self,
        user_id: UserId,
        result: Result<
            webauthn_rs::prelude::AuthenticationResult,
            webauthn_rs::prelude::WebauthnError,
        >,
        now: i64,
    ) -> Result<(), ErrorCode> {
        let result = match result {
            Ok(result) => result,
            Err(e) => {
                tracing::info!(user_id, error = %e, "a passkey answer was refused");
                return Err(ErrorCode::PasskeyRefused);
            }
        };
        let id = credential_key(result.cred_id());
        let Some(mut stored) = self
            .stored_by_id(&id)
            .await?
            .filter(|s| s.user_id == user_id)
        else {
            return Err(ErrorCode::PasskeyRefused);
        };
        stored.passkey.update_credential(&result);
        let counter = i64::from(result.counter());
        // Authenticators that keep no counter send 0 every time; one that keeps it must go up
        // past what was seen last, on any instance.
        let used = sqlx::query(
            "UPDATE passkeys SET passkey = $1, counter = $2, last_used_at = $3
             WHERE credential_id = $4 AND user_id = $5 AND (counter < $2 OR ($2 = 0 AND counter = 0))",
        )
        .bind(to_json(&stored.passkey)?)
        .bind(counter)
        .bind(now)
        .bind(&id)
        .bind(user_id)
        .execute(&self.pool)
        .await;
        match used {
            Ok(done) if done.rows_affected() == 1 => {}
            Ok(_) => {
                tracing::warn!(
                    user_id,
                    counter,
                    "a passkey's counter went back: a cloned authenticator? refused"
                );
                return Err(ErrorCode::PasskeyRefused);
            }
            Err(e) => {
                self.attempts.not_checked(user_id).await?;
                return Err(db_error(e));
            }
        }
        self.attempts.succeeded(user_id).await?;
        Ok(())
    }
}

fn stored_from_row(row: sqlx::any::AnyRow) -> Result<StoredPasskey, ErrorCode> {
    let passkey: String = row.try_get("passkey").map_err(db_error)?;
    Ok(StoredPasskey {
        user_id: row.try_get("user_id").map_err(db_error)?,
        user_handle: row.try_get("user_handle").map_err(db_error)?,
        passkey: serde_json::from_str(&passkey).map_err(|e| {
            tracing::error!(error = %e, "a stored passkey did not parse");
            ErrorCode::Unknown
        })?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::second_factor::attempts::FREE_FAILURES;
    use crate::second_factor::soft_authenticator::SoftAuthenticator;
    use crate::sign_in::sessions::SessionToken;
    use crate::sign_in::users::User;
    use crate::test_support::{engine_in, input, signed_in_user, start, PASSKEY_ORIGIN};
    use crate::view::StepView;
    use crate::{Engine, Progress};

    const PASSWORD: &str = "password-1-quiet-harbor";

    async fn signed_up(engine: &Engine, email: &str) -> (User, SessionToken) {
        let user = engine.register(email, PASSWORD, PASSWORD).await.unwrap();
        let session = engine.open_session(user.id).await.unwrap();
        (user, session)
    }

    async fn add_passkey(
        engine: &Engine,
        user: &User,
        session: &SessionToken,
        authenticator: &mut SoftAuthenticator,
        name: &str,
    ) -> Option<crate::second_factor::recovery_codes::RecoveryCodes> {
        let started = engine.start_passkey_registration(user).await.unwrap();
        let options = serde_json::from_str(&started.options).unwrap();
        let answer = authenticator.create(&options).to_string();
        let (added, codes) = engine
            .finish_passkey_registration(user, session, name, &started.sealed_state, &answer)
            .await
            .unwrap();
        assert_eq!(added.name, name);
        codes
    }

    /// The options a step asks a passkey with.
    fn asked(view: &StepView) -> serde_json::Value {
        match view {
            StepView::Passkey { options }
            | StepView::Code {
                passkey: Some(options),
                ..
            } => serde_json::from_str(options).unwrap(),
            other => panic!("no passkey asked for: {other:?}"),
        }
    }

    /// The password of `email` accepted: the flow id and its step's passkey options.
    async fn after_password(engine: &Engine, email: &str) -> (String, StepView) {
        let credentials = input(&[("email", email), ("password", PASSWORD)]);
        match start(engine, "local", Some("o".into()), &credentials).await {
            Ok(Progress::Next(view)) => (view.flow_id, view.step),
            other => panic!("the password should lead to the second factor: {other:?}"),
        }
    }

    async fn answer(
        engine: &Engine,
        flow_id: &str,
        authenticator: &mut SoftAuthenticator,
        options: &serde_json::Value,
    ) -> Result<Progress, ErrorCode> {
        let answer = authenticator
            .get(options)
            .expect("a passkey for these options");
        engine
            .sign_in_with_passkey(flow_id, Some("o"), &answer.to_string())
            .await
            .map_err(|e| e.code)
    }

    async fn counter_of(engine: &Engine, user_id: UserId) -> i64 {
        sqlx::query_scalar("SELECT counter FROM passkeys WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(engine.pool())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_passkey_is_the_second_factor_after_the_password_and_its_use_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, clock) = engine_in(&dir).await;
        let (user, session) = signed_up(&engine, "pk@example.org").await;
        let mut authenticator = SoftAuthenticator::new(PASSKEY_ORIGIN);
        // The first second factor makes the first recovery codes.
        let codes = add_passkey(&engine, &user, &session, &mut authenticator, "Laptop").await;
        assert_eq!(codes.map(|c| c.0.len()), Some(10));
        let listed = engine.passkeys(&user).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].last_used_at, None);

        // No TOTP: the step asks for the passkey alone, naming the account's credential.
        let (flow, step) = after_password(&engine, "pk@example.org").await;
        let options = asked(&step);
        assert!(matches!(step, StepView::Passkey { .. }));
        assert_eq!(
            options["publicKey"]["allowCredentials"][0]["id"],
            serde_json::json!(listed[0].id)
        );
        assert_eq!(options["publicKey"]["userVerification"], "required");
        clock.advance(5);
        let done = answer(&engine, &flow, &mut authenticator, &options).await;
        assert_eq!(signed_in_user(done), Some(user.id));
        assert_eq!(counter_of(&engine, user.id).await, 1);
        let listed = engine.passkeys(&user).await.unwrap();
        assert_eq!(listed[0].last_used_at, Some(engine.now()));
    }

    #[tokio::test]
    async fn a_passkey_is_offered_beside_the_totp_code() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let (user, _) = crate::test_support::user_with_totp(&engine, "both@example.org").await;
        let session = engine.open_session(user.id).await.unwrap();
        let mut authenticator = SoftAuthenticator::new(PASSKEY_ORIGIN);
        // Not the first second factor: no new recovery codes.
        let codes = add_passkey(&engine, &user, &session, &mut authenticator, "Phone").await;
        assert_eq!(codes, None);
        let (flow, step) = after_password(&engine, "both@example.org").await;
        assert!(matches!(step, StepView::Code { .. }), "{step:?}");
        let options = asked(&step);
        let done = answer(&engine, &flow, &mut authenticator, &options).await;
        assert_eq!(signed_in_user(done), Some(user.id));
    }

    #[tokio::test]
    async fn a_discoverable_passkey_signs_in_alone_with_user_verification() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let (user, session) = signed_up(&engine, "alone@example.org").await;
        let mut authenticator = SoftAuthenticator::new(PASSKEY_ORIGIN);
        add_passkey(&engine, &user, &session, &mut authenticator, "Key").await;

        let view = engine
            .start_passkey_sign_in(Some("o".into()))
            .await
            .unwrap();
        let options = asked(&view.step);
        // No account named: any discoverable passkey of this Stepgate may answer.
        assert!(options["publicKey"]["allowCredentials"]
            .as_array()
            .is_none_or(Vec::is_empty));
        // Without user verification it is refused, and the flow waits for another answer.
        authenticator.user_verified = false;
        assert_eq!(
            answer(&engine, &view.flow_id, &mut authenticator, &options).await,
            Err(ErrorCode::PasskeyRefused)
        );
        authenticator.user_verified = true;
        let done = answer(&engine, &view.flow_id, &mut authenticator, &options).await;
        assert_eq!(signed_in_user(done), Some(user.id));

        // Another browser session cannot answer someone else's flow.
        let view = engine
            .start_passkey_sign_in(Some("o".into()))
            .await
            .unwrap();
        let options = asked(&view.step);
        let stolen = authenticator.get(&options).unwrap().to_string();
        assert_eq!(
            engine
                .sign_in_with_passkey(&view.flow_id, Some("other"), &stolen)
                .await
                .map(|_| ())
                .map_err(|e| e.code),
            Err(ErrorCode::FlowExpired)
        );
    }

    /// A copy of an authenticator (its key extracted) answers a flow that started before the
    /// real one was used again: webauthn-rs sees the counter the flow started with, the stored
    /// counter has moved on, and the clone is refused.
    #[tokio::test]
    async fn a_cloned_authenticator_whose_counter_did_not_go_up_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let (user, session) = signed_up(&engine, "clone@example.org").await;
        let mut real = SoftAuthenticator::new(PASSKEY_ORIGIN);
        add_passkey(&engine, &user, &session, &mut real, "Real").await;
        let mut clone = real.clone();

        let (flow_of_clone, step) = after_password(&engine, "clone@example.org").await;
        let clone_options = asked(&step);
        for _ in 0..2 {
            let (flow, step) = after_password(&engine, "clone@example.org").await;
            let done = answer(&engine, &flow, &mut real, &asked(&step)).await;
            assert_eq!(signed_in_user(done), Some(user.id));
        }
        assert_eq!(counter_of(&engine, user.id).await, 2);
        // The clone's counter (0 → 1) does not pass the 2 seen last.
        assert_eq!(
            answer(&engine, &flow_of_clone, &mut clone, &clone_options).await,
            Err(ErrorCode::PasskeyRefused)
        );
        // And in a flow started now, webauthn-rs refuses it as well.
        let (flow, step) = after_password(&engine, "clone@example.org").await;
        assert_eq!(
            answer(&engine, &flow, &mut clone, &asked(&step)).await,
            Err(ErrorCode::PasskeyRefused)
        );
        assert_eq!(counter_of(&engine, user.id).await, 2);
    }

    #[tokio::test]
    async fn refused_passkey_answers_count_as_second_factor_guesses() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let (user, session) = signed_up(&engine, "guess@example.org").await;
        let mut authenticator = SoftAuthenticator::new(PASSKEY_ORIGIN);
        add_passkey(&engine, &user, &session, &mut authenticator, "Key").await;
        let (flow, step) = after_password(&engine, "guess@example.org").await;
        let options = asked(&step);
        authenticator.user_verified = false;
        for _ in 0..FREE_FAILURES {
            assert_eq!(
                answer(&engine, &flow, &mut authenticator, &options).await,
                Err(ErrorCode::PasskeyRefused)
            );
        }
        // The account now waits: even the right answer is not checked.
        authenticator.user_verified = true;
        assert_eq!(
            answer(&engine, &flow, &mut authenticator, &options).await,
            Err(ErrorCode::RateLimited)
        );
    }

    #[tokio::test]
    async fn a_registration_is_bound_to_its_user_and_expires() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, clock) = engine_in(&dir).await;
        let (alice, alice_session) = signed_up(&engine, "alice@example.org").await;
        let (mallory, mallory_session) = signed_up(&engine, "mallory@example.org").await;
        let mut authenticator = SoftAuthenticator::new(PASSKEY_ORIGIN);
        let started = engine.start_passkey_registration(&alice).await.unwrap();
        let made = authenticator
            .create(&serde_json::from_str(&started.options).unwrap())
            .to_string();
        let finish = |user: &User, session: &SessionToken, name: &str| {
            let (user, session, name) = (user.clone(), session.clone(), name.to_owned());
            let (engine, state, made) =
                (engine.clone(), started.sealed_state.clone(), made.clone());
            async move {
                engine
                    .finish_passkey_registration(&user, &session, &name, &state, &made)
                    .await
                    .map(|_| ())
            }
        };
        assert_eq!(
            finish(&mallory, &mallory_session, "Stolen").await,
            Err(ErrorCode::PasskeyRefused)
        );
        assert_eq!(
            finish(&alice, &alice_session, " ").await,
            Err(ErrorCode::PasskeyNameInvalid)
        );
        assert_eq!(
            finish(&alice, &alice_session, &"x".repeat(65)).await,
            Err(ErrorCode::PasskeyNameInvalid)
        );
        clock.advance(REGISTRATION_SECONDS + 1);
        assert_eq!(
            finish(&alice, &alice_session, "Late").await,
            Err(ErrorCode::FlowExpired)
        );
        assert!(engine.passkeys(&alice).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_removed_passkey_no_longer_signs_in_and_the_password_alone_does_again() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let (user, session) = signed_up(&engine, "gone@example.org").await;
        let mut authenticator = SoftAuthenticator::new(PASSKEY_ORIGIN);
        add_passkey(&engine, &user, &session, &mut authenticator, "Old").await;
        let id = engine.passkeys(&user).await.unwrap()[0].id.clone();
        let (other, _) = signed_up(&engine, "other@example.org").await;
        assert_eq!(
            engine.remove_passkey(&other, &id).await,
            Err(ErrorCode::NotFound)
        );
        engine.remove_passkey(&user, &id).await.unwrap();

        let view = engine
            .start_passkey_sign_in(Some("o".into()))
            .await
            .unwrap();
        assert_eq!(
            answer(
                &engine,
                &view.flow_id,
                &mut authenticator,
                &asked(&view.step)
            )
            .await,
            Err(ErrorCode::PasskeyRefused)
        );
        let credentials = input(&[("email", "gone@example.org"), ("password", PASSWORD)]);
        let done = start(&engine, "local", Some("o".into()), &credentials).await;
        assert_eq!(signed_in_user(done), Some(user.id));
    }

    /// Registration, a sign-in by passkey alone and a second factor, each started on one
    /// instance and finished on another (one SQLite file, or Postgres + Redis in that run).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_ceremony_started_on_one_instance_finishes_on_another() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = engine_in(&dir).await;
        let (b, _) = engine_in(&dir).await;
        let (user, session) = signed_up(&a, "two@example.org").await;
        let mut authenticator = SoftAuthenticator::new(PASSKEY_ORIGIN);

        let started = a.start_passkey_registration(&user).await.unwrap();
        let made = authenticator
            .create(&serde_json::from_str(&started.options).unwrap())
            .to_string();
        b.finish_passkey_registration(&user, &session, "Laptop", &started.sealed_state, &made)
            .await
            .unwrap();

        let view = a.start_passkey_sign_in(Some("o".into())).await.unwrap();
        let done = answer(&b, &view.flow_id, &mut authenticator, &asked(&view.step)).await;
        assert_eq!(signed_in_user(done), Some(user.id));

        let (flow, step) = after_password(&b, "two@example.org").await;
        let done = answer(&a, &flow, &mut authenticator, &asked(&step)).await;
        assert_eq!(signed_in_user(done), Some(user.id));
        assert_eq!(counter_of(&a, user.id).await, 2);
    }

    /// A lost phone may hold the passkeys: an admin's reset of the second factor removes them
    /// (with the recovery codes), and the password alone signs in again.
    #[tokio::test]
    async fn an_admin_reset_removes_the_passkeys() {
        use crate::test_support::sign_up_open;
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let admin = sign_up_open(&engine, "admin@example.org", PASSWORD).await;
        let user = sign_up_open(&engine, "phone@example.org", PASSWORD)
            .await
            .user;
        let session = engine.open_session(user.id).await.unwrap();
        let mut authenticator = SoftAuthenticator::new(PASSKEY_ORIGIN);
        add_passkey(&engine, &user, &session, &mut authenticator, "Lost phone").await;
        assert!(matches!(
            after_password(&engine, "phone@example.org").await.1,
            StepView::Passkey { .. }
        ));

        engine
            .admin_reset_second_factor(&admin.user, user.id)
            .await
            .unwrap();
        assert!(engine.passkeys(&user).await.unwrap().is_empty());
        assert_eq!(engine.recovery_codes_left(&user).await, Ok(0));
        let credentials = input(&[("email", "phone@example.org"), ("password", PASSWORD)]);
        let done = start(&engine, "local", Some("o".into()), &credentials).await;
        assert_eq!(signed_in_user(done), Some(user.id));
    }

    #[test]
    fn passkeys_need_a_host_name() {
        assert!(relying_party(Some("http://localhost:3000")).is_some());
        assert!(relying_party(Some("https://stepgate.example.org")).is_some());
        assert!(relying_party(Some("http://127.0.0.1:3000")).is_none());
        assert!(relying_party(Some("http://[::1]:3000")).is_none());
        assert!(relying_party(None).is_none());
    }

    #[tokio::test]
    async fn only_public_keys_are_stored() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let (user, session) = signed_up(&engine, "public@example.org").await;
        let mut authenticator = SoftAuthenticator::new(PASSKEY_ORIGIN);
        add_passkey(&engine, &user, &session, &mut authenticator, "Key").await;
        let stored: String = sqlx::query_scalar("SELECT passkey FROM passkeys")
            .fetch_one(engine.pool())
            .await
            .unwrap();
        let private = authenticator.private_keys();
        assert!(!private.is_empty());
        for key in private {
            for form in [
                hex::encode(&key),
                data_encoding::BASE64URL_NOPAD.encode(&key),
                data_encoding::BASE64.encode(&key),
                serde_json::to_string(&key).unwrap(),
            ] {
                assert!(!stored.contains(&form), "a private key is stored: {stored}");
            }
        }
        assert!(stored.contains("EC_EC2"), "{stored}");
    }
}
