use leptos::prelude::*;

/// A labelled input. The label is the field's accessible name, which tests use.
#[component]
pub fn Field(
    /// The visible label and accessible name.
    label: &'static str,
    /// The form field name: it must match the server function's argument.
    name: &'static str,
    #[prop(default = "text")] kind: &'static str,
    #[prop(default = "off")] autocomplete: &'static str,
    #[prop(optional)] minlength: Option<u32>,
    /// What the field holds when the page is shown (the server echoes a refused form's email).
    #[prop(optional)]
    value: Option<String>,
) -> impl IntoView {
    let id = format!("field-{name}");
    view! {
        <div class="field">
            <label for=id.clone()>{label}</label>
            <input
                id=id
                name=name
                type=kind
                autocomplete=autocomplete
                required=true
                maxlength="1024"
                minlength=minlength.map(|n| n.to_string())
                value=value
            />
        </div>
    }
}
