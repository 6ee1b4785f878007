//! `local`: Stepgate's own accounts. Step one checks email and password (argon2id); when the
//! account has a second factor, step two (`totp`) asks for it: a TOTP code, whose deep link
//! points at the user's seed on the TOTP site (the web TOTP service,
//! [`crate::second_factor::totp_site`]), or one of the account's passkeys (`passkey` carries
//! the browser's answer), or both offered side by side. A recovery code (`recovery_code`
//! instead of `code`) stands in for either there.
//!
//! "Sign in with a passkey" starts here too (`passkey_sign_in` instead of email and password):
//! a discoverable passkey answers step `passkey` alone, naming its account itself.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{DiscoverableAuthentication, PasskeyAuthentication};

use super::{required, Input, Provider, Step, StepContext, StepError};
use crate::base::email::Email;
use crate::second_factor::passkeys::Passkeys;
use crate::second_factor::two_factor::TwoFactor;
use crate::sign_in::password::PasswordHasher;
use crate::sign_in::users::{UserCredentials, UserId, UserStore};
use crate::view::{CodeChannel, FieldKind, FieldSpec, StepView};
use crate::ErrorCode;

/// The step name of the second factor.
pub const TOTP_STEP: &str = "totp";
/// The step name of a sign-in by passkey alone.
pub const PASSKEY_STEP: &str = "passkey";
/// The input that starts a sign-in by passkey alone (instead of email and password).
pub const PASSKEY_SIGN_IN: &str = "passkey_sign_in";
/// The input that carries the browser's passkey answer (`PublicKeyCredential`, as JSON).
pub const PASSKEY_ANSWER: &str = "passkey";

/// What a sign-in keeps while it waits for the next factor.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum LocalState {
    /// The password was right; the account's second factor is due: its TOTP code (when it has
    /// TOTP) or one of its passkeys (the ceremony's state, when it has passkeys).
    Totp {
        user_id: UserId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        passkey: Option<PasskeyAuthentication>,
    },
    /// "Sign in with a passkey": any discoverable passkey of this Stepgate may answer.
    Passkey {
        discoverable: DiscoverableAuthentication,
    },
}

pub struct LocalProvider {
    users: UserStore,
    hasher: PasswordHasher,
    two_factor: TwoFactor,
    passkeys: Passkeys,
}

impl LocalProvider {
    pub fn new(
        users: UserStore,
        hasher: PasswordHasher,
        two_factor: TwoFactor,
        passkeys: Passkeys,
    ) -> Self {
        Self {
            users,
            hasher,
            two_factor,
            passkeys,
        }
    }

    async fn check_password(&self, input: &Input) -> Result<UserCredentials, ErrorCode> {
        let email = required(input, "email")?;
        let password = required(input, "password")?;
        let email = Email::parse(email)?;
        let found = self.users.find_by_email(&email).await?;
        // An unknown user is checked against a dummy hash: same time, same answer.
        let matches = self
            .hasher
            .verify(password, found.as_ref().map(|c| c.password_hash.as_str()))
            .await?;
        match found {
            Some(credentials) if matches => Ok(credentials),
            _ => Err(ErrorCode::InvalidAuth),
        }
    }

    async fn after_password(
        &self,
        credentials: UserCredentials,
    ) -> Result<Step<LocalState>, ErrorCode> {
        let user = credentials.user;
        let totp = self.two_factor.status(user.id).await?;
        let passkey = self.passkeys.start_second_factor(user.id).await?;
        let (options, passkey) = match passkey {
            Some((options, state)) => (Some(options), Some(state)),
            None => (None, None),
        };
        let view = match (totp, options) {
            (Some(totp), options) => {
                let deep_link = self
                    .two_factor
                    .site
                    .deep_link(totp.seed_id.as_deref(), &user.email);
                StepView::Code {
                    channel: CodeChannel::Totp { deep_link },
                    digits: totp.digits,
                    passkey: options,
                }
            }
            (None, Some(options)) => StepView::Passkey { options },
            (None, None) => return Ok(Step::SignedIn { user_id: user.id }),
        };
        Ok(Step::Show {
            step: TOTP_STEP,
            view,
            state: LocalState::Totp {
                user_id: user.id,
                passkey,
            },
        })
    }

    fn start_passkey_sign_in(&self) -> Result<Step<LocalState>, ErrorCode> {
        let (options, discoverable) = self.passkeys.start_discoverable()?;
        Ok(Step::Show {
            step: PASSKEY_STEP,
            view: StepView::Passkey { options },
            state: LocalState::Passkey { discoverable },
        })
    }
}

