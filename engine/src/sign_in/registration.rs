//! Who may sign up (`STEPGATE_REGISTRATION`): [`RegistrationMode`] and [`Engine::sign_up`], the
//! registration the sign-up page runs.
//!
//! - While this Stepgate has no admin (a new installation), one registration is free in every
//!   mode, and that account is the admin. Whether a registration is that one is decided in its
//!   own transaction (the one-row `first_admin` table), so two first registrations at once make
//!   one admin and refuse the other (unless registration is open).
//! - `open`: anyone may register. `invite` (the default): only with an unused, unexpired invite
//!   (`sign_in/invites.rs`), spent in the same transaction. `closed`: nobody.
//! - Each registration from a client address is claimed against that address's throttle before
//!   the password is hashed (`sign_in/throttle.rs`, [`crate::sign_in::throttle::REGISTRATION_RULE`]).
//! - The demo account ([`Engine::ensure_user`]) is made outside these rules and is never the
//!   admin.

use std::net::IpAddr;

use crate::base::clock::Clock;
use crate::base::email::Email;
use crate::sign_in::invites::InviteStore;
use crate::sign_in::password::PasswordHasher;
use crate::sign_in::throttle::SignInThrottle;
use crate::sign_in::users::UserStore;
use crate::sign_in::users::{User, UserId};
use crate::store::db::Pool;
use crate::ErrorCode;
use std::sync::Arc;

/// `STEPGATE_REGISTRATION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RegistrationMode {
    /// Anyone may create an account.
    Open,
    /// Only with an invite link from an admin.
    #[default]
    Invite,
    /// Nobody may (but the first account, which makes the admin).
    Closed,
}

impl RegistrationMode {
    /// `open`, `invite` or `closed` (any case); anything else is `None`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "open" => Some(RegistrationMode::Open),
            "invite" => Some(RegistrationMode::Invite),
            "closed" => Some(RegistrationMode::Closed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RegistrationMode::Open => "open",
            RegistrationMode::Invite => "invite",
            RegistrationMode::Closed => "closed",
        }
    }
}

/// A registration as the sign-up form sends it.
#[derive(Debug, Clone, Copy)]
pub struct SignUp<'a> {
    pub mode: RegistrationMode,
    pub email: &'a str,
    pub password: &'a str,
    pub confirm: &'a str,
    /// The token of the invite link the form came from, if any.
    pub invite: Option<&'a str>,
    /// The client's address, for throttling.
    pub address: Option<IpAddr>,
}

/// Why a registration was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignUpRefusal {
    Code(ErrorCode),
    /// Too many registrations from this address: nothing was hashed. In seconds.
    Throttled {
        retry_after: i64,
    },
}

impl From<ErrorCode> for SignUpRefusal {
    fn from(code: ErrorCode) -> Self {
        SignUpRefusal::Code(code)
    }
}

/// A registered account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedUp {
    pub user: User,
    /// The first account: this Stepgate's admin.
    pub is_admin: bool,
}

fn db_error(e: sqlx::Error) -> ErrorCode {
    tracing::error!(error = %e, "registration failed");
    ErrorCode::Unknown
}

/// Who may sign up and how (the mode, invites, the first account as the admin).
#[derive(Clone)]
pub struct Registration {
    pub(crate) pool: Pool,
    pub(crate) users: UserStore,
    pub(crate) hasher: PasswordHasher,
    pub(crate) throttle: SignInThrottle,
    pub(crate) clock: Arc<dyn Clock>,
}

impl Registration {
    /// Whether this Stepgate has its admin yet (if not, the next registration is free).
    pub async fn has_admin(&self) -> Result<bool, ErrorCode> {
        let found: Option<i64> = sqlx::query_scalar("SELECT slot FROM first_admin")
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(found.is_some())
    }

