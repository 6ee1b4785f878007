//! What the browser sees of a flow: the current step, never the flow's secrets.

use serde::{Deserialize, Serialize};

/// Where a second-factor code comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "channel", rename_all = "snake_case")]
pub enum CodeChannel {
    Sms,
    /// A web TOTP provider opened in a popup at `deep_link`.
    Totp {
        deep_link: String,
    },
}

/// The step a flow waits at, as rendered by the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepView {
    /// A one-time code is needed.
    Code { channel: CodeChannel, digits: u8 },
    /// The user finishes the login elsewhere and pastes back the final URL.
    AuthenticatedUrl { open_url: String },
}

/// A flow that is still under way: its id and its current step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowView {
    pub flow_id: String,
    pub step: StepView,
}
