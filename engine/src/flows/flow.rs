//! A flow: one login under way, as plain serialisable data with an expiry (Kratos' flow object,
//! Home Assistant's config flow).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::view::StepView;

/// How long a flow may wait between steps before it is refused with `flow_expired`.
pub const DEFAULT_FLOW_TTL: Duration = Duration::from_secs(10 * 60);

/// Wrong answers (codes, URLs) a flow takes before it ends with `too_many_attempts`.
pub const MAX_ATTEMPTS: u32 = 5;

/// 128 random bits from the OS generator, shown as 32 lower-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowId([u8; 16]);

impl FlowId {
    pub fn random() -> Self {
        let mut bytes = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        FlowId(bytes)
    }
}

impl fmt::Display for FlowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a flow id")]
pub struct NotAFlowId;

impl FromStr for FlowId {
    type Err = NotAFlowId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 32 {
            return Err(NotAFlowId);
        }
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| NotAFlowId)?;
        Ok(FlowId(bytes))
    }
}

/// What a flow is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowKind {
    /// Signing in to Stepgate itself.
    Login,
    /// Connecting a third-party account to a signed-in user.
    Connect,
}

impl FlowKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FlowKind::Login => "login",
            FlowKind::Connect => "connect",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "login" => Some(FlowKind::Login),
            "connect" => Some(FlowKind::Connect),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Flow {
    pub id: FlowId,
    pub kind: FlowKind,
    /// The provider's name (`local`, `lynkco`, …).
    pub provider: String,
    /// The provider's name for the step the flow waits at.
    pub step: String,
    /// Who may continue the flow: a hash of the browser session it was started from.
    pub owner: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    /// Wrong answers so far (see [`MAX_ATTEMPTS`]).
    pub attempts: u32,
    /// Why the flow runs, the provider's state and the upstream cookie jar, sealed with
    /// AES-256-GCM and bound to this flow's id (engine/src/flows/runner.rs): session cookies
    /// and PKCE verifiers are never in the database in clear.
    pub state: Vec<u8>,
    /// What the browser is shown at this step (so a reloaded page can render it again).
    pub view: Option<StepView>,
}

impl Flow {
    pub fn new(
        kind: FlowKind,
        provider: &str,
        step: &str,
        owner: Option<String>,
        now: i64,
        ttl: Duration,
    ) -> Flow {
        Flow {
            id: FlowId::random(),
            kind,
            provider: provider.to_owned(),
            step: step.to_owned(),
            owner,
            created_at: now,
            expires_at: now + ttl.as_secs() as i64,
            attempts: 0,
            state: Vec::new(),
            view: None,
        }
    }

    pub fn is_expired(&self, now: i64) -> bool {
        now >= self.expires_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_id_round_trips_through_its_text_form() {
        let id = FlowId::random();
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(text.parse::<FlowId>().unwrap(), id);
    }

    #[test]
    fn flow_ids_are_not_repeated() {
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| FlowId::random()).collect();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn malformed_flow_ids_are_refused() {
        for bad in ["", "abc", &"g".repeat(32), &"a".repeat(33)] {
            assert_eq!(bad.parse::<FlowId>(), Err(NotAFlowId), "{bad}");
        }
    }

    #[test]
    fn a_flow_expires_at_its_deadline() {
        let flow = Flow::new(
            FlowKind::Login,
            "local",
            "code",
            None,
            1000,
            DEFAULT_FLOW_TTL,
        );
        assert!(!flow.is_expired(1000 + 599));
        assert!(flow.is_expired(1000 + 600));
    }
}
