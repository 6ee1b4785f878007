use engine::ErrorCode;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

use crate::api::{second_factor_step, CodeStep, VerifyCode};
use crate::components::{CodeInput, ErrorBanner, Field, NOT_READY};
use crate::passkeys::VerifyPasskey;
use crate::recovery_codes::UseRecoveryCode;

/// `/login/code?flow=…`: the second factor of a sign-in. The code can be typed, pasted, or sent
/// back by the TOTP provider's popup. Works as a plain form post without WebAssembly.
#[component]
pub fn SecondFactorPage() -> impl IntoView {
    let query = use_query_map();
    let flow = move || query.read().get("flow").unwrap_or_default();
    let step = Resource::new_blocking(flow, second_factor_step);
    view! {
        <Title text="Verification code · Stepgate"/>
        <section class="card" aria-labelledby="code-title">
            <h1 id="code-title">"Two-step verification"</h1>
            <Suspense fallback=|| view! { <p role="status">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match step.await {
                        Ok(step) => {
                            let recovery = format!("/login/recovery?flow={}", step.flow_id);
                            let passkey = step.passkey_options.clone().map(|options| {
                                view! {
                                    <PasskeyOption
                                        flow_id=step.flow_id.clone()
                                        options
                                        alone=!step.totp
                                    />
                                }
                            });
                            let code = step.totp.then(|| view! { <CodeForm step/> });
                            view! {
                                {code}
                                {passkey}
                                <p class="aside"><a href=recovery>"Use a recovery code"</a></p>
                            }
                                .into_any()
                        }
                        Err(e) => {
                            set_status(e.clone());
                            view! {
                            <p role="alert" class="error" data-code=e.code.as_str()>{e.message()}</p>
                            <p><a href="/login">"Start again"</a></p>
                        }
                            .into_any()
                        }
                    }
                })}
            </Suspense>
        </section>
    }
}

/// "Use a passkey": one of the account's passkeys as the second factor, run by
/// `public/passkeys.js` (shown only where the browser has passkeys) and posted in the hidden
/// form; `alone` when the account has no TOTP code to offer beside it.
#[component]
fn PasskeyOption(flow_id: String, options: String, alone: bool) -> impl IntoView {
    let verify = ServerAction::<VerifyPasskey>::new();
    let error = Signal::derive(move || verify.value().get().and_then(Result::err));
    view! {
        {alone.then(|| view! { <p>"Use your passkey to finish signing in."</p> })}
        <noscript>
            <p class="hint">"Signing in with a passkey needs JavaScript. Without it, use a recovery code."</p>
        </noscript>
        <div class="passkey-option" data-passkey-verify data-options=options hidden>
            <ErrorBanner error/>
            <button type="button" class=if alone { "" } else { "secondary" } data-passkey-start data-busy="Waiting for your passkey…">
                "Use a passkey"
            </button>
            <p class="hint" role="status" aria-live="polite" data-passkey-status></p>
            <ActionForm action=verify attr:data-passkey-form="">
                <input type="hidden" name="flow_id" value=flow_id/>
                <input type="hidden" name="passkey" value=""/>
            </ActionForm>
        </div>
        <script src="/passkeys.js" defer></script>
    }
}

/// A sign-in that cannot go on is answered with its status (410 for an expired flow, as
/// Kratos does), not 200.
fn set_status(_error: crate::error::AppError) {
    #[cfg(feature = "ssr")]
    if let Some(response) = use_context::<leptos_axum::ResponseOptions>() {
        if let Ok(status) = http::StatusCode::from_u16(_error.code.http_status()) {
            response.set_status(status);
        }
    }
}

/// The code form: a plain form post, so it works as soon as it is painted and without
/// JavaScript. `public/code-form.js` adds what needs a script (no WebAssembly on this page, so
/// it is light on a slow phone): only digits kept, a whole pasted code sent at once, and the
/// TOTP provider popup whose `postMessage` fills the code in and sends it.
#[component]
fn CodeForm(step: CodeStep) -> impl IntoView {
    let verify = ServerAction::<VerifyCode>::new();
    let error = Signal::derive(move || verify.value().get().and_then(Result::err));
    // These end the flow: only starting again helps.
    let ended = move || {
        error
            .get()
            .is_some_and(|e| matches!(e.code, ErrorCode::FlowExpired | ErrorCode::TooManyAttempts))
    };
    view! {
        <p>
            {format!(
                "Enter the {}-digit code from your TOTP provider, or let the provider send it here.",
                step.digits,
            )}
        </p>
        <ActionForm action=verify attr:data-code-form="" attr:data-digits=step.digits>
            <ErrorBanner error/>
            <Show when=ended>
                <p><a href="/login">"Start again"</a></p>
            </Show>
            <input type="hidden" name="flow_id" value=step.flow_id.clone()/>
            <CodeInput code=RwSignal::new(String::new()) digits=step.digits/>
            <button type="submit" data-busy="Verifying…">"Verify"</button>
        </ActionForm>
        <div class="totp-popup" data-totp-popup data-deep-link=step.deep_link.clone()>
            <button
                type="button"
                class="secondary"
                data-totp-popup-open
                disabled=true
                aria-describedby="totp-popup-not-ready"
            >
                "Get code from TOTP provider"
            </button>
            <span id="totp-popup-not-ready" class="hint not-ready">{NOT_READY}</span>
            <p role="status" class="notice" aria-live="polite" data-totp-popup-notice hidden></p>
        </div>
        <script src="/code-form.js" defer></script>
    }
}

/// `/login/recovery?flow=…`: the code step answered with a recovery code instead (the
/// authenticator is not at hand). A plain form; a refused code comes back with its sentence.
#[component]
pub fn RecoveryCodePage() -> impl IntoView {
    let use_code = ServerAction::<UseRecoveryCode>::new();
    let error = Signal::derive(move || use_code.value().get().and_then(Result::err));
    let flow = use_query_map()
        .read_untracked()
        .get("flow")
        .unwrap_or_default();
    let back = format!("/login/code?flow={flow}");
    let ended = move || {
        error
            .get()
            .is_some_and(|e| matches!(e.code, ErrorCode::FlowExpired | ErrorCode::TooManyAttempts))
    };
    view! {
        <Title text="Recovery code · Stepgate"/>
        <section class="card" aria-labelledby="recovery-title">
            <h1 id="recovery-title">"Use a recovery code"</h1>
            <p>"Enter one of the recovery codes you saved when you turned on two-factor authentication. Each code works once."</p>
            <ActionForm action=use_code>
                <ErrorBanner error/>
                <Show when=ended>
                    <p><a href="/login">"Start again"</a></p>
                </Show>
                <input type="hidden" name="flow_id" value=flow/>
                <Field label="Recovery code" name="recovery_code" kind="text" autocomplete="off"/>
                <button type="submit" data-busy="Checking…">"Sign in"</button>
            </ActionForm>
            <p class="aside"><a href=back>"Use your authenticator instead"</a></p>
        </section>
    }
}
