//! Connected third-party accounts: their sealed store, health checks, renewals (upkeep) and the
//! credentials handed to the users' own apps.
//!
//! Who imports what: Imports `base`, `store`, `flows::upstream`, `providers` (to renew) and `apps::events` (what
//! happened is recorded and told).
//! The map of every folder is `engine/README.md`.

pub mod app_credentials;
pub mod health;
pub mod leases;
pub mod store;
pub mod upkeep;
