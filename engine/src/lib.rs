//! Stepgate's flow engine. Every login, into Stepgate or into a third-party account, is a
//! [`flow::Flow`]: a small server-held state machine that a [`providers::Provider`] drives step
//! by step. Nothing here knows about Leptos or HTTP handlers.
//!
//! Built without the default `server` feature, the crate holds only the wire types the browser
//! also needs ([`error::ErrorCode`] and [`view`]).

pub mod dates;
pub mod error;
pub mod view;

#[cfg(feature = "server")]
mod account_health;
#[cfg(feature = "server")]
mod account_security;
#[cfg(feature = "server")]
pub mod accounts;
#[cfg(feature = "server")]
pub mod admin;
#[cfg(feature = "server")]
pub mod api_keys;
#[cfg(feature = "server")]
mod api_rate;
#[cfg(feature = "server")]
mod app_credentials;
#[cfg(feature = "server")]
pub mod clock;
#[cfg(feature = "server")]
pub mod crypto;
#[cfg(feature = "server")]
pub mod db;
#[cfg(feature = "server")]
pub mod email;
#[cfg(feature = "server")]
mod engine;
#[cfg(feature = "server")]
pub mod events;
#[cfg(feature = "server")]
pub mod flow;
#[cfg(feature = "server")]
mod flow_runner;
#[cfg(feature = "server")]
pub mod invites;
#[cfg(feature = "server")]
mod local_accounts;
#[cfg(feature = "server")]
pub mod password;
#[cfg(feature = "server")]
pub mod password_policy;
#[cfg(feature = "server")]
pub mod providers;
#[cfg(feature = "server")]
mod redis_counters;
#[cfg(feature = "server")]
pub mod redis_store;
#[cfg(feature = "server")]
pub mod registration;
#[cfg(all(test, feature = "server"))]
mod scale_out_tests;
#[cfg(feature = "server")]
pub mod second_factor_attempts;
#[cfg(feature = "server")]
pub mod secrets;
#[cfg(feature = "server")]
pub mod session_list;
#[cfg(feature = "server")]
pub mod sessions;
#[cfg(feature = "server")]
pub mod sign_in_throttle;
#[cfg(feature = "server")]
pub mod store;
#[cfg(feature = "server")]
pub mod sudo;
#[cfg(all(test, feature = "server"))]
pub(crate) mod test_support;
#[cfg(feature = "server")]
pub mod totp;
#[cfg(feature = "server")]
pub mod totp_enrolment;
#[cfg(feature = "server")]
mod totp_settings;
#[cfg(feature = "server")]
pub mod totp_site;
#[cfg(feature = "server")]
pub mod totp_verification;
#[cfg(feature = "server")]
pub mod two_factor;
#[cfg(feature = "server")]
pub mod upkeep;
#[cfg(feature = "server")]
pub mod upstream;
#[cfg(feature = "server")]
pub mod users;
#[cfg(feature = "server")]
pub mod webhook_destination;
#[cfg(feature = "server")]
pub mod webhooks;

#[cfg(feature = "server")]
pub use account_health::DEFAULT_CHECK_INTERVAL;
#[cfg(feature = "server")]
pub use engine::{Completion, Engine, EngineConfig, Progress, DEFAULT_REDIS_PREFIX};
pub use error::ErrorCode;
#[cfg(feature = "server")]
pub use local_accounts::SignInRefusal;
