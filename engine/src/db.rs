//! The database: one SQLite pool with the migrations in `engine/migrations/` applied.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

/// Opens (creating if needed) the SQLite database at `url` and brings its schema up to date.
pub async fn connect(url: &str) -> Result<SqlitePool, sqlx::Error> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        // WAL lets readers go on while one writer commits; busy_timeout makes concurrent
        // writers wait for each other instead of failing with SQLITE_BUSY.
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await?;
    sqlx::migrate!("./migrations").run(&pool).await?;
    Ok(pool)
}

/// The default database file inside the data folder.
pub fn sqlite_url_in(data_dir: &std::path::Path) -> String {
    format!("sqlite://{}", data_dir.join("stepgate.db").display())
}
