use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::Redirect;

use crate::api::{current_account, SignOut};

/// `/`: the signed-in home. Visitors are sent to `/login` (a 302 when rendered on the server).
#[component]
pub fn HomePage() -> impl IntoView {
    // Blocking, so the server knows before the first byte whether to redirect.
    let account = Resource::new_blocking(|| (), |_| current_account());
    let sign_out = ServerAction::<SignOut>::new();
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
                                <p><a href="/accounts">"Connected accounts"</a></p>
                                <p><a href="/settings/api-keys">"API keys"</a></p>
                                <p><a href="/settings/webhooks">"Webhooks"</a></p>
                                <p><a href="/settings/security">"Security settings (two-factor authentication)"</a></p>
                                <ActionForm action=sign_out>
                                    <button type="submit" class="secondary">"Sign out"</button>
                                </ActionForm>
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
