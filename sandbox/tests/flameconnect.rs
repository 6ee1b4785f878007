//! The FlameConnect double driven as `flameconnect` 0.6 with MSAL 1.39 drives the real tenant:
//! discovery → authorize (SETTINGS csrf/transId) → SelfAsserted (`email`, `password`) →
//! CombinedSigninAndSignup/confirmed (raw values) → a same-origin hop →
//! `msal…://auth/?state=…&code=…` → token (PKCE; id_token with the nonce) → refresh.

mod common;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{
    assert_real, assert_sign_in_form, enc, jwt_payload, s256, shown_redirect_url, urlencoded,
    Client, Resp,
};
use reqwest::header::{CONTENT_TYPE, SET_COOKIE};
use reqwest::Method;
use sandbox::faults::Fault;
use sandbox::flameconnect::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const DISCOVERY: &str = "https://gdhvb2cflameconnect.b2clogin.com/gdhvb2cflameconnect.onmicrosoft.com/B2C_1A_FirePhoneSignUpOrSignInWithPhoneOrEmail/v2.0/.well-known/openid-configuration";
const FLOW_BASE: &str = "https://gdhvb2cflameconnect.b2clogin.com/gdhvb2cflameconnect.onmicrosoft.com/B2C_1A_FirePhoneSignUpOrSignInWithPhoneOrEmail";

fn pkce() -> (String, String) {
    let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = s256(&verifier);
    (verifier, challenge)
}

/// `CombinedSigninAndSignup/confirmed` for a transaction, its values as given.
fn confirmed_url(csrf: &str, tx: &str) -> String {
    format!(
        "{FLOW_BASE}/api/CombinedSigninAndSignup/confirmed?rememberMe=false&csrf_token={csrf}&tx={tx}&p={POLICY}"
    )
}

