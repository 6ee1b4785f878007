//! Backing up and restoring the SQLite database (`stepgate backup FILE`, `stepgate restore FILE`).
//!
//! A backup is `VACUUM INTO`: one consistent snapshot read inside one read transaction, so a
//! running server goes on signing people in and writing meanwhile (WAL lets both happen). It holds
//! the database and nothing else: the master key is never in the database (only secrets sealed
//! with it, and the sealed key check), so a backup is useless without the key, and whoever takes
//! a backup still needs the key to read a secret in it.
//!
//! A restore never writes where the database lives until the copy is proven: the backup is
//! copied to a temporary file in the database's folder, brought up to this version's schema
//! (a backup from an older Stepgate) and opened with the key (`key_check.rs`); only then is an
//! existing database moved aside (never deleted) and the copy renamed into place.
//!
//! Postgres has its own tools for this ([`postgres_commands`]).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection};

use crate::base::crypto::SecretBox;
use crate::store::key_check::{self, KeyCheckError};

/// What every SQLite file starts with.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Why a backup or a restore stopped: one sentence for the terminal, with a stable
/// [`code`](BackupError::code). Nothing was written where it stopped (but a backup file that was
/// being written is removed).
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0} exists already: a backup never overwrites a file; name a new one")]
    FileExists(PathBuf),
    #[error("there is no database at {0}")]
    NoDatabase(PathBuf),
    #[error("{0} is not a Stepgate database: {1}")]
    NotStepgate(PathBuf, &'static str),
    #[error("{0} was made by a newer Stepgate (it has migration {1}, which this one does not know): restore it with that version or a later one")]
    NewerVersion(PathBuf, i64),
    #[error("no key given (STEPGATE_KEYS, STEPGATE_KEY or the key file) opens {0}: its secrets were sealed with another key. Restore with the key the backup was made with; nothing was written")]
    WrongKey(PathBuf),
    #[error("a database exists at {0}: restore with --force to move it aside (it is kept, renamed) and put the backup in its place")]
    DatabaseExists(PathBuf),
    #[error("{0} is in use (is a Stepgate server running on it?): stop the server, then restore")]
    InUse(PathBuf),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Database { what: String, source: sqlx::Error },
}

impl BackupError {
    pub fn code(&self) -> &'static str {
        match self {
            BackupError::FileExists(_) => "file_exists",
            BackupError::NoDatabase(_) => "no_database",
            BackupError::NotStepgate(..) => "not_stepgate",
            BackupError::NewerVersion(..) => "newer_version",
            BackupError::WrongKey(_) => "wrong_key",
            BackupError::DatabaseExists(_) => "database_exists",
            BackupError::InUse(_) => "database_in_use",
            BackupError::Io { .. } => "io",
            BackupError::Database { .. } => "database",
        }
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
    let what = what.into();
    move |source| BackupError::Io { what, source }
}

fn db_failed(what: impl Into<String>) -> impl FnOnce(sqlx::Error) -> BackupError {
    let what = what.into();
    move |source| BackupError::Database { what, source }
}

/// The file a `sqlite://…` database URL names (`None` for another scheme or an in-memory one).
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && !path.starts_with(":memory:")).then(|| PathBuf::from(path))
}

/// The commands that back up and restore a Postgres database, `file` being the dump (the
/// database URL is left to the shell's `$DATABASE_URL`, so no password is printed).
pub fn postgres_commands(file: &Path) -> (String, String) {
    let file = file.display();
    (
        format!("pg_dump --format=custom --file={file} \"$DATABASE_URL\""),
        format!("pg_restore --clean --if-exists --no-owner --dbname=\"$DATABASE_URL\" {file}"),
    )
}

/// What a backup or a restored database holds, counted (for the line the command prints).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contents {
    pub users: i64,
    pub connected_accounts: i64,
    pub api_keys: i64,
    pub webhook_endpoints: i64,
    /// Whether it carries the sealed key check (every database since migration 17 does).
    pub key_check: bool,
}

