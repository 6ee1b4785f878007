//! One enum of stable error codes and one table of the strings users read.
//!
//! The codes are part of the wire format (snake_case, as Home Assistant's `strings.json` keys):
//! never rename one; add new ones instead.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Wrong password or unknown user: one code for both, so accounts cannot be enumerated.
    #[error("invalid_auth")]
    InvalidAuth,
    #[error("invalid_code")]
    InvalidCode,
    #[error("missing_fields")]
    MissingFields,
    #[error("invalid_email")]
    InvalidEmail,
    #[error("field_too_long")]
    FieldTooLong,
    #[error("password_too_short")]
    PasswordTooShort,
    #[error("password_mismatch")]
    PasswordMismatch,
    /// A new password that `zxcvbn` scores as easy to guess (common, a pattern, the email).
    #[error("password_too_weak")]
    PasswordTooWeak,
    #[error("email_taken")]
    EmailTaken,
    #[error("not_signed_in")]
    NotSignedIn,
    /// A TOTP code at or before the last accepted time step (RFC 6238 §5.2).
    #[error("code_used")]
    CodeUsed,
    /// Too many wrong codes for this account, across flows (RFC 4226 §7.3).
    #[error("rate_limited")]
    RateLimited,
    /// Too many failed passwords for an account or from an address (first-factor throttling).
    #[error("sign_in_throttled")]
    SignInThrottled,
    /// A request the server could not read (malformed, or not what a form sends).
    #[error("invalid_request")]
    InvalidRequest,
    /// A state-changing request sent from another site (CSRF), refused before any work.
    #[error("cross_site_request")]
    CrossSiteRequest,
    /// A request body over the size limit.
    #[error("request_too_large")]
    RequestTooLarge,
    #[error("invalid_registration")]
    InvalidRegistration,
    #[error("registration_expired")]
    RegistrationExpired,
    #[error("enrollment_cancelled")]
    EnrollmentCancelled,
    #[error("two_factor_off")]
    TwoFactorOff,
    #[error("flow_expired")]
    FlowExpired,
    #[error("too_many_attempts")]
    TooManyAttempts,
    #[error("server_busy")]
    ServerBusy,
    #[error("server_unreachable")]
    ServerUnreachable,
    #[error("cannot_connect")]
    CannotConnect,
    #[error("timeout")]
    Timeout,
    /// The provider is down for maintenance (HTTP 503).
    #[error("service_unavailable")]
    ServiceUnavailable,
    /// The provider wants a captcha solved before it accepts a password.
    #[error("captcha_required")]
    CaptchaRequired,
    #[error("invalid_vin")]
    InvalidVin,
    #[error("invalid_url")]
    InvalidUrl,
    /// The thing asked for does not exist (or is not the asker's).
    #[error("not_found")]
    NotFound,
    #[error("already_configured")]
    AlreadyConfigured,
    #[error("token_error")]
    TokenError,
    /// A second-factor code that was right once but is too old now (a new one must be sent).
    #[error("code_expired")]
    CodeExpired,
    /// A reauth signed in to another upstream account than the one it was started for.
    #[error("wrong_account")]
    WrongAccount,
    /// The provider refused the account's tokens: the user must sign in again (reauth).
    #[error("needs_sign_in")]
    NeedsSignIn,
    /// An API request without a valid (unrevoked) API key.
    #[error("invalid_api_key")]
    InvalidApiKey,
    /// An API key asked for an account it was not given.
    #[error("account_not_in_scope")]
    AccountNotInScope,
    /// `STEPGATE_REGISTRATION=closed`: nobody may register.
    #[error("registration_closed")]
    RegistrationClosed,
    /// Invite-only registration without an invite.
    #[error("invite_required")]
    InviteRequired,
    /// An invite token that no admin made (or mistyped).
    #[error("invite_invalid")]
    InviteInvalid,
    #[error("invite_used")]
    InviteUsed,
    #[error("invite_expired")]
    InviteExpired,
    /// Too many registrations from one client address (each costs a password hash).
    #[error("registration_throttled")]
    RegistrationThrottled,
    /// An admin disabled the account: it may not sign in.
    #[error("account_disabled")]
    AccountDisabled,
    /// An admin page or act asked for by someone who is not an admin.
    #[error("admin_only")]
    AdminOnly,
    /// An admin tried to disable their own account (nobody would be left to enable it).
    #[error("cannot_disable_self")]
    CannotDisableSelf,
    /// A sensitive act asked for while the session has not confirmed its user lately (sudo).
    #[error("confirm_identity_required")]
    ConfirmIdentityRequired,
    /// The signed-in user's own password, typed again, was not right.
    #[error("wrong_password")]
    WrongPassword,
    /// A webhook URL whose host is, or resolves to, a loopback, private, link-local or other
    /// internal address the admin has not allowed (`STEPGATE_WEBHOOK_ALLOW`).
    #[error("webhook_address_refused")]
    WebhookAddressRefused,
    /// A webhook URL whose host name does not resolve.
    #[error("webhook_host_not_found")]
    WebhookHostNotFound,
    /// A right API key past the expiry its owner chose when making it.
    #[error("api_key_expired")]
    ApiKeyExpired,
    #[error("unknown")]
    Unknown,
    /// An upstream answer over its size cap (1 MiB unless the request allows more).
    #[error("upstream_too_large")]
    UpstreamTooLarge,
    /// An upstream redirect Stepgate does not follow: not over https, to a host the provider
    /// does not declare (a loopback or private address among them), round in circles, or more
    /// than 10 hops.
    #[error("bad_redirect")]
    BadRedirect,
    /// An upstream answer of a shape the provider does not know (the service changed).
    #[error("upstream_out_of_shape")]
    UpstreamOutOfShape,
    /// A passkey answer that did not prove the account: not one of its passkeys, no user
    /// verification, a signature that does not check, or a counter that went back (a cloned
    /// authenticator).
    #[error("passkey_refused")]
    PasskeyRefused,
    /// A passkey's name that is empty or over 64 characters.
    #[error("passkey_name_invalid")]
    PasskeyNameInvalid,
    /// Passkeys need the server's public address to be a host name (`STEPGATE_PUBLIC_URL`):
    /// WebAuthn refuses IP addresses.
    #[error("passkeys_unavailable")]
    PasskeysUnavailable,
    /// An API proxy request to an origin or path its account's provider does not declare.
    #[error("proxy_not_allowed")]
    ProxyNotAllowed,
    /// A sign-in link that does not exist (mistyped) or was revoked by the account's owner.
    #[error("sign_in_link_invalid")]
    SignInLinkInvalid,
    /// A sign-in link that has already signed its account in.
    #[error("sign_in_link_used")]
    SignInLinkUsed,
    /// A sign-in link past its 24 hours.
    #[error("sign_in_link_expired")]
    SignInLinkExpired,
    /// An app asked for a sign-in link, but the account's owner has not let apps have them.
    #[error("sign_in_links_off")]
    SignInLinksOff,
}

