//! `local`: Stepgate's own accounts, email and password (argon2id).

use async_trait::async_trait;

use super::{required, Completion, Input, Outcome, Provider};
use crate::email::Email;
use crate::flow::{Flow, FlowKind};
use crate::password::PasswordHasher;
use crate::users::UserStore;
use crate::ErrorCode;

pub struct LocalProvider {
    users: UserStore,
    hasher: PasswordHasher,
}

impl LocalProvider {
    pub fn new(users: UserStore, hasher: PasswordHasher) -> Self {
        Self { users, hasher }
    }

    async fn check_password(&self, input: &Input) -> Result<Completion, ErrorCode> {
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
            Some(credentials) if matches => Ok(Completion::SignedIn {
                user_id: credentials.user.id,
            }),
            _ => Err(ErrorCode::InvalidAuth),
        }
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
        match self.check_password(input).await {
            Ok(done) => Outcome::Done(done),
            Err(code) => Outcome::Failed(code),
        }
    }

    async fn submit(&self, _flow: &Flow, _input: &Input) -> Outcome {
        // Password-only sign-in is one step; nothing is ever stored for it to continue.
        Outcome::Failed(ErrorCode::FlowExpired)
    }
}
