//! `local`: Stepgate's own accounts. Step one checks email and password (argon2id); when the
//! account has TOTP turned on, step two (`totp`) asks for a code, whose deep link points at the
//! user's seed on the web TOTP provider.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;

use super::{required, Completion, Input, Outcome, Provider};
use crate::clock::Clock;
use crate::email::Email;
use crate::flow::{Flow, FlowKind};
use crate::password::PasswordHasher;
use crate::two_factor::TwoFactor;
use crate::users::{UserCredentials, UserStore};
use crate::view::{CodeChannel, StepView};
use crate::ErrorCode;

/// The step name of the second factor.
pub const TOTP_STEP: &str = "totp";

pub struct LocalProvider {
    users: UserStore,
    hasher: PasswordHasher,
    two_factor: TwoFactor,
    clock: Arc<dyn Clock>,
}

impl LocalProvider {
    pub fn new(
        users: UserStore,
        hasher: PasswordHasher,
        two_factor: TwoFactor,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            users,
            hasher,
            two_factor,
            clock,
        }
    }

    async fn check_password(&self, input: &Input) -> Result<UserCredentials, ErrorCode> {
        let email = required(input, "email")?;
        let password = required(input, "password")?;
        let email = Email::parse(email)?;
        let found = self.users.find_by_email(&email).await?;
        // An unknown user is checked against a dummy hash: same time, same answer.
        let matches = self
            .hasher
            .verify(password, found.as_ref().map(|c| c.password_hash.as_str()))
            .await?;
        match found {
            Some(credentials) if matches => Ok(credentials),
            _ => Err(ErrorCode::InvalidAuth),
        }
    }

    async fn after_password(&self, credentials: UserCredentials) -> Result<Outcome, ErrorCode> {
        let user = credentials.user;
        let Some(totp) = self.two_factor.status(user.id).await? else {
            return Ok(Outcome::Done(Completion::SignedIn { user_id: user.id }));
        };
        let deep_link = self
            .two_factor
            .provider
            .deep_link(totp.seed_id.as_deref(), &user.email);
        Ok(Outcome::Next {
            step: TOTP_STEP,
            view: StepView::Code {
                channel: CodeChannel::Totp { deep_link },
                digits: totp.digits,
            },
            state: json!({ "user_id": user.id }),
        })
    }
}

#[async_trait]
impl Provider for LocalProvider {
    fn name(&self) -> &'static str {
        "local"
    }

    fn kind(&self) -> FlowKind {
        FlowKind::Login
    }

    async fn start(&self, input: &Input) -> Outcome {
        let result = match self.check_password(input).await {
            Ok(credentials) => self.after_password(credentials).await,
            Err(code) => Err(code),
        };
        result.unwrap_or_else(Outcome::Failed)
    }

    async fn submit(&self, flow: &Flow, input: &Input) -> Outcome {
        if flow.step != TOTP_STEP {
            return Outcome::Failed(ErrorCode::FlowExpired);
        }
        let Some(user_id) = flow.state["user_id"].as_i64() else {
            return Outcome::Failed(ErrorCode::Unknown);
        };
        let code = match required(input, "code") {
            Ok(code) => code,
            // An empty submit is a wrong answer, not the end of the flow.
            Err(_) => return Outcome::Failed(ErrorCode::InvalidCode),
        };
        match self
            .two_factor
            .verify(user_id, code, self.clock.now())
            .await
        {
            Ok(()) => Outcome::Done(Completion::SignedIn { user_id }),
            Err(code) => Outcome::Failed(code),
        }
    }
}
