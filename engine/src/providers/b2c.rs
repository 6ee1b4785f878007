//! What the two Azure AD B2C logins ([`super::lynkco`], [`super::flameconnect`]) share
//! (shared/protocols.md §1, §2 and their corrections): PKCE, MSAL's random values, the sign-in
//! page's `var SETTINGS = {…}`, B2C's HTTP-200 status bodies, the app redirect a login ends on
//! (a custom scheme never fetched), the token endpoint's answers, unverified JWT claims, and the
//! pasted-redirect fallback for when B2C changes under us.

use data_encoding::BASE64URL_NOPAD;
use reqwest::header::HeaderName;
use serde_json::Value;
use sha2::{Digest, Sha256};
use url::Url;

use super::StepError;
use crate::flows::upstream::UpstreamResponse;
use crate::view::{ActionSpec, FieldKind, FieldSpec, LinkSpec, StepView, Submit};
use crate::ErrorCode;

pub use super::{bounded, ACTION_FIELD, WHOLE_STEP};
/// The field of a pasted app redirect (the manual way).
pub const REDIRECT_FIELD: &str = "redirect_url";
/// `action` of the first form's "Sign in on …'s page instead" button.
pub const ACTION_MANUAL: &str = "manual";
/// The step that waits for a pasted app redirect.
pub const STEP_MANUAL: &str = "manual";

/// The first form of a B2C provider: its `fields`, the button "Connect", and a second button
/// `manual_label` that chooses the manual way (`action=manual`) from the start.
pub fn first_form(fields: Vec<FieldSpec>, manual_label: &str) -> StepView {
    StepView::Form {
        alert: None,
        intro: None,
        fields,
        submit: Submit::Connect,
        links: Vec::new(),
        actions: vec![ActionSpec {
            label: manual_label.to_owned(),
            name: ACTION_FIELD.to_owned(),
            value: ACTION_MANUAL.to_owned(),
        }],
    }
}

/// Why the manual step is shown.
#[derive(Clone, Copy)]
pub enum Why {
    Chosen,
    AutomationFailed,
}

/// What one B2C provider's manual step says: the service, how the user signs in there, the
/// address the page ends on, the field's hint, and the link's label.
pub struct ManualWords {
    pub service: &'static str,
    pub sign_in_with: &'static str,
    pub ends_on: &'static str,
    pub hint: &'static str,
    pub link_label: &'static str,
}

/// The manual step: why, the link to the provider's own sign-in page (`link`, as a browser
/// reaches it), and the "Redirect URL" field for the address that page ends on.
pub fn manual_view(words: &ManualWords, why: Why, link: &Url) -> StepView {
    // Announced (role="alert"): the user pressed Connect and gets another step than expected.
    let alert = match why {
        Why::Chosen => None,
        Why::AutomationFailed => Some(format!(
            "Automatic sign-in did not work: {}'s sign-in pages did not answer the way Stepgate expects. You can still sign in on its own page.",
            words.service
        )),
    };
    StepView::Form {
        alert,
        intro: Some(format!(
            "Open {}'s sign-in page with the link below and sign in there with {}. The page then ends on an address starting with {} that the browser cannot open: copy that whole address and paste it here.",
            words.service, words.sign_in_with, words.ends_on
        )),
        // The redirect carries the authorization code.
        fields: vec![FieldSpec::new(REDIRECT_FIELD, "Redirect URL", FieldKind::Url)
            .hint(words.hint)
            .secret()],
        submit: Submit::Connect,
        links: vec![LinkSpec {
            label: words.link_label.to_owned(),
            url: link.to_string(),
        }],
        actions: Vec::new(),
    }
}

pub fn header(name: &'static str) -> HeaderName {
    HeaderName::from_static(name)
}

