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
//! The counters live in the database, or in Redis when the engine has one (several instances),
//! behind [`ThrottleCounters`] (`throttle_counters.rs`); this file holds the rules.

use std::net::IpAddr;

use sha2::{Digest, Sha256};
use std::sync::Arc;

use crate::base::email::Email;
pub use crate::sign_in::throttle_counters::ThrottleRule;
use crate::sign_in::throttle_counters::{Scope, ThrottleCounters};
use crate::ErrorCode;

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
    counters: Arc<dyn ThrottleCounters>,
    account_rule: ThrottleRule,
    address_rule: ThrottleRule,
    registration_rule: ThrottleRule,
}

impl SignInThrottle {
    pub fn new(counters: Arc<dyn ThrottleCounters>) -> Self {
        Self::with_rules(counters, ACCOUNT_RULE, ADDRESS_RULE)
    }

    pub fn with_rules(
        counters: Arc<dyn ThrottleCounters>,
        account_rule: ThrottleRule,
        address_rule: ThrottleRule,
    ) -> Self {
        Self {
            counters,
            account_rule,
            address_rule,
            registration_rule: REGISTRATION_RULE,
        }
    }

    fn rule(&self, scope: Scope) -> ThrottleRule {
        match scope {
            Scope::Account => self.account_rule,
            Scope::Address => self.address_rule,
            Scope::Registration => self.registration_rule,
        }
    }

    fn throttled(wait: Option<i64>) -> Result<(), Throttled> {
        match wait {
            None => Ok(()),
            Some(wait) => Err(Throttled {
                retry_after: wait.max(1),
            }),
        }
    }

    /// Claims one password check for `attempt`: `Err(Throttled)` when the account or the
    /// address must wait. The claim counts as a failure until [`SignInThrottle::succeeded`].
    pub async fn claim(
        &self,
        attempt: &SignInAttempt,
        now: i64,
    ) -> Result<Result<(), Throttled>, ErrorCode> {
        let keys: Vec<_> = attempt
            .keys()
            .map(|(scope, key)| (scope, key, self.rule(scope)))
            .collect();
        Ok(Self::throttled(self.counters.claim(&keys, now).await?))
    }

    /// The try was claimed but its password never checked (the hasher was busy, or the
    /// database failed): the account and the address get it back, and the wait it started, so
    /// an overloaded server does not count its own refusals as wrong passwords.
    pub async fn not_checked(&self, attempt: &SignInAttempt, now: i64) -> Result<(), ErrorCode> {
        let keys: Vec<_> = attempt.keys().collect();
        self.counters.give_back(&keys, now).await
    }

    /// The password was right: the account starts over; the address gets this try back and
    /// the wait it started, but keeps its other failures (an attacker's own account must not
    /// wash its address clean: the next failure brings the long wait back).
    pub async fn succeeded(&self, attempt: &SignInAttempt, now: i64) -> Result<(), ErrorCode> {
        self.counters
            .succeeded(&attempt.account, attempt.address.as_deref(), now)
            .await
    }

    /// Claims one registration from `address` (claimed before its password is hashed, like a
    /// sign-in): `Err(Throttled)` when the address must wait. It stays counted when it
    /// succeeds.
    pub async fn claim_registration(
        &self,
        address: IpAddr,
        now: i64,
    ) -> Result<Result<(), Throttled>, ErrorCode> {
        let key = address_key(address);
        let keys = [(Scope::Registration, key.as_str(), self.registration_rule)];
        Ok(Self::throttled(self.counters.claim(&keys, now).await?))
    }

    /// A registration was claimed but its password never hashed (the hasher was busy): the
    /// address gets it back, as [`SignInThrottle::not_checked`] does for a sign-in.
    pub async fn registration_not_checked(
        &self,
        address: IpAddr,
        now: i64,
    ) -> Result<(), ErrorCode> {
        let key = address_key(address);
        self.counters
            .give_back(&[(Scope::Registration, key.as_str())], now)
            .await
    }

    /// Drops counters whose window has long ended (in Redis they expire by themselves).
    pub async fn purge_expired(&self, now: i64) -> Result<u64, ErrorCode> {
        let longest = self
            .account_rule
            .window
            .max(self.address_rule.window)
            .max(self.registration_rule.window);
        self.counters.purge_expired(longest, now).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign_in::throttle_counters::{DatabaseThrottleCounters, RedisThrottleCounters};
    use crate::store::redis::Redis;

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
        let counters: Arc<dyn ThrottleCounters> = match crate::test_support::test_redis_url() {
            Some(url) => Arc::new(RedisThrottleCounters::new(
                Redis::connect(&url, &crate::store::redis::test_prefix())
                    .await
                    .unwrap(),
            )),
            None => Arc::new(DatabaseThrottleCounters::new(pool)),
        };
        SignInThrottle::with_rules(counters, account_rule, ADDRESS_RULE)
    }

    /// The failures counted on `key`, wherever the throttle keeps them.
    async fn failures(throttle: &SignInThrottle, scope: Scope, key: &str) -> i64 {
        throttle.counters.failures(scope, key).await.unwrap()
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
