use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::Redirect;
use leptos_router::hooks::use_query_map;

use crate::api::{
    security_status, totp_site_setup_link, two_factor_is_on, AppEnrollmentView, BeginAppEnrollment,
    ConfirmAppEnrollment, DisableTwoFactor,
};
use crate::components::{use_hydrated, CodeInput, ErrorBanner, NotReadyNotice};
use crate::error::AppError;
use crate::passkeys::{passkey_settings, AddPasskey, RemovePasskey};
use crate::recovery_codes::MakeRecoveryCodes;
use engine::ErrorCode;

/// `/settings/security`: turn TOTP on (through the web TOTP provider's popup, or with an
/// authenticator app) or off.
#[component]
pub fn SecurityPage() -> impl IntoView {
    // Rendered on the server; the setups below reload the page once they have turned 2FA on.
    let disable = ServerAction::<DisableTwoFactor>::new();
    let status = Resource::new_blocking(|| (), |_| security_status());
    view! {
        <Title text="Security · Stepgate"/>
        <section class="card" aria-labelledby="security-title">
            <h1 id="security-title">"Two-factor authentication"</h1>
            <Suspense fallback=|| view! { <p role="status">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match status.await {
                        Ok(s) if s.two_factor_on => view! {
                            <p role="status" class="ok">"Two-factor authentication is on."</p>
                            <p class="hint">
                                {if s.via_totp_site {
                                    "Codes come from your TOTP provider."
                                } else {
                                    "Codes come from your authenticator app."
                                }}
                            </p>
                            <TurnOff disable/>
                            <RecoveryCodesSection left=s.recovery_codes_left new_codes=s.new_recovery_codes/>
                        }
                            .into_any(),
                        Ok(s) => view! {
                            <p>"Two-factor authentication is off. Turn it on to be asked for a code at every sign-in."</p>
                            <TotpSiteSetup/>
                            <AppSetup/>
                            {s.has_passkeys.then(|| view! {
                                <RecoveryCodesSection left=s.recovery_codes_left new_codes=s.new_recovery_codes/>
                            })}
                        }
                            .into_any(),
                        Err(AppError { code: ErrorCode::NotSignedIn, .. }) => {
                            view! { <Redirect path="/login"/> }.into_any()
                        }
                        Err(e) => view! { <p role="alert" class="error">{e.message()}</p> }.into_any(),
                    }
                })}
            </Suspense>
            <script src="/copy-secret.js" defer></script>
            <PasskeysSection/>
            <h2>"Password"</h2>
            <p><a href="/settings/password">"Change password"</a> " (your other sessions are signed out)"</p>
            <p class="aside"><a href="/">"Back home"</a></p>
        </section>
    }
}

thread_local! {
    /// The setup popup this page opened (browser only: a `Window` must not cross threads, so it is not kept in a reactive value the server might drop elsewhere).
    static SETUP_POPUP: std::cell::RefCell<Option<web_sys::Window>> = const { std::cell::RefCell::new(None) };
}

