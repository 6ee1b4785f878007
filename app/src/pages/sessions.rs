use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

use crate::components::{ErrorBanner, SignedIn};
use crate::pages::accounts::utc_minute;
use crate::sessions::{sessions_view, SessionRow, SignOutOtherSessions, SignOutSession};

/// "2 hours", "30 minutes": the idle timeout in words.
fn duration_words(seconds: i64) -> String {
    let (n, unit) = if seconds >= 3600 && seconds % 3600 == 0 {
        (seconds / 3600, "hour")
    } else if seconds >= 60 {
        (seconds / 60, "minute")
    } else {
        (seconds, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// `/settings/sessions`: where this account is signed in (opened, last used, browser and
/// system, address), this browser marked; sign one out, or every other. Plain server-rendered
/// forms.
#[component]
pub fn SessionsPage() -> impl IntoView {
    let page = Resource::new_blocking(|| (), |_| sessions_view());
    let end_one = ServerAction::<SignOutSession>::new();
    let end_others = ServerAction::<SignOutOtherSessions>::new();
    let end_one_error = Signal::derive(move || end_one.value().get().and_then(Result::err));
    let end_others_error = Signal::derive(move || end_others.value().get().and_then(Result::err));
    let query = use_query_map();
    let ended = query.read_untracked().get("ended").is_some();
    let ended_others = query.read_untracked().get("ended_others");
    view! {
        <Title text="Sessions · Stepgate"/>
        <section class="card wide" aria-labelledby="sessions-title">
            <h1 id="sessions-title">"Sessions"</h1>
            {ended.then(|| view! { <p role="status" class="ok">"Session signed out. That browser must sign in again."</p> })}
            {ended_others.map(|n| {
                let text = match n.as_str() {
                    "0" => "There were no other sessions.".to_owned(),
                    "1" => "Signed out 1 other session.".to_owned(),
                    n => format!("Signed out {n} other sessions."),
                };
                view! { <p role="status" class="ok">{text}</p> }
            })}
            <ErrorBanner error=end_one_error/>
            <ErrorBanner error=end_others_error/>
            <SignedIn data=page page=move |page| view! {
                <p>
                    "Where your account is signed in. A session ends after 12 hours, or after "
                    {duration_words(page.idle_seconds)} " without use. Sign out any you do not recognise, "
                    "and change your password if one is not yours."
                </p>
                <SessionTable sessions=page.sessions.clone() end_one/>
                {(page.sessions.len() > 1).then(|| view! {
                    <ActionForm action=end_others attr:class="inline">
                        <button type="submit" class="danger" data-busy="Signing out…">"Sign out all other sessions"</button>
                    </ActionForm>
                })}
                <p class="aside"><a href="/settings/password">"Change password"</a></p>
            }/>
            <p class="aside"><a href="/">"Back home"</a></p>
        </section>
    }
}

#[component]
fn SessionTable(sessions: Vec<SessionRow>, end_one: ServerAction<SignOutSession>) -> impl IntoView {
    view! {
        <table class="sessions">
            <caption class="visually-hidden">"Your sessions"</caption>
            <thead>
                <tr>
                    <th scope="col">"Browser"</th>
                    <th scope="col">"Address"</th>
                    <th scope="col">"Signed in"</th>
                    <th scope="col">"Last used"</th>
                    <th scope="col"><span class="visually-hidden">"Actions"</span></th>
                </tr>
            </thead>
            <tbody>
                {sessions
                    .into_iter()
                    .map(|s| {
                        let device = format!("{} on {}", s.browser, s.os);
                        let label = if s.current {
                            "Sign out this browser".to_owned()
                        } else {
                            format!("Sign out {device}, last used {}", utc_minute(s.last_used_at))
                        };
                        let id = s.id.clone();
                        view! {
                            <tr data-session=id data-current=s.current.to_string()>
                                <td class="session-device">
                                    {device}
                                    {s.current.then(|| view! { " " <strong class="badge">"This browser"</strong> })}
                                </td>
                                <td class="session-address">{s.address.unwrap_or_else(|| "unknown".into())}</td>
                                <td class="session-created">{utc_minute(s.created_at)}</td>
                                <td class="session-used">{utc_minute(s.last_used_at)}</td>
                                <td class="row-actions">
                                    <ActionForm action=end_one attr:class="inline">
                                        <input type="hidden" name="session_id" value=s.id/>
                                        <button type="submit" class="secondary" aria-label=label data-busy="Signing out…">
                                            "Sign out"
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
}
