//! Whether this instance can serve: its database answers and carries every migration this
//! build knows, and its Redis (when it has one) answers. What `/health/ready` reports; each
//! look is bounded, so a stalled database makes the answer "not ready", never a hung probe.

use std::time::Duration;

use serde::Serialize;

use crate::store::db::{dialect, Dialect, Pool};
use crate::store::redis::Redis;

/// How long one look may take before its part counts as down.
pub const LOOK_TIMEOUT: Duration = Duration::from_secs(2);

/// One part's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    Ok,
    Down,
    /// The database answers but lacks migrations this build has (another instance's newer
    /// build has not run yet, or `migrate` was not run).
    Behind,
    /// No Redis is configured.
    NotUsed,
}

/// What `/health/ready` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Readiness {
    pub database: Part,
    pub migrations: Part,
    pub redis: Part,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.database == Part::Ok
            && self.migrations == Part::Ok
            && matches!(self.redis, Part::Ok | Part::NotUsed)
    }
}

/// The migrations this build applies, by dialect.
fn known_versions(dialect: Dialect) -> Vec<i64> {
    let migrator = match dialect {
        Dialect::Sqlite => sqlx::migrate!("./migrations/sqlite"),
        Dialect::Postgres => sqlx::migrate!("./migrations/postgres"),
    };
    migrator.iter().map(|m| m.version).collect()
}

/// Looks at the database and Redis now.
pub async fn look(pool: &Pool, redis: Option<&Redis>) -> Readiness {
    let (database, migrations) = match tokio::time::timeout(LOOK_TIMEOUT, applied(pool)).await {
        Ok(Ok(applied)) => {
            let behind = known_versions(dialect(pool))
                .iter()
                .any(|v| !applied.contains(v));
            (Part::Ok, if behind { Part::Behind } else { Part::Ok })
        }
        _ => (Part::Down, Part::Down),
    };
    let redis = match redis {
        None => Part::NotUsed,
        Some(redis) => match tokio::time::timeout(LOOK_TIMEOUT, ping(redis)).await {
            Ok(Ok(())) => Part::Ok,
            _ => Part::Down,
        },
    };
    Readiness {
        database,
        migrations,
        redis,
    }
}

/// The migrations this build has that the database lacks, oldest first (all of them for a
/// database never migrated: it has no `_sqlx_migrations` table yet).
pub async fn missing_migrations(pool: &Pool) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await?;
    let applied = applied(pool).await.unwrap_or_default();
    Ok(known_versions(dialect(pool))
        .into_iter()
        .filter(|v| !applied.contains(v))
        .collect())
}

/// How many migrations this build has.
pub fn migrations_known(pool: &Pool) -> usize {
    known_versions(dialect(pool)).len()
}

/// The versions of the migrations applied successfully.
async fn applied(pool: &Pool) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success = TRUE")
        .fetch_all(pool)
        .await
}

pub async fn ping(redis: &Redis) -> redis::RedisResult<()> {
    let mut conn = redis.conn();
    redis::cmd("PING").query_async::<String>(&mut conn).await?;
    Ok(())
}