/// The value of `"key":"…"` in the page's SETTINGS, as flameconnect's regexes read it.
fn setting(page: &str, key: &str) -> String {
    let start = page
        .find(&format!(r#""{key}":""#))
        .unwrap_or_else(|| panic!("no {key} in the page"))
        + key.len()
        + 4;
    page[start..start + page[start..].find('"').unwrap()].to_owned()
}

fn query_of(url: &str) -> Vec<(String, String)> {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

fn param(url: &str, key: &str) -> Option<String> {
    query_of(url)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// One MSAL auth-code flow in progress.
struct Flow {
    c: Client,
    verifier: String,
    state: String,
    nonce: String,
    token_endpoint: String,
    csrf: String,
    trans_id: String,
    page: String,
    /// Cookie names the tenant set (the cache cookie's name varies).
    cookie_names: Vec<String>,
}

impl Flow {
    async fn start(sb: &FlameConnectSandbox) -> Flow {
        Self::start_with(sb, |url| url).await
    }

    /// Discovery, then authorize (with the URL passed through `edit`).
    async fn start_with(sb: &FlameConnectSandbox, edit: impl Fn(String) -> String) -> Flow {
        let mut c = Client::new(&sb.upstreams());
        let d = c.get(DISCOVERY).await;
        assert_eq!(d.status, 200, "{}", d.text);
        let d = d.json();
        let authorize = d["authorization_endpoint"].as_str().unwrap().to_owned();
        let (verifier, challenge) = pkce();
        let state = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>());
        let nonce = hex::encode(Sha256::digest(
            URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>()),
        ));
        let url = edit(format!(
            "{authorize}?client_id={CLIENT_ID}&response_type=code&redirect_uri={}&scope={}&state={state}&code_challenge={challenge}&code_challenge_method=S256&nonce={nonce}&client_info=1",
            enc(REDIRECT_URI),
            enc(&format!("{SCOPE} openid profile offline_access")),
        ));
        let r = c.get_routed(&url).await;
        assert_eq!(r.status, 200, "{url}: {}", r.text);
        Flow {
            csrf: setting(&r.text, "csrf"),
            trans_id: setting(&r.text, "transId"),
            cookie_names: r.set_cookie_names(),
            page: r.text,
            token_endpoint: d["token_endpoint"].as_str().unwrap().to_owned(),
            c,
            verifier,
            state,
            nonce,
        }
    }

    /// The cookie header flameconnect builds by hand: every cookie, unquoted.
    fn cookies(&self) -> String {
        self.cookie_names
            .iter()
            .filter_map(|n| self.c.cookie(ORIGIN, n).map(|v| format!("{n}={v}")))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn self_asserted_raw(
        &mut self,
        cookie: &str,
        csrf: &str,
        fields: &[(&str, &str)],
    ) -> Resp {
        let url = format!("{FLOW_BASE}/SelfAsserted?tx={}&p={POLICY}", self.trans_id);
        let r = self
            .c
            .send_raw(
                Method::POST,
                &url,
                cookie,
                &[
                    ("X-CSRF-TOKEN", csrf),
                    ("X-Requested-With", "XMLHttpRequest"),
                ],
                Some((
                    "application/x-www-form-urlencoded; charset=UTF-8",
                    urlencoded(fields),
                )),
            )
            .await;
        // Merge the renewed cookies, as flameconnect does.
        for v in r.headers.get_all(SET_COOKIE) {
            let pair = v.to_str().unwrap().split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.c.set_cookie(ORIGIN, name, value);
            if !self.cookie_names.iter().any(|n| n == name) {
                self.cookie_names.push(name.to_owned());
            }
        }
        r
    }

    async fn sign_in(&mut self, email: &str, password: &str) -> Resp {
        let (cookie, csrf) = (self.cookies(), self.csrf.clone());
        self.self_asserted_raw(
            &cookie,
            &csrf,
            &[
                ("request_type", "RESPONSE"),
                ("email", email),
                ("password", password),
            ],
        )
        .await
    }

    /// `confirmed` with the values not encoded, as flameconnect sends them.
    async fn confirmed(&mut self) -> Resp {
        let url = confirmed_url(&self.csrf, &self.trans_id);
        self.c.get_routed(&url).await
    }

    /// Follows same-origin redirects until the app redirect; answers it.
    async fn follow_to_app(&mut self) -> String {
        let mut r = self.confirmed().await;
        for _ in 0..20 {
            assert_eq!(r.status, 302, "{}", r.text);
            let next = r.location();
            if next.starts_with(&format!("{REDIRECT_URI}/"))
                || next.starts_with(&format!("{REDIRECT_URI}?"))
            {
                return next;
            }
            assert!(next.starts_with(ORIGIN), "{next}");
            r = self.c.get(&next).await;
        }
        panic!("too many redirects");
    }

    async fn token(&mut self, code: &str, verifier: &str) -> Resp {
        let scope = format!("{SCOPE} openid profile offline_access");
        let url = self.token_endpoint.clone();
        self.c
            .post_form(
                &url,
                &[
                    ("client_id", CLIENT_ID),
                    ("grant_type", "authorization_code"),
                    ("code", code),
                    ("redirect_uri", REDIRECT_URI),
                    ("scope", &scope),
                    ("code_verifier", verifier),
                    ("client_info", "1"),
                ],
            )
            .await
    }

    async fn refresh(&mut self, refresh_token: &str) -> Resp {
        let scope = format!("{SCOPE} openid profile offline_access");
        let url = self.token_endpoint.clone();
        self.c
            .post_form(
                &url,
                &[
                    ("client_id", CLIENT_ID),
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh_token),
                    ("scope", &scope),
                    ("client_info", "1"),
                ],
            )
            .await
    }

    /// Signs in; answers the code from the app redirect.
    async fn to_code(sb: &FlameConnectSandbox, email: &str) -> (Flow, String) {
        let mut f = Flow::start(sb).await;
        assert_eq!(
            f.sign_in(email, DEMO_PASSWORD).await.json()["status"],
            "200"
        );
        let url = f.follow_to_app().await;
        let code = param(&url, "code").expect("a code");
        (f, code)
    }

    async fn signed_in(sb: &FlameConnectSandbox) -> (Flow, Value) {
        let (mut f, code) = Flow::to_code(sb, DEMO_EMAIL).await;
        let verifier = f.verifier.clone();
        let tokens = f.token(&code, &verifier).await.ok_json();
        (f, tokens)
    }
}

#[tokio::test]
async fn a_full_msal_login_yields_an_id_token_with_the_nonce() {
    let sb = FlameConnectSandbox::spawn().await;
    let mut f = Flow::start(&sb).await;
    assert!(f.page.contains("var SETTINGS = {"));
    assert!(f.page.contains(r#""api":"CombinedSigninAndSignup""#));
    assert!(f
        .page
        .contains(r#""policy":"B2C_1A_FirePhoneSignUpOrSignInWithPhoneOrEmail""#));
    assert!(f.trans_id.starts_with("StateProperties="));
    let tid: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(f.trans_id.strip_prefix("StateProperties=").unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(tid["TID"].is_string());
    assert_eq!(f.c.cookie(ORIGIN, "x-ms-cpim-csrf").unwrap(), f.csrf);
    assert!(f.csrf.contains('+') && f.csrf.contains('/') && f.csrf.ends_with('='));
    assert!(f
        .cookie_names
        .iter()
        .any(|n| n.starts_with("x-ms-cpim-cache|")));
    assert!(f.token_endpoint.ends_with(
        "/gdhvb2cflameconnect.onmicrosoft.com/b2c_1a_firephonesignuporsigninwithphoneoremail/oauth2/v2.0/token"
    ));

    let old_trans = f.c.cookie(ORIGIN, "x-ms-cpim-trans").unwrap();
    let r = f.sign_in(DEMO_EMAIL, DEMO_PASSWORD).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers[CONTENT_TYPE], "text/json; charset=utf-8");
    assert_eq!(r.json(), json!({"status": "200"}));
    let renewed = r.set_cookie_names();
    assert!(renewed.contains(&"x-ms-cpim-trans".to_owned()));
    assert!(renewed.iter().any(|n| n.starts_with("x-ms-cpim-cache|")));
    assert_ne!(f.c.cookie(ORIGIN, "x-ms-cpim-trans").unwrap(), old_trans);

    let first = f.confirmed().await;
    assert_eq!(first.status, 302);
    assert!(
        first.location().starts_with(ORIGIN),
        "a same-origin hop first"
    );
    let hop = f.c.get(&first.location()).await;
    assert_eq!(hop.status, 302);
    let app = hop.location();
    assert_real(&app);
    assert!(
        app.starts_with(&format!(
            "{REDIRECT_URI}/?state={}&trustFrameworkPolicy={POLICY}&client_info=",
            f.state
        )),
        "{app}"
    );
    let q = query_of(&app);
    assert_eq!(q.last().unwrap().0, "code");
    let code = param(&app, "code").unwrap();
    let client_info: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(param(&app, "client_info").unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(client_info["uid"].is_string() && client_info["utid"].is_string());
    // The hop works once.
    assert_eq!(f.c.get(&first.location()).await.status, 400);

    let verifier = f.verifier.clone();
    let j = f.token(&code, &verifier).await.ok_json();
    assert_eq!(j["token_type"], "Bearer");
    assert_eq!(j["expires_in"], ACCESS_TOKEN_LIFETIME.as_secs());
    for k in ["access_token", "refresh_token", "scope", "client_info"] {
        assert!(j[k].is_string(), "{k}");
    }
    assert!(j["refresh_token_expires_in"].is_number());
    let id = jwt_payload(j["id_token"].as_str().unwrap());
    assert_eq!(id["nonce"], f.nonce.as_str());
    assert_eq!(id["aud"], CLIENT_ID);
    assert_eq!(id["emails"], json!([DEMO_EMAIL]));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(id["exp"].as_i64().unwrap() > now);
    assert!(id["iss"].as_str().unwrap().starts_with(ORIGIN));
    assert!(id["sub"].is_string() && id["iat"].is_number());

    f.c.assert_issued(
        ORIGIN,
        &[
            code.as_str(),
            j["access_token"].as_str().unwrap(),
            j["refresh_token"].as_str().unwrap(),
            j["id_token"].as_str().unwrap(),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_wrong_password_is_http_200_with_status_400_and_confirmed_redirects_with_an_error() {
    let sb = FlameConnectSandbox::spawn().await;
    let mut f = Flow::start(&sb).await;
    let r = f.sign_in(DEMO_EMAIL, "wrong").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"status": "400", "errorCode": "AADB2C90053", "message": "Invalid username or password."})
    );
    let r = f.confirmed().await;
    assert_eq!(r.status, 302);
    let location = r.location();
    assert!(
        location.starts_with(&format!(
            "{REDIRECT_URI}/?error=access_denied&error_description="
        )),
        "{location}"
    );
    assert_eq!(param(&location, "state").unwrap(), f.state);
    assert!(param(&location, "code").is_none());
}

#[tokio::test]
async fn a_quoted_cookie_is_refused() {
    let sb = FlameConnectSandbox::spawn().await;
    let mut f = Flow::start(&sb).await;
    let trans = f.c.cookie(ORIGIN, "x-ms-cpim-trans").unwrap();
    let quoted = f.cookies().replace(
        &format!("x-ms-cpim-trans={trans}"),
        &format!("x-ms-cpim-trans=\"{trans}\""),
    );
    let csrf = f.csrf.clone();
    let fields = [
        ("request_type", "RESPONSE"),
        ("email", DEMO_EMAIL),
        ("password", DEMO_PASSWORD),
    ];
    let r = f.self_asserted_raw(&quoted, &csrf, &fields).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["errorCode"], "AADB2C90240");
    assert_eq!(
        f.sign_in(DEMO_EMAIL, DEMO_PASSWORD).await.json()["status"],
        "200"
    );
}

#[tokio::test]
async fn a_csrf_header_other_than_the_cookie_is_refused() {
    let sb = FlameConnectSandbox::spawn().await;
    let other = Flow::start(&sb).await;
    let mut f = Flow::start(&sb).await;
    let cookie = f.cookies();
    let fields = [
        ("request_type", "RESPONSE"),
        ("email", DEMO_EMAIL),
        ("password", DEMO_PASSWORD),
    ];
    let r = f.self_asserted_raw(&cookie, &other.csrf, &fields).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["errorCode"], "AADB2C90240");
    // Nor may confirmed name another transaction.
    f.sign_in(DEMO_EMAIL, DEMO_PASSWORD).await;
    let url = confirmed_url(&f.csrf, &other.trans_id);
    assert_eq!(f.c.get(&url).await.status, 400);
    // Encoded values are read as well.
    let url = confirmed_url(&enc(&f.csrf), &enc(&f.trans_id));
    assert_eq!(f.c.get(&url).await.status, 302);
}

#[tokio::test]
async fn the_renewed_trans_cookie_is_required_after_sign_in() {
    let sb = FlameConnectSandbox::spawn().await;
    let mut f = Flow::start(&sb).await;
    let old = f.c.cookie(ORIGIN, "x-ms-cpim-trans").unwrap();
    f.sign_in(DEMO_EMAIL, DEMO_PASSWORD).await;
    f.c.set_cookie(ORIGIN, "x-ms-cpim-trans", &old);
    assert_eq!(f.confirmed().await.status, 400);
}

#[tokio::test]
async fn authorize_is_strict_about_client_redirect_scope_and_pkce() {
    let sb = FlameConnectSandbox::spawn().await;
    let mut c = Client::new(&sb.upstreams());
    let (_, challenge) = pkce();
    let good = format!(
        "{FLOW_BASE}/oauth2/v2.0/authorize?client_id={CLIENT_ID}&response_type=code&redirect_uri={}&scope={}&state=s&code_challenge={challenge}&code_challenge_method=S256&nonce=n&client_info=1",
        enc(REDIRECT_URI),
        enc(&format!("{SCOPE} openid profile offline_access")),
    );
    assert_eq!(c.get_routed(&good).await.status, 200);
    for bad in [
        good.replace(
            &format!("client_id={CLIENT_ID}"),
            "client_id=00000000-0000-0000-0000-000000000000",
        ),
        good.replace(
            &enc(REDIRECT_URI),
            &enc("msal1af761dc-085a-411f-9cb9-53e5e2115bd2://other"),
        ),
        good.replace(&enc(&format!("{SCOPE} openid")), &enc(SCOPE)),
        good.replace(&enc(&format!("{SCOPE} ")), ""),
        good.replace("S256", "plain"),
    ] {
        assert_eq!(c.get(&bad).await.status, 400, "{bad}");
    }
}

#[tokio::test]
async fn a_pkce_mismatch_is_refused() {
    let sb = FlameConnectSandbox::spawn().await;
    let (mut f, code) = Flow::to_code(&sb, DEMO_EMAIL).await;
    let (other, _) = pkce();
    let r = f.token(&code, &other).await;
    r.assert_invalid_grant();
}

#[tokio::test]
async fn a_code_is_redeemed_only_once() {
    let sb = FlameConnectSandbox::spawn().await;
    let (mut f, code) = Flow::to_code(&sb, DEMO_EMAIL).await;
    let verifier = f.verifier.clone();
    assert_eq!(f.token(&code, &verifier).await.status, 200);
    let r = f.token(&code, &verifier).await;
    r.assert_invalid_grant();
}

#[tokio::test]
async fn refresh_rotates_and_the_old_refresh_token_is_refused() {
    let sb = FlameConnectSandbox::spawn().await;
    let (mut f, tokens) = Flow::signed_in(&sb).await;
    let first = tokens["refresh_token"].as_str().unwrap().to_owned();
    let r = f.refresh(&first).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let j = r.json();
    assert_ne!(j["refresh_token"].as_str().unwrap(), first);
    let id = jwt_payload(j["id_token"].as_str().unwrap());
    assert!(id.get("nonce").is_none());
    assert_eq!(id["aud"], CLIENT_ID);
    let old = f.refresh(&first).await;
    old.assert_invalid_grant();
    assert_eq!(sb.refreshes(), 2);
}

#[tokio::test]
async fn revoke_makes_refresh_fail_with_invalid_grant() {
    let sb = FlameConnectSandbox::spawn().await;
    let (mut f, tokens) = Flow::signed_in(&sb).await;
    let r =
        f.c.post_json(
            &format!("{ORIGIN}/testing/revoke"),
            json!({"account": DEMO_EMAIL}),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = f.refresh(tokens["refresh_token"].as_str().unwrap()).await;
    r.assert_invalid_grant();
    let unknown =
        f.c.post_json(
            &format!("{ORIGIN}/testing/revoke"),
            json!({"account": "nobody@flameconnect.test"}),
        )
        .await;
    assert_eq!(unknown.status, 404);
}

#[tokio::test]
async fn the_browser_form_yields_a_redirect_url_whose_code_works() {
    let sb = FlameConnectSandbox::spawn().await;
    let mut f = Flow::start(&sb).await;
    assert_sign_in_form(&f.page);
    let action = format!(
        "{ORIGIN}/gdhvb2cflameconnect.onmicrosoft.com/b2c_1a_firephonesignuporsigninwithphoneoremail/browser/signin"
    );
    let (csrf, tx) = (f.csrf.clone(), f.trans_id.clone());
    let r =
        f.c.post_form(
            &action,
            &[
                ("csrf_token", &csrf),
                ("tx", &tx),
                ("email", DEMO_EMAIL),
                ("password", DEMO_PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let url = shown_redirect_url(&r.text);
    assert_eq!(param(&url, "state").unwrap(), f.state);
    let code = param(&url, "code").unwrap();
    let verifier = f.verifier.clone();
    let r = f.token(&code, &verifier).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        jwt_payload(r.json()["id_token"].as_str().unwrap())["nonce"],
        f.nonce.as_str()
    );
}

#[tokio::test]
async fn every_fault_kind_meets_some_step() {
    let sb = FlameConnectSandbox::spawn().await;
    let mut c = Client::with_timeout(&sb.upstreams(), Duration::from_millis(500));
    sb.set_fault("discovery", Fault::Unavailable503);
    assert_eq!(c.get(DISCOVERY).await.status, 503);
    sb.set_fault("discovery", Fault::Stall);
    assert!(c.try_get(DISCOVERY).await.unwrap_err().is_timeout());
    sb.set_fault("discovery", Fault::Garbage);
    let r = c.get(DISCOVERY).await;
    assert_eq!(r.status, 200);
    assert!(serde_json::from_str::<Value>(&r.text).is_err());
    sb.clear_faults();

    let f = Flow::start(&sb).await;
    let authorize = format!(
        "{FLOW_BASE}/oauth2/v2.0/authorize?client_id={CLIENT_ID}&response_type=code&redirect_uri={}&scope={}&code_challenge={}&code_challenge_method=S256",
        enc(REDIRECT_URI),
        enc(&format!("{SCOPE} openid")),
        pkce().1
    );
    sb.set_fault_times("authorize", Fault::Garbage, 1);
    let r = c.get(&authorize).await;
    assert_eq!(r.status, 200);
    assert!(!r.text.contains("SETTINGS"));
    assert!(c.get_routed(&authorize).await.text.contains("var SETTINGS"));

    let mut f = f;
    sb.set_fault_times("self_asserted", Fault::Reset, 1);
    let url = format!("{FLOW_BASE}/SelfAsserted?tx={}&p={POLICY}", f.trans_id);
    let raw = reqwest::Client::new()
        .post(f.c.connect_url(&url))
        .send()
        .await;
    assert!(raw.unwrap_err().is_request());
    assert_eq!(
        f.sign_in(DEMO_EMAIL, DEMO_PASSWORD).await.json()["status"],
        "200"
    );

    sb.set_fault_times("confirmed", Fault::WrongShape, 1);
    let r = f.confirmed().await;
    assert_eq!((r.status, r.json()), (200, json!({"unexpected": true})));
    let code = param(&f.follow_to_app().await, "code").unwrap();

    sb.set_fault_times("token", Fault::Unavailable503, 1);
    let verifier = f.verifier.clone();
    assert_eq!(f.token(&code, &verifier).await.status, 503);
    let tokens = f.token(&code, &verifier).await.json();

    // Over HTTP: the refresh stalls once.
    let r =
        f.c.post_json(
            &format!("{ORIGIN}/testing/faults"),
            json!({"step": "refresh", "fault": "stall", "count": 1}),
        )
        .await;
    assert_eq!(r.status, 200);
    let rt = tokens["refresh_token"].as_str().unwrap();
    let stalled = c
        .try_post_form(
            &f.token_endpoint,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", rt),
                ("client_id", CLIENT_ID),
            ],
        )
        .await;
    assert!(stalled.unwrap_err().is_timeout());
    assert_eq!(f.refresh(rt).await.status, 200);
    let list = f.c.get(&format!("{ORIGIN}/testing/faults")).await.json();
    assert_eq!(list["steps"].as_array().unwrap().len(), STEPS.len());
}

// ---------------------------------------------------------------------------------------------
// The API (mobileapi.gdhv-iot.com), as `flameconnect`'s client calls it.

const API: &str = "https://mobileapi.gdhv-iot.com";

async fn get_fires(c: &Client, authorization: &str) -> Resp {
    let mut headers = vec![
        ("app_name", "FlameConnect"),
        ("api_version", "1.0"),
        ("app_version", "2.22.0"),
    ];
    if !authorization.is_empty() {
        headers.push(("Authorization", authorization));
    }
    c.send_raw(
        Method::GET,
        &format!("{API}/api/Fires/GetFires"),
        "",
        &headers,
        None,
    )
    .await
}

fn assert_denied(r: &Resp) {
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(r.json(), json!({"Message": API_DENIED}));
    assert_eq!(r.headers["www-authenticate"], "Bearer");
}

#[tokio::test]
async fn get_fires_lists_the_users_fires_for_a_live_access_token() {
    let sb = FlameConnectSandbox::spawn().await;
    assert!(sb
        .upstreams()
        .contains(&format!("{API}=http://{}", sb.api_addr)));
    let (mut f, tokens) = Flow::signed_in(&sb).await;
    let access = tokens["access_token"].as_str().unwrap();
    let r = get_fires(&f.c, &format!("Bearer {access}")).await;
    let fires = r.ok_json();
    assert_eq!(fires[0]["FriendlyName"], "Living room");
    for key in [
        "FireId",
        "FriendlyName",
        "Brand",
        "ProductType",
        "ProductModel",
        "ItemCode",
        "IoTConnectionState",
        "WithHeat",
        "IsIotFire",
    ] {
        assert!(!fires[0][key].is_null(), "{key}");
    }

    // The request is kept as received, here and over HTTP (from any host of the service).
    let last = sb.last_api_request().unwrap();
    assert_eq!(
        (last.origin, last.method.as_str(), last.path.as_str()),
        (API_ORIGIN, "GET", "/api/Fires/GetFires")
    );
    assert_eq!(
        last.header("authorization"),
        Some(format!("Bearer {access}").as_str())
    );
    assert_eq!(last.header("app_name"), Some("FlameConnect"));
    assert_eq!(last.header("cookie"), None);
    let over_http = f.c.get(&format!("{ORIGIN}/testing/last-api-request")).await;
    let j = over_http.ok_json();
    assert_eq!(j["path"], "/api/Fires/GetFires");
    assert_eq!(j["origin"], API);
    assert!(j["headers"]
        .as_array()
        .unwrap()
        .contains(&json!(["authorization", format!("Bearer {access}")])));
    // The controls themselves are not data requests.
    assert_eq!(sb.last_api_request().unwrap(), last);

    // The other account sees its own fires.
    let (_, other) = {
        let (mut f, code) = Flow::to_code(&sb, OTHER_EMAIL).await;
        let verifier = f.verifier.clone();
        let tokens = f.token(&code, &verifier).await.ok_json();
        (f, tokens)
    };
    let theirs = get_fires(
        &f.c,
        &format!("Bearer {}", other["access_token"].as_str().unwrap()),
    )
    .await
    .ok_json();
    assert_ne!(theirs, fires);
}

#[tokio::test]
async fn get_fires_refuses_missing_forged_other_and_expired_tokens() {
    let sb = FlameConnectSandbox::spawn().await;
    let (mut f, tokens) = Flow::signed_in(&sb).await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    assert_denied(&get_fires(&f.c, "").await);
    assert_denied(&get_fires(&f.c, &format!("Basic {access}")).await);
    assert_denied(&get_fires(&f.c, &format!("Bearer {access}x")).await);
    // Claims changed under the old signature.
    let parts: Vec<&str> = access.split('.').collect();
    let mut claims = jwt_payload(&access);
    claims["exp"] = json!(claims["exp"].as_i64().unwrap() + 3600);
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );
    assert_denied(&get_fires(&f.c, &format!("Bearer {forged}")).await);
    // The id_token and the refresh token are not access tokens.
    for other in ["id_token", "refresh_token"] {
        let t = tokens[other].as_str().unwrap();
        assert_denied(&get_fires(&f.c, &format!("Bearer {t}")).await);
    }
    assert_eq!(
        get_fires(&f.c, &format!("bearer {access}")).await.status,
        200
    );

    sb.advance_clock(ACCESS_TOKEN_LIFETIME + Duration::from_secs(1));
    assert_denied(&get_fires(&f.c, &format!("Bearer {access}")).await);
    let renewed = f
        .refresh(tokens["refresh_token"].as_str().unwrap())
        .await
        .ok_json();
    let fresh = renewed["access_token"].as_str().unwrap();
    assert_eq!(
        get_fires(&f.c, &format!("Bearer {fresh}")).await.status,
        200
    );

    // Revocation ends the access token at once.
    sb.revoke(DEMO_EMAIL);
    assert_denied(&get_fires(&f.c, &format!("Bearer {fresh}")).await);
}

#[tokio::test]
async fn invalidated_access_tokens_are_refused_while_a_refresh_still_works() {
    let sb = FlameConnectSandbox::spawn().await;
    let (mut f, tokens) = Flow::signed_in(&sb).await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    assert_eq!(sb.invalidate_api_tokens(), 1);
    assert_denied(&get_fires(&f.c, &format!("Bearer {access}")).await);
    let renewed = f
        .refresh(tokens["refresh_token"].as_str().unwrap())
        .await
        .ok_json();
    let fresh = renewed["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        get_fires(&f.c, &format!("Bearer {fresh}")).await.status,
        200
    );

    // Over HTTP, on the API host as on the B2C host.
    for host in [API, ORIGIN] {
        let r =
            f.c.post_json(&format!("{host}/testing/invalidate-api-tokens"), json!({}))
                .await;
        assert_eq!(r.ok_json()["invalidated"], if host == API { 1 } else { 0 });
    }
    assert_denied(&get_fires(&f.c, &format!("Bearer {fresh}")).await);
    let again = f
        .refresh(renewed["refresh_token"].as_str().unwrap())
        .await
        .ok_json();
    let token = again["access_token"].as_str().unwrap();
    assert_eq!(
        get_fires(&f.c, &format!("Bearer {token}")).await.status,
        200
    );
}

#[tokio::test]
async fn get_fires_meets_its_faults() {
    let sb = FlameConnectSandbox::spawn().await;
    let (f, tokens) = Flow::signed_in(&sb).await;
    let access = tokens["access_token"].as_str().unwrap();
    sb.set_fault_times("fires", Fault::Unavailable503, 1);
    assert_eq!(
        get_fires(&f.c, &format!("Bearer {access}")).await.status,
        503
    );
    assert_eq!(
        get_fires(&f.c, &format!("Bearer {access}")).await.status,
        200
    );
}
