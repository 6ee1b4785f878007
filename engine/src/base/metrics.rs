//! Every Prometheus metric Stepgate exports, named and labelled here once.
//!
//! The rooms call these small functions where the fact is known; the server installs the
//! exporter (`server/src/metrics.rs`, `STEPGATE_METRICS_ADDR`). Without it the `metrics` crate
//! has no recorder and every call here is a no-op, so the engine's tests need nothing.
//!
//! Label values are bounded: fixed words, provider names, step names, `ErrorCode`'s snake_case
//! names, HTTP statuses and route templates. Never an email, an id, a URL or a raw path.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `stepgate_sign_ins_total` | counter | `outcome`: [`SignInOutcome`] |
//! | `stepgate_second_factor_tries_total` | counter | `kind` (`totp`, `recovery_code`, `passkey`), `outcome` (`ok`, `wrong`, `replayed`, `rate_limited`, `error`) |
//! | `stepgate_flows_started_total` | counter | `provider`, `purpose` (`sign_in`, `connect`, `reauth`) |
//! | `stepgate_flows_completed_total` | counter | `provider`, `purpose` |
//! | `stepgate_flows_failed_total` | counter | `provider`, `purpose`, `code` |
//! | `stepgate_upstream_requests_total` | counter | `provider`, `step`, `outcome` (`2xx`…`5xx`, or `timeout`, `cannot_connect`, `upstream_too_large`) |
//! | `stepgate_upstream_request_duration_seconds` | histogram | `provider`, `step` |
//! | `stepgate_renewals_total` | counter | `provider`, `outcome` (`renewed`, `unchanged`, `rejected`, `unreachable`) |
//! | `stepgate_accounts` | gauge | `status` (`active`, `needs_sign_in`, `degraded`) |
//! | `stepgate_webhook_deliveries_total` | counter | `outcome` (`delivered`, `retrying`, `failed`) |
//! | `stepgate_api_requests_total` | counter | `route` (the matched template), `status` |
//! | `stepgate_api_request_duration_seconds` | histogram | `route` |
//! | `stepgate_password_hash_queue_depth` | gauge | |
//! | `stepgate_password_hash_queue_wait_seconds` | histogram | |
//! | `stepgate_password_hash_busy_total` | counter | |

use std::time::{Duration, Instant};

use crate::error::ErrorCode;

pub const SIGN_INS: &str = "stepgate_sign_ins_total";
pub const SECOND_FACTOR_TRIES: &str = "stepgate_second_factor_tries_total";
pub const FLOWS_STARTED: &str = "stepgate_flows_started_total";
pub const FLOWS_COMPLETED: &str = "stepgate_flows_completed_total";
pub const FLOWS_FAILED: &str = "stepgate_flows_failed_total";
pub const UPSTREAM_REQUESTS: &str = "stepgate_upstream_requests_total";
pub const UPSTREAM_DURATION: &str = "stepgate_upstream_request_duration_seconds";
pub const RENEWALS: &str = "stepgate_renewals_total";
pub const ACCOUNTS: &str = "stepgate_accounts";
pub const WEBHOOK_DELIVERIES: &str = "stepgate_webhook_deliveries_total";
pub const API_REQUESTS: &str = "stepgate_api_requests_total";
pub const API_DURATION: &str = "stepgate_api_request_duration_seconds";
pub const HASH_QUEUE_DEPTH: &str = "stepgate_password_hash_queue_depth";
pub const HASH_QUEUE_WAIT: &str = "stepgate_password_hash_queue_wait_seconds";
pub const HASH_BUSY: &str = "stepgate_password_hash_busy_total";

/// Every metric's name.
pub const ALL: &[&str] = &[
    SIGN_INS,
    SECOND_FACTOR_TRIES,
    FLOWS_STARTED,
    FLOWS_COMPLETED,
    FLOWS_FAILED,
    UPSTREAM_REQUESTS,
    UPSTREAM_DURATION,
    RENEWALS,
    ACCOUNTS,
    WEBHOOK_DELIVERIES,
    API_REQUESTS,
    API_DURATION,
    HASH_QUEUE_DEPTH,
    HASH_QUEUE_WAIT,
    HASH_BUSY,
];

