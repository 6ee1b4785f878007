use leptos::prelude::*;

/// A secret shown this once (a new API key, a webhook's signing secret): `notice` says what
/// happened, then the secret in a read-only field labelled `label`, with a "Copy" button and a
/// live region that `public/copy-secret.js` drives through the ids `{id}` and `{id}-copied`.
/// The page includes that script.
#[component]
pub fn OneTimeSecret(
    /// The field's id.
    id: &'static str,
    label: &'static str,
    notice: &'static str,
    value: String,
) -> impl IntoView {
    view! {
        <div class="new-key">
            <p class="ok">{notice}</p>
            <label for=id>{label}</label>
            <div class="new-key-row">
                <input id=id type="text" readonly value=value spellcheck="false" autocomplete="off"/>
                // Works once copy-secret.js is loaded; without it the field is selectable.
                <button type="button" class="secondary" data-copy=id>"Copy"</button>
            </div>
            <p class="hint" role="status" aria-live="polite" id=format!("{id}-copied")></p>
        </div>
    }
}
