//! First-factor throttling: failed passwords slow down the account they were tried against and
//! the address they came from (credential stuffing), across flows and restarts.
//!
//! - ASVS V2.2.1: no more than 100 failed attempts per hour per account are even checked.
//! - After a few failures each further try waits longer (1 s, doubling, capped), so the owner
//!   is delayed, never locked out, and a successful sign-in resets the account's counter.
//! - Unknown emails are counted exactly like known ones (the key is the normalised email), so
//!   the wait reveals nothing about which accounts exist.
//! - A try is *claimed* (counted as a failure) before its password is hashed and cleared when it
//!   succeeds: a burst sent all at once is throttled as surely as one sent in sequence, and no
//!   hashing is spent on a throttled try.
//!
//! The counters live in the database, or in Redis when the engine has one (several instances):
//! there one Lua script per operation (`redis_counters.rs`) reads and writes all of an
//! attempt's counters atomically, by the same rules.

use std::net::IpAddr;

use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::store::db::Pool;

use crate::base::email::Email;
use crate::store::redis::Redis;
use crate::store::redis_counters::{throttle_claim, throttle_give_back, throttle_succeeded};
use crate::ErrorCode;

/// How one kind of key is throttled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleRule {
    /// Failures allowed before any wait.
    pub free_failures: i64,
    /// The wait after the first failure past the free ones; it doubles with each further one...
    pub first_wait: i64,
    /// ...up to this many seconds.
    pub max_wait: i64,
    /// Failures checked per window at most; further tries wait for the window to end.
    pub max_failures_per_window: i64,
    /// The window's length in seconds; counters start over after it.
    pub window: i64,
}

impl ThrottleRule {
    /// The wait imposed once `failures` tries have failed in a row.
    pub fn wait_after(&self, failures: i64) -> i64 {
        if failures < self.free_failures {
            return 0;
        }
        let doublings = (failures - self.free_failures).min(30) as u32;
        self.first_wait
            .saturating_mul(1 << doublings)
            .min(self.max_wait)
    }
}

/// One account: three free tries, then 1 s doubling to a minute; 100 per hour (ASVS V2.2.1).
pub const ACCOUNT_RULE: ThrottleRule = ThrottleRule {
    free_failures: 3,
    first_wait: 1,
    max_wait: 60,
    max_failures_per_window: 100,
    window: 3600,
};

/// One client address, whatever accounts it tries: a household or an office shares one, so it
/// gets more room, but an address that sprays passwords across accounts is slowed all the same.
pub const ADDRESS_RULE: ThrottleRule = ThrottleRule {
    free_failures: 20,
    first_wait: 1,
    max_wait: 60,
    max_failures_per_window: 300,
    window: 3600,
};

/// Registrations from one client address. Each costs a password hash and (when open) makes an
/// account, so every one counts, not only refused ones: ten at once, then 1 s doubling to a
/// minute between two, 50 per hour.
pub const REGISTRATION_RULE: ThrottleRule = ThrottleRule {
    free_failures: 10,
    first_wait: 1,
    max_wait: 60,
    max_failures_per_window: 50,
    window: 3600,
};

/// A try refused before its password was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// Seconds until the next try will be checked (at least 1).
    pub retry_after: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Account,
    Address,
    /// Registrations per client address ([`SignInThrottle::claim_registration`]).
    Registration,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::Account => "account",
            Scope::Address => "address",
            Scope::Registration => "registration",
        }
    }
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The key an address is counted under: IPv4 as is; IPv6 by its /64, which one client
/// typically owns whole (so hopping within it does not escape the count).
fn address_key(address: IpAddr) -> String {
    let text = match address {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    };
    sha256_hex(&text)
}

fn db_error(e: sqlx::Error) -> ErrorCode {
    tracing::error!(error = %e, "sign-in throttle query failed");
    ErrorCode::Unknown
}

/// The counters one try is checked against.
#[derive(Debug, Clone)]
pub struct SignInAttempt {
    account: String,
    address: Option<String>,
}