/// A PKCE pair (RFC 7636): the verifier stays with the flow, the challenge goes to authorize.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    /// 32 random bytes as base64url: 43 characters of `[A-Za-z0-9_-]`, within RFC 7636's
    /// alphabet and length (43..=128), as MSAL's verifier is.
    pub fn generate() -> Pkce {
        use rand::RngCore;
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Pkce::from_verifier(BASE64URL_NOPAD.encode(&bytes))
    }

    pub fn from_verifier(verifier: String) -> Pkce {
        let challenge = s256(&verifier);
        Pkce {
            verifier,
            challenge,
        }
    }
}

/// The S256 challenge: base64url(SHA-256(verifier)), no padding.
pub fn s256(verifier: &str) -> String {
    BASE64URL_NOPAD.encode(&Sha256::digest(verifier.as_bytes()))
}

/// Python's `secrets.token_urlsafe(16)`, which MSAL uses for `state` and the nonce: 16 random
/// bytes as unpadded base64url, 22 characters.
pub fn token_urlsafe16() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    BASE64URL_NOPAD.encode(&bytes)
}

/// Lower-case hex SHA-256: MSAL sends this of its nonce, and the id_token must carry it back.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// A random version-4 UUID (the `deviceUuid` of Lynk & Co's validate-session).
pub fn uuid_v4() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The string value of `"key": "…"` in a B2C page's `var SETTINGS = {…}` (searched from the
/// `SETTINGS` declaration on, else in the whole page): JSON escapes (`\"`, `\/`, `\u…`) are
/// undone. Like flameconnect's `re.search(r'"csrf"\s*:\s*"([^"]+)"', html)`, but an escaped
/// quote does not end the value.
pub fn settings_string(html: &str, key: &str) -> Option<String> {
    let from = html.find("var SETTINGS").unwrap_or(0);
    let text = &html[from..];
    let needle = format!("\"{key}\"");
    let mut at = 0;
    while let Some(found) = text[at..].find(&needle) {
        let after = at + found + needle.len();
        at = after;
        let rest = text[after..].trim_start();
        let Some(rest) = rest.strip_prefix(':') else {
            continue;
        };
        let rest = rest.trim_start();
        if !rest.starts_with('"') {
            continue;
        }
        let Some(end) = string_end(rest) else {
            continue;
        };
        match serde_json::from_str::<String>(&rest[..=end]) {
            Ok(value) if !value.is_empty() => return Some(value),
            _ => continue,
        }
    }
    None
}

/// The index of the quote closing the JSON string that `text` starts with.
fn string_end(text: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in text.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i),
            '\n' => return None,
            _ => {}
        }
    }
    None
}

/// What a B2C sign-in page's SETTINGS must carry for the `SelfAsserted` POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageSettings {
    pub csrf: String,
    /// Already prefixed: `StateProperties=eyJ…`.
    pub trans_id: String,
}

/// SETTINGS' `csrf` and `transId`, or flameconnect's own words for what is missing.
pub fn page_settings(html: &str) -> Result<PageSettings, &'static str> {
    let csrf =
        settings_string(html, "csrf").ok_or("Could not find CSRF token in B2C login page")?;
    let trans_id =
        settings_string(html, "transId").ok_or("Could not find transId in B2C login page")?;
    Ok(PageSettings { csrf, trans_id })
}

/// B2C's answer to a `SelfAsserted` POST: HTTP 200 either way, the verdict in the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum B2cStatus {
    /// `{"status":"200"}`.
    Accepted,
    /// `{"status":"400","errorCode":…,"message":…}`.
    Refused {
        error_code: Option<String>,
        message: Option<String>,
    },
}

/// The verdict of a `SelfAsserted` body; `None` when the body is not B2C's status JSON.
pub fn b2c_status(body: &[u8]) -> Option<B2cStatus> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let status = match value.get("status")? {
        Value::String(s) => s.trim().parse::<u16>().ok()?,
        Value::Number(n) => u16::try_from(n.as_u64()?).ok()?,
        _ => return None,
    };
    let text = |key: &str| {
        value
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    match status {
        200 => Some(B2cStatus::Accepted),
        400..=499 => Some(B2cStatus::Refused {
            error_code: text("errorCode"),
            message: text("message"),
        }),
        _ => None,
    }
}

