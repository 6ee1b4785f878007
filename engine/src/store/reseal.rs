//! Re-sealing a sealed column under the newest key, in batches, while servers keep running:
//! each batch reads a few rows not yet under the newest key (after the last one it looked at),
//! seals each again and writes it back in one short transaction, but only where the column
//! still holds the bytes it read (compare-and-set: a value a server wrote meanwhile is newer
//! and left alone). Nothing is remembered between runs: a run after a crash skips what is done
//! by the key id every value starts with, and goes on with the rest.
//!
//! Each store describes its own column and associated data ([`SealedColumn`]); the engine's
//! `reseal_all` walks them all.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::base::crypto::{SecretBox, HEADER_BYTES};
use crate::store::db::Pool;

/// A table's sealed column, and how its rows are named.
pub struct SealedColumn {
    pub table: &'static str,
    /// The primary key.
    pub id: &'static str,
    /// Whether the primary key is text (otherwise an integer).
    pub id_is_text: bool,
    /// The sealed column (rows where it is NULL hold nothing sealed).
    pub column: &'static str,
    /// More columns the associated data is made of (`", user_id, provider"`), read with the
    /// row; the primary key is read as `id`.
    pub more_columns: &'static str,
}

/// How many values a pass (or its check) met, by what became of them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ResealCount {
    /// Sealed again under the newest key.
    pub resealed: u64,
    /// Under an older key still: written meanwhile by a server sealing with an older key (a
    /// pass), or not yet re-sealed (a check).
    pub under_old_key: u64,
    /// Opened by no key of the ring: lost already (a key dropped too early, or a row that is
    /// not its own); re-sealing cannot help and no old key is needed for them.
    pub unreadable: u64,
}

impl ResealCount {
    pub fn add(&mut self, other: ResealCount) {
        self.resealed += other.resealed;
        self.under_old_key += other.under_old_key;
        self.unreadable += other.unreadable;
    }
}

/// Where a pass over one kind of value has got to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    Start,
    Integer(i64),
    Text(String),
    /// Every value was looked at.
    Done,
}

/// One pass over one kind of value (in memory only: a new pass starts over and skips what is
/// done).
#[derive(Debug, Clone)]
pub struct ResealPass {
    pub after: Cursor,
    pub count: ResealCount,
    /// Count only, change nothing (whether old keys are still needed).
    pub check_only: bool,
}

impl ResealPass {
    pub fn new() -> Self {
        Self {
            after: Cursor::Start,
            count: ResealCount::default(),
            check_only: false,
        }
    }

    /// A pass that only counts what is not under the newest key.
    pub fn check() -> Self {
        Self {
            check_only: true,
            ..Self::new()
        }
    }

    pub fn is_done(&self) -> bool {
        self.after == Cursor::Done
    }
}

impl Default for ResealPass {
    fn default() -> Self {
        Self::new()
    }
}

/// What to do with one value: its new sealed bytes, or how it was counted instead.
pub enum Verdict {
    Reseal(Vec<u8>),
    Counted,
}

/// Judges one sealed value for `pass` (shared by the database and Redis passes).
pub fn judge(
    secrets: &SecretBox,
    pass: &mut ResealPass,
    sealed: &[u8],
    associated_data: &[u8],
) -> Verdict {
    if pass.check_only {
        match secrets.open(sealed, associated_data) {
            Ok(_) => pass.count.under_old_key += 1,
            Err(_) => pass.count.unreadable += 1,
        }
        return Verdict::Counted;
    }
    match secrets.reseal(sealed, associated_data) {
        Ok(Some(resealed)) => Verdict::Reseal(resealed),
        // Under the newest key already (an old value that happens to start like one).
        Ok(None) => Verdict::Counted,
        Err(_) => {
            pass.count.unreadable += 1;
            Verdict::Counted
        }
    }
}

/// One batch of `pass` over `column`: at most `limit` rows not under the newest key, after the
/// pass's cursor. Returns how many rows it looked at (fewer than `limit`: the pass is done).
pub async fn reseal_batch(
    pool: &Pool,
    secrets: &SecretBox,
    column: &SealedColumn,
    associated_data: impl Fn(&AnyRow) -> Result<Vec<u8>, sqlx::Error>,
    pass: &mut ResealPass,
    limit: usize,
) -> Result<usize, sqlx::Error> {
    let (looked_at, resealed) =
        read_batch(pool, secrets, column, associated_data, pass, limit).await?;
    write_batch(pool, column, resealed, pass).await?;
    Ok(looked_at)
}

/// A row's value sealed again, to be written where the row still holds the value read.
pub(crate) struct Resealed {
    id: Cursor,
    read: Vec<u8>,
    resealed: Vec<u8>,
}