    /// What refuses `request` before any hashing: the mode, and the invite's state (read
    /// only: it is spent in the transaction).
    async fn admission(&self, request: &SignUp<'_>) -> Result<(), ErrorCode> {
        if !self.has_admin().await? {
            return Ok(());
        }
        match request.mode {
            RegistrationMode::Open => Ok(()),
            RegistrationMode::Closed => Err(ErrorCode::RegistrationClosed),
            RegistrationMode::Invite => {
                let token = request
                    .invite
                    .filter(|t| !t.trim().is_empty())
                    .ok_or(ErrorCode::InviteRequired)?;
                let invites = InviteStore::new(self.pool.clone());
                match invites.refusal(token, self.clock.now()).await? {
                    Some(refusal) => Err(refusal),
                    None => Ok(()),
                }
            }
        }
    }

    /// Registers an account by the rules of `request.mode` (see the module's note). Nothing is
    /// written unless every check passes; a refused invite is named in words (unknown, used,
    /// expired).
    pub async fn sign_up(&self, request: SignUp<'_>) -> Result<SignedUp, SignUpRefusal> {
        let email = crate::sign_in::local_accounts::new_account_fields(
            request.email,
            request.password,
            request.confirm,
        )?;
        if let Some(invite) = request.invite {
            if invite.len() > crate::base::fields::MAX_FIELD_BYTES {
                return Err(ErrorCode::FieldTooLong.into());
            }
        }
        self.admission(&request).await?;
        if let Some(address) = request.address {
            let claim = self
                .throttle
                .claim_registration(address, self.clock.now())
                .await?;
            if let Err(throttled) = claim {
                tracing::warn!(
                    retry_after = throttled.retry_after,
                    "throttled a registration"
                );
                return Err(SignUpRefusal::Throttled {
                    retry_after: throttled.retry_after,
                });
            }
        }
        if self.users.find_by_email(&email).await?.is_some() {
            return Err(ErrorCode::EmailTaken.into());
        }
        let hash = match self.hasher.hash(request.password).await {
            Ok(hash) => hash,
            Err(code) => {
                // Never hashed: the address gets its registration back.
                if let Some(address) = request.address {
                    self.throttle
                        .registration_not_checked(address, self.clock.now())
                        .await?;
                }
                return Err(code.into());
            }
        };
        Ok(self.create_admitted(&request, &email, &hash).await?)
    }

