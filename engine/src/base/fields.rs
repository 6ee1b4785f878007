//! The one limit on what a form field may carry.

use std::collections::BTreeMap;

use crate::ErrorCode;

/// The longest value any form field may carry; longer input is refused before any work.
pub const MAX_FIELD_BYTES: usize = 1024;

/// `field_too_long` when any value of `input` is longer than [`MAX_FIELD_BYTES`].
pub fn check_field_sizes(input: &BTreeMap<String, String>) -> Result<(), ErrorCode> {
    if input.values().any(|v| v.len() > MAX_FIELD_BYTES) {
        return Err(ErrorCode::FieldTooLong);
    }
    Ok(())
}
