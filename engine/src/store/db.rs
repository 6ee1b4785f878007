//! The database: SQLite (the embedded default) or Postgres (several instances sharing one
//! database), picked by the URL's scheme, with the schema in `engine/migrations/<dialect>/`
//! brought up to date.
//!
//! Every store talks to it through sqlx's `Any` driver, so one query text serves both: SQL here
//! is written with `$1, $2…` placeholders (SQLite accepts them too), integers are `i64`, bytes are
//! `Vec<u8>`, and the few spellings that differ are chosen with [`Dialect`].

use std::sync::Once;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{ConnectOptions, Connection};

static DRIVERS: Once = Once::new();

/// The pool every store holds.
pub type Pool = sqlx::AnyPool;
/// One connection of the pool, or a transaction's (`&mut *tx`): what the `…_in` writes take, so
/// that several stores' writes can share one commit.
pub type Conn = sqlx::AnyConnection;

/// Which database a [`Pool`] talks to, for the few statements spelled differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The dialect a database URL names, or `None` for a scheme Stepgate cannot use.
    pub fn of_url(url: &str) -> Option<Dialect> {
        let scheme = url.split_once(':').map(|(scheme, _)| scheme)?;
        match scheme {
            "sqlite" => Some(Dialect::Sqlite),
            "postgres" | "postgresql" => Some(Dialect::Postgres),
            _ => None,
        }
    }
}

/// The dialect of the database `pool` is connected to.
pub fn dialect(pool: &Pool) -> Dialect {
    Dialect::of_url(pool.connect_options().database_url.as_str()).unwrap_or(Dialect::Sqlite)
}

/// The hot write transactions (a finished flow, a renewal's outcome, the read counts) take
/// turns here on SQLite: it lets one writer in at a time and makes the others sleep and retry
/// (its busy timeout sleeps whole milliseconds), which under load costs more than the writes.
/// Queued in the process instead, each starts the moment the one before commits. Postgres
/// locks rows, so there nothing queues.
#[derive(Clone)]
pub struct Writes {
    pool: Pool,
    turn: Option<std::sync::Arc<tokio::sync::Mutex<()>>>,
}

/// A write transaction holding its turn (see [`Writes`]) until it commits or is dropped.
pub struct WriteTx {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Writes {
    pub fn new(pool: &Pool) -> Self {
        Self {
            pool: pool.clone(),
            turn: (dialect(pool) == Dialect::Sqlite).then(Default::default),
        }
    }

    /// Waits for the turn (SQLite), then begins a transaction.
    pub async fn begin(&self) -> Result<WriteTx, sqlx::Error> {
        let turn = self.turn().await;
        Ok(WriteTx {
            tx: self.pool.begin().await?,
            _turn: turn.0,
        })
    }

    /// Waits for the turn (SQLite) and keeps it until dropped: several transactions can then
    /// run in it ([`Writes::begin_in`]).
    pub async fn turn(&self) -> WriteTurn {
        WriteTurn(match &self.turn {
            Some(turn) => Some(turn.clone().lock_owned().await),
            None => None,
        })
    }

    /// Begins a transaction in a turn already held.
    pub async fn begin_in(
        &self,
        _turn: &WriteTurn,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        self.pool.begin().await
    }
}

/// The write turn (see [`Writes`]), held until dropped; nothing on Postgres.
pub struct WriteTurn(Option<tokio::sync::OwnedMutexGuard<()>>);

impl WriteTx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl std::ops::Deref for WriteTx {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.tx
    }
}

/// Opens the database at `url` (`sqlite://…`, created if missing, or `postgres://…`) and brings
/// its schema up to date.
pub async fn connect(url: &str) -> Result<Pool, sqlx::Error> {
    let pool = open_without_migrating(url).await?;
    migrate(&pool).await?;
    Ok(pool)
}

