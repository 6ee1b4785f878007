//! `stepgate backup FILE` and `stepgate restore FILE [--force]` on SQLite (the work is in
//! `engine/src/store/backup.rs`); on Postgres they name the `pg_dump` / `pg_restore` commands.
//! The key is never in a backup: each command says where it is, since a backup without it opens
//! nothing.

use std::path::Path;

use engine::base::crypto::SecretBox;
use engine::store::backup::{self as store, Contents, RestoreOptions};
use engine::store::db::Dialect;

use crate::config::Config;

use super::CliResult;

/// The configured SQLite file, or the one line that says what to do on Postgres instead.
fn sqlite_file(config: &Config, file: &Path) -> Result<std::path::PathBuf, String> {
    if Dialect::of_url(&config.database_url) == Some(Dialect::Postgres) {
        let (dump, restore) = store::postgres_commands(file);
        return Err(format!(
            "this Stepgate keeps its data in Postgres: back it up with `{dump}` and restore it with `{restore}` (the key is not in the dump either: keep it apart)"
        ));
    }
    store::sqlite_path(&config.database_url)
        .ok_or_else(|| "DATABASE_URL names no database file to back up".to_owned())
}

fn error(e: store::BackupError) -> Box<dyn std::error::Error> {
    format!("{e} [{}]", e.code()).into()
}

fn counted(contents: &Contents) -> String {
    format!(
        "{} accounts, {} connected accounts, {} API keys, {} webhook endpoints",
        contents.users, contents.connected_accounts, contents.api_keys, contents.webhook_endpoints
    )
}

/// Where the key the database needs lives, in words.
fn key_place(config: &Config) -> String {
    match config.key.file() {
        Some(file) if file.starts_with(&config.data_dir) => format!(
            "the key file {} (inside the data folder: a copy of that folder carries the key too; keep the key elsewhere and set STEPGATE_KEY_FILE)",
            file.display()
        ),
        Some(file) => format!("the key file {}", file.display()),
        None => "the key in STEPGATE_KEYS / STEPGATE_KEY".to_owned(),
    }
}

/// `stepgate backup FILE`: a consistent copy while the server runs; never over an existing file.
pub async fn backup(config: &Config, file: &Path) -> CliResult {
    let database = sqlite_file(config, file)?;
    let contents = store::backup_sqlite(&database, file).await.map_err(error)?;
    let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    println!(
        "Backed up {} to {} ({}; {size} bytes, readable by you only).",
        database.display(),
        file.display(),
        counted(&contents)
    );
    println!(
        "The key is not in the backup, and the backup is useless without it: keep a copy of {} apart from the backup.",
        key_place(config)
    );
    Ok(())
}

/// `stepgate restore FILE [--force]`: puts a backup in place once the configured key opens it.
/// Stop the server first (a server holding the database open is refused).
pub async fn restore(config: &Config, file: &Path, force: bool) -> CliResult {
    let database = sqlite_file(config, file)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let secrets = SecretBox::with_keyring(config.key.clone());
    let restored = store::restore_sqlite(
        file,
        &database,
        &secrets,
        RestoreOptions {
            force,
            stamp: stamp(now),
            now,
        },
    )
    .await
    .map_err(error)?;
    println!(
        "Restored {} into {} ({}); {} opens it.",
        file.display(),
        database.display(),
        counted(&restored.contents),
        key_place(config)
    );
    if restored.migrations_applied > 0 {
        println!(
            "Brought it up to this version: {} migrations applied.",
            restored.migrations_applied
        );
    }
    if let Some(aside) = &restored.moved_aside {
        println!(
            "The database that was there is kept as {}.",
            aside.display()
        );
    }
    Ok(())
}

/// `20261206T081500Z`: when, in UTC, for the name the old database is moved aside to.
fn stamp(unix: i64) -> String {
    let (year, month, day) = engine::dates::civil_from_days(unix.div_euclid(86_400));
    let seconds = unix.rem_euclid(86_400);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        seconds / 3600,
        seconds % 3600 / 60,
        seconds % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_stamp_is_utc_and_sorts_by_time() {
        assert_eq!(super::stamp(1_700_000_000), "20231114T221320Z");
        assert!(super::stamp(1_700_000_000) < super::stamp(1_700_000_001));
    }
}
