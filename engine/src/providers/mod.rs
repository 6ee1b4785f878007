//! A provider says how one kind of login talks: which steps it has and what each step sends.
//! The engine ([`crate::Engine`]) runs every provider the same way: it stores the flow between
//! steps, counts wrong answers, enforces expiry and discards failed flows.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::flow::{Flow, FlowKind};
use crate::users::UserId;
use crate::view::StepView;
use crate::ErrorCode;

pub mod local;

/// The fields a user submitted at a step, by name.
pub type Input = BTreeMap<String, String>;

/// What a flow has produced when it ends well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// A local account proved who it is: the app opens a session for it.
    SignedIn { user_id: UserId },
}

/// The result of one step (Home Assistant's form / create_entry / abort).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The flow waits at `step`; `state` is what the provider needs to go on.
    Next {
        step: &'static str,
        view: StepView,
        state: serde_json::Value,
    },
    Done(Completion),
    /// `invalid_code` and `invalid_url` keep the flow open for another try (up to the attempt
    /// limit); any other code ends it.
    Failed(ErrorCode),
}

#[async_trait]
pub trait Provider: Send + Sync {
    /// The name flows are stored under, and that URLs and tests use.
    fn name(&self) -> &'static str;
    fn kind(&self) -> FlowKind;
    /// The first step: nothing is stored yet.
    async fn start(&self, input: &Input) -> Outcome;
    /// A later step of a stored flow.
    async fn submit(&self, flow: &Flow, input: &Input) -> Outcome;
}

/// A required, non-blank field.
pub fn required<'a>(input: &'a Input, name: &str) -> Result<&'a str, ErrorCode> {
    match input.get(name) {
        Some(value) if !value.trim().is_empty() => Ok(value),
        _ => Err(ErrorCode::MissingFields),
    }
}
