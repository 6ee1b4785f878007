//! The database knows its key: the first start seals a known value with the master key into
//! `key_check`, and every later start opens it. A key that cannot is refused at start with one
//! clear sentence (another instance's key, a lost key file, a typo in `STEPGATE_KEY`), rather
//! than turning into failed sign-ins and unreadable accounts.

use crate::base::crypto::SecretBox;
use crate::store::db::Pool;

const CHECK_VALUE: &[u8] = b"stepgate key check v1";
const AAD: &[u8] = b"key_check";

/// Why the check failed: the sentence the server prints, or the database's own error.
#[derive(Debug, thiserror::Error)]
pub enum KeyCheckError {
    #[error("the key (STEPGATE_KEY or the key file) does not open this database: its secrets were sealed with another key. Start with the key this database was made with")]
    WrongKey,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Opens the database's check value with `secrets`, or records it when there is none yet (two
/// instances starting at once record one, and both then open it).
pub async fn verify_or_record(
    pool: &Pool,
    secrets: &SecretBox,
    now: i64,
) -> Result<(), KeyCheckError> {
    let sealed = secrets.seal(CHECK_VALUE, AAD);
    // ON CONFLICT: the first instance's value stands; every instance then checks against it.
    sqlx::query(
        "INSERT INTO key_check (id, sealed, created_at) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING",
    )
    .bind(sealed)
    .bind(now)
    .execute(pool)
    .await?;
    let stored: Vec<u8> = sqlx::query_scalar("SELECT sealed FROM key_check WHERE id = 1")
        .fetch_one(pool)
        .await?;
    match secrets.open(&stored, AAD) {
        Ok(value) if value == CHECK_VALUE => Ok(()),
        _ => Err(KeyCheckError::WrongKey),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::base::clock::SystemClock;
    use crate::base::secrets::SecretKey;
    use crate::test_support::test_config;
    use crate::Engine;

    /// The key a database was made with opens it again; another is refused at open with the
    /// sentence the server prints, and the database is left as it was.
    #[tokio::test]
    async fn a_database_opens_only_with_its_own_key() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open_with_clock(test_config(dir.path()).await, Arc::new(SystemClock))
            .await
            .unwrap();
        engine.pool().close().await;

        let mut wrong = test_config(dir.path()).await;
        wrong.secret_key = SecretKey([8; 32]);
        let refused = Engine::open_with_clock(wrong, Arc::new(SystemClock))
            .await
            .err()
            .expect("another key is refused");
        let text = refused.to_string();
        assert!(
            text.contains("does not open this database") && !text.contains('\n'),
            "{text}"
        );

        let again =
            Engine::open_with_clock(test_config(dir.path()).await, Arc::new(SystemClock)).await;
        assert!(again.is_ok(), "the right key still opens it");
    }
}
