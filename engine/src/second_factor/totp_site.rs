//! The TOTP site: the web TOTP service ("simple-totp") that keeps a user's seed and shows its
//! codes. Stepgate links to it twice: the setup popup asks it to add a seed
//! ([`TotpSite::registration_link`]; the site answers at the registration callback, see
//! [`crate::second_factor::enrolment`]), and the sign-in code step links to the seed's page
//! ([`TotpSite::deep_link`]). It is not a provider: providers are the ways to sign in or to
//! connect an account ([`crate::providers`]).

use crate::second_factor::totp;

/// Where the TOTP site lives and how Stepgate names itself there.
#[derive(Debug, Clone)]
pub struct TotpSite {
    /// e.g. `https://totp.example.org` (no trailing slash).
    pub base_url: String,
    /// The service name seeds are stored under, and the `otpauth://` issuer.
    pub issuer: String,
}

impl TotpSite {
    /// The deep link to the user's code: by seed id when we hold one, else by service and
    /// account (the site looks the seed up).
    pub fn deep_link(&self, seed_id: Option<&str>, email: &str) -> String {
        let base = format!(
            "{}/dashboard/simple-totp",
            self.base_url.trim_end_matches('/')
        );
        match seed_id {
            Some(id) => format!("{base}?seedId={}", totp::encode_component(id)),
            None => format!(
                "{base}?serviceName={}&accountIdentifier={}",
                totp::encode_component(&self.issuer),
                totp::encode_component(email)
            ),
        }
    }

    /// The site's `action=add` link that creates a seed and calls `callback` back.
    pub fn registration_link(&self, email: &str, callback: &str, reg_token: &str) -> String {
        format!(
            "{}/dashboard/simple-totp?action=add&service={}&account={}&callback={}&regToken={}",
            self.base_url.trim_end_matches('/'),
            totp::encode_component(&self.issuer),
            totp::encode_component(email),
            totp::encode_component(callback),
            totp::encode_component(reg_token)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_link_uses_the_seed_id_when_there_is_one_else_service_and_account() {
        let p = TotpSite {
            base_url: "https://totp.example.org/".into(),
            issuer: "Stepgate".into(),
        };
        assert_eq!(
            p.deep_link(Some("seed_abc/123"), "a@example.org"),
            "https://totp.example.org/dashboard/simple-totp?seedId=seed_abc%2F123"
        );
        assert_eq!(
            p.deep_link(None, "a+b@example.org"),
            "https://totp.example.org/dashboard/simple-totp?serviceName=Stepgate&accountIdentifier=a%2Bb%40example.org"
        );
    }
}
