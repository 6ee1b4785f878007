//! Apps' credential reads, counted instead of logged one by one. A read only adds one to a
//! tally in memory (per account, API key and minute); a background writer adds the tallies to
//! the `account_reads` rows in one transaction at least every second, and once more on
//! shutdown. So a read writes no commit of its own, and the owner still sees which key read
//! which account, how often and when last. A crash loses at most the reads since the last
//! flush; every other account event (connect, renewal, removal) is written where it happens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::sign_in::users::UserId;
use crate::store::db::{Pool, Writes};
use crate::ErrorCode;

/// How often the server's writer adds the tallies to the database.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ReadSlot {
    user_id: UserId,
    account_id: i64,
    api_key: String,
    /// Unix seconds / 60.
    minute: i64,
}

#[derive(Debug, Clone, Copy)]
struct Tally {
    reads: i64,
    last_at: i64,
}

/// One counter row: an API key's reads of an account in one minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadCount {
    pub api_key: String,
    pub minute: i64,
    pub reads: i64,
    /// The minute's last read, unix seconds.
    pub last_at: i64,
}

/// The reads not yet written, and the writer that adds them to the database.
#[derive(Clone)]
pub struct ReadCounts {
    pool: Pool,
    writes: Writes,
    pending: Arc<Mutex<HashMap<ReadSlot, Tally>>>,
    /// Held while a flush writes.
    flushing: Arc<tokio::sync::Mutex<()>>,
}

fn db_error(e: sqlx::Error) -> ErrorCode {
    tracing::error!(error = %e, "read counts query failed");
    ErrorCode::Unknown
}

impl ReadCounts {
    pub fn new(pool: Pool, writes: Writes) -> Self {
        Self {
            pool,
            writes,
            pending: Arc::default(),
            flushing: Arc::default(),
        }
    }

    /// Counts one read of `account_id` with `api_key` at `at` (unix seconds): memory only.
    pub fn count(&self, user_id: UserId, account_id: i64, api_key: &str, at: i64) {
        let slot = ReadSlot {
            user_id,
            account_id,
            api_key: api_key.to_owned(),
            minute: at.div_euclid(60),
        };
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let tally = pending.entry(slot).or_insert(Tally {
            reads: 0,
            last_at: at,
        });
        tally.reads += 1;
        tally.last_at = tally.last_at.max(at);
    }

    /// Adds every tally so far to the database in one transaction; returns how many reads it
    /// wrote. When the write fails the tallies are kept for the next flush.
    pub async fn flush(&self) -> Result<i64, ErrorCode> {
        // One flush at a time, and the write runs on a task of its own holding the turn: a
        // caller cancelled mid-write (an aborted writer, a server stopping) neither loses the
        // tallies nor has them written twice, and the next flush waits for that write.
        let turn = self.flushing.clone().lock_owned().await;
        let taken = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        if taken.is_empty() {
            return Ok(0);
        }
        let counts = self.clone();
        let write = tokio::spawn(async move {
            let _turn = turn;
            match counts.write(&taken).await {
                Ok(()) => Ok(taken.values().map(|t| t.reads).sum()),
                Err(e) => {
                    counts.put_back(taken);
                    Err(db_error(e))
                }
            }
        });
        write.await.unwrap_or(Err(ErrorCode::Unknown))
    }

    fn put_back(&self, taken: HashMap<ReadSlot, Tally>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for (slot, kept) in taken {
            let tally = pending.entry(slot).or_insert(Tally {
                reads: 0,
                last_at: kept.last_at,
            });
            tally.reads += kept.reads;
            tally.last_at = tally.last_at.max(kept.last_at);
        }
    }

