//! Renewal leases across the callers of one process and across instances: one lock per account
//! in the process, and behind [`SharedLeases`] the leases that stand for it across instances
//! (Redis' [`RedisLeases`], or [`DatabaseLeaseOnly`] where the database lease alone decides).
//! `Engine::open` chooses one; `accounts/upkeep.rs` says how the leases and the database's fence work
//! together.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use async_trait::async_trait;
use redis::{RedisResult, Script};

use crate::store::redis::{millis_until, Redis};
use crate::ErrorCode;

/// One lock per account for the callers of one process, and with Redis the leases that stand
/// for them across instances (see the module doc).
#[derive(Clone)]
pub struct RenewalLocks {
    local: Arc<Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>>,
    shared: Arc<dyn SharedLeases>,
}

/// Where an app read stands at an account's Redis lease.
pub enum Gate {
    /// No Redis: the database lease alone.
    Open,
    /// This read holds the Redis lease (with this token) until it gives it back.
    Held(String),
    /// Another read, here or on another instance, holds it.
    Busy,
}

fn redis_error(e: redis::RedisError) -> ErrorCode {
    tracing::error!(error = %e, "a renewal lease in Redis failed");
    ErrorCode::Unknown
}

pub(crate) fn lease_name(account_id: i64) -> String {
    format!("renewal:{account_id}")
}

impl RenewalLocks {
    /// The locks of one engine; across instances through `shared`.
    pub fn new(shared: Arc<dyn SharedLeases>) -> Self {
        Self {
            local: Default::default(),
            shared,
        }
    }

    pub(crate) fn of(&self, account_id: i64) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.local.lock().unwrap_or_else(|e| e.into_inner());
        // Locks nobody waits on are dropped as the map is used, so it stays small.
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        locks.entry(account_id).or_default().clone()
    }

    /// Takes the account's shared lease until `until` if there is one to take and it is free.
    pub(crate) async fn enter(
        &self,
        account_id: i64,
        now: i64,
        until: i64,
    ) -> Result<Gate, ErrorCode> {
        self.shared.enter(account_id, now, until).await
    }

    /// Gives the account's shared lease back if `gate` holds it (a failure is only logged: the
    /// lease runs out by itself).
    pub(crate) async fn leave(&self, account_id: i64, gate: Gate) {
        if let Gate::Held(token) = gate {
            self.shared.leave(account_id, &token).await;
        }
    }

    /// Whether someone holds the account's shared lease.
    pub(crate) async fn busy(&self, account_id: i64) -> Result<bool, ErrorCode> {
        self.shared.busy(account_id).await
    }
}

/// The leases that stand for the per-account locks across instances.
#[async_trait]
pub trait SharedLeases: Send + Sync {
    /// Takes the account's lease until `until` when free: [`Gate::Held`], else [`Gate::Busy`];
    /// [`Gate::Open`] when there is nothing to take (one instance: the database lease alone).
    async fn enter(&self, account_id: i64, now: i64, until: i64) -> Result<Gate, ErrorCode>;
    /// Gives the lease back if `token` still holds it.
    async fn leave(&self, account_id: i64, token: &str);
    /// Whether someone holds the account's lease.
    async fn busy(&self, account_id: i64) -> Result<bool, ErrorCode>;
}

/// Without Redis: the database lease alone decides, and the process's own locks wait.
pub struct DatabaseLeaseOnly;

#[async_trait]
impl SharedLeases for DatabaseLeaseOnly {
    async fn enter(&self, _account_id: i64, _now: i64, _until: i64) -> Result<Gate, ErrorCode> {
        Ok(Gate::Open)
    }

    async fn leave(&self, _account_id: i64, _token: &str) {}

    async fn busy(&self, _account_id: i64) -> Result<bool, ErrorCode> {
        Ok(false)
    }
}

/// Leases in Redis (`SET NX PX`, given back by compare-and-delete), shared by every instance.
pub struct RedisLeases {
    redis: Redis,
}

impl RedisLeases {
    pub fn new(redis: Redis) -> Self {
        Self { redis }
    }
}

#[async_trait]
impl SharedLeases for RedisLeases {
    async fn enter(&self, account_id: i64, now: i64, until: i64) -> Result<Gate, ErrorCode> {
        let token = crate::flows::flow::FlowId::random().to_string();
        let got = lease_acquire(&self.redis, &lease_name(account_id), &token, now, until)
            .await
            .map_err(redis_error)?;
        Ok(if got { Gate::Held(token) } else { Gate::Busy })
    }

    async fn leave(&self, account_id: i64, token: &str) {
        if let Err(e) = lease_release(&self.redis, &lease_name(account_id), token).await {
            redis_error(e);
        }
    }

    async fn busy(&self, account_id: i64) -> Result<bool, ErrorCode> {
        lease_held(&self.redis, &lease_name(account_id))
            .await
            .map_err(redis_error)
    }
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
}
