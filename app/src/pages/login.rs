use leptos::prelude::*;
use leptos_meta::Title;

use crate::api::SignIn;
use crate::components::{ErrorBanner, Field};

/// `/login`: email and password. Works as a plain form post without WebAssembly.
#[component]
pub fn LoginPage() -> impl IntoView {
    let sign_in = ServerAction::<SignIn>::new();
    let pending = sign_in.pending();
    let error = Signal::derive(move || sign_in.value().get().and_then(Result::err));
    view! {
        <Title text="Sign in · Stepgate"/>
        <section class="card" aria-labelledby="login-title">
            <h1 id="login-title">"Sign in"</h1>
            <ActionForm action=sign_in attr:aria-busy=move || pending.get().to_string()>
                <ErrorBanner error/>
                <Field label="Email" name="email" kind="email" autocomplete="username"/>
                <Field label="Password" name="password" kind="password" autocomplete="current-password"/>
                <button type="submit" disabled=pending>
                    {move || if pending.get() { "Signing in…" } else { "Sign in" }}
                </button>
            </ActionForm>
            <p class="aside">"No account yet? " <a href="/register">"Create one"</a></p>
        </section>
    }
}