async fn contents(conn: &mut SqliteConnection) -> Result<Contents, sqlx::Error> {
    Ok(Contents {
        users: count(conn, "users").await?,
        connected_accounts: count(conn, "connected_accounts").await?,
        api_keys: count(conn, "api_keys").await?,
        webhook_endpoints: count(conn, "webhook_endpoints").await?,
        key_check: table_exists(conn, "key_check").await? && count(conn, "key_check").await? > 0,
    })
}

async fn count(conn: &mut SqliteConnection, table: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(conn)
        .await
}

async fn table_exists(conn: &mut SqliteConnection, name: &str) -> Result<bool, sqlx::Error> {
    let found: Option<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name = $1")
            .bind(name)
            .fetch_optional(conn)
            .await?;
    Ok(found.is_some())
}

fn options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false)
}

/// Writes a consistent copy of the SQLite database at `database` to `file`: a new file, readable
/// by its owner only. Works while a server uses the database.
pub async fn backup_sqlite(database: &Path, file: &Path) -> Result<Contents, BackupError> {
    if !database.is_file() {
        return Err(BackupError::NoDatabase(database.to_owned()));
    }
    // Made here, empty and 0600, so the copy is never readable by others even for a moment;
    // `create_new` refuses an existing file without a race. VACUUM INTO accepts an empty file.
    let mut new_file = OpenOptions::new();
    new_file.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut new_file, 0o600);
    match new_file.open(file) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(BackupError::FileExists(file.to_owned()))
        }
        Err(e) => return Err(io(format!("cannot create {}", file.display()))(e)),
    }
    let written = write_backup(database, file).await;
    if written.is_err() {
        let _ = std::fs::remove_file(file);
    }
    written
}

async fn write_backup(database: &Path, file: &Path) -> Result<Contents, BackupError> {
    let target = file
        .to_str()
        .ok_or_else(|| io("the backup's path")(std::io::Error::other("it is not UTF-8")))?;
    // Read-only: the backup never writes to the live database; the server's writes wait at most
    // the busy timeout for the snapshot's start.
    let mut live = options(database)
        .read_only(true)
        .busy_timeout(Duration::from_secs(30))
        .connect()
        .await
        .map_err(database_error(database))?;
    if !table_exists(&mut live, "users")
        .await
        .map_err(database_error(database))?
    {
        return Err(BackupError::NotStepgate(
            database.to_owned(),
            "it has no Stepgate tables",
        ));
    }
    sqlx::query("VACUUM INTO $1")
        .bind(target)
        .execute(&mut live)
        .await
        .map_err(db_failed(format!(
            "cannot write the backup {}",
            file.display()
        )))?;
    live.close().await.map_err(database_error(database))?;
    sync_file_and_folder(file)?;

    let mut copy = options(file)
        .read_only(true)
        .connect()
        .await
        .map_err(database_error(file))?;
    let check: String = sqlx::query_scalar("PRAGMA quick_check")
        .fetch_one(&mut copy)
        .await
        .map_err(database_error(file))?;
    if check != "ok" {
        return Err(BackupError::Database {
            what: format!("the backup {} does not check out", file.display()),
            source: sqlx::Error::Protocol(check),
        });
    }
    let found = contents(&mut copy).await.map_err(database_error(file))?;
    copy.close().await.map_err(database_error(file))?;
    Ok(found)
}

fn database_error(path: &Path) -> impl FnOnce(sqlx::Error) -> BackupError {
    db_failed(format!("cannot read {}", path.display()))
}

fn sync_file_and_folder(file: &Path) -> Result<(), BackupError> {
    File::open(file)
        .and_then(|f| f.sync_all())
        .map_err(io(format!("cannot write {} to disk", file.display())))?;
    if let Some(folder) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        // A folder's own fsync makes the new name durable (not possible on every platform).
        if let Ok(folder) = File::open(folder) {
            let _ = folder.sync_all();
        }
    }
    Ok(())
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub contents: Contents,
    /// Where the database that was in place went (`--force`), kept as it was.
    pub moved_aside: Option<PathBuf>,
    /// Migrations applied to bring the backup up to this version.
    pub migrations_applied: i64,
}

