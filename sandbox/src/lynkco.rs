//! A strict double of the Lynk & Co login (`shared/protocols.md` §1 and its corrections): the
//! Azure AD B2C tenant on `login.lynkco.com` (custom policy `B2C_1A_signin_mfa`: password, then
//! an SMS code, then a PKCE code for `msauth://…`) and the IAM service that trades the access
//! token for the CCC token (`POST /validate-session`), and the two connected-car services the
//! client reads the vehicle list from with `Authorization: Bearer <CCC token>`
//! (`delegated-driver-tls…/vehicle/{vin}/drivers`, `user-lifecycle-tls…/users/{userId}/
//! activevehicles`).
//!
//! The B2C machinery is [`crate::b2c`]'s; this file holds Lynk & Co's constants, accounts and
//! the other hosts. Codes "sent" by SMS land in the inbox (`GET /inbox`, `/inbox.json` on the
//! B2C host). URLs and cookies name the real origins only.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::b2c::{self, Account, Config, Tenant};
use crate::faults::Style;
use crate::hosts::Hosts;
use crate::util;

pub use crate::b2c::{InboxMessage, AUTH_CODE_LIFETIME, CODE_LIFETIME, MAX_CODE_FAILURES};

pub const B2C_ORIGIN: &str = "https://login.lynkco.com";
pub const IAM_ORIGIN: &str = "https://iam-service-prod.westeurope.cloudapp.azure.com";
/// `GET /delegated-driver/api/delegateddriver/v1/vehicle/{vin}/drivers`.
pub const DELEGATED_DRIVER_ORIGIN: &str = "https://delegated-driver-tls.aion.connectedcar.cloud";
/// `GET /user-lifecycle/api/provisioning/v1/users/{userId}/activevehicles`.
pub const USER_LIFECYCLE_ORIGIN: &str = "https://user-lifecycle-tls.aion.connectedcar.cloud";
pub const TENANT: &str = "lynkcoprod.onmicrosoft.com";
/// The refresh grant names the tenant by this ID in its path.
pub const TENANT_ID: &str = "dc6c7c0c-5ba7-414a-a7d1-d62ca1f73d13";
/// As in `p=`; paths use it lower-cased (both accepted in any case).
pub const POLICY: &str = "B2C_1A_signin_mfa";
pub const CLIENT_ID: &str = "c3e13a0c-8ba7-4ea5-9a21-ecd75830b9e9";
/// The `redirect_uri` value (percent-encoded once more inside a query string or form).
pub const REDIRECT_URI: &str =
    "msauth://prod.lynkco.app.crisp.prod/2jmj7l5rSw0yVb%2FvlWAYkK%2FYBwk%3D";
pub const SCOPE_BASE: &str = "https://lynkcoprod.onmicrosoft.com/mobile-app-web-api/mobile";

pub const DEMO_EMAIL: &str = "demo@lynkco.test";
pub const OTHER_EMAIL: &str = "other@lynkco.test";
pub const DEMO_PASSWORD: &str = "lynkco-demo";
pub const DEMO_VIN: &str = "LYVXFEDC0KL123456";
/// The demo account's connected-car user ID (`drivers[0].userId`; not the B2C `oid`).
pub const DEMO_USER_ID: &str = "c0c5a7e2-31d4-4f6b-8a9e-5d2f1b3c4a01";
pub const OTHER_VIN: &str = "LYVXFEDC0KL654321";
pub const OTHER_USER_ID: &str = "c0c5a7e2-31d4-4f6b-8a9e-5d2f1b3c4a02";

/// Who owns which car: (account email, connected-car user ID, VIN).
const GARAGE: &[(&str, &str, &str)] = &[
    (DEMO_EMAIL, DEMO_USER_ID, DEMO_VIN),
    (OTHER_EMAIL, OTHER_USER_ID, OTHER_VIN),
];

