//! The WebAssembly entry point: hydrates the server-rendered page.

#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
    // A flag the end-to-end tests wait for before exercising the enhanced (non-form-post) path.
    let _ = js_sys::Reflect::set(
        &js_sys::global(),
        &"__stepgateHydrated".into(),
        &true.into(),
    );
}
