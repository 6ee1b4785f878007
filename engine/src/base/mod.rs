//! What every room may use: the clock, sealing at rest, the master key, the email rule.
//!
//! Who imports what: Imports nothing else of the engine but `error`.
//! The map of every folder is `engine/README.md`.

pub mod clock;
pub mod crypto;
pub mod email;
pub mod fields;
pub mod metrics;
pub mod secrets;