/// "Set up with TOTP provider": the provider's `action=add` page in a popup; its callback page
/// tells us (same-origin message) or, if the opener link is cut, polling notices.
///
/// The popup opens on `about:blank` inside the click handler (so blockers allow it) and is sent
/// to the provider once the server has issued a registration token: no token is made for
/// page views that never click. When the provider is done, the page reloads to show 2FA on.
#[island]
fn TotpSiteSetup() -> impl IntoView {
    let (blocked, set_blocked) = signal(false);
    let (waiting, set_waiting) = signal(false);
    let (fallback_link, set_fallback_link) = signal(None::<String>);
    let (error, set_error) = signal(None::<AppError>);
    let polling = StoredValue::new(None::<IntervalHandle>);
    on_cleanup(move || {
        if let Some(h) = polling.get_value() {
            h.clear();
        }
    });

    let listener = window_event_listener(leptos::ev::message, move |event| {
        let own_origin = window().location().origin().ok();
        let opened = SETUP_POPUP.with(|p| p.borrow().clone());
        let from_popup = opened.is_some_and(|p| {
            event
                .source()
                .is_some_and(|s| js_sys::Object::is(&s, p.as_ref()))
        });
        if Some(event.origin()) == own_origin && from_popup {
            set_waiting.set(false);
            reload_page();
        }
    });
    on_cleanup(move || listener.remove());

    // Polling backs the message up when the opener link is cut (or there never was one).
    let wait_for_setup = move || {
        set_waiting.set(true);
        if polling.get_value().is_some() {
            return;
        }
        let handle = set_interval_with_handle(
            move || {
                if waiting.get_untracked() {
                    leptos::task::spawn_local(async {
                        if two_factor_is_on().await.unwrap_or(false) {
                            reload_page();
                        }
                    });
                }
            },
            std::time::Duration::from_secs(2),
        );
        polling.set_value(handle.ok());
    };

    let open = move |_| {
        set_error.set(None);
        let opened = window()
            .open_with_url_and_target_and_features(
                "about:blank",
                "stepgate_totp_setup",
                "popup=yes,width=600,height=700",
            )
            .ok()
            .flatten();
        match &opened {
            Some(popup) => {
                SETUP_POPUP.with(|p| *p.borrow_mut() = Some(popup.clone()));
                set_blocked.set(false);
                wait_for_setup();
            }
            None => set_blocked.set(true),
        }
        leptos::task::spawn_local(async move {
            match (totp_site_setup_link().await, opened) {
                (Ok(url), Some(popup)) => {
                    let _ = popup.location().set_href(&url);
                }
                (Ok(url), None) => set_fallback_link.set(Some(url)),
                (Err(e), popup) => {
                    if let Some(popup) = popup {
                        let _ = popup.close();
                    }
                    set_waiting.set(false);
                    set_error.set(Some(e));
                }
            }
        });
    };
    let hydrated = use_hydrated();
    view! {
        <div class="setup-option">
            <h2>"With the TOTP provider"</h2>
            <p class="hint">"The provider keeps your seed; at sign-in Stepgate opens it for you."</p>
            <ErrorBanner error/>
            <button
                type="button"
                on:click=open
                disabled=move || !hydrated.get()
                aria-describedby="provider-setup-not-ready"
            >
                "Set up with TOTP provider"
            </button>
            <NotReadyNotice id="provider-setup-not-ready" hydrated/>
            <Show when=move || blocked.get()>
                <p role="status" class="notice">
                    "Your browser blocked the popup. "
                    {move || fallback_link.get().map(|url| view! {
                        <a href=url target="_blank" rel="noopener" on:click=move |_| wait_for_setup()>
                            "Open the TOTP provider"
                        </a>
                    })}
                </p>
            </Show>
            <Show when=move || waiting.get()>
                <p role="status" class="notice">"Finish the setup in the TOTP provider window…"</p>
            </Show>
        </div>
    }
}

/// Shows the page again from the server, now with 2FA on.
fn reload_page() {
    let _ = window().location().reload();
}

/// "Set up with an authenticator app": a QR code and the secret as text; on only after a valid
/// current code, and then the page reloads to show it.
#[island]
fn AppSetup() -> impl IntoView {
    let begin = ServerAction::<BeginAppEnrollment>::new();
    let confirm = ServerAction::<ConfirmAppEnrollment>::new();
    Effect::new(move |_| {
        if matches!(confirm.value().get(), Some(Ok(()))) {
            reload_page();
        }
    });
    let code = RwSignal::new(String::new());
    let confirm_error = Signal::derive(move || confirm.value().get().and_then(Result::err));
    let begin_error = Signal::derive(move || begin.value().get().and_then(Result::err));
    let shown = move || begin.value().get().and_then(Result::ok);
    let hydrated = use_hydrated();
    view! {
        <div class="setup-option">
            <h2>"With an authenticator app"</h2>
            <ErrorBanner error=begin_error/>
            <Show
                when=move || shown().is_some()
                fallback=move || view! {
                    <button
                        type="button"
                        class="secondary"
                        on:click=move |_| { begin.dispatch(BeginAppEnrollment {}); }
                        disabled=move || !hydrated.get()
                        aria-describedby="app-setup-not-ready"
                    >
                        "Set up with an authenticator app"
                    </button>
                    <NotReadyNotice id="app-setup-not-ready" hydrated/>
                }
            >
                {move || shown().map(|e: AppEnrollmentView| view! {
                    <p>"Scan this code with your authenticator app, or type the key in by hand."</p>
                    <div class="qr" role="img" aria-label="QR code for your authenticator app" inner_html=e.qr_svg></div>
                    <p>"Key: " <code class="totp-secret">{e.secret}</code></p>
                    <p class="hint"><a href=e.otpauth_uri>"Open in an authenticator app on this device"</a></p>
                })}
                <ActionForm action=confirm>
                    <ErrorBanner error=confirm_error/>
                    <CodeInput code/>
                    <button type="submit">"Turn on 2FA"</button>
                </ActionForm>
            </Show>
        </div>
    }
}

