use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::{use_params_map, use_query_map};

use crate::components::{StepInputs, StepNotes};
use crate::error::AppError;
use crate::sign_in_links::{
    open_sign_in_link, sign_in_link_view, LinkPageView, SubmitSignInLinkStep,
};
use engine::view::StepView;
use engine::ErrorCode;

/// Whether `path` is one of a sign-in link's pages: they are for someone without a Stepgate
/// account, so they link to nothing that needs one.
pub fn is_link_page(path: &str) -> bool {
    path == "/sign-in-link" || path.starts_with("/sign-in-link/")
}

/// Where a link's steps are posted (`SubmitSignInLinkStep`): under the ticket cookie's path.
pub const LINK_STEP_PATH: &str = "/sign-in-link/step";

/// Whether `path` is a link itself (`/sign-in-link/{token}`): its address carries the token.
pub fn is_link_token_page(path: &str) -> bool {
    path.starts_with("/sign-in-link/") && path != LINK_STEP_PATH
}

/// `/sign-in-link/{token}`: opens the link and goes on at once to `/sign-in-link` (the token
/// leaves the address bar and any later `Referer`), or says why the link no longer works.
#[component]
pub fn SignInLinkOpenPage() -> impl IntoView {
    let token = use_params_map()
        .read_untracked()
        .get("token")
        .unwrap_or_default();
    let opened = Resource::new_blocking(move || token.clone(), open_sign_in_link);
    view! {
        <Suspense fallback=|| view! { <p role="status">"Opening the sign-in link…"</p> }>
            {move || Suspend::new(async move {
                match opened.await {
                    // The answer is a redirect; this is what a browser that does not follow it reads.
                    Ok(()) => view! {
                        <Title text="Sign-in link · Stepgate"/>
                        <section class="card">
                            <h1>"Sign-in link"</h1>
                            <p><a href="/sign-in-link">"Continue to the sign-in steps"</a></p>
                        </section>
                    }
                        .into_any(),
                    Err(error) => view! { <LinkRefused error from_link=true/> }.into_any(),
                }
            })}
        </Suspense>
    }
}

/// `/sign-in-link[?flow=…|?done=1]`: the sign-in steps of the one account this browser's link
/// is for, rendered as on the connect page, then "Done". Plain forms, no WebAssembly, no session.
#[component]
pub fn SignInLinkPage() -> impl IntoView {
    let query = use_query_map();
    let flow = query.read_untracked().get("flow");
    let done = query.read_untracked().get("done").is_some();
    let page = Resource::new_blocking(
        move || (flow.clone(), done),
        |(flow, done)| sign_in_link_view(flow, done),
    );
    view! {
        <Suspense fallback=|| view! { <p role="status">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match page.await {
                    Ok(LinkPageView::Step { title, account, flow_id, view, values }) => {
                        view! { <LinkStep title account flow_id view=*view values/> }.into_any()
                    }
                    Ok(LinkPageView::Done { title, account }) => view! {
                        <Title text=format!("{title} account {account} connected · Stepgate")/>
                        <section class="card" aria-labelledby="link-title">
                            <h1 id="link-title">{format!("Sign in to {title} account {account}")}</h1>
                            <p role="status" class="ok">
                                {format!("Done. {account} is connected again. You can close this page.")}
                            </p>
                        </section>
                    }
                        .into_any(),
                    Err(error) => view! { <LinkRefused error from_link=false/> }.into_any(),
                }
            })}
        </Suspense>
    }
}

#[component]
fn LinkStep(
    title: String,
    account: String,
    flow_id: Option<String>,
    view: StepView,
    values: Vec<(String, String)>,
) -> impl IntoView {
    let submit = ServerAction::<SubmitSignInLinkStep>::new();
    let error = Signal::derive(move || submit.value().get().and_then(Result::err));
    let StepView::Form {
        alert,
        intro,
        fields,
        submit: button,
        links,
        actions,
    } = view
    else {
        return view! { <p role="alert" class="error">{ErrorCode::Unknown.message()}</p> }
            .into_any();
    };
    let heading = format!("Sign in to {title} account {account}");
    // The first form says what this page is; later steps say what they ask.
    let first = flow_id.is_none();
    view! {
        <Title text=format!("{heading} · Stepgate")/>
        <section class="card" aria-labelledby="link-title">
            <h1 id="link-title">{heading}</h1>
            {first.then(|| view! {
                <p>
                    {format!(
                        "This link lets you sign the {title} account {account} in to Stepgate again, \
                         with the account's own password and the code its phone gets. It works once, \
                         for this account only."
                    )}
                </p>
            })}
            <StepNotes alert intro links/>
            <ActionForm action=submit>
                <input type="hidden" name="flow_id" value=flow_id.unwrap_or_default()/>
                <StepInputs error actions fields submit=button values/>
            </ActionForm>
        </section>
    }
    .into_any()
}

/// A link that no longer works (or a step of it that ended): the sentence, and nothing that
/// needs a Stepgate account. `from_link`: the link itself was just opened (not a later page,
/// whose ticket may have run out).
#[component]
fn LinkRefused(error: AppError, from_link: bool) -> impl IntoView {
    // A flow that ended (too long idle, too many tries) starts over while the link lives.
    let start_again = matches!(
        error.code,
        ErrorCode::FlowExpired | ErrorCode::TooManyAttempts
    );
    let ticket_gone = !from_link && error.code == ErrorCode::SignInLinkInvalid;
    view! {
        <Title text="Sign-in link · Stepgate"/>
        <section class="card" aria-labelledby="link-title">
            <h1 id="link-title">"Sign-in link"</h1>
            <div role="alert" class="error" data-code=error.code.as_str()><p>{error.message()}</p></div>
            {start_again.then(|| view! { <p><a href="/sign-in-link">"Start again"</a></p> })}
            {ticket_gone.then(|| view! {
                <p class="hint">"If you opened it more than an hour ago, open the link you were sent again."</p>
            })}
        </section>
    }
}
