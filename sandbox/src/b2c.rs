//! One simulated Azure AD B2C tenant with a custom sign-in policy: what the Lynk & Co and
//! FlameConnect doubles share (`shared/protocols.md` §1, §2 and their corrections).
//!
//! A login is a *transaction*, born at `authorize` (cookies `x-ms-cpim-csrf` and
//! `x-ms-cpim-trans`, page `SETTINGS` with `csrf` and `transId`). Every later step must bring
//! both cookies back unquoted, the csrf (header, query or hidden field) equal to the cookie, and a
//! `tx` naming this transaction (`StateProperties=` + the trans cookie, or the page's `transId`).
//! The end is a 302 to the app's custom scheme with a one-time code, redeemed at the token
//! endpoint with the PKCE verifier. A tenant with `mfa` sends an SMS code (into its inbox) after
//! the password. Tokens are HS256 JWTs signed with a random per-process key.
//!
//! Like the real service behind its front door, the tenant answers its GET steps with a routing
//! hop on its own host first: `authorize` redirects to itself with a routing ticket `rt` (named
//! by the address the client used, so a browser stays on the double and a client must map the
//! double's address back to the real origin), and both `…/confirmed` steps redirect to
//! themselves with a ticket bound to the transaction (named with the real origin, as B2C writes
//! its links). A client that does not follow redirects on B2C's own host never gets past them;
//! every real client (MSAL, aiohttp, requests) does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::api::ApiDesk;
use crate::faults::{Faults, Style};
use crate::util::{self, Clock};

/// How long a sent SMS code is accepted.
pub const CODE_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// How long an authorization code (the `code=` of the final redirect) is accepted, once.
pub const AUTH_CODE_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// How long a sign-in transaction (from `authorize` to the final redirect) lives.
pub const TRANSACTION_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// How long a refresh token is said to live (`refresh_token_expires_in`, B2C's default).
pub const REFRESH_TOKEN_LIFETIME: Duration = Duration::from_secs(14 * 24 * 3600);
/// Wrong SMS codes after which the transaction is void.
pub const MAX_CODE_FAILURES: u32 = 5;

/// The `status` of a wrong SMS code.
pub const WRONG_CODE: &str = "UserMessageIfVerificationFailedRetryAllowed";
/// The `status` of an expired SMS code.
pub const EXPIRED_CODE: &str = "UserMessageIfVerificationCodeExpired";
/// The `status` once [`MAX_CODE_FAILURES`] wrong codes were given.
pub const TOO_MANY_CODES: &str = "UserMessageIfMaxRetryAttempted";
/// The `errorCode` of a wrong email or password.
pub const BAD_CREDENTIALS: &str = "AADB2C90053";
/// The `errorCode` of a csrf, cookie or `tx` that does not match the transaction.
pub const MALFORMED: &str = "AADB2C90240";

const STYLE: Style = Style {
    unavailable: (
        "<!DOCTYPE html><html><head><title>Service unavailable</title></head><body><h1>Service Unavailable</h1><p>HTTP Error 503. The service is unavailable.</p></body></html>",
        "text/html; charset=utf-8",
    ),
    json_prefix: "",
};

/// A demo account of a tenant.
pub(crate) struct Account {
    pub email: &'static str,
    pub password: &'static str,
    /// Masked, as the MFA page and the inbox show it.
    pub phone: &'static str,
    pub oid: &'static str,
    pub name: &'static str,
}

/// What differs between the two tenants.
pub(crate) struct Config {
    pub origin: &'static str,
    pub tenant: &'static str,
    pub tenant_id: &'static str,
    /// Mixed case, as in `p=`; paths accept any case.
    pub policy: &'static str,
    pub client_id: &'static str,
    pub redirect_uri: &'static str,
    /// Scopes the authorize request must name.
    pub required_scopes: &'static [&'static str],
    /// Scopes the tokens are for (`scope` of the token answer).
    pub granted_scope: &'static str,
    pub accounts: &'static [Account],
    /// The sign-in form's email field (`signInName` or `email`).
    pub user_field: &'static str,
    pub bad_password_message: &'static str,
    /// An SMS code follows the password (Lynk & Co).
    pub mfa: bool,
    /// MSAL-style ending (FlameConnect): `confirmed` → a same-origin hop →
    /// `<redirect_uri>/?state=…&trustFrameworkPolicy=…&client_info=…&code=…`, and the sign-in
    /// POST renews `x-ms-cpim-trans` and `x-ms-cpim-cache…`. Otherwise (Lynk & Co)
    /// `<redirect_uri>?code=…` straight from `api/SelfAsserted/confirmed`.
    pub msal: bool,
    pub brand: &'static str,
    pub steps: &'static [&'static str],
    /// The provider's API takes this tenant's access tokens (FlameConnect); Lynk & Co's takes
    /// the CCC token instead.
    pub api_takes_access_tokens: bool,
}

impl Config {
    fn policy_lower(&self) -> String {
        self.policy.to_ascii_lowercase()
    }

    /// `/{tenant}/{policy}` as B2C writes it in its own links (policy lower-cased).
    fn base_path(&self) -> String {
        format!("/{}/{}", self.tenant, self.policy_lower())
    }

    fn client_info(&self, account: &Account) -> String {
        URL_SAFE_NO_PAD.encode(
            json!({"uid": format!("{}-{}", account.oid, self.policy_lower()), "utid": self.tenant_id})
                .to_string(),
        )
    }

    fn issuer(&self) -> String {
        format!("{}/{}/v2.0/", self.origin, self.tenant_id)
    }
}

/// One code "sent" by SMS.
#[derive(Debug, Clone, Serialize)]
pub struct InboxMessage {
    /// Always `sms`.
    pub channel: &'static str,
    /// The masked phone number.
    pub to: &'static str,
    pub account: &'static str,
    pub code: String,
    pub text: String,
    pub sent_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    /// Waiting for the email and password.
    SignIn,
    PasswordOk,
    /// The SMS went out; waiting for the code.
    CodeSent,
    Verified,
    /// `confirmed` sent the client to the same-origin hop carrying this ticket (MSAL tenants).
    Redirecting(String),
    /// Ended (code issued, error redirect, or too many wrong codes).
    Done,
}

struct SentCode {
    code: String,
    sent_ms: i64,
}

struct Transaction {
    csrf: String,
    trans_cookie: String,
    cache_cookie: (String, String),
    /// `StateProperties=<base64url {"TID":…}>`, the page's `transId`.
    trans_id: String,
    challenge: String,
    state: Option<String>,
    nonce: Option<String>,
    created_ms: i64,
    stage: Stage,
    account: Option<usize>,
    password_refused: bool,
    sms: Option<SentCode>,
    failures: u32,
    /// The routing ticket a `…/confirmed` hop sent the client on with.
    route: Option<String>,
}