/// Default lifetime of an access token (see [`LynkcoSandbox::set_access_token_lifetime`]).
pub const ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// Default lifetime of a CCC token (see [`LynkcoSandbox::set_ccc_token_lifetime`]).
pub const CCC_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// Fault step names. login.lynkco.com: `authorize`, `self_asserted` (the password POST, and the
/// browser form's "Sign in"), `confirmed` (CombinedSigninAndSignup/confirmed, which sends the
/// SMS), `verify` (the code POST, and the browser's "Verify"), `redirect`
/// (api/SelfAsserted/confirmed), `token` (authorization_code grant), `refresh` (refresh_token
/// grant). iam-service: `validate_session`. delegated-driver: `drivers`. user-lifecycle:
/// `active_vehicles`.
pub const STEPS: &[&str] = &[
    "authorize",
    "self_asserted",
    "confirmed",
    "verify",
    "redirect",
    "token",
    "refresh",
    "validate_session",
    "drivers",
    "active_vehicles",
];

const ACCOUNTS: &[Account] = &[
    Account {
        email: DEMO_EMAIL,
        password: DEMO_PASSWORD,
        phone: "+46 *** *** 12",
        oid: "5b1f0a52-7d4e-4c1a-9e55-2f3a1c0d7e01",
        name: "Demo Driver",
    },
    Account {
        email: OTHER_EMAIL,
        password: DEMO_PASSWORD,
        phone: "+46 *** *** 34",
        oid: "8c2e1b63-9f5a-4d2b-8a66-3e4b2d1e8f02",
        name: "Other Driver",
    },
];

static CONFIG: Config = Config {
    origin: B2C_ORIGIN,
    tenant: TENANT,
    tenant_id: TENANT_ID,
    policy: POLICY,
    client_id: CLIENT_ID,
    redirect_uri: REDIRECT_URI,
    // The app's authorize scope has no `openid`; its token request does.
    required_scopes: &[],
    granted_scope: "https://lynkcoprod.onmicrosoft.com/mobile-app-web-api/mobile.read https://lynkcoprod.onmicrosoft.com/mobile-app-web-api/mobile.write",
    accounts: ACCOUNTS,
    user_field: "signInName",
    bad_password_message: "The username or password provided in the request are invalid.",
    mfa: true,
    msal: false,
    brand: "Lynk & Co",
    steps: STEPS,
    api_takes_access_tokens: false,
};

const IAM_STYLE: Style = Style {
    unavailable: (
        "{\"code\":503,\"message\":\"Service Unavailable\"}",
        "application/json",
    ),
    json_prefix: "",
};

/// The state both Lynk & Co hosts share.
#[derive(Clone)]
struct Lynkco {
    tenant: Tenant,
    ccc_lifetime: Arc<Mutex<Duration>>,
}

fn iam_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"code": status.as_u16(), "message": message})),
    )
        .into_response()
}

/// `POST /validate-session` with `X-Auth-Token: <access token>`, `api-version: 1` and
/// `{"deviceUuid": "<uuid>", "isLogin": true}`: the CCC token.
async fn validate_session(State(l): State<Lynkco>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = l.tenant.faults.check("validate_session", &IAM_STYLE).await {
        return r;
    }
    let header = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    if header("api-version") != "1" {
        return iam_error(StatusCode::BAD_REQUEST, "api-version: 1 is required");
    }
    if !header(header::CONTENT_TYPE.as_str()).starts_with("application/json") {
        return iam_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content-type must be application/json",
        );
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return iam_error(StatusCode::BAD_REQUEST, "the body is not JSON");
    };
    let device = req["deviceUuid"].as_str().unwrap_or_default();
    let uuid_like = device.len() == 36
        && device.chars().enumerate().all(|(i, c)| {
            matches!(i, 8 | 13 | 18 | 23) == (c == '-') && (c == '-' || c.is_ascii_hexdigit())
        });
    if !uuid_like || !req["isLogin"].is_boolean() {
        return iam_error(
            StatusCode::BAD_REQUEST,
            "deviceUuid (a UUID) and isLogin (a boolean) are required",
        );
    }
    let Some(account) = l.tenant.access_token_account(header("x-auth-token")) else {
        return iam_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized: invalid or expired token",
        );
    };
    let now = l.tenant.clock.now_ms() / 1000;
    let lifetime = l.ccc_lifetime.lock().expect("ccc lifetime").as_secs() as i64;
    let a = &ACCOUNTS[account];
    let jti = b2c::uuid();
    let ccc = b2c::jwt(&json!({
        "iss": IAM_ORIGIN,
        "sub": a.oid,
        "aud": "ccc",
        "iat": now,
        "exp": now + lifetime,
        "jti": jti,
        "deviceUuid": device,
        "email": a.email,
    }));
    util::record_secret(&ccc);
    // Revoking the account ends it too; the data endpoints take it until invalidated.
    l.tenant.register_token(&jti, account);
    l.tenant.api.admit(&jti);
    Json(json!({"cccToken": ccc})).into_response()
}

