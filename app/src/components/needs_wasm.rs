//! Controls that only work with WebAssembly (popups, `postMessage`) must not look clickable
//! before the app runs: on a slow phone that lasts seconds, and a click then does nothing.
//! Until hydration they are rendered disabled and described by a short notice, which assistive
//! technology reads with the button.

use leptos::prelude::*;

/// What a control that needs the page's script says until the script runs (also the code
/// page's popup button, which `public/code-form.js` turns on).
pub const NOT_READY: &str = "Available once the page has finished loading (needs JavaScript).";

/// True once this page's WebAssembly runs (effects never run during server rendering).
pub fn use_hydrated() -> ReadSignal<bool> {
    let (hydrated, set_hydrated) = signal(false);
    Effect::new(move |_| set_hydrated.set(true));
    hydrated
}

/// The notice a not-yet-working button points at with `aria-describedby`.
#[component]
pub fn NotReadyNotice(
    /// The id the button's `aria-describedby` names.
    id: &'static str,
    hydrated: ReadSignal<bool>,
) -> impl IntoView {
    view! {
        <Show when=move || !hydrated.get()>
            <span id=id class="hint not-ready">{NOT_READY}</span>
        </Show>
    }
}
