//! A strict double of the FlameConnect login (`shared/protocols.md` §2 and its corrections):
//! the Azure AD B2C tenant `gdhvb2cflameconnect` as MSAL and the `flameconnect` client use it:
//! tenant discovery, the authorize page (`SETTINGS` with `csrf` and `transId`), the password
//! POST (field `email`), `confirmed` → a same-origin hop → `msal…://auth/?state=…&code=…`, and
//! the token endpoint (PKCE; an `id_token` carrying the authorize `nonce`). No MFA.
//!
//! Beside it, the FlameConnect API (`mobileapi.gdhv-iot.com`): `GET /api/Fires/GetFires` with
//! `Authorization: Bearer <access token>` lists the user's fires, as the `flameconnect` client
//! reads them; any other token gets ASP.NET's 401.
//!
//! The B2C machinery is [`crate::b2c`]'s. URLs and cookies name the real origin only.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use crate::b2c::{self, Account, Config, Tenant};
use crate::faults::Style;
use crate::hosts::Hosts;

pub use crate::b2c::AUTH_CODE_LIFETIME;

pub const ORIGIN: &str = "https://gdhvb2cflameconnect.b2clogin.com";
/// The FlameConnect API.
pub const API_ORIGIN: &str = "https://mobileapi.gdhv-iot.com";
pub const TENANT: &str = "gdhvb2cflameconnect.onmicrosoft.com";
/// Mixed case, as MSAL's authority and `p=` name it; B2C's own links lower-case it.
pub const POLICY: &str = "B2C_1A_FirePhoneSignUpOrSignInWithPhoneOrEmail";
pub const CLIENT_ID: &str = "1af761dc-085a-411f-9cb9-53e5e2115bd2";
pub const REDIRECT_URI: &str = "msal1af761dc-085a-411f-9cb9-53e5e2115bd2://auth";
pub const SCOPE: &str = "https://gdhvb2cflameconnect.onmicrosoft.com/Mobile/read";

pub const DEMO_EMAIL: &str = "demo@flameconnect.test";
pub const OTHER_EMAIL: &str = "other@flameconnect.test";
pub const DEMO_PASSWORD: &str = "flame-demo";

/// Default lifetime of an access token (see [`FlameConnectSandbox::set_access_token_lifetime`]).
pub const ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// Fault step names: `discovery` (openid-configuration), `authorize`, `self_asserted` (the
/// password POST, and the browser form's "Sign in"), `confirmed` (CombinedSigninAndSignup/
/// confirmed and the hop after it), `token` (authorization_code grant), `refresh`. The API:
/// `fires` (GetFires).
pub const STEPS: &[&str] = &[
    "discovery",
    "authorize",
    "self_asserted",
    "confirmed",
    "token",
    "refresh",
    "fires",
];

/// The body of the API's 401 (ASP.NET Web API's own words).
pub const API_DENIED: &str = "Authorization has been denied for this request.";

/// The tenant's ID, as in the issuer (the double's own value).
const TENANT_ID: &str = "0b1c6a5e-6f1d-4a53-9d4f-6a1b2c3d4e5f";

const ACCOUNTS: &[Account] = &[
    Account {
        email: DEMO_EMAIL,
        password: DEMO_PASSWORD,
        phone: "",
        oid: "3f6c2a14-1b7e-4f0d-a5c3-7d8e9f0a1b21",
        name: "Demo Fireside",
    },
    Account {
        email: OTHER_EMAIL,
        password: DEMO_PASSWORD,
        phone: "",
        oid: "9a4d3b25-2c8f-4e1a-b6d4-8e9f0a1b2c32",
        name: "Other Fireside",
    },
];

static CONFIG: Config = Config {
    origin: ORIGIN,
    tenant: TENANT,
    tenant_id: TENANT_ID,
    policy: POLICY,
    client_id: CLIENT_ID,
    redirect_uri: REDIRECT_URI,
    required_scopes: &[SCOPE, "openid"],
    granted_scope: SCOPE,
    accounts: ACCOUNTS,
    user_field: "email",
    bad_password_message: "Invalid username or password.",
    mfa: false,
    msal: true,
    brand: "FlameConnect",
    steps: STEPS,
    api_takes_access_tokens: true,
};

const API_STYLE: Style = Style {
    unavailable: (
        "{\"Message\":\"The service is unavailable.\"}",
        "application/json; charset=utf-8",
    ),
    json_prefix: "",
};

