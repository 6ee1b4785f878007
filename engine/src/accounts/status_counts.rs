//! How many connected accounts have each status: the `stepgate_accounts` gauge
//! (`base/metrics.rs`), counted in the database every so often, so every instance reports the
//! same whole.

use std::time::Duration;

use sqlx::Row;

use crate::accounts::store::AccountStatus;
use crate::base::metrics;
use crate::store::db::Pool;
use crate::ErrorCode;

const STATUSES: [AccountStatus; 3] = [
    AccountStatus::Active,
    AccountStatus::NeedsSignIn,
    AccountStatus::Degraded,
];

/// Every status with its number of accounts (zero ones included, so a gauge drops to zero).
pub async fn count_by_status(pool: &Pool) -> Result<Vec<(AccountStatus, i64)>, ErrorCode> {
    let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM connected_accounts GROUP BY status")
        .fetch_all(pool)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "counting accounts by status failed");
            ErrorCode::Unknown
        })?;
    let mut counts: Vec<(AccountStatus, i64)> = STATUSES.iter().map(|s| (*s, 0)).collect();
    for row in rows {
        let (Ok(status), Ok(n)) = (
            row.try_get::<String, _>("status"),
            row.try_get::<i64, _>("n"),
        ) else {
            continue;
        };
        if let Some(slot) = counts.iter_mut().find(|(s, _)| s.as_str() == status) {
            slot.1 += n;
        }
    }
    Ok(counts)
}

/// Sets the gauge from the database now.
pub async fn refresh_gauge(pool: &Pool) -> Result<(), ErrorCode> {
    for (status, count) in count_by_status(pool).await? {
        metrics::accounts(status.as_str(), count);
    }
    Ok(())
}

/// Refreshes the gauge every `every` until the task is dropped.
pub fn spawn_refresher(pool: Pool, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(code) = refresh_gauge(&pool).await {
                tracing::warn!(%code, "the accounts-by-status gauge was not refreshed");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{engine_in, register_owner};

    #[tokio::test]
    async fn every_status_is_counted_zero_ones_too() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _) = engine_in(&dir).await;
        let user = register_owner(&engine).await;
        for (key, status) in [("a", "active"), ("b", "active"), ("c", "degraded")] {
            sqlx::query(
                "INSERT INTO connected_accounts
                     (user_id, provider, account_key, display_name, secrets_sealed, status, connected_at)
                 VALUES ($1, 'librus', $2, $2, $3, $4, 0)",
            )
            .bind(user)
            .bind(key)
            .bind(vec![0u8])
            .bind(status)
            .execute(engine.pool())
            .await
            .unwrap();
        }
        let counts = count_by_status(engine.pool()).await.unwrap();
        assert_eq!(
            counts,
            vec![
                (AccountStatus::Active, 2),
                (AccountStatus::NeedsSignIn, 0),
                (AccountStatus::Degraded, 1),
            ]
        );
    }
}
