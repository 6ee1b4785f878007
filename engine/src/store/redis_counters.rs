//! The Redis side of the counters and leases several instances share (see `redis_store.rs` for
//! the connection and the rules every key follows): the first-factor throttle
//! (`sign_in_throttle.rs`), the second-factor claims (`second_factor_attempts.rs`) and the renewal leases
//! (`upkeep.rs`). Each operation that reads and writes is one Lua script, so it is atomic
//! across instances; times inside values come from the engine's clock.

use std::sync::LazyLock;

use redis::{RedisResult, Script};

use crate::sign_in::throttle::ThrottleRule;
use crate::store::redis::{millis_until, Redis};

/// Extra life for a throttle key past its window's end (instances' clocks may differ a little;
/// counters of a finished window impose nothing whatever their key's age).
const THROTTLE_GRACE_MS: i64 = 60_000;

/// Claims one try against every key of an attempt, or none of them.
///
/// KEYS: the attempt's counters (account, then address). ARGV[1]: now; then for each key its
/// rule: free failures, first wait, max wait, max failures per window, window. A counter is a
/// hash (`f` failures, `w` window start, `n` next try at). Answers 0 when the try was counted
/// on every key, or the longest wait (seconds, > 0) any key imposes, writing nothing then (so
/// hammering a waiting account does not extend its wait). The rules are the database's
/// (`SignInThrottle::wait` and `ThrottleRule::wait_after`).
static THROTTLE_CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local now = tonumber(ARGV[1])
local current = {}
local longest = 0
for i, key in ipairs(KEYS) do
  local base = 1 + (i - 1) * 5
  local cap, window = tonumber(ARGV[base + 4]), tonumber(ARGV[base + 5])
  local c = redis.call('HMGET', key, 'f', 'w', 'n')
  local f, w, n = tonumber(c[1]), tonumber(c[2]), tonumber(c[3])
  if f == nil or w == nil or n == nil or now - w >= window then
    f, w, n = 0, now, now
  end
  local wait = 0
  if f >= cap then
    wait = w + window - now
  elseif now < n then
    wait = n - now
  end
  if wait > longest then longest = wait end
  current[i] = {f, w}
end
if longest > 0 then return longest end
for i, key in ipairs(KEYS) do
  local base = 1 + (i - 1) * 5
  local free, first, maxw = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  local window = tonumber(ARGV[base + 5])
  local f, w = current[i][1] + 1, current[i][2]
  local wait = 0
  if f >= free then
    wait = math.min(first * 2 ^ math.min(f - free, 30), maxw)
  end
  redis.call('HSET', key, 'f', f, 'w', w, 'n', now + wait)
  redis.call('PEXPIRE', key, math.max((w + window - now) * 1000, 1) + tonumber(ARGV[2 + #KEYS * 5]))
end
return 0",
    )
});

/// A right password. KEYS[1]: the account's counters, dropped; KEYS[2] (if any): the
/// address's, which gets this try back (`f` - 1, not below 0) and the wait it started
/// (`n` = min(n, now)). ARGV[1]: now.
static THROTTLE_SUCCEEDED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('DEL', KEYS[1])
if KEYS[2] then
  local c = redis.call('HMGET', KEYS[2], 'f', 'n')
  if c[1] and c[2] then
    local f = math.max(tonumber(c[1]) - 1, 0)
    local n = math.min(tonumber(c[2]), tonumber(ARGV[1]))
    redis.call('HSET', KEYS[2], 'f', f, 'n', n)
  end
end
return 1",
    )
});

/// A try that was claimed but whose password was never checked (the hasher was busy, the
/// database failed): every key in KEYS gets it back (`f` - 1, not below 0) and the wait it
/// started (`n` = min(n, now)). ARGV[1]: now.
static THROTTLE_GIVE_BACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
for _, key in ipairs(KEYS) do
  local c = redis.call('HMGET', key, 'f', 'n')
  if c[1] and c[2] then
    local f = math.max(tonumber(c[1]) - 1, 0)
    local n = math.min(tonumber(c[2]), tonumber(ARGV[1]))
    redis.call('HSET', key, 'f', f, 'n', n)
  end
end
return 1",
    )
});

/// See [`THROTTLE_GIVE_BACK`].
pub(crate) async fn throttle_give_back(
    redis: &Redis,
    keys: &[String],
    now: i64,
) -> RedisResult<()> {
    let mut script = THROTTLE_GIVE_BACK.prepare_invoke();
    for key in keys {
        script.key(key);
    }
    let _: i64 = script.arg(now).invoke_async(&mut redis.conn()).await?;
    Ok(())
}

