//! RFC 6238 time-based one-time passwords (HMAC-SHA-1, 30 s steps), the verifier's window and
//! the `otpauth://` URI for authenticator apps.

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// RFC 6238 §5.2: 30 seconds is the recommended step.
pub const PERIOD_SECONDS: i64 = 30;
/// RFC 6238 §5.2: at most one step of network delay either way (90 s accepted in all).
pub const SKEW_STEPS: i64 = 1;
/// RFC 4226 §4 R6: 160 bits are recommended.
pub const SECRET_BYTES: usize = 20;

/// The time step a unix time falls in.
pub fn step_at(unix_seconds: i64) -> i64 {
    unix_seconds.div_euclid(PERIOD_SECONDS)
}

/// Seconds left in the step `unix_seconds` falls in.
pub fn seconds_left(unix_seconds: i64) -> i64 {
    PERIOD_SECONDS - unix_seconds.rem_euclid(PERIOD_SECONDS)
}

/// The code of `secret` for time step `step` (RFC 4226 §5.3 dynamic truncation).
pub fn code_at_step(secret: &[u8], step: i64, digits: u8) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(&(step as u64).to_be_bytes());
    let hash = mac.finalize().into_bytes();
    let offset = (hash[19] & 0x0f) as usize;
    let binary = u32::from_be_bytes([
        hash[offset] & 0x7f,
        hash[offset + 1],
        hash[offset + 2],
        hash[offset + 3],
    ]);
    let modulus = 10u32.pow(u32::from(digits));
    format!("{:0width$}", binary % modulus, width = usize::from(digits))
}

/// The code for a unix time.
pub fn code_at(secret: &[u8], unix_seconds: i64, digits: u8) -> String {
    code_at_step(secret, step_at(unix_seconds), digits)
}

/// The step whose code `code` is, within ±[`SKEW_STEPS`] of `now`; `None` if none matches.
/// The comparison runs over every candidate in constant time per candidate.
pub fn matching_step(secret: &[u8], code: &str, now: i64, digits: u8) -> Option<i64> {
    if code.len() != usize::from(digits) || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let current = step_at(now);
    let mut found = None;
    for step in (current - SKEW_STEPS)..=(current + SKEW_STEPS) {
        let expected = code_at_step(secret, step, digits);
        if crate::base::crypto::constant_time_eq(expected.as_bytes(), code.as_bytes())
            && found.is_none()
        {
            found = Some(step);
        }
    }
    found
}

/// Keeps the digits of what the user typed or pasted ("123 456", "123-456" → "123456").
pub fn normalise_code(raw: &str) -> String {
    raw.chars().filter(char::is_ascii_digit).collect()
}

pub fn base32_encode(secret: &[u8]) -> String {
    data_encoding::BASE32_NOPAD.encode(secret)
}

/// Decodes a base32 secret as providers print it: any case, spaces and `=` padding allowed.
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let cleaned: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '=')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    data_encoding::BASE32_NOPAD.decode(cleaned.as_bytes()).ok()
}

/// A fresh random secret of [`SECRET_BYTES`].
pub fn random_secret() -> Vec<u8> {
    use rand::RngCore;
    let mut secret = vec![0u8; SECRET_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    secret
}

/// The Key URI Format authenticator apps read from a QR code.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8], digits: u8) -> String {
    let label = format!("{}:{}", encode_component(issuer), encode_component(account));
    format!(
        "otpauth://totp/{label}?secret={}&issuer={}&algorithm=SHA1&digits={digits}&period={PERIOD_SECONDS}",
        base32_encode(secret),
        encode_component(issuer)
    )
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_SECRET: &[u8] = b"12345678901234567890";

    #[test]
    fn rfc_6238_sha1_test_vectors() {
        // RFC 6238 Appendix B, the SHA-1 column (8 digits).
        let vectors = [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ];
        for (time, expected) in vectors {
            assert_eq!(code_at(RFC_SECRET, time, 8), expected, "T = {time}");
        }
    }

    #[test]
    fn six_digits_are_the_last_six_of_eight() {
        assert_eq!(code_at(RFC_SECRET, 59, 6), "287082");
    }

    #[test]
    fn one_step_of_skew_is_accepted_either_way_and_no_more() {
        let now = 1_111_111_111;
        let here = step_at(now);
        for (offset, accepted) in [(-2, false), (-1, true), (0, true), (1, true), (2, false)] {
            let code = code_at_step(RFC_SECRET, here + offset, 6);
            let found = matching_step(RFC_SECRET, &code, now, 6);
            assert_eq!(found.is_some(), accepted, "offset {offset}");
            if accepted {
                assert_eq!(found, Some(here + offset));
            }
        }
    }

    #[test]
    fn malformed_codes_never_match() {
        let now = 1_234_567_890;
        let right = code_at(RFC_SECRET, now, 6);
        assert_eq!(matching_step(RFC_SECRET, &right[..5], now, 6), None);
        assert_eq!(
            matching_step(RFC_SECRET, &format!("{right}0"), now, 6),
            None
        );
        assert_eq!(matching_step(RFC_SECRET, "12a456", now, 6), None);
        assert!(matching_step(RFC_SECRET, &right, now, 6).is_some());
    }

    #[test]
    fn pasted_codes_with_spaces_are_normalised() {
        assert_eq!(normalise_code(" 123 456\n"), "123456");
        assert_eq!(normalise_code("123-456"), "123456");
    }

    #[test]
    fn base32_round_trips_and_tolerates_provider_formatting() {
        let secret = random_secret();
        let text = base32_encode(&secret);
        assert_eq!(base32_decode(&text).unwrap(), secret);
        assert_eq!(
            base32_decode(&format!(" {} ", text.to_lowercase())).unwrap(),
            secret
        );
        assert_eq!(
            base32_decode("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").unwrap(),
            RFC_SECRET
        );
        assert_eq!(base32_decode("not base32!"), None);
    }

    #[test]
    fn otpauth_uri_names_issuer_and_account() {
        let uri = otpauth_uri("Stepgate", "ada@example.org", RFC_SECRET, 6);
        assert_eq!(
            uri,
            "otpauth://totp/Stepgate:ada%40example.org?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=Stepgate&algorithm=SHA1&digits=6&period=30"
        );
    }

    #[test]
    fn seconds_left_counts_down_within_the_period() {
        assert_eq!(seconds_left(60), 30);
        assert_eq!(seconds_left(89), 1);
    }
}
