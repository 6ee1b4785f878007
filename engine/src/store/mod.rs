//! Where state lives: the database pool and its dialects (SQLite, Postgres), migrations, the
//! Redis connection and its hot-state scripts, and whether they answer (readiness).
//!
//! Who imports what: Imports only `base` and `error`; every room above may import it.
//! The map of every folder is `engine/README.md`.

pub mod db;
pub mod key_check;
pub mod readiness;
pub mod redis;
