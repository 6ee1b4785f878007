//! A strict double of the FlameConnect login (`shared/protocols.md` §2 and its corrections):
//! the Azure AD B2C tenant `gdhvb2cflameconnect` as MSAL and the `flameconnect` client use it:
//! tenant discovery, the authorize page (`SETTINGS` with `csrf` and `transId`), the password
//! POST (field `email`), `confirmed` → a same-origin hop → `msal…://auth/?state=…&code=…`, and
//! the token endpoint (PKCE; an `id_token` carrying the authorize `nonce`). No MFA.
//!
//! The B2C machinery is [`crate::b2c`]'s. URLs and cookies name the real origin only.

use std::time::Duration;

use crate::b2c::{self, Account, Config, Tenant};
use crate::hosts::Hosts;

pub use crate::b2c::AUTH_CODE_LIFETIME;

pub const ORIGIN: &str = "https://gdhvb2cflameconnect.b2clogin.com";
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
/// confirmed and the hop after it), `token` (authorization_code grant), `refresh`.
pub const STEPS: &[&str] = &[
    "discovery",
    "authorize",
    "self_asserted",
    "confirmed",
    "token",
    "refresh",
];

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
};

/// The FlameConnect B2C host, served on its own port (for tests and the binary). Faults,
/// latency and `upstreams()` come from [`Hosts`].
pub struct FlameConnectSandbox {
    pub addr: std::net::SocketAddr,
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
    /// On 127.0.0.1 with a port chosen by the system.
    pub async fn spawn() -> FlameConnectSandbox {
        Self::spawn_at("127.0.0.1:0")
            .await
            .expect("bind the FlameConnect sandbox")
    }

    pub async fn spawn_at(addr: &str) -> std::io::Result<FlameConnectSandbox> {
        let tenant = Tenant::new(&CONFIG, ACCESS_TOKEN_LIFETIME);
        let hosts = Hosts::serve(
            tenant.faults.clone(),
            vec![(ORIGIN, addr, b2c::router(tenant.clone()))],
        )
        .await?;
        Ok(FlameConnectSandbox {
            addr: hosts.addr_of(ORIGIN),
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