    async fn write(&self, tallies: &HashMap<ReadSlot, Tally>) -> Result<(), sqlx::Error> {
        let mut tx = self.writes.begin().await?;
        for (slot, tally) in tallies {
            // A user deleted since the read takes its counts along (the row would be).
            sqlx::query(
                "INSERT INTO account_reads (user_id, account_id, api_key, minute, reads, last_at)
                 SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM users WHERE id = $1)
                 ON CONFLICT (account_id, api_key, minute) DO UPDATE SET
                   reads = account_reads.reads + excluded.reads,
                   last_at = CASE WHEN excluded.last_at > account_reads.last_at
                                  THEN excluded.last_at ELSE account_reads.last_at END",
            )
            .bind(slot.user_id)
            .bind(slot.account_id)
            .bind(&slot.api_key)
            .bind(slot.minute)
            .bind(tally.reads)
            .bind(tally.last_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// Flushes every `every` until the task is dropped (the server flushes once more when it
    /// shuts down).
    pub fn spawn_flusher(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let counts = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                // A failure is logged by `flush`, and its tallies wait for the next tick.
                let _ = counts.flush().await;
            }
        })
    }

    /// The written counter rows of the user's account `account_id`, newest first.
    pub async fn list(
        &self,
        user_id: UserId,
        account_id: i64,
        limit: i64,
    ) -> Result<Vec<ReadCount>, ErrorCode> {
        let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
            "SELECT api_key, minute, reads, last_at FROM account_reads
             WHERE user_id = $1 AND account_id = $2 ORDER BY minute DESC, api_key LIMIT $3",
        )
        .bind(user_id)
        .bind(account_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(|(api_key, minute, reads, last_at)| ReadCount {
                api_key,
                minute,
                reads,
                last_at,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use sandbox::flameconnect::{self as double, FlameConnectSandbox};

    use super::*;
    use crate::accounts::store::ConnectedAccount;
    use crate::apps::api_keys::ApiKey;
    use crate::test_support::{connected, ProviderSetup};

    /// A connected FlameConnect account of the owner's and an API key for it.
    async fn account_with_key() -> (ProviderSetup<FlameConnectSandbox>, ConnectedAccount, ApiKey) {
        let s = ProviderSetup::new("flameconnect", FlameConnectSandbox::spawn().await).await;
        let account = connected(
            s.start(&[
                ("email", double::DEMO_EMAIL),
                ("password", double::DEMO_PASSWORD),
            ])
            .await,
        );
        let (key, _) = s
            .engine
            .create_api_key(s.user_id, "kitchen", &[account.id], None)
            .await
            .unwrap();
        (s, account, key)
    }

    /// Reads over several minutes (the provider doubles keep real time, so the reads are
    /// counted here at the minutes they say), flushed now and then by the writer and once more
    /// at the end, as on shutdown: every read is counted once, in its minute, naming its key;
    /// the account's activity shows them with their counts.
    #[tokio::test]
    async fn reads_add_up_over_minutes_and_a_final_flush() {
        let (s, account, kitchen) = account_with_key().await;
        let counts = ReadCounts::new(s.engine.pool.clone(), Writes::new(&s.engine.pool));
        let writer = counts.spawn_flusher(Duration::from_millis(50));
        // The minutes after the connect, so the activity ends with it.
        let start_minute = s.engine.now().div_euclid(60) + 1;
        let mut expected = 0;
        for (minute, reads) in [(0, 7), (1, 13), (2, 1), (4, 20)] {
            for second in 0..reads {
                let at = (start_minute + minute) * 60 + second;
                counts.count(s.user_id, account.id, &kitchen.id, at);
            }
            expected += reads;
            if minute == 1 {
                // The background writer writes what it has; the later minutes come after.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let written = counts.list(s.user_id, account.id, 10).await.unwrap();
                assert_eq!(written.iter().map(|r| r.reads).sum::<i64>(), 20);
            }
        }
        writer.abort();
        counts.flush().await.unwrap();

        let rows = counts.list(s.user_id, account.id, 10).await.unwrap();
        let per_minute: Vec<(i64, i64)> = rows
            .iter()
            .map(|r| (r.minute - start_minute, r.reads))
            .collect();
        assert_eq!(per_minute, [(4, 20), (2, 1), (1, 13), (0, 7)]);
        assert_eq!(rows.iter().map(|r| r.reads).sum::<i64>(), expected);
        assert!(rows.iter().all(|r| r.api_key == kitchen.id));
        assert_eq!(rows[0].last_at, (start_minute + 4) * 60 + 19);
        // Nothing is counted twice: a flush with nothing pending writes nothing.
        assert_eq!(counts.flush().await.unwrap(), 0);
        assert_eq!(counts.list(s.user_id, account.id, 10).await.unwrap(), rows);

        let log = s.engine.audit_log(s.user_id, account.id).await.unwrap();
        let reads: Vec<(i64, Option<&str>)> = log
            .iter()
            .filter(|e| e.event == "api_read")
            .map(|e| (e.reads.unwrap(), e.api_key.as_deref()))
            .collect();
        let key = Some(kitchen.id.as_str());
        assert_eq!(reads, [(20, key), (1, key), (13, key), (7, key)]);
        assert_eq!(log.last().unwrap().event, "connected");
    }

    /// Reads through the engine by many tasks at once while the writer flushes, then the
    /// shutdown's flush: none is lost or counted twice, and none waited for a commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_reads_and_flushes_count_each_read_once() {
        let (s, account, key) = account_with_key().await;
        let writer = s.engine.spawn_read_count_flusher(Duration::from_millis(5));
        let readers: Vec<_> = (0..8)
            .map(|_| {
                let engine = s.engine.clone();
                let key = key.id.clone();
                let (user, id) = (s.user_id, account.id);
                tokio::spawn(async move {
                    for _ in 0..50 {
                        engine
                            .app_credentials_for_key(user, id, &key)
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for reader in readers {
            reader.await.unwrap();
        }
        writer.abort();
        s.engine.flush_read_counts().await.unwrap();
        let log = s.engine.audit_log(s.user_id, account.id).await.unwrap();
        let counted: i64 = log.iter().filter_map(|e| e.reads).sum();
        assert_eq!(counted, 400);
        // Flushed once more after the writer stopped: nothing was left behind.
        assert_eq!(s.engine.flush_read_counts().await.unwrap(), 0);
    }

    /// The tallies of a failed write are kept and written by the next flush.
    #[tokio::test]
    async fn a_failed_flush_keeps_its_reads_for_the_next() {
        let s = ProviderSetup::new("flameconnect", FlameConnectSandbox::spawn().await).await;
        let counts = ReadCounts::new(s.engine.pool.clone(), Writes::new(&s.engine.pool));
        let now = s.engine.now();
        for _ in 0..5 {
            counts.count(s.user_id, 41, "sgk_gone", now);
        }
        sqlx::query("ALTER TABLE account_reads RENAME TO account_reads_away")
            .execute(&s.engine.pool)
            .await
            .unwrap();
        assert!(counts.flush().await.is_err());
        counts.count(s.user_id, 41, "sgk_gone", now);
        sqlx::query("ALTER TABLE account_reads_away RENAME TO account_reads")
            .execute(&s.engine.pool)
            .await
            .unwrap();
        assert_eq!(counts.flush().await.unwrap(), 6);
        let rows = counts.list(s.user_id, 41, 10).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].reads, 6);
    }
}
