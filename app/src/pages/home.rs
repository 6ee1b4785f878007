use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::Redirect;

use crate::api::current_account;

/// `/`: the signed-in home. Visitors are sent to `/login` (a 302 when rendered on the server).
/// Every section is in the header on every signed-in page (`components::SiteNav`), so this page
/// says who is signed in and what each section is for, without a second copy of the links.
#[component]
pub fn HomePage() -> impl IntoView {
    // Blocking, so the server knows before the first byte whether to redirect.
    let account = Resource::new_blocking(|| (), |_| current_account());
    view! {
        <Title text="Home · Stepgate"/>
        <Suspense fallback=|| view! { <p role="status">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match account.await {
                    Ok(Some(account)) => {
                        view! {
                            <section class="card" aria-labelledby="home-title">
                                <h1 id="home-title">"Your Stepgate"</h1>
                                <p>"Signed in as " <strong class="account-email">{account.email}</strong></p>
                                <p class="hint">
                                    "Accounts: connect the accounts behind multi-step logins. "
                                    "API keys: let your own apps read them. "
                                    "Webhooks: be told when one changes. "
                                    "Sessions: where you are signed in."
                                </p>
                                <p><a href="/settings/security">"Security settings (two-factor authentication)"</a></p>
                            </section>
                        }
                            .into_any()
                    }
                    Ok(None) => view! { <Redirect path="/login"/> }.into_any(),
                    Err(e) => view! { <p role="alert" class="error">{e.message()}</p> }.into_any(),
                }
            })}
        </Suspense>
    }
}
