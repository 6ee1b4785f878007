use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::Redirect;
use leptos_router::hooks::{use_params_map, use_query_map};

use crate::accounts::{connect_step, connectable_providers, ConnectStepView, SubmitConnectStep};
use crate::components::{StepInputs, StepNotes};
use crate::error::AppError;
use engine::view::StepView;
use engine::ErrorCode;

/// `/accounts/connect`: one link per provider.
#[component]
pub fn ConnectPickerPage() -> impl IntoView {
    let providers = Resource::new_blocking(|| (), |_| connectable_providers());
    view! {
        <Title text="Connect an account · Stepgate"/>
        <section class="card" aria-labelledby="picker-title">
            <h1 id="picker-title">"Connect an account"</h1>
            <Suspense fallback=|| view! { <p role="status">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match providers.await {
                        Ok(providers) => view! {
                            <ul class="providers">
                                {providers
                                    .into_iter()
                                    .map(|p| view! {
                                        <li><a class="button" href=format!("/accounts/connect/{}", p.name)>{p.title}</a></li>
                                    })
                                    .collect_view()}
                            </ul>
                        }
                            .into_any(),
                        Err(AppError { code: ErrorCode::NotSignedIn, .. }) => {
                            view! { <Redirect path="/login"/> }.into_any()
                        }
                        Err(e) => view! { <p role="alert" class="error">{e.message()}</p> }.into_any(),
                    }
                })}
            </Suspense>
            <p class="aside"><a href="/accounts">"Back to connected accounts"</a></p>
        </section>
    }
}

/// `/accounts/connect/{provider}[?flow=…]`: the step a provider's flow waits at, rendered from
/// the fields the provider declares. A plain form: `public/forms.js` shows the busy state, and
/// a refused step comes back with its error next to the field it is about.
#[component]
pub fn ConnectPage() -> impl IntoView {
    let params = use_params_map();
    let query = use_query_map();
    let provider = params.read_untracked().get("provider").unwrap_or_default();
    let flow = query.read_untracked().get("flow");
    let reauth: Option<i64> = query
        .read_untracked()
        .get("reauth")
        .and_then(|v| v.parse().ok());
    let step = Resource::new_blocking(
        move || (provider.clone(), flow.clone(), reauth),
        |(provider, flow, reauth)| connect_step(provider, flow, reauth),
    );
    view! {
        <Suspense fallback=|| view! { <p role="status">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match step.await {
                    Ok(step) => view! { <StepForm step/> }.into_any(),
                    Err(AppError { code: ErrorCode::NotSignedIn, .. }) => {
                        view! { <Redirect path="/login"/> }.into_any()
                    }
                    Err(e) => view! {
                        <Title text="Connect an account · Stepgate"/>
                        <section class="card">
                            <h1>"Connect an account"</h1>
                            <div role="alert" class="error"><p>{e.message()}</p></div>
                            <p><a href="/accounts/connect">"Start again"</a></p>
                        </section>
                    }
                        .into_any(),
                }
            })}
        </Suspense>
    }
}

#[component]
fn StepForm(step: ConnectStepView) -> impl IntoView {
    let submit = ServerAction::<SubmitConnectStep>::new();
    let error = Signal::derive(move || submit.value().get().and_then(Result::err));
    let StepView::Form {
        alert,
        intro,
        fields,
        submit: button,
        links,
        actions,
    } = step.view.clone()
    else {
        return view! { <p role="alert" class="error">{ErrorCode::Unknown.message()}</p> }
            .into_any();
    };
    let heading = match &step.reauth {
        Some(_) => format!("Sign in to {} again", step.title),
        None => format!("Connect {}", step.title),
    };
    let reauth_note = step.reauth.as_ref().map(|(_, name)| {
        format!("{} stopped accepting Stepgate's sign-in for {name}. Sign in to the same account again; its apps keep working.", step.title)
    });
    view! {
        <Title text=format!("{heading} · Stepgate")/>
        <section class="card" aria-labelledby="connect-title">
            <h1 id="connect-title">{heading}</h1>
            {reauth_note.map(|text| view! { <p>{text}</p> })}
            <StepNotes alert intro links/>
            <ActionForm action=submit>
                <input type="hidden" name="provider" value=step.provider.clone()/>
                <input type="hidden" name="flow_id" value=step.flow_id.clone().unwrap_or_default()/>
                {step.reauth.as_ref().map(|(id, _)| view! { <input type="hidden" name="reauth" value=id.to_string()/> })}
                <StepInputs error actions fields submit=button values=step.values.clone()/>
            </ActionForm>
            <p class="aside"><a href="/accounts">"Cancel"</a></p>
        </section>
    }
    .into_any()
}