/// "Turn off 2FA": a sensitive act, so a session that has not confirmed its user in the last
/// ten minutes goes to "Confirm it's you" (password and a current code) first and comes back
/// here. A plain form: the page comes back with the result.
#[component]
fn TurnOff(disable: ServerAction<DisableTwoFactor>) -> impl IntoView {
    let error = Signal::derive(move || disable.value().get().and_then(Result::err));
    let confirmed = use_query_map().read_untracked().get("confirmed").is_some();
    view! {
        <ActionForm action=disable>
            <ErrorBanner error/>
            {if confirmed {
                view! { <p role="status" class="ok">"Confirmed. You can turn two-factor authentication off now."</p> }.into_any()
            } else {
                view! { <p class="hint">"Turning it off asks for your password and a current code first."</p> }.into_any()
            }}
            <button type="submit" class="secondary" data-busy="Turning off…">"Turn off 2FA"</button>
        </ActionForm>
    }
}

/// "Recovery codes": a set just made, shown this once (copy, download as a text file), how many
/// are left, and "Make new recovery codes" (after "Confirm it's you"; the old set dies). Plain
/// forms; `public/copy-secret.js` drives "Copy".
#[component]
fn RecoveryCodesSection(left: i64, new_codes: Option<Vec<String>>) -> impl IntoView {
    let make = ServerAction::<MakeRecoveryCodes>::new();
    let error = Signal::derive(move || make.value().get().and_then(Result::err));
    let recovered = use_query_map().read_untracked().get("recovered").is_some();
    let left_text = match left {
        0 => "You have no recovery codes left. Make a new set so that a lost phone does not lock you out.".to_owned(),
        1 => "1 recovery code left.".to_owned(),
        n => format!("{n} recovery codes left."),
    };
    let shown = new_codes.map(|codes| {
        let text = format!(
            "Stepgate recovery codes: each signs in once, in place of a second factor.\n\n{}\n",
            codes.join("\n")
        );
        let download = format!(
            "data:text/plain;charset=utf-8,{}",
            text.bytes()
                .map(|b| if b.is_ascii_alphanumeric() || b == b'-' {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                })
                .collect::<String>()
        );
        let rows = codes.len();
        view! {
            <div class="new-key">
                <p class="ok" role="status">
                    "Your new recovery codes. Save them now: they are shown only this once, and each signs in once when your second factor is not at hand."
                </p>
                <label for="recovery-codes">"Recovery codes"</label>
                <textarea id="recovery-codes" class="recovery-codes" readonly rows=rows spellcheck="false">
                    {codes.join("\n")}
                </textarea>
                <div class="new-key-row">
                    <button type="button" class="secondary" data-copy="recovery-codes">"Copy"</button>
                    <a class="button secondary" href=download download="stepgate-recovery-codes.txt">"Download"</a>
                </div>
                <p class="hint" role="status" aria-live="polite" id="recovery-codes-copied"></p>
            </div>
        }
    });
    view! {
        <h2>"Recovery codes"</h2>
        {recovered.then(|| view! {
            <p role="status" class="notice">
                "You signed in with a recovery code; it cannot be used again. If your authenticator is lost, turn two-factor authentication off and set it up again."
            </p>
        })}
        {shown}
        <p class="recovery-left" data-left=left>{left_text}</p>
        <ActionForm action=make>
            <ErrorBanner error/>
            <p class="hint">"A new set replaces the old one: the old codes stop working."</p>
            <button type="submit" class="secondary" data-busy="Making codes…">"Make new recovery codes"</button>
        </ActionForm>
    }
}

