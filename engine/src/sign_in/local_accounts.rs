//! Local accounts: creating one, and signing in to one with email and password. A sign-in is
//! throttled per account and per client address before any hashing (see
//! [`crate::sign_in::throttle`]), then runs as the `local` provider's first step
//! (`providers/local.rs`), which checks the password and asks for the TOTP code when it is on.

use std::net::IpAddr;

use crate::base::clock::Clock;
use crate::base::email::Email;
use crate::base::fields::{check_field_sizes, MAX_FIELD_BYTES};
use crate::base::metrics;
use crate::flows::runner::FlowRunner;
use crate::flows::runner::Progress;
use crate::providers::{Input, Purpose, StepError};
use crate::sign_in::password::PasswordHasher;
use crate::sign_in::throttle::SignInAttempt;
use crate::sign_in::throttle::SignInThrottle;
use crate::sign_in::users::User;
use crate::sign_in::users::UserStore;
use crate::ErrorCode;
use std::sync::Arc;

/// Why a sign-in was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInRefusal {
    Code(ErrorCode),
    /// Too many failed passwords for this account or from this address: the password was not
    /// even checked. `retry_after` is in seconds.
    Throttled {
        retry_after: i64,
    },
}

impl From<ErrorCode> for SignInRefusal {
    fn from(code: ErrorCode) -> Self {
        SignInRefusal::Code(code)
    }
}

impl From<StepError> for SignInRefusal {
    fn from(error: StepError) -> Self {
        SignInRefusal::Code(error.code)
    }
}

/// The checks every new account's fields pass, before anything is looked up or hashed.
pub(crate) fn new_account_fields(
    email: &str,
    password: &str,
    confirm: &str,
) -> Result<Email, ErrorCode> {
    for field in [email, password, confirm] {
        if field.trim().is_empty() {
            return Err(ErrorCode::MissingFields);
        }
        if field.len() > MAX_FIELD_BYTES {
            return Err(ErrorCode::FieldTooLong);
        }
    }
    let email = Email::parse(email)?;
    crate::sign_in::password_policy::check_for(email.as_str(), password)?;
    if password != confirm {
        return Err(ErrorCode::PasswordMismatch);
    }
    Ok(email)
}

/// Local accounts: created outside the registration rules (the demo account, tests) and signed
/// in to with a password (the `local` provider's flow, throttled first).
#[derive(Clone)]
pub struct LocalAccounts {
    pub(crate) users: UserStore,
    pub(crate) hasher: PasswordHasher,
    pub(crate) throttle: SignInThrottle,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) runner: FlowRunner,
}

impl LocalAccounts {
    /// Creates a local account outside the registration rules: never the admin, no invite, no
    /// throttle (the demo account, and tests). The sign-up page registers through
    /// [`Engine::sign_up`]. Nothing is written unless every check passes.
    pub async fn register(
        &self,
        email: &str,
        password: &str,
        confirm: &str,
    ) -> Result<User, ErrorCode> {
        let email = new_account_fields(email, password, confirm)?;
        if self.users.find_by_email(&email).await?.is_some() {
            return Err(ErrorCode::EmailTaken);
        }
        let hash = self.hasher.hash(password).await?;
        let id = self.users.create(&email, &hash, self.clock.now()).await?;
        Ok(User {
            id,
            email: email.to_string(),
        })
    }

