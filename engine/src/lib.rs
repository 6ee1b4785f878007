//! Stepgate's flow engine. Every login, into Stepgate or into a third-party account, is a
//! [`flows::flow::Flow`]: a small server-held state machine that a [`providers::Provider`]
//! drives step by step. Nothing here knows about Leptos or HTTP handlers.
//!
//! [`Engine`] (`engine.rs`) is the one facade the app and the server call; each folder is one
//! concern with its own services, and `engine/README.md` maps them and says which may import
//! which (`scripts/check-engine-imports.py` holds the code to it).
//!
//! Built without the default `server` feature, the crate holds only the wire types the browser
//! also needs ([`error::ErrorCode`] and [`view`]).

pub mod dates;
pub mod error;
pub mod view;

#[cfg(feature = "server")]
pub mod accounts;
#[cfg(feature = "server")]
pub mod apps;
#[cfg(feature = "server")]
pub mod base;
#[cfg(feature = "server")]
mod engine;
#[cfg(feature = "server")]
pub mod flows;
#[cfg(feature = "server")]
pub mod providers;
#[cfg(all(test, feature = "server"))]
mod scale_out_tests;
#[cfg(feature = "server")]
pub mod second_factor;
#[cfg(feature = "server")]
pub mod sign_in;
#[cfg(feature = "server")]
pub mod store;
#[cfg(all(test, feature = "server"))]
pub(crate) mod test_support;

#[cfg(feature = "server")]
pub use accounts::health::DEFAULT_CHECK_INTERVAL;
#[cfg(feature = "server")]
pub use engine::{Engine, EngineConfig, DEFAULT_REDIS_PREFIX};
pub use error::ErrorCode;
#[cfg(feature = "server")]
pub use flows::runner::{Completion, Progress};
#[cfg(feature = "server")]
pub use sign_in::local_accounts::SignInRefusal;
