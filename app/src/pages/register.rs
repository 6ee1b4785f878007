use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

use crate::api::{registration_rules, Register};
use crate::components::{ErrorBanner, Field};

/// `/register`: a new local account, a plain server-rendered form (no WebAssembly); a refused
/// form comes back with its email (and invite) filled in. What `STEPGATE_REGISTRATION` asks is
/// said before anything is typed: an invite link's token comes in `?invite=…` (or is pasted
/// into the invite field), and a closed Stepgate says so instead of showing a form.
#[component]
pub fn RegisterPage() -> impl IntoView {
    let register = ServerAction::<Register>::new();
    let error = Signal::derive(move || register.value().get().and_then(Result::err));
    let query = use_query_map();
    let email = query.read_untracked().get("email");
    let invite = query
        .read_untracked()
        .get("invite")
        .filter(|i| !i.is_empty());
    let rules = Resource::new_blocking(|| (), |_| registration_rules());
    view! {
        <Title text="Create account · Stepgate"/>
        <section class="card" aria-labelledby="register-title">
            <h1 id="register-title">"Create account"</h1>
            <Suspense fallback=|| view! { <p role="status">"Loading…"</p> }>
                {move || {
                    let (email, invite) = (email.clone(), invite.clone());
                    Suspend::new(async move {
                        let rules = match rules.await {
                            Ok(rules) => rules,
                            Err(e) => {
                                return view! { <p role="alert" class="error">{e.message()}</p> }
                                    .into_any()
                            }
                        };
                        if rules.closed {
                            return view! {
                                <ErrorBanner error/>
                                <p class="notice" data-code="registration_closed">
                                    {engine::ErrorCode::RegistrationClosed.message()}
                                </p>
                            }
                            .into_any();
                        }
                        let invite_field = rules.needs_invite.then(|| {
                            let hint = if invite.is_some() {
                                "From your invite link. It works once."
                            } else {
                                "Paste the invite link (or its code) the admin sent you."
                            };
                            view! {
                                <div class="field">
                                    <label for="field-invite">"Invite link or code"</label>
                                    <input id="field-invite" name="invite" type="text" autocomplete="off"
                                        maxlength="1024" spellcheck="false" aria-describedby="invite-hint"
                                        value=invite.clone()/>
                                    <p class="hint" id="invite-hint">{hint}</p>
                                </div>
                            }
                        });
                        view! {
                            {rules.first_account.then(|| view! {
                                <p class="notice">
                                    "This Stepgate has no admin yet: the account you create now is its admin."
                                </p>
                            })}
                            {(rules.needs_invite && invite.is_none()).then(|| view! {
                                <p class="notice">{engine::ErrorCode::InviteRequired.message()}</p>
                            })}
                            <ActionForm action=register>
                                <ErrorBanner error/>
                                {invite_field}
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
                        }
                        .into_any()
                    })
                }}
            </Suspense>
            <p class="aside">"Have an account? " <a href="/login">"Sign in"</a></p>
        </section>
    }
}
