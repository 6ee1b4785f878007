//! Connected third-party accounts: their sealed store, health checks, renewals (upkeep), the
//! credentials handed to the users' own apps, the proxy that calls providers' APIs for them,
//! and sign-in links (an account's sign-in steps for whoever holds its phone).
//!
//! Who imports what: Imports `base`, `store`, `flows::upstream`, `providers` (to renew) and `apps::events` (what
//! happened is recorded and told).
//! The map of every folder is `engine/README.md`.

pub mod app_credentials;
pub mod health;
pub mod leases;
pub mod proxy;
pub mod sign_in_links;
pub mod status_counts;
pub mod store;
pub mod upkeep;