impl Transaction {
    fn names(&self, tx: &str) -> bool {
        tx == self.trans_id || tx.strip_prefix("StateProperties=") == Some(&self.trans_cookie)
    }
}

struct AuthCode {
    account: usize,
    challenge: String,
    nonce: Option<String>,
    issued_ms: i64,
    used: bool,
}

struct RefreshToken {
    account: usize,
    /// Rotated away or revoked: refused with `AADB2C90129`.
    spent: bool,
}

struct Inner {
    /// By `trans_id`.
    txs: HashMap<String, Transaction>,
    codes: HashMap<String, AuthCode>,
    refresh_tokens: HashMap<String, RefreshToken>,
    /// Live access tokens (and tokens registered with them) by `jti`; revocation removes them.
    access_tokens: HashMap<String, usize>,
    inbox: Vec<InboxMessage>,
    refreshes: usize,
    access_lifetime: Duration,
    /// Routing tickets of `authorize` hops, with when they were issued.
    routes: HashMap<String, i64>,
    /// Routing hops answered, by path (`authorize`, `CombinedSigninAndSignup/confirmed`, …).
    hops: HashMap<String, usize>,
}

/// The state of one tenant (shared by its routes and its sandbox).
#[derive(Clone)]
pub(crate) struct Tenant {
    pub cfg: &'static Config,
    inner: Arc<Mutex<Inner>>,
    pub faults: Faults,
    pub clock: Clock,
    /// The provider's data endpoints: which tokens they take, the last request.
    pub api: ApiDesk,
}

macro_rules! fault {
    ($t:expr, $step:expr) => {
        if let Some(r) = $t.faults.check($step, &STYLE).await {
            return r;
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Small pieces: JWTs, PKCE, random values.

type HmacSha256 = Hmac<Sha256>;

fn jwt_key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        k
    })
}

fn hs256(data: &str) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(jwt_key()).expect("any key length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// An HS256 JWT of `claims`, signed with this process's key.
pub(crate) fn jwt(claims: &Value) -> String {
    let head =
        URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "typ": "JWT", "kid": "sandbox"}).to_string());
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{head}.{body}");
    let sig = URL_SAFE_NO_PAD.encode(hs256(&signed));
    format!("{signed}.{sig}")
}

/// The claims of a JWT this process signed (signature checked, nothing else).
pub(crate) fn jwt_claims(token: &str) -> Option<Value> {
    let (signed, sig) = token.rsplit_once('.')?;
    let (_, body) = signed.split_once('.')?;
    let mut mac = HmacSha256::new_from_slice(jwt_key()).ok()?;
    mac.update(signed.as_bytes());
    mac.verify_slice(&URL_SAFE_NO_PAD.decode(sig).ok()?).ok()?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()
}

/// RFC 7636: a verifier of 43-128 unreserved characters whose S256 is the challenge.
fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        && URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) == challenge
}

