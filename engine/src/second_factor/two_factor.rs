//! The TOTP second factor of local accounts: [`TwoFactor`] keeps each account's TOTP secret,
//! sealed at rest. Turning it on and off is in [`crate::second_factor::enrolment`] (through the TOTP
//! site's registration callback, or an authenticator app), checking a code in
//! [`crate::second_factor::verification`] (replay refusal, per-account back-off), and the links to the
//! web TOTP service in [`crate::second_factor::totp_site`].

use sqlx::Row;

use crate::store::db::Pool;

use crate::base::crypto::SecretBox;
use crate::second_factor::totp_site::TotpSite;
use crate::sign_in::users::UserId;
use crate::store::reseal::{self, ResealPass, SealedColumn};
use crate::ErrorCode;

/// A user's second factor, as far as the UI may know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpStatus {
    pub seed_id: Option<String>,
    pub digits: u8,
}

pub(crate) fn db_error(e: sqlx::Error) -> ErrorCode {
    tracing::error!(error = %e, "two-factor store failed");
    ErrorCode::Unknown
}

fn associated_data(user_id: UserId) -> Vec<u8> {
    format!("stepgate:totp-secret:user:{user_id}").into_bytes()
}

/// Enabled TOTP seeds, and seeds waiting for their first code: both sealed to their user.
const SEEDS: SealedColumn = SealedColumn {
    table: "totp_credentials",
    id: "user_id",
    id_is_text: false,
    column: "secret_sealed",
    more_columns: "",
};
const PENDING_SEEDS: SealedColumn = SealedColumn {
    table: "totp_pending",
    ..SEEDS
};

/// Which of the two tables of seeds a re-seal pass walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedTable {
    Enabled,
    Pending,
}

#[derive(Clone)]
pub struct TwoFactor {
    pub(crate) pool: Pool,
    secrets: SecretBox,
    /// The web TOTP service the setup popup and the code step link to.
    pub site: TotpSite,
    /// Guesses per account, claimed before any code is checked (`second_factor/attempts.rs`).
    pub(crate) attempts: crate::second_factor::attempts::SecondFactorAttempts,
    /// How many codes were compared with a secret (tests count the real checks).
    #[cfg(test)]
    pub(crate) codes_checked: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl TwoFactor {
    pub fn new(pool: Pool, secrets: SecretBox, site: TotpSite) -> Self {
        Self {
            attempts: crate::second_factor::attempts::SecondFactorAttempts::in_database(
                pool.clone(),
            ),
            pool,
            secrets,
            site,
            #[cfg(test)]
            codes_checked: Default::default(),
        }
    }

    /// The codes compared with a secret so far, by this store and its clones.
    #[cfg(test)]
    pub(crate) fn codes_checked(&self) -> u64 {
        self.codes_checked.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub async fn status(&self, user_id: UserId) -> Result<Option<TotpStatus>, ErrorCode> {
        let row = sqlx::query("SELECT seed_id, digits FROM totp_credentials WHERE user_id = $1")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?
            .into_iter()
            .next();
        row.map(|row| {
            let digits: i64 = row.try_get("digits").map_err(db_error)?;
            Ok(TotpStatus {
                seed_id: row.try_get("seed_id").map_err(db_error)?,
                digits: digits as u8,
            })
        })
        .transpose()
    }

    /// Seals `user_id`'s TOTP secret for storage (bound to the user).
    pub(crate) fn seal(&self, user_id: UserId, secret: &[u8]) -> Vec<u8> {
        self.secrets.seal(secret, &associated_data(user_id))
    }

    /// One batch of a re-seal pass over the seeds of `table` (`store/reseal.rs`).
    pub async fn reseal_batch(
        &self,
        table: SeedTable,
        pass: &mut ResealPass,
        limit: usize,
    ) -> Result<usize, ErrorCode> {
        let column = match table {
            SeedTable::Enabled => &SEEDS,
            SeedTable::Pending => &PENDING_SEEDS,
        };
        reseal::reseal_batch(
            &self.pool,
            &self.secrets,
            column,
            |row| Ok(associated_data(sqlx::Row::try_get(row, "id")?)),
            pass,
            limit,
        )
        .await
        .map_err(db_error)
    }

    /// Opens a stored TOTP secret of `user_id`.
    pub(crate) fn open(&self, user_id: UserId, sealed: &[u8]) -> Result<Vec<u8>, ErrorCode> {
        self.secrets.open(sealed, &associated_data(user_id)).map_err(|e| {
            tracing::error!(user_id, error = %e, "a TOTP secret did not decrypt: wrong STEPGATE_KEY or key file?");
            ErrorCode::Unknown
        })
    }
}
