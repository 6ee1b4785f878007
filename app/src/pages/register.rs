use leptos::prelude::*;
use leptos_meta::Title;

use crate::api::Register;
use crate::components::{ErrorBanner, Field};

/// `/register`: a new local account. Works as a plain form post without WebAssembly.
#[component]
pub fn RegisterPage() -> impl IntoView {
    let register = ServerAction::<Register>::new();
    let pending = register.pending();
    let error = Signal::derive(move || register.value().get().and_then(Result::err));
    view! {
        <Title text="Create account · Stepgate"/>
        <section class="card" aria-labelledby="register-title">
            <h1 id="register-title">"Create account"</h1>
            <ActionForm action=register attr:aria-busy=move || pending.get().to_string()>
                <ErrorBanner error/>
                <Field label="Email" name="email" kind="email" autocomplete="username"/>
                <Field label="Password" name="password" kind="password" autocomplete="new-password" minlength=8/>
                <Field
                    label="Confirm password"
                    name="confirm_password"
                    kind="password"
                    autocomplete="new-password"
                    minlength=8
                />
                <button type="submit" disabled=pending>
                    {move || if pending.get() { "Creating account…" } else { "Create account" }}
                </button>
            </ActionForm>
            <p class="aside">"Have an account? " <a href="/login">"Sign in"</a></p>
        </section>
    }
}