fn valid_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub(crate) fn uuid() -> String {
    let h = util::hex_token(16);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Standard base64 of `make()`'s bytes, retried until it shows `+`, `/` and `=`: cookie values
/// a careless client would quote.
fn b64_with_specials(make: impl Fn() -> Vec<u8>) -> String {
    loop {
        let mut bytes = make();
        if bytes.len().is_multiple_of(3) {
            bytes.push(b' ');
        }
        let s = STANDARD.encode(&bytes);
        if s.contains('+') && s.contains('/') {
            return s;
        }
    }
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

fn url_token(bytes: usize) -> String {
    URL_SAFE_NO_PAD.encode(random_bytes(bytes))
}

/// The values of query parameter `key`, read both ways a client may send them: percent-decoded
/// with `+` kept (FlameConnect's client sends `+`, `/` and `=` raw) and form-decoded.
fn query_values(uri: &Uri, key: &str) -> Vec<String> {
    let mut out = Vec::new();
    for pair in uri.query().unwrap_or_default().split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k != key {
            continue;
        }
        for raw in [v.replace('+', "%2B"), v.to_owned()] {
            let decoded = form_urlencoded::parse(format!("v={raw}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            out.push(decoded);
        }
    }
    out
}

fn text_json(status: StatusCode, v: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/json; charset=utf-8")],
        v.to_string(),
    )
        .into_response()
}

fn status_200() -> Response {
    text_json(StatusCode::OK, json!({"status": "200"}))
}

fn status_400(code: &str, message: &str) -> Response {
    text_json(
        StatusCode::OK,
        json!({"status": "400", "errorCode": code, "message": message}),
    )
}

fn malformed() -> Response {
    text_json(
        StatusCode::BAD_REQUEST,
        json!({"status": "400", "errorCode": MALFORMED, "message": "The request is malformed (CSRF or transaction)."}),
    )
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

fn with_request_id(mut r: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        r.headers_mut().insert("x-ms-gateway-requestid", v);
    }
    r
}

/// The error page for a request outside its transaction (wrong csrf, cookie or `tx`).
fn malformed_page(then: &str) -> Response {
    error_page(
        StatusCode::BAD_REQUEST,
        &format!("{MALFORMED}: The request is malformed (CSRF or transaction).{then}"),
    )
}

fn error_page(status: StatusCode, message: &str) -> Response {
    (
        status,
        Html(util::html_page(
            "Sorry, but we're having trouble signing you in",
            &format!(
                "<p role=\"alert\">{}</p><p>Correlation ID: {}</p>",
                util::esc(message),
                uuid()
            ),
        )),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// The tenant's state.

impl Tenant {
    pub fn new(cfg: &'static Config, access_lifetime: Duration) -> Self {
        Self {
            cfg,
            inner: Arc::new(Mutex::new(Inner {
                txs: HashMap::new(),
                codes: HashMap::new(),
                refresh_tokens: HashMap::new(),
                access_tokens: HashMap::new(),
                inbox: Vec::new(),
                refreshes: 0,
                access_lifetime,
                routes: HashMap::new(),
                hops: HashMap::new(),
            })),
            faults: Faults::new(cfg.steps),
            clock: Clock::default(),
            api: ApiDesk::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("b2c state")
    }

    fn path_ok(&self, tenant: &str, policy: &str) -> bool {
        (tenant.eq_ignore_ascii_case(self.cfg.tenant)
            || tenant.eq_ignore_ascii_case(self.cfg.tenant_id))
            && policy.eq_ignore_ascii_case(self.cfg.policy)
    }

    /// The transaction of a `…/confirmed` GET: csrf and `tx` in the query, and the policy.
    fn find_by_query(
        &self,
        inner: &Inner,
        uri: &Uri,
        headers: &HeaderMap,
        now: i64,
    ) -> Option<String> {
        inner
            .find(
                headers,
                &query_values(uri, "csrf_token"),
                &query_values(uri, "tx"),
                now,
            )
            .filter(|_| self.p_ok(&query_values(uri, "p")))
    }

    fn p_ok(&self, values: &[String]) -> bool {
        values
            .iter()
            .any(|v| v.eq_ignore_ascii_case(self.cfg.policy))
    }

    pub fn inbox(&self) -> Vec<InboxMessage> {
        self.lock().inbox.iter().rev().cloned().collect()
    }

    pub fn latest_code(&self, email: &str) -> Option<String> {
        self.lock()
            .inbox
            .iter()
            .rev()
            .find(|m| m.account.eq_ignore_ascii_case(email))
            .map(|m| m.code.clone())
    }

    pub fn refreshes(&self) -> usize {
        self.lock().refreshes
    }

    /// How many routing hops were answered at steps whose path ends with `step` (`authorize`,
    /// `CombinedSigninAndSignup/confirmed`, `SelfAsserted/confirmed`).
    pub fn routing_hops(&self, step: &str) -> usize {
        self.lock()
            .hops
            .iter()
            .filter(|(path, _)| path.ends_with(step))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn set_access_token_lifetime(&self, lifetime: Duration) {
        self.lock().access_lifetime = lifetime;
    }

    /// Every refresh and access token of `email` (and token registered for it, see
    /// [`Self::register_token`]) stops working; answers how many there were.
    pub fn revoke(&self, email: &str) -> usize {
        let Some(account) = self.account_index(email) else {
            return 0;
        };
        let mut inner = self.lock();
        let mut n = 0;
        for t in inner.refresh_tokens.values_mut() {
            if t.account == account && !t.spent {
                t.spent = true;
                n += 1;
            }
        }
        let before = inner.access_tokens.len();
        inner.access_tokens.retain(|_, a| *a != account);
        n + before - inner.access_tokens.len()
    }

    fn account_index(&self, email: &str) -> Option<usize> {
        self.cfg
            .accounts
            .iter()
            .position(|a| a.email.eq_ignore_ascii_case(email))
    }

    /// A token signed here for another audience (Lynk & Co's CCC token) that revocation ends
    /// with the account's access tokens.
    pub(crate) fn register_token(&self, jti: &str, account: usize) {
        self.lock().access_tokens.insert(jti.to_owned(), account);
    }

    /// The account of a token registered (or issued) here and not revoked since.
    pub(crate) fn live_token(&self, jti: &str) -> Option<usize> {
        self.lock().access_tokens.get(jti).copied()
    }

    /// The account of a live access token (signed here, `aud` ours, not expired, not revoked).
    pub fn access_token_account(&self, token: &str) -> Option<usize> {
        let claims = jwt_claims(token)?;
        let exp = claims["exp"].as_i64()?;
        if claims["aud"] != self.cfg.client_id || exp * 1000 <= self.clock.now_ms() {
            return None;
        }
        self.lock()
            .access_tokens
            .get(claims["jti"].as_str()?)
            .copied()
    }
}

impl Inner {
    /// The transaction a request belongs to: its trans cookie, its csrf cookie equal to one of
    /// `csrf` (header, query or field) and one of `tx` naming it. `None` = AADB2C90240.
    fn find(
        &self,
        headers: &HeaderMap,
        csrf: &[String],
        tx: &[String],
        now: i64,
    ) -> Option<String> {
        let cookies = util::cookies(headers);
        // B2C compares the raw values: a client that quotes `+/=` values fails here.
        if cookies
            .iter()
            .any(|(k, v)| k.starts_with("x-ms-cpim-") && v.starts_with('"'))
        {
            return None;
        }
        let trans = cookies.get("x-ms-cpim-trans")?;
        let (key, t) = self.txs.iter().find(|(_, t)| &t.trans_cookie == trans)?;
        let csrf_cookie = cookies.get("x-ms-cpim-csrf")?;
        let ok = csrf_cookie == &t.csrf
            && csrf.iter().any(|c| c == csrf_cookie)
            && tx.iter().any(|x| t.names(x))
            && now - t.created_ms < TRANSACTION_LIFETIME.as_millis() as i64;
        ok.then(|| key.clone())
    }

    fn send_sms(&mut self, cfg: &Config, key: &str, now: i64) {
        let t = self.txs.get_mut(key).expect("transaction");
        let account = &cfg.accounts[t.account.expect("signed in")];
        let code = format!("{:06}", rand::random::<u32>() % 1_000_000);
        t.sms = Some(SentCode {
            code: code.clone(),
            sent_ms: now,
        });
        t.failures = 0;
        t.stage = Stage::CodeSent;
        self.inbox.push(InboxMessage {
            channel: "sms",
            to: account.phone,
            account: account.email,
            text: format!(
                "Your {} verification code is {code}. It expires in 5 minutes.",
                cfg.brand
            ),
            code,
            sent_at_ms: now,
        });
    }

    /// Ends the transaction with a fresh one-time code; answers the app redirect URL.
    fn finish(&mut self, cfg: &Config, key: &str, now: i64) -> String {
        let t = self.txs.get_mut(key).expect("transaction");
        t.stage = Stage::Done;
        let account = t.account.expect("signed in");
        let code = format!("eyJraWQiOiJjcGltY29yZV8wOSJ9.{}", url_token(96));
        util::record_secret(&code);
        let (state, nonce, challenge) = (t.state.clone(), t.nonce.clone(), t.challenge.clone());
        self.codes.insert(
            code.clone(),
            AuthCode {
                account,
                challenge,
                nonce,
                issued_ms: now,
                used: false,
            },
        );
        let state = state.map(|s| util::encode(&s));
        if cfg.msal {
            let mut q = Vec::new();
            if let Some(s) = state {
                q.push(format!("state={s}"));
            }
            q.push(format!("trustFrameworkPolicy={}", cfg.policy));
            q.push(format!(
                "client_info={}",
                cfg.client_info(&cfg.accounts[account])
            ));
            q.push(format!("code={code}"));
            format!("{}/?{}", cfg.redirect_uri, q.join("&"))
        } else {
            let mut url = format!("{}?code={code}", cfg.redirect_uri);
            if let Some(s) = state {
                url.push_str(&format!("&state={s}"));
            }
            url
        }
    }

    /// Ends the transaction with an error redirect to the app.
    fn fail(&mut self, cfg: &Config, key: &str) -> Response {
        let t = self.txs.get_mut(key).expect("transaction");
        t.stage = Stage::Done;
        let description = if t.password_refused {
            "AADB2C90053: The username or password provided in the request are invalid."
        } else {
            "AADB2C90091: The user has cancelled entering self-asserted information."
        };
        let mut q = format!(
            "error=access_denied&error_description={}",
            util::encode(description)
        );
        if let Some(s) = &t.state {
            q.push_str(&format!("&state={}", util::encode(s)));
        }
        let sep = if cfg.msal { "/?" } else { "?" };
        util::found(&format!("{}{sep}{q}", cfg.redirect_uri), &[])
    }

    /// A token answer; the access token's `jti` is admitted to the data endpoints (`api`) when
    /// they take access tokens.
    fn tokens(
        &mut self,
        cfg: &Config,
        api: &ApiDesk,
        account: usize,
        nonce: Option<&str>,
        now: i64,
    ) -> Value {
        let a = &cfg.accounts[account];
        let iat = now / 1000;
        let lifetime = self.access_lifetime.as_secs() as i64;
        let jti = uuid();
        let common = json!({
            "iss": cfg.issuer(),
            "exp": iat + lifetime,
            "nbf": iat,
            "iat": iat,
            "aud": cfg.client_id,
            "sub": a.oid,
            "oid": a.oid,
            "emails": [a.email],
            "name": a.name,
            "tfp": cfg.policy,
            "ver": "1.0",
        });
        let mut access = common.clone();
        access["jti"] = json!(jti);
        access["azp"] = json!(cfg.client_id);
        access["scp"] = json!(cfg
            .granted_scope
            .split(' ')
            .filter_map(|s| s.rsplit('/').next())
            .collect::<Vec<_>>()
            .join(" "));
        let mut id = common;
        id["auth_time"] = json!(iat);
        id["exp"] = json!(iat + 3600);
        if let Some(n) = nonce {
            id["nonce"] = json!(n);
        }
        let (access_token, id_token) = (jwt(&access), jwt(&id));
        let refresh_token = format!("eyJraWQiOiJjcGltY29yZV8wOSJ9.{}", url_token(120));
        for s in [&access_token, &id_token, &refresh_token] {
            util::record_secret(s);
        }
        if cfg.api_takes_access_tokens {
            api.admit(&jti);
        }
        self.access_tokens.insert(jti, account);
        self.refresh_tokens.insert(
            refresh_token.clone(),
            RefreshToken {
                account,
                spent: false,
            },
        );
        json!({
            "access_token": access_token,
            "id_token": id_token,
            "token_type": "Bearer",
            "not_before": iat,
            "expires_in": lifetime,
            "expires_on": iat + lifetime,
            "id_token_expires_in": 3600,
            "refresh_token": refresh_token,
            "refresh_token_expires_in": REFRESH_TOKEN_LIFETIME.as_secs(),
            "scope": cfg.granted_scope,
            "client_info": cfg.client_info(a),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Pages.

fn settings(cfg: &Config, t: &Transaction, api: &str, page_view_id: &str) -> String {
    let s = json!({
        "remoteResource": format!("{}/static/{}/unified.html", cfg.origin, cfg.policy_lower()),
        "retryLimit": 3,
        "trimSpacesInPassword": true,
        "api": api,
        "csrf": t.csrf,
        "transId": t.trans_id,
        "pageViewId": page_view_id,
        "suppressElementCss": false,
        "isPageViewIdSentWithHeader": false,
        "allowAutoFocusOnPasswordField": true,
        "pageMode": 0,
        "config": {"showSignupLink": "False", "sendHintOnSignup": "False", "forgotPasswordLinkLocation": "AfterLabel", "operatingMode": "Email"},
        "hosts": {
            "tenant": format!("/{}/{}", cfg.tenant, cfg.policy),
            "policy": cfg.policy,
            "static": "https://login.microsoftonline.com/static/",
        },
        "locale": {"lang": "en", "country": "US"},
        "xhrSettings": {"retryEnabled": true, "retryMaxAttempts": 3, "retryDelay": 200, "retryExponent": 2, "retryOn": ["error", "timeout"]},
    });
    format!(
        "<script>var SETTINGS = {};</script>",
        s.to_string().replace("</", "<\\/")
    )
}

fn hidden(t: &Transaction) -> String {
    format!(
        r#"<input type="hidden" name="csrf_token" value="{}"><input type="hidden" name="tx" value="{}">"#,
        util::esc(&t.csrf),
        util::esc(&t.trans_id)
    )
}

fn alert(error: Option<&str>) -> String {
    error
        .map(|e| format!("<p role=\"alert\">{}</p>", util::esc(e)))
        .unwrap_or_default()
}

fn sign_in_page(cfg: &Config, t: &Transaction, page_view_id: &str, error: Option<&str>) -> String {
    let body = format!(
        r#"{settings}
<p>Sign in with your {brand} account.</p>
{alert}
<form method="post" action="{base}/browser/signin">{hidden}
<p><label for="email">Email</label><br><input id="email" name="email" type="email" autocomplete="username" required></p>
<p><label for="password">Password</label><br><input id="password" name="password" type="password" autocomplete="current-password" required></p>
<p><button type="submit">Sign in</button></p></form>
<p>This is a simulator of the {brand} sign-in service.</p>"#,
        settings = settings(cfg, t, "CombinedSigninAndSignup", page_view_id),
        brand = util::esc(cfg.brand),
        alert = alert(error),
        base = cfg.base_path(),
        hidden = hidden(t),
    );
    util::html_page(&format!("{} - Sign in", cfg.brand), &body)
}

fn code_page(cfg: &Config, t: &Transaction, page_view_id: &str, error: Option<&str>) -> String {
    let to = t.account.map(|a| cfg.accounts[a].phone).unwrap_or_default();
    let body = format!(
        r#"{settings}
<p role="status">We sent a verification code by SMS to <strong>{to}</strong>. This simulator puts it in its <a href="/inbox" target="_blank">inbox</a>.</p>
{alert}
<form method="post" action="{base}/browser/verify">{hidden}
<p><label for="verificationCode">Verification code</label><br><input id="verificationCode" name="verificationCode" inputmode="numeric" autocomplete="one-time-code" required></p>
<p><button type="submit">Verify</button></p></form>"#,
        settings = settings(cfg, t, "SelfAsserted", page_view_id),
        to = util::esc(to),
        alert = alert(error),
        base = cfg.base_path(),
        hidden = hidden(t),
    );
    util::html_page(&format!("{} - Verify your phone", cfg.brand), &body)
}

/// The browser's last page: the app redirect it cannot follow, to be pasted into Stepgate.
fn redirect_page(cfg: &Config, url: &str) -> Response {
    let body = format!(
        r#"<p role="status">You are signed in. Your browser cannot open the {brand} app link, so copy it and paste it into Stepgate.</p>
<p><label for="redirect-url">Redirect URL</label><br><input id="redirect-url" name="redirect_url" readonly value="{url}"></p>
<p><button type="button" id="copy">Copy</button></p>
<script>document.getElementById("copy").addEventListener("click",()=>{{const i=document.getElementById("redirect-url");i.select();if(navigator.clipboard)navigator.clipboard.writeText(i.value);}});</script>"#,
        brand = util::esc(cfg.brand),
        url = util::esc(url),
    );
    Html(util::html_page(
        &format!("{} - Signed in", cfg.brand),
        &body,
    ))
    .into_response()
}

// ---------------------------------------------------------------------------------------------
// Routing hops.

/// The request's raw query without its `rt` (the routing ticket a hop added): the rest is kept
/// exactly as the client encoded it (FlameConnect's `+`, `/` and `=` raw).
fn query_without_route(uri: &Uri) -> String {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty() && pair.split('=').next() != Some("rt"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The same path and query with the routing ticket `rt`, under `origin` (empty: path only).
fn hop_to(origin: &str, uri: &Uri, ticket: &str) -> String {
    let query = query_without_route(uri);
    let sep = if query.is_empty() { "" } else { "&" };
    format!("{origin}{}?{query}{sep}rt={ticket}", uri.path())
}

/// A `…/confirmed` GET of transaction `key`: `Some(hop)` unless it carries the ticket its
/// transaction's last hop gave (then the ticket is spent and the step goes on).
fn confirmed_hop(cfg: &Config, inner: &mut Inner, key: &str, uri: &Uri) -> Option<Response> {
    let tx = inner.txs.get_mut(key).expect("transaction");
    let given = util::query(uri).remove("rt");
    if given.is_some() && given == tx.route {
        tx.route = None;
        return None;
    }
    let ticket = util::hex_token(12);
    tx.route = Some(ticket.clone());
    *inner.hops.entry(uri.path().to_owned()).or_default() += 1;
    Some(util::found(&hop_to(cfg.origin, uri, &ticket), &[]))
}

// ---------------------------------------------------------------------------------------------
// Routes.

/// The router of the tenant's host (plus the inbox when it sends SMS codes).
pub(crate) fn router(t: Tenant) -> Router {
    let faults = t.faults.clone();
    let mut r = Router::new()
        .route(
            "/{tenant}/{policy}/v2.0/.well-known/openid-configuration",
            get(discovery),
        )
        .route("/{tenant}/{policy}/discovery/v2.0/keys", get(keys))
        .route("/{tenant}/{policy}/oauth2/v2.0/authorize", get(authorize))
        .route("/{tenant}/{policy}/SelfAsserted", post(self_asserted))
        .route(
            "/{tenant}/{policy}/api/CombinedSigninAndSignup/confirmed",
            get(combined_confirmed),
        )
        .route(
            "/{tenant}/{policy}/api/CombinedSigninAndSignup/resume",
            get(resume),
        )
        .route(
            "/{tenant}/{policy}/api/SelfAsserted/confirmed",
            get(self_asserted_confirmed),
        )
        .route("/{tenant}/{policy}/oauth2/v2.0/token", post(token))
        .route("/{tenant}/{policy}/browser/signin", post(browser_sign_in))
        .route("/{tenant}/{policy}/browser/verify", post(browser_verify))
        .route("/testing/revoke", post(revoke_http))
        .route(
            "/testing/hops",
            get(|State(t): State<Tenant>| async move { Json(t.lock().hops.clone()) }),
        );
    if t.cfg.mfa {
        r = r
            .route("/inbox", get(inbox_page))
            .route("/inbox.json", get(inbox_json));
    }
    r.with_state(t).merge(crate::faults::routes(faults))
}

type Tp = Path<(String, String)>;

fn not_found() -> Response {
    error_page(
        StatusCode::NOT_FOUND,
        "AADB2C90008: The request does not name a known tenant or policy.",
    )
}

/// `GET /{tenant}/{policy}/v2.0/.well-known/openid-configuration`.
async fn discovery(State(t): State<Tenant>, Path((tenant, policy)): Tp) -> Response {
    if !t.path_ok(&tenant, &policy) {
        return not_found();
    }
    fault!(t, "discovery");
    let base = format!("{}{}", t.cfg.origin, t.cfg.base_path());
    Json(json!({
        "issuer": t.cfg.issuer(),
        "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
        "token_endpoint": format!("{base}/oauth2/v2.0/token"),
        "end_session_endpoint": format!("{base}/oauth2/v2.0/logout"),
        "jwks_uri": format!("{base}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "response_types_supported": ["code", "code id_token", "code token", "code id_token token", "id_token", "id_token token", "token", "token id_token"],
        "scopes_supported": ["openid"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["HS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "claims_supported": ["name", "emails", "oid", "sub", "tfp", "iss", "iat", "exp", "aud", "acr", "nonce", "auth_time"],
    }))
    .into_response()
}

async fn keys(State(t): State<Tenant>, Path((tenant, policy)): Tp) -> Response {
    if !t.path_ok(&tenant, &policy) {
        return not_found();
    }
    // HS256 with a private key: nothing to publish.
    Json(json!({"keys": []})).into_response()
}

/// `GET …/oauth2/v2.0/authorize?client_id&response_type=code&redirect_uri&scope&code_challenge&code_challenge_method=S256[&state&nonce]`.
async fn authorize(
    State(t): State<Tenant>,
    Path((tenant, policy)): Tp,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if !t.path_ok(&tenant, &policy) {
        return not_found();
    }
    fault!(t, "authorize");
    let cfg = t.cfg;
    let q = util::query(&uri);
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or_default();
    if get("client_id") != cfg.client_id {
        return error_page(
            StatusCode::BAD_REQUEST,
            &format!(
                "AADB2C90057: The provided application '{}' is not registered in this tenant.",
                get("client_id")
            ),
        );
    }
    if get("redirect_uri") != cfg.redirect_uri {
        return error_page(
            StatusCode::BAD_REQUEST,
            &format!("AADB2C90006: The redirect URI '{}' provided in the request is not registered for the client id '{}'.", get("redirect_uri"), cfg.client_id),
        );
    }
    if get("response_type") != "code" {
        return error_page(
            StatusCode::BAD_REQUEST,
            "AADB2C90079: response_type=code is required.",
        );
    }
    if get("code_challenge_method") != "S256" || !valid_challenge(get("code_challenge")) {
        return error_page(
            StatusCode::BAD_REQUEST,
            "AADB2C90183: A code_challenge (S256) is required for this client.",
        );
    }
    let scopes: Vec<&str> = get("scope").split_whitespace().collect();
    if let Some(missing) = cfg.required_scopes.iter().find(|s| !scopes.contains(s)) {
        return error_page(
            StatusCode::BAD_REQUEST,
            &format!("AADB2C90055: The scope '{missing}' is required in the request."),
        );
    }
    let now = t.clock.now_ms();
    {
        // The routing hop: a ticket this tenant issued (a reload of the routed page is fine).
        let mut inner = t.lock();
        let horizon = TRANSACTION_LIFETIME.as_millis() as i64;
        inner.routes.retain(|_, issued| now - *issued < horizon);
        let routed = q.get("rt").is_some_and(|rt| inner.routes.contains_key(rt));
        if !routed {
            let ticket = util::hex_token(12);
            inner.routes.insert(ticket.clone(), now);
            *inner.hops.entry(uri.path().to_owned()).or_default() += 1;
            // Named by the address the client used: a browser stays on the double.
            let origin = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|host| format!("http://{host}"))
                .unwrap_or_default();
            return util::found(&hop_to(&origin, &uri, &ticket), &[]);
        }
    }
    let tx = Transaction {
        csrf: b64_with_specials(|| random_bytes(40)),
        trans_cookie: trans_cookie(cfg),
        cache_cookie: cache_cookie(),
        trans_id: format!(
            "StateProperties={}",
            URL_SAFE_NO_PAD.encode(json!({"TID": uuid()}).to_string())
        ),
        challenge: get("code_challenge").to_owned(),
        state: q.get("state").cloned(),
        nonce: q.get("nonce").cloned(),
        created_ms: now,
        stage: Stage::SignIn,
        account: None,
        password_refused: false,
        sms: None,
        failures: 0,
        route: None,
    };
    let page_view_id = uuid();
    let page = sign_in_page(cfg, &tx, &page_view_id, None);
    let mut set = vec![
        util::set_cookie("x-ms-cpim-csrf", &tx.csrf),
        util::set_cookie("x-ms-cpim-trans", &tx.trans_cookie),
    ];
    if cfg.msal {
        set.push(util::set_cookie(&tx.cache_cookie.0, &tx.cache_cookie.1));
    }
    {
        let mut inner = t.lock();
        let horizon = TRANSACTION_LIFETIME.as_millis() as i64;
        inner.txs.retain(|_, t| now - t.created_ms < horizon);
        inner.txs.insert(tx.trans_id.clone(), tx);
    }
    let mut r = Html(page).into_response();
    util::add_cookies(&mut r, &set);
    with_request_id(r, &page_view_id)
}

/// `x-ms-cpim-trans`: base64 of `{"T_DIC":[…],"C_ID":…}` (with `+`, `/` and `=`).
fn trans_cookie(cfg: &Config) -> String {
    b64_with_specials(|| {
        // `?`, `>` and `~` land on `/` and `+` in base64 when they end a 3-byte group.
        let salt: String = (0..12)
            .map(|_| ['?', '>', '~', 'a'][rand::random::<usize>() % 4])
            .collect();
        json!({
            "T_DIC": [{"I": uuid(), "T": cfg.tenant, "P": cfg.policy_lower(), "C": cfg.client_id, "S": 1, "M": {}, "D": 0, "N": salt}],
            "C_ID": uuid(),
        })
        .to_string()
        .into_bytes()
    })
}

fn cache_cookie() -> (String, String) {
    (
        format!("x-ms-cpim-cache|{}_0", &util::hex_token(11)[..22]),
        b64_with_specials(|| random_bytes(64)),
    )
}

/// `POST …/SelfAsserted?tx=…&p=…`: the password (`request_type=RESPONSE&<user_field>&password`)
/// or, after the SMS, the code (`verificationCode`).
async fn self_asserted(
    State(t): State<Tenant>,
    Path((tenant, policy)): Tp,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !t.path_ok(&tenant, &policy) {
        return not_found();
    }
    let form = util::form(&headers, &body).unwrap_or_default();
    let is_code = form.contains_key("verificationCode");
    fault!(t, if is_code { "verify" } else { "self_asserted" });
    let cfg = t.cfg;
    let csrf: Vec<String> = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .map(|v| vec![v.to_owned()])
        .unwrap_or_default();
    let now = t.clock.now_ms();
    let mut inner = t.lock();
    let Some(key) = inner.find(&headers, &csrf, &query_values(&uri, "tx"), now) else {
        return malformed();
    };
    if !t.p_ok(&query_values(&uri, "p"))
        || form.get("request_type").map(String::as_str) != Some("RESPONSE")
    {
        return malformed();
    }
    if is_code {
        if !cfg.mfa {
            return malformed();
        }
        return match check_code(&mut inner, &key, &form["verificationCode"], now) {
            Ok(()) => status_200(),
            Err((code, message)) => status_400(code, message),
        };
    }
    let user = form
        .get(cfg.user_field)
        .map(String::as_str)
        .unwrap_or_default();
    let password = form.get("password").map(String::as_str).unwrap_or_default();
    match sign_in(&mut inner, cfg, &key, user, password) {
        Err(SignInError::WrongStage) => malformed(),
        Err(SignInError::BadCredentials) => status_400(BAD_CREDENTIALS, cfg.bad_password_message),
        Ok(set) => {
            let mut r = status_200();
            util::add_cookies(&mut r, &set);
            r
        }
    }
}

enum SignInError {
    WrongStage,
    BadCredentials,
}

/// Checks the password; on success answers the cookies to renew (MSAL tenants).
fn sign_in(
    inner: &mut Inner,
    cfg: &Config,
    key: &str,
    user: &str,
    password: &str,
) -> Result<Vec<String>, SignInError> {
    let tx = inner.txs.get_mut(key).expect("transaction");
    if !matches!(tx.stage, Stage::SignIn | Stage::PasswordOk) {
        return Err(SignInError::WrongStage);
    }
    let Some(account) = cfg
        .accounts
        .iter()
        .position(|a| a.email.eq_ignore_ascii_case(user.trim()) && a.password == password)
    else {
        tx.password_refused = true;
        tx.account = None;
        tx.stage = Stage::SignIn;
        return Err(SignInError::BadCredentials);
    };
    tx.account = Some(account);
    tx.password_refused = false;
    tx.stage = Stage::PasswordOk;
    if !cfg.msal {
        return Ok(Vec::new());
    }
    // B2C renews these here; the client must merge them into its cookies.
    tx.trans_cookie = trans_cookie(cfg);
    tx.cache_cookie.1 = cache_cookie().1;
    Ok(vec![
        util::set_cookie("x-ms-cpim-trans", &tx.trans_cookie),
        util::set_cookie(&tx.cache_cookie.0, &tx.cache_cookie.1),
    ])
}

fn check_code(
    inner: &mut Inner,
    key: &str,
    given: &str,
    now: i64,
) -> Result<(), (&'static str, &'static str)> {
    let tx = inner.txs.get_mut(key).expect("transaction");
    const MAX: (&str, &str) = (
        TOO_MANY_CODES,
        "You have made too many incorrect attempts. Please try again later.",
    );
    if tx.stage == Stage::Done && tx.failures >= MAX_CODE_FAILURES {
        return Err(MAX);
    }
    let (Stage::CodeSent, Some(sent)) = (&tx.stage, &tx.sms) else {
        return Err((WRONG_CODE, "That code is incorrect. Please try again."));
    };
    if now - sent.sent_ms > CODE_LIFETIME.as_millis() as i64 {
        return Err((
            EXPIRED_CODE,
            "That code has expired. Please request a new one.",
        ));
    }
    if given.trim() != sent.code {
        tx.failures += 1;
        if tx.failures >= MAX_CODE_FAILURES {
            tx.stage = Stage::Done;
            return Err(MAX);
        }
        return Err((WRONG_CODE, "That code is incorrect. Please try again."));
    }
    tx.stage = Stage::Verified;
    Ok(())
}

/// `GET …/api/CombinedSigninAndSignup/confirmed?rememberMe=false&csrf_token&tx&p[&diags]`.
async fn combined_confirmed(
    State(t): State<Tenant>,
    Path((tenant, policy)): Tp,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if !t.path_ok(&tenant, &policy) {
        return not_found();
    }
    fault!(t, "confirmed");
    let cfg = t.cfg;
    let now = t.clock.now_ms();
    let mut inner = t.lock();
    let Some(key) = t.find_by_query(&inner, &uri, &headers, now) else {
        return malformed_page("");
    };
    if let Some(hop) = confirmed_hop(cfg, &mut inner, &key, &uri) {
        return hop;
    }
    let stage = inner.txs[&key].stage.clone();
    match stage {
        Stage::PasswordOk | Stage::CodeSent if cfg.mfa => {
            // Reaching the phone page is what sends the SMS (again, when reloaded).
            inner.send_sms(cfg, &key, now);
            let page_view_id = uuid();
            let page = code_page(cfg, &inner.txs[&key], &page_view_id, None);
            with_request_id(Html(page).into_response(), &page_view_id)
        }
        Stage::PasswordOk => {
            let ticket = util::hex_token(16);
            let tx = inner.txs.get_mut(&key).expect("transaction");
            tx.stage = Stage::Redirecting(ticket.clone());
            util::found(
                &format!(
                    "{}{}/api/CombinedSigninAndSignup/resume?tx={}&p={}&ticket={ticket}",
                    cfg.origin,
                    cfg.base_path(),
                    util::encode(&tx.trans_id),
                    cfg.policy
                ),
                &[],
            )
        }
        _ => inner.fail(cfg, &key),
    }
}

/// The same-origin hop between `confirmed` and the app redirect (MSAL tenants).
async fn resume(
    State(t): State<Tenant>,
    Path((tenant, policy)): Tp,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if !t.path_ok(&tenant, &policy) || !t.cfg.msal {
        return not_found();
    }
    fault!(t, "confirmed");
    let now = t.clock.now_ms();
    let mut inner = t.lock();
    let ticket = util::query(&uri).remove("ticket").unwrap_or_default();
    // The hop carries no csrf: the trans cookie and the ticket must belong together.
    let cookies = util::cookies(&headers);
    let key = cookies.get("x-ms-cpim-trans").and_then(|c| {
        inner
            .txs
            .iter()
            .find(|(_, tx)| &tx.trans_cookie == c && tx.stage == Stage::Redirecting(ticket.clone()))
            .map(|(k, _)| k.clone())
    });
    let Some(key) = key.filter(|_| !ticket.is_empty()) else {
        return malformed_page("");
    };
    let url = inner.finish(t.cfg, &key, now);
    util::found(&url, &[])
}

/// `GET …/api/SelfAsserted/confirmed?csrf_token&tx&p[&diags]` (after the SMS code): 302 to the
/// app with the code, or with an error.
async fn self_asserted_confirmed(
    State(t): State<Tenant>,
    Path((tenant, policy)): Tp,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if !t.path_ok(&tenant, &policy) {
        return not_found();
    }
    fault!(t, "redirect");
    let now = t.clock.now_ms();
    let mut inner = t.lock();
    let Some(key) = t.find_by_query(&inner, &uri, &headers, now) else {
        return malformed_page("");
    };
    if let Some(hop) = confirmed_hop(t.cfg, &mut inner, &key, &uri) {
        return hop;
    }
    if inner.txs[&key].stage == Stage::Verified && t.cfg.mfa {
        let url = inner.finish(t.cfg, &key, now);
        return util::found(&url, &[]);
    }
    inner.fail(t.cfg, &key)
}

/// `POST …/oauth2/v2.0/token`: `authorization_code` (PKCE) or `refresh_token` (rotating).
async fn token(
    State(t): State<Tenant>,
    Path((tenant, policy)): Tp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !t.path_ok(&tenant, &policy) {
        return oauth_error(
            StatusCode::NOT_FOUND,
            "invalid_tenant",
            "AADB2C90008: The request does not name a known tenant or policy.",
        );
    }
    let form = util::form(&headers, &body).unwrap_or_default();
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    let cfg = t.cfg;
    match get("grant_type") {
        "authorization_code" => {
            fault!(t, "token");
            if get("client_id") != cfg.client_id {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "unauthorized_client",
                    &format!("AADB2C90057: The provided application '{}' is not registered in this tenant.", get("client_id")),
                );
            }
            if get("redirect_uri") != cfg.redirect_uri {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    &format!("AADB2C90006: The redirect URI '{}' provided in the request is not registered for the client id '{}'.", get("redirect_uri"), cfg.client_id),
                );
            }
            let now = t.clock.now_ms();
            let mut inner = t.lock();
            let Some(code) = inner.codes.get_mut(get("code")) else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "AADB2C90080: The provided grant has expired. Please re-authenticate and try again.",
                );
            };
            if code.used {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "AADB2C90090: The provided authorization code has already been redeemed.",
                );
            }
            // Any attempt spends the code, as B2C does.
            code.used = true;
            if now - code.issued_ms > AUTH_CODE_LIFETIME.as_millis() as i64 {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "AADB2C90080: The provided grant has expired. Please re-authenticate and try again.",
                );
            }
            if !pkce_matches(get("code_verifier"), &code.challenge) {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "AADB2C90183: The supplied code_verifier is invalid.",
                );
            }
            let (account, nonce) = (code.account, code.nonce.clone());
            Json(inner.tokens(cfg, &t.api, account, nonce.as_deref(), now)).into_response()
        }
        "refresh_token" => {
            t.lock().refreshes += 1;
            fault!(t, "refresh");
            // Lynk & Co's client sends no client_id; when one is sent it must be ours.
            if form.contains_key("client_id") && get("client_id") != cfg.client_id {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "unauthorized_client",
                    &format!("AADB2C90057: The provided application '{}' is not registered in this tenant.", get("client_id")),
                );
            }
            let now = t.clock.now_ms();
            let mut inner = t.lock();
            let account = match inner.refresh_tokens.get_mut(get("refresh_token")) {
                None => {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "AADB2C90080: The provided grant has expired. Please re-authenticate and try again.",
                    )
                }
                Some(r) if r.spent => {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "AADB2C90129: The provided grant has been revoked. Please reauthenticate and try again.",
                    )
                }
                Some(r) => {
                    r.spent = true;
                    r.account
                }
            };
            Json(inner.tokens(cfg, &t.api, account, None, now)).into_response()
        }
        other => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            &format!("AADB2C90086: The supplied grant_type [{other}] is not supported."),
        ),
    }
}

/// `POST …/browser/signin` (csrf_token, tx, email, password): the plain form of the sign-in
/// page, so a browser without B2C's script can sign in.
async fn browser_sign_in(
    State(t): State<Tenant>,
    Path((tenant, policy)): Tp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !t.path_ok(&tenant, &policy) {
        return not_found();
    }
    fault!(t, "self_asserted");
    let cfg = t.cfg;
    let form = util::form(&headers, &body).unwrap_or_default();
    let field = |k: &str| form.get(k).cloned().into_iter().collect::<Vec<_>>();
    let now = t.clock.now_ms();
    let mut inner = t.lock();
    let Some(key) = inner.find(&headers, &field("csrf_token"), &field("tx"), now) else {
        return malformed_page(" Start again from the app.");
    };
    let user = form.get("email").map(String::as_str).unwrap_or_default();
    let password = form.get("password").map(String::as_str).unwrap_or_default();
    let set = match sign_in(&mut inner, cfg, &key, user, password) {
        Err(SignInError::WrongStage) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "This sign-in has already ended. Start again from the app.",
            )
        }
        Err(SignInError::BadCredentials) => {
            let page = sign_in_page(
                cfg,
                &inner.txs[&key],
                &uuid(),
                Some(cfg.bad_password_message),
            );
            return Html(page).into_response();
        }
        Ok(set) => set,
    };
    let mut r = if cfg.mfa {
        inner.send_sms(cfg, &key, now);
        Html(code_page(cfg, &inner.txs[&key], &uuid(), None)).into_response()
    } else {
        let url = inner.finish(cfg, &key, now);
        redirect_page(cfg, &url)
    };
    util::add_cookies(&mut r, &set);
    r
}

/// `POST …/browser/verify` (csrf_token, tx, verificationCode).
async fn browser_verify(
    State(t): State<Tenant>,
    Path((tenant, policy)): Tp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !t.path_ok(&tenant, &policy) || !t.cfg.mfa {
        return not_found();
    }
    fault!(t, "verify");
    let cfg = t.cfg;
    let form = util::form(&headers, &body).unwrap_or_default();
    let field = |k: &str| form.get(k).cloned().into_iter().collect::<Vec<_>>();
    let now = t.clock.now_ms();
    let mut inner = t.lock();
    let Some(key) = inner.find(&headers, &field("csrf_token"), &field("tx"), now) else {
        return malformed_page(" Start again from the app.");
    };
    let given = form
        .get("verificationCode")
        .map(String::as_str)
        .unwrap_or_default();
    match check_code(&mut inner, &key, given, now) {
        Ok(()) => {
            let url = inner.finish(cfg, &key, now);
            redirect_page(cfg, &url)
        }
        Err((TOO_MANY_CODES, message)) => error_page(StatusCode::OK, message),
        Err((_, message)) => {
            Html(code_page(cfg, &inner.txs[&key], &uuid(), Some(message))).into_response()
        }
    }
}

#[derive(Deserialize)]
struct Revoke {
    account: String,
}

/// `POST /testing/revoke {"account": "<email>"}`.
async fn revoke_http(State(t): State<Tenant>, Json(req): Json<Revoke>) -> Response {
    if t.account_index(&req.account).is_none() {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "unknown account"})),
        )
            .into_response();
    }
    let revoked = t.revoke(&req.account);
    Json(json!({"account": req.account, "revoked": revoked})).into_response()
}