/// Whether `location` is the app redirect `prefix` (`msal<id>://auth`), followed by nothing,
/// `/`, `?` or `#`: flameconnect stops at `msal{CLIENT_ID}://auth` followed by `?` or `/`.
pub fn is_app_redirect(location: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    match location.get(..prefix.len()) {
        Some(head) if head.eq_ignore_ascii_case(prefix) => matches!(
            location[prefix.len()..].chars().next(),
            None | Some('/' | '?' | '#')
        ),
        _ => false,
    }
}

/// What an app redirect says: a code (with MSAL's `state`) or B2C's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirected {
    Code {
        code: String,
        state: Option<String>,
    },
    Error {
        error: String,
        description: Option<String>,
    },
}

/// The parameters of an app redirect, from its query and its fragment (MSAL's
/// `_parse_redirect_url` reads either). `None` when it carries neither `code` nor `error`.
pub fn read_redirect(url: &Url) -> Option<Redirected> {
    let mut pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if let Some(fragment) = url.fragment() {
        pairs.extend(
            url::form_urlencoded::parse(fragment.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned())),
        );
    }
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    if let Some(error) = get("error") {
        return Some(Redirected::Error {
            error,
            description: get("error_description"),
        });
    }
    Some(Redirected::Code {
        code: get("code")?,
        state: get("state"),
    })
}

/// B2C's failure redirect as our error: a refused sign-in (`access_denied`, `AADB2C90053`) is
/// `invalid_auth`; anything else is `token_error` with B2C's description.
pub fn redirect_error(error: &str, description: Option<&str>) -> StepError {
    let description = description.unwrap_or_default();
    if error == "access_denied" || description.contains("AADB2C90053") {
        return StepError::new(ErrorCode::InvalidAuth);
    }
    tracing::warn!(error, "B2C ended the sign-in with an error");
    let detail = if description.is_empty() {
        error.to_owned()
    } else {
        description.to_owned()
    };
    StepError::new(ErrorCode::TokenError).detail(detail)
}

/// A JWT's claims, read without checking its signature (only the issuer can; the client needs
/// `exp` to know when to renew, as Hass-Lynk-Co's token manager does).
pub fn jwt_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = BASE64URL_NOPAD
        .decode(payload.trim_end_matches('=').as_bytes())
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims.is_object().then_some(claims)
}

/// A JWT's `exp` (Unix seconds).
pub fn jwt_exp(token: &str) -> Option<i64> {
    let exp = jwt_claims(token)?.get("exp")?.clone();
    exp.as_i64().or_else(|| exp.as_f64().map(|f| f as i64))
}

/// The first address in a B2C token's `emails` claim (or `email`).
pub fn jwt_email(token: &str) -> Option<String> {
    let claims = jwt_claims(token)?;
    let first = match claims.get("emails") {
        Some(Value::Array(emails)) => emails.first().and_then(Value::as_str),
        _ => claims.get("email").and_then(Value::as_str),
    };
    first.filter(|e| !e.is_empty()).map(str::to_owned)
}

/// MSAL's checks of the id_token of a code exchange: `nonce` equals the (hashed) nonce sent,
/// `aud` contains our client id, `exp` has not passed. Any failure is `token_error`.
pub fn check_id_token(
    id_token: &str,
    nonce: Option<&str>,
    client_id: &str,
    now: i64,
) -> Result<(), StepError> {
    let refuse = |why: &str| {
        tracing::warn!(why, "an id_token was refused");
        Err(StepError::new(ErrorCode::TokenError).detail(format!("The sign-in answer {why}.")))
    };
    let Some(claims) = jwt_claims(id_token) else {
        return refuse("carried no readable id_token");
    };
    if let Some(nonce) = nonce {
        if claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
            return refuse("belongs to another sign-in (its nonce does not match)");
        }
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => aud == client_id,
        Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(client_id)),
        _ => false,
    };
    if !audience_ok {
        return refuse("was meant for another app (aud)");
    }
    match jwt_exp(id_token) {
        Some(exp) if exp > now => Ok(()),
        _ => refuse("has already expired"),
    }
}