/// Opens the database at `url` as it is (`stepgate check` looks before it changes anything).
pub async fn open_without_migrating(url: &str) -> Result<Pool, sqlx::Error> {
    DRIVERS.call_once(sqlx::any::install_default_drivers);
    let dialect = Dialect::of_url(url).ok_or_else(|| {
        sqlx::Error::Configuration(
            format!("DATABASE_URL must start with sqlite:// or postgres://, not `{url}`").into(),
        )
    })?;
    let pool = match dialect {
        Dialect::Sqlite => {
            // `mode=rwc` creates the file; busy_timeout (5 s) and foreign keys are the SQLite
            // driver's defaults.
            let url = if url.contains('?') {
                url.to_owned()
            } else {
                format!("{url}?mode=rwc")
            };
            let options =
                AnyConnectOptions::from_url(&url.parse().map_err(|e| {
                    sqlx::Error::Configuration(format!("DATABASE_URL: {e}").into())
                })?)?;
            AnyPoolOptions::new()
                .max_connections(8)
                // A connection to a local file cannot go stale: no ping (a round trip through
                // the driver's worker thread) before every query.
                .test_before_acquire(false)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        // WAL lets readers go on while one writer commits.
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        Ok(())
                    })
                })
                .connect_with(options)
                .await?
        }
        Dialect::Postgres => {
            AnyPoolOptions::new()
                .max_connections(postgres_pool_size())
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await?
        }
    };
    Ok(pool)
}

/// Applies the migrations `pool`'s database lacks (several instances starting at once: sqlx
/// takes a lock, so each migration runs once).
pub async fn migrate(pool: &Pool) -> Result<(), sqlx::Error> {
    match dialect(pool) {
        Dialect::Sqlite => sqlx::migrate!("./migrations/sqlite").run(pool).await?,
        Dialect::Postgres => sqlx::migrate!("./migrations/postgres").run(pool).await?,
    }
    Ok(())
}

/// Connections one instance opens to Postgres (`STEPGATE_DB_POOL`, default 16): with N
/// instances the server needs N times this below its `max_connections`.
fn postgres_pool_size() -> u32 {
    std::env::var("STEPGATE_DB_POOL")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(16)
}

/// The default database file inside the data folder.
pub fn sqlite_url_in(data_dir: &std::path::Path) -> String {
    format!("sqlite://{}", data_dir.join("stepgate.db").display())
}

/// A database for one test: a fresh Postgres database on the server named by
/// `STEPGATE_TEST_DATABASE_URL` when that is set (the scripts set it for the Postgres run of
/// the suite), otherwise a SQLite file in `dir`.
#[doc(hidden)]
pub async fn test_database_url(dir: &std::path::Path) -> String {
    let Some(admin) = std::env::var("STEPGATE_TEST_DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
    else {
        return sqlite_url_in(dir);
    };
    // A test that reopens its folder (a restart) finds the same database again.
    let remembered = dir.join("postgres-url");
    if let Ok(url) = std::fs::read_to_string(&remembered) {
        return url;
    }
    DRIVERS.call_once(sqlx::any::install_default_drivers);
    let name = format!(
        "sg_{:032x}",
        rand::Rng::gen::<u128>(&mut rand::thread_rng())
    );
    let mut conn = sqlx::AnyConnection::connect(&admin)
        .await
        .expect("STEPGATE_TEST_DATABASE_URL: cannot connect");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("cannot create a test database");
    let mut url: url::Url = admin
        .parse()
        .expect("STEPGATE_TEST_DATABASE_URL is not a URL");
    url.set_path(&name);
    std::fs::write(&remembered, url.as_str()).expect("cannot write into the test's folder");
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_scheme_picks_the_dialect() {
        assert_eq!(Dialect::of_url("sqlite://data/x.db"), Some(Dialect::Sqlite));
        assert_eq!(
            Dialect::of_url("postgres://u@h/db"),
            Some(Dialect::Postgres)
        );
        assert_eq!(
            Dialect::of_url("postgresql://u@h/db"),
            Some(Dialect::Postgres)
        );
        assert_eq!(Dialect::of_url("mysql://u@h/db"), None);
        assert_eq!(Dialect::of_url("stepgate.db"), None);
    }
}