    /// Creates the account if its email is free; `true` when it was created.
    pub async fn ensure_user(&self, email: &str, password: &str) -> Result<bool, ErrorCode> {
        match self.register(email, password, password).await {
            Ok(_) => Ok(true),
            Err(ErrorCode::EmailTaken) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Signs in to a local account with email and password, throttled per account and per
    /// client `address` (see [`crate::sign_in::throttle`]): a throttled try is refused before
    /// any hashing. Otherwise this is the `local` provider's first step.
    pub async fn sign_in(
        &self,
        owner: Option<String>,
        email: &str,
        password: &str,
        address: Option<IpAddr>,
    ) -> Result<Progress, SignInRefusal> {
        let input: Input = [("email", email), ("password", password)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        check_field_sizes(&input)?;
        crate::providers::required(&input, "password")?;
        let attempt = SignInAttempt::new(&Email::parse(email)?, address);
        if let Err(throttled) = self.throttle.claim(&attempt, self.clock.now()).await? {
            tracing::warn!(retry_after = throttled.retry_after, "throttled a sign-in");
            metrics::sign_in(metrics::SignInOutcome::Throttled);
            return Err(SignInRefusal::Throttled {
                retry_after: throttled.retry_after,
            });
        }
        let progress = match self
            .runner
            .start_flow("local", Purpose::SignIn, owner, &input)
            .await
        {
            Ok(progress) => progress,
            // Refused before the password was checked: not a failure of this account's.
            Err(e) if matches!(e.code, ErrorCode::ServerBusy | ErrorCode::Unknown) => {
                self.throttle
                    .not_checked(&attempt, self.clock.now())
                    .await?;
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        // The password was right (whatever factor comes next): the account starts over.
        self.throttle.succeeded(&attempt, self.clock.now()).await?;
        Ok(progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{engine_in, input, start};
    use crate::Engine;

    async fn user_count(engine: &Engine) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(engine.pool())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn registered_user_signs_in_with_the_right_password_only() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let user = engine
            .register("Ada@Example.org", "lovelace-1815", "lovelace-1815")
            .await
            .unwrap();
        assert_eq!(user.email, "ada@example.org");

        let ok = start(
            &engine,
            "local",
            None,
            &input(&[("email", "ada@example.org"), ("password", "lovelace-1815")]),
        )
        .await;
        assert_eq!(crate::test_support::signed_in_user(ok), Some(user.id));

        let wrong = start(
            &engine,
            "local",
            None,
            &input(&[("email", "ada@example.org"), ("password", "lovelace-1816")]),
        )
        .await;
        assert_eq!(wrong, Err(ErrorCode::InvalidAuth));
    }

    #[tokio::test]
    async fn unknown_user_gets_the_same_answer_as_a_wrong_password() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let answer = start(
            &engine,
            "local",
            None,
            &input(&[
                ("email", "nobody@example.org"),
                ("password", "whatever-it-is"),
            ]),
        )
        .await;
        assert_eq!(answer, Err(ErrorCode::InvalidAuth));
    }

    #[tokio::test]
    async fn bad_registrations_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let long = "x".repeat(MAX_FIELD_BYTES + 1);
        let cases = [
            (
                "",
                "password-1-quiet-harbor",
                "password-1-quiet-harbor",
                ErrorCode::MissingFields,
            ),
            ("a@example.org", "", "", ErrorCode::MissingFields),
            (
                "not-an-email",
                "password-1-quiet-harbor",
                "password-1-quiet-harbor",
                ErrorCode::InvalidEmail,
            ),
            (
                "a@example.org",
                "short",
                "short",
                ErrorCode::PasswordTooShort,
            ),
            (
                "a@example.org",
                "password1234",
                "password1234",
                ErrorCode::PasswordTooWeak,
            ),
            (
                "a@example.org",
                "password-1-quiet-harbor",
                "password-2-quiet-harbor",
                ErrorCode::PasswordMismatch,
            ),
            ("a@example.org", &long, &long, ErrorCode::FieldTooLong),
        ];
        for (email, password, confirm, expected) in cases {
            assert_eq!(
                engine.register(email, password, confirm).await,
                Err(expected),
                "{email} {password}"
            );
        }
        assert_eq!(user_count(&engine).await, 0);

        engine
            .register(
                "a@example.org",
                "password-1-quiet-harbor",
                "password-1-quiet-harbor",
            )
            .await
            .unwrap();
        assert_eq!(
            engine
                .register(
                    "A@example.org",
                    "password-9-quiet-harbor",
                    "password-9-quiet-harbor"
                )
                .await,
            Err(ErrorCode::EmailTaken)
        );
        assert_eq!(user_count(&engine).await, 1);
    }

    #[tokio::test]
    async fn oversized_sign_in_fields_are_refused_before_hashing() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let long = "x".repeat(MAX_FIELD_BYTES + 1);
        let answer = start(
            &engine,
            "local",
            None,
            &input(&[("email", "a@example.org"), ("password", &long)]),
        )
        .await;
        assert_eq!(answer, Err(ErrorCode::FieldTooLong));
    }

    // First-factor throttling (sign_in/throttle.rs), through the engine as the app uses it.

    fn from(address: &str) -> Option<IpAddr> {
        Some(address.parse().unwrap())
    }

    async fn try_password(
        engine: &Engine,
        email: &str,
        password: &str,
        address: &str,
    ) -> Result<(), SignInRefusal> {
        engine
            .sign_in(None, email, password, from(address))
            .await
            .map(|_| ())
    }

    const WRONG: Result<(), SignInRefusal> = Err(SignInRefusal::Code(ErrorCode::InvalidAuth));

    #[tokio::test]
    async fn failed_passwords_slow_the_account_down_one_second_doubling() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, clock) = engine_in(&dir).await;
        engine
            .register(
                "t@example.org",
                "password-1-quiet-harbor",
                "password-1-quiet-harbor",
            )
            .await
            .unwrap();
        for _ in 0..2 {
            assert_eq!(
                try_password(&engine, "t@example.org", "nope-nope", "192.0.2.1").await,
                WRONG
            );
        }
        // The third failure is still checked, and starts the wait.
        assert_eq!(
            try_password(&engine, "t@example.org", "nope-nope", "192.0.2.1").await,
            WRONG
        );
        assert_eq!(
            try_password(
                &engine,
                "t@example.org",
                "password-1-quiet-harbor",
                "192.0.2.1"
            )
            .await,
            Err(SignInRefusal::Throttled { retry_after: 1 }),
            "even the right password waits: the wait must not tell which one is right"
        );
        clock.advance(1);
        assert_eq!(
            try_password(&engine, "t@example.org", "nope-nope", "192.0.2.1").await,
            WRONG
        );
        assert_eq!(
            try_password(&engine, "t@example.org", "nope-nope", "192.0.2.1").await,
            Err(SignInRefusal::Throttled { retry_after: 2 })
        );
        // Another address is slowed just the same: the account is what is protected.
        assert_eq!(
            try_password(&engine, "t@example.org", "nope-nope", "198.51.100.7").await,
            Err(SignInRefusal::Throttled { retry_after: 2 })
        );
        clock.advance(2);
        // The owner, after the wait: signed in, and the account starts over.
        assert!(try_password(
            &engine,
            "t@example.org",
            "password-1-quiet-harbor",
            "192.0.2.1"
        )
        .await
        .is_ok());
        for _ in 0..3 {
            assert_eq!(
                try_password(&engine, "t@example.org", "nope-nope", "192.0.2.1").await,
                WRONG
            );
        }
    }

    #[tokio::test]
    async fn unknown_emails_are_throttled_exactly_like_real_accounts() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, clock) = engine_in(&dir).await;
        engine
            .register(
                "real@example.org",
                "password-1-quiet-harbor",
                "password-1-quiet-harbor",
            )
            .await
            .unwrap();
        let mut answers = Vec::new();
        for email in ["real@example.org", "ghost@example.org"] {
            let mut seen = Vec::new();
            for _ in 0..6 {
                seen.push(try_password(&engine, email, "nope-nope", "192.0.2.2").await);
                clock.advance(1);
            }
            answers.push(seen);
            clock.advance(3600);
        }
        assert_eq!(answers[0], answers[1]);
        assert!(answers[0]
            .iter()
            .any(|a| matches!(a, Err(SignInRefusal::Throttled { .. }))));
    }

    #[tokio::test]
    async fn throttled_tries_spend_no_hashing() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        for _ in 0..3 {
            assert_eq!(
                try_password(&engine, "h@example.org", "nope-nope", "192.0.2.3").await,
                WRONG
            );
        }
        let checks = engine.local_accounts.hasher.checks_run();
        for _ in 0..50 {
            assert!(matches!(
                try_password(&engine, "h@example.org", "nope-nope", "192.0.2.3").await,
                Err(SignInRefusal::Throttled { .. })
            ));
        }
        assert_eq!(engine.local_accounts.hasher.checks_run(), checks);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_burst_sent_at_once_is_throttled_like_one_sent_in_turn() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let tasks: Vec<_> = (0..30)
            .map(|_| {
                let engine = engine.clone();
                tokio::spawn(async move {
                    try_password(&engine, "b@example.org", "nope-nope", "192.0.2.4").await
                })
            })
            .collect();
        let mut checked = 0;
        for t in tasks {
            if t.await.unwrap() == WRONG {
                checked += 1;
            }
        }
        // Three free tries, and the third one starts the wait: no more than three are checked.
        assert_eq!(checked, 3);
    }

    #[tokio::test]
    async fn an_address_failing_against_many_accounts_is_slowed() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let free = crate::sign_in::throttle::ADDRESS_RULE.free_failures;
        for n in 0..free {
            // One try per account: no account is slowed, only the address adds up.
            assert_eq!(
                try_password(
                    &engine,
                    &format!("victim{n}@example.org"),
                    "password1",
                    "203.0.113.9"
                )
                .await,
                WRONG
            );
        }
        assert!(matches!(
            try_password(
                &engine,
                "victim-next@example.org",
                "password1",
                "203.0.113.9"
            )
            .await,
            Err(SignInRefusal::Throttled { .. })
        ));
        // Someone elsewhere is not affected.
        assert_eq!(
            try_password(
                &engine,
                "victim-next@example.org",
                "password1",
                "192.0.2.200"
            )
            .await,
            WRONG
        );
    }

    #[tokio::test]
    async fn a_restart_keeps_the_counters() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        for _ in 0..3 {
            assert_eq!(
                try_password(&engine, "r@example.org", "nope-nope", "192.0.2.5").await,
                WRONG
            );
        }
        engine.pool().close().await;
        drop(engine);
        let (reopened, _) = engine_in(&dir).await;
        assert_eq!(
            try_password(&reopened, "r@example.org", "nope-nope", "192.0.2.5").await,
            Err(SignInRefusal::Throttled { retry_after: 1 })
        );
    }

    #[tokio::test]
    async fn bad_input_is_refused_before_the_throttle_counts_it() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        for _ in 0..10 {
            assert_eq!(
                try_password(&engine, "not-an-email", "nope-nope", "192.0.2.6").await,
                Err(SignInRefusal::Code(ErrorCode::InvalidEmail))
            );
        }
        assert_eq!(
            try_password(&engine, "fine@example.org", "nope-nope", "192.0.2.6").await,
            WRONG
        );
    }

    #[tokio::test]
    async fn a_busy_server_does_not_count_its_refusals_as_failed_passwords() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::test_support::test_config(dir.path()).await;
        config.hash_slots = 1;
        config.hash_queue_wait = std::time::Duration::from_millis(20);
        let (engine, _) = crate::test_support::engine_with(config).await;
        engine
            .register(
                "busy@example.org",
                "password-1-quiet-harbor",
                "password-1-quiet-harbor",
            )
            .await
            .unwrap();
        {
            let _every_slot = engine.local_accounts.hasher.occupy_all().await;
            for _ in 0..6 {
                assert_eq!(
                    try_password(
                        &engine,
                        "busy@example.org",
                        "password-1-quiet-harbor",
                        "192.0.2.9"
                    )
                    .await,
                    Err(SignInRefusal::Code(ErrorCode::ServerBusy))
                );
            }
        }
        // Six claims not given back would make this wait (three are free, then 1 s doubling).
        assert_eq!(
            try_password(
                &engine,
                "busy@example.org",
                "password-1-quiet-harbor",
                "192.0.2.9"
            )
            .await,
            Ok(())
        );
    }
}
