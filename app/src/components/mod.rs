//! Pieces the pages share.

mod code_input;
mod error_banner;
mod field;
mod needs_wasm;
mod one_time_secret;
mod provider_step;
mod signed_in;

pub use code_input::CodeInput;
pub use error_banner::ErrorBanner;
pub use field::Field;
pub use needs_wasm::{use_hydrated, NotReadyNotice, NOT_READY};
pub use one_time_secret::OneTimeSecret;
#[cfg(feature = "ssr")]
pub use provider_step::back_to_step;
pub use provider_step::{StepInputs, StepNotes};
pub use signed_in::{SignedIn, SiteNav};
