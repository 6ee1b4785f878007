//! What the engine's test modules share: an engine on a manual clock in a temporary folder,
//! form input, flow steps that answer with only the error code of a refusal, an account with
//! TOTP on, and a [`TwoFactor`] store with a user (and a seed from the TOTP site).

use std::path::Path;
use std::sync::Arc;

use crate::clock::ManualClock;
use crate::crypto::SecretBox;
use crate::db;
use crate::email::Email;
use crate::providers::{Input, Purpose};
use crate::secrets::SecretKey;
use crate::totp;
use crate::totp_enrolment::RegistrationCallback;
use crate::totp_site::TotpSite;
use crate::two_factor::TwoFactor;
use crate::users::{User, UserId, UserStore};
use crate::{Engine, EngineConfig, ErrorCode, Progress};

/// The TOTP site test engines link to.
pub(crate) fn totp_site() -> TotpSite {
    TotpSite {
        base_url: "http://totp.test".into(),
        issuer: "Stepgate".into(),
    }
}

/// An engine configuration with its database in `dir`.
pub(crate) fn test_config(dir: &Path) -> EngineConfig {
    EngineConfig::new(db::sqlite_url_in(dir), SecretKey([7; 32]), totp_site())
}

/// An engine on a manual clock, its database in `dir`.
pub(crate) async fn engine_in(dir: &tempfile::TempDir) -> (Engine, ManualClock) {
    engine_with(test_config(dir.path())).await
}

/// An engine opened with `config` on a manual clock.
pub(crate) async fn engine_with(config: EngineConfig) -> (Engine, ManualClock) {
    let clock = ManualClock::at(1_700_000_000);
    (
        Engine::open_with_clock(config, Arc::new(clock.clone()))
            .await
            .unwrap(),
        clock,
    )
}

/// `start_flow` for a sign-in, with only the error code of a refusal.
pub(crate) async fn start(
    engine: &Engine,
    provider: &str,
    owner: Option<String>,
    input: &Input,
) -> Result<Progress, ErrorCode> {
    engine
        .start_flow(provider, Purpose::SignIn, owner, input)
        .await
        .map_err(|e| e.code)
}

/// `submit_flow`, with only the error code of a refusal.
pub(crate) async fn submit(
    engine: &Engine,
    flow_id: &str,
    owner: Option<&str>,
    input: &Input,
) -> Result<Progress, ErrorCode> {
    engine
        .submit_flow(flow_id, owner, input)
        .await
        .map_err(|e| e.code)
}

/// Form input from `(field, value)` pairs.
pub(crate) fn input(pairs: &[(&str, &str)]) -> Input {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Registers a user with TOTP on (enrolled through an authenticator app) and returns the
/// secret, so tests can compute codes.
pub(crate) async fn user_with_totp(engine: &Engine, email: &str) -> (User, Vec<u8>) {
    let user = engine
        .register(email, "password-1", "password-1")
        .await
        .unwrap();
    let tf = engine.two_factor();
    let enrollment = tf
        .begin_app_enrollment(user.id, email, engine.now())
        .await
        .unwrap();
    let secret = totp::base32_decode(&enrollment.secret_base32).unwrap();
    let code = totp::code_at(&secret, engine.now(), 6);
    tf.confirm_app_enrollment(user.id, &code, engine.now())
        .await
        .unwrap();
    (user, secret)
}

// The two-factor store on its own.

/// When the two-factor tests run.
pub(crate) const NOW: i64 = 1_700_000_010;
/// The seed the TOTP site hands out in the two-factor tests.
pub(crate) const SEED: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

/// A two-factor store with one user (TOTP off).
pub(crate) async fn two_factor_in(dir: &tempfile::TempDir) -> (TwoFactor, UserId) {
    let pool = db::connect(&db::sqlite_url_in(dir.path())).await.unwrap();
    let users = UserStore::new(pool.clone());
    let user = users
        .create(&Email::parse("t@example.org").unwrap(), "hash", NOW)
        .await
        .unwrap();
    let two_factor = TwoFactor::new(pool, SecretBox::new(&SecretKey([3; 32])), totp_site());
    (two_factor, user)
}

/// [`SEED`], decoded.
pub(crate) fn seed_secret() -> Vec<u8> {
    totp::base32_decode(SEED).unwrap()
}

/// The TOTP site's successful registration callback for [`SEED`].
pub(crate) fn callback(reg_token: &str, code: &str, timestamp: i64) -> RegistrationCallback {
    RegistrationCallback {
        success: Some("true".into()),
        seed_id: Some("seed_abc123".into()),
        seed: Some(SEED.into()),
        code: Some(code.into()),
        reg_token: Some(reg_token.into()),
        timestamp: Some(timestamp.to_string()),
        error: None,
    }
}

/// A two-factor store with one user, enrolled through the TOTP site at [`NOW`].
pub(crate) async fn enrolled(dir: &tempfile::TempDir) -> (TwoFactor, UserId) {
    let (tf, user) = two_factor_in(dir).await;
    let token = tf.begin_site_enrollment(user, NOW).await.unwrap();
    let code = totp::code_at(&seed_secret(), NOW, 6);
    tf.complete_site_enrollment(user, &callback(&token, &code, NOW), NOW)
        .await
        .unwrap();
    (tf, user)
}
