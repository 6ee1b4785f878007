//! Pieces the pages share.

mod code_input;
mod error_banner;
mod field;
mod totp_popup;

pub use code_input::CodeInput;
pub use error_banner::ErrorBanner;
pub use field::Field;
pub use totp_popup::{code_from_message, TotpPopupButton};