/// The first half of a batch: the rows read and judged, and those to write.
pub(crate) async fn read_batch(
    pool: &Pool,
    secrets: &SecretBox,
    column: &SealedColumn,
    associated_data: impl Fn(&AnyRow) -> Result<Vec<u8>, sqlx::Error>,
    pass: &mut ResealPass,
    limit: usize,
) -> Result<(usize, Vec<Resealed>), sqlx::Error> {
    let SealedColumn {
        table,
        id,
        column: sealed,
        more_columns,
        id_is_text,
    } = column;
    let after = match &pass.after {
        Cursor::Done => return Ok((0, Vec::new())),
        Cursor::Start => String::new(),
        _ => format!("AND {id} > $2"),
    };
    // Table and column names are the stores' constants, never input.
    let text = format!(
        "SELECT {id} AS id, {sealed} AS sealed{more_columns} FROM {table}
         WHERE {sealed} IS NOT NULL AND substr({sealed}, 1, {HEADER_BYTES}) <> $1 {after}
         ORDER BY {id} LIMIT {limit}"
    );
    let mut query = sqlx::query(&text).bind(secrets.newest_prefix());
    query = match &pass.after {
        Cursor::Integer(n) => query.bind(*n),
        Cursor::Text(t) => query.bind(t.clone()),
        _ => query,
    };
    let rows = query.fetch_all(pool).await?;
    let mut resealed = Vec::new();
    for row in &rows {
        let value: Vec<u8> = row.try_get("sealed")?;
        pass.after = if *id_is_text {
            Cursor::Text(row.try_get("id")?)
        } else {
            Cursor::Integer(row.try_get("id")?)
        };
        if let Verdict::Reseal(new) = judge(secrets, pass, &value, &associated_data(row)?) {
            resealed.push(Resealed {
                id: pass.after.clone(),
                read: value,
                resealed: new,
            });
        }
    }
    if rows.len() < limit {
        pass.after = Cursor::Done;
    }
    Ok((rows.len(), resealed))
}

/// The second half of a batch: one short transaction writing each value where the row still
/// holds what was read (compare-and-set).
pub(crate) async fn write_batch(
    pool: &Pool,
    column: &SealedColumn,
    resealed: Vec<Resealed>,
    pass: &mut ResealPass,
) -> Result<(), sqlx::Error> {
    if resealed.is_empty() {
        return Ok(());
    }
    let SealedColumn {
        table,
        id,
        column: sealed,
        ..
    } = column;
    let update = format!("UPDATE {table} SET {sealed} = $1 WHERE {id} = $2 AND {sealed} = $3");
    let mut tx = pool.begin().await?;
    for row in resealed {
        let query = sqlx::query(&update).bind(row.resealed);
        let query = match row.id {
            Cursor::Integer(n) => query.bind(n),
            Cursor::Text(t) => query.bind(t),
            Cursor::Start | Cursor::Done => unreachable!("a row's cursor names it"),
        };
        let done = query.bind(row.read).execute(&mut *tx).await?;
        if done.rows_affected() == 1 {
            pass.count.resealed += 1;
        } else {
            // Written (or removed) meanwhile: what is there now is newer than what was read.
            // It is under an older key still only if that server has not read the new key
            // yet; a check after the pass tells.
            tracing::debug!(
                table,
                "a value changed during its re-seal and was left as it is"
            );
        }
    }
    tx.commit().await
}

/// The kinds of sealed value, in the order a re-seal walks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedKind {
    KeyCheck,
    TotpSeeds,
    TotpSetups,
    AccountSecrets,
    WebhookSecrets,
    WebhookDeliveries,
    Flows,
}

impl SealedKind {
    pub const ALL: [SealedKind; 7] = [
        SealedKind::KeyCheck,
        SealedKind::TotpSeeds,
        SealedKind::TotpSetups,
        SealedKind::AccountSecrets,
        SealedKind::WebhookSecrets,
        SealedKind::WebhookDeliveries,
        SealedKind::Flows,
    ];

    /// How an operator reads it.
    pub fn name(self) -> &'static str {
        match self {
            SealedKind::KeyCheck => "key check",
            SealedKind::TotpSeeds => "TOTP seeds",
            SealedKind::TotpSetups => "TOTP setups waiting for a first code",
            SealedKind::AccountSecrets => "connected accounts' secrets",
            SealedKind::WebhookSecrets => "webhook signing secrets",
            SealedKind::WebhookDeliveries => "webhook deliveries' sealed data",
            SealedKind::Flows => "pending flows",
        }
    }
}

/// A re-seal's (or a check's) counts per kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SealedReport {
    pub kinds: Vec<(SealedKind, ResealCount)>,
}

