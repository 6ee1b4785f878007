//! Pending flows in Redis, shared by every instance (`STEPGATE_REDIS_URL`); the database's
//! twin is [`crate::flows::store::SqliteFlowStore`].

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use redis::Script;

use crate::base::clock::Clock;
use crate::base::crypto::SecretBox;
use crate::flows::flow::{Flow, FlowId, FlowKind};
use crate::flows::store::{state_associated_data, FlowStore, StoreError, StoreResult};
use crate::store::db::Conn;
use crate::store::redis::{millis_until, Redis};
use crate::store::reseal::{judge, Cursor, ResealPass, Verdict};

/// How long an expired flow is kept after its deadline, so a late submit still reads
/// `flow_expired` (as the database store answers until the next purge) rather than nothing.
pub const FLOW_GRACE_SECONDS: i64 = 600;

// A flow is one hash: short field names, the sealed state as raw bytes, the view as JSON.
const KIND: &str = "k";
const PROVIDER: &str = "p";
const STEP: &str = "s";
const OWNER: &str = "o";
const CREATED_AT: &str = "c";
const EXPIRES_AT: &str = "e";
const ATTEMPTS: &str = "a";
const STATE: &str = "x";
const VIEW: &str = "v";

/// Creates the flow's hash (ARGV[1]: expiry in ms, then field/value pairs) unless the key
/// exists: flow ids are random, so an existing key is a bug, never overwritten.
static INSERT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1",
    )
});

/// Saves a step (ARGV: expiry in ms, step, state, expires_at, '1' + view or '0') only if the
/// flow is still there: a flow consumed or expired meanwhile is not brought back. The attempt
/// counter is left as it is.
static UPDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 's', ARGV[2], 'x', ARGV[3], 'e', ARGV[4])
if ARGV[5] == '1' then
  redis.call('HSET', KEYS[1], 'v', ARGV[6])
else
  redis.call('HDEL', KEYS[1], 'v')
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1",
    )
});

/// One more wrong answer, counted only on a flow that exists (nil otherwise).
static RECORD_ATTEMPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
return redis.call('HINCRBY', KEYS[1], 'a', 1)",
    )
});

/// Replaces a flow's sealed state (ARGV: the state read, the state re-sealed) only if it is
/// still the one read: a step saved meanwhile is newer (compare-and-set). The key's expiry is
/// left as it is.
static RESEAL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], 'x') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'x', ARGV[2])
return 1",
    )
});

/// `text` with the characters `SCAN MATCH` reads as a pattern escaped.
fn glob_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Pending flows in Redis: one hash per flow under `<prefix>flow:<id>`, expiring
/// [`FLOW_GRACE_SECONDS`] after the flow's own deadline. Removing is an atomic take (`DEL`
/// answers 1 exactly once), so of several instances completing one flow only one succeeds.
#[derive(Clone)]
pub struct RedisFlowStore {
    redis: Redis,
    clock: Arc<dyn Clock>,
}

impl RedisFlowStore {
    pub fn new(redis: Redis, clock: Arc<dyn Clock>) -> Self {
        Self { redis, clock }
    }

    fn key(&self, id: &FlowId) -> String {
        self.redis.key(&format!("flow:{id}"))
    }

    /// The key's time to live for a flow due at `expires_at`.
    fn ttl_ms(&self, expires_at: i64) -> i64 {
        millis_until(
            self.clock.now(),
            expires_at.saturating_add(FLOW_GRACE_SECONDS),
        )
    }
}

fn view_json(flow: &Flow) -> StoreResult<Option<String>> {
    Ok(flow.view.as_ref().map(serde_json::to_string).transpose()?)
}

fn text(fields: &HashMap<String, Vec<u8>>, name: &'static str) -> StoreResult<String> {
    let bytes = fields.get(name).ok_or(StoreError::Corrupt(name))?;
    String::from_utf8(bytes.clone()).map_err(|_| StoreError::Corrupt(name))
}

fn number(fields: &HashMap<String, Vec<u8>>, name: &'static str) -> StoreResult<i64> {
    text(fields, name)?
        .parse()
        .map_err(|_| StoreError::Corrupt(name))
}

