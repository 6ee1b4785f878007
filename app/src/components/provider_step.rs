use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

use crate::components::ErrorBanner;
use crate::error::AppError;
use engine::view::{ActionSpec, FieldKind, FieldSpec, LinkSpec, Submit};

/// What a provider's step says above its form: why it replaced the expected step (announced at
/// once), what it is (e.g. that a code was sent), and the links it offers. The connect page and
/// a sign-in link's page both show it.
#[component]
pub fn StepNotes(
    alert: Option<String>,
    intro: Option<String>,
    links: Vec<LinkSpec>,
) -> impl IntoView {
    view! {
        // Why this step replaced the expected one: announced at once, not only written.
        {alert.map(|text| view! { <div role="alert" class="notice"><p>{text}</p></div> })}
        {intro.map(|text| view! { <p>{text}</p> })}
        {(!links.is_empty()).then(|| view! {
            <ul class="links">
                {links
                    .into_iter()
                    .map(|link| view! {
                        <li><a href=link.url target="_blank" rel="noopener noreferrer">{link.label}</a></li>
                    })
                    .collect_view()}
            </ul>
        })}
    }
}

/// The inside of a provider step's form, after the page's own hidden fields: the refusal, the
/// step's other buttons, the fields the provider declared (holding what was typed before a
/// refusal, else `values`) and the submit button.
#[component]
pub fn StepInputs(
    #[prop(into)] error: Signal<Option<AppError>>,
    actions: Vec<ActionSpec>,
    fields: Vec<FieldSpec>,
    submit: Submit,
    /// What the fields start with (a reauth's account name).
    values: Vec<(String, String)>,
) -> impl IntoView {
    let query = use_query_map();
    // What the user typed before a refusal, else what the step starts with.
    let echoed = move |name: &str| {
        query
            .read_untracked()
            .get(&format!("value.{name}"))
            .or_else(|| {
                values
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
            })
    };
    let field_error = move |name: &str| {
        error
            .get_untracked()
            .filter(|e| e.field.as_deref() == Some(name))
            .is_some()
    };
    let busy = submit.busy_label();
    let label = submit.label().to_owned();
    view! {
        <ErrorBanner error/>
        {(!actions.is_empty()).then(|| view! {
            <div class="actions">
                {actions
                    .into_iter()
                    .map(|action| {
                        let busy = format!("{}…", action.label);
                        view! {
                            // Its own submit: the fields below need not be filled in.
                            <button
                                type="submit"
                                class="secondary"
                                name=format!("fields[{}]", action.name)
                                value=action.value
                                formnovalidate=true
                                data-busy=busy
                            >
                                {action.label}
                            </button>
                        }
                    })
                    .collect_view()}
            </div>
        })}
        {fields
            .into_iter()
            .map(|field| {
                let invalid = field_error(&field.name);
                let value = echoed(&field.name);
                view! { <StepField field invalid value/> }
            })
            .collect_view()}
        <button type="submit" data-busy=busy>{label}</button>
    }
}

/// One field a provider declared.
#[component]
fn StepField(field: FieldSpec, invalid: bool, value: Option<String>) -> impl IntoView {
    let id = format!("field-{}", field.name);
    let hint_id = format!("{id}-hint");
    let (kind, inputmode) = match field.kind {
        FieldKind::Text => ("text", None),
        FieldKind::Email => ("email", None),
        FieldKind::Password => ("password", None),
        FieldKind::Code => ("text", Some("numeric")),
        // Not `type=url`: the browser's check would hide the provider's specific message (a
        // cut-off paste, another host) behind a generic one.
        FieldKind::Url => ("text", Some("url")),
    };
    let described = field.hint.is_some().then(|| hint_id.clone());
    view! {
        <div class="field">
            <label for=id.clone()>{field.label.clone()}</label>
            <input
                id=id
                name=format!("fields[{}]", field.name)
                type=kind
                inputmode=inputmode
                autocomplete=field.autocomplete.clone()
                required=true
                maxlength="1024"
                aria-invalid=invalid.then_some("true")
                aria-describedby=described
                value=value.unwrap_or_default()
            />
            {field.hint.map(|hint| view! { <p id=hint_id class="hint">{hint}</p> })}
        </div>
    }
}

/// A refused step of a plain form post goes back to its page (`page`, with `query`): the error,
/// and the fields that are not secrets, so nothing typed is lost but what must be typed again.
#[cfg(feature = "ssr")]
pub fn back_to_step<F: leptos::server_fn::ServerFn>(
    page: &str,
    mut query: Vec<(String, String)>,
    fields: &std::collections::HashMap<String, String>,
    shown: &[FieldSpec],
    error: AppError,
) {
    for (name, value) in fields {
        // Only what the page shows again, and never a secret (passwords, codes, URLs that
        // carry one: `FieldSpec::secret`): those are typed again.
        let echoed = shown.iter().any(|f| f.name == *name && !f.secret);
        if echoed && value.len() <= 512 {
            query.push((format!("value.{name}"), value.clone()));
        }
    }
    let query: Vec<(&str, &str)> = query
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    crate::api::ssr::back_to_form_with::<F>(page, &query, error);
}
