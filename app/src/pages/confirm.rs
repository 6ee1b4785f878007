use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

use crate::api::{confirm_view, ConfirmIdentity};
use crate::components::{ErrorBanner, Field, SignedIn};

/// The page to come back to: a path of ours, or home (the server checks it again).
fn return_path(next: Option<String>) -> String {
    next.filter(|n| n.starts_with('/') && !n.starts_with("//") && !n.contains('\\'))
        .unwrap_or_else(|| "/".into())
}

/// `/settings/confirm?next=…`: "Confirm it's you" before a sensitive act (an API key, the
/// webhook, turning 2FA off, a new password): the password again, and a current code when 2FA
/// is on. Holds ten minutes for this browser's session, then back to `next`. A plain
/// server-rendered form (no WebAssembly).
#[component]
pub fn ConfirmPage() -> impl IntoView {
    let data = Resource::new_blocking(|| (), |_| confirm_view());
    let confirm = ServerAction::<ConfirmIdentity>::new();
    let error = Signal::derive(move || confirm.value().get().and_then(Result::err));
    let next = return_path(use_query_map().read_untracked().get("next"));
    view! {
        <Title text="Confirm it's you · Stepgate"/>
        <section class="card" aria-labelledby="confirm-title">
            <h1 id="confirm-title">"Confirm it's you"</h1>
            <SignedIn data=data page=move |me| {
                let (next, cancel) = (next.clone(), next.clone());
                view! {
                    <p>
                        "Creating an API key, changing the webhook, turning two-factor authentication off "
                        "and changing your password need your password again"
                        {me.two_factor_on.then_some(" and a code from your authenticator")}
                        ". Once confirmed, this browser can do them for ten minutes."
                    </p>
                    <p class="hint">"Signed in as " <strong>{me.email}</strong></p>
                    <ActionForm action=confirm>
                        <ErrorBanner error/>
                        <input type="hidden" name="next" value=next/>
                        <Field label="Password" name="password" kind="password" autocomplete="current-password"/>
                        {me.two_factor_on.then(|| view! {
                            <div class="field">
                                <label for="field-code">"Verification code"</label>
                                <input id="field-code" name="code" type="text" inputmode="numeric"
                                    autocomplete="one-time-code" required maxlength="64" aria-describedby="code-hint"/>
                                <p id="code-hint" class="hint">"The 6-digit code, spaces allowed."</p>
                            </div>
                        })}
                        <button type="submit" data-busy="Confirming…">"Confirm"</button>
                    </ActionForm>
                    <p class="aside"><a href=cancel>"Cancel"</a></p>
                }
            }/>
        </section>
    }
}