impl SealedReport {
    pub fn total(&self) -> ResealCount {
        let mut total = ResealCount::default();
        for (_, count) in &self.kinds {
            total.add(*count);
        }
        total
    }

    /// The count of `kind` (zero when it was not walked).
    pub fn of(&self, kind: SealedKind) -> ResealCount {
        self.kinds
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, count)| *count)
            .unwrap_or_default()
    }

    /// Whether nothing needs an older key: after a check, the old keys may be dropped.
    pub fn old_keys_unused(&self) -> bool {
        self.total().under_old_key == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::secrets::{Keyring, SecretKey};
    use crate::store::db::{self, Dialect};

    const PROBE: SealedColumn = SealedColumn {
        table: "reseal_probe",
        id: "id",
        id_is_text: false,
        column: "sealed",
        more_columns: "",
    };

    fn aad(row: &AnyRow) -> Result<Vec<u8>, sqlx::Error> {
        let id: i64 = row.try_get("id")?;
        Ok(format!("probe:{id}").into_bytes())
    }

    async fn sealed_of(pool: &Pool, id: i64) -> Vec<u8> {
        sqlx::query_scalar("SELECT sealed FROM reseal_probe WHERE id = $1")
            .bind(id)
            .fetch_one(pool)
            .await
            .unwrap()
    }

    /// A value a server writes between a batch's read and its write is newer than the one
    /// read: the batch leaves it as it is (not clobbered with the older secret), and a later
    /// pass re-seals it.
    #[tokio::test]
    async fn a_value_written_during_a_batch_is_not_clobbered() {
        let dir = tempfile::tempdir().unwrap();
        let pool = db::connect(&db::test_database_url(dir.path()).await)
            .await
            .unwrap();
        let blob = match db::dialect(&pool) {
            Dialect::Sqlite => "BLOB",
            Dialect::Postgres => "BYTEA",
        };
        sqlx::query(&format!(
            "CREATE TABLE reseal_probe (id BIGINT PRIMARY KEY, sealed {blob})"
        ))
        .execute(&pool)
        .await
        .unwrap();
        let old = SecretBox::new(&SecretKey([1; 32]));
        let ring = SecretBox::with_keyring(
            Keyring::new(vec![SecretKey([2; 32]), SecretKey([1; 32])]).unwrap(),
        );
        for id in 1..=3i64 {
            sqlx::query("INSERT INTO reseal_probe (id, sealed) VALUES ($1, $2)")
                .bind(id)
                .bind(old.seal(
                    format!("secret {id}").as_bytes(),
                    format!("probe:{id}").as_bytes(),
                ))
                .execute(&pool)
                .await
                .unwrap();
        }
        sqlx::query("INSERT INTO reseal_probe (id, sealed) VALUES (4, NULL)")
            .execute(&pool)
            .await
            .unwrap();

        let mut pass = ResealPass::new();
        let (looked_at, resealed) = read_batch(&pool, &ring, &PROBE, aad, &mut pass, 10)
            .await
            .unwrap();
        assert_eq!(
            (looked_at, resealed.len()),
            (3, 3),
            "NULL holds nothing sealed"
        );
        // A running server that has not read the new key yet saves row 2 meanwhile.
        let written = old.seal(b"secret 2, renewed", b"probe:2");
        sqlx::query("UPDATE reseal_probe SET sealed = $1 WHERE id = 2")
            .bind(&written)
            .execute(&pool)
            .await
            .unwrap();
        write_batch(&pool, &PROBE, resealed, &mut pass)
            .await
            .unwrap();
        assert_eq!(pass.count.resealed, 2);
        assert!(pass.is_done());
        assert_eq!(sealed_of(&pool, 2).await, written, "the newer value stands");
        for id in [1, 3] {
            assert!(ring.is_under_newest(&sealed_of(&pool, id).await));
        }

        let mut check = ResealPass::check();
        reseal_batch(&pool, &ring, &PROBE, aad, &mut check, 10)
            .await
            .unwrap();
        assert_eq!(
            check.count,
            ResealCount {
                resealed: 0,
                under_old_key: 1,
                unreadable: 0
            }
        );
        let mut again = ResealPass::new();
        reseal_batch(&pool, &ring, &PROBE, aad, &mut again, 10)
            .await
            .unwrap();
        assert_eq!(again.count.resealed, 1, "only what was left is done again");
        let new_alone = SecretBox::new(&SecretKey([2; 32]));
        assert_eq!(
            new_alone
                .open(&sealed_of(&pool, 2).await, b"probe:2")
                .unwrap(),
            b"secret 2, renewed"
        );
        assert_eq!(
            new_alone
                .open(&sealed_of(&pool, 1).await, b"probe:1")
                .unwrap(),
            b"secret 1"
        );
    }
}