fn flow_from_hash(id: FlowId, fields: HashMap<String, Vec<u8>>) -> StoreResult<Flow> {
    let kind = text(&fields, KIND)?;
    let owner = fields
        .contains_key(OWNER)
        .then(|| text(&fields, OWNER))
        .transpose()?;
    let view = if fields.contains_key(VIEW) {
        Some(serde_json::from_str(&text(&fields, VIEW)?)?)
    } else {
        None
    };
    Ok(Flow {
        id,
        kind: FlowKind::parse(&kind).ok_or(StoreError::Corrupt(KIND))?,
        provider: text(&fields, PROVIDER)?,
        step: text(&fields, STEP)?,
        owner,
        created_at: number(&fields, CREATED_AT)?,
        expires_at: number(&fields, EXPIRES_AT)?,
        attempts: u32::try_from(number(&fields, ATTEMPTS)?)
            .map_err(|_| StoreError::Corrupt(ATTEMPTS))?,
        state: fields.get(STATE).cloned().unwrap_or_default(),
        view,
    })
}

#[async_trait]
impl FlowStore for RedisFlowStore {
    async fn insert(&self, flow: &Flow) -> StoreResult<()> {
        let mut script = INSERT.key(self.key(&flow.id));
        script
            .arg(self.ttl_ms(flow.expires_at))
            .arg(KIND)
            .arg(flow.kind.as_str())
            .arg(PROVIDER)
            .arg(&flow.provider)
            .arg(STEP)
            .arg(&flow.step)
            .arg(CREATED_AT)
            .arg(flow.created_at)
            .arg(EXPIRES_AT)
            .arg(flow.expires_at)
            .arg(ATTEMPTS)
            .arg(flow.attempts)
            .arg(STATE)
            .arg(flow.state.as_slice());
        if let Some(owner) = &flow.owner {
            script.arg(OWNER).arg(owner);
        }
        if let Some(view) = view_json(flow)? {
            script.arg(VIEW).arg(view);
        }
        let created: i64 = script.invoke_async(&mut self.redis.conn()).await?;
        if created != 1 {
            return Err(StoreError::Corrupt("a flow with this id already exists"));
        }
        Ok(())
    }

    async fn get(&self, id: &FlowId) -> StoreResult<Option<Flow>> {
        let fields: HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
            .arg(self.key(id))
            .query_async(&mut self.redis.conn())
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        flow_from_hash(*id, fields).map(Some)
    }

    async fn update(&self, flow: &Flow) -> StoreResult<()> {
        let view = view_json(flow)?;
        let mut script = UPDATE.key(self.key(&flow.id));
        script
            .arg(self.ttl_ms(flow.expires_at))
            .arg(&flow.step)
            .arg(flow.state.as_slice())
            .arg(flow.expires_at);
        match view {
            Some(view) => script.arg("1").arg(view),
            None => script.arg("0"),
        };
        // Like the database store's UPDATE, saving a flow that is gone changes nothing.
        let _saved: i64 = script.invoke_async(&mut self.redis.conn()).await?;
        Ok(())
    }

    async fn record_attempt(&self, id: &FlowId) -> StoreResult<Option<u32>> {
        let attempts: Option<i64> = RECORD_ATTEMPT
            .key(self.key(id))
            .invoke_async(&mut self.redis.conn())
            .await?;
        attempts
            .map(|n| u32::try_from(n).map_err(|_| StoreError::Corrupt(ATTEMPTS)))
            .transpose()
    }

    async fn remove(&self, id: &FlowId) -> StoreResult<bool> {
        let removed: i64 = redis::cmd("DEL")
            .arg(self.key(id))
            .query_async(&mut self.redis.conn())
            .await?;
        Ok(removed == 1)
    }

    /// Not in the database's transaction: the runner removes the flow after its commit.
    async fn remove_in(&self, _conn: &mut Conn, _id: &FlowId) -> StoreResult<Option<bool>> {
        Ok(None)
    }