impl ErrorCode {
    /// Every code, for the table test and for documentation.
    pub const ALL: [ErrorCode; 64] = [
        ErrorCode::InvalidAuth,
        ErrorCode::InvalidCode,
        ErrorCode::MissingFields,
        ErrorCode::InvalidEmail,
        ErrorCode::FieldTooLong,
        ErrorCode::PasswordTooShort,
        ErrorCode::PasswordMismatch,
        ErrorCode::PasswordTooWeak,
        ErrorCode::EmailTaken,
        ErrorCode::NotSignedIn,
        ErrorCode::CodeUsed,
        ErrorCode::RateLimited,
        ErrorCode::SignInThrottled,
        ErrorCode::InvalidRequest,
        ErrorCode::CrossSiteRequest,
        ErrorCode::RequestTooLarge,
        ErrorCode::InvalidRegistration,
        ErrorCode::RegistrationExpired,
        ErrorCode::EnrollmentCancelled,
        ErrorCode::TwoFactorOff,
        ErrorCode::FlowExpired,
        ErrorCode::TooManyAttempts,
        ErrorCode::ServerBusy,
        ErrorCode::ServerUnreachable,
        ErrorCode::CannotConnect,
        ErrorCode::Timeout,
        ErrorCode::ServiceUnavailable,
        ErrorCode::CaptchaRequired,
        ErrorCode::InvalidVin,
        ErrorCode::InvalidUrl,
        ErrorCode::NotFound,
        ErrorCode::AlreadyConfigured,
        ErrorCode::TokenError,
        ErrorCode::CodeExpired,
        ErrorCode::WrongAccount,
        ErrorCode::NeedsSignIn,
        ErrorCode::InvalidApiKey,
        ErrorCode::AccountNotInScope,
        ErrorCode::RegistrationClosed,
        ErrorCode::InviteRequired,
        ErrorCode::InviteInvalid,
        ErrorCode::InviteUsed,
        ErrorCode::InviteExpired,
        ErrorCode::RegistrationThrottled,
        ErrorCode::AccountDisabled,
        ErrorCode::AdminOnly,
        ErrorCode::CannotDisableSelf,
        ErrorCode::ConfirmIdentityRequired,
        ErrorCode::WrongPassword,
        ErrorCode::WebhookAddressRefused,
        ErrorCode::WebhookHostNotFound,
        ErrorCode::ApiKeyExpired,
        ErrorCode::Unknown,
        ErrorCode::UpstreamTooLarge,
        ErrorCode::BadRedirect,
        ErrorCode::UpstreamOutOfShape,
        ErrorCode::PasskeyRefused,
        ErrorCode::PasskeyNameInvalid,
        ErrorCode::PasskeysUnavailable,
        ErrorCode::ProxyNotAllowed,
        ErrorCode::SignInLinkInvalid,
        ErrorCode::SignInLinkUsed,
        ErrorCode::SignInLinkExpired,
        ErrorCode::SignInLinksOff,
    ];

