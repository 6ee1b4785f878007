use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

use crate::api::Register;
use crate::components::{ErrorBanner, Field};

/// `/register`: a new local account, a plain server-rendered form (no WebAssembly); a refused
/// form comes back with its email filled in.
#[component]
pub fn RegisterPage() -> impl IntoView {
    let register = ServerAction::<Register>::new();
    let error = Signal::derive(move || register.value().get().and_then(Result::err));
    let email = use_query_map().read_untracked().get("email");
    view! {
        <Title text="Create account · Stepgate"/>
        <section class="card" aria-labelledby="register-title">
            <h1 id="register-title">"Create account"</h1>
            <ActionForm action=register>
                <ErrorBanner error/>
                <Field label="Email" name="email" kind="email" autocomplete="username" value=email.unwrap_or_default()/>
                <Field label="Password" name="password" kind="password" autocomplete="new-password" minlength=12/>
                <Field
                    label="Confirm password"
                    name="confirm_password"
                    kind="password"
                    autocomplete="new-password"
                    minlength=12
                />
                <button type="submit" data-busy="Creating account…">"Create account"</button>
            </ActionForm>
            <p class="aside">"Have an account? " <a href="/login">"Sign in"</a></p>
        </section>
    }
}
