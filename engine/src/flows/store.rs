//! Where flows wait between steps. [`SqliteFlowStore`] keeps them in the database so a flow
//! survives a server restart; other stores (Redis, Postgres) implement the same trait.

use async_trait::async_trait;
use sqlx::Row;

use crate::store::db::{Conn, Pool};
use crate::store::reseal::{self, ResealPass, SealedColumn};

use crate::base::crypto::SecretBox;
use crate::flows::flow::{Flow, FlowId, FlowKind};
use crate::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("flow state: {0}")]
    State(#[from] serde_json::Error),
    #[error("corrupt row: {0}")]
    Corrupt(&'static str),
}

impl From<StoreError> for ErrorCode {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "flow store failed");
        ErrorCode::Unknown
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[async_trait]
pub trait FlowStore: Send + Sync {
    async fn insert(&self, flow: &Flow) -> StoreResult<()>;
    /// The flow with this id, expired or not: the caller decides what expiry means.
    async fn get(&self, id: &FlowId) -> StoreResult<Option<Flow>>;
    /// Saves a flow's step and state after a step succeeded.
    async fn update(&self, flow: &Flow) -> StoreResult<()>;
    /// Counts one wrong answer atomically and returns the new count (`None`: no such flow).
    async fn record_attempt(&self, id: &FlowId) -> StoreResult<Option<u32>>;
    /// Removes a flow; `true` if it was there. Used to consume a flow exactly once.
    async fn remove(&self, id: &FlowId) -> StoreResult<bool>;
    /// Removes a flow on `conn`, in the transaction that stores its result, when flows live in
    /// that database (`Some`: whether it was there); `None` from a store elsewhere (Redis),
    /// whose caller removes it with [`FlowStore::remove`] right after the commit.
    async fn remove_in(&self, conn: &mut Conn, id: &FlowId) -> StoreResult<Option<bool>>;
    /// Drops every flow whose deadline has passed; returns how many.
    async fn purge_expired(&self, now: i64) -> StoreResult<u64>;
    /// One batch of a re-seal pass over the flows' sealed state (`store/reseal.rs`); returns
    /// how many flows it looked at.
    async fn reseal_batch(
        &self,
        secrets: &SecretBox,
        pass: &mut ResealPass,
        limit: usize,
    ) -> StoreResult<usize>;
}

/// What a flow's sealed state is bound to: its id (a state copied onto another flow does not
/// open there).
pub fn state_associated_data(id: &str) -> Vec<u8> {
    format!("flow:{id}").into_bytes()
}

const SEALED_STATE: SealedColumn = SealedColumn {
    table: "flows",
    id: "id",
    id_is_text: true,
    column: "state",
    more_columns: "",
};

#[derive(Clone)]
pub struct SqliteFlowStore {
    pool: Pool,
}

impl SqliteFlowStore {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }
}

fn flow_from_row(row: sqlx::any::AnyRow) -> StoreResult<Flow> {
    let id: String = row.try_get("id")?;
    let kind: String = row.try_get("kind")?;
    let state: Vec<u8> = row.try_get("state")?;
    let attempts: i64 = row.try_get("attempts")?;
    let view: Option<String> = row.try_get("view")?;
    Ok(Flow {
        id: id.parse().map_err(|_| StoreError::Corrupt("id"))?,
        kind: FlowKind::parse(&kind).ok_or(StoreError::Corrupt("kind"))?,
        provider: row.try_get("provider")?,
        step: row.try_get("step")?,
        owner: row.try_get("owner")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        attempts: u32::try_from(attempts).map_err(|_| StoreError::Corrupt("attempts"))?,
        state,
        view: view.as_deref().map(serde_json::from_str).transpose()?,
    })
}

