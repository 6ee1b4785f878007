//! What the browser sees of a flow: the current step, never the flow's secrets. A provider
//! declares its forms here, so one connect page renders every provider's steps.

use serde::{Deserialize, Serialize};

/// Where a second-factor code comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "channel", rename_all = "snake_case")]
pub enum CodeChannel {
    Sms,
    /// A web TOTP site opened in a popup at `deep_link`.
    Totp {
        deep_link: String,
    },
}

/// What kind of value a form field takes (the input's type and keyboard).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    Text,
    Email,
    Password,
    /// A one-time code: numeric keyboard, autofill from SMS.
    Code,
    Url,
}

/// One field of a provider's form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldSpec {
    /// The form field name the provider reads.
    pub name: String,
    /// The visible label and accessible name ("Login", "Verification code").
    pub label: String,
    pub kind: FieldKind,
    /// The `autocomplete` hint (`username`, `current-password`, `one-time-code`, `off`).
    pub autocomplete: String,
    /// A line under the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// What is typed here is a secret (a password, a code, a URL that carries one): never
    /// echoed back into a page, a URL or a log. Passwords and codes are secret from the start.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secret: bool,
}

impl FieldSpec {
    pub fn new(name: &str, label: &str, kind: FieldKind) -> Self {
        let autocomplete = match kind {
            FieldKind::Email => "username",
            FieldKind::Password => "current-password",
            FieldKind::Code => "one-time-code",
            FieldKind::Text | FieldKind::Url => "off",
        };
        FieldSpec {
            name: name.to_owned(),
            label: label.to_owned(),
            kind,
            autocomplete: autocomplete.to_owned(),
            hint: None,
            secret: matches!(kind, FieldKind::Password | FieldKind::Code),
        }
    }

    /// Marks what is typed here as a secret (see [`FieldSpec::secret`]).
    pub fn secret(mut self) -> Self {
        self.secret = true;
        self
    }

    pub fn autocomplete(mut self, hint: &str) -> Self {
        self.autocomplete = hint.to_owned();
        self
    }

    pub fn hint(mut self, text: &str) -> Self {
        self.hint = Some(text.to_owned());
        self
    }
}

/// A link the step offers (opened in a new tab), e.g. "Open Xiaomi verification page".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkSpec {
    pub label: String,
    pub url: String,
}

/// A second way to submit a step ("Send code"): a button that sends `name=value` and needs no
/// other field filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionSpec {
    pub label: String,
    pub name: String,
    pub value: String,
}

/// The step a flow waits at, as rendered by the client.
/// A form's submit button: what it does, which says what it reads and what it reads while the
/// step runs. On the wire it is its label (`"Connect"`), as it always was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Submit {
    /// Sends the sign-in details: "Connect", then "Connecting…".
    Connect,
    /// Sends a code: "Verify", then "Verify…".
    Verify,
    /// Any other button ("Connect with URL"), then its label with "…".
    Labelled(String),
}

impl Submit {
    pub fn label(&self) -> &str {
        match self {
            Submit::Connect => "Connect",
            Submit::Verify => "Verify",
            Submit::Labelled(label) => label,
        }
    }

    /// What the button reads while its step runs.
    pub fn busy_label(&self) -> String {
        match self {
            Submit::Connect => "Connecting…".to_owned(),
            other => format!("{}…", other.label()),
        }
    }
}

impl From<String> for Submit {
    fn from(label: String) -> Self {
        match label.as_str() {
            "Connect" => Submit::Connect,
            "Verify" => Submit::Verify,
            _ => Submit::Labelled(label),
        }
    }
}

impl From<&str> for Submit {
    fn from(label: &str) -> Self {
        Submit::from(label.to_owned())
    }
}

impl PartialEq<str> for Submit {
    fn eq(&self, label: &str) -> bool {
        self.label() == label
    }
}

impl PartialEq<&str> for Submit {
    fn eq(&self, label: &&str) -> bool {
        self.label() == *label
    }
}

impl From<Submit> for String {
    fn from(submit: Submit) -> Self {
        submit.label().to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepView {
    /// A one-time code is needed. With `passkey`, one of the account's passkeys may answer
    /// instead: the options for `navigator.credentials.get` (JSON).
    Code {
        channel: CodeChannel,
        digits: u8,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        passkey: Option<String>,
    },
    /// A passkey is asked for, with these options for `navigator.credentials.get` (JSON): the
    /// second factor of an account with passkeys and no TOTP, or a sign-in by passkey alone.
    Passkey { options: String },
    /// A form of the provider's fields, with a submit button. `intro` says what the step is
    /// (e.g. that a code was sent); `links` are shown with it.
    Form {
        /// Why this step is shown instead of the expected one (e.g. "automatic sign-in did not
        /// work"): announced at once (`role="alert"`), above the intro.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        alert: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        intro: Option<String>,
        fields: Vec<FieldSpec>,
        submit: Submit,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        links: Vec<LinkSpec>,
        /// Other buttons, shown before the form's fields.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        actions: Vec<ActionSpec>,
    },
}

impl StepView {
    /// The form's fields (none for the other kinds of step).
    pub fn fields(&self) -> &[FieldSpec] {
        match self {
            StepView::Form { fields, .. } => fields,
            _ => &[],
        }
    }

    /// A form with these fields and this button, nothing else.
    pub fn form(fields: Vec<FieldSpec>, submit: impl Into<Submit>) -> Self {
        StepView::Form {
            alert: None,
            intro: None,
            fields,
            submit: submit.into(),
            links: Vec::new(),
            actions: Vec::new(),
        }
    }
}

/// A flow that is still under way: its id and its current step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowView {
    pub flow_id: String,
    pub step: StepView,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_codes_are_secret_and_a_field_can_be_marked_so() {
        let secret = |kind| FieldSpec::new("f", "F", kind).secret;
        assert!(secret(FieldKind::Password));
        assert!(secret(FieldKind::Code));
        assert!(!secret(FieldKind::Text));
        assert!(!secret(FieldKind::Email));
        assert!(!secret(FieldKind::Url));
        assert!(
            FieldSpec::new("redirect_url", "Redirect URL", FieldKind::Url)
                .secret()
                .secret
        );

        // On the wire `secret` is there only when true, and an older view reads as not secret.
        let plain = serde_json::to_value(FieldSpec::new("vin", "VIN", FieldKind::Text)).unwrap();
        assert!(plain.get("secret").is_none());
        let code = serde_json::to_value(FieldSpec::new("code", "Code", FieldKind::Code)).unwrap();
        assert_eq!(code["secret"], serde_json::json!(true));
        let back: FieldSpec = serde_json::from_value(plain).unwrap();
        assert!(!back.secret);
    }
}