    /// The registration's one transaction: the account, then the admin slot if it is still
    /// free, else the mode's rule again (an invite is spent here, once).
    async fn create_admitted(
        &self,
        request: &SignUp<'_>,
        email: &Email,
        hash: &str,
    ) -> Result<SignedUp, ErrorCode> {
        let now = self.clock.now();
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        // A write first: on SQLite the transaction takes the write lock here, so nothing it
        // reads after can be changed under it.
        let inserted = sqlx::query_scalar(
            "INSERT INTO users (email, password_hash, created_at, last_sign_in_at)
             VALUES ($1, $2, $3, $3) RETURNING id",
        )
        .bind(email.as_str())
        .bind(hash)
        .bind(now)
        .fetch_one(&mut *tx)
        .await;
        let id: UserId = match inserted {
            Ok(id) => id,
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(ErrorCode::EmailTaken)
            }
            Err(e) => return Err(db_error(e)),
        };
        // On Postgres a second first registration waits here for the first to commit, then
        // finds the slot taken.
        let claimed = sqlx::query(
            "INSERT INTO first_admin (slot, user_id) VALUES (1, $1) ON CONFLICT (slot) DO NOTHING",
        )
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?
        .rows_affected()
            == 1;
        if claimed {
            sqlx::query("UPDATE users SET is_admin = 1 WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        } else {
            match request.mode {
                RegistrationMode::Open => {}
                // The slot was taken after this registration looked (it was free then).
                RegistrationMode::Closed => return Err(ErrorCode::RegistrationClosed),
                RegistrationMode::Invite => {
                    let Some(token) = request.invite.filter(|t| !t.trim().is_empty()) else {
                        return Err(ErrorCode::InviteRequired);
                    };
                    if !InviteStore::redeem(&mut tx, token, id, now).await? {
                        drop(tx);
                        // Spent or expired since it was looked at: say which.
                        let invites = InviteStore::new(self.pool.clone());
                        return Err(invites
                            .refusal(token, now)
                            .await?
                            .unwrap_or(ErrorCode::InviteUsed));
                    }
                }
            }
        }
        tx.commit().await.map_err(db_error)?;
        if claimed {
            tracing::info!(
                user_id = id,
                "the first account registered: it is the admin"
            );
        }
        Ok(SignedUp {
            user: User {
                id,
                email: email.to_string(),
            },
            is_admin: claimed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign_in::invites::INVITE_TTL_SECONDS;
    use crate::test_support::engine_in;
    use crate::Engine;

    const PASSWORD: &str = "correct-horse-battery-staple-17";

    fn request<'a>(mode: RegistrationMode, email: &'a str, invite: Option<&'a str>) -> SignUp<'a> {
        SignUp {
            mode,
            email,
            password: PASSWORD,
            confirm: PASSWORD,
            invite,
            address: None,
        }
    }

    async fn sign_up(
        engine: &Engine,
        mode: RegistrationMode,
        email: &str,
        invite: Option<&str>,
    ) -> Result<SignedUp, SignUpRefusal> {
        engine.sign_up(request(mode, email, invite)).await
    }

    fn refused(code: ErrorCode) -> Result<SignedUp, SignUpRefusal> {
        Err(SignUpRefusal::Code(code))
    }

    async fn user_count(engine: &Engine) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(engine.pool())
            .await
            .unwrap()
    }

    #[test]
    fn the_mode_reads_its_three_words_only() {
        assert_eq!(
            RegistrationMode::parse("open"),
            Some(RegistrationMode::Open)
        );
        assert_eq!(
            RegistrationMode::parse(" Invite "),
            Some(RegistrationMode::Invite)
        );
        assert_eq!(
            RegistrationMode::parse("CLOSED"),
            Some(RegistrationMode::Closed)
        );
        assert_eq!(RegistrationMode::parse("yes"), None);
        assert_eq!(RegistrationMode::default(), RegistrationMode::Invite);
    }

    #[tokio::test]
    async fn the_first_account_registers_freely_and_is_the_admin_in_every_mode() {
        for mode in [
            RegistrationMode::Open,
            RegistrationMode::Invite,
            RegistrationMode::Closed,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let (engine, _) = engine_in(&dir).await;
            assert!(!engine.has_admin().await.unwrap());
            let first = sign_up(&engine, mode, "first@example.org", None)
                .await
                .unwrap();
            assert!(first.is_admin, "{mode:?}");
            assert!(engine.is_admin(&first.user).await.unwrap());
            assert!(engine.has_admin().await.unwrap());
            // The next one is not free (except when open), and never the admin.
            let second = sign_up(&engine, mode, "second@example.org", None).await;
            match mode {
                RegistrationMode::Open => {
                    let second = second.unwrap();
                    assert!(!second.is_admin);
                    assert!(!engine.is_admin(&second.user).await.unwrap());
                }
                RegistrationMode::Invite => assert_eq!(second, refused(ErrorCode::InviteRequired)),
                RegistrationMode::Closed => {
                    assert_eq!(second, refused(ErrorCode::RegistrationClosed))
                }
            }
        }
    }

    #[tokio::test]
    async fn the_demo_account_is_never_the_admin_and_leaves_the_slot_free() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        assert!(engine
            .ensure_user("demo@stepgate.test", PASSWORD)
            .await
            .unwrap());
        assert!(!engine.has_admin().await.unwrap());
        let owner = sign_up(&engine, RegistrationMode::Open, "owner@example.org", None)
            .await
            .unwrap();
        assert!(owner.is_admin);
        let demo = engine
            .local_accounts
            .users
            .find_by_email(&Email::parse("demo@stepgate.test").unwrap())
            .await
            .unwrap()
            .unwrap()
            .user;
        assert!(!engine.is_admin(&demo).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_first_registrations_at_once_make_one_admin() {
        // Invite-only: the one that loses the admin slot has no invite and must be refused,
        // not let in as a second free registration.
        for round in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let (engine, _) = engine_in(&dir).await;
            let tasks: Vec<_> = (0..4)
                .map(|n| {
                    let engine = engine.clone();
                    tokio::spawn(async move {
                        let email = format!("racer{n}@example.org");
                        sign_up(&engine, RegistrationMode::Invite, &email, None).await
                    })
                })
                .collect();
            let mut admins = 0;
            for task in tasks {
                match task.await.unwrap() {
                    Ok(signed_up) => {
                        assert!(signed_up.is_admin);
                        admins += 1;
                    }
                    Err(refusal) => {
                        assert_eq!(refusal, SignUpRefusal::Code(ErrorCode::InviteRequired))
                    }
                }
            }
            assert_eq!(admins, 1, "round {round}");
            assert_eq!(user_count(&engine).await, 1, "the refused wrote nothing");
            let flagged: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE is_admin = 1")
                .fetch_one(engine.pool())
                .await
                .unwrap();
            assert_eq!(flagged, 1);
        }
    }

    #[tokio::test]
    async fn invite_only_needs_a_valid_unused_unexpired_invite() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, clock) = engine_in(&dir).await;
        let mode = RegistrationMode::Invite;
        let admin = sign_up(&engine, mode, "admin@example.org", None)
            .await
            .unwrap()
            .user;

        assert_eq!(
            sign_up(&engine, mode, "a@example.org", None).await,
            refused(ErrorCode::InviteRequired)
        );
        assert_eq!(
            sign_up(&engine, mode, "a@example.org", Some("  ")).await,
            refused(ErrorCode::InviteRequired)
        );
        let unknown = "ab".repeat(32);
        for token in [unknown.as_str(), "not-a-token"] {
            assert_eq!(
                sign_up(&engine, mode, "a@example.org", Some(token)).await,
                refused(ErrorCode::InviteInvalid),
                "{token}"
            );
        }

        let invite = engine.admin_create_invite(&admin).await.unwrap();
        assert_eq!(invite.expires_at, engine.now() + INVITE_TTL_SECONDS);
        // Only the digest is stored.
        let stored: String = sqlx::query_scalar("SELECT digest FROM invites")
            .fetch_one(engine.pool())
            .await
            .unwrap();
        assert_ne!(stored, invite.token.as_str());
        // Pasting the whole link works as well as the token.
        let link = format!(
            "http://127.0.0.1:3000/register?invite={}",
            invite.token.as_str()
        );
        let invited = sign_up(&engine, mode, "invited@example.org", Some(&link))
            .await
            .unwrap();
        assert!(!invited.is_admin);
        assert_eq!(
            sign_up(
                &engine,
                mode,
                "again@example.org",
                Some(invite.token.as_str())
            )
            .await,
            refused(ErrorCode::InviteUsed),
            "single use"
        );

        let late = engine.admin_create_invite(&admin).await.unwrap();
        clock.advance(INVITE_TTL_SECONDS - 1);
        let early = engine.admin_create_invite(&admin).await.unwrap();
        clock.advance(1);
        assert_eq!(
            sign_up(&engine, mode, "late@example.org", Some(late.token.as_str())).await,
            refused(ErrorCode::InviteExpired)
        );
        sign_up(
            &engine,
            mode,
            "early@example.org",
            Some(early.token.as_str()),
        )
        .await
        .unwrap();
        assert_eq!(user_count(&engine).await, 3);
        let used_by: Option<i64> =
            sqlx::query_scalar("SELECT used_by FROM invites WHERE digest = $1")
                .bind(invite.token.digest())
                .fetch_one(engine.pool())
                .await
                .unwrap();
        assert_eq!(used_by, Some(invited.user.id));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn one_invite_sent_twice_at_once_makes_one_account() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let mode = RegistrationMode::Invite;
        let admin = sign_up(&engine, mode, "admin@example.org", None)
            .await
            .unwrap()
            .user;
        let token = engine.admin_create_invite(&admin).await.unwrap().token;
        let tasks: Vec<_> = (0..4)
            .map(|n| {
                let (engine, token) = (engine.clone(), token.clone());
                tokio::spawn(async move {
                    let email = format!("twin{n}@example.org");
                    sign_up(&engine, mode, &email, Some(token.as_str())).await
                })
            })
            .collect();
        let mut made = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => made += 1,
                Err(refusal) => assert_eq!(refusal, SignUpRefusal::Code(ErrorCode::InviteUsed)),
            }
        }
        assert_eq!(made, 1);
        assert_eq!(user_count(&engine).await, 2);
    }

    #[tokio::test]
    async fn closed_refuses_every_registration_even_with_an_invite() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let admin = sign_up(&engine, RegistrationMode::Closed, "admin@example.org", None)
            .await
            .unwrap()
            .user;
        let invite = engine.admin_create_invite(&admin).await.unwrap();
        for invite in [None, Some(invite.token.as_str())] {
            assert_eq!(
                sign_up(&engine, RegistrationMode::Closed, "x@example.org", invite).await,
                refused(ErrorCode::RegistrationClosed)
            );
        }
        assert_eq!(user_count(&engine).await, 1);
    }

    #[tokio::test]
    async fn registrations_are_throttled_per_address_before_hashing() {
        use crate::sign_in::throttle::REGISTRATION_RULE;
        let dir = tempfile::tempdir().unwrap();
        let (engine, clock) = engine_in(&dir).await;
        let from = |a: &str| Some(a.parse::<IpAddr>().unwrap());
        let attempt = |n: usize, address: &'static str| {
            let engine = engine.clone();
            async move {
                let email = format!("t{n}-{address}@example.org");
                engine
                    .sign_up(SignUp {
                        address: from(address),
                        ..request(RegistrationMode::Open, &email, None)
                    })
                    .await
            }
        };
        let free = REGISTRATION_RULE.free_failures as usize;
        for n in 0..free - 1 {
            attempt(n, "192.0.2.50").await.unwrap();
        }
        // The last free one starts the wait; successes count as well as refusals.
        attempt(free, "192.0.2.50").await.unwrap();
        let hashed = user_count(&engine).await;
        assert_eq!(
            attempt(100, "192.0.2.50").await,
            Err(SignUpRefusal::Throttled { retry_after: 1 })
        );
        assert_eq!(
            user_count(&engine).await,
            hashed,
            "a throttled try writes nothing"
        );
        // Another address is not slowed by this one.
        attempt(101, "198.51.100.9").await.unwrap();
        clock.advance(1);
        attempt(102, "192.0.2.50").await.unwrap();
        assert_eq!(
            attempt(103, "192.0.2.50").await,
            Err(SignUpRefusal::Throttled { retry_after: 2 })
        );
    }

    #[tokio::test]
    async fn a_throttled_registration_spends_no_hashing() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let address = Some("192.0.2.60".parse::<IpAddr>().unwrap());
        let mut n = 0;
        // Until the address must wait.
        loop {
            let email = format!("h{n}@example.org");
            n += 1;
            let answer = engine
                .sign_up(SignUp {
                    address,
                    ..request(RegistrationMode::Open, &email, None)
                })
                .await;
            if matches!(answer, Err(SignUpRefusal::Throttled { .. })) {
                break;
            }
            assert!(n < 100, "never throttled");
        }
        let users = user_count(&engine).await;
        let hashing = engine.local_accounts.hasher.occupy_all().await;
        // With every hashing slot taken, an unthrottled try would wait and say server_busy.
        for m in 0..20 {
            let email = format!("more{m}@example.org");
            assert!(matches!(
                engine
                    .sign_up(SignUp {
                        address,
                        ..request(RegistrationMode::Open, &email, None)
                    })
                    .await,
                Err(SignUpRefusal::Throttled { .. })
            ));
        }
        drop(hashing);
        assert_eq!(user_count(&engine).await, users);
    }

    #[tokio::test]
    async fn a_refused_registration_keeps_the_invite() {
        // An invite is spent only by the account it makes: a mistyped password does not use it.
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let mode = RegistrationMode::Invite;
        let admin = sign_up(&engine, mode, "admin@example.org", None)
            .await
            .unwrap()
            .user;
        let token = engine.admin_create_invite(&admin).await.unwrap().token;
        let mismatch = engine
            .sign_up(SignUp {
                confirm: "another-horse-battery-staple-18",
                ..request(mode, "n@example.org", Some(token.as_str()))
            })
            .await;
        assert_eq!(mismatch, refused(ErrorCode::PasswordMismatch));
        assert_eq!(
            sign_up(&engine, mode, "admin@example.org", Some(token.as_str())).await,
            refused(ErrorCode::EmailTaken)
        );
        sign_up(&engine, mode, "n@example.org", Some(token.as_str()))
            .await
            .unwrap();
    }
}