/// Each account's fires, in `GetFires`' shape (every field `flameconnect` reads).
fn fires_of(account: usize) -> Value {
    let fire = |id: &str, name: &str, brand: &str, product: &str, model: &str, state: u8| {
        json!({
            "FireId": id,
            "FriendlyName": name,
            "Brand": brand,
            "ProductType": product,
            "ProductModel": model,
            "ItemCode": "SBX-0001",
            "IoTConnectionState": state,
            "WithHeat": true,
            "IsIotFire": true,
        })
    };
    match ACCOUNTS[account].email {
        DEMO_EMAIL => json!([
            fire(
                "sbx-fire-0001",
                "Living room",
                "Dimplex",
                "Bold Ignite XL",
                "BIX-50",
                2
            ),
            fire(
                "sbx-fire-0002",
                "Bedroom",
                "Faber",
                "e-MatriX",
                "EMX-800",
                1
            ),
        ]),
        _ => json!([fire(
            "sbx-fire-0101",
            "Study",
            "Dimplex",
            "Optiflame",
            "OPF-30",
            2
        )]),
    }
}

fn api_denied() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::CONTENT_TYPE, "application/json; charset=utf-8"),
            (header::WWW_AUTHENTICATE, "Bearer"),
        ],
        json!({"Message": API_DENIED}).to_string(),
    )
        .into_response()
}

/// `GET /api/Fires/GetFires` with `Authorization: Bearer <access token>`: a live access token
/// of this tenant (signed, not expired, not revoked) that the data endpoints still take.
async fn get_fires(State(t): State<Tenant>, headers: HeaderMap) -> Response {
    if let Some(r) = t.faults.check("fires", &API_STYLE).await {
        return r;
    }
    let account = crate::api::bearer(&headers).and_then(|token| {
        let account = t.access_token_account(token)?;
        let claims = b2c::jwt_claims(token)?;
        t.api.admits(claims["jti"].as_str()?).then_some(account)
    });
    match account {
        Some(account) => (
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            fires_of(account).to_string(),
        )
            .into_response(),
        None => api_denied(),
    }
}

/// The router of mobileapi.gdhv-iot.com (every request recorded).
fn api_router(tenant: Tenant) -> Router {
    let (faults, desk) = (tenant.faults.clone(), tenant.api.clone());
    let router = Router::new()
        .route("/api/Fires/GetFires", get(get_fires))
        .with_state(tenant)
        .merge(crate::faults::routes(faults));
    crate::api::recorded(router, API_ORIGIN, desk, |_| true)
}

/// The FlameConnect B2C host and API host, each served on its own port (for tests and the
/// binary). Faults, latency, `upstreams()` and the API controls come from [`Hosts`].
pub struct FlameConnectSandbox {
    pub addr: std::net::SocketAddr,
    pub api_addr: std::net::SocketAddr,
    tenant: Tenant,
    hosts: Hosts,
}

impl std::ops::Deref for FlameConnectSandbox {
    type Target = Hosts;
    fn deref(&self) -> &Hosts {
        &self.hosts
    }
}

impl FlameConnectSandbox {
    /// Both hosts on 127.0.0.1 with ports chosen by the system.
    pub async fn spawn() -> FlameConnectSandbox {
        Self::spawn_at("127.0.0.1:0", "127.0.0.1:0")
            .await
            .expect("bind the FlameConnect sandbox")
    }

    /// The B2C host on `addr`, the API on `api_addr`.
    pub async fn spawn_at(addr: &str, api_addr: &str) -> std::io::Result<FlameConnectSandbox> {
        let tenant = Tenant::new(&CONFIG, ACCESS_TOKEN_LIFETIME);
        let hosts = Hosts::serve(
            tenant.faults.clone(),
            tenant.api.clone(),
            vec![
                (ORIGIN, addr, b2c::router(tenant.clone())),
                (API_ORIGIN, api_addr, api_router(tenant.clone())),
            ],
        )
        .await?;
        Ok(FlameConnectSandbox {
            addr: hosts.addr_of(ORIGIN),
            api_addr: hosts.addr_of(API_ORIGIN),
            tenant,
            hosts,
        })
    }

    /// Moves the double's clock forward (auth codes and tokens expire).
    pub fn advance_clock(&self, by: Duration) {
        self.tenant.clock.advance(by);
    }

    /// Every refresh and access token of `email` stops working.
    pub fn revoke(&self, email: &str) {
        self.tenant.revoke(email);
    }

    /// Refresh grants received so far (faulty answers included).
    pub fn refreshes(&self) -> usize {
        self.tenant.refreshes()
    }

    /// How many routing hops B2C answered at steps ending with `step` (see `b2c`).
    pub fn routing_hops(&self, step: &str) -> usize {
        self.tenant.routing_hops(step)
    }

    /// Lifetime of access tokens issued from now on.
    pub fn set_access_token_lifetime(&self, lifetime: Duration) {
        self.tenant.set_access_token_lifetime(lifetime);
    }
}
