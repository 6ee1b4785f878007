use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::Redirect;
use leptos_router::hooks::use_query_map;

use crate::accounts::{
    account_page, connected_accounts, AccountDetail, AccountRow, RemoveAccount, RowStatus,
};
use crate::components::{ErrorBanner, OneTimeSecret};
use crate::error::AppError;
use crate::sign_in_links::{
    account_sign_in_links, AccountLinks, LinkRow, MakeSignInLink, RevokeSignInLink,
    RevokeSignInLinks,
};
use engine::ErrorCode;

/// A date people read: `2026-11-25 14:03 UTC` (the server renders it; no client clock).
pub use engine::dates::utc_minute;

/// `/accounts`: the connected accounts, each with "Remove"; "Connect an account" leads to the
/// picker. Server-rendered, no WebAssembly.
#[component]
pub fn AccountsPage() -> impl IntoView {
    let accounts = Resource::new_blocking(|| (), |_| connected_accounts());
    let query = use_query_map();
    let notice = move || {
        let q = query.read_untracked();
        if q.get("connected").is_some() {
            Some("Account connected.")
        } else if q.get("reauthed").is_some() {
            Some("Signed in again. The account works as before.")
        } else if q.get("removed").is_some() {
            Some("Account removed.")
        } else {
            None
        }
    };
    view! {
        <Title text="Connected accounts · Stepgate"/>
        <section class="card wide" aria-labelledby="accounts-title">
            <h1 id="accounts-title">"Connected accounts"</h1>
            {notice().map(|text| view! { <p role="status" class="ok">{text}</p> })}
            <Suspense fallback=|| view! { <p role="status">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match accounts.await {
                        Ok(rows) => view! { <AccountTable rows/> }.into_any(),
                        Err(AppError { code: ErrorCode::NotSignedIn, .. }) => {
                            view! { <Redirect path="/login"/> }.into_any()
                        }
                        Err(e) => view! { <p role="alert" class="error">{e.message()}</p> }.into_any(),
                    }
                })}
            </Suspense>
            <p><a class="button" href="/accounts/connect">"Connect an account"</a></p>
            <p class="aside"><a href="/">"Back home"</a></p>
        </section>
        // Updates rows whose health check is under way (a few lines, no WebAssembly).
        <script src="/accounts.js" defer></script>
    }
}