/// How to restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Replace an existing database (it is moved aside, never deleted).
    pub force: bool,
    /// Ends the name the old database is moved aside to: `<name>.before-restore-<stamp>`.
    pub stamp: String,
    pub now: i64,
}

/// Puts the backup `file` in place as the database at `database`, after proving it is a
/// Stepgate database that `secrets` opens. Refuses an existing database without
/// `options.force`, and one that a running server holds open.
pub async fn restore_sqlite(
    file: &Path,
    database: &Path,
    secrets: &SecretBox,
    options: RestoreOptions,
) -> Result<Restored, BackupError> {
    let (applied_before, sealed_check) = inspect_backup(file).await?;
    if sealed_check.is_some_and(|sealed| sealed_under_another_key(&sealed, secrets)) {
        return Err(BackupError::WrongKey(file.to_owned()));
    }
    let exists = database.exists();
    if exists && !options.force {
        return Err(BackupError::DatabaseExists(database.to_owned()));
    }
    if exists {
        refuse_if_in_use(database).await?;
    }
    let folder = match database.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => folder.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&folder).map_err(io(format!("cannot create {}", folder.display())))?;
    let name = database
        .file_name()
        .ok_or_else(|| BackupError::NoDatabase(database.to_owned()))?
        .to_string_lossy()
        .into_owned();
    let temp = folder.join(format!(".{name}.restoring-{}", std::process::id()));
    let proven = prove_copy(file, &temp, secrets, options.now, applied_before).await;
    let (contents, migrations_applied) = match proven {
        Ok(proven) => proven,
        Err(e) => {
            remove_with_sidecars(&temp);
            return Err(e);
        }
    };
    let moved_aside = if exists {
        let aside = folder.join(format!("{name}.before-restore-{}", options.stamp));
        // The write-ahead log goes with its database: left behind, it would be replayed into
        // the restored one.
        for sidecar in ["-wal", "-shm"] {
            let from = sidecar_of(database, sidecar);
            if from.exists() {
                std::fs::rename(&from, sidecar_of(&aside, sidecar))
                    .map_err(io(format!("cannot move {} aside", from.display())))?;
            }
        }
        std::fs::rename(database, &aside)
            .map_err(io(format!("cannot move {} aside", database.display())))?;
        Some(aside)
    } else {
        None
    };
    std::fs::rename(&temp, database).map_err(io(format!(
        "cannot put the backup at {}",
        database.display()
    )))?;
    sync_file_and_folder(database)?;
    Ok(Restored {
        contents,
        moved_aside,
        migrations_applied,
    })
}

fn sidecar_of(database: &Path, suffix: &str) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn remove_with_sidecars(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(sidecar_of(path, suffix));
    }
}

/// Whether the key check `sealed` names a key `secrets` does not hold: refused before anything
/// is copied (opening it would fail anyway, and be logged as a server's missing key). A value
/// sealed before key ids were written names none, and is left to opening.
fn sealed_under_another_key(sealed: &[u8], secrets: &SecretBox) -> bool {
    let ring = secrets.keyring();
    let prefixes: Vec<Vec<u8>> = ring
        .keys()
        .iter()
        .map(|key| SecretBox::new(key).newest_prefix())
        .collect();
    let newest = &prefixes[0];
    let magic = &newest[..newest.len() - ring.newest().id().len()];
    sealed.starts_with(magic) && !prefixes.iter().any(|p| sealed.starts_with(p))
}

