//! The flow machinery: a flow's state, its stores (database or Redis), the runner that drives a
//! provider step by step, the flow a sign-in link opens, and the one HTTP client every upstream
//! request goes through.
//!
//! Who imports what: Imports `base`, `store`, `providers` (the runner drives them), `sign_in` and `accounts` (a
//! finished flow opens a session or stores an account). Providers import `flow` and `upstream`
//! from here, never the runner.
//! The map of every folder is `engine/README.md`.

pub mod flow;
pub mod redis_store;
pub mod runner;
pub mod sign_in_link_flow;
pub mod store;
pub mod upstream;
