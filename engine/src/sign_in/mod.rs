//! Signing in to Stepgate itself: local accounts and registration, passwords and their throttle,
//! sessions and the list of them, confirming it's you (sudo), invites and the admin's acts.
//!
//! Who imports what: Imports `base`, `store`, `second_factor` (a sign-in may need a code; sudo asks for one).
//! The map of every folder is `engine/README.md`.

pub mod account_security;
pub mod admin;
pub mod invites;
pub mod local_accounts;
pub mod password;
pub mod password_policy;
pub mod registration;
pub mod session_list;
pub mod sessions;
pub mod sudo;
pub mod throttle;
pub mod throttle_counters;
pub mod users;
