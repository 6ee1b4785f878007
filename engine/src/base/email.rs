//! `Email`: parse, don't validate. A value of this type is a plausible, normalised address.

use std::fmt;

use crate::ErrorCode;

/// An email address, checked for shape. Two addresses are the same when their lower-case
/// forms are ([`Email::as_str`]: Stepgate's account key); a provider is sent the address as
/// the person typed it ([`Email::as_typed`]), since some keep its case.
#[derive(Debug, Clone)]
pub struct Email {
    normalised: String,
    typed: String,
}

impl PartialEq for Email {
    fn eq(&self, other: &Self) -> bool {
        self.normalised == other.normalised
    }
}

impl Eq for Email {}

impl std::hash::Hash for Email {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.normalised.hash(state)
    }
}

impl Email {
    /// Trims, lower-cases and checks the shape of an address (RFC 5321 length limits; one `@`;
    /// a dotted domain of letters, digits and hyphens). Deliverability is not checked.
    pub fn parse(raw: &str) -> Result<Email, ErrorCode> {
        let typed = raw.trim();
        let email = typed.to_lowercase();
        if email.is_empty() {
            return Err(ErrorCode::MissingFields);
        }
        if email.len() > 254 {
            return Err(ErrorCode::InvalidEmail);
        }
        let (local, domain) = email.split_once('@').ok_or(ErrorCode::InvalidEmail)?;
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local
                .chars()
                .all(|c| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
        let domain_ok = domain.contains('.')
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_alphanumeric() || c == '-')
            });
        if local_ok && domain_ok {
            Ok(Email {
                typed: typed.to_owned(),
                normalised: email,
            })
        } else {
            Err(ErrorCode::InvalidEmail)
        }
    }

    /// Lower case: the account key (and what Stepgate stores).
    pub fn as_str(&self) -> &str {
        &self.normalised
    }

    /// Trimmed, in the case it was typed (what a provider is sent).
    pub fn as_typed(&self) -> &str {
        &self.typed
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.normalised)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_and_space() {
        assert_eq!(
            Email::parse("  Ada@Example.ORG ").unwrap().as_str(),
            "ada@example.org"
        );
    }

    #[test]
    fn refuses_malformed_addresses() {
        for bad in [
            "ada",
            "ada@",
            "@example.org",
            "ada@example",
            "a b@example.org",
            "ada@@example.org",
            "ada@exa_mple.org",
            ".ada@example.org",
            "ada..b@example.org",
            "ada@-x.org",
        ] {
            assert_eq!(Email::parse(bad), Err(ErrorCode::InvalidEmail), "{bad}");
        }
    }

    #[test]
    fn empty_is_a_missing_field() {
        assert_eq!(Email::parse("   "), Err(ErrorCode::MissingFields));
    }

    #[test]
    fn over_254_characters_is_refused() {
        let long = format!("{}@example.org", "a".repeat(250));
        assert_eq!(Email::parse(&long), Err(ErrorCode::InvalidEmail));
    }

    #[test]
    fn keeps_the_typed_case_for_providers_and_compares_in_lower_case() {
        let email = Email::parse(" Demo@LynkCo.test ").unwrap();
        assert_eq!(email.as_typed(), "Demo@LynkCo.test");
        assert_eq!(email.as_str(), "demo@lynkco.test");
        assert_eq!(email, Email::parse("demo@lynkco.TEST").unwrap());
        for bad in [
            "demo",
            "@lynkco.test",
            "demo@lynkco",
            "de mo@lynkco.test",
            "a@b@c.test",
            "a@.test",
            "a@b..test",
        ] {
            assert_eq!(Email::parse(bad), Err(ErrorCode::InvalidEmail), "{bad}");
        }
    }
}
