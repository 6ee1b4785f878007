//! Local accounts.

use sqlx::Row;

use crate::store::db::Pool;

use crate::base::email::Email;
use crate::ErrorCode;

pub type UserId = i64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub email: String,
}

/// A user with the password hash: never leaves the engine.
#[derive(Debug, Clone)]
pub struct UserCredentials {
    pub user: User,
    pub password_hash: String,
}

#[derive(Clone)]
pub struct UserStore {
    pool: Pool,
}

fn db_error(e: sqlx::Error) -> ErrorCode {
    tracing::error!(error = %e, "user store failed");
    ErrorCode::Unknown
}

impl UserStore {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// Creates an account; `email_taken` if the address is registered already.
    pub async fn create(
        &self,
        email: &Email,
        password_hash: &str,
        now: i64,
    ) -> Result<UserId, ErrorCode> {
        let result = sqlx::query_scalar(
            "INSERT INTO users (email, password_hash, created_at) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(email.as_str())
        .bind(password_hash)
        .bind(now)
        .fetch_one(&self.pool)
        .await;
        match result {
            Ok(id) => Ok(id),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(ErrorCode::EmailTaken),
            Err(e) => Err(db_error(e)),
        }
    }

    /// Replaces the user's password hash (a password change).
    pub async fn set_password_hash(
        &self,
        user_id: UserId,
        password_hash: &str,
    ) -> Result<(), ErrorCode> {
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    pub async fn find_by_email(&self, email: &Email) -> Result<Option<UserCredentials>, ErrorCode> {
        let row = sqlx::query("SELECT id, email, password_hash FROM users WHERE email = $1")
            .bind(email.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?
            .into_iter()
            .next();
        row.map(|row| {
            Ok(UserCredentials {
                user: User {
                    id: row.try_get("id").map_err(db_error)?,
                    email: row.try_get("email").map_err(db_error)?,
                },
                password_hash: row.try_get("password_hash").map_err(db_error)?,
            })
        })
        .transpose()
    }
}