#[async_trait]
impl FlowStore for SqliteFlowStore {
    async fn insert(&self, flow: &Flow) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO flows (id, kind, provider, step, owner, created_at, expires_at, attempts, state, view)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(flow.id.to_string())
        .bind(flow.kind.as_str())
        .bind(&flow.provider)
        .bind(&flow.step)
        .bind(&flow.owner)
        .bind(flow.created_at)
        .bind(flow.expires_at)
        .bind(i64::from(flow.attempts))
        .bind(&flow.state)
        .bind(flow.view.as_ref().map(serde_json::to_string).transpose()?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get(&self, id: &FlowId) -> StoreResult<Option<Flow>> {
        // Reads here run to the end (fetch_all) rather than stop at the first row, so SQLite
        // completes the statement and ends its implicit read transaction at once; the same
        // habit is kept in every store.
        let row = sqlx::query("SELECT * FROM flows WHERE id = $1")
            .bind(id.to_string())
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .next();
        row.map(flow_from_row).transpose()
    }

    async fn update(&self, flow: &Flow) -> StoreResult<()> {
        sqlx::query(
            "UPDATE flows SET step = $1, state = $2, view = $3, expires_at = $4 WHERE id = $5",
        )
        .bind(&flow.step)
        .bind(&flow.state)
        .bind(flow.view.as_ref().map(serde_json::to_string).transpose()?)
        .bind(flow.expires_at)
        .bind(flow.id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn record_attempt(&self, id: &FlowId) -> StoreResult<Option<u32>> {
        let attempts: Option<i64> = sqlx::query_scalar(
            "UPDATE flows SET attempts = attempts + 1 WHERE id = $1 RETURNING attempts",
        )
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .next();
        attempts
            .map(|n| u32::try_from(n).map_err(|_| StoreError::Corrupt("attempts")))
            .transpose()
    }

    async fn remove(&self, id: &FlowId) -> StoreResult<bool> {
        let mut conn = self.pool.acquire().await?;
        Ok(self.remove_in(&mut conn, id).await? == Some(true))
    }

    async fn remove_in(&self, conn: &mut Conn, id: &FlowId) -> StoreResult<Option<bool>> {
        let done = sqlx::query("DELETE FROM flows WHERE id = $1")
            .bind(id.to_string())
            .execute(&mut *conn)
            .await?;
        Ok(Some(done.rows_affected() == 1))
    }

    async fn purge_expired(&self, now: i64) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM flows WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn reseal_batch(
        &self,
        secrets: &SecretBox,
        pass: &mut ResealPass,
        limit: usize,
    ) -> StoreResult<usize> {
        let aad = |row: &sqlx::any::AnyRow| {
            let id: String = row.try_get("id")?;
            Ok(state_associated_data(&id))
        };
        Ok(reseal::reseal_batch(&self.pool, secrets, &SEALED_STATE, aad, pass, limit).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::flow::DEFAULT_FLOW_TTL;
    use crate::store::db;

    async fn store_in(dir: &tempfile::TempDir) -> SqliteFlowStore {
        let pool = db::connect(&db::test_database_url(dir.path()).await)
            .await
            .unwrap();
        SqliteFlowStore::new(pool)
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
        flow.state = b"sealed bytes".to_vec();
        flow
    }

    #[tokio::test]
    async fn a_stored_flow_is_read_back_after_reopening_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let flow = code_step_flow(1_000);
        {
            let store = store_in(&dir).await;
            store.insert(&flow).await.unwrap();
            store.pool.close().await;
        }
        // A new pool on the same file stands for a restarted server process.
        let reopened = store_in(&dir).await;
        assert_eq!(reopened.get(&flow.id).await.unwrap(), Some(flow));
    }

    #[tokio::test]
    async fn attempts_are_counted_atomically_per_flow() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(&dir).await;
        let flow = code_step_flow(1_000);
        let other = code_step_flow(1_000);
        store.insert(&flow).await.unwrap();
        store.insert(&other).await.unwrap();
        let counts = futures_join(&store, &flow.id, 5).await;
        let mut sorted = counts.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            vec![1, 2, 3, 4, 5],
            "every attempt gets its own number"
        );
        assert_eq!(store.get(&flow.id).await.unwrap().unwrap().attempts, 5);
        assert_eq!(store.get(&other.id).await.unwrap().unwrap().attempts, 0);
        assert_eq!(store.record_attempt(&FlowId::random()).await.unwrap(), None);
    }

    async fn futures_join(store: &SqliteFlowStore, id: &FlowId, n: usize) -> Vec<u32> {
        let mut tasks = Vec::new();
        for _ in 0..n {
            let store = store.clone();
            let id = *id;
            tasks.push(tokio::spawn(async move {
                store.record_attempt(&id).await.unwrap().unwrap()
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn expired_flows_are_purged_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(&dir).await;
        let old = code_step_flow(1_000);
        let fresh = code_step_flow(1_500);
        store.insert(&old).await.unwrap();
        store.insert(&fresh).await.unwrap();
        assert_eq!(store.purge_expired(1_000 + 600).await.unwrap(), 1);
        assert_eq!(store.get(&old.id).await.unwrap(), None);
        assert!(store.get(&fresh.id).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_flow_can_be_consumed_only_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(&dir).await;
        let flow = code_step_flow(1_000);
        store.insert(&flow).await.unwrap();
        assert!(store.remove(&flow.id).await.unwrap());
        assert!(!store.remove(&flow.id).await.unwrap());
    }

    #[tokio::test]
    async fn update_saves_the_new_step_and_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(&dir).await;
        let mut flow = code_step_flow(1_000);
        store.insert(&flow).await.unwrap();
        flow.step = "done".into();
        flow.state = b"other sealed bytes".to_vec();
        flow.view = Some(crate::view::StepView::form(Vec::new(), "Done"));
        store.update(&flow).await.unwrap();
        assert_eq!(store.get(&flow.id).await.unwrap(), Some(flow));
    }
}