pub use crate::base::email::Email;

/// A vehicle identification number: 17 of `0-9A-Z` without I, O and Q (ISO 3779).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vin(String);

impl Vin {
    /// Trimmed and upper-cased first.
    pub fn parse(text: &str) -> Result<Vin, ErrorCode> {
        let vin = text.trim().to_ascii_uppercase();
        let allowed =
            |c: char| c.is_ascii_digit() || (c.is_ascii_uppercase() && !"IOQ".contains(c));
        if vin.len() == 17 && vin.chars().all(allowed) {
            Ok(Vin(vin))
        } else {
            Err(ErrorCode::InvalidVin)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Home Assistant's `slugify` for ASCII text: lower case, each run of other characters one
/// `_`, no `_` at either end (`Demo@FlameConnect.test` → `demo_flameconnect_test`).
pub fn slugify(text: &str) -> String {
    let mut slug = String::with_capacity(text.len());
    for c in text.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('_') {
            slug.push('_');
        }
    }
    slug.trim_matches('_').to_owned()
}

/// A query value percent-encoded except for `=`: flameconnect sends `tx=StateProperties=…`
/// with its `=` as is (B2C takes both).
pub fn keep_equals(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes())
        .collect::<String>()
        .replace("%3D", "=")
}

/// A token endpoint's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Granted {
    Tokens(Tokens),
    /// An OAuth error (`invalid_grant` for a used, expired or revoked grant).
    Refused {
        error: String,
        description: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
    pub id_token: Option<String>,
    /// Seconds the access token lives, when said.
    pub expires_in: Option<i64>,
}

impl Tokens {
    /// When the access token expires: `expires_in` from `now`, else the JWT's `exp`.
    pub fn access_expires_at(&self, now: i64) -> Option<i64> {
        self.expires_in
            .map(|s| now + s)
            .or_else(|| jwt_exp(&self.access_token))
    }
}

/// An HTTP status that is neither success nor the provider's refusal, as our error.
pub fn status_error(response: &UpstreamResponse, what: &str) -> StepError {
    if response.status == 503 {
        return ErrorCode::ServiceUnavailable.into();
    }
    if response.is_redirect() {
        // A redirect where this step follows none: not followed, wherever it points.
        tracing::warn!(
            status = response.status,
            step = what,
            "B2C redirected where no redirect is followed"
        );
        return ErrorCode::BadRedirect.into();
    }
    tracing::warn!(
        status = response.status,
        step = what,
        "B2C answered out of shape"
    );
    ErrorCode::UpstreamOutOfShape.into()
}

/// Reads a token endpoint's answer: 200 with both tokens, or 400/401 with `error`.
pub fn read_tokens(response: &UpstreamResponse, what: &str) -> Result<Granted, StepError> {
    let body: Option<Value> = serde_json::from_slice(&response.body).ok();
    let text = |key: &str| {
        body.as_ref()?
            .get(key)?
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    match response.status {
        200 => {
            let (Some(access_token), Some(refresh_token)) =
                (text("access_token"), text("refresh_token"))
            else {
                tracing::warn!(step = what, "a token answer without its tokens");
                return Err(ErrorCode::UpstreamOutOfShape.into());
            };
            let expires_in = body.as_ref().and_then(|b| match b.get("expires_in")? {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => s.parse().ok(),
                _ => None,
            });
            Ok(Granted::Tokens(Tokens {
                access_token,
                refresh_token,
                id_token: text("id_token"),
                expires_in,
            }))
        }
        400 | 401 => match text("error") {
            Some(error) => Ok(Granted::Refused {
                error,
                description: text("error_description"),
            }),
            None => Err(status_error(response, what)),
        },
        _ => Err(status_error(response, what)),
    }
}

/// What a good paste gave: the code, and `state` when it was a whole URL with one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pasted {
    pub code: String,
    pub state: Option<String>,
}

/// A pasted app redirect's code and `state`, or why the paste is refused (`invalid_url` on
/// [`REDIRECT_FIELD`], each kind of bad paste with its own words; B2C's error when the page
/// ended with one).
pub struct Paste<'a> {
    /// Where the app redirect starts (`msauth://prod.lynkco.app.crisp.prod/`).
    pub prefix: &'a str,
    /// "Lynk & Co".
    pub title: &'a str,
    /// Whether a bare code (no URL around it) is taken.
    pub bare_code: bool,
}