/// Claims a try against `keys` (full key names with their rules) at `now`: `None` when it
/// was counted, `Some(wait)` when one of them must wait first.
pub(crate) async fn throttle_claim(
    redis: &Redis,
    keys: &[(String, ThrottleRule)],
    now: i64,
) -> RedisResult<Option<i64>> {
    let mut script = THROTTLE_CLAIM.prepare_invoke();
    script.arg(now);
    for (key, rule) in keys {
        script
            .key(key)
            .arg(rule.free_failures)
            .arg(rule.first_wait)
            .arg(rule.max_wait)
            .arg(rule.max_failures_per_window)
            .arg(rule.window);
    }
    script.arg(THROTTLE_GRACE_MS);
    let wait: i64 = script.invoke_async(&mut redis.conn()).await?;
    Ok((wait > 0).then_some(wait))
}

/// See [`THROTTLE_SUCCEEDED`].
pub(crate) async fn throttle_succeeded(
    redis: &Redis,
    account: &str,
    address: Option<&str>,
    now: i64,
) -> RedisResult<()> {
    let mut script = THROTTLE_SUCCEEDED.key(account);
    if let Some(address) = address {
        script.key(address);
    }
    let _: i64 = script.arg(now).invoke_async(&mut redis.conn()).await?;
    Ok(())
}

/// A throttle key's counters as stored (failures, window start, next try at), for tests.
#[cfg(test)]
pub(crate) async fn throttle_counters(
    redis: &Redis,
    key: &str,
) -> RedisResult<Option<(i64, i64, i64)>> {
    let c: (Option<i64>, Option<i64>, Option<i64>) = redis::cmd("HMGET")
        .arg(key)
        .arg("f")
        .arg("w")
        .arg("n")
        .query_async(&mut redis.conn())
        .await?;
    Ok(match c {
        (Some(f), Some(w), Some(n)) => Some((f, w, n)),
        _ => None,
    })
}

/// How long an account's second-factor failure count outlives its last claim. The database
/// keeps it until the next right answer; here a day without guesses also starts it over, so
/// keys of accounts nobody signs in to again do not pile up. The longest back-off is 15
/// minutes, so someone guessing keeps the count alive; one who pauses a day gets the three
/// free tries back (three codes in a million per day).
pub const SECOND_FACTOR_FAILURES_TTL_SECONDS: i64 = 24 * 3600;

/// Claims one second-factor check (`second_factor_attempts.rs`). KEYS[1]: the account's count
/// (`f` wrong in a row, `l` last claim at). ARGV: now, free failures, first wait, max wait,
/// expiry in ms. Answers 0 when the claim was counted (`f` + 1, `l` = now), else the seconds
/// left to wait, writing nothing. The rule is `second_factor_attempts::backoff_after`.
static SECOND_FACTOR_CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local now = tonumber(ARGV[1])
local free, first, maxw = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local c = redis.call('HMGET', KEYS[1], 'f', 'l')
local f, l = tonumber(c[1]), tonumber(c[2])
if f == nil or l == nil then
  f = 0
else
  local wait = 0
  if f >= free then
    wait = math.min(first * 2 ^ math.min(f - free, 20), maxw)
  end
  if now < l + wait then
    return l + wait - now
  end
end
redis.call('HSET', KEYS[1], 'f', f + 1, 'l', now)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 0",
    )
});

/// A claim whose check never happened: the account gets it back (`f` - 1, not below 0).
static SECOND_FACTOR_GIVE_BACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local f = tonumber(redis.call('HGET', KEYS[1], 'f'))
if f and f > 0 then
  redis.call('HSET', KEYS[1], 'f', f - 1)
end
return 1",
    )
});

fn second_factor_key(redis: &Redis, user_id: i64) -> String {
    redis.key(&format!("second_factor_failures:{user_id}"))
}

/// See [`SECOND_FACTOR_CLAIM`]: `None` when counted, `Some(wait)` when the account must wait.
pub(crate) async fn second_factor_claim(
    redis: &Redis,
    user_id: i64,
    now: i64,
) -> RedisResult<Option<i64>> {
    use crate::second_factor::attempts::{
        FIRST_BACKOFF_SECONDS, FREE_FAILURES, MAX_BACKOFF_SECONDS,
    };
    let wait: i64 = SECOND_FACTOR_CLAIM
        .key(second_factor_key(redis, user_id))
        .arg(now)
        .arg(FREE_FAILURES)
        .arg(FIRST_BACKOFF_SECONDS)
        .arg(MAX_BACKOFF_SECONDS)
        .arg(SECOND_FACTOR_FAILURES_TTL_SECONDS * 1000)
        .invoke_async(&mut redis.conn())
        .await?;
    Ok((wait > 0).then_some(wait))
}

/// See [`SECOND_FACTOR_GIVE_BACK`].
pub(crate) async fn second_factor_give_back(redis: &Redis, user_id: i64) -> RedisResult<()> {
    let _: i64 = SECOND_FACTOR_GIVE_BACK
        .key(second_factor_key(redis, user_id))
        .invoke_async(&mut redis.conn())
        .await?;
    Ok(())
}

/// A right answer: the account starts over.
pub(crate) async fn second_factor_clear(redis: &Redis, user_id: i64) -> RedisResult<()> {
    let _: i64 = redis::cmd("DEL")
        .arg(second_factor_key(redis, user_id))
        .query_async(&mut redis.conn())
        .await?;
    Ok(())
}

