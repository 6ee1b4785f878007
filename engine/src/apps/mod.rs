//! The users' own apps: API keys and their rate buckets, webhooks (where they may go, how they
//! are signed and retried), the audit events they report and the reads they make (counted).
//!
//! Who imports what: Imports `base`, `store` and `accounts::store` (an event names its account).
//! The map of every folder is `engine/README.md`.

pub mod api_keys;
pub mod api_rate;
pub mod events;
pub mod read_counts;
pub mod webhook_destination;
pub mod webhooks;
