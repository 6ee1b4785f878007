//! The one limit on what a form field may carry.

use std::collections::BTreeMap;

use crate::ErrorCode;

/// The longest value any form field may carry; longer input is refused before any work.
pub const MAX_FIELD_BYTES: usize = 1024;

/// The one field allowed more: a passkey's answer (a `PublicKeyCredential` as JSON, whose
/// credential id, signature and user handle an authenticator may make long).
pub const MAX_PASSKEY_ANSWER_BYTES: usize = 4096;

/// `field_too_long` when any value of `input` is longer than [`MAX_FIELD_BYTES`] (the
/// `passkey` answer: [`MAX_PASSKEY_ANSWER_BYTES`]).
pub fn check_field_sizes(input: &BTreeMap<String, String>) -> Result<(), ErrorCode> {
    let too_long = |(name, value): (&String, &String)| {
        let limit = if name == "passkey" {
            MAX_PASSKEY_ANSWER_BYTES
        } else {
            MAX_FIELD_BYTES
        };
        value.len() > limit
    };
    if input.iter().any(too_long) {
        return Err(ErrorCode::FieldTooLong);
    }
    Ok(())
}