impl Lynkco {
    /// The account of the request's `Authorization: Bearer <CCC token>`: issued by
    /// validate-session here, not expired, not revoked, not invalidated.
    fn ccc_account(&self, headers: &HeaderMap) -> Option<usize> {
        let claims = b2c::jwt_claims(crate::api::bearer(headers)?)?;
        let jti = claims["jti"].as_str()?;
        let live = claims["aud"] == "ccc"
            && claims["iss"] == IAM_ORIGIN
            && claims["exp"].as_i64()? * 1000 > self.tenant.clock.now_ms()
            && self.tenant.api.admits(jti);
        let account = self.tenant.live_token(jti)?;
        live.then_some(account)
    }
}

fn unauthorized() -> Response {
    iam_error(
        StatusCode::UNAUTHORIZED,
        "Unauthorized: invalid or expired token",
    )
}

/// `GET /delegated-driver/api/delegateddriver/v1/vehicle/{vin}/drivers`: the car's drivers,
/// only to its owner.
async fn drivers(State(l): State<Lynkco>, Path(vin): Path<String>, headers: HeaderMap) -> Response {
    if let Some(r) = l.tenant.faults.check("drivers", &IAM_STYLE).await {
        return r;
    }
    let Some(account) = l.ccc_account(&headers) else {
        return unauthorized();
    };
    let Some(&(owner, user_id, _)) = GARAGE.iter().find(|(_, _, v)| *v == vin) else {
        return iam_error(StatusCode::NOT_FOUND, "Vehicle not found");
    };
    if owner != ACCOUNTS[account].email {
        return iam_error(
            StatusCode::FORBIDDEN,
            "Forbidden: not a driver of this vehicle",
        );
    }
    Json(json!({"drivers": [{"userId": user_id}]})).into_response()
}

