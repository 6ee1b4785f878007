use leptos::prelude::*;

use crate::error::AppError;

/// The last error of a server action, announced to screen readers (`role="alert"`).
#[component]
pub fn ErrorBanner(#[prop(into)] error: Signal<Option<AppError>>) -> impl IntoView {
    move || {
        error.get().map(|e| {
            view! {
                <div role="alert" class="error" data-code=e.code.as_str()>
                    <p>{e.message()}</p>
                    {e.detail.clone().map(|detail| view! { <p class="detail">{detail}</p> })}
                </div>
            }
        })
    }
}