impl Paste<'_> {
    pub fn check(&self, pasted: &str) -> Result<Pasted, StepError> {
        let bad = |detail: String| {
            StepError::new(ErrorCode::InvalidUrl)
                .on(REDIRECT_FIELD)
                .detail(detail)
        };
        let (prefix, title) = (self.prefix, self.title);
        let text = pasted.trim();
        if text.contains('…') || text.ends_with("...") {
            return Err(bad(
                "This URL looks cut off (it has “…” in it). Copy the whole URL from the address bar and paste it again.".into(),
            ));
        }
        if !text.contains("://") {
            if self.bare_code && is_code_shaped(text) {
                return Ok(Pasted {
                    code: text.to_owned(),
                    state: None,
                });
            }
            return Err(bad(format!(
                "This is not the address {title}'s page ended on. Paste the whole URL; it starts with {prefix}."
            )));
        }
        if !is_app_redirect(text, prefix) {
            let start = text.split("://").next().unwrap_or_default();
            let host = text
                .split("://")
                .nth(1)
                .and_then(|rest| rest.split(['/', '?', '#']).next())
                .unwrap_or_default();
            return Err(bad(format!(
                "This URL goes to {start}://{host}, not to {prefix}: it is not the one {title}'s page ended on."
            )));
        }
        let parsed = Url::parse(text).map_err(|_| {
            bad(format!(
                "This URL could not be read. Copy the whole URL {title}'s page ended on and paste it again."
            ))
        })?;
        match read_redirect(&parsed) {
            Some(Redirected::Error { error, description }) => {
                Err(redirect_error(&error, description.as_deref()).on(REDIRECT_FIELD))
            }
            Some(Redirected::Code { code, state }) => Ok(Pasted { code, state }),
            None => Err(bad(
                "This URL carries no sign-in code (no code= in it). Copy the whole URL and paste it again.".into(),
            )),
        }
    }
}

/// An authorization code on its own: one word of URL-safe characters.
fn is_code_shaped(text: &str) -> bool {
    text.len() >= 8
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~+/=".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_verifier_is_in_the_rfc_alphabet_and_the_challenge_is_s256() {
        for _ in 0..20 {
            let pkce = Pkce::generate();
            assert!((43..=128).contains(&pkce.verifier.len()));
            assert!(pkce
                .verifier
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c)));
            assert_eq!(pkce.challenge, s256(&pkce.verifier));
        }
        assert_ne!(Pkce::generate().verifier, Pkce::generate().verifier);
        // RFC 7636 Appendix B: the verifier is base64url of these 32 octets.
        let octets = [
            116, 24, 223, 180, 151, 153, 224, 37, 79, 250, 96, 125, 216, 173, 187, 186, 22, 212,
            37, 77, 105, 214, 191, 240, 91, 88, 5, 88, 83, 132, 141, 121,
        ];
        let verifier = BASE64URL_NOPAD.encode(&octets);
        assert_eq!(verifier, "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        assert_eq!(
            Pkce::from_verifier(verifier).challenge,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn state_and_nonce_are_like_token_urlsafe_16_and_the_nonce_sent_is_its_sha256_hex() {
        let state = token_urlsafe16();
        assert_eq!(state.len(), 22);
        assert!(state
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)));
        assert_ne!(state, token_urlsafe16());
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let uuid = uuid_v4();
        assert_eq!(uuid.len(), 36);
        assert_eq!(&uuid[14..15], "4");
    }

    const PAGE: &str = r#"<!DOCTYPE html><html><head><title>Sign in</title>
