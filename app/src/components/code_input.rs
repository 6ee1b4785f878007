use leptos::prelude::*;

/// Keeps only the digits of what was typed or pasted ("123 456" → "123456").
pub fn digits_of(text: &str) -> String {
    text.chars().filter(char::is_ascii_digit).collect()
}

/// The one-time-code field: numeric keyboard, autofill from SMS/password managers, spaces and
/// dashes of a pasted code dropped. `on_complete` runs when a whole code is pasted.
#[component]
pub fn CodeInput(
    code: RwSignal<String>,
    #[prop(default = 6)] digits: u8,
    #[prop(optional)] on_complete: Option<Callback<String>>,
) -> impl IntoView {
    view! {
        <div class="field">
            <label for="field-code">"Verification code"</label>
            <input
                id="field-code"
                name="code"
                type="text"
                inputmode="numeric"
                autocomplete="one-time-code"
                required=true
                maxlength="64"
                aria-describedby="code-hint"
                prop:value=move || code.get()
                on:input=move |ev| code.set(digits_of(&event_target_value(&ev)))
                on:paste=move |ev: web_sys::ClipboardEvent| {
                    let pasted = ev
                        .clipboard_data()
                        .and_then(|data| data.get_data("text").ok())
                        .map(|text| digits_of(&text))
                        .unwrap_or_default();
                    if pasted.len() == usize::from(digits) {
                        ev.prevent_default();
                        code.set(pasted.clone());
                        if let Some(done) = on_complete {
                            done.run(pasted);
                        }
                    }
                }
            />
            <p id="code-hint" class="hint">{format!("The {digits}-digit code, spaces allowed.")}</p>
        </div>
    }
}