/// Every histogram with its bucket bounds (seconds), for the exporter: with buckets they are
/// Prometheus histograms, so dashboards can take quantiles across instances.
pub const HISTOGRAMS: &[(&str, &[f64])] = &[
    (
        UPSTREAM_DURATION,
        &[0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
    ),
    (
        API_DURATION,
        &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0],
    ),
    // A slot is free at once (0) unless a burst queues; `server_busy` comes at 60 s.
    (
        HASH_QUEUE_WAIT,
        &[0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 15.0, 60.0],
    ),
];

/// Gives every metric its help text (the exporter prints it as `# HELP`). Call once, after
/// the recorder is installed.
pub fn describe() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        SIGN_INS,
        "Sign-in tries to Stepgate by outcome: each password step and each second-factor step"
    );
    describe_counter!(
        SECOND_FACTOR_TRIES,
        "Second-factor answers checked (sign-in and confirm-it's-you) by kind and outcome"
    );
    describe_counter!(
        FLOWS_STARTED,
        "Flows whose first step ran, by provider and purpose"
    );
    describe_counter!(
        FLOWS_COMPLETED,
        "Flows that ended with their result (a session, a connected or renewed account)"
    );
    describe_counter!(
        FLOWS_FAILED,
        "Flows that ended without a result, by provider, purpose and error code"
    );
    describe_counter!(
        UPSTREAM_REQUESTS,
        "Requests to providers' hosts by provider, step and outcome (status class or error code)"
    );
    describe_histogram!(
        UPSTREAM_DURATION,
        Unit::Seconds,
        "Time from sending a request to a provider to its whole answer"
    );
    describe_counter!(
        RENEWALS,
        "Renewals of connected accounts' tokens by provider and outcome"
    );
    describe_gauge!(ACCOUNTS, "Connected accounts by status");
    describe_counter!(
        WEBHOOK_DELIVERIES,
        "Webhook delivery attempts by outcome (retrying: failed, tried again later)"
    );
    describe_counter!(
        API_REQUESTS,
        "App API (/api/v1) requests by route template and status"
    );
    describe_histogram!(
        API_DURATION,
        Unit::Seconds,
        "App API (/api/v1) answer times by route template"
    );
    describe_gauge!(
        HASH_QUEUE_DEPTH,
        "Password hashes waiting for a hashing slot"
    );
    describe_histogram!(
        HASH_QUEUE_WAIT,
        Unit::Seconds,
        "Time a password hash waited for a hashing slot"
    );
    describe_counter!(
        HASH_BUSY,
        "Password hashes refused with server_busy after waiting too long for a slot"
    );
}

/// How one sign-in try ended (one password step, or one second-factor step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInOutcome {
    /// A session was opened.
    Ok,
    /// A wrong password, or an unknown email (the same answer, on purpose).
    WrongPassword,
    /// Refused by the first-factor throttle before the password was checked.
    Throttled,
    /// A wrong, replayed or refused second factor (code, recovery code, passkey), or the
    /// last of too many.
    SecondFactorFailed,
    /// The second-factor back-off refused the try before it was checked.
    SecondFactorThrottled,
    AccountDisabled,
    /// No hashing slot in time.
    ServerBusy,
    /// A field missing, too long or not an email.
    InvalidInput,
    Error,
}

impl SignInOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            SignInOutcome::Ok => "ok",
            SignInOutcome::WrongPassword => "wrong_password",
            SignInOutcome::Throttled => "throttled",
            SignInOutcome::SecondFactorFailed => "second_factor_failed",
            SignInOutcome::SecondFactorThrottled => "second_factor_throttled",
            SignInOutcome::AccountDisabled => "account_disabled",
            SignInOutcome::ServerBusy => "server_busy",
            SignInOutcome::InvalidInput => "invalid_input",
            SignInOutcome::Error => "error",
        }
    }

    /// The outcome of a sign-in step that answered `result` (`Ok(true)`: a session was
    /// opened; `Ok(false)`: the flow goes on, nothing to count). `second_factor`: the step
    /// after the password (or a passkey alone).
    pub fn of_step(second_factor: bool, result: Result<bool, ErrorCode>) -> Option<Self> {
        use ErrorCode as E;
        Some(match result {
            Ok(true) => SignInOutcome::Ok,
            Ok(false) => return None,
            Err(E::AccountDisabled) => SignInOutcome::AccountDisabled,
            Err(E::ServerBusy) => SignInOutcome::ServerBusy,
            Err(E::MissingFields | E::FieldTooLong | E::InvalidEmail) if !second_factor => {
                SignInOutcome::InvalidInput
            }
            Err(E::InvalidAuth) if !second_factor => SignInOutcome::WrongPassword,
            Err(E::RateLimited) if second_factor => SignInOutcome::SecondFactorThrottled,
            Err(
                E::InvalidCode
                | E::CodeUsed
                | E::PasskeyRefused
                | E::TooManyAttempts
                | E::MissingFields,
            ) if second_factor => SignInOutcome::SecondFactorFailed,
            Err(_) => SignInOutcome::Error,
        })
    }
}

