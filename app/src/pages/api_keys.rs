use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

use crate::api_keys::{api_keys_view, CreateApiKey, KeyRow, RevokeApiKey, ScopeChoice};
use crate::components::{ErrorBanner, OneTimeSecret, SignedIn};
use crate::pages::accounts::utc_minute;

/// `/settings/api-keys`: create a key scoped to some connected accounts (its secret is shown
/// once), see the keys with their scope and last use, revoke one. Plain server-rendered forms;
/// `public/copy-secret.js` only adds the "Copy" button's clipboard write.
#[component]
pub fn ApiKeysPage() -> impl IntoView {
    let page = Resource::new_blocking(|| (), |_| api_keys_view());
    let create = ServerAction::<CreateApiKey>::new();
    let revoke = ServerAction::<RevokeApiKey>::new();
    let create_error = Signal::derive(move || create.value().get().and_then(Result::err));
    let revoke_error = Signal::derive(move || revoke.value().get().and_then(Result::err));
    let query = use_query_map();
    let revoked = query.read_untracked().get("revoked").is_some();
    // Back from "Confirm it's you": the refused form's name and ticked accounts, filled in again.
    let confirmed = query.read_untracked().get("confirmed").is_some();
    let typed_name = query.read_untracked().get("name").unwrap_or_default();
    let typed_scope: Vec<i64> = query
        .read_untracked()
        .get("scope")
        .unwrap_or_default()
        .split(',')
        .filter_map(|id| id.parse().ok())
        .collect();
    let typed_expires = query
        .read_untracked()
        .get("expires")
        .unwrap_or_else(|| crate::api_keys::DEFAULT_LIFETIME.into());
    view! {
        <Title text="API keys · Stepgate"/>
        <section class="card wide" aria-labelledby="api-keys-title">
            <h1 id="api-keys-title">"API keys"</h1>
            <p>
                "Your own apps read the connected accounts you give a key through "
                <a href="/api/v1/openapi.json">"the app API"</a>
                ", with the header " <code>"Authorization: Bearer <key>"</code> "."
            </p>
            {revoked.then(|| view! { <p role="status" class="ok">"Key revoked. Apps using it are refused from now on."</p> })}
            <ErrorBanner error=revoke_error/>
            <SignedIn data=page page=move |page| {
                let (typed_name, typed_scope) = (typed_name.clone(), typed_scope.clone());
                let typed_expires = typed_expires.clone();
                view! {
                {page.new_key.map(|key| view! {
                    <OneTimeSecret id="new-key" label="New API key" value=key
                        notice="Key created. Copy it now: Stepgate keeps only a hash and cannot show it again."/>
                })}
                <KeyTable keys=page.keys revoke/>
                <h2>"Create a key"</h2>
                <ActionForm action=create attr:class="create-key">
                    <ErrorBanner error=create_error/>
                    {if confirmed {
                        view! { <p role="status" class="ok">"Confirmed. You can create the key now."</p> }.into_any()
                    } else {
                        view! { <p class="hint">"Creating a key asks for your password first (once in ten minutes)."</p> }.into_any()
                    }}
                    <p>
                        <label for="key-name">"Key name"</label>
                        <input id="key-name" name="name" type="text" required maxlength="200" autocomplete="off"
                            value=typed_name/>
                    </p>
                    <ScopeFields accounts=page.accounts checked=typed_scope/>
                    <ExpiryField chosen=typed_expires/>
                    <button type="submit" data-busy="Creating…">"Create key"</button>
                </ActionForm>
                }
            }/>
            <p class="aside"><a href="/">"Back home"</a></p>
        </section>
        <script src="/copy-secret.js" defer></script>
    }
}

#[component]
fn ScopeFields(accounts: Vec<ScopeChoice>, checked: Vec<i64>) -> impl IntoView {
    if accounts.is_empty() {
        return view! {
            <p class="hint">
                "No connected accounts yet: a key made now reads nothing. "
                <a href="/accounts/connect">"Connect an account"</a>
            </p>
        }
        .into_any();
    }
    view! {
        <fieldset>
            <legend>"Accounts this key may read"</legend>
            {accounts
                .into_iter()
                .map(|a| {
                    let id = format!("scope-{}", a.id);
                    view! {
                        <p class="checkbox">
                            <input type="checkbox" id=id.clone() name=format!("accounts[{}]", a.id) value="on"
                                checked=checked.contains(&a.id)/>
                            <label for=id>{a.label}</label>
                        </p>
                    }
                })
                .collect_view()}
        </fieldset>
    }
    .into_any()
}

/// The key's lifetime: 30, 90 or 365 days, or never.
#[component]
fn ExpiryField(chosen: String) -> impl IntoView {
    let choices = [
        ("30", "30 days"),
        ("90", "90 days"),
        ("365", "1 year"),
        ("never", "Never"),
    ];
    view! {
        <p>
            <label for="key-expires">"Expires after"</label>
            <select id="key-expires" name="expires" aria-describedby="key-expires-hint">
                {choices
                    .into_iter()
                    .map(|(value, text)| view! {
                        <option value=value selected=chosen == value>{text}</option>
                    })
                    .collect_view()}
            </select>
        </p>
        <p class="hint" id="key-expires-hint">
            "An expired key is refused (" <code>"api_key_expired"</code> "); make a new one before then."
        </p>
    }
}

#[component]
fn KeyTable(keys: Vec<KeyRow>, revoke: ServerAction<RevokeApiKey>) -> impl IntoView {
    if keys.is_empty() {
        return view! { <p>"No API keys yet."</p> }.into_any();
    }
    view! {
        <table class="api-keys">
            <caption class="visually-hidden">"Your API keys"</caption>
            <thead>
                <tr>
                    <th scope="col">"Name"</th>
                    <th scope="col">"Scope"</th>
                    <th scope="col">"Last used"</th>
                    <th scope="col">"Expires"</th>
                    <th scope="col"><span class="visually-hidden">"Actions"</span></th>
                </tr>
            </thead>
            <tbody>
                {keys
                    .into_iter()
                    .map(|key| {
                        let label = format!("Revoke key {}", key.name);
                        let scope = if key.scope.is_empty() {
                            "no accounts".to_owned()
                        } else {
                            key.scope.join(", ")
                        };
                        let used = key.last_used_at.map(utc_minute).unwrap_or_else(|| "never".into());
                        let key_id = key.id.clone();
                        let expires = match key.expires_at {
                            None => "never".to_owned(),
                            Some(at) if key.expired => format!("expired {}", utc_minute(at)),
                            Some(at) => utc_minute(at),
                        };
                        view! {
                            <tr data-key=key.id>
                                <td class="key-name">{key.name}</td>
                                <td class="key-scope">{scope}</td>
                                <td class="key-used">{used}</td>
                                <td class="key-expires">{expires}</td>
                                <td class="row-actions">
                                    <ActionForm action=revoke attr:class="inline">
                                        <input type="hidden" name="key_id" value=key_id.clone()/>
                                        <button type="submit" class="danger" aria-label=label data-busy="Revoking…">
                                            "Revoke"
                                        </button>
                                    </ActionForm>
                                </td>
                            </tr>
                        }
                    })
                    .collect_view()}
            </tbody>
        </table>
    }
    .into_any()
}