/// A refused passkey keeps the flow for another try (another passkey, or the same again).
fn passkey_step(result: Result<UserId, ErrorCode>) -> Step<LocalState> {
    match result {
        Ok(user_id) => Step::SignedIn { user_id },
        Err(ErrorCode::RateLimited) => Step::Wait(ErrorCode::RateLimited.into()),
        Err(ErrorCode::PasskeyRefused) => {
            Step::Retry(StepError::new(ErrorCode::PasskeyRefused).on(PASSKEY_ANSWER))
        }
        Err(other) => Step::abort(other),
    }
}

#[async_trait]
impl Provider for LocalProvider {
    type State = LocalState;

    fn name(&self) -> &'static str {
        "local"
    }

    fn title(&self) -> &'static str {
        "Stepgate"
    }

    /// Stepgate's own accounts are never "connected": there is nothing upstream to ask.
    async fn check(
        &self,
        _http: &mut crate::flows::upstream::HttpSession,
        _now: i64,
        _secrets: &serde_json::Value,
    ) -> super::Health {
        super::Health::Accepted(None)
    }

    async fn renew(
        &self,
        _http: &mut crate::flows::upstream::HttpSession,
        _now: i64,
        _secrets: &serde_json::Value,
    ) -> super::Health {
        super::Health::Accepted(None)
    }

    fn expires_at(&self, _secrets: &serde_json::Value) -> Option<i64> {
        None
    }

    fn app_credentials(&self, _secrets: &serde_json::Value) -> serde_json::Value {
        serde_json::Value::Null
    }

    fn first_view(&self) -> StepView {
        StepView::form(
            vec![
                FieldSpec::new("email", "Email", FieldKind::Email),
                FieldSpec::new("password", "Password", FieldKind::Password),
            ],
            "Sign in",
        )
    }

    async fn start(&self, _cx: &mut StepContext<'_>, input: &Input) -> Step<LocalState> {
        if input.contains_key(PASSKEY_SIGN_IN) {
            return self.start_passkey_sign_in().unwrap_or_else(Step::from);
        }
        let result = match self.check_password(input).await {
            Ok(credentials) => self.after_password(credentials).await,
            Err(code) => Err(code),
        };
        result.unwrap_or_else(Step::from)
    }

    async fn submit(
        &self,
        cx: &mut StepContext<'_>,
        state: LocalState,
        input: &Input,
    ) -> Step<LocalState> {
        let (user_id, passkey) = match state {
            LocalState::Totp { user_id, passkey } => (user_id, passkey),
            LocalState::Passkey { discoverable } => {
                let Some(answer) = input.get(PASSKEY_ANSWER) else {
                    return Step::Retry(StepError::new(ErrorCode::PasskeyRefused));
                };
                return passkey_step(
                    self.passkeys
                        .finish_discoverable(discoverable, answer, cx.now)
                        .await,
                );
            }
        };
        if let Some(answer) = input.get(PASSKEY_ANSWER) {
            let Some(state) = passkey else {
                // This account was asked for a code, not a passkey.
                return Step::Retry(StepError::new(ErrorCode::PasskeyRefused));
            };
            let checked = self
                .passkeys
                .finish_second_factor(user_id, &state, answer, cx.now)
                .await;
            return passkey_step(checked.map(|()| user_id));
        }
        if let Some(recovery_code) = input.get("recovery_code") {
            return match self
                .two_factor
                .use_recovery_code(user_id, recovery_code, cx.now)
                .await
            {
                Ok(_) => Step::SignedIn { user_id },
                Err(ErrorCode::RateLimited) => Step::Wait(ErrorCode::RateLimited.into()),
                Err(ErrorCode::InvalidCode | ErrorCode::MissingFields) => {
                    Step::Retry(StepError::new(ErrorCode::InvalidCode).on("recovery_code"))
                }
                Err(other) => Step::abort(other),
            };
        }
        let Ok(code) = required(input, "code") else {
            // An empty submit is a wrong answer, not the end of the flow.
            return Step::Retry(StepError::new(ErrorCode::InvalidCode).on("code"));
        };
        match self.two_factor.verify(user_id, code, cx.now).await {
            Ok(()) => Step::SignedIn { user_id },
            // The account is cooling down: the flow stays, and this try does not count.
            Err(ErrorCode::RateLimited) => Step::Wait(ErrorCode::RateLimited.into()),
            // A wrong (or replayed) code keeps the flow for another try, up to the limit.
            Err(
                code @ (ErrorCode::InvalidCode | ErrorCode::CodeUsed | ErrorCode::MissingFields),
            ) => {
                let code = if code == ErrorCode::MissingFields {
                    ErrorCode::InvalidCode
                } else {
                    code
                };
                Step::Retry(StepError::new(code).on("code"))
            }
            Err(other) => Step::abort(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::flows::flow::MAX_ATTEMPTS;
    use crate::second_factor::verification::{FREE_FAILURES, MAX_BACKOFF_SECONDS};
    use crate::test_support::{engine_in, input, start, submit, user_with_totp};
    use crate::view::{CodeChannel, StepView};
    use crate::{ErrorCode, Progress};

    #[tokio::test]
    async fn password_then_totp_signs_in_and_the_step_carries_the_fallback_deep_link() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, clock) = engine_in(&dir).await;
        let (user, secret) = user_with_totp(&engine, "two@example.org").await;
        let credentials = input(&[
            ("email", "two@example.org"),
            ("password", "password-1-quiet-harbor"),
        ]);
        let Ok(Progress::Next(view)) =
            start(&engine, "local", Some("o".into()), &credentials).await
        else {
            panic!("the password should lead to the code step");
        };
        assert_eq!(
            view.step,
            StepView::Code {
                channel: CodeChannel::Totp {
                    deep_link: "http://totp.test/dashboard/simple-totp?serviceName=Stepgate&accountIdentifier=two%40example.org".into()
                },
                digits: 6,
                passkey: None,
            }
        );
        // A reloaded page gets the same step back.
        assert_eq!(
            engine.flow_view("local", &view.flow_id, Some("o")).await,
            Ok(view.clone())
        );
        clock.advance(30);
        let code = crate::second_factor::totp::code_at(&secret, engine.now(), 6);
        assert_eq!(
            crate::test_support::signed_in_user(
                submit(
                    &engine,
                    &view.flow_id,
                    Some("o"),
                    &input(&[("code", &code)])
                )
                .await
            ),
            Some(user.id)
        );
    }

    #[tokio::test]
    async fn five_wrong_totp_codes_end_the_sign_in_with_too_many_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, clock) = engine_in(&dir).await;
        let (_, secret) = user_with_totp(&engine, "five@example.org").await;
        let credentials = input(&[
            ("email", "five@example.org"),
            ("password", "password-1-quiet-harbor"),
        ]);
        let Ok(Progress::Next(view)) =
            start(&engine, "local", Some("o".into()), &credentials).await
        else {
            panic!("the password should lead to the code step");
        };
        for attempt in 1..=MAX_ATTEMPTS {
            // Wait out the per-account back-off so every try reaches the code check.
            clock.advance(MAX_BACKOFF_SECONDS.min(60));
            let expected = if attempt < MAX_ATTEMPTS {
                ErrorCode::InvalidCode
            } else {
                ErrorCode::TooManyAttempts
            };
            assert_eq!(
                submit(
                    &engine,
                    &view.flow_id,
                    Some("o"),
                    &input(&[("code", "000000")])
                )
                .await,
                Err(expected),
                "attempt {attempt}"
            );
        }
        let code = crate::second_factor::totp::code_at(&secret, engine.now(), 6);
        assert_eq!(
            submit(
                &engine,
                &view.flow_id,
                Some("o"),
                &input(&[("code", &code)])
            )
            .await,
            Err(ErrorCode::FlowExpired)
        );
    }

    #[tokio::test]
    async fn a_new_flow_does_not_reset_the_account_back_off() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let (_, secret) = user_with_totp(&engine, "back@example.org").await;
        let credentials = input(&[
            ("email", "back@example.org"),
            ("password", "password-1-quiet-harbor"),
        ]);
        for _ in 0..FREE_FAILURES {
            let Ok(Progress::Next(view)) =
                start(&engine, "local", Some("o".into()), &credentials).await
            else {
                panic!("code step expected");
            };
            let wrong = submit(
                &engine,
                &view.flow_id,
                Some("o"),
                &input(&[("code", "000000")]),
            )
            .await;
            assert_eq!(wrong, Err(ErrorCode::InvalidCode));
        }
        let Ok(Progress::Next(view)) =
            start(&engine, "local", Some("o".into()), &credentials).await
        else {
            panic!("code step expected");
        };
        let code = crate::second_factor::totp::code_at(&secret, engine.now() + 30, 6);
        assert_eq!(
            submit(
                &engine,
                &view.flow_id,
                Some("o"),
                &input(&[("code", &code)])
            )
            .await,
            Err(ErrorCode::RateLimited)
        );
    }

    /// 40 wrong codes sent at once on one sign-in, through two instances sharing the state
    /// (one SQLite file, or Postgres + Redis in that run of the suite): each is claimed before
    /// it is checked, so only the account's free tries are checked, and the right code sent
    /// next is refused unchecked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn forty_wrong_codes_at_once_on_one_sign_in_are_checked_at_most_five_times() {
        let dir = tempfile::tempdir().unwrap();
        let (a, clock_a) = engine_in(&dir).await;
        let (b, clock_b) = engine_in(&dir).await;
        let (_, secret) = user_with_totp(&a, "burst@example.org").await;
        let credentials = input(&[
            ("email", "burst@example.org"),
            ("password", "password-1-quiet-harbor"),
        ]);
        let Ok(Progress::Next(view)) = start(&a, "local", Some("o".into()), &credentials).await
        else {
            panic!("the password should lead to the code step");
        };
        clock_a.advance(30);
        clock_b.advance(30);
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let engine = if i % 2 == 0 { a.clone() } else { b.clone() };
                let flow_id = view.flow_id.clone();
                tokio::spawn(async move {
                    submit(&engine, &flow_id, Some("o"), &input(&[("code", "000000")])).await
                })
            })
            .collect();
        let mut answers = std::collections::HashMap::new();
        for task in tasks {
            let answer = task.await.unwrap();
            assert!(
                matches!(
                    answer,
                    Err(ErrorCode::InvalidCode
                        | ErrorCode::RateLimited
                        | ErrorCode::TooManyAttempts
                        | ErrorCode::FlowExpired)
                ),
                "{answer:?}"
            );
            *answers.entry(answer.unwrap_err()).or_insert(0) += 1;
        }
        let checked = a.two_factor().codes_checked() + b.two_factor().codes_checked();
        assert!(
            checked <= u64::from(MAX_ATTEMPTS),
            "{checked} codes checked: {answers:?}"
        );
        assert_eq!(checked, FREE_FAILURES as u64, "{answers:?}");
        let right = crate::second_factor::totp::code_at(&secret, a.now(), 6);
        for engine in [&a, &b] {
            assert_eq!(
                submit(
                    engine,
                    &view.flow_id,
                    Some("o"),
                    &input(&[("code", &right)])
                )
                .await,
                Err(ErrorCode::RateLimited)
            );
        }
        assert_eq!(
            a.two_factor().codes_checked() + b.two_factor().codes_checked(),
            checked,
            "the right code was refused without being checked"
        );
    }

    #[tokio::test]
    async fn a_recovery_code_stands_in_for_the_totp_code_once_and_the_webhook_is_told() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let (user, _) = user_with_totp(&engine, "lost@example.org").await;
        engine
            .set_webhook_url(user.id, "http://127.0.0.1:9/hook")
            .await
            .unwrap();
        let codes = engine
            .two_factor()
            .new_recovery_codes(user.id, engine.now())
            .await
            .unwrap();
        let credentials = input(&[
            ("email", "lost@example.org"),
            ("password", "password-1-quiet-harbor"),
        ]);
        let code_step = || async {
            let Ok(Progress::Next(view)) =
                start(&engine, "local", Some("o".into()), &credentials).await
            else {
                panic!("the password should lead to the code step");
            };
            view.flow_id
        };
        let flow = code_step().await;
        let wrong = engine
            .sign_in_with_recovery_code(&flow, Some("o"), "aaaa-bbbb-cccc-dddd")
            .await;
        assert_eq!(
            wrong.map(|_| ()).map_err(|e| e.code),
            Err(ErrorCode::InvalidCode)
        );
        let signed_in = engine
            .sign_in_with_recovery_code(&flow, Some("o"), &codes.0[0])
            .await
            .map_err(|e| e.code);
        assert_eq!(
            crate::test_support::signed_in_user(signed_in),
            Some(user.id)
        );
        let told = engine.webhook_deliveries(user.id, 10).await.unwrap();
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].event_type, "second_factor.recovery_code_used");
        let body: String = sqlx::query_scalar("SELECT body FROM webhook_deliveries")
            .fetch_one(engine.pool())
            .await
            .unwrap();
        assert!(body.contains("\"recovery_codes_left\":9"), "{body}");

        // The same code on a new sign-in is gone.
        let flow = code_step().await;
        let again = engine
            .sign_in_with_recovery_code(&flow, Some("o"), &codes.0[0])
            .await;
        assert_eq!(
            again.map(|_| ()).map_err(|e| e.code),
            Err(ErrorCode::InvalidCode)
        );
    }
}
