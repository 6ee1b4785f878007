use leptos::prelude::*;
use leptos_router::components::Redirect;
use serde::{de::DeserializeOwned, Serialize};

use crate::error::AppError;
use engine::ErrorCode;

/// The body of a page for signed-in users: "Loading…" while `data` comes, then `page` with it,
/// the sign-in page when there is no session, or the error.
#[component]
pub fn SignedIn<T, V, F>(data: Resource<Result<T, AppError>>, page: F) -> impl IntoView
where
    T: Clone + Send + Sync + Serialize + DeserializeOwned + 'static,
    V: IntoView + 'static,
    F: Fn(T) -> V + Clone + Send + Sync + 'static,
{
    view! {
        <Suspense fallback=|| view! { <p role="status">"Loading…"</p> }>
            {move || {
                let page = page.clone();
                Suspend::new(async move {
                    match data.await {
                        Ok(data) => page(data).into_any(),
                        Err(AppError { code: ErrorCode::NotSignedIn, .. }) => {
                            view! { <Redirect path="/login"/> }.into_any()
                        }
                        Err(e) => view! { <p role="alert" class="error">{e.message()}</p> }.into_any(),
                    }
                })
            }}
        </Suspense>
    }
}
