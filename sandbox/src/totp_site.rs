//! A stand-in for the web TOTP provider ("simple-totp" dashboard) that Stepgate deep-links to.
//! It keeps its own seeds (in memory, saved to a JSON file so the demo survives restarts) and
//! serves the three deep links of `shared/seeds/totp-popup-seedid-login.md`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha1::Sha1;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Seed {
    id: String,
    service: String,
    account: String,
    /// Base32, as the provider hands it out.
    secret: String,
    digits: u8,
}

#[derive(Clone)]
pub struct Provider {
    /// Where `postMessage` may deliver codes, and the only origin callbacks may point at.
    app_origin: String,
    seeds: Arc<Mutex<Vec<Seed>>>,
    file: Option<PathBuf>,
}

impl Provider {
    pub fn new(app_origin: String, file: Option<PathBuf>) -> Self {
        let seeds = file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default();
        Self {
            app_origin: app_origin.trim_end_matches('/').to_owned(),
            seeds: Arc::new(Mutex::new(seeds)),
            file,
        }
    }

    fn add(&self, service: &str, account: &str, secret: String, digits: u8) -> Seed {
        let mut id = [0u8; 9];
        rand::rngs::OsRng.fill_bytes(&mut id);
        let seed = Seed {
            id: format!("seed_{}", hex::encode(id)),
            service: service.to_owned(),
            account: account.to_owned(),
            secret,
            digits,
        };
        let mut seeds = self.seeds.lock().expect("seed list");
        seeds.push(seed.clone());
        if let Some(file) = &self.file {
            if let Ok(text) = serde_json::to_string_pretty(&*seeds) {
                let _ = std::fs::write(file, text);
            }
        }
        seed
    }

    fn find(&self, query: &HashMap<String, String>) -> Option<Seed> {
        let seeds = self.seeds.lock().expect("seed list");
        if let Some(id) = query.get("seedId") {
            return seeds.iter().find(|s| &s.id == id).cloned();
        }
        let (service, account) = (query.get("serviceName")?, query.get("accountIdentifier")?);
        // The newest seed wins, as a user who re-enrolled expects.
        seeds
            .iter()
            .rev()
            .find(|s| &s.service == service && s.account.eq_ignore_ascii_case(account))
            .cloned()
    }
}

pub fn router(provider: Provider) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async {
                page(
                    "Simple TOTP (sandbox)",
                    "<p>A simulated web TOTP provider for Stepgate.</p>",
                )
            }),
        )
        .route("/dashboard/simple-totp", get(dashboard))
        .route("/dashboard/simple-totp/add", post(add))
        .route("/testing/seeds", post(import_seed))
        .with_state(provider)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// RFC 6238 with SHA-1 and 30 s steps, written independently of Stepgate's engine on purpose.
fn totp(secret_base32: &str, unix: u64, digits: u8) -> Option<String> {
    let key = data_encoding::BASE32_NOPAD
        .decode(secret_base32.trim_end_matches('=').as_bytes())
        .ok()?;
    let mut mac = Hmac::<Sha1>::new_from_slice(&key).ok()?;
    mac.update(&(unix / 30).to_be_bytes());
    let h = mac.finalize().into_bytes();
    let o = (h[19] & 0xf) as usize;
    let n =
        u32::from_be_bytes([h[o] & 0x7f, h[o + 1], h[o + 2], h[o + 3]]) % 10u32.pow(digits.into());
    Some(format!("{n:0width$}", width = digits as usize))
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{t} · Simple TOTP (sandbox)</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;margin:2rem;color:#222}} .code{{font:700 2.4rem ui-monospace,monospace;letter-spacing:.2em}}
button{{font:inherit;padding:.5rem 1rem;margin-right:.5rem}}</style></head>
<body><main><h1>{t}</h1>{body}</main></body></html>"#,
        t = esc(title)
    ))
}

async fn dashboard(
    State(p): State<Provider>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if q.get("action").map(String::as_str) == Some("add") {
        return add_page(&p, &q).into_response();
    }
    let Some(seed) = p.find(&q) else {
        return (
            StatusCode::NOT_FOUND,
            page(
                "No such seed",
                "<p role=\"alert\">This provider holds no seed for that link.</p>",
            ),
        )
            .into_response();
    };
    let t = now();
    let code = totp(&seed.secret, t, seed.digits).unwrap_or_default();
    let left = 30 - t % 30;
    page(
        "Your code",
        &format!(
            r#"<p>{service} · {account}</p>
<p class="code" id="code" aria-label="Current code">{code}</p>
<p>Seconds left: <span id="left">{left}</span></p>
<button id="send" type="button">Send code to Stepgate</button>
<p id="status" role="status"></p>
<script>
  const code = "{code}";
  const target = {origin};
  document.getElementById("send").addEventListener("click", () => {{
    const status = document.getElementById("status");
    if (!window.opener) {{ status.textContent = "Stepgate is not listening here: type the code into Stepgate."; return; }}
    window.opener.postMessage({{ type: "stepgate.totp", code }}, target);
    status.textContent = "Code sent to Stepgate.";
  }});
  let left = {left};
  setInterval(() => {{ left -= 1; if (left <= 0) location.reload(); else document.getElementById("left").textContent = left; }}, 1000);
</script>"#,
            service = esc(&seed.service),
            account = esc(&seed.account),
            origin = serde_json::to_string(&p.app_origin).unwrap_or_default(),
        ),
    )
    .into_response()
}