/// Gives a lease back only if `ARGV[1]` still holds it (a holder whose lease ran out and was
/// taken over must not end the new holder's).
static LEASE_RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0",
    )
});

fn lease_key(redis: &Redis, name: &str) -> String {
    redis.key(&format!("lease:{name}"))
}

/// Takes lease `name` for `token` until `until` (engine clock, from `now`) if nobody holds it:
/// `SET key token NX PX ms`. `true` when this call got it.
pub(crate) async fn lease_acquire(
    redis: &Redis,
    name: &str,
    token: &str,
    now: i64,
    until: i64,
) -> RedisResult<bool> {
    let set: Option<String> = redis::cmd("SET")
        .arg(lease_key(redis, name))
        .arg(token)
        .arg("NX")
        .arg("PX")
        .arg(millis_until(now, until))
        .query_async(&mut redis.conn())
        .await?;
    Ok(set.is_some())
}

/// Gives lease `name` back if `token` holds it; `true` if it did.
pub(crate) async fn lease_release(redis: &Redis, name: &str, token: &str) -> RedisResult<bool> {
    let released: i64 = LEASE_RELEASE
        .key(lease_key(redis, name))
        .arg(token)
        .invoke_async(&mut redis.conn())
        .await?;
    Ok(released == 1)
}

/// Whether anyone holds lease `name`.
pub(crate) async fn lease_held(redis: &Redis, name: &str) -> RedisResult<bool> {
    let exists: i64 = redis::cmd("EXISTS")
        .arg(lease_key(redis, name))
        .query_async(&mut redis.conn())
        .await?;
    Ok(exists == 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign_in::throttle::{ACCOUNT_RULE, ADDRESS_RULE};
    use crate::store::redis::test_redis;

    const NOW: i64 = 1_700_000_000;

    #[tokio::test]
    async fn a_lease_is_held_once_and_only_its_holder_gives_it_back() {
        let Some(redis) = test_redis("redis lease").await else {
            return;
        };
        assert!(lease_acquire(&redis, "renewal:1", "a", NOW, NOW + 60)
            .await
            .unwrap());
        assert!(!lease_acquire(&redis, "renewal:1", "b", NOW, NOW + 60)
            .await
            .unwrap());
        assert!(lease_acquire(&redis, "renewal:2", "b", NOW, NOW + 60)
            .await
            .unwrap());
        assert!(lease_held(&redis, "renewal:1").await.unwrap());
        assert!(!lease_release(&redis, "renewal:1", "b").await.unwrap());
        assert!(lease_held(&redis, "renewal:1").await.unwrap());
        assert!(lease_release(&redis, "renewal:1", "a").await.unwrap());
        assert!(!lease_held(&redis, "renewal:1").await.unwrap());
        assert!(lease_acquire(&redis, "renewal:1", "b", NOW, NOW + 60)
            .await
            .unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_claims_are_each_counted_once_and_a_burst_is_throttled() {
        let Some(redis) = test_redis("redis throttle burst").await else {
            return;
        };
        let keys = vec![
            (redis.key("throttle:account:x"), ACCOUNT_RULE),
            (redis.key("throttle:address:y"), ADDRESS_RULE),
        ];
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (redis, keys) = (redis.clone(), keys.clone());
                tokio::spawn(async move { throttle_claim(&redis, &keys, NOW).await.unwrap() })
            })
            .collect();
        let mut counted = 0;
        for task in tasks {
            counted += usize::from(task.await.unwrap().is_none());
        }
        // Three free tries; the third starts a one-second wait, which stops the rest.
        assert_eq!(counted as i64, ACCOUNT_RULE.free_failures);
        let account = throttle_counters(&redis, &keys[0].0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(account, (3, NOW, NOW + 1));
        let address = throttle_counters(&redis, &keys[1].0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(address, (3, NOW, NOW), "both keys or neither");
    }

    #[tokio::test]
    async fn second_factor_claims_wait_out_the_backoff_and_clear() {
        let Some(redis) = test_redis("redis second-factor claims").await else {
            return;
        };
        for _ in 0..3 {
            assert_eq!(second_factor_claim(&redis, 7, NOW).await.unwrap(), None);
        }
        assert_eq!(
            second_factor_claim(&redis, 7, NOW + 1).await.unwrap(),
            Some(4)
        );
        assert_eq!(
            second_factor_claim(&redis, 8, NOW).await.unwrap(),
            None,
            "per account"
        );
        second_factor_give_back(&redis, 7).await.unwrap();
        assert_eq!(second_factor_claim(&redis, 7, NOW + 1).await.unwrap(), None);
        second_factor_clear(&redis, 7).await.unwrap();
        second_factor_clear(&redis, 7).await.unwrap();
        assert_eq!(second_factor_claim(&redis, 7, NOW + 1).await.unwrap(), None);
    }
}
