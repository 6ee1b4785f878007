//! Simulated third-party services ("doubles") for the demo and the tests, each host on its own
//! origin: the web TOTP provider, Librus Synergia (api.librus.pl + synergia.librus.pl, whose
//! gateway also serves the data), the Xiaomi account service (account.xiaomi.com +
//! sts.api.io.mi.com) and its Mi Cloud API (api.io.mi.com), and two Azure AD B2C logins: Lynk &
//! Co (login.lynkco.com with SMS codes + its IAM service, and the connected-car services
//! delegated-driver-tls and user-lifecycle-tls.aion.connectedcar.cloud) and FlameConnect
//! (gdhvb2cflameconnect.b2clogin.com, as MSAL drives it, and its API mobileapi.gdhv-iot.com).
//! [`doubles::DOUBLES`] is the table of them.
//!
//! The Librus, Xiaomi, Lynk & Co and FlameConnect doubles only ever name the REAL origins in
//! `Location` headers, JSON and cookies; Stepgate maps those origins onto the doubles
//! (`STEPGATE_UPSTREAMS`). Every host also answers `POST /testing/faults` (see [`faults`]) and
//! the data-API controls `POST /testing/invalidate-api-tokens`, `GET /testing/last-api-request`
//! (see [`api`]).

pub mod api;
pub mod b2c;
pub mod doubles;
pub mod faults;
pub mod flameconnect;
pub mod hosts;
pub mod librus;
pub mod lynkco;
pub mod totp_site;
mod util;
pub mod xiaomi;
