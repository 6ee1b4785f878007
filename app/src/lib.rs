//! Stepgate's UI: pages, components and the server functions they call.

pub mod api;
pub mod components;
pub mod error;
pub mod pages;
#[cfg(feature = "ssr")]
pub mod session;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Stylesheet, Title};
use leptos_router::components::{Route, Router, Routes};
use leptos_router::path;
use leptos_router::SsrMode;

use pages::{
    home::HomePage, login::LoginPage, register::RegisterPage, second_factor::SecondFactorPage,
    security::SecurityPage,
};

/// The HTML document around the app, rendered on the server.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <AutoReload options=options.clone()/>
                <HydrationScripts options/>
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
    view! {
        <Stylesheet id="leptos" href="/pkg/stepgate.css"/>
        <Title text="Stepgate"/>
        <Router>
            <header class="masthead">
                <a href="/" class="brand">"Stepgate"</a>
            </header>
            <main>
                <Routes fallback=|| view! { <p>"Page not found."</p> }>
                    // Async: the whole page is rendered before the headers go out, so the
                    // signed-out redirect is always a real 302 (streaming can commit a 200 first).
                    <Route path=path!("") view=HomePage ssr=SsrMode::Async/>
                    <Route path=path!("login") view=LoginPage/>
                    <Route path=path!("register") view=RegisterPage/>
                    <Route path=path!("login/code") view=SecondFactorPage ssr=SsrMode::Async/>
                    <Route path=path!("settings/security") view=SecurityPage ssr=SsrMode::Async/>
                </Routes>
            </main>
        </Router>
    }
}
