//! The second factor: TOTP codes, passkeys (WebAuthn), recovery codes, enrolment (by the web TOTP
//! site or an authenticator app), verification and its back-off, and the settings that add and
//! remove them.
//!
//! Who imports what: Imports `base`, `store` and `sign_in::users` (whose factor it is); never the rest of `sign_in`.
//! The map of every folder is `engine/README.md`.

pub mod attempts;
pub mod enrolment;
pub mod passkeys;
pub mod recovery_codes;
pub mod settings;
/// A software passkey authenticator for the tests (no browser needed).
#[cfg(test)]
pub(crate) mod soft_authenticator;
pub mod totp;
pub mod totp_site;
pub mod two_factor;
pub mod verification;