    /// The user-facing sentence for this code: the one table of error strings.
    pub fn message(self) -> &'static str {
        match self {
            ErrorCode::InvalidAuth => "The email or password is not right.",
            ErrorCode::InvalidCode => "That code is not right. Check it and try again.",
            ErrorCode::MissingFields => "Please fill in every field.",
            ErrorCode::InvalidEmail => "That does not look like an email address.",
            ErrorCode::FieldTooLong => "One of the fields is too long (1 KiB at most).",
            ErrorCode::PasswordTooShort => "Choose a password of at least 12 characters.",
            ErrorCode::PasswordTooWeak => {
                "This password is too easy to guess. A few uncommon words together make a strong one."
            }
            ErrorCode::PasswordMismatch => "The two passwords are not the same.",
            ErrorCode::EmailTaken => "An account with this email already exists. Sign in instead.",
            ErrorCode::NotSignedIn => "Please sign in first.",
            ErrorCode::CodeUsed => "That code was already used. Wait for the next one and try again.",
            ErrorCode::RateLimited => "Too many wrong codes for this account. Wait a minute, then try again.",
            ErrorCode::SignInThrottled => {
                "Too many failed sign-ins. Please wait a moment, then try again."
            }
            ErrorCode::InvalidRequest => "The request was not understood. Reload the page and try again.",
            ErrorCode::CrossSiteRequest => "This request came from another site and was refused.",
            ErrorCode::RequestTooLarge => "That was more data than a form may send.",
            ErrorCode::InvalidRegistration => {
                "This setup link is not valid any more. Start the setup again from your security settings."
            }
            ErrorCode::RegistrationExpired => "The TOTP provider's answer came too late. Please start the setup again.",
            ErrorCode::EnrollmentCancelled => "Setup was cancelled at the TOTP provider. Two-factor authentication is still off.",
            ErrorCode::TwoFactorOff => "Two-factor authentication is not turned on for this account.",
            ErrorCode::FlowExpired => {
                "This sign-in took too long and has expired. Please start again."
            }
            ErrorCode::TooManyAttempts => {
                "Too many attempts. Please wait a moment and start again."
            }
            ErrorCode::ServerBusy => "The server is busy. Please try again in a moment.",
            ErrorCode::ServerUnreachable => {
                "Stepgate could not be reached. Check your connection and try again."
            }
            ErrorCode::CannotConnect => {
                "The provider could not be reached. Please try again later."
            }
            ErrorCode::Timeout => "The provider took too long to answer. Please try again.",
            ErrorCode::ServiceUnavailable => {
                "The provider is down for maintenance. Please try again later."
            }
            ErrorCode::CaptchaRequired => {
                "The provider wants to check that you are a person. Sign in once on its own website, then try again here."
            }
            ErrorCode::InvalidVin => "That vehicle identification number is not valid.",
            ErrorCode::InvalidUrl => "That URL is not the one the provider gave you.",
            ErrorCode::NotFound => "That is not here (any more). Reload the page to see what is.",
            ErrorCode::AlreadyConfigured => "This account is already connected.",
            ErrorCode::TokenError => "The provider did not accept the sign-in. Please try again.",
            ErrorCode::CodeExpired => "That code has expired. Please start again to get a new one.",
            ErrorCode::NeedsSignIn => {
                "The provider no longer accepts this account's sign-in. Sign in to it again on Stepgate's accounts page."
            }
            ErrorCode::InvalidApiKey => "This API key is not valid (or was revoked).",
            ErrorCode::ApiKeyExpired => {
                "This API key has expired. Make a new one on Stepgate's API keys page."
            }
            ErrorCode::AccountNotInScope => "This API key may not read that account.",
            ErrorCode::WebhookAddressRefused => {
                "Webhooks may not be sent to that address: it is a local, private or otherwise internal one."
            }
            ErrorCode::WebhookHostNotFound => {
                "The webhook URL's host name was not found. Check its spelling and try again."
            }
            ErrorCode::WrongAccount => {
                "You signed in to a different account than the one you are signing in again. Use the same account, or connect the other one as a new account."
            }
            ErrorCode::RegistrationClosed => {
                "This Stepgate does not take new accounts. Ask its admin if you need one."
            }
            ErrorCode::InviteRequired => {
                "This Stepgate takes new accounts by invite only. Ask its admin for an invite link."
            }
            ErrorCode::InviteInvalid => {
                "This invite link is not valid. Check that you copied all of it, or ask the admin for a new one."
            }
            ErrorCode::InviteUsed => {
                "This invite link was used already: each works once. Ask the admin for a new one."
            }
            ErrorCode::InviteExpired => {
                "This invite link has expired (invites last 7 days). Ask the admin for a new one."
            }
            ErrorCode::RegistrationThrottled => {
                "Too many new accounts from your network. Please wait a moment, then try again."
            }
            ErrorCode::AccountDisabled => {
                "This account is disabled by an admin of this Stepgate. Ask them to enable it again."
            }
            ErrorCode::AdminOnly => "Only an admin of this Stepgate may do that.",
            ErrorCode::CannotDisableSelf => {
                "You cannot disable your own account: nobody would be left to enable it."
            }
            ErrorCode::ConfirmIdentityRequired => {
                "Confirm it's you first: enter your password again."
            }
            ErrorCode::WrongPassword => "That is not your current password.",
            ErrorCode::Unknown => "Something went wrong on our side. Please try again.",
            ErrorCode::UpstreamTooLarge => {
                "The provider sent far more data than a sign-in needs, so Stepgate stopped reading. Please try again later."
            }
            ErrorCode::BadRedirect => {
                "The provider redirected the sign-in somewhere Stepgate does not follow (not its own secure site, or round in circles). Please try again later."
            }
            ErrorCode::UpstreamOutOfShape => {
                "The provider answered in a way Stepgate does not understand (it may have changed). Please try again later."
            }
            ErrorCode::PasskeyRefused => {
                "That passkey was not accepted. Try again, or use another way to sign in."
            }
            ErrorCode::PasskeyNameInvalid => {
                "Give the passkey a name of 1 to 64 characters, such as the device it is on."
            }
            ErrorCode::PasskeysUnavailable => {
                "Passkeys are not available on this Stepgate: its public address is an IP address, and passkeys need a host name (such as localhost)."
            }
            ErrorCode::ProxyNotAllowed => {
                "Stepgate does not pass requests to that address: it is not one of the provider's API addresses."
            }
            ErrorCode::SignInLinkInvalid => {
                "This sign-in link is not valid (it may have been revoked). Ask the account's owner for a new one."
            }
            ErrorCode::SignInLinkUsed => {
                "This sign-in link was already used. Ask the account's owner for a new one."
            }
            ErrorCode::SignInLinkExpired => {
                "This sign-in link has expired. Ask the account's owner for a new one."
            }
            ErrorCode::SignInLinksOff => {
                "The account's owner has not allowed apps to get sign-in links."
            }
        }
    }

    /// The sentence for this code when the server said how long to wait (`Retry-After`).
    pub fn message_with_wait(self, seconds: u32) -> String {
        match self {
            ErrorCode::SignInThrottled | ErrorCode::RegistrationThrottled => {
                let unit = if seconds == 1 { "second" } else { "seconds" };
                let first = self.message().split(". ").next().unwrap_or_default();
                format!("{first}. Try again in {seconds} {unit}.")
            }
            _ => self.message().to_owned(),
        }
    }

    /// The HTTP status an answer with this code carries: 4xx when the request or its sender
    /// is at fault, 5xx only when we (or a provider) are.
    pub fn http_status(self) -> u16 {
        use ErrorCode::*;
        match self {
            InvalidAuth | InvalidCode | MissingFields | InvalidEmail | FieldTooLong
            | PasswordTooShort | PasswordMismatch | PasswordTooWeak | CodeUsed | InvalidVin
            | InvalidUrl | InvalidRequest | EnrollmentCancelled | TwoFactorOff | CodeExpired => 400,
            WebhookAddressRefused | WebhookHostNotFound => 400,
            NotSignedIn | InvalidApiKey | ApiKeyExpired => 401,
            CaptchaRequired | AccountNotInScope => 403,
            ConfirmIdentityRequired => 403,
            WrongPassword => 400,
            NotFound => 404,
            CrossSiteRequest => 403,
            EmailTaken | AlreadyConfigured | WrongAccount | NeedsSignIn => 409,
            FlowExpired | InvalidRegistration | RegistrationExpired => 410,
            RequestTooLarge => 413,
            RateLimited | SignInThrottled | TooManyAttempts => 429,
            CannotConnect | TokenError | ServerUnreachable => 502,
            ServerBusy | ServiceUnavailable => 503,
            Timeout => 504,
            RegistrationClosed | InviteRequired | InviteInvalid | AccountDisabled | AdminOnly => {
                403
            }
            InviteUsed | InviteExpired => 410,
            RegistrationThrottled => 429,
            CannotDisableSelf => 409,
            Unknown => 500,
            UpstreamTooLarge | BadRedirect | UpstreamOutOfShape => 502,
            PasskeyRefused | PasskeyNameInvalid => 400,
            PasskeysUnavailable => 404,
            ProxyNotAllowed | SignInLinksOff => 403,
            SignInLinkInvalid => 404,
            SignInLinkUsed | SignInLinkExpired => 410,
        }
    }

    /// The stable snake_case key, as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidAuth => "invalid_auth",
            ErrorCode::InvalidCode => "invalid_code",
            ErrorCode::MissingFields => "missing_fields",
            ErrorCode::InvalidEmail => "invalid_email",
            ErrorCode::FieldTooLong => "field_too_long",
            ErrorCode::PasswordTooShort => "password_too_short",
            ErrorCode::PasswordMismatch => "password_mismatch",
            ErrorCode::PasswordTooWeak => "password_too_weak",
            ErrorCode::EmailTaken => "email_taken",
            ErrorCode::NotSignedIn => "not_signed_in",
            ErrorCode::CodeUsed => "code_used",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::SignInThrottled => "sign_in_throttled",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::CrossSiteRequest => "cross_site_request",
            ErrorCode::RequestTooLarge => "request_too_large",
            ErrorCode::InvalidRegistration => "invalid_registration",
            ErrorCode::RegistrationExpired => "registration_expired",
            ErrorCode::EnrollmentCancelled => "enrollment_cancelled",
            ErrorCode::TwoFactorOff => "two_factor_off",
            ErrorCode::FlowExpired => "flow_expired",
            ErrorCode::TooManyAttempts => "too_many_attempts",
            ErrorCode::ServerBusy => "server_busy",
            ErrorCode::ServerUnreachable => "server_unreachable",
            ErrorCode::CannotConnect => "cannot_connect",
            ErrorCode::Timeout => "timeout",
            ErrorCode::ServiceUnavailable => "service_unavailable",
            ErrorCode::CaptchaRequired => "captcha_required",
            ErrorCode::InvalidVin => "invalid_vin",
            ErrorCode::InvalidUrl => "invalid_url",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyConfigured => "already_configured",
            ErrorCode::TokenError => "token_error",
            ErrorCode::CodeExpired => "code_expired",
            ErrorCode::WrongAccount => "wrong_account",
            ErrorCode::NeedsSignIn => "needs_sign_in",
            ErrorCode::InvalidApiKey => "invalid_api_key",
            ErrorCode::AccountNotInScope => "account_not_in_scope",
            ErrorCode::RegistrationClosed => "registration_closed",
            ErrorCode::InviteRequired => "invite_required",
            ErrorCode::InviteInvalid => "invite_invalid",
            ErrorCode::InviteUsed => "invite_used",
            ErrorCode::InviteExpired => "invite_expired",
            ErrorCode::RegistrationThrottled => "registration_throttled",
            ErrorCode::AccountDisabled => "account_disabled",
            ErrorCode::AdminOnly => "admin_only",
            ErrorCode::CannotDisableSelf => "cannot_disable_self",
            ErrorCode::ConfirmIdentityRequired => "confirm_identity_required",
            ErrorCode::WrongPassword => "wrong_password",
            ErrorCode::WebhookAddressRefused => "webhook_address_refused",
            ErrorCode::WebhookHostNotFound => "webhook_host_not_found",
            ErrorCode::ApiKeyExpired => "api_key_expired",
            ErrorCode::Unknown => "unknown",
            ErrorCode::UpstreamTooLarge => "upstream_too_large",
            ErrorCode::BadRedirect => "bad_redirect",
            ErrorCode::UpstreamOutOfShape => "upstream_out_of_shape",
            ErrorCode::PasskeyRefused => "passkey_refused",
            ErrorCode::PasskeyNameInvalid => "passkey_name_invalid",
            ErrorCode::PasskeysUnavailable => "passkeys_unavailable",
            ErrorCode::ProxyNotAllowed => "proxy_not_allowed",
            ErrorCode::SignInLinkInvalid => "sign_in_link_invalid",
            ErrorCode::SignInLinkUsed => "sign_in_link_used",
            ErrorCode::SignInLinkExpired => "sign_in_link_expired",
            ErrorCode::SignInLinksOff => "sign_in_links_off",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_code_has_a_distinct_sentence() {
        let sentences: HashSet<_> = ErrorCode::ALL.iter().map(|c| c.message()).collect();
        assert_eq!(sentences.len(), ErrorCode::ALL.len());
        for code in ErrorCode::ALL {
            let text = code.message();
            assert!(text.ends_with('.'), "{code}: {text}");
            assert!(!text.contains('_'), "{code} leaks its key into the text");
        }
    }

    #[test]
    fn wire_key_is_the_snake_case_name() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(code.to_string(), code.as_str());
            let back: ErrorCode = serde_json::from_str(&json).unwrap();
            assert_eq!(back, code);
        }
    }

    #[test]
    fn only_our_own_faults_are_500() {
        for code in ErrorCode::ALL {
            let status = code.http_status();
            assert!((400..600).contains(&status), "{code}");
            assert_eq!(status == 500, code == ErrorCode::Unknown, "{code}");
        }
        assert_eq!(ErrorCode::SignInThrottled.http_status(), 429);
        assert_eq!(ErrorCode::FlowExpired.http_status(), 410);
    }

    #[test]
    fn a_throttled_sentence_says_when_to_try_again() {
        assert_eq!(
            ErrorCode::SignInThrottled.message_with_wait(8),
            "Too many failed sign-ins. Try again in 8 seconds."
        );
        assert_eq!(
            ErrorCode::SignInThrottled.message_with_wait(1),
            "Too many failed sign-ins. Try again in 1 second."
        );
        assert_eq!(
            ErrorCode::InvalidAuth.message_with_wait(8),
            ErrorCode::InvalidAuth.message()
        );
    }

    #[test]
    fn unknown_user_and_wrong_password_share_one_message() {
        // There is deliberately no separate `unknown_user` code.
        assert!(!ErrorCode::ALL.iter().any(|c| c.as_str().contains("user")));
    }
}