fn add_page(p: &Provider, q: &HashMap<String, String>) -> Response {
    let field = |k: &str| esc(q.get(k).map(String::as_str).unwrap_or_default());
    if !callback_allowed(p, q.get("callback").map(String::as_str).unwrap_or_default()) {
        return (
            StatusCode::BAD_REQUEST,
            page(
                "Refused",
                "<p role=\"alert\">That callback is not allowed.</p>",
            ),
        )
            .into_response();
    }
    page(
        "Add a seed",
        &format!(
            r#"<p>Add <strong>{service}</strong> for <strong>{account}</strong> to Simple TOTP?</p>
<form method="post" action="/dashboard/simple-totp/add">
<input type="hidden" name="service" value="{service}"><input type="hidden" name="account" value="{account}">
<input type="hidden" name="callback" value="{callback}"><input type="hidden" name="regToken" value="{reg}">
<input type="hidden" name="digits" value="{digits}">
<button name="decision" value="add">Add to Simple TOTP</button>
<button name="decision" value="cancel">Cancel</button>
</form>"#,
            service = field("service"),
            account = field("account"),
            callback = field("callback"),
            reg = field("regToken"),
            digits = field("digits"),
        ),
    )
    .into_response()
}

fn callback_allowed(p: &Provider, callback: &str) -> bool {
    callback.starts_with(&format!("{}/", p.app_origin))
}

#[derive(Deserialize)]
struct AddForm {
    service: String,
    account: String,
    callback: String,
    #[serde(rename = "regToken")]
    reg_token: String,
    digits: Option<String>,
    decision: String,
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn add(State(p): State<Provider>, Form(form): Form<AddForm>) -> Response {
    if !callback_allowed(&p, &form.callback) {
        return (StatusCode::BAD_REQUEST, "callback not allowed").into_response();
    }
    let separator = if form.callback.contains('?') {
        '&'
    } else {
        '?'
    };
    if form.decision != "add" {
        let url = format!(
            "{}{separator}success=false&error=user_cancelled&regToken={}",
            form.callback,
            encode(&form.reg_token)
        );
        return Redirect::to(&url).into_response();
    }
    let digits = if form.digits.as_deref() == Some("8") {
        8
    } else {
        6
    };
    let mut secret = [0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let seed = p.add(
        &form.service,
        &form.account,
        data_encoding::BASE32_NOPAD.encode(&secret),
        digits,
    );
    let t = now();
    let code = totp(&seed.secret, t, digits).unwrap_or_default();
    let url = format!(
        "{}{separator}success=true&seedId={}&seed={}&code={code}&regToken={}&timestamp={t}",
        form.callback,
        encode(&seed.id),
        encode(&seed.secret),
        encode(&form.reg_token)
    );
    Redirect::to(&url).into_response()
}

#[derive(Deserialize)]
struct ImportSeed {
    service: String,
    account: String,
    secret: String,
    digits: Option<u8>,
}

/// Test hook: puts a seed the user "already has" into the provider, as if added elsewhere.
async fn import_seed(
    State(p): State<Provider>,
    Json(seed): Json<ImportSeed>,
) -> Json<serde_json::Value> {
    let seed = p.add(
        &seed.service,
        &seed.account,
        seed.secret.to_uppercase(),
        seed.digits.unwrap_or(6),
    );
    Json(serde_json::json!({ "seedId": seed.id }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sandbox_computes_the_rfc_6238_vectors_too() {
        // "12345678901234567890" in base32.
        let secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
        assert_eq!(totp(secret, 59, 8).unwrap(), "94287082");
        assert_eq!(totp(secret, 1_111_111_109, 8).unwrap(), "07081804");
    }

    #[test]
    fn callbacks_must_point_at_the_app() {
        let p = Provider::new("http://127.0.0.1:3000".into(), None);
        assert!(callback_allowed(
            &p,
            "http://127.0.0.1:3000/settings/security/totp-callback"
        ));
        assert!(!callback_allowed(&p, "http://127.0.0.1:3000.evil.test/x"));
        assert!(!callback_allowed(&p, "https://evil.test/"));
    }
}
