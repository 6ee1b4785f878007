//! The TOTP provider popup: opened from the click handler (before any `await`, so blockers
//! allow it), centred, 600×700. Codes come back by `postMessage` and are accepted only from the
//! provider's origin, from the window we opened, and in the exact shape
//! `{type: "stepgate.totp", code}`. The code field stays usable whatever the popup does; when a
//! blocker stops the popup, a plain link opens the provider (without an opener: its codes are
//! typed, since only the window we opened ourselves may send them).

use leptos::prelude::*;
use wasm_bindgen::JsCast;

const WINDOW_NAME: &str = "stepgate_totp";

thread_local! {
    /// The provider popup this page opened. The browser runs on one thread; during server
    /// rendering it is never set (a `Window` must not cross threads, so it is not kept in a
    /// reactive value that the server might drop elsewhere).
    static OPENED: std::cell::RefCell<Option<web_sys::Window>> = const { std::cell::RefCell::new(None) };
}

fn opened_popup() -> Option<web_sys::Window> {
    OPENED.with(|o| o.borrow().clone())
}
const WIDTH: i32 = 600;
const HEIGHT: i32 = 700;

/// `window.open` features for a popup centred over the current window.
fn centred_features(window: &web_sys::Window) -> String {
    let number = |v: Result<wasm_bindgen::JsValue, wasm_bindgen::JsValue>| {
        v.ok().and_then(|v| v.as_f64()).unwrap_or(0.0) as i32
    };
    let left = number(window.screen_x()) + (number(window.outer_width()) - WIDTH) / 2;
    let top = number(window.screen_y()) + (number(window.outer_height()) - HEIGHT) / 2;
    format!(
        "popup=yes,width={WIDTH},height={HEIGHT},left={},top={}",
        left.max(0),
        top.max(0)
    )
}

/// The code in a message of exactly the shape `{type: "stepgate.totp", code: "<6 or 8 digits>"}`.
pub fn code_from_message(data: &wasm_bindgen::JsValue) -> Option<String> {
    let object = data.dyn_ref::<js_sys::Object>()?;
    if js_sys::Array::is_array(data) || js_sys::Object::keys(object).length() != 2 {
        return None;
    }
    let field = |name: &str| js_sys::Reflect::get(object, &name.into()).ok()?.as_string();
    if field("type")? != "stepgate.totp" {
        return None;
    }
    let code = field("code")?;
    let digits_only = code.bytes().all(|b| b.is_ascii_digit());
    (digits_only && (code.len() == 6 || code.len() == 8)).then_some(code)
}

/// The origin (`scheme://host:port`) of an absolute URL, as the browser computes it.
fn origin_of(url: &str) -> Option<String> {
    web_sys::Url::new(url).ok().map(|u| u.origin())
}

#[component]
pub fn TotpPopupButton(
    /// The provider page for this account's seed.
    deep_link: String,
    /// Called with a code the popup sent back.
    on_code: Callback<String>,
) -> impl IntoView {
    let (blocked, set_blocked) = signal(false);
    let (closed, set_closed) = signal(false);

    let link = deep_link.clone();
    let listener = window_event_listener(leptos::ev::message, move |event| {
        let Some(opened) = opened_popup() else {
            return;
        };
        if Some(event.origin()) != origin_of(&link) {
            return;
        }
        let from_our_popup = event
            .source()
            .is_some_and(|source| js_sys::Object::is(&source, opened.as_ref()));
        if !from_our_popup {
            return;
        }
        if let Some(code) = code_from_message(&event.data()) {
            on_code.run(code);
        }
    });
    on_cleanup(move || listener.remove());

    let link = deep_link.clone();
    let open = move |_| {
        let window = window();
        let features = centred_features(&window);
        match window.open_with_url_and_target_and_features(&link, WINDOW_NAME, &features) {
            Ok(Some(opened)) => {
                set_blocked.set(false);
                set_closed.set(false);
                OPENED.with(|o| *o.borrow_mut() = Some(opened.clone()));
                // Only a hint for the user: `closed` can read true early under COOP, so nothing
                // else depends on it.
                let handle = StoredValue::new(None::<IntervalHandle>);
                if let Ok(h) = set_interval_with_handle(
                    move || {
                        if opened.closed().unwrap_or(false) {
                            set_closed.set(true);
                            if let Some(h) = handle.get_value() {
                                h.clear();
                            }
                        }
                    },
                    std::time::Duration::from_millis(700),
                ) {
                    handle.set_value(Some(h));
                }
            }
            _ => set_blocked.set(true),
        }
    };

    let hydrated = super::use_hydrated();
    view! {
        <div class="totp-popup">
            <button
                type="button"
                class="secondary"
                on:click=open
                disabled=move || !hydrated.get()
                aria-describedby="totp-popup-not-ready"
            >
                "Get code from TOTP provider"
            </button>
            <super::NotReadyNotice id="totp-popup-not-ready" hydrated/>
            <Show when=move || blocked.get()>
                <p role="status" class="notice">
                    "Your browser blocked the popup. "
                    <a href=deep_link.clone() target="_blank" rel="noopener">
                        "Open the TOTP provider"
                    </a>
                    " and type the code here."
                </p>
            </Show>
            <Show when=move || closed.get()>
                <p role="status" class="notice">
                    "The TOTP provider window was closed. Open it again, or type the code."
                </p>
            </Show>
        </div>
    }
}
