use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

use crate::api::SignIn;
use crate::components::{ErrorBanner, Field};

/// `/login`: email and password, a plain server-rendered form: no WebAssembly on this page.
/// A refused try comes back with the sentence and the email filled in (the server echoes it);
/// `public/forms.js` shows "Signing in…" while the server works.
#[component]
pub fn LoginPage() -> impl IntoView {
    let sign_in = ServerAction::<SignIn>::new();
    let error = Signal::derive(move || sign_in.value().get().and_then(Result::err));
    let email = use_query_map().read_untracked().get("email");
    view! {
        <Title text="Sign in · Stepgate"/>
        <section class="card" aria-labelledby="login-title">
            <h1 id="login-title">"Sign in"</h1>
            <ActionForm action=sign_in>
                <ErrorBanner error/>
                <Field label="Email" name="email" kind="email" autocomplete="username" value=email.unwrap_or_default()/>
                <Field label="Password" name="password" kind="password" autocomplete="current-password"/>
                <button type="submit" data-busy="Signing in…">"Sign in"</button>
            </ActionForm>
            <p class="aside">"No account yet? " <a href="/register">"Create one"</a></p>
        </section>
    }
}
