//! The second factor: TOTP codes, recovery codes, enrolment (by the web TOTP site or an authenticator app),
//! verification and its back-off, and the settings that turn it on and off.
//!
//! Who imports what: Imports `base`, `store` and `sign_in::users` (whose factor it is); never the rest of `sign_in`.
//! The map of every folder is `engine/README.md`.

pub mod attempts;
pub mod enrolment;
pub mod passkeys;
pub mod recovery_codes;
pub mod settings;
#[cfg(test)]
pub(crate) mod soft_authenticator;
pub mod totp;
pub mod totp_site;
pub mod two_factor;
pub mod verification;