#[component]
fn AccountTable(rows: Vec<AccountRow>) -> impl IntoView {
    if rows.is_empty() {
        return view! { <p>"No accounts connected yet."</p> }.into_any();
    }
    let make_link = ServerAction::<MakeSignInLink>::new();
    view! {
        <table class="accounts">
            <caption class="visually-hidden">"Your connected accounts"</caption>
            <thead>
                <tr>
                    <th scope="col">"Provider"</th>
                    <th scope="col">"Account"</th>
                    <th scope="col">"Status"</th>
                    <th scope="col">"Connected"</th>
                    <th scope="col"><span class="visually-hidden">"Actions"</span></th>
                </tr>
            </thead>
            <tbody>
                {rows
                    .into_iter()
                    .map(|row| {
                        let remove = format!("Remove {} account {}", row.provider, row.name);
                        let again = format!("Sign in again to {} account {}", row.provider, row.name);
                        let send = format!("Send a sign-in link for {} account {}", row.provider, row.name);
                        let reauth_hidden = row.status != RowStatus::NeedsSignIn;
                        view! {
                            <tr data-account=row.id.to_string()>
                                <td>{row.provider.clone()}</td>
                                <td class="account-name">
                                    <a href=format!("/accounts/account?id={}", row.id)>{row.name.clone()}</a>
                                </td>
                                <td class="account-status" data-status=row.status.as_str() aria-live="polite">
                                    <span class="status-label">{row.status_label.clone()}</span>
                                    <span class="hint status-problem">{row.problem.clone().unwrap_or_default()}</span>
                                </td>
                                <td>{utc_minute(row.connected_at)}</td>
                                <td class="row-actions">
                                    // A GET form: a real button that works without JavaScript.
                                    <form
                                        method="get"
                                        action=format!("/accounts/connect/{}", row.provider_name)
                                        class="inline reauth"
                                        hidden=reauth_hidden
                                    >
                                        <input type="hidden" name="reauth" value=row.id.to_string()/>
                                        <button type="submit" aria-label=again>"Sign in again"</button>
                                    </form>
                                    // Or whoever has the phone that gets the codes signs in
                                    // there (the link is shown on the account's page).
                                    <ActionForm action=make_link attr:class="inline reauth" attr:hidden=reauth_hidden>
                                        <input type="hidden" name="account_id" value=row.id.to_string()/>
                                        <button type="submit" class="secondary" aria-label=send data-busy="Making a link…">
                                            "Send a sign-in link"
                                        </button>
                                    </ActionForm>
                                    <a class="button secondary" href=format!("/accounts/remove?account={}", row.id) aria-label=remove>
                                        "Remove"
                                    </a>
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

/// `/accounts/remove?account=…`: "Remove" asks first (a page, so it works without JavaScript).
#[component]
pub fn RemoveAccountPage() -> impl IntoView {
    let query = use_query_map();
    let id: Option<i64> = query
        .read_untracked()
        .get("account")
        .and_then(|v| v.parse().ok());
    let accounts = Resource::new_blocking(|| (), |_| connected_accounts());
    let remove = ServerAction::<RemoveAccount>::new();
    let error = Signal::derive(move || remove.value().get().and_then(Result::err));
    view! {
        <Title text="Remove account · Stepgate"/>
        <section class="card" aria-labelledby="remove-title">
            <h1 id="remove-title">"Remove account"</h1>
            <Suspense fallback=|| view! { <p role="status">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    let row = accounts
                        .await
                        .ok()
                        .and_then(|rows| rows.into_iter().find(|r| Some(r.id) == id));
                    match row {
                        Some(row) => view! {
                            <p>
                                {format!(
                                    "Remove the {} account {}? Stepgate deletes its tokens; apps using it lose access.",
                                    row.provider,
                                    row.name,
                                )}
                            </p>
                            <ActionForm action=remove>
                                <ErrorBanner error/>
                                <input type="hidden" name="account_id" value=row.id.to_string()/>
                                <button type="submit" class="danger" data-busy="Removing…">"Remove"</button>
                                " "
                                <a href="/accounts">"Cancel"</a>
                            </ActionForm>
                        }
                            .into_any(),
                        None => view! {
                            <p role="alert" class="error">{ErrorCode::NotFound.message()}</p>
                            <p><a href="/accounts">"Back to connected accounts"</a></p>
                        }
                            .into_any(),
                    }
                })}
            </Suspense>
        </section>
    }
}

/// `/accounts/account?id=…`: one connected account: its status, when its tokens were renewed
/// and are renewed next, the last failure in words, and its activity (the audit log).
#[component]
pub fn AccountDetailPage() -> impl IntoView {
    let query = use_query_map();
    let id: i64 = query
        .read_untracked()
        .get("id")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let detail = Resource::new_blocking(move || id, account_page);
    let links = Resource::new_blocking(move || id, account_sign_in_links);
    view! {
        <Suspense fallback=|| view! { <p role="status">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match detail.await {
                    Ok(detail) => {
                        let links = links.await.unwrap_or(AccountLinks { links: Vec::new(), new_link: None });
                        view! { <AccountDetailView detail links/> }.into_any()
                    }
                    Err(AppError { code: ErrorCode::NotSignedIn, .. }) => {
                        view! { <Redirect path="/login"/> }.into_any()
                    }
                    Err(e) => view! {
                        <Title text="Connected account · Stepgate"/>
                        <section class="card">
                            <h1>"Connected account"</h1>
                            <p role="alert" class="error">{e.message()}</p>
                            <p><a href="/accounts">"Back to connected accounts"</a></p>
                        </section>
                    }
                        .into_any(),
                }
            })}
        </Suspense>
    }
}

#[component]
fn AccountDetailView(detail: AccountDetail, links: AccountLinks) -> impl IntoView {
    let row = detail.row;
    let make_link = ServerAction::<MakeSignInLink>::new();
    let make_error = Signal::derive(move || make_link.value().get().and_then(Result::err));
    let heading = format!("{} account {}", row.provider, row.name);
    let when =
        |at: Option<i64>, none: &'static str| at.map(utc_minute).unwrap_or_else(|| none.to_owned());
    let needs_sign_in = row.status == RowStatus::NeedsSignIn;
    view! {
        <Title text=format!("{heading} · Stepgate")/>
        <section class="card wide" aria-labelledby="account-title">
            <h1 id="account-title">{heading}</h1>
            <dl class="facts">
                <dt>"Status"</dt>
                <dd>{row.status_label.clone()}</dd>
                <dt>"Connected"</dt>
                <dd>{utc_minute(row.connected_at)}</dd>
                <dt>"Last renewed"</dt>
                <dd>{when(detail.renewed_at, "not yet")}</dd>
                <dt>"Next renewal"</dt>
                <dd>{when(detail.renew_due_at, "none (sign in again first)")}</dd>
                <dt>"Last error"</dt>
                <dd>{detail.last_error.clone().unwrap_or_else(|| "none".to_owned())}</dd>
            </dl>
            <ErrorBanner error=make_error/>
            {needs_sign_in.then(|| view! {
                <div class="actions">
                    <form method="get" action=format!("/accounts/connect/{}", row.provider_name) class="inline">
                        <input type="hidden" name="reauth" value=row.id.to_string()/>
                        <button type="submit">"Sign in again"</button>
                    </form>
                    " "
                    // Whoever has the phone that gets the codes signs in there instead.
                    <SendLinkForm action=make_link account_id=row.id/>
                </div>
            })}
            <SignInLinks account_id=row.id links make_link=(!needs_sign_in).then_some(make_link)/>
            <h2>"Activity"</h2>
            {if detail.activity.is_empty() {
                view! { <p>"Nothing yet."</p> }.into_any()
            } else {
                view! {
                    <table class="accounts activity">
                        <caption class="visually-hidden">"What happened to this account, newest first"</caption>
                        <thead>
                            <tr><th scope="col">"When"</th><th scope="col">"What"</th></tr>
                        </thead>
                        <tbody>
                            {detail
                                .activity
                                .into_iter()
                                .map(|line| view! { <tr><td>{utc_minute(line.at)}</td><td>{line.what}</td></tr> })
                                .collect_view()}
                        </tbody>
                    </table>
                }
                    .into_any()
            }}
            <p class="aside">
                <a href="/accounts">"Back to connected accounts"</a>
                " · "
                <a href=format!("/accounts/remove?account={}", row.id)>"Remove this account"</a>
            </p>
        </section>
        <script src="/copy-secret.js" defer></script>
    }
}

/// "Send a sign-in link": makes one and shows it once on this page.
#[component]
fn SendLinkForm(action: ServerAction<MakeSignInLink>, account_id: i64) -> impl IntoView {
    view! {
        <ActionForm action attr:class="inline">
            <input type="hidden" name="account_id" value=account_id.to_string()/>
            <button type="submit" class="secondary" data-busy="Making a link…">"Send a sign-in link"</button>
        </ActionForm>
    }
}

/// The account's sign-in links: what they are, the one just made (shown once), the live ones
/// with "Revoke". `make_link`: the "Send a sign-in link" button, when the page has not shown
/// it next to "Sign in again".
#[component]
fn SignInLinks(
    account_id: i64,
    links: AccountLinks,
    make_link: Option<ServerAction<MakeSignInLink>>,
) -> impl IntoView {
    let revoke = ServerAction::<RevokeSignInLink>::new();
    let revoke_all = ServerAction::<RevokeSignInLinks>::new();
    let revoke_error = Signal::derive(move || {
        revoke
            .value()
            .get()
            .and_then(Result::err)
            .or_else(|| revoke_all.value().get().and_then(Result::err))
    });
    let note = use_query_map().read_untracked().get("link");
    let notice = match note.as_deref() {
        Some("revoked") => Some("Sign-in link revoked. It no longer opens."),
        Some("all_revoked") => Some("Every sign-in link to this account is revoked."),
        _ => None,
    };
    let several = links.links.len() > 1;
    view! {
        <h2>"Sign-in links"</h2>
        <p>
            "A sign-in link opens this account's sign-in steps on another device, with no Stepgate              account: send it to whoever has the phone that gets the codes. It works once, for 24              hours, and only for this account."
        </p>
        {notice.map(|text| view! { <p role="status" class="ok">{text}</p> })}
        <ErrorBanner error=revoke_error/>
        {links.new_link.map(|url| view! {
            <OneTimeSecret id="sign-in-link" label="Sign-in link" value=url
                notice="Sign-in link made. Open this link on the phone that gets the codes. It works once, for 24 hours, and only for this account. Copy it now: it is not shown again."/>
        })}
        {make_link.map(|action| view! { <p><SendLinkForm action account_id/></p> })}
        {if links.links.is_empty() {
            view! { <p>"No live sign-in links."</p> }.into_any()
        } else {
            let labels = revoke_labels(&links.links);
            view! {
                <table class="accounts sign-in-links">
                    <caption class="visually-hidden">"Live sign-in links to this account"</caption>
                    <thead>
                        <tr>
                            <th scope="col">"Made"</th>
                            <th scope="col">"Expires"</th>
                            <th scope="col">"For"</th>
                            <th scope="col"><span class="visually-hidden">"Actions"</span></th>
                        </tr>
                    </thead>
                    <tbody>
                        {links
                            .links
                            .into_iter()
                            .zip(labels)
                            .map(|(link, label)| view! {
                                <tr>
                                    <td>{utc_minute(link.created_at)}</td>
                                    <td>{utc_minute(link.expires_at)}</td>
                                    <td>{if link.for_apps { "Your apps" } else { "You" }}</td>
                                    <td class="row-actions">
                                        <ActionForm action=revoke attr:class="inline">
                                            <input type="hidden" name="account_id" value=account_id.to_string()/>
                                            <input type="hidden" name="link_id" value=link.id/>
                                            <button type="submit" class="secondary" aria-label=label data-busy="Revoking…">"Revoke"</button>
                                        </ActionForm>
                                    </td>
                                </tr>
                            })
                            .collect_view()}
                    </tbody>
                </table>
                {several.then(|| view! {
                    <ActionForm action=revoke_all attr:class="inline">
                        <input type="hidden" name="account_id" value=account_id.to_string()/>
                        <button type="submit" class="danger" data-busy="Revoking…">"Revoke all sign-in links"</button>
                    </ActionForm>
                })}
            }
                .into_any()
        }}
    }
}

/// Each "Revoke" button's accessible name: when the link was made and for whom, numbered when
/// two links share both (made the same minute), so each names one link.
fn revoke_labels(links: &[LinkRow]) -> Vec<String> {
    let plain: Vec<String> = links
        .iter()
        .map(|link| {
            let whom = if link.for_apps { "your apps" } else { "you" };
            format!(
                "Revoke sign-in link made {} for {whom}",
                utc_minute(link.created_at)
            )
        })
        .collect();
    plain
        .iter()
        .enumerate()
        .map(|(i, label)| {
            let same = plain.iter().filter(|l| *l == label).count();
            if same == 1 {
                label.clone()
            } else {
                let nth = plain[..=i].iter().filter(|l| *l == label).count();
                format!("{label} ({nth} of {same})")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_revoke_button_names_one_link() {
        let link = |created_at, for_apps| LinkRow {
            id: String::new(),
            created_at,
            expires_at: created_at + 86_400,
            for_apps,
        };
        let labels = revoke_labels(&[
            link(60, false),
            link(61, false),
            link(60, true),
            link(0, false),
        ]);
        assert_eq!(
            labels,
            [
                "Revoke sign-in link made 1970-01-01 00:01 UTC for you (1 of 2)",
                "Revoke sign-in link made 1970-01-01 00:01 UTC for you (2 of 2)",
                "Revoke sign-in link made 1970-01-01 00:01 UTC for your apps",
                "Revoke sign-in link made 1970-01-01 00:00 UTC for you",
            ]
        );
    }
}
