use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

use crate::admin::{admin_view, AccountRowView, AdminAct, AuditRowView, InviteRowView};
use crate::components::{ErrorBanner, OneTimeSecret, SignedIn};
use crate::pages::accounts::utc_minute;

/// `/admin/users` (admins only; anyone else reads "Only an admin…" with a 403): every account
/// with its sign-in facts, disabling and enabling one, resetting its second factor, invite
/// links (each shown once), and the log of every admin act. Plain server-rendered forms.
#[component]
pub fn AdminPage() -> impl IntoView {
    let page = Resource::new_blocking(|| (), |_| admin_view());
    let act = ServerAction::<AdminAct>::new();
    let act_error = Signal::derive(move || act.value().get().and_then(Result::err));
    let done = use_query_map().read_untracked().get("done");
    let done_note = done.and_then(|done| match done.as_str() {
        "disable" => Some("Account disabled: its sessions have ended and its API keys are refused."),
        "enable" => Some("Account enabled: it may sign in again."),
        "reset_2fa" => Some("Second factor reset: the account signs in with its password alone until 2FA is set up again."),
        _ => None,
    });
    view! {
        <Title text="Admin · Stepgate"/>
        <section class="card wide" aria-labelledby="admin-title">
            <h1 id="admin-title">"Admin: accounts"</h1>
            {done_note.map(|note| view! { <p role="status" class="ok">{note}</p> })}
            <ErrorBanner error=act_error/>
            <SignedIn data=page page=move |page| view! {
                <AccountTable accounts=page.accounts act/>
                <h2 id="invites-title">"Invite links"</h2>
                <p class="hint">{registration_note(&page.registration)}</p>
                {page.new_invite.map(|link| view! {
                    <OneTimeSecret id="new-invite" label="New invite link" value=link
                        notice="Invite link made. Copy it now and send it to the person you invite: it works once, for 7 days, and is not shown again."/>
                })}
                <ActionForm action=act attr:class="inline">
                    <input type="hidden" name="act" value="invite"/>
                    <button type="submit" data-busy="Making…">"Make an invite link"</button>
                </ActionForm>
                <InviteTable invites=page.invites/>
                <h2 id="audit-title">"Admin log"</h2>
                <AuditTable entries=page.audit/>
            }/>
        </section>
        <script src="/copy-secret.js" defer></script>
    }
}

fn registration_note(mode: &str) -> &'static str {
    match mode {
        "open" => "Registration is open (STEPGATE_REGISTRATION=open): anyone may create an account; invite links are not needed.",
        "closed" => "Registration is closed (STEPGATE_REGISTRATION=closed): nobody may create an account, with or without an invite.",
        _ => "Registration is by invite (STEPGATE_REGISTRATION=invite): a new account needs an invite link.",
    }
}

/// A button of the accounts table: one small form per act and account.
#[component]
fn ActButton(
    act: ServerAction<AdminAct>,
    name: &'static str,
    account: i64,
    text: &'static str,
    label: String,
    #[prop(default = "secondary")] class: &'static str,
) -> impl IntoView {
    view! {
        <ActionForm action=act attr:class="inline">
            <input type="hidden" name="act" value=name/>
            <input type="hidden" name="account" value=account.to_string()/>
            <button type="submit" class=class aria-label=label data-busy="Working…">{text}</button>
        </ActionForm>
    }
}

#[component]
fn AccountTable(accounts: Vec<AccountRowView>, act: ServerAction<AdminAct>) -> impl IntoView {
    view! {
        <table class="accounts admin-accounts">
            <caption class="visually-hidden">"Every account"</caption>
            <thead>
                <tr>
                    <th scope="col">"Email"</th>
                    <th scope="col">"Created"</th>
                    <th scope="col">"Last sign-in"</th>
                    <th scope="col">"2FA"</th>
                    <th scope="col">"Sessions"</th>
                    <th scope="col">"State"</th>
                    <th scope="col"><span class="visually-hidden">"Actions"</span></th>
                </tr>
            </thead>
            <tbody>
                {accounts
                    .into_iter()
                    .map(|a| {
                        let state = match (a.disabled, a.is_admin) {
                            (true, _) => "Disabled",
                            (false, true) => "Admin",
                            (false, false) => "Active",
                        };
                        let last = a.last_sign_in_at.map(utc_minute).unwrap_or_else(|| "never".into());
                        let email = a.email.clone();
                        let toggle = if a.is_me {
                            view! { <span class="hint">"(you)"</span> }.into_any()
                        } else if a.disabled {
                            view! {
                                <ActButton act name="enable" account=a.id text="Enable"
                                    label=format!("Enable {email}")/>
                            }
                            .into_any()
                        } else {
                            view! {
                                <ActButton act name="disable" account=a.id text="Disable" class="danger"
                                    label=format!("Disable {email}")/>
                            }
                            .into_any()
                        };
                        let reset = a.two_factor_on.then(|| view! {
                            <ActButton act name="reset_2fa" account=a.id text="Reset 2FA"
                                label=format!("Reset the second factor of {}", a.email)/>
                        });
                        view! {
                            <tr data-account=a.email.clone()>
                                <td class="account-email">{a.email.clone()}</td>
                                <td>{utc_minute(a.created_at)}</td>
                                <td class="last-sign-in">{last}</td>
                                <td class="two-factor">{if a.two_factor_on { "on" } else { "off" }}</td>
                                <td class="live-sessions">{a.live_sessions}</td>
                                <td class="account-state">{state}</td>
                                <td class="row-actions">{toggle}{reset}</td>
                            </tr>
                        }
                    })
                    .collect_view()}
            </tbody>
        </table>
    }
}

#[component]
fn InviteTable(invites: Vec<InviteRowView>) -> impl IntoView {
    if invites.is_empty() {
        return view! { <p>"No invite links made yet."</p> }.into_any();
    }
    view! {
        <table class="accounts invites" aria-labelledby="invites-title">
            <thead>
                <tr>
                    <th scope="col">"Made"</th>
                    <th scope="col">"Expires"</th>
                    <th scope="col">"State"</th>
                </tr>
            </thead>
            <tbody>
                {invites
                    .into_iter()
                    .map(|i| view! {
                        <tr>
                            <td>{utc_minute(i.created_at)}</td>
                            <td>{utc_minute(i.expires_at)}</td>
                            <td class="invite-state">{i.state}</td>
                        </tr>
                    })
                    .collect_view()}
            </tbody>
        </table>
    }
    .into_any()
}

#[component]
fn AuditTable(entries: Vec<AuditRowView>) -> impl IntoView {
    if entries.is_empty() {
        return view! { <p>"No admin acts yet."</p> }.into_any();
    }
    view! {
        <table class="accounts admin-log" aria-labelledby="audit-title">
            <thead>
                <tr>
                    <th scope="col">"When"</th>
                    <th scope="col">"Who"</th>
                    <th scope="col">"What"</th>
                </tr>
            </thead>
            <tbody>
                {entries
                    .into_iter()
                    .map(|e| {
                        let what = match e.whom {
                            Some(whom) => format!("{} {whom}", e.what),
                            None => e.what,
                        };
                        view! {
                            <tr>
                                <td>{utc_minute(e.at)}</td>
                                <td>{e.admin}</td>
                                <td class="audit-what">{what}</td>
                            </tr>
                        }
                    })
                    .collect_view()}
            </tbody>
        </table>
    }
    .into_any()
}
