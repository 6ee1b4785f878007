//! The WebAssembly entry point: hydrates the islands (the interactive parts) of a server-rendered
//! page. Pages without islands do not load it at all.

#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    // Linking the app crate registers its islands.
    #[allow(unused_imports)]
    use app::*;
    leptos::mount::hydrate_islands();
    // A flag the end-to-end tests wait for before exercising the enhanced (non-form-post) path.
    let _ = js_sys::Reflect::set(
        &js_sys::global(),
        &"__stepgateHydrated".into(),
        &true.into(),
    );
}