/// `GET /user-lifecycle/api/provisioning/v1/users/{userId}/activevehicles`: the user's cars,
/// only to that user.
async fn active_vehicles(
    State(l): State<Lynkco>,
    Path(user_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = l.tenant.faults.check("active_vehicles", &IAM_STYLE).await {
        return r;
    }
    let Some(account) = l.ccc_account(&headers) else {
        return unauthorized();
    };
    let email = ACCOUNTS[account].email;
    let Some(&(_, own_id, _)) = GARAGE.iter().find(|(e, _, _)| *e == email) else {
        return iam_error(StatusCode::FORBIDDEN, "Forbidden");
    };
    if user_id != own_id {
        return iam_error(StatusCode::FORBIDDEN, "Forbidden: another user's vehicles");
    }
    let roles: Vec<Value> = GARAGE
        .iter()
        .filter(|(e, _, _)| *e == email)
        .map(|(_, _, vin)| json!({"vin": vin, "role": "owner"}))
        .collect();
    Json(json!({ "roles": roles })).into_response()
}

/// The Lynk & Co hosts, each served on its own port (for tests and the binary). Faults,
/// latency, `upstreams()` and the API controls come from [`Hosts`].
pub struct LynkcoSandbox {
    pub b2c_addr: std::net::SocketAddr,
    pub iam_addr: std::net::SocketAddr,
    pub delegated_driver_addr: std::net::SocketAddr,
    pub user_lifecycle_addr: std::net::SocketAddr,
    lynkco: Lynkco,
    hosts: Hosts,
}

impl std::ops::Deref for LynkcoSandbox {
    type Target = Hosts;
    fn deref(&self) -> &Hosts {
        &self.hosts
    }
}

impl LynkcoSandbox {
    /// Every host on 127.0.0.1 with ports chosen by the system.
    pub async fn spawn() -> LynkcoSandbox {
        Self::spawn_at("127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0")
            .await
            .expect("bind the Lynk & Co sandbox")
    }

    /// The hosts on the given addresses: B2C, IAM, delegated-driver, user-lifecycle.
    pub async fn spawn_at(
        b2c_addr: &str,
        iam_addr: &str,
        delegated_driver_addr: &str,
        user_lifecycle_addr: &str,
    ) -> std::io::Result<LynkcoSandbox> {
        let lynkco = Lynkco {
            tenant: Tenant::new(&CONFIG, ACCESS_TOKEN_LIFETIME),
            ccc_lifetime: Arc::new(Mutex::new(CCC_TOKEN_LIFETIME)),
        };
        let faults = lynkco.tenant.faults.clone();
        let desk = lynkco.tenant.api.clone();
        let iam = Router::new()
            .route("/validate-session", post(validate_session))
            .with_state(lynkco.clone())
            .merge(crate::faults::routes(faults.clone()));
        let delegated_driver = Router::new()
            .route(
                "/delegated-driver/api/delegateddriver/v1/vehicle/{vin}/drivers",
                get(drivers),
            )
            .with_state(lynkco.clone())
            .merge(crate::faults::routes(faults.clone()));
        let user_lifecycle = Router::new()
            .route(
                "/user-lifecycle/api/provisioning/v1/users/{user_id}/activevehicles",
                get(active_vehicles),
            )
            .with_state(lynkco.clone())
            .merge(crate::faults::routes(faults.clone()));
        let hosts = Hosts::serve(
            faults,
            desk.clone(),
            vec![
                (B2C_ORIGIN, b2c_addr, b2c::router(lynkco.tenant.clone())),
                (IAM_ORIGIN, iam_addr, iam),
                (
                    DELEGATED_DRIVER_ORIGIN,
                    delegated_driver_addr,
                    crate::api::recorded(
                        delegated_driver,
                        DELEGATED_DRIVER_ORIGIN,
                        desk.clone(),
                        |_| true,
                    ),
                ),
                (
                    USER_LIFECYCLE_ORIGIN,
                    user_lifecycle_addr,
                    crate::api::recorded(user_lifecycle, USER_LIFECYCLE_ORIGIN, desk, |_| true),
                ),
            ],
        )
        .await?;
        Ok(LynkcoSandbox {
            b2c_addr: hosts.addr_of(B2C_ORIGIN),
            iam_addr: hosts.addr_of(IAM_ORIGIN),
            delegated_driver_addr: hosts.addr_of(DELEGATED_DRIVER_ORIGIN),
            user_lifecycle_addr: hosts.addr_of(USER_LIFECYCLE_ORIGIN),
            lynkco,
            hosts,
        })
    }

    /// The newest SMS code sent for `email`.
    pub fn latest_code(&self, email: &str) -> Option<String> {
        self.lynkco.tenant.latest_code(email)
    }

    /// Every SMS sent so far, newest first.
    pub fn inbox(&self) -> Vec<InboxMessage> {
        self.lynkco.tenant.inbox()
    }

    /// Moves the double's clock forward (SMS codes, auth codes and tokens expire).
    pub fn advance_clock(&self, by: Duration) {
        self.lynkco.tenant.clock.advance(by);
    }

    /// Every refresh, access and CCC token of `email` stops working (as when the user signs
    /// out everywhere or changes the password).
    pub fn revoke(&self, email: &str) {
        self.lynkco.tenant.revoke(email);
    }

    /// Refresh grants received so far (faulty answers included).
    pub fn refreshes(&self) -> usize {
        self.lynkco.tenant.refreshes()
    }

    /// How many routing hops B2C answered at steps ending with `step` (see `b2c`).
    pub fn routing_hops(&self, step: &str) -> usize {
        self.lynkco.tenant.routing_hops(step)
    }

    /// Lifetime of access tokens issued from now on.
    pub fn set_access_token_lifetime(&self, lifetime: Duration) {
        self.lynkco.tenant.set_access_token_lifetime(lifetime);
    }

    /// Lifetime of CCC tokens issued from now on.
    pub fn set_ccc_token_lifetime(&self, lifetime: Duration) {
        *self.lynkco.ccc_lifetime.lock().expect("ccc lifetime") = lifetime;
    }
}