impl SignInAttempt {
    pub fn new(email: &Email, address: Option<IpAddr>) -> Self {
        Self {
            account: sha256_hex(email.as_str()),
            address: address.map(address_key),
        }
    }

    fn keys(&self) -> impl Iterator<Item = (Scope, &str)> {
        std::iter::once((Scope::Account, self.account.as_str()))
            .chain(self.address.as_deref().map(|a| (Scope::Address, a)))
    }
}

#[derive(Clone)]
pub struct SignInThrottle {
    pool: Pool,
    /// With Redis the counters live there, and the table stays empty.
    redis: Option<Redis>,
    account_rule: ThrottleRule,
    address_rule: ThrottleRule,
    registration_rule: ThrottleRule,
}

fn redis_error(e: redis::RedisError) -> ErrorCode {
    tracing::error!(error = %e, "sign-in throttle in Redis failed");
    ErrorCode::Unknown
}

/// A key's counters as stored.
#[derive(Debug, Clone, Copy)]
struct Counters {
    failures: i64,
    window_start: i64,
    next_try_at: i64,
}

impl SignInThrottle {
    pub fn new(pool: Pool) -> Self {
        Self::with_rules(pool, ACCOUNT_RULE, ADDRESS_RULE)
    }

    pub fn with_rules(pool: Pool, account_rule: ThrottleRule, address_rule: ThrottleRule) -> Self {
        Self {
            pool,
            redis: None,
            account_rule,
            address_rule,
            registration_rule: REGISTRATION_RULE,
        }
    }

    /// Keeps the counters in `redis` (when given) instead of the database.
    pub fn with_redis(mut self, redis: Option<Redis>) -> Self {
        self.redis = redis;
        self
    }

    /// The Redis key of one counter.
    fn redis_key(redis: &Redis, scope: Scope, key: &str) -> String {
        redis.key(&format!("throttle:{}:{key}", scope.as_str()))
    }

    fn rule(&self, scope: Scope) -> ThrottleRule {
        match scope {
            Scope::Account => self.account_rule,
            Scope::Address => self.address_rule,
            Scope::Registration => self.registration_rule,
        }
    }

    async fn counters(&self, scope: Scope, key: &str) -> Result<Option<Counters>, ErrorCode> {
        let row = sqlx::query(
            "SELECT failures, window_start, next_try_at FROM sign_in_throttle WHERE scope = $1 AND key = $2",
        )
        .bind(scope.as_str())
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.map(|row| {
            Ok(Counters {
                failures: row.try_get("failures").map_err(db_error)?,
                window_start: row.try_get("window_start").map_err(db_error)?,
                next_try_at: row.try_get("next_try_at").map_err(db_error)?,
            })
        })
        .transpose()
    }

    /// The wait `counters` impose at `now` under `rule`, if any; counters of a finished
    /// window impose none.
    fn wait(rule: ThrottleRule, counters: Counters, now: i64) -> Option<i64> {
        if now - counters.window_start >= rule.window {
            return None;
        }
        if counters.failures >= rule.max_failures_per_window {
            return Some(counters.window_start + rule.window - now);
        }
        (now < counters.next_try_at).then(|| counters.next_try_at - now)
    }

    /// Reads only: the longest wait any of the attempt's keys imposes.
    async fn current_wait(
        &self,
        attempt: &SignInAttempt,
        now: i64,
    ) -> Result<Option<i64>, ErrorCode> {
        let mut longest = None;
        for (scope, key) in attempt.keys() {
            if let Some(counters) = self.counters(scope, key).await? {
                if let Some(wait) = Self::wait(self.rule(scope), counters, now) {
                    longest = longest.max(Some(wait));
                }
            }
        }
        Ok(longest)
    }