/// "Passkeys": the account's passkeys (name, when added, when last used, "Remove" after
/// "Confirm it's you") and "Add a passkey" under a name the user gives. The ceremony needs
/// JavaScript (`public/passkeys.js`, which shows the form where the browser has passkeys);
/// nothing here is an island.
#[component]
fn PasskeysSection() -> impl IntoView {
    let add = ServerAction::<AddPasskey>::new();
    let remove = ServerAction::<RemovePasskey>::new();
    let add_error = Signal::derive(move || add.value().get().and_then(Result::err));
    let remove_error = Signal::derive(move || remove.value().get().and_then(Result::err));
    let query = use_query_map();
    let done = query.read_untracked().get("passkey");
    let typed_name = query
        .read_untracked()
        .get("passkey_name")
        .unwrap_or_default();
    let settings = Resource::new_blocking(|| (), |_| passkey_settings());
    view! {
        <h2 id="passkeys-title">"Passkeys"</h2>
        <Suspense fallback=|| view! { <p role="status">"Loading…"</p> }>
            {move || {
                let (done, typed_name) = (done.clone(), typed_name.clone());
                Suspend::new(async move {
                    let settings = match settings.await {
                        Ok(settings) => settings,
                        Err(e) if e.code == ErrorCode::NotSignedIn => return ().into_any(),
                        Err(e) => return view! { <p role="alert" class="error">{e.message()}</p> }.into_any(),
                    };
                    if !settings.available {
                        return view! {
                            <p class="hint">{ErrorCode::PasskeysUnavailable.message()}</p>
                        }
                            .into_any();
                    }
                    let note = match done.as_deref() {
                        Some("added") => Some("Passkey added. It signs you in after your password, or on its own with “Sign in with a passkey”."),
                        Some("removed") => Some("Passkey removed."),
                        _ => None,
                    };
                    let has_any = !settings.passkeys.is_empty();
                    let rows = settings.passkeys.into_iter().map(|p| {
                        let label = format!("Remove passkey {}", p.name);
                        let last = p
                            .last_used_at
                            .map(|t| format!("{} UTC", engine::dates::utc_minute(t)))
                            .unwrap_or_else(|| "Never".to_owned());
                        view! {
                            <tr>
                                <td>{p.name.clone()}</td>
                                <td>{format!("{} UTC", engine::dates::utc_minute(p.created_at))}</td>
                                <td>{last}</td>
                                <td>
                                    <ActionForm action=remove>
                                        <input type="hidden" name="id" value=p.id/>
                                        <button type="submit" class="secondary" aria-label=label data-busy="Removing…">"Remove"</button>
                                    </ActionForm>
                                </td>
                            </tr>
                        }
                    }).collect_view();
                    let listed = view! {
                        <table aria-labelledby="passkeys-title">
                            <thead><tr><th scope="col">"Name"</th><th scope="col">"Added"</th><th scope="col">"Last used"</th><th scope="col"><span class="visually-hidden">"Actions"</span></th></tr></thead>
                            <tbody>{rows}</tbody>
                        </table>
                    };
                    view! {
                        {note.map(|note| view! { <p role="status" class="ok">{note}</p> })}
                        <ErrorBanner error=remove_error/>
                        <p class="hint">"A passkey signs you in with your device's screen lock instead of a code: after your password, or on its own."</p>
                        {if has_any { listed.into_any() } else { view! { <p>"No passkeys yet."</p> }.into_any() }}
                        <noscript><p class="hint">"Adding a passkey needs JavaScript."</p></noscript>
                        <ActionForm action=add attr:data-passkey-add="" attr:hidden=true>
                            <ErrorBanner error=add_error/>
                            <div class="field">
                                <label for="passkey-name">"Passkey name"</label>
                                <input id="passkey-name" name="name" type="text" required=true maxlength="64" autocomplete="off" placeholder="This laptop" value=typed_name/>
                            </div>
                            <input type="hidden" name="state" value=""/>
                            <input type="hidden" name="passkey" value=""/>
                            <button type="submit" data-busy="Waiting for your passkey…">"Add a passkey"</button>
                            <p class="hint" role="status" aria-live="polite" data-passkey-status></p>
                        </ActionForm>
                        <script src="/passkeys.js" defer></script>
                    }
                        .into_any()
                })
            }}
        </Suspense>
    }
}
