//! The flow a sign-in link opens (`accounts/sign_in_links.rs`): its account's reauth, run for
//! whoever holds the link's ticket, with no Stepgate session. Each request names the ticket; the
//! link must be live for every step, the flow belongs to the ticket alone, and it can only ever
//! sign in again that one account of that one user (the runner checks the link once more when
//! the provider is done, and uses it).

use crate::accounts::sign_in_links::{SignInLinkTicket, SignInLinks};
use crate::accounts::store::ConnectedAccount;
use crate::flows::runner::{FlowRunner, Progress};
use crate::providers::{Input, Purpose, StepError};
use crate::view::{FlowView, StepView};
use crate::ErrorCode;

/// What the link's page shows.
#[derive(Debug, Clone)]
pub struct SignInLinkPage {
    /// The account the link signs in again (its provider, its name).
    pub account: ConnectedAccount,
    /// The step its flow waits at; `None` before the first form was sent.
    pub flow: Option<FlowView>,
    /// The provider's first form.
    pub first_view: StepView,
    /// What the first form starts with (the account name; for Lynk & Co the VIN too).
    pub prefill: Input,
}

/// Runs sign-in links' flows (see the module doc).
#[derive(Clone)]
pub struct SignInLinkFlows {
    pub(crate) links: SignInLinks,
    pub(crate) runner: FlowRunner,
}

impl SignInLinkFlows {
    /// The page of `ticket`'s link: its account and the step its flow `flow_id` waits at.
    pub async fn page(
        &self,
        ticket: &SignInLinkTicket,
        flow_id: Option<&str>,
    ) -> Result<SignInLinkPage, ErrorCode> {
        let link = self.links.live_by_ticket(ticket).await?;
        let provider_name = link.account.provider.clone();
        let provider = self
            .runner
            .providers
            .get(&provider_name)
            .ok_or(ErrorCode::NotFound)?;
        let secrets = self
            .runner
            .accounts
            .secrets(link.user_id, link.account.id)
            .await?;
        let prefill = provider.reauth_prefill(&link.account.display_name, &secrets);
        let flow = match flow_id {
            Some(id) => Some(
                self.runner
                    .flow_view(&provider_name, id, Some(&link.flow_owner))
                    .await?,
            ),
            None => None,
        };
        Ok(SignInLinkPage {
            first_view: provider.first_view(),
            account: link.account,
            flow,
            prefill,
        })
    }

    /// One step of `ticket`'s link: the first form (no `flow_id`) starts its account's reauth,
    /// a later one continues the flow this ticket started.
    pub async fn submit(
        &self,
        ticket: &SignInLinkTicket,
        flow_id: Option<&str>,
        input: &Input,
    ) -> Result<Progress, StepError> {
        let link = self.links.live_by_ticket(ticket).await?;
        let provider = link.account.provider.as_str();
        match flow_id {
            None => {
                let purpose = Purpose::Reauth {
                    user_id: link.user_id,
                    account_id: link.account.id,
                };
                self.runner
                    .start_linked_flow(provider, purpose, link.flow_owner.clone(), input, &link.id)
                    .await
            }
            Some(id) => {
                self.runner
                    .submit_provider_flow(provider, id, Some(&link.flow_owner), input)
                    .await
            }
        }
    }
}