pub fn sign_in(outcome: SignInOutcome) {
    ::metrics::counter!(SIGN_INS, "outcome" => outcome.as_str()).increment(1);
}

/// The kinds of second factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondFactor {
    Totp,
    RecoveryCode,
    Passkey,
}

impl SecondFactor {
    pub fn as_str(self) -> &'static str {
        match self {
            SecondFactor::Totp => "totp",
            SecondFactor::RecoveryCode => "recovery_code",
            SecondFactor::Passkey => "passkey",
        }
    }
}

/// The outcome label of a second-factor check that answered `result`.
pub fn second_factor_outcome<T>(result: &Result<T, ErrorCode>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(ErrorCode::InvalidCode | ErrorCode::PasskeyRefused | ErrorCode::MissingFields) => {
            "wrong"
        }
        Err(ErrorCode::CodeUsed) => "replayed",
        Err(ErrorCode::RateLimited) => "rate_limited",
        Err(_) => "error",
    }
}

/// Counts one second-factor check of `kind` that answered `result`.
pub fn second_factor_try<T>(kind: SecondFactor, result: &Result<T, ErrorCode>) {
    ::metrics::counter!(
        SECOND_FACTOR_TRIES,
        "kind" => kind.as_str(),
        "outcome" => second_factor_outcome(result),
    )
    .increment(1);
}

/// `purpose` is `sign_in`, `connect` or `reauth`.
pub fn flow_started(provider: &'static str, purpose: &'static str) {
    ::metrics::counter!(FLOWS_STARTED, "provider" => provider, "purpose" => purpose).increment(1);
}

pub fn flow_completed(provider: &'static str, purpose: &'static str) {
    ::metrics::counter!(FLOWS_COMPLETED, "provider" => provider, "purpose" => purpose).increment(1);
}

pub fn flow_failed(provider: &'static str, purpose: &'static str, code: ErrorCode) {
    ::metrics::counter!(
        FLOWS_FAILED,
        "provider" => provider,
        "purpose" => purpose,
        "code" => code.as_str(),
    )
    .increment(1);
}

/// The outcome label of an upstream request: its status class, or why there was no answer.
pub fn upstream_outcome(result: Result<u16, ErrorCode>) -> &'static str {
    match result {
        Ok(100..=199) => "1xx",
        Ok(200..=299) => "2xx",
        Ok(300..=399) => "3xx",
        Ok(400..=499) => "4xx",
        Ok(_) => "5xx",
        Err(code) => code.as_str(),
    }
}

/// One request to a provider's host, made for `provider`'s step `step` (a step name of the
/// provider's own, or `start`, `check`, `renew`, `api_proxy`), that answered `result` (its
/// status) after `took`.
pub fn upstream_request(
    provider: &'static str,
    step: &str,
    result: Result<u16, ErrorCode>,
    took: Duration,
) {
    let step = step.to_owned();
    ::metrics::counter!(
        UPSTREAM_REQUESTS,
        "provider" => provider,
        "step" => step.clone(),
        "outcome" => upstream_outcome(result),
    )
    .increment(1);
    ::metrics::histogram!(UPSTREAM_DURATION, "provider" => provider, "step" => step)
        .record(took.as_secs_f64());
}

