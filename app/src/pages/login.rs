use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

use crate::api::SignIn;
use crate::components::{ErrorBanner, Field};
use crate::passkeys::{passkeys_offered, SignInWithPasskey};

/// `/login`: email and password, a plain server-rendered form: no WebAssembly on this page.
/// A refused try comes back with the sentence and the email filled in (the server echoes it);
/// `public/forms.js` shows "Signing in…" while the server works.
///
/// "Sign in with a passkey" (and the browser's passkey autofill on the email field) is run by
/// `public/passkeys.js`, which shows the button only where the browser has passkeys; its
/// answer is posted in the hidden form below.
#[component]
pub fn LoginPage() -> impl IntoView {
    let sign_in = ServerAction::<SignIn>::new();
    let error = Signal::derive(move || sign_in.value().get().and_then(Result::err));
    let with_passkey = ServerAction::<SignInWithPasskey>::new();
    let passkey_error = Signal::derive(move || with_passkey.value().get().and_then(Result::err));
    let email = use_query_map().read_untracked().get("email");
    view! {
        <Title text="Sign in · Stepgate"/>
        <section class="card" aria-labelledby="login-title">
            <h1 id="login-title">"Sign in"</h1>
            <ActionForm action=sign_in>
                <ErrorBanner error/>
                <Field label="Email" name="email" kind="email" autocomplete="username webauthn" value=email.unwrap_or_default()/>
                <Field label="Password" name="password" kind="password" autocomplete="current-password"/>
                <button type="submit" data-busy="Signing in…">"Sign in"</button>
            </ActionForm>
            {passkeys_offered().then(|| view! {
            <div class="passkey-sign-in" data-passkey-sign-in hidden>
                <ErrorBanner error=passkey_error/>
                <button type="button" class="secondary" data-passkey-start data-busy="Waiting for your passkey…">
                    "Sign in with a passkey"
                </button>
                <p class="hint" role="status" aria-live="polite" data-passkey-status></p>
                <ActionForm action=with_passkey attr:data-passkey-form="">
                    <input type="hidden" name="flow_id" value=""/>
                    <input type="hidden" name="passkey" value=""/>
                </ActionForm>
            </div>
            <script src="/passkeys.js" defer></script>
            })}
            <p class="aside">"No account yet? " <a href="/register">"Create one"</a></p>
        </section>
    }
}
