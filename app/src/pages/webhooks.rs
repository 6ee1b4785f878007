use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

use crate::components::{ErrorBanner, OneTimeSecret, SignedIn};
use crate::pages::accounts::utc_minute;
use crate::sign_in_links::SetSignInLinksForApps;
use crate::webhooks::{webhooks_view, DeliveryRow, RemoveWebhook, SaveWebhook};
use engine::ErrorCode;

/// `/settings/webhooks`: one URL that receives `account.connected`, `account.needs_sign_in`,
/// `account.recovered` and `account.removed` as signed JSON (Standard Webhooks); its signing secret is shown once when
/// saved; the latest deliveries below. Plain server-rendered forms; `public/copy-secret.js` only
/// adds the "Copy" button's clipboard write.
#[component]
pub fn WebhooksPage() -> impl IntoView {
    let page = Resource::new_blocking(|| (), |_| webhooks_view());
    let save = ServerAction::<SaveWebhook>::new();
    let remove = ServerAction::<RemoveWebhook>::new();
    let save_error = Signal::derive(move || save.value().get().and_then(Result::err));
    // `invalid_url`'s general sentence speaks of providers; here it is the user's own URL.
    let bad_url = move || {
        save_error
            .get()
            .is_some_and(|e| e.code == ErrorCode::InvalidUrl)
    };
    // A refused address gets the page's own words: why, and who can allow it.
    let refused = move || {
        save_error
            .get()
            .is_some_and(|e| e.code == ErrorCode::WebhookAddressRefused)
    };
    let other_save_error = Signal::derive(move || {
        save_error.get().filter(|e| {
            !matches!(
                e.code,
                ErrorCode::InvalidUrl | ErrorCode::WebhookAddressRefused
            )
        })
    });
    let remove_error = Signal::derive(move || remove.value().get().and_then(Result::err));
    let links = ServerAction::<SetSignInLinksForApps>::new();
    let links_error = Signal::derive(move || links.value().get().and_then(Result::err));
    let query = use_query_map();
    let removed = query.read_untracked().get("removed").is_some();
    let links_saved = match query.read_untracked().get("links").as_deref() {
        Some("on") => Some("Saved. Apps now get sign-in links."),
        Some("off") => Some("Saved. Apps get no sign-in links, and those they had are revoked."),
        _ => None,
    };
    // Back from "Confirm it's you" with the box the refused form had ticked.
    let links_wanted = query.read_untracked().get("sign_in_links").is_some();
    // The URL as typed before a refused plain form post (`webhooks.rs` sends it back).
    let typed = query.read_untracked().get("value.url");
    view! {
        <Title text="Webhooks · Stepgate"/>
        <section class="card wide" aria-labelledby="webhooks-title">
            <h1 id="webhooks-title">"Webhooks"</h1>
            <p>
                "Stepgate posts " <code>"account.connected"</code> ", " <code>"account.needs_sign_in"</code>
                ", " <code>"account.recovered"</code> " (it works again) and " <code>"account.removed"</code>
                " to your URL as JSON, signed the Standard Webhooks way (headers "
                <code>"webhook-id"</code> ", " <code>"webhook-timestamp"</code> ", "
                <code>"webhook-signature"</code>
                "), and tries again for a few hours when it does not answer 2xx. No token is ever sent "
                "(a sign-in link only if you give apps sign-in links, below)."
            </p>
            {removed.then(|| view! { <p role="status" class="ok">"Webhook removed. Nothing more is sent."</p> })}
            <ErrorBanner error=remove_error/>
            <SignedIn data=page page=move |page| { let typed = typed.clone(); view! {
                {page.new_secret.map(|secret| view! {
                    <OneTimeSecret id="signing-secret" label="Signing secret" value=secret
                        notice="Webhook saved. Copy its signing secret now: it is not shown again."/>
                })}
                <ActionForm action=save attr:class="webhook-url">
                    <ErrorBanner error=other_save_error/>
                    {move || bad_url().then(|| view! {
                        <div role="alert" class="error" data-code="invalid_url">
                            <p>"Enter an http:// or https:// URL of at most 1,024 characters."</p>
                        </div>
                    })}
                    {move || refused().then(|| view! {
                        <div role="alert" class="error" data-code="webhook_address_refused">
                            <p>
                                "Webhooks may not go to that address: it is this server itself, a private network "
                                "or another internal address, which a webhook must not be able to reach."
                            </p>
                            <p class="detail">
                                "If it is yours (Home Assistant on your home network, say), a Stepgate admin can allow it with "
                                <code>"STEPGATE_WEBHOOK_ALLOW"</code> "."
                            </p>
                        </div>
                    })}
                    <p>
                        <label for="webhook-url">"Webhook URL"</label>
                        <input id="webhook-url" name="url" type="url" required maxlength="1024"
                            autocomplete="off" placeholder="https://example.org/stepgate"
                            value=typed.clone().or_else(|| page.url.clone()).unwrap_or_default()/>
                    </p>
                    <p class="hint">"Saving makes a new signing secret; the old one stops working."</p>
                    <button type="submit" data-busy="Saving…">"Save"</button>
                </ActionForm>
                {page.since.map(|since| view! {
                    <p class="hint">"Secret made " {utc_minute(since)} "."</p>
                    <ActionForm action=remove attr:class="inline">
                        <button type="submit" class="danger" data-busy="Removing…">"Remove webhook"</button>
                    </ActionForm>
                })}
                <h2>"Sign-in links for apps"</h2>
                {links_saved.map(|text| view! { <p role="status" class="ok">{text}</p> })}
                <ActionForm action=links attr:class="sign-in-links-for-apps">
                    <ErrorBanner error=links_error/>
                    <p class="checkbox">
                        <input id="sign-in-links-for-apps" name="on" type="checkbox" value="on"
                            checked=page.sign_in_links_for_apps || links_wanted
                            aria-describedby="sign-in-links-for-apps-hint"/>
                        <label for="sign-in-links-for-apps">"Give apps sign-in links"</label>
                    </p>
                    <p id="sign-in-links-for-apps-hint" class="hint">
                        "When an account needs sign-in, its webhook and the API include a single-use sign-in link "
                        "(" <code>"sign_in_link"</code> "): an app can send it to the phone that gets the codes, and "
                        "whoever opens it signs that account in again. Each link works once, for 24 hours; the "
                        "account's page lists it and can revoke it. Turning this off revokes the links apps have."
                    </p>
                    <button type="submit" class="secondary" data-busy="Saving…">"Apply sign-in link choice"</button>
                </ActionForm>
                <h2>"Deliveries"</h2>
                <DeliveryLog deliveries=page.deliveries/>
            }}/>
            <p class="aside"><a href="/">"Back home"</a></p>
        </section>
        <script src="/copy-secret.js" defer></script>
    }
}

#[component]
fn DeliveryLog(deliveries: Vec<DeliveryRow>) -> impl IntoView {
    if deliveries.is_empty() {
        return view! { <p>"No deliveries yet."</p> }.into_any();
    }
    view! {
        <table class="webhook-deliveries">
            <caption class="visually-hidden">"Latest webhook deliveries"</caption>
            <thead>
                <tr>
                    <th scope="col">"Event"</th>
                    <th scope="col">"Created"</th>
                    <th scope="col">"Attempts"</th>
                    <th scope="col">"Result"</th>
                </tr>
            </thead>
            <tbody>
                {deliveries
                    .into_iter()
                    .map(|d| view! {
                        <tr data-delivery=d.id data-status=d.status>
                            <td class="delivery-event"><code>{d.event_type}</code></td>
                            <td class="delivery-created">{utc_minute(d.created_at)}</td>
                            <td class="delivery-attempts">{d.attempts}</td>
                            <td class="delivery-result">{d.result}</td>
                        </tr>
                    })
                    .collect_view()}
            </tbody>
        </table>
    }
    .into_any()
}
