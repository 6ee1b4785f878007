//! Simulated third-party services ("doubles") for the demo and the tests, each host on its own
//! origin: the web TOTP provider, Librus Synergia (api.librus.pl + synergia.librus.pl) and the
//! Xiaomi account service (account.xiaomi.com + sts.api.io.mi.com).
//!
//! The Librus and Xiaomi doubles only ever name the REAL origins in `Location` headers, JSON and
//! cookies; Stepgate maps those origins onto the doubles (`STEPGATE_UPSTREAMS`). Every host also
//! answers `POST /testing/faults` (see [`faults`]).

pub mod faults;
pub mod hosts;
pub mod librus;
pub mod totp_site;
mod util;
pub mod xiaomi;