    /// Counts one try against `key` unless it must wait. Compare-and-set on the counters read,
    /// so concurrent tries (even from other server instances) are each counted once.
    async fn claim_key(
        &self,
        scope: Scope,
        key: &str,
        now: i64,
    ) -> Result<Result<(), Throttled>, ErrorCode> {
        let rule = self.rule(scope);
        loop {
            let stored = self.counters(scope, key).await?;
            let fresh = Counters {
                failures: 0,
                window_start: now,
                next_try_at: now,
            };
            let current = match stored {
                Some(c) if now - c.window_start < rule.window => c,
                _ => fresh,
            };
            if let Some(wait) = Self::wait(rule, current, now) {
                return Ok(Err(Throttled {
                    retry_after: wait.max(1),
                }));
            }
            let failures = current.failures + 1;
            let next_try_at = now + rule.wait_after(failures);
            let written = match stored {
                None => sqlx::query(
                    "INSERT INTO sign_in_throttle (scope, key, failures, window_start, next_try_at)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (scope, key) DO NOTHING",
                )
                .bind(scope.as_str())
                .bind(key)
                .bind(failures)
                .bind(current.window_start)
                .bind(next_try_at)
                .execute(&self.pool)
                .await
                .map_err(db_error)?,
                Some(old) => sqlx::query(
                    "UPDATE sign_in_throttle SET failures = $1, window_start = $2, next_try_at = $3
                     WHERE scope = $4 AND key = $5 AND failures = $6 AND window_start = $7 AND next_try_at = $8",
                )
                .bind(failures)
                .bind(current.window_start)
                .bind(next_try_at)
                .bind(scope.as_str())
                .bind(key)
                .bind(old.failures)
                .bind(old.window_start)
                .bind(old.next_try_at)
                .execute(&self.pool)
                .await
                .map_err(db_error)?,
            };
            if written.rows_affected() == 1 {
                return Ok(Ok(()));
            }
            // Another try changed the counters between our read and write: read them again.
        }
    }

    /// Claims one password check for `attempt`: `Err(Throttled)` when the account or the
    /// address must wait. The claim counts as a failure until [`SignInThrottle::succeeded`].
    pub async fn claim(
        &self,
        attempt: &SignInAttempt,
        now: i64,
    ) -> Result<Result<(), Throttled>, ErrorCode> {
        if let Some(redis) = &self.redis {
            let keys: Vec<_> = attempt
                .keys()
                .map(|(scope, key)| (Self::redis_key(redis, scope, key), self.rule(scope)))
                .collect();
            let wait = throttle_claim(redis, &keys, now)
                .await
                .map_err(redis_error)?;
            return Ok(match wait {
                None => Ok(()),
                Some(wait) => Err(Throttled {
                    retry_after: wait.max(1),
                }),
            });
        }
        // A throttled try writes nothing, so hammering a waiting account does not extend it.
        if let Some(wait) = self.current_wait(attempt, now).await? {
            return Ok(Err(Throttled {
                retry_after: wait.max(1),
            }));
        }
        for (scope, key) in attempt.keys() {
            if let Err(throttled) = self.claim_key(scope, key, now).await? {
                return Ok(Err(throttled));
            }
        }
        Ok(Ok(()))
    }

    /// The try was claimed but its password never checked (the hasher was busy, or the
    /// database failed): the account and the address get it back, and the wait it started, so
    /// an overloaded server does not count its own refusals as wrong passwords.
    pub async fn not_checked(&self, attempt: &SignInAttempt, now: i64) -> Result<(), ErrorCode> {
        let mut keys = vec![(Scope::Account, attempt.account.as_str())];
        keys.extend(attempt.address.as_deref().map(|a| (Scope::Address, a)));
        if let Some(redis) = &self.redis {
            let keys: Vec<String> = keys
                .into_iter()
                .map(|(scope, key)| Self::redis_key(redis, scope, key))
                .collect();
            return throttle_give_back(redis, &keys, now)
                .await
                .map_err(redis_error);
        }
        for (scope, key) in keys {
            sqlx::query(
                "UPDATE sign_in_throttle SET failures = CASE WHEN failures > 0 THEN failures - 1 ELSE 0 END,
                     next_try_at = CASE WHEN next_try_at < $1 THEN next_try_at ELSE $1 END
                 WHERE scope = $2 AND key = $3",
            )
            .bind(now)
            .bind(scope.as_str())
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        }
        Ok(())
    }