/// `outcome`: `renewed`, `unchanged`, `rejected` or `unreachable`.
pub fn renewal(provider: &'static str, outcome: &'static str) {
    ::metrics::counter!(RENEWALS, "provider" => provider, "outcome" => outcome).increment(1);
}

/// How many connected accounts have `status` now.
pub fn accounts(status: &'static str, count: i64) {
    ::metrics::gauge!(ACCOUNTS, "status" => status).set(count as f64);
}

/// `outcome`: `delivered`, `retrying` or `failed`.
pub fn webhook_delivery(outcome: &'static str) {
    ::metrics::counter!(WEBHOOK_DELIVERIES, "outcome" => outcome).increment(1);
}

/// One app API request that matched `route` (a template such as `/api/v1/accounts/{id}`) and
/// was answered with `status` after `took`.
pub fn api_request(route: &str, status: u16, took: Duration) {
    let route = route.to_owned();
    ::metrics::counter!(API_REQUESTS, "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    ::metrics::histogram!(API_DURATION, "route" => route).record(took.as_secs_f64());
}

/// A password hash waiting for a slot: counted in the queue's depth while it lives; its wait
/// is recorded when it is dropped (a slot came, or the wait ran out).
pub struct HashQueued {
    since: Instant,
}

impl HashQueued {
    pub fn enter() -> Self {
        ::metrics::gauge!(HASH_QUEUE_DEPTH).increment(1.0);
        HashQueued {
            since: Instant::now(),
        }
    }

    /// The wait ran out: the hash is refused with `server_busy`.
    pub fn refused(self) {
        ::metrics::counter!(HASH_BUSY).increment(1);
    }
}

impl Drop for HashQueued {
    fn drop(&mut self) {
        ::metrics::gauge!(HASH_QUEUE_DEPTH).decrement(1.0);
        ::metrics::histogram!(HASH_QUEUE_WAIT).record(self.since.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_steps_map_to_their_outcomes() {
        use SignInOutcome as O;
        let cases = [
            (false, Ok(true), Some(O::Ok)),
            (false, Ok(false), None),
            (false, Err(ErrorCode::InvalidAuth), Some(O::WrongPassword)),
            (
                false,
                Err(ErrorCode::AccountDisabled),
                Some(O::AccountDisabled),
            ),
            (false, Err(ErrorCode::ServerBusy), Some(O::ServerBusy)),
            (false, Err(ErrorCode::InvalidEmail), Some(O::InvalidInput)),
            (true, Ok(true), Some(O::Ok)),
            (
                true,
                Err(ErrorCode::InvalidCode),
                Some(O::SecondFactorFailed),
            ),
            (true, Err(ErrorCode::CodeUsed), Some(O::SecondFactorFailed)),
            (
                true,
                Err(ErrorCode::PasskeyRefused),
                Some(O::SecondFactorFailed),
            ),
            (
                true,
                Err(ErrorCode::TooManyAttempts),
                Some(O::SecondFactorFailed),
            ),
            (
                true,
                Err(ErrorCode::RateLimited),
                Some(O::SecondFactorThrottled),
            ),
            (true, Err(ErrorCode::Unknown), Some(O::Error)),
        ];
        for (second_factor, result, expected) in cases {
            assert_eq!(
                SignInOutcome::of_step(second_factor, result),
                expected,
                "{second_factor} {result:?}"
            );
        }
    }

    #[test]
    fn upstream_outcomes_are_status_classes_or_error_codes() {
        assert_eq!(upstream_outcome(Ok(204)), "2xx");
        assert_eq!(upstream_outcome(Ok(302)), "3xx");
        assert_eq!(upstream_outcome(Ok(429)), "4xx");
        assert_eq!(upstream_outcome(Ok(503)), "5xx");
        assert_eq!(upstream_outcome(Err(ErrorCode::Timeout)), "timeout");
        assert_eq!(
            upstream_outcome(Err(ErrorCode::CannotConnect)),
            "cannot_connect"
        );
    }

    #[test]
    fn every_histogram_has_rising_buckets_and_a_seconds_name() {
        for (name, buckets) in HISTOGRAMS {
            assert!(name.ends_with("_seconds"), "{name}");
            assert!(buckets.windows(2).all(|w| w[0] < w[1]), "{name}");
        }
    }
}
