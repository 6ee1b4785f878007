//! Account health: is a connected account's kept secret still good upstream? Each provider has
//! a cheap check ([`crate::providers::Provider::check`]); opening the accounts page claims every
//! account of the user not checked in the last minute and checks it in the background, so the
//! page never waits on an upstream. A rejection marks the account "needs sign-in" (the reauth
//! flow clears it); an unreachable upstream only makes it "degraded".

use crate::accounts::store::AccountStore;
use crate::accounts::store::{AccountStatus, CheckOutcome, ConnectedAccount};
use crate::apps::events::AccountEvent;
use crate::apps::events::AccountEvents;
use crate::base::clock::Clock;
use crate::flows::upstream::Upstreams;
use crate::providers::ProviderRegistry;
use crate::providers::{Health, Input};
use crate::sign_in::users::UserId;
use crate::ErrorCode;
use std::sync::Arc;

/// An account is checked again at most this often (seconds) from page views, unless
/// configured otherwise ([`crate::EngineConfig::account_check_interval`]).
pub const DEFAULT_CHECK_INTERVAL: i64 = 60;
#[cfg(test)]
const CHECK_INTERVAL: i64 = DEFAULT_CHECK_INTERVAL;

/// Health checks of connected accounts (see the module doc).
#[derive(Clone)]
pub struct AccountHealth {
    pub(crate) accounts: AccountStore,
    pub(crate) providers: ProviderRegistry,
    pub(crate) upstreams: Upstreams,
    pub(crate) events: AccountEvents,
    pub(crate) clock: Arc<dyn Clock>,
    /// See [`crate::EngineConfig::account_check_interval`].
    pub(crate) check_interval: i64,
}

impl AccountHealth {
    /// Claims the user's accounts due for a check and checks them on background tasks.
    /// Returns the ids being checked (the page shows them as "checking…").
    pub async fn check_accounts_in_background(
        &self,
        user_id: UserId,
    ) -> Result<Vec<i64>, ErrorCode> {
        let claimed = self
            .accounts
            .claim_checks(user_id, self.clock.now(), self.check_interval)
            .await?;
        let ids = claimed.iter().map(|a| a.id).collect();
        for account in claimed {
            let engine = self.clone();
            tokio::spawn(async move {
                engine.run_check(user_id, &account).await;
            });
        }
        Ok(ids)
    }

    /// Checks the user's accounts due for a check and waits for the answers (tests, tools).
    pub async fn check_accounts_now(
        &self,
        user_id: UserId,
    ) -> Result<Vec<(i64, CheckOutcome)>, ErrorCode> {
        let claimed = self
            .accounts
            .claim_checks(user_id, self.clock.now(), self.check_interval)
            .await?;
        let mut outcomes = Vec::new();
        for account in claimed {
            outcomes.push((account.id, self.run_check(user_id, &account).await));
        }
        Ok(outcomes)
    }

    async fn run_check(&self, user_id: UserId, account: &ConnectedAccount) -> CheckOutcome {
        let outcome = self.check_account(user_id, account).await;
        let event = match &outcome {
            CheckOutcome::Accepted(Some(_)) => Some(AccountEvent::Renewed),
            CheckOutcome::Accepted(None) => None,
            // Told once, when the account turns: not at every later check.
            CheckOutcome::Rejected => {
                (account.status != AccountStatus::NeedsSignIn).then_some(AccountEvent::NeedsSignIn)
            }
            CheckOutcome::Unreachable(code) => Some(AccountEvent::Unreachable(*code)),
        };
        match &outcome {
            CheckOutcome::Rejected => tracing::info!(
                account = account.id,
                provider = account.provider,
                "the upstream refused an account's tokens: it needs signing in again"
            ),
            CheckOutcome::Unreachable(code) => tracing::warn!(
                account = account.id,
                provider = account.provider,
                %code,
                "an account's upstream could not be asked"
            ),
            CheckOutcome::Accepted(_) => {}
        }
        if let Err(code) = self
            .accounts
            .finish_check(account, user_id, &outcome, self.clock.now())
            .await
        {
            tracing::error!(account = account.id, %code, "recording a health check failed");
        }
        if let Some(event) = event {
            self.events.account_event(user_id, account, event).await;
        }
        if let CheckOutcome::Accepted(_) = outcome {
            self.events.recovered_if_it_was_down(user_id, account).await;
        }
        outcome
    }

