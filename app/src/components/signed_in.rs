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

/// The header's sections: (path, text). The current one is marked `aria-current="page"`.
const SECTIONS: [(&str, &str); 5] = [
    ("/accounts", "Accounts"),
    ("/settings/api-keys", "API keys"),
    ("/settings/webhooks", "Webhooks"),
    ("/settings/security", "Security"),
    ("/settings/sessions", "Sessions"),
];
const ADMIN_PAGE: &str = "/admin/users";

/// Pages only visitors see: no lookup, no header links there (a sign-in link's pages are for
/// someone without a Stepgate account).
fn is_signed_out_page(path: &str) -> bool {
    matches!(
        path,
        "/login" | "/register" | "/login/code" | "/login/recovery"
    ) || crate::pages::sign_in_link::is_link_page(path)
}

/// Whether `path` is in the section at `section` (`/accounts/connect` is in Accounts).
fn in_section(path: &str, section: &str) -> bool {
    path == section
        || path
            .strip_prefix(section)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The site header's navigation on every signed-in page: the sections, Admin for admins, and
/// Sign out. Plain links and a plain form (no island, so no WebAssembly on any page for it);
/// the current section is marked for assistive technology and by style.
#[component]
pub fn SiteNav() -> impl IntoView {
    let path = leptos_router::hooks::use_location()
        .pathname
        .get_untracked();
    if is_signed_out_page(&path) {
        return ().into_any();
    }
    // Blocking: the header is in the HTML the server sends, never swapped in by a script.
    let status = Resource::new_blocking(|| (), |_| crate::admin::nav_status());
    let sign_out = ServerAction::<crate::api::SignOut>::new();
    view! {
        <Suspense fallback=|| ()>
            {move || {
                let path = path.clone();
                Suspend::new(async move {
                    let Ok(Some(status)) = status.await else {
                        return ().into_any();
                    };
                    let current = |section: &str| in_section(&path, section).then_some("page");
                    let mut sections: Vec<(&str, &str)> = SECTIONS.to_vec();
                    if status.is_admin {
                        sections.push((ADMIN_PAGE, "Admin"));
                    }
                    view! {
                        <nav class="site-nav" aria-label="Main">
                            {sections
                                .into_iter()
                                .map(|(href, text)| view! {
                                    <a href=href aria-current=current(href)>{text}</a>
                                })
                                .collect_view()}
                            <ActionForm action=sign_out attr:class="inline sign-out">
                                <button type="submit" class="secondary">"Sign out"</button>
                            </ActionForm>
                        </nav>
                    }
                    .into_any()
                })
            }}
        </Suspense>
    }
    .into_any()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_belongs_to_its_section_only() {
        assert!(in_section("/accounts", "/accounts"));
        assert!(in_section("/accounts/connect/librus", "/accounts"));
        assert!(!in_section("/accountsx", "/accounts"));
        assert!(!in_section("/settings/api-keys", "/settings/security"));
        assert!(is_signed_out_page("/login"));
        assert!(is_signed_out_page("/sign-in-link"));
        assert!(!is_signed_out_page("/sign-in-links"));
        assert!(!is_signed_out_page("/"));
    }
}
