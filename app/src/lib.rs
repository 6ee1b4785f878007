//! Stepgate's UI: pages, components and the server functions they call.

pub mod accounts;
pub mod admin;
pub mod api;
pub mod api_keys;
pub mod components;
pub mod error;
#[cfg(feature = "ssr")]
pub mod one_time_secret;
pub mod pages;
pub mod passkeys;
pub mod recovery_codes;
#[cfg(feature = "ssr")]
pub mod session;
pub mod sessions;
pub mod sign_in_links;
pub mod webhooks;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, HashedStylesheet, MetaTags, Title};
use leptos_router::components::{Route, Router, Routes};
use leptos_router::path;
use leptos_router::SsrMode;

use pages::{
    accounts::{AccountDetailPage, AccountsPage, RemoveAccountPage},
    admin::AdminPage,
    api_keys::ApiKeysPage,
    confirm::ConfirmPage,
    connect::{ConnectPage, ConnectPickerPage},
    home::HomePage,
    login::LoginPage,
    password::PasswordPage,
    register::RegisterPage,
    second_factor::{RecoveryCodePage, SecondFactorPage},
    security::SecurityPage,
    sessions::SessionsPage,
    sign_in_link::{is_link_page, SignInLinkOpenPage, SignInLinkPage},
    webhooks::WebhooksPage,
};

/// The pages that contain islands (interactive parts): only they load the WebAssembly. Every
/// other page is a plain server-rendered form and is usable at first paint.
pub const PAGES_WITH_ISLANDS: [&str; 1] = ["/settings/security"];

/// Whether the page being rendered needs the islands script.
fn page_has_islands() -> bool {
    #[cfg(feature = "ssr")]
    {
        use_context::<http::request::Parts>()
            .is_some_and(|parts| PAGES_WITH_ISLANDS.contains(&parts.uri.path()))
    }
    #[cfg(not(feature = "ssr"))]
    {
        true
    }
}

/// The HTML document around the app, rendered on the server.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    // The inline hydration scripts carry the nonce the Content-Security-Policy header names.
    #[cfg(feature = "ssr")]
    if let Some(nonce) = session::csp_nonce() {
        provide_context(leptos::nonce::Nonce::from_value(nonce));
    }
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <meta name="description" content="Stepgate: sign in, and connect the accounts behind multi-step logins."/>
                <link rel="icon" href="/favicon.ico" sizes="32x32"/>
                <HashedStylesheet id="leptos" options=options.clone()/>
                <AutoReload options=options.clone()/>
                {page_has_islands().then(|| view! { <HydrationScripts options islands=true/> })}
                <script src="/forms.js" defer></script>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    let is_home = || {
        (leptos_router::hooks::use_location()
            .pathname
            .get_untracked()
            == "/")
            .then_some("page")
    };
    // A sign-in link's visitor has no Stepgate account: no link to its pages.
    let brand = move || {
        let path = leptos_router::hooks::use_location()
            .pathname
            .get_untracked();
        if is_link_page(&path) {
            view! { <span class="brand">"Stepgate"</span> }.into_any()
        } else {
            view! { <a href="/" class="brand" aria-current=is_home>"Stepgate"</a> }.into_any()
        }
    };
    view! {
        <Title text="Stepgate"/>
        <Router>
            <header class="masthead">
                {brand()}
                <components::SiteNav/>
            </header>
            <main>
                <Routes fallback=|| view! { <p>"Page not found."</p> }>
                    // Async: the whole page is rendered before the headers go out, so the
                    // signed-out redirect is always a real 302 (streaming can commit a 200 first).
                    <Route path=path!("") view=HomePage ssr=SsrMode::Async/>
                    <Route path=path!("login") view=LoginPage/>
                    // Async: the page says up front whether an invite is needed.
                    <Route path=path!("register") view=RegisterPage ssr=SsrMode::Async/>
                    <Route path=path!("login/code") view=SecondFactorPage ssr=SsrMode::Async/>
                    <Route path=path!("login/recovery") view=RecoveryCodePage/>
                    <Route path=path!("settings/security") view=SecurityPage ssr=SsrMode::Async/>
                    <Route path=path!("settings/api-keys") view=ApiKeysPage ssr=SsrMode::Async/>
                    <Route path=path!("settings/confirm") view=ConfirmPage ssr=SsrMode::Async/>
                    <Route path=path!("settings/webhooks") view=WebhooksPage ssr=SsrMode::Async/>
                    <Route path=path!("settings/sessions") view=SessionsPage ssr=SsrMode::Async/>
                    <Route path=path!("settings/password") view=PasswordPage ssr=SsrMode::Async/>
                    <Route path=path!("accounts") view=AccountsPage ssr=SsrMode::Async/>
                    <Route path=path!("accounts/remove") view=RemoveAccountPage ssr=SsrMode::Async/>
                    <Route path=path!("accounts/account") view=AccountDetailPage ssr=SsrMode::Async/>
                    <Route path=path!("accounts/connect") view=ConnectPickerPage ssr=SsrMode::Async/>
                    <Route path=path!("accounts/connect/:provider") view=ConnectPage ssr=SsrMode::Async/>
                    <Route path=path!("admin/users") view=AdminPage ssr=SsrMode::Async/>
                    // Async: opening a link answers with its cookie and a redirect, or with the
                    // refusal's status; the link's pages with their statuses too.
                    <Route path=path!("sign-in-link/:token") view=SignInLinkOpenPage ssr=SsrMode::Async/>
                    <Route path=path!("sign-in-link") view=SignInLinkPage ssr=SsrMode::Async/>
                </Routes>
            </main>
        </Router>
    }
}
