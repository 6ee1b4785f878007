use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::Redirect;
use leptos_router::hooks::use_query_map;

use crate::components::{ErrorBanner, Field, SignedIn};
use crate::sessions::{password_view, ChangePassword};

/// `/settings/password`: change the password: the current one, the new one twice (the same
/// rules as registering). A sensitive act, so an unconfirmed session confirms it's you first
/// (before anything is typed here). Every other session ends; this browser stays signed in.
/// A plain server-rendered form.
#[component]
pub fn PasswordPage() -> impl IntoView {
    let page = Resource::new_blocking(|| (), |_| password_view());
    let change = ServerAction::<ChangePassword>::new();
    let error = Signal::derive(move || change.value().get().and_then(Result::err));
    let query = use_query_map();
    let changed = query.read_untracked().get("changed").is_some();
    let ended: i64 = query
        .read_untracked()
        .get("ended")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    view! {
        <Title text="Change password · Stepgate"/>
        <section class="card" aria-labelledby="password-title">
            <h1 id="password-title">"Change password"</h1>
            {changed.then(|| {
                let others = match ended {
                    0 => "No other session was signed in.".to_owned(),
                    1 => "The 1 other session was signed out.".to_owned(),
                    n => format!("The {n} other sessions were signed out."),
                };
                view! { <p role="status" class="ok">"Password changed. " {others} " This browser stays signed in."</p> }
            })}
            <SignedIn data=page page=move |page| match page.confirm_first {
                Some(link) if !changed => view! { <Redirect path=link/> }.into_any(),
                _ => view! {
                    <p class="hint">"Signed in as " <strong>{page.email}</strong></p>
                    <ActionForm action=change>
                        <ErrorBanner error/>
                        <Field label="Current password" name="current_password" kind="password" autocomplete="current-password"/>
                        <Field label="New password" name="new_password" kind="password" autocomplete="new-password"/>
                        <Field label="Confirm new password" name="confirm_password" kind="password" autocomplete="new-password"/>
                        <p class="hint">"Your other sessions are signed out; this browser stays signed in."</p>
                        <button type="submit" data-busy="Changing…">"Change password"</button>
                    </ActionForm>
                }
                .into_any(),
            }/>
            <p class="aside"><a href="/settings/sessions">"Sessions"</a> " · " <a href="/">"Back home"</a></p>
        </section>
    }
}