    /// The password was right: the account starts over; the address gets this try back and
    /// the wait it started, but keeps its other failures (an attacker's own account must not
    /// wash its address clean: the next failure brings the long wait back).
    pub async fn succeeded(&self, attempt: &SignInAttempt, now: i64) -> Result<(), ErrorCode> {
        if let Some(redis) = &self.redis {
            let account = Self::redis_key(redis, Scope::Account, &attempt.account);
            let address = attempt
                .address
                .as_deref()
                .map(|a| Self::redis_key(redis, Scope::Address, a));
            return throttle_succeeded(redis, &account, address.as_deref(), now)
                .await
                .map_err(redis_error);
        }
        sqlx::query("DELETE FROM sign_in_throttle WHERE scope = $1 AND key = $2")
            .bind(Scope::Account.as_str())
            .bind(&attempt.account)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        if let Some(address) = &attempt.address {
            sqlx::query(
                "UPDATE sign_in_throttle SET failures = CASE WHEN failures > 0 THEN failures - 1 ELSE 0 END,
                     next_try_at = CASE WHEN next_try_at < $1 THEN next_try_at ELSE $1 END
                 WHERE scope = $2 AND key = $3",
            )
            .bind(now)
            .bind(Scope::Address.as_str())
            .bind(address)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        }
        Ok(())
    }

    /// Claims one registration from `address` (claimed before its password is hashed, by the
    /// same compare-and-set or Redis script as a sign-in): `Err(Throttled)` when the address
    /// must wait. It stays counted when it succeeds.
    pub async fn claim_registration(
        &self,
        address: IpAddr,
        now: i64,
    ) -> Result<Result<(), Throttled>, ErrorCode> {
        let key = address_key(address);
        if let Some(redis) = &self.redis {
            let keys = [(
                Self::redis_key(redis, Scope::Registration, &key),
                self.registration_rule,
            )];
            let wait = throttle_claim(redis, &keys, now)
                .await
                .map_err(redis_error)?;
            return Ok(wait.map_or(Ok(()), |wait| {
                Err(Throttled {
                    retry_after: wait.max(1),
                })
            }));
        }
        self.claim_key(Scope::Registration, &key, now).await
    }

