//! Where state lives: the database pool and its dialects (SQLite, Postgres), migrations, the
//! Redis connection and its hot-state scripts, whether they answer (readiness), and backing up
//! and restoring a SQLite database (`backup.rs`).
//!
//! Who imports what: Imports only `base` and `error`; every room above may import it.
//! The map of every folder is `engine/README.md`.

pub mod backup;
pub mod db;
pub mod key_check;
pub mod readiness;
pub mod redis;
pub mod reseal;
