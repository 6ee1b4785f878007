//! Pieces the pages share.

mod error_banner;
mod field;

pub use error_banner::ErrorBanner;
pub use field::Field;