    async fn check_account(&self, user_id: UserId, account: &ConnectedAccount) -> CheckOutcome {
        let Some(provider) = self.providers.get(account.provider.as_str()) else {
            return CheckOutcome::Unreachable(ErrorCode::NotFound);
        };
        let secrets = match self.accounts.secrets(user_id, account.id).await {
            Ok(secrets) => secrets,
            Err(code) => return CheckOutcome::Unreachable(code),
        };
        let mut http = self.upstreams.session().labelled(provider.name(), "check");
        match provider.check(&mut http, self.clock.now(), &secrets).await {
            Health::Accepted(renewed) => CheckOutcome::Accepted(renewed),
            Health::Rejected => CheckOutcome::Rejected,
            Health::Unreachable(code) => CheckOutcome::Unreachable(code),
        }
    }

    /// What the reauth form of account `account_id` starts with: its provider's name and the
    /// first form's values (the account name; for some providers more, e.g. Lynk & Co's VIN).
    pub async fn reauth_prefill(
        &self,
        user_id: UserId,
        account_id: i64,
    ) -> Result<(ConnectedAccount, Input), ErrorCode> {
        let (account, secrets) = self.accounts.get_with_secrets(user_id, account_id).await?;
        let provider = self
            .providers
            .get(account.provider.as_str())
            .ok_or(ErrorCode::NotFound)?;
        let prefill = provider.reauth_prefill(&account.display_name, &secrets);
        Ok((account, prefill))
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;

    use super::*;
    use crate::accounts::store::AccountStatus;
    use crate::flows::upstream::HttpSession;
    use crate::providers::{NewAccount, Provider, Purpose, Step, StepContext};
    use crate::test_support::{engine_with, input, register_owner, test_config};
    use crate::view::{FieldKind, FieldSpec, StepView};
    use crate::Completion;
    use crate::Engine;
    use crate::Progress;

    /// Connects account `account` at once, keeping `token`; its check answers by the token:
    /// `revoked…` is refused, `down` cannot be asked, `old` is renewed to `new`.
    struct Tokens;

    #[async_trait]
    impl Provider for Tokens {
        type State = ();
        fn name(&self) -> &'static str {
            "tokens"
        }
        fn title(&self) -> &'static str {
            "Tokens"
        }
        fn first_view(&self) -> StepView {
            StepView::form(
                vec![
                    FieldSpec::new("account", "Account", FieldKind::Text),
                    FieldSpec::new("token", "Token", FieldKind::Password),
                ],
                "Connect",
            )
        }
        async fn start(&self, _cx: &mut StepContext<'_>, input: &Input) -> Step<()> {
            Step::Connected(NewAccount {
                account_id: input["account"].clone(),
                display_name: input["account"].to_uppercase(),
                secrets: serde_json::json!({ "token": input["token"] }),
            })
        }
        async fn submit(&self, _: &mut StepContext<'_>, _: (), _: &Input) -> Step<()> {
            Step::abort(ErrorCode::FlowExpired)
        }
        async fn check(&self, _: &mut HttpSession, _: i64, secrets: &serde_json::Value) -> Health {
            match secrets["token"].as_str().unwrap_or_default() {
                t if t.starts_with("revoked") => Health::Rejected,
                "down" => Health::Unreachable(ErrorCode::CannotConnect),
                "old" => Health::Accepted(Some(serde_json::json!({ "token": "new" }))),
                _ => Health::Accepted(None),
            }
        }
        async fn renew(&self, _: &mut HttpSession, _: i64, secrets: &serde_json::Value) -> Health {
            match secrets["token"].as_str().unwrap_or_default() {
                t if t.starts_with("revoked") => Health::Rejected,
                "down" => Health::Unreachable(ErrorCode::CannotConnect),
                _ => Health::Accepted(Some(serde_json::json!({ "token": "renewed" }))),
            }
        }
        fn expires_at(&self, _: &serde_json::Value) -> Option<i64> {
            None
        }
        fn app_credentials(&self, secrets: &serde_json::Value) -> serde_json::Value {
            secrets.clone()
        }
    }

    struct Setup {
        engine: Engine,
        clock: crate::base::clock::ManualClock,
        user: UserId,
        _dir: tempfile::TempDir,
    }

    async fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(dir.path()).await;
        setup_with(dir, config).await
    }

    /// An engine opened with `config` (its database in `dir`) that serves [`Tokens`], and its
    /// owner.
    async fn setup_with(dir: tempfile::TempDir, config: crate::EngineConfig) -> Setup {
        let (engine, clock) = engine_with(config).await;
        let engine = engine.with_provider(Tokens);
        let user = register_owner(&engine).await;
        Setup {
            engine,
            clock,
            user,
            _dir: dir,
        }
    }

    impl Setup {
        async fn run(
            &self,
            purpose: Purpose,
            account: &str,
            token: &str,
        ) -> Result<Completion, ErrorCode> {
            match self
                .engine
                .start_flow(
                    "tokens",
                    purpose,
                    Some("o".into()),
                    &input(&[("account", account), ("token", token)]),
                )
                .await
            {
                Ok(Progress::Done(done)) => Ok(done),
                Ok(Progress::Next(view)) => panic!("no step waits: {view:?}"),
                Err(e) => Err(e.code),
            }
        }

        async fn connect(&self, account: &str, token: &str) -> ConnectedAccount {
            match self
                .run(Purpose::Connect { user_id: self.user }, account, token)
                .await
            {
                Ok(Completion::Connected(a)) => a,
                other => panic!("connected expected: {other:?}"),
            }
        }

        async fn reauth(
            &self,
            id: i64,
            account: &str,
            token: &str,
        ) -> Result<Completion, ErrorCode> {
            self.run(
                Purpose::Reauth {
                    user_id: self.user,
                    account_id: id,
                },
                account,
                token,
            )
            .await
        }

        async fn stored(&self, id: i64) -> (ConnectedAccount, serde_json::Value) {
            let a = self.engine.accounts().get(self.user, id).await.unwrap();
            let s = self.engine.accounts().secrets(self.user, id).await.unwrap();
            (a, s)
        }
    }

    #[tokio::test]
    async fn a_refused_account_needs_sign_in_and_reauth_updates_it_in_place() {
        let s = setup().await;
        let kid = s.connect("kid", "revoked-1").await;
        let checked = s.engine.check_accounts_now(s.user).await.unwrap();
        assert_eq!(checked, vec![(kid.id, CheckOutcome::Rejected)]);
        assert_eq!(s.stored(kid.id).await.0.status, AccountStatus::NeedsSignIn);

        s.clock.advance(600);
        let (account, prefill) = s.engine.reauth_prefill(s.user, kid.id).await.unwrap();
        assert_eq!(prefill.get("account").map(String::as_str), Some("KID"));
        assert_eq!(account.provider, "tokens");
        let Ok(Completion::Reauthenticated(again)) = s.reauth(kid.id, "kid", "fresh").await else {
            panic!("reauthenticated expected");
        };
        assert_eq!((again.id, again.connected_at), (kid.id, kid.connected_at));
        assert_eq!(again.status, AccountStatus::Active);
        let (stored, secrets) = s.stored(kid.id).await;
        assert_eq!(secrets["token"], "fresh");
        assert_eq!(stored.status, AccountStatus::Active);
        assert_eq!(s.engine.accounts().list(s.user).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_reauth_into_another_account_is_refused_and_changes_nothing() {
        let s = setup().await;
        let kid = s.connect("kid", "revoked-1").await;
        s.engine.check_accounts_now(s.user).await.unwrap();
        assert_eq!(
            s.reauth(kid.id, "someone-else", "fresh").await,
            Err(ErrorCode::WrongAccount)
        );
        let (stored, secrets) = s.stored(kid.id).await;
        assert_eq!(stored.status, AccountStatus::NeedsSignIn);
        assert_eq!(secrets["token"], "revoked-1");
        let all = s.engine.accounts().list(s.user).await.unwrap();
        assert_eq!(all.len(), 1, "no account was added");
        // Another user's account cannot be signed in again through one's own id.
        let other = s
            .engine
            .register(
                "x@example.org",
                "password-2-quiet-harbor",
                "password-2-quiet-harbor",
            )
            .await
            .unwrap();
        let foreign = s
            .run(
                Purpose::Reauth {
                    user_id: other.id,
                    account_id: kid.id,
                },
                "kid",
                "fresh",
            )
            .await;
        assert_eq!(foreign, Err(ErrorCode::NotFound));
    }

    #[tokio::test]
    async fn an_unreachable_upstream_degrades_but_never_marks_or_unmarks() {
        let s = setup().await;
        let down = s.connect("down-account", "down").await;
        s.engine.check_accounts_now(s.user).await.unwrap();
        let (stored, _) = s.stored(down.id).await;
        assert_eq!(stored.status, AccountStatus::Degraded);
        assert_eq!(stored.last_error, Some(ErrorCode::CannotConnect));
        assert!(!stored.checking(s.engine.now()));

        // A marked account stays marked when its upstream is down at the next check.
        let marked = s.connect("marked", "revoked-2").await;
        s.clock.advance(CHECK_INTERVAL);
        s.engine.check_accounts_now(s.user).await.unwrap();
        assert_eq!(
            s.stored(marked.id).await.0.status,
            AccountStatus::NeedsSignIn
        );
        s.engine
            .accounts()
            .finish_check(
                &marked,
                s.user,
                &CheckOutcome::Unreachable(ErrorCode::Timeout),
                s.engine.now(),
            )
            .await
            .unwrap();
        assert_eq!(
            s.stored(marked.id).await.0.status,
            AccountStatus::NeedsSignIn
        );
    }

    #[tokio::test]
    async fn renewed_secrets_replace_the_old_ones() {
        let s = setup().await;
        let a = s.connect("rotating", "old").await;
        let checked = s.engine.check_accounts_now(s.user).await.unwrap();
        assert_eq!(
            checked,
            vec![(
                a.id,
                CheckOutcome::Accepted(Some(serde_json::json!({"token": "new"})))
            )]
        );
        let (stored, secrets) = s.stored(a.id).await;
        assert_eq!(secrets["token"], "new");
        assert_eq!(stored.status, AccountStatus::Active);
    }

    #[tokio::test]
    async fn an_account_is_checked_at_most_once_a_minute() {
        let s = setup().await;
        let a = s.connect("kid", "fine").await;
        assert_eq!(s.engine.check_accounts_now(s.user).await.unwrap().len(), 1);
        s.clock.advance(CHECK_INTERVAL - 1);
        assert!(s
            .engine
            .check_accounts_now(s.user)
            .await
            .unwrap()
            .is_empty());
        s.clock.advance(1);
        let ids = s.engine.check_accounts_in_background(s.user).await.unwrap();
        assert_eq!(ids, vec![a.id]);
        // The claim is visible at once: a second page view does not start another check.
        assert!(s
            .engine
            .check_accounts_in_background(s.user)
            .await
            .unwrap()
            .is_empty());
        for _ in 0..100 {
            let stored = s.stored(a.id).await.0;
            if !stored.checking(s.engine.now()) {
                assert_eq!(stored.status, AccountStatus::Active);
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("the background check never finished");
    }

    #[tokio::test]
    async fn a_check_claimed_in_the_second_the_last_one_ended_shows_as_under_way() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path()).await;
        config.account_check_interval = 0;
        let s = setup_with(dir, config).await;
        let a = s.connect("kid", "fine").await;
        s.engine.check_accounts_now(s.user).await.unwrap();
        // The manual clock has not moved: the next claim falls in the same second.
        let claimed = s
            .engine
            .accounts()
            .claim_checks(s.user, s.engine.now(), 0)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        assert!(s.stored(a.id).await.0.checking(s.engine.now()));
        // And a check under way is not claimed a second time.
        let again = s
            .engine
            .accounts()
            .claim_checks(s.user, s.engine.now(), 0)
            .await
            .unwrap();
        assert!(again.is_empty());
    }
}
