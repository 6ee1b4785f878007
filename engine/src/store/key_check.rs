//! The database knows its key: the first start seals a known value with the newest key into
//! `key_check`, and every later start opens it. A ring none of whose keys can is refused at
//! start with one clear sentence (another instance's key, a lost key file, a typo in
//! `STEPGATE_KEYS`, an old key dropped too early), rather than turning into failed sign-ins
//! and unreadable accounts. A check value under an older key of the ring passes, and is sealed
//! again under the newest.

use crate::base::crypto::SecretBox;
use crate::store::db::Pool;
use crate::store::reseal::{self, ResealPass, SealedColumn};

const CHECK_VALUE: &[u8] = b"stepgate key check v1";
const AAD: &[u8] = b"key_check";

/// The check value's row, for the re-seal pass.
pub const SEALED: SealedColumn = SealedColumn {
    table: "key_check",
    id: "id",
    id_is_text: false,
    column: "sealed",
    more_columns: "",
};

/// Why the check failed: the sentence the server prints, or the database's own error.
#[derive(Debug, thiserror::Error)]
pub enum KeyCheckError {
    #[error("no key given (STEPGATE_KEYS, STEPGATE_KEY or the key file) opens this database: its secrets were sealed with another key. Start with the key file or keys this database was made with (after a rotation, keep the old key in the ring until `stepgate key reseal` says it may be dropped)")]
    WrongKey,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Opens the database's check value with any key of `secrets`, or records it when there is
/// none yet (two instances starting at once record one, and both then open it). A value under
/// an older key is recorded again under the newest (only if it is still the one read).
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
        Ok(value) if value == CHECK_VALUE => {
            if !secrets.is_under_newest(&stored) {
                reseal_batch(pool, secrets, &mut ResealPass::new(), 1).await?;
            }
            Ok(())
        }
        _ => Err(KeyCheckError::WrongKey),
    }
}

/// What the check value says of a ring, when it is only looked at (`stepgate check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyLook {
    /// No check value yet: the first start records one.
    NotRecorded,
    /// The newest key opens it.
    Newest,
    /// An older key of the ring opens it: a rotation is under way (`stepgate key reseal`).
    OlderKey,
}

/// Opens the check value with `secrets`, changing nothing: [`KeyCheckError::WrongKey`] when no
/// key of the ring opens it.
pub async fn look(pool: &Pool, secrets: &SecretBox) -> Result<KeyLook, KeyCheckError> {
    let stored: Option<Vec<u8>> = sqlx::query_scalar("SELECT sealed FROM key_check WHERE id = 1")
        .fetch_optional(pool)
        .await?;
    let Some(stored) = stored else {
        return Ok(KeyLook::NotRecorded);
    };
    match secrets.open(&stored, AAD) {
        Ok(value) if value == CHECK_VALUE && secrets.is_under_newest(&stored) => {
            Ok(KeyLook::Newest)
        }
        Ok(value) if value == CHECK_VALUE => Ok(KeyLook::OlderKey),
        _ => Err(KeyCheckError::WrongKey),
    }
}

/// One batch of a re-seal pass over the check value.
pub async fn reseal_batch(
    pool: &Pool,
    secrets: &SecretBox,
    pass: &mut ResealPass,
    limit: usize,
) -> Result<usize, sqlx::Error> {
    reseal::reseal_batch(pool, secrets, &SEALED, |_| Ok(AAD.to_vec()), pass, limit).await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{look, KeyLook};
    use crate::base::clock::SystemClock;
    use crate::base::crypto::SecretBox;
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
        wrong.keys = SecretKey([8; 32]).into();
        let refused = Engine::open_with_clock(wrong, Arc::new(SystemClock))
            .await
            .err()
            .expect("another key is refused");
        let text = refused.to_string();
        assert!(
            text.contains(
                "no key given (STEPGATE_KEYS, STEPGATE_KEY or the key file) opens this database"
            ) && text.contains("Start with the key")
                && !text.contains('\n'),
            "{text}"
        );

        let again =
            Engine::open_with_clock(test_config(dir.path()).await, Arc::new(SystemClock)).await;
        assert!(again.is_ok(), "the right key still opens it");
    }

    /// A ring with the database's key among older or newer ones opens it, and re-records the
    /// check value under its newest key: the new key alone opens it from then on, and the old
    /// alone no longer does.
    #[tokio::test]
    async fn any_key_of_the_ring_passes_and_the_check_moves_to_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let old = test_config(dir.path()).await.keys.newest().clone();
        let new = SecretKey([9; 32]);
        let open_with = |keys: Vec<SecretKey>| {
            let dir = dir.path().to_path_buf();
            async move {
                let mut config = test_config(&dir).await;
                config.keys = crate::base::secrets::Keyring::new(keys).unwrap();
                let opened = Engine::open_with_clock(config, Arc::new(SystemClock)).await;
                if let Ok(engine) = &opened {
                    engine.pool().close().await;
                }
                opened.is_ok()
            }
        };
        assert!(open_with(vec![old.clone()]).await);
        let pool = crate::store::db::connect(&test_config(dir.path()).await.database_url)
            .await
            .unwrap();
        let ring = |keys: Vec<SecretKey>| {
            SecretBox::with_keyring(crate::base::secrets::Keyring::new(keys).unwrap())
        };
        let looked = |keys| {
            let pool = pool.clone();
            async move { look(&pool, &ring(keys)).await }
        };
        assert_eq!(looked(vec![old.clone()]).await.unwrap(), KeyLook::Newest);
        assert_eq!(
            looked(vec![new.clone(), old.clone()]).await.unwrap(),
            KeyLook::OlderKey,
            "looking changes nothing"
        );
        assert!(matches!(
            looked(vec![new.clone()]).await,
            Err(super::KeyCheckError::WrongKey)
        ));
        pool.close().await;
        assert!(
            open_with(vec![new.clone(), old.clone()]).await,
            "the old key in the ring opens"
        );
        assert!(
            open_with(vec![new.clone()]).await,
            "re-recorded under the newest"
        );
        assert!(!open_with(vec![old.clone()]).await);
    }
}