    /// A registration was claimed but its password never hashed (the hasher was busy): the
    /// address gets it back, as [`SignInThrottle::not_checked`] does for a sign-in.
    pub async fn registration_not_checked(
        &self,
        address: IpAddr,
        now: i64,
    ) -> Result<(), ErrorCode> {
        let key = address_key(address);
        if let Some(redis) = &self.redis {
            let key = Self::redis_key(redis, Scope::Registration, &key);
            return throttle_give_back(redis, &[key], now)
                .await
                .map_err(redis_error);
        }
        sqlx::query(
            "UPDATE sign_in_throttle SET failures = CASE WHEN failures > 0 THEN failures - 1 ELSE 0 END,
                 next_try_at = CASE WHEN next_try_at < $1 THEN next_try_at ELSE $1 END
             WHERE scope = $2 AND key = $3",
        )
        .bind(now)
        .bind(Scope::Registration.as_str())
        .bind(&key)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// Drops counters whose window has long ended (in Redis they expire by themselves).
    pub async fn purge_expired(&self, now: i64) -> Result<u64, ErrorCode> {
        if self.redis.is_some() {
            return Ok(0);
        }
        let oldest = self
            .account_rule
            .window
            .max(self.address_rule.window)
            .max(self.registration_rule.window);
        let done = sqlx::query("DELETE FROM sign_in_throttle WHERE window_start + $1 <= $2")
            .bind(oldest)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_from_one_second_after_the_free_tries_and_is_capped() {
        let waits: Vec<i64> = (1..=10).map(|n| ACCOUNT_RULE.wait_after(n)).collect();
        assert_eq!(waits, [0, 0, 1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(ACCOUNT_RULE.wait_after(10_000), 60);
    }

    #[test]
    fn ipv6_addresses_count_by_their_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(address_key(mapped), address_key(v4));
    }

    /// A throttle on the database in `dir`, with its counters in Redis when
    /// `STEPGATE_TEST_REDIS_URL` is set.
    async fn throttle(dir: &tempfile::TempDir, account_rule: ThrottleRule) -> SignInThrottle {
        let pool =
            crate::store::db::connect(&crate::store::db::test_database_url(dir.path()).await)
                .await
                .unwrap();
        let redis = match crate::test_support::test_redis_url() {
            Some(url) => Some(
                Redis::connect(&url, &crate::store::redis::test_prefix())
                    .await
                    .unwrap(),
            ),
            None => None,
        };
        SignInThrottle::with_rules(pool, account_rule, ADDRESS_RULE).with_redis(redis)
    }

    /// The failures counted on `key`, wherever the throttle keeps them.
    async fn failures(throttle: &SignInThrottle, scope: Scope, key: &str) -> i64 {
        match &throttle.redis {
            Some(redis) => {
                let key = SignInThrottle::redis_key(redis, scope, key);
                crate::store::redis_counters::throttle_counters(redis, &key)
                    .await
                    .unwrap()
                    .unwrap()
                    .0
            }
            None => {
                throttle
                    .counters(scope, key)
                    .await
                    .unwrap()
                    .unwrap()
                    .failures
            }
        }
    }

    #[tokio::test]
    async fn no_more_than_the_hourly_cap_is_checked_per_account() {
        // Without waits between tries, only the hourly cap stands (ASVS V2.2.1: 100 per hour).
        let dir = tempfile::tempdir().unwrap();
        let rule = ThrottleRule {
            max_wait: 0,
            ..ACCOUNT_RULE
        };
        let throttle = throttle(&dir, rule).await;
        let attempt = SignInAttempt::new(&Email::parse("cap@example.org").unwrap(), None);
        let start = 1_700_000_000;
        let mut checked = 0;
        for second in 0..3599 {
            if throttle
                .claim(&attempt, start + second)
                .await
                .unwrap()
                .is_ok()
            {
                checked += 1;
            }
        }
        assert_eq!(checked, 100);
        assert_eq!(
            throttle.claim(&attempt, start + 3000).await.unwrap(),
            Err(Throttled { retry_after: 600 })
        );
        // A new hour, a new allowance.
        assert_eq!(
            throttle.claim(&attempt, start + 3600).await.unwrap(),
            Ok(())
        );
    }

    #[tokio::test]
    async fn success_gives_the_address_its_try_back_but_does_not_wash_it_clean() {
        let dir = tempfile::tempdir().unwrap();
        let throttle = throttle(&dir, ACCOUNT_RULE).await;
        let now = 1_700_000_000;
        let address: IpAddr = "192.0.2.10".parse().unwrap();
        for n in 0..ADDRESS_RULE.free_failures - 1 {
            let attempt = SignInAttempt::new(
                &Email::parse(&format!("a{n}@example.org")).unwrap(),
                Some(address),
            );
            assert_eq!(throttle.claim(&attempt, now).await.unwrap(), Ok(()));
        }
        let own = SignInAttempt::new(&Email::parse("own@example.org").unwrap(), Some(address));
        for _ in 0..5 {
            assert_eq!(throttle.claim(&own, now).await.unwrap(), Ok(()));
            throttle.succeeded(&own, now).await.unwrap();
        }
        let address = own.address.clone().unwrap();
        assert_eq!(
            failures(&throttle, Scope::Address, &address).await,
            ADDRESS_RULE.free_failures - 1
        );
    }
}
