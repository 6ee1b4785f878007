//! What a new password must be: at least [`MIN_PASSWORD_CHARS`] characters (ASVS 4.0 V2.1.1) and
//! not easy to guess, as `zxcvbn` scores it (V2.1.7). Nothing about composition (V2.1.9).

use crate::ErrorCode;

/// ASVS 4.0 V2.1.1: at least 12 characters.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// The lowest `zxcvbn` score accepted (3: more than 10^8 guesses, "safely unguessable").
pub const MIN_SCORE: u8 = 3;

/// Checks a new password for the account `email` (its words are what the password should not
/// lean on): the one judgement that registering (and any password change) makes.
pub fn check_for(email: &str, password: &str) -> Result<(), ErrorCode> {
    check(password, &email_words(email))
}

/// zxcvbn's advice for a password that [`check_for`] refused as too weak, judged on the same
/// words.
pub fn advice_for(email: &str, password: &str) -> Option<String> {
    feedback(password, &email_words(email))
}

/// Checks a new password; `user_inputs` are words the password should not lean on.
pub fn check(password: &str, user_inputs: &[&str]) -> Result<(), ErrorCode> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(ErrorCode::PasswordTooShort);
    }
    if u8::from(zxcvbn::zxcvbn(password, user_inputs).score()) < MIN_SCORE {
        return Err(ErrorCode::PasswordTooWeak);
    }
    Ok(())
}

/// `zxcvbn`'s own advice for a password that [`check`] refused as too weak ("This is similar to a
/// commonly used password. Add another word or two."), shown under our sentence.
pub fn feedback(password: &str, user_inputs: &[&str]) -> Option<String> {
    let entropy = zxcvbn::zxcvbn(password, user_inputs);
    let text = entropy.feedback()?.to_string();
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// The words of an email address a password should not be built from.
pub fn email_words(email: &str) -> Vec<&str> {
    email
        .split(['@', '.', '-', '_', '+'])
        .filter(|w| w.len() >= 3)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_passwords_are_refused_whatever_they_are() {
        assert_eq!(check("Xq7#pL9!vR2", &[]), Err(ErrorCode::PasswordTooShort));
        assert_eq!(check("", &[]), Err(ErrorCode::PasswordTooShort));
        // Counted in characters, not bytes: twelve characters of two bytes each pass the length.
        assert_ne!(check("żółćżółćżółć", &[]), Err(ErrorCode::PasswordTooShort));
    }

    #[test]
    fn common_and_guessable_passwords_are_refused_with_advice() {
        for weak in [
            "password1234",
            "aaaaaaaaaaaa",
            "qwertyuiop123",
            "abcdefghijkl",
        ] {
            assert_eq!(check(weak, &[]), Err(ErrorCode::PasswordTooWeak), "{weak}");
            assert!(feedback(weak, &[]).is_some(), "{weak} gets advice");
        }
    }

    #[test]
    fn a_password_built_from_the_email_is_refused() {
        let email = "margaret.hamilton@example.org";
        let inputs = email_words(email);
        assert_eq!(
            check("margarethamilton", &inputs),
            Err(ErrorCode::PasswordTooWeak)
        );
    }

    #[test]
    fn long_unusual_passphrases_pass() {
        for strong in [
            "correct-horse-battery-staple-17",
            "stepgate-demo",
            "quiet harbor lantern",
        ] {
            assert_eq!(check(strong, &[]), Ok(()), "{strong}");
        }
    }
}