    /// Nothing to do: each flow's key expires by itself ([`FLOW_GRACE_SECONDS`] after its
    /// deadline).
    async fn purge_expired(&self, _now: i64) -> StoreResult<u64> {
        Ok(0)
    }

    /// Walks the flows with `SCAN` (its cursor is the pass's); a flow met twice (`SCAN` may
    /// return a key again) is under the newest key the second time and skipped.
    async fn reseal_batch(
        &self,
        secrets: &SecretBox,
        pass: &mut ResealPass,
        limit: usize,
    ) -> StoreResult<usize> {
        let cursor = match &pass.after {
            Cursor::Done => return Ok(0),
            Cursor::Text(cursor) => cursor.clone(),
            _ => "0".to_owned(),
        };
        let prefix = self.redis.key("flow:");
        let (next, keys): (String, Vec<String>) = redis::cmd("SCAN")
            .arg(&cursor)
            .arg("MATCH")
            .arg(format!("{}*", glob_escaped(&prefix)))
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut self.redis.conn())
            .await?;
        for key in &keys {
            let sealed: Option<Vec<u8>> = redis::cmd("HGET")
                .arg(key)
                .arg(STATE)
                .query_async(&mut self.redis.conn())
                .await?;
            let Some(sealed) = sealed.filter(|s| !secrets.is_under_newest(s)) else {
                continue;
            };
            let id = key.strip_prefix(&prefix).unwrap_or(key);
            if let Verdict::Reseal(resealed) =
                judge(secrets, pass, &sealed, &state_associated_data(id))
            {
                let replaced: i64 = RESEAL
                    .key(key)
                    .arg(sealed.as_slice())
                    .arg(resealed.as_slice())
                    .invoke_async(&mut self.redis.conn())
                    .await?;
                pass.count.resealed += u64::from(replaced == 1);
            }
        }
        pass.after = if next == "0" {
            Cursor::Done
        } else {
            Cursor::Text(next)
        };
        Ok(keys.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::clock::ManualClock;
    use crate::flows::flow::DEFAULT_FLOW_TTL;
    use crate::store::redis::test_redis;

    const NOW: i64 = 1_700_000_000;

    async fn store(test: &str) -> Option<(RedisFlowStore, ManualClock)> {
        let redis = test_redis(test).await?;
        let clock = ManualClock::at(NOW);
        Some((RedisFlowStore::new(redis, Arc::new(clock.clone())), clock))
    }

    fn code_step_flow(now: i64) -> Flow {
        let mut flow = Flow::new(
            FlowKind::Login,
            "local",
            "second_factor",
            Some("owner-hash".into()),
            now,
            DEFAULT_FLOW_TTL,
        );
        // Every byte value, not only valid UTF-8: the state is sealed (random-looking) bytes.
        flow.state = (0..=255u8).collect();
        flow
    }

    async fn ttl_ms(store: &RedisFlowStore, id: &FlowId) -> i64 {
        redis::cmd("PTTL")
            .arg(store.key(id))
            .query_async(&mut store.redis.conn())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_stored_flow_is_read_back_with_every_field() {
        let Some((store, _)) = store("redis flow read back").await else {
            return;
        };
        let flow = code_step_flow(NOW);
        store.insert(&flow).await.unwrap();
        assert_eq!(store.get(&flow.id).await.unwrap(), Some(flow.clone()));
        // A second store on the same Redis (another instance) reads the same flow.
        let other = RedisFlowStore::new(store.redis.clone(), Arc::new(ManualClock::at(NOW)));
        assert_eq!(other.get(&flow.id).await.unwrap(), Some(flow.clone()));

        let mut anonymous = code_step_flow(NOW);
        anonymous.owner = None;
        anonymous.state = Vec::new();
        anonymous.kind = FlowKind::Connect;
        store.insert(&anonymous).await.unwrap();
        assert_eq!(store.get(&anonymous.id).await.unwrap(), Some(anonymous));
        assert_eq!(store.get(&FlowId::random()).await.unwrap(), None);
        assert!(
            store.insert(&flow).await.is_err(),
            "an existing flow is never overwritten"
        );
    }

    #[tokio::test]
    async fn a_flow_key_lives_until_ten_minutes_past_its_deadline_by_the_engine_clock() {
        let Some((store, clock)) = store("redis flow expiry").await else {
            return;
        };
        let flow = code_step_flow(NOW);
        store.insert(&flow).await.unwrap();
        let ttl = ttl_ms(&store, &flow.id).await;
        let expected = (DEFAULT_FLOW_TTL.as_secs() as i64 + FLOW_GRACE_SECONDS) * 1000;
        assert!(expected - 5_000 < ttl && ttl <= expected, "{ttl}");
        // Past its deadline by the engine's clock it still reads back (as expired) for the grace.
        clock.advance(DEFAULT_FLOW_TTL.as_secs() as i64 + 1);
        let read = store.get(&flow.id).await.unwrap().unwrap();
        assert!(read.is_expired(clock.now()));
        assert_eq!(store.purge_expired(clock.now()).await.unwrap(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn attempts_are_counted_atomically_per_flow() {
        let Some((store, _)) = store("redis flow attempts").await else {
            return;
        };
        let flow = code_step_flow(NOW);
        let other = code_step_flow(NOW);
        store.insert(&flow).await.unwrap();
        store.insert(&other).await.unwrap();
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (store, id) = (store.clone(), flow.id);
                tokio::spawn(async move { store.record_attempt(&id).await.unwrap().unwrap() })
            })
            .collect();
        let mut counts = Vec::new();
        for task in tasks {
            counts.push(task.await.unwrap());
        }
        counts.sort();
        assert_eq!(
            counts,
            (1..=20).collect::<Vec<u32>>(),
            "every attempt gets its own number"
        );
        assert_eq!(store.get(&flow.id).await.unwrap().unwrap().attempts, 20);
        assert_eq!(store.get(&other.id).await.unwrap().unwrap().attempts, 0);
        let missing = FlowId::random();
        assert_eq!(store.record_attempt(&missing).await.unwrap(), None);
        assert_eq!(
            store.get(&missing).await.unwrap(),
            None,
            "counting on a missing flow creates nothing"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_flow_can_be_consumed_only_once_even_concurrently() {
        let Some((store, _)) = store("redis flow consume once").await else {
            return;
        };
        for _ in 0..10 {
            let flow = code_step_flow(NOW);
            store.insert(&flow).await.unwrap();
            let tasks: Vec<_> = (0..8)
                .map(|_| {
                    let (store, id) = (store.clone(), flow.id);
                    tokio::spawn(async move { store.remove(&id).await.unwrap() })
                })
                .collect();
            let mut taken = 0;
            for task in tasks {
                taken += usize::from(task.await.unwrap());
            }
            assert_eq!(taken, 1);
            assert_eq!(store.get(&flow.id).await.unwrap(), None);
        }
    }

    #[tokio::test]
    async fn update_saves_the_new_step_state_view_and_expiry_but_never_revives_a_flow() {
        let Some((store, clock)) = store("redis flow update").await else {
            return;
        };
        let mut flow = code_step_flow(NOW);
        store.insert(&flow).await.unwrap();
        store.record_attempt(&flow.id).await.unwrap();
        flow.attempts = 1;
        clock.advance(300);
        flow.step = "done".into();
        flow.state = b"other sealed bytes".to_vec();
        flow.expires_at = clock.now() + 1200;
        flow.view = Some(crate::view::StepView::form(Vec::new(), "Done"));
        store.update(&flow).await.unwrap();
        assert_eq!(store.get(&flow.id).await.unwrap(), Some(flow.clone()));
        let ttl = ttl_ms(&store, &flow.id).await;
        let expected = (1200 + FLOW_GRACE_SECONDS) * 1000;
        assert!(
            expected - 5_000 < ttl && ttl <= expected,
            "the new expiry: {ttl}"
        );
        flow.view = None;
        store.update(&flow).await.unwrap();
        assert_eq!(store.get(&flow.id).await.unwrap(), Some(flow.clone()));

        assert!(store.remove(&flow.id).await.unwrap());
        store.update(&flow).await.unwrap();
        assert_eq!(store.get(&flow.id).await.unwrap(), None);
    }
}