/// Refuses what is not a Stepgate SQLite database, or is one from a newer version; the number of
/// migrations it has and its sealed key check, if it has one.
async fn inspect_backup(file: &Path) -> Result<(i64, Option<Vec<u8>>), BackupError> {
    let mut header = [0u8; 16];
    let read = File::open(file)
        .and_then(|mut f| f.read_exact(&mut header))
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => io(format!("cannot read {}", file.display()))(e),
            _ => BackupError::NotStepgate(file.to_owned(), "it is not a SQLite database"),
        });
    read?;
    if &header != SQLITE_HEADER {
        return Err(BackupError::NotStepgate(
            file.to_owned(),
            "it is not a SQLite database",
        ));
    }
    let mut conn = options(file)
        .read_only(true)
        .connect()
        .await
        .map_err(database_error(file))?;
    for table in ["_sqlx_migrations", "users", "sessions"] {
        if !table_exists(&mut conn, table)
            .await
            .map_err(database_error(file))?
        {
            return Err(BackupError::NotStepgate(
                file.to_owned(),
                "it has no Stepgate tables",
            ));
        }
    }
    let (applied, newest): (i64, Option<i64>) =
        sqlx::query_as("SELECT COUNT(*), MAX(version) FROM _sqlx_migrations")
            .fetch_one(&mut conn)
            .await
            .map_err(database_error(file))?;
    let sealed_check = if table_exists(&mut conn, "key_check")
        .await
        .map_err(database_error(file))?
    {
        sqlx::query_scalar("SELECT sealed FROM key_check WHERE id = 1")
            .fetch_optional(&mut conn)
            .await
            .map_err(database_error(file))?
    } else {
        None
    };
    conn.close().await.map_err(database_error(file))?;
    let known = known_migrations();
    if let Some(newest) = newest.filter(|v| *v > known) {
        return Err(BackupError::NewerVersion(file.to_owned(), newest));
    }
    Ok((applied, sealed_check))
}

/// The newest migration this build carries.
fn known_migrations() -> i64 {
    sqlx::migrate!("./migrations/sqlite")
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0)
}

/// Copies `file` to `temp` (0600), brings it up to date and opens it with the key; what it holds
/// and how many migrations were applied.
async fn prove_copy(
    file: &Path,
    temp: &Path,
    secrets: &SecretBox,
    now: i64,
    applied_before: i64,
) -> Result<(Contents, i64), BackupError> {
    remove_with_sidecars(temp);
    let mut out = OpenOptions::new();
    out.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut out, 0o600);
    let mut out = out
        .open(temp)
        .map_err(io(format!("cannot create {}", temp.display())))?;
    let mut input = File::open(file).map_err(io(format!("cannot read {}", file.display())))?;
    std::io::copy(&mut input, &mut out)
        .and_then(|_| out.flush())
        .map_err(io(format!("cannot copy to {}", temp.display())))?;
    drop(out);

    let url = format!("sqlite://{}", temp.display());
    let pool = crate::store::db::connect(&url)
        .await
        .map_err(db_failed(format!("cannot update {}", file.display())))?;
    // A backup made before the key check has none yet: this records one with the key used now.
    let checked = key_check::verify_or_record(&pool, secrets, now).await;
    pool.close().await;
    drop(pool);
    match checked {
        Ok(()) => {}
        Err(KeyCheckError::WrongKey) => return Err(BackupError::WrongKey(file.to_owned())),
        Err(KeyCheckError::Database(e)) => {
            return Err(db_failed(format!("cannot read {}", file.display()))(e))
        }
    }
    let mut conn = standalone(temp).await?;
    let found = contents(&mut conn).await.map_err(database_error(temp))?;
    let applied_after: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .map_err(database_error(temp))?;
    conn.close().await.map_err(database_error(temp))?;
    File::open(temp)
        .and_then(|f| f.sync_all())
        .map_err(io(format!("cannot write {} to disk", temp.display())))?;
    Ok((found, applied_after - applied_before))
}