async fn inbox_json(State(t): State<Tenant>) -> Json<Vec<InboxMessage>> {
    Json(t.inbox())
}

async fn inbox_page(State(t): State<Tenant>) -> Response {
    let rows: String = t
        .inbox()
        .iter()
        .map(|m| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"code\">{}</td><td>{}</td></tr>",
                m.channel,
                util::esc(m.to),
                util::esc(m.account),
                m.code,
                util::esc(&m.text)
            )
        })
        .collect();
    let body = if rows.is_empty() {
        "<p>No messages yet.</p>".to_owned()
    } else {
        format!(
            "<table aria-label=\"Messages\"><thead><tr><th>Channel</th><th>To</th><th>Account</th><th>Code</th><th>Message</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    };
    Html(util::html_page(
        &format!("Inbox (SMS sent by the {} simulator)", t.cfg.brand),
        &format!("{body}<p><a href=\"/inbox\">Refresh</a></p>"),
    ))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_accepts_the_rfc_7636_example_and_nothing_else() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(pkce_matches(verifier, challenge));
        assert!(!pkce_matches(&verifier[1..], challenge));
        assert!(!pkce_matches(&format!("{verifier}!"), challenge));
    }

    #[test]
    fn jwts_verify_only_with_this_process_key() {
        let t = jwt(&json!({"sub": "x"}));
        assert_eq!(jwt_claims(&t).unwrap()["sub"], "x");
        let parts: Vec<&str> = t.split('.').collect();
        let other = URL_SAFE_NO_PAD.encode(r#"{"sub":"y"}"#);
        let forged = format!("{}.{other}.{}", parts[0], parts[2]);
        assert!(jwt_claims(&forged).is_none());
    }

    #[test]
    fn cookie_values_carry_plus_slash_and_equals() {
        let v = b64_with_specials(|| random_bytes(20));
        assert!(v.contains('+') && v.contains('/') && v.ends_with('='));
    }
}