<script data-container="true" nonce="x">
var SETTINGS = {"remoteResource":"https://static.example/unified.html","retryLimit":3,"trimSpacesInPassword":true,"api":"CombinedSigninAndSignup","csrf":"dGVzdC1jc3JmLXRva2Vu+/A==","transId":"StateProperties=eyJUSUQiOiIxMjMifQ","pageViewId":"7e1c","suppressElementCss":false,"isPageViewIdSentWithHeader":false,"hosts":{"tenant":"/gdhvb2cflameconnect.onmicrosoft.com/B2C_1A_FirePhoneSignUpOrSignInWithPhoneOrEmail","policy":"B2C_1A_FirePhoneSignUpOrSignInWithPhoneOrEmail","static":"https://static.example/"},"locale":{"lang":"en","country":"US"},"xhrSettings":{"retryEnabled":true},"config":{"showSignupLink":"True","sendHintOnSignup":"False","includePasswordRequirements":"true","enableRememberMe":"true"}};
</script></head><body></body></html>"#;

    #[test]
    fn settings_are_read_from_a_real_shaped_page() {
        let settings = page_settings(PAGE).unwrap();
        assert_eq!(settings.csrf, "dGVzdC1jc3JmLXRva2Vu+/A==");
        assert_eq!(settings.trans_id, "StateProperties=eyJUSUQiOiIxMjMifQ");
        assert_eq!(settings_string(PAGE, "pageViewId").as_deref(), Some("7e1c"));
    }

    #[test]
    fn settings_over_several_lines_with_escaped_quotes_and_a_decoy_key() {
        let page = "<p>\"csrf\": \"not-this-one\"</p>\n<script>\nvar SETTINGS = {\n  \"config\": {\"label\": \"say \\\"csrf\\\": hi\"},\n  \"csrf\" :\n    \"a\\\"b\\/c\",\n  \"transId\": \"StateProperties=eyJ9\"\n};\n</script>";
        let settings = page_settings(page).unwrap();
        assert_eq!(settings.csrf, "a\"b/c");
        assert_eq!(settings.trans_id, "StateProperties=eyJ9");
    }

    #[test]
    fn missing_settings_say_which_in_flameconnects_words() {
        assert_eq!(
            page_settings("<html>var SETTINGS = {\"transId\":\"x\"};</html>"),
            Err("Could not find CSRF token in B2C login page")
        );
        assert_eq!(
            page_settings("<html>var SETTINGS = {\"csrf\":\"x\"};</html>"),
            Err("Could not find transId in B2C login page")
        );
        assert!(page_settings("Proxy error").is_err());
    }

    #[test]
    fn b2c_status_bodies_tell_accepted_from_refused() {
        assert_eq!(
            b2c_status(br#"{"status":"200"}"#),
            Some(B2cStatus::Accepted)
        );
        assert_eq!(
            b2c_status(
                br#"{"status":"400","errorCode":"AADB2C90053","message":"Invalid username or password."}"#
            ),
            Some(B2cStatus::Refused {
                error_code: Some("AADB2C90053".into()),
                message: Some("Invalid username or password.".into())
            })
        );
        assert_eq!(
            b2c_status(br#"{"status": 400, "message":"Invalid"}"#),
            Some(B2cStatus::Refused {
                error_code: None,
                message: Some("Invalid".into())
            })
        );
        assert_eq!(b2c_status(br#"{"unexpected":true}"#), None);
        assert_eq!(b2c_status(b"<html>Proxy error</html>"), None);
    }

    use crate::providers::fixed_url as url;

    const MSAL: &str = "msal1af761dc-085a-411f-9cb9-53e5e2115bd2://auth";

    #[test]
    fn app_redirects_are_told_by_their_prefix_with_or_without_a_slash() {
        assert!(is_app_redirect(&format!("{MSAL}/?state=s&code=c"), MSAL));
        assert!(is_app_redirect(&format!("{MSAL}?code=c"), MSAL));
        assert!(!is_app_redirect(&format!("{MSAL}x?code=c"), MSAL));
        assert!(!is_app_redirect("https://evil.example/?code=c", MSAL));
        let lynk = "msauth://prod.lynkco.app.crisp.prod/";
        assert!(is_app_redirect(
            "msauth://prod.lynkco.app.crisp.prod/2jmj7l5rSw0yVb%2FvlWAYkK%2FYBwk%3D?code=c",
            lynk
        ));
        assert!(!is_app_redirect(
            "msauth://prod.lynkco.app.crisp.prodx/?code=c",
            lynk
        ));
    }

    #[test]
    fn redirects_give_code_and_state_or_the_error() {
        let real = url(&format!(
            "{MSAL}/?state=abc-_123&trustFrameworkPolicy=B2C_1A_FirePhoneSignUpOrSignInWithPhoneOrEmail&client_info=eyJ1aWQiOiIxIn0&code=eyJraWQi.x-y_z"
        ));
        assert_eq!(
            read_redirect(&real),
            Some(Redirected::Code {
                code: "eyJraWQi.x-y_z".into(),
                state: Some("abc-_123".into())
            })
        );
        let no_slash = url(&format!("{MSAL}?code=c1&state=s1"));
        assert_eq!(
            read_redirect(&no_slash),
            Some(Redirected::Code {
                code: "c1".into(),
                state: Some("s1".into())
            })
        );
        let fragment = url(&format!("{MSAL}/#code=c2&state=s2"));
        assert_eq!(
            read_redirect(&fragment),
            Some(Redirected::Code {
                code: "c2".into(),
                state: Some("s2".into())
            })
        );
        let error = url(
            "msauth://prod.lynkco.app.crisp.prod/2jmj7l5rSw0yVb%2FvlWAYkK%2FYBwk%3D?error=access_denied&error_description=AADB2C90053%3a+The+username+or+password",
        );
        let Some(Redirected::Error { error, description }) = read_redirect(&error) else {
            panic!("an error");
        };
        assert_eq!(error, "access_denied");
        assert_eq!(
            description.as_deref(),
            Some("AADB2C90053: The username or password")
        );
        assert_eq!(
            redirect_error(&error, description.as_deref()).code,
            ErrorCode::InvalidAuth
        );
        let other = redirect_error("server_error", Some("AADB2C90075: it broke"));
        assert_eq!(other.code, ErrorCode::TokenError);
        assert_eq!(other.detail.as_deref(), Some("AADB2C90075: it broke"));
        assert_eq!(read_redirect(&url(&format!("{MSAL}/?state=s"))), None);
    }

    fn jwt(claims: Value) -> String {
        format!(
            "{}.{}.sig",
            BASE64URL_NOPAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
            BASE64URL_NOPAD.encode(claims.to_string().as_bytes())
        )
    }

    #[test]
    fn jwt_exp_and_email_are_read_without_verification() {
        let token = jwt(serde_json::json!({"exp": 1_700_003_600, "emails": ["a@b.test"]}));
        assert_eq!(jwt_exp(&token), Some(1_700_003_600));
        assert_eq!(jwt_email(&token).as_deref(), Some("a@b.test"));
        assert_eq!(jwt_exp("not-a-jwt"), None);
        assert_eq!(jwt_exp("a.!!!.c"), None);
        assert_eq!(jwt_exp(&jwt(serde_json::json!({"sub": "x"}))), None);
    }

    #[test]
    fn id_token_checks_refuse_a_forged_nonce_a_foreign_audience_and_an_old_token() {
        let now = 1_700_000_000;
        let good = jwt(serde_json::json!({"nonce": "n1", "aud": "app", "exp": now + 60}));
        assert!(check_id_token(&good, Some("n1"), "app", now).is_ok());
        let forged = check_id_token(&good, Some("n2"), "app", now).unwrap_err();
        assert_eq!(forged.code, ErrorCode::TokenError);
        assert!(forged.detail.unwrap().contains("nonce"));
        let list = jwt(serde_json::json!({"nonce": "n1", "aud": ["x", "app"], "exp": now + 60}));
        assert!(check_id_token(&list, Some("n1"), "app", now).is_ok());
        assert!(check_id_token(&good, Some("n1"), "other", now).is_err());
        assert!(check_id_token(&good, Some("n1"), "app", now + 61).is_err());
        let no_nonce = jwt(serde_json::json!({"aud": "app", "exp": now + 60}));
        assert!(check_id_token(&no_nonce, Some("n1"), "app", now).is_err());
        assert!(check_id_token("garbage", None, "app", now).is_err());
    }

    #[test]
    fn vins_and_emails_are_parsed_not_just_checked() {
        assert_eq!(
            Vin::parse("  lyvxfedc0kl123456 ").unwrap().as_str(),
            "LYVXFEDC0KL123456"
        );
        for bad in [
            "LYVXFEDC0KL12345",
            "LYVXFEDC0KL1234567",
            "LYVXFEDCOKL123456",
            "LYVXFEDC0KL12345I",
            "LYVXFEDC0KQ123456",
            "LYVXFEDC0KL12345-",
        ] {
            assert_eq!(Vin::parse(bad), Err(ErrorCode::InvalidVin), "{bad}");
        }
    }

    #[test]
    fn slugify_is_home_assistants() {
        assert_eq!(slugify("demo@flameconnect.test"), "demo_flameconnect_test");
        assert_eq!(
            slugify(" Jane.Doe+fire@Example.COM "),
            "jane_doe_fire_example_com"
        );
        assert_eq!(slugify("__a--b__"), "a_b");
        assert_eq!(
            keep_equals("StateProperties=eyJ+/="),
            "StateProperties=eyJ%2B%2F="
        );
    }

    #[test]
    fn pasted_redirects_are_refused_each_for_its_own_reason() {
        let lynk = Paste {
            prefix: "msauth://prod.lynkco.app.crisp.prod/",
            title: "Lynk & Co",
            bare_code: true,
        };
        let good = "msauth://prod.lynkco.app.crisp.prod/2jmj7l5rSw0yVb%2FvlWAYkK%2FYBwk%3D?code=eyJ.abc-def";
        assert_eq!(
            lynk.check(&format!("  {good}\n")).unwrap(),
            Pasted {
                code: "eyJ.abc-def".into(),
                state: None
            }
        );
        assert_eq!(
            lynk.check("eyJraWQiOiJjcGltY29yZV8wOTI1MjAxNSJ9.abc")
                .unwrap(),
            Pasted {
                code: "eyJraWQiOiJjcGltY29yZV8wOTI1MjAxNSJ9.abc".into(),
                state: None
            }
        );
        let detail = |text: &str| {
            let error = lynk.check(text).unwrap_err();
            assert_eq!(error.field.as_deref(), Some(REDIRECT_FIELD));
            (error.code, error.detail.unwrap_or_default())
        };
        let (code, cut) = detail(&format!("{}…", &good[..50]));
        assert_eq!(code, ErrorCode::InvalidUrl);
        assert!(cut.contains("cut off"));
        assert!(detail(&format!("{}...", &good[..60])).1.contains("cut off"));
        let (_, host) = detail("https://evil.example/x?code=abc12345");
        assert!(host.contains("https://evil.example"), "{host}");
        let (_, words) = detail("just some words");
        assert!(words.contains("starts with msauth://"), "{words}");
        let (_, no_code) = detail("msauth://prod.lynkco.app.crisp.prod/x?state=1");
        assert!(no_code.contains("no sign-in code"), "{no_code}");
        let (code, _) = detail(
            "msauth://prod.lynkco.app.crisp.prod/x?error=access_denied&error_description=AADB2C90053",
        );
        assert_eq!(code, ErrorCode::InvalidAuth);

        let msal = Paste {
            prefix: MSAL,
            title: "FlameConnect",
            bare_code: false,
        };
        assert_eq!(
            detail_of(&msal, "eyJraWQiOiJjcGltY29yZV8wOTI1MjAxNSJ9"),
            ErrorCode::InvalidUrl
        );
    }

    fn detail_of(paste: &Paste<'_>, text: &str) -> ErrorCode {
        paste.check(text).unwrap_err().code
    }
}