/// A connection to `temp` once the pool that migrated it has let go, with the file made one
/// file again (no write-ahead log beside it) before it is renamed into place; the server turns
/// WAL on again when it opens it. sqlx's `Pool::close` may return with a connection still
/// closing, so the exclusive lock this needs is tried again for a few seconds.
async fn standalone(temp: &Path) -> Result<SqliteConnection, BackupError> {
    let mut tries = 0;
    loop {
        let mut conn = options(temp)
            .busy_timeout(Duration::ZERO)
            .connect()
            .await
            .map_err(database_error(temp))?;
        let mode: Result<String, _> = sqlx::query_scalar("PRAGMA journal_mode = DELETE")
            .fetch_one(&mut conn)
            .await;
        match mode {
            Ok(mode) if mode.eq_ignore_ascii_case("delete") => return Ok(conn),
            Ok(_) | Err(sqlx::Error::Database(_)) if tries < 100 => {
                let _ = conn.close().await;
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(mode) => {
                return Err(db_failed(format!("cannot finish {}", temp.display()))(
                    sqlx::Error::Protocol(format!("journal mode stays {mode}")),
                ))
            }
            Err(e) => return Err(database_error(temp)(e)),
        }
    }
}

/// Refuses when another process holds the database open: a server keeps its connections (and
/// so a shared lock in WAL mode) for as long as it runs, so an exclusive lock is refused at
/// once. A server started after this check is not seen: stop servers before restoring.
async fn refuse_if_in_use(database: &Path) -> Result<(), BackupError> {
    let mut conn = options(database)
        .busy_timeout(Duration::ZERO)
        .connect()
        .await
        .map_err(database_error(database))?;
    let locked = async {
        sqlx::query("PRAGMA locking_mode = EXCLUSIVE")
            .execute(&mut conn)
            .await?;
        sqlx::query("BEGIN EXCLUSIVE").execute(&mut conn).await?;
        sqlx::query("COMMIT").execute(&mut conn).await
    }
    .await;
    match locked {
        Ok(_) => {}
        Err(sqlx::Error::Database(e))
            if e.message().contains("locked") || e.message().contains("busy") =>
        {
            let _ = conn.close().await;
            return Err(BackupError::InUse(database.to_owned()));
        }
        Err(e) => return Err(database_error(database)(e)),
    }
    conn.close().await.map_err(database_error(database))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::base::clock::SystemClock;
    use crate::base::secrets::SecretKey;
    use crate::store::db::sqlite_url_in;
    use crate::test_support::test_config;
    use crate::Engine;

    const PASSWORD: &str = "correct-horse-battery-staple-17";

    /// An engine on SQLite in `dir` whatever the run's database (backups are SQLite's).
    async fn sqlite_engine(dir: &Path, key: SecretKey) -> Engine {
        let mut config = test_config(dir).await;
        config.database_url = sqlite_url_in(dir);
        config.redis_url = None;
        config.keys = key.into();
        Engine::open_with_clock(config, Arc::new(SystemClock))
            .await
            .unwrap()
    }

    fn restore_options(force: bool) -> RestoreOptions {
        RestoreOptions {
            force,
            stamp: "20261206T080000Z".into(),
            now: 1_700_000_000,
        }
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn a_backup_taken_while_writing_restores_only_with_its_key_and_never_over_a_database_unasked(
    ) {
        let live = tempfile::tempdir().unwrap();
        let key = SecretKey([7; 32]);
        let engine = sqlite_engine(live.path(), key.clone()).await;
        engine
            .register("first@example.org", PASSWORD, PASSWORD)
            .await
            .unwrap();
        // Sessions are written all along the backup.
        let writer = tokio::spawn({
            let engine = engine.clone();
            async move {
                let user = engine
                    .register("busy@example.org", PASSWORD, PASSWORD)
                    .await
                    .unwrap();
                for _ in 0..200 {
                    engine.open_session(user.id).await.unwrap();
                }
            }
        });
        let out = tempfile::tempdir().unwrap();
        let file = out.path().join("stepgate-backup.db");
        let database = live.path().join("stepgate.db");
        let backed_up = backup_sqlite(&database, &file).await.unwrap();
        writer.await.unwrap();
        assert!(backed_up.key_check && backed_up.users >= 1, "{backed_up:?}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let bytes = std::fs::read(&file).unwrap();
        for key_form in [
            key.as_bytes().to_vec(),
            hex::encode(key.as_bytes()).into_bytes(),
        ] {
            assert!(
                !bytes
                    .windows(key_form.len())
                    .any(|w| w == key_form.as_slice()),
                "the key is never in a backup"
            );
        }
        assert!(matches!(
            backup_sqlite(&database, &file).await,
            Err(BackupError::FileExists(_))
        ));

        // Another key: refused, and nothing is left in the folder.
        let elsewhere = tempfile::tempdir().unwrap();
        let target = elsewhere.path().join("stepgate.db");
        let wrong = restore_sqlite(
            &file,
            &target,
            &SecretBox::new(&SecretKey([8; 32])),
            restore_options(false),
        )
        .await
        .unwrap_err();
        assert_eq!(wrong.code(), "wrong_key", "{wrong}");
        assert!(
            files_in(elsewhere.path()).is_empty(),
            "{:?}",
            files_in(elsewhere.path())
        );

        let restored = restore_sqlite(
            &file,
            &target,
            &SecretBox::new(&key),
            restore_options(false),
        )
        .await
        .unwrap();
        assert_eq!(restored.contents, backed_up);
        assert_eq!(restored.moved_aside, None);
        assert_eq!(files_in(elsewhere.path()), ["stepgate.db"]);

        let again = restore_sqlite(
            &file,
            &target,
            &SecretBox::new(&key),
            restore_options(false),
        )
        .await
        .unwrap_err();
        assert_eq!(again.code(), "database_exists", "{again}");
        let running = sqlite_engine(elsewhere.path(), key.clone()).await;
        let busy = restore_sqlite(&file, &target, &SecretBox::new(&key), restore_options(true))
            .await
            .unwrap_err();
        assert_eq!(busy.code(), "database_in_use", "{busy}");
        running.pool().close().await;
        drop(running);
        // As a stopped server's, the closed pool's connections go within moments.
        let mut forced = None;
        for _ in 0..100 {
            match restore_sqlite(&file, &target, &SecretBox::new(&key), restore_options(true)).await
            {
                Err(BackupError::InUse(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
                done => {
                    forced = Some(done.unwrap());
                    break;
                }
            }
        }
        let forced = forced.expect("the database is let go");
        let aside = elsewhere
            .path()
            .join("stepgate.db.before-restore-20261206T080000Z");
        assert_eq!(forced.moved_aside.as_deref(), Some(aside.as_path()));
        assert!(aside.is_file(), "the old database is kept");

        let reopened = sqlite_engine(elsewhere.path(), key).await;
        assert!(reopened
            .ensure_user("first@example.org", PASSWORD)
            .await
            .is_ok_and(|created| !created));
    }

    #[tokio::test]
    async fn what_is_not_a_stepgate_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "not a database at all, just some words").unwrap();
        let target = dir.path().join("data").join("stepgate.db");
        let secrets = SecretBox::new(&SecretKey([7; 32]));
        let refused = restore_sqlite(&text, &target, &secrets, restore_options(false))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), "not_stepgate");
        assert!(
            refused.to_string().contains("not a SQLite database"),
            "{refused}"
        );

        let other = dir.path().join("other.db");
        let mut conn = SqliteConnectOptions::new()
            .filename(&other)
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        sqlx::query("CREATE TABLE notes (body TEXT)")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let refused = restore_sqlite(&other, &target, &secrets, restore_options(false))
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains("no Stepgate tables"),
            "{refused}"
        );
        assert!(!target.exists());
    }

    #[test]
    fn the_database_file_comes_from_its_url_and_postgres_gets_its_own_tools() {
        assert_eq!(
            sqlite_path("sqlite:///var/lib/stepgate/stepgate.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/stepgate/stepgate.db"))
        );
        assert_eq!(
            sqlite_path("sqlite://data/stepgate.db"),
            Some(PathBuf::from("data/stepgate.db"))
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://u@h/db"), None);
        let (dump, restore) = postgres_commands(Path::new("stepgate.dump"));
        assert_eq!(
            dump,
            "pg_dump --format=custom --file=stepgate.dump \"$DATABASE_URL\""
        );
        assert!(restore.starts_with("pg_restore ") && restore.ends_with(" stepgate.dump"));
    }
}
