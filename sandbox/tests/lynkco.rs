//! The Lynk & Co double driven as Hass-Lynk-Co (ee48faaa) drives the real service: authorize →
//! SelfAsserted (password) → CombinedSigninAndSignup/confirmed (the SMS goes out) →
//! SelfAsserted (code) → SelfAsserted/confirmed (302 with the code) → token (PKCE) →
//! validate-session (CCC token), then refresh on the tenant-ID path.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::{
    assert_sign_in_form, enc, jwt_payload, s256, shown_redirect_url, urlencoded, Client, Resp,
};
use reqwest::header::CONTENT_TYPE;
use reqwest::Method;
use sandbox::faults::Fault;
use sandbox::lynkco::*;
use serde_json::{json, Value};

const B2C: &str = "https://login.lynkco.com";
const IAM: &str = "https://iam-service-prod.westeurope.cloudapp.azure.com";
const BASE: &str = "https://login.lynkco.com/lynkcoprod.onmicrosoft.com/b2c_1a_signin_mfa/";
const REFRESH_URL: &str = "https://login.lynkco.com/dc6c7c0c-5ba7-414a-a7d1-d62ca1f73d13/b2c_1a_signin_mfa/oauth2/v2.0/token";

/// A PKCE pair: 64 hex characters and their S256 challenge.
fn pkce() -> (String, String) {
    let verifier = hex::encode(rand::random::<[u8; 32]>());
    let challenge = s256(&verifier);
    (verifier, challenge)
}

fn authorize_url(challenge: &str) -> String {
    format!(
        "{BASE}oauth2/v2.0/authorize?response_type=code&scope={}&code_challenge={challenge}&code_challenge_method=S256&redirect_uri={}&client_id={CLIENT_ID}",
        enc(&format!("{SCOPE_BASE}.read {SCOPE_BASE}.write profile offline_access")),
        enc(REDIRECT_URI)
    )
}

fn form(fields: &[(&str, &str)]) -> Option<(&'static str, String)> {
    Some(("application/x-www-form-urlencoded", urlencoded(fields)))
}

/// One login in progress: its cookie jar, PKCE verifier and the B2C transaction.
struct Login {
    c: Client,
    verifier: String,
    csrf: String,
    trans: String,
    page_view_id: String,
    page: String,
}

impl Login {
    async fn start(sb: &LynkcoSandbox) -> Login {
        let mut c = Client::new(&sb.upstreams());
        let (verifier, challenge) = pkce();
        let r = c.get_routed(&authorize_url(&challenge)).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let page_view_id = r.headers["x-ms-gateway-requestid"]
            .to_str()
            .unwrap()
            .to_owned();
        let csrf = c.cookie(B2C, "x-ms-cpim-csrf").expect("csrf cookie");
        let trans = c.cookie(B2C, "x-ms-cpim-trans").expect("trans cookie");
        Login {
            c,
            verifier,
            csrf,
            trans,
            page_view_id,
            page: r.text,
        }
    }

    fn tx(&self) -> String {
        enc(&format!("StateProperties={}", self.trans))
    }

    fn cookies(&self) -> String {
        format!(
            "x-ms-cpim-csrf={}; x-ms-cpim-trans={}",
            self.csrf, self.trans
        )
    }

    async fn self_asserted_raw(
        &self,
        cookie: &str,
        csrf: &str,
        tx: &str,
        fields: &[(&str, &str)],
    ) -> Resp {
        self.c
            .send_raw(
                Method::POST,
                &format!("{BASE}SelfAsserted?p=B2C_1A_signin_mfa&tx={tx}"),
                cookie,
                &[("x-csrf-token", csrf)],
                form(fields),
            )
            .await
    }

    async fn self_asserted(&self, fields: &[(&str, &str)]) -> Resp {
        self.self_asserted_raw(&self.cookies(), &self.csrf, &self.tx(), fields)
            .await
    }

    async fn password(&self, email: &str, password: &str) -> Resp {
        self.self_asserted(&[
            ("request_type", "RESPONSE"),
            ("signInName", email),
            ("password", password),
        ])
        .await
    }

    /// CombinedSigninAndSignup/confirmed: the phone page, and the SMS.
    async fn confirmed(&mut self) -> Resp {
        let diags = json!({"pageViewId": self.page_view_id, "pageId": "CombinedSigninAndSignup", "trace": []});
        let url = format!(
            "{BASE}api/CombinedSigninAndSignup/confirmed?rememberMe=false&csrf_token={}&tx={}&p=B2C_1A_signin_mfa&diags={}",
            enc(&self.csrf),
            self.tx(),
            enc(&diags.to_string())
        );
        self.c.get_routed(&url).await
    }

    async fn code(&self, code: &str) -> Resp {
        self.self_asserted(&[("verificationCode", code), ("request_type", "RESPONSE")])
            .await
    }

    /// api/SelfAsserted/confirmed: the 302 to the app.
    async fn redirect(&mut self) -> Resp {
        let url = format!(
            "{BASE}api/SelfAsserted/confirmed?csrf_token={}&tx={}&p=B2C_1A_signin_mfa&diags={}",
            enc(&self.csrf),
            self.tx(),
            enc(r#"{"pageViewId":"x","pageId":"SelfAsserted","trace":[]}"#)
        );
        self.c.get_routed(&url).await
    }

    /// Signed in with the password; the SMS code has gone out.
    async fn to_sms(sb: &LynkcoSandbox, email: &str) -> Login {
        let mut l = Login::start(sb).await;
        assert_eq!(
            l.password(email, DEMO_PASSWORD).await.json()["status"],
            "200"
        );
        assert_eq!(l.confirmed().await.status, 200);
        l
    }

    /// Password, SMS code and the redirect: the authorization code.
    async fn to_code(sb: &LynkcoSandbox, email: &str) -> (Login, String) {
        let mut l = Login::to_sms(sb, email).await;
        let code = sb.latest_code(email).expect("an SMS");
        assert_eq!(l.code(&code).await.json()["status"], "200");
        let r = l.redirect().await;
        assert_eq!(r.status, 302, "{}", r.text);
        let code = code_of(&r.location());
        (l, code)
    }

    async fn token(&mut self, code: &str, verifier: &str) -> Resp {
        let scope = format!("{SCOPE_BASE}.read {SCOPE_BASE}.write openid profile offline_access");
        self.c
            .post_form(
                &format!("{BASE}oauth2/v2.0/token"),
                &[
                    ("client_info", "1"),
                    ("scope", &scope),
                    ("code", code),
                    ("grant_type", "authorization_code"),
                    ("code_verifier", verifier),
                    ("redirect_uri", REDIRECT_URI),
                    ("client_id", CLIENT_ID),
                ],
            )
            .await
    }
}

fn code_of(location: &str) -> String {
    let prefix = format!("{REDIRECT_URI}?");
    let query = location
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("not the app redirect: {location}"));
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no code in {location}"))
}

async fn refresh(c: &mut Client, refresh_token: &str) -> Resp {
    c.post_form(
        REFRESH_URL,
        &[
            ("refresh_token", refresh_token),
            ("grant_type", "refresh_token"),
        ],
    )
    .await
}

async fn validate_session(c: &Client, access_token: &str) -> Resp {
    c.send_raw(
        Method::POST,
        &format!("{IAM}/validate-session"),
        "",
        &[("X-Auth-Token", access_token), ("api-version", "1")],
        Some((
            "application/json",
            json!({"deviceUuid": "0f8fad5b-d9cb-469f-a165-70867728950e", "isLogin": true})
                .to_string(),
        )),
    )
    .await
}

/// A signed-in account's tokens.
async fn signed_in(sb: &LynkcoSandbox) -> (Login, Value) {
    let (mut l, code) = Login::to_code(sb, DEMO_EMAIL).await;
    let verifier = l.verifier.clone();
    let tokens = l.token(&code, &verifier).await.ok_json();
    (l, tokens)
}

#[tokio::test]
async fn a_full_login_yields_tokens_and_a_ccc_token() {
    let sb = LynkcoSandbox::spawn().await;
    let mut l = Login::start(&sb).await;
    assert!(l.page.contains("var SETTINGS = {"));
    assert!(l.page.contains(r#""api":"CombinedSigninAndSignup""#));
    assert!(l.page.contains(&format!(r#""csrf":"{}""#, l.csrf)));
    for v in [&l.csrf, &l.trans] {
        assert!(
            v.contains('+') && v.contains('/') && v.ends_with('='),
            "{v}"
        );
    }

    let r = l.password(DEMO_EMAIL, DEMO_PASSWORD).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers[CONTENT_TYPE], "text/json; charset=utf-8");
    assert_eq!(r.json(), json!({"status": "200"}));
    assert!(sb.inbox().is_empty(), "the SMS goes out at confirmed");

    let r = l.confirmed().await;
    assert_eq!(r.status, 200);
    let next_view = r.headers["x-ms-gateway-requestid"].to_str().unwrap();
    assert_ne!(next_view, l.page_view_id);
    assert!(r.text.contains("+46 *** *** 12"));
    let sms = &sb.inbox()[0];
    assert_eq!(
        (sms.channel, sms.to, sms.account),
        ("sms", "+46 *** *** 12", DEMO_EMAIL)
    );
    assert!(sms.text.contains(&sms.code));
    let listed = l.c.get(&format!("{B2C}/inbox.json")).await.json();
    assert_eq!(listed[0]["code"], sms.code.as_str());
    assert!(l
        .c
        .get(&format!("{B2C}/inbox"))
        .await
        .text
        .contains(&sms.code));

    assert_eq!(l.code(&sms.code).await.json(), json!({"status": "200"}));
    let r = l.redirect().await;
    assert_eq!(r.status, 302);
    let location = r.location();
    assert!(
        location.starts_with(&format!("{REDIRECT_URI}?code=")),
        "{location}"
    );
    let code = code_of(&location);

    let verifier = l.verifier.clone();
    let j = l.token(&code, &verifier).await.ok_json();
    for k in [
        "access_token",
        "refresh_token",
        "id_token",
        "scope",
        "client_info",
    ] {
        assert!(j[k].is_string(), "{k} in {j}");
    }
    assert_eq!(j["token_type"], "Bearer");
    assert_eq!(j["expires_in"], ACCESS_TOKEN_LIFETIME.as_secs());
    assert!(j["refresh_token_expires_in"].is_number());
    let id = jwt_payload(j["id_token"].as_str().unwrap());
    assert_eq!(id["aud"], CLIENT_ID);
    assert_eq!(id["emails"], json!([DEMO_EMAIL]));
    let access = jwt_payload(j["access_token"].as_str().unwrap());
    assert!(access["exp"].as_i64().unwrap() > access["iat"].as_i64().unwrap());

    let r = validate_session(&l.c, j["access_token"].as_str().unwrap()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let ccc = r.json()["cccToken"].as_str().unwrap().to_owned();
    let claims = jwt_payload(&ccc);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        CCC_TOKEN_LIFETIME.as_secs() as i64
    );

    // Everything handed out is listed for the leak checks.
    l.c.assert_issued(
        B2C,
        &[
            code.as_str(),
            j["access_token"].as_str().unwrap(),
            j["refresh_token"].as_str().unwrap(),
            j["id_token"].as_str().unwrap(),
            ccc.as_str(),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_wrong_password_is_http_200_with_status_400_and_confirmed_redirects_with_an_error() {
    let sb = LynkcoSandbox::spawn().await;
    let mut l = Login::start(&sb).await;
    let r = l.password(DEMO_EMAIL, "wrong").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"status": "400", "errorCode": "AADB2C90053", "message": "The username or password provided in the request are invalid."})
    );
    let unknown = l.password("nobody@lynkco.test", DEMO_PASSWORD).await;
    assert_eq!(unknown.json()["errorCode"], "AADB2C90053");
    let r = l.confirmed().await;
    assert_eq!(r.status, 302);
    let location = r.location();
    assert!(
        location.starts_with(&format!(
            "{REDIRECT_URI}?error=access_denied&error_description=AADB2C90053"
        )),
        "{location}"
    );
    assert!(sb.inbox().is_empty());
}

#[tokio::test]
async fn a_quoted_csrf_cookie_is_refused() {
    let sb = LynkcoSandbox::spawn().await;
    let l = Login::start(&sb).await;
    let quoted = format!("x-ms-cpim-csrf=\"{}\"; x-ms-cpim-trans={}", l.csrf, l.trans);
    let fields = [
        ("request_type", "RESPONSE"),
        ("signInName", DEMO_EMAIL),
        ("password", DEMO_PASSWORD),
    ];
    let r = l
        .self_asserted_raw(&quoted, &l.csrf, &l.tx(), &fields)
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["errorCode"], "AADB2C90240");
    let quoted_trans = format!("x-ms-cpim-csrf={}; x-ms-cpim-trans=\"{}\"", l.csrf, l.trans);
    let r = l
        .self_asserted_raw(&quoted_trans, &l.csrf, &l.tx(), &fields)
        .await;
    assert_eq!(r.status, 400);
    // Unquoted, the same request passes.
    assert_eq!(l.password(DEMO_EMAIL, DEMO_PASSWORD).await.status, 200);
}

#[tokio::test]
async fn a_csrf_header_other_than_the_cookie_or_a_wrong_tx_is_refused() {
    let sb = LynkcoSandbox::spawn().await;
    let other = Login::start(&sb).await;
    let l = Login::start(&sb).await;
    let fields = [
        ("request_type", "RESPONSE"),
        ("signInName", DEMO_EMAIL),
        ("password", DEMO_PASSWORD),
    ];
    let r = l
        .self_asserted_raw(&l.cookies(), &other.csrf, &l.tx(), &fields)
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["errorCode"], "AADB2C90240");
    let r = l
        .self_asserted_raw(&l.cookies(), &l.csrf, &other.tx(), &fields)
        .await;
    assert_eq!(r.status, 400);
    let r = l.self_asserted_raw("", &l.csrf, &l.tx(), &fields).await;
    assert_eq!(r.status, 400);
    // The page's transId names the same transaction.
    let trans_id = l.page.split(r#""transId":""#).nth(1).unwrap();
    let trans_id = &trans_id[..trans_id.find('"').unwrap()];
    let r = l
        .self_asserted_raw(&l.cookies(), &l.csrf, &enc(trans_id), &fields)
        .await;
    assert_eq!(r.json(), json!({"status": "200"}));
}

#[tokio::test]
async fn a_wrong_code_then_the_right_code_signs_in() {
    let sb = LynkcoSandbox::spawn().await;
    let mut l = Login::to_sms(&sb, OTHER_EMAIL).await;
    let code = sb.latest_code(OTHER_EMAIL).unwrap();
    assert_eq!(sb.inbox()[0].to, "+46 *** *** 34");
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let r = l.code(wrong).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"status": "400", "errorCode": "UserMessageIfVerificationFailedRetryAllowed", "message": "That code is incorrect. Please try again."})
    );
    assert_eq!(l.code(&code).await.json(), json!({"status": "200"}));
    let r = l.redirect().await;
    let token = l.token(&code_of(&r.location()), &l.verifier.clone()).await;
    let id = jwt_payload(token.json()["id_token"].as_str().unwrap());
    assert_eq!(id["emails"], json!([OTHER_EMAIL]));
}

#[tokio::test]
async fn an_expired_code_is_refused_and_a_reload_sends_a_new_one() {
    let sb = LynkcoSandbox::spawn().await;
    let mut l = Login::to_sms(&sb, DEMO_EMAIL).await;
    let old = sb.latest_code(DEMO_EMAIL).unwrap();
    sb.advance_clock(CODE_LIFETIME + Duration::from_secs(1));
    assert_eq!(
        l.code(&old).await.json(),
        json!({"status": "400", "errorCode": "UserMessageIfVerificationCodeExpired", "message": "That code has expired. Please request a new one."})
    );
    l.confirmed().await;
    assert_eq!(sb.inbox().len(), 2);
    let new = sb.latest_code(DEMO_EMAIL).unwrap();
    assert_eq!(l.code(&new).await.json()["status"], "200");
}

#[tokio::test]
async fn five_wrong_codes_void_the_transaction() {
    let sb = LynkcoSandbox::spawn().await;
    let mut l = Login::to_sms(&sb, DEMO_EMAIL).await;
    let code = sb.latest_code(DEMO_EMAIL).unwrap();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 1..MAX_CODE_FAILURES {
        assert_eq!(
            l.code(wrong).await.json()["errorCode"],
            "UserMessageIfVerificationFailedRetryAllowed"
        );
    }
    let max = json!({"status": "400", "errorCode": "UserMessageIfMaxRetryAttempted", "message": "You have made too many incorrect attempts. Please try again later."});
    assert_eq!(l.code(wrong).await.json(), max);
    assert_eq!(l.code(&code).await.json(), max);
    let r = l.redirect().await;
    assert!(r.location().contains("error=access_denied"));
}

#[tokio::test]
async fn a_pkce_mismatch_is_refused() {
    let sb = LynkcoSandbox::spawn().await;
    let (mut l, code) = Login::to_code(&sb, DEMO_EMAIL).await;
    let (other_verifier, _) = pkce();
    let r = l.token(&code, &other_verifier).await;
    r.assert_invalid_grant();
    // The code is spent by the failed attempt.
    let verifier = l.verifier.clone();
    assert_eq!(l.token(&code, &verifier).await.status, 400);
}

#[tokio::test]
async fn a_code_is_redeemed_only_once() {
    let sb = LynkcoSandbox::spawn().await;
    let (mut l, code) = Login::to_code(&sb, DEMO_EMAIL).await;
    let verifier = l.verifier.clone();
    assert_eq!(l.token(&code, &verifier).await.status, 200);
    let again = l.token(&code, &verifier).await;
    again.assert_invalid_grant();
    // And the transaction cannot hand out a second one.
    let r = l.redirect().await;
    assert!(r.location().contains("error="), "{}", r.location());
}

#[tokio::test]
async fn an_old_code_has_expired() {
    let sb = LynkcoSandbox::spawn().await;
    let (mut l, code) = Login::to_code(&sb, DEMO_EMAIL).await;
    sb.advance_clock(AUTH_CODE_LIFETIME + Duration::from_secs(1));
    let verifier = l.verifier.clone();
    let r = l.token(&code, &verifier).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error_description"]
        .as_str()
        .unwrap()
        .starts_with("AADB2C90080"));
}

#[tokio::test]
async fn the_token_endpoint_checks_client_id_and_redirect_uri() {
    let sb = LynkcoSandbox::spawn().await;
    let (mut l, code) = Login::to_code(&sb, DEMO_EMAIL).await;
    let verifier = l.verifier.clone();
    for (k, v) in [
        ("client_id", "813902c0-0579-43f3-a767-6601c2f5fdbe"),
        ("redirect_uri", "msauth.com.lynkco.prod.lynkco-app://auth"),
    ] {
        let mut fields = vec![
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("code_verifier", verifier.as_str()),
        ];
        fields.push((k, v));
        fields.push(if k == "client_id" {
            ("redirect_uri", REDIRECT_URI)
        } else {
            ("client_id", CLIENT_ID)
        });
        let r =
            l.c.post_form(&format!("{BASE}oauth2/v2.0/token"), &fields)
                .await;
        assert_eq!(r.status, 400, "{k}");
    }
    // Neither refusal spent the code.
    assert_eq!(l.token(&code, &verifier).await.status, 200);
}

#[tokio::test]
async fn authorize_is_strict_about_client_redirect_and_pkce() {
    let sb = LynkcoSandbox::spawn().await;
    let mut c = Client::new(&sb.upstreams());
    let (_, challenge) = pkce();
    let good = authorize_url(&challenge);
    for bad in [
        good.replace(CLIENT_ID, "813902c0-0579-43f3-a767-6601c2f5fdbe"),
        // The redirect_uri not encoded once more decodes to a different value.
        good.replace(&enc(REDIRECT_URI), REDIRECT_URI),
        good.replace("code_challenge_method=S256", "code_challenge_method=plain"),
        good.replace(&format!("code_challenge={challenge}&"), ""),
    ] {
        let r = c.get(&bad).await;
        assert_eq!(r.status, 400, "{bad}");
        assert!(r.text.contains("AADB2C9"));
    }
    assert_eq!(c.get_routed(&good).await.status, 200);
    // The policy is matched in any case; another tenant is not.
    assert_eq!(
        c.get_routed(&good.replace("b2c_1a_signin_mfa", "B2C_1A_SIGNIN_MFA"))
            .await
            .status,
        200
    );
    assert_eq!(
        c.get(&good.replace("lynkcoprod", "other")).await.status,
        404
    );
}

#[tokio::test]
async fn refresh_rotates_and_the_old_refresh_token_is_refused() {
    let sb = LynkcoSandbox::spawn().await;
    let (mut l, tokens) = signed_in(&sb).await;
    let first = tokens["refresh_token"].as_str().unwrap().to_owned();
    let r = refresh(&mut l.c, &first).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let j = r.json();
    let second = j["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    assert_ne!(j["access_token"], tokens["access_token"]);
    assert_eq!(
        validate_session(&l.c, j["access_token"].as_str().unwrap())
            .await
            .status,
        200
    );
    let old = refresh(&mut l.c, &first).await;
    old.assert_invalid_grant();
    // The tenant-name path works as well.
    let r =
        l.c.post_form(
            &format!("{BASE}oauth2/v2.0/token"),
            &[("grant_type", "refresh_token"), ("refresh_token", &second)],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(sb.refreshes(), 3);
}

#[tokio::test]
async fn revoke_makes_refresh_fail_with_invalid_grant_and_validate_session_401() {
    let sb = LynkcoSandbox::spawn().await;
    let (mut l, tokens) = signed_in(&sb).await;
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(validate_session(&l.c, access).await.status, 200);
    let r =
        l.c.post_json(
            &format!("{B2C}/testing/revoke"),
            json!({"account": DEMO_EMAIL}),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = validate_session(&l.c, access).await;
    assert_eq!(r.status, 401);
    assert!(r.json().is_object());
    let r = refresh(&mut l.c, tokens["refresh_token"].as_str().unwrap()).await;
    r.assert_invalid_grant();

    // The Rust hook does the same.
    let (mut l, tokens) = signed_in(&sb).await;
    sb.revoke(DEMO_EMAIL);
    let r = refresh(&mut l.c, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(r.json()["error"], "invalid_grant");
}

#[tokio::test]
async fn an_access_token_expires_with_its_lifetime() {
    let sb = LynkcoSandbox::spawn().await;
    sb.set_access_token_lifetime(Duration::from_secs(60));
    let (l, tokens) = signed_in(&sb).await;
    assert_eq!(tokens["expires_in"], 60);
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(validate_session(&l.c, access).await.status, 200);
    sb.advance_clock(Duration::from_secs(61));
    assert_eq!(validate_session(&l.c, access).await.status, 401);
    assert_eq!(validate_session(&l.c, "not-a-token").await.status, 401);
}

#[tokio::test]
async fn validate_session_needs_its_headers_and_body() {
    let sb = LynkcoSandbox::spawn().await;
    let (l, tokens) = signed_in(&sb).await;
    let access = tokens["access_token"].as_str().unwrap();
    let url = format!("{IAM}/validate-session");
    let body =
        json!({"deviceUuid": "0f8fad5b-d9cb-469f-a165-70867728950e", "isLogin": true}).to_string();
    let no_version =
        l.c.send_raw(
            Method::POST,
            &url,
            "",
            &[("X-Auth-Token", access)],
            Some(("application/json", body)),
        )
        .await;
    assert_eq!(no_version.status, 400);
    let no_uuid =
        l.c.send_raw(
            Method::POST,
            &url,
            "",
            &[("X-Auth-Token", access), ("api-version", "1")],
            Some((
                "application/json",
                r#"{"deviceUuid":"x","isLogin":true}"#.into(),
            )),
        )
        .await;
    assert_eq!(no_uuid.status, 400);
}

#[tokio::test]
async fn the_browser_form_yields_a_redirect_url_whose_code_works() {
    let sb = LynkcoSandbox::spawn().await;
    let mut l = Login::start(&sb).await;
    assert_sign_in_form(&l.page);
    let action = format!("{B2C}/lynkcoprod.onmicrosoft.com/b2c_1a_signin_mfa/browser/signin");
    assert!(l
        .page
        .contains(r#"action="/lynkcoprod.onmicrosoft.com/b2c_1a_signin_mfa/browser/signin""#));
    let trans_id = l.page.split(r#"name="tx" value=""#).nth(1).unwrap();
    let trans_id = trans_id[..trans_id.find('"').unwrap()].to_owned();
    let hidden = |extra: Vec<(&'static str, String)>| {
        let mut f = vec![("csrf_token", l.csrf.clone()), ("tx", trans_id.clone())];
        f.extend(extra);
        f
    };
    let fields = hidden(vec![
        ("email", DEMO_EMAIL.into()),
        ("password", "wrong".into()),
    ]);
    let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = l.c.post_form(&action, &pairs).await;
    assert_eq!(r.status, 200);
    assert!(r.text.contains("role=\"alert\""));
    let fields = hidden(vec![
        ("email", DEMO_EMAIL.into()),
        ("password", DEMO_PASSWORD.into()),
    ]);
    let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = l.c.post_form(&action, &pairs).await;
    assert!(r
        .text
        .contains(r#"<label for="verificationCode">Verification code</label>"#));
    assert!(r.text.contains(r#"<button type="submit">Verify</button>"#));
    assert!(r.text.contains("href=\"/inbox\""));
    let code = sb.latest_code(DEMO_EMAIL).unwrap();
    let verify = action.replace("browser/signin", "browser/verify");
    let fields = hidden(vec![("verificationCode", code)]);
    let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = l.c.post_form(&verify, &pairs).await;
    assert_eq!(r.status, 200);
    let url = shown_redirect_url(&r.text);
    let code = code_of(&url);
    let verifier = l.verifier.clone();
    let r = l.token(&code, &verifier).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn every_fault_kind_meets_some_step() {
    let sb = LynkcoSandbox::spawn().await;
    let mut c = Client::with_timeout(&sb.upstreams(), Duration::from_millis(500));
    let (_, challenge) = pkce();
    let authorize = authorize_url(&challenge);

    sb.set_fault("authorize", Fault::Unavailable503);
    assert_eq!(c.get(&authorize).await.status, 503);
    sb.set_fault("authorize", Fault::Stall);
    assert!(c.try_get(&authorize).await.unwrap_err().is_timeout());
    sb.clear_faults();

    let mut l = Login::start(&sb).await;
    sb.set_fault_times("self_asserted", Fault::Garbage, 1);
    let r = l.password(DEMO_EMAIL, DEMO_PASSWORD).await;
    assert_eq!(r.status, 200);
    assert!(serde_json::from_str::<Value>(&r.text).is_err());
    assert_eq!(
        l.password(DEMO_EMAIL, DEMO_PASSWORD).await.json()["status"],
        "200"
    );

    sb.set_fault_times("confirmed", Fault::Reset, 1);
    let url = format!(
        "{BASE}api/CombinedSigninAndSignup/confirmed?rememberMe=false&csrf_token={}&tx={}&p=B2C_1A_signin_mfa",
        enc(&l.csrf),
        l.tx()
    );
    let raw = reqwest::Client::new()
        .get(l.c.connect_url(&url))
        .send()
        .await;
    assert!(raw.unwrap_err().is_request());
    assert_eq!(l.confirmed().await.status, 200);

    sb.set_fault_times("verify", Fault::WrongShape, 1);
    let code = sb.latest_code(DEMO_EMAIL).unwrap();
    assert_eq!(l.code(&code).await.json(), json!({"unexpected": true}));
    assert_eq!(l.code(&code).await.json()["status"], "200");

    sb.set_fault_times("redirect", Fault::Unavailable503, 1);
    assert_eq!(l.redirect().await.status, 503);
    let code = code_of(&l.redirect().await.location());

    sb.set_fault_times("token", Fault::WrongShape, 1);
    let verifier = l.verifier.clone();
    assert_eq!(
        l.token(&code, &verifier).await.json(),
        json!({"unexpected": true})
    );
    let tokens = l.token(&code, &verifier).await.json();

    sb.set_fault_times("refresh", Fault::Unavailable503, 1);
    let rt = tokens["refresh_token"].as_str().unwrap();
    assert_eq!(refresh(&mut l.c, rt).await.status, 503);
    assert_eq!(sb.refreshes(), 1);

    // Over HTTP, on the IAM host.
    let r =
        l.c.post_json(
            &format!("{IAM}/testing/faults"),
            json!({"step": "validate_session", "fault": "503", "count": 1}),
        )
        .await;
    assert_eq!(r.status, 200);
    let access = tokens["access_token"].as_str().unwrap();
    let r = validate_session(&l.c, access).await;
    assert_eq!(r.status, 503);
    assert!(r.json().is_object());
    assert_eq!(validate_session(&l.c, access).await.status, 200);
    let list = l.c.get(&format!("{B2C}/testing/faults")).await.json();
    assert_eq!(list["steps"].as_array().unwrap().len(), STEPS.len());
}

#[tokio::test]
async fn b2c_routes_authorize_and_confirmed_through_a_hop_on_its_own_host() {
    let sb = LynkcoSandbox::spawn().await;
    let mut c = Client::new(&sb.upstreams());
    let (_, challenge) = pkce();
    let asked = authorize_url(&challenge);
    let first = c.get(&asked).await;
    assert_eq!(first.status, 302, "{}", first.text);
    // Named by the address the client used (the double's), so a browser stays on it; a client
    // must map it back to the real origin.
    let location = first.location();
    assert!(
        location.starts_with(&format!("http://{}/", sb.b2c_addr)),
        "{location}"
    );
    assert!(location.contains("&rt="), "{location}");
    let routed = c.real_location(&asked, &location);
    assert!(routed.starts_with(BASE), "{routed}");
    // A ticket B2C never issued is routed again; the issued one shows the sign-in page.
    let forged = c.get(&format!("{asked}&rt=forged")).await;
    assert_eq!(forged.status, 302);
    let page = c.get(&routed).await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("var SETTINGS"));

    // confirmed: a hop to itself with a ticket bound to the transaction, on the real origin.
    let mut l = Login::start(&sb).await;
    assert_eq!(
        l.password(DEMO_EMAIL, DEMO_PASSWORD).await.json()["status"],
        "200"
    );
    let diags =
        json!({"pageViewId": l.page_view_id, "pageId": "CombinedSigninAndSignup", "trace": []});
    let confirmed = format!(
        "{BASE}api/CombinedSigninAndSignup/confirmed?rememberMe=false&csrf_token={}&tx={}&p=B2C_1A_signin_mfa&diags={}",
        enc(&l.csrf),
        l.tx(),
        enc(&diags.to_string())
    );
    let hop = l.c.get(&confirmed).await;
    assert_eq!(hop.status, 302);
    let next = hop.location();
    assert!(
        next.starts_with(&format!("{BASE}api/CombinedSigninAndSignup/confirmed?")),
        "{next}"
    );
    assert!(
        sb.latest_code(DEMO_EMAIL).is_none(),
        "no SMS before the hop is followed"
    );
    // Another ticket than the transaction's is routed again (and voids the first).
    let wrong = l.c.get(&format!("{confirmed}&rt=not-the-ticket")).await;
    assert_eq!(wrong.status, 302);
    let phone = l.c.get(&wrong.location()).await;
    assert_eq!(phone.status, 200, "{}", phone.text);
    assert!(sb.latest_code(DEMO_EMAIL).is_some());
    assert!(sb.routing_hops("oauth2/v2.0/authorize") >= 2);
    assert!(sb.routing_hops("api/CombinedSigninAndSignup/confirmed") >= 2);
}

#[tokio::test]
async fn hostile_fault_switches_answer_as_named() {
    let sb = LynkcoSandbox::spawn().await;
    let mut c = Client::new(&sb.upstreams());
    let (_, challenge) = pkce();
    let asked = authorize_url(&challenge);
    for (fault, location) in [
        (
            Fault::LoopbackRedirect,
            sandbox::faults::LOOPBACK_TARGET.to_owned(),
        ),
        (Fault::RedirectLoop, asked.clone()),
        (
            Fault::HttpRedirect,
            asked.replacen("https://", "http://", 1),
        ),
    ] {
        sb.set_fault("authorize", fault);
        let r = c.get(&asked).await;
        assert_eq!((r.status, r.location()), (302, location), "{fault:?}");
    }
    // The endless body: far more than any cap, and still coming.
    sb.set_fault("authorize", Fault::Endless);
    let http = reqwest::Client::new();
    let mut answer = http.get(c.connect_url(&asked)).send().await.unwrap();
    let mut read = 0usize;
    while read < 8 << 20 {
        read += answer
            .chunk()
            .await
            .unwrap()
            .expect("the body goes on")
            .len();
    }
    drop(answer);
    sb.clear_faults();
    assert_eq!(c.get_routed(&asked).await.status, 200);
}

// ---------------------------------------------------------------------------------------------
// The vehicle list (delegated-driver, user-lifecycle), as Hass-Lynk-Co reads it with the CCC
// token.

const DRIVERS: &str = "https://delegated-driver-tls.aion.connectedcar.cloud/delegated-driver/api/delegateddriver/v1/vehicle";
const USERS: &str =
    "https://user-lifecycle-tls.aion.connectedcar.cloud/user-lifecycle/api/provisioning/v1/users";

/// Signed in, with a CCC token from validate-session.
async fn with_ccc(sb: &LynkcoSandbox, email: &str) -> (Login, Value, String) {
    let (mut l, code) = Login::to_code(sb, email).await;
    let verifier = l.verifier.clone();
    let tokens = l.token(&code, &verifier).await.ok_json();
    let ccc = validate_session(&l.c, tokens["access_token"].as_str().unwrap())
        .await
        .ok_json()["cccToken"]
        .as_str()
        .unwrap()
        .to_owned();
    (l, tokens, ccc)
}

async fn with_bearer(c: &Client, url: &str, token: &str) -> Resp {
    let authorization = format!("Bearer {token}");
    c.send_raw(
        Method::GET,
        url,
        "",
        &[
            ("accept", "application/json"),
            ("content-type", "application/json"),
            ("Authorization", &authorization),
        ],
        None,
    )
    .await
}

async fn drivers(c: &Client, vin: &str, ccc: &str) -> Resp {
    with_bearer(c, &format!("{DRIVERS}/{vin}/drivers"), ccc).await
}

async fn vehicles(c: &Client, user_id: &str, ccc: &str) -> Resp {
    with_bearer(c, &format!("{USERS}/{user_id}/activevehicles"), ccc).await
}

#[tokio::test]
async fn the_vehicle_list_answers_the_owner_with_a_ccc_token() {
    let sb = LynkcoSandbox::spawn().await;
    let (l, _, ccc) = with_ccc(&sb, DEMO_EMAIL).await;
    let d = drivers(&l.c, DEMO_VIN, &ccc).await.ok_json();
    assert_eq!(d, json!({"drivers": [{"userId": DEMO_USER_ID}]}));
    let user_id = d["drivers"][0]["userId"].as_str().unwrap();
    let v = vehicles(&l.c, user_id, &ccc).await.ok_json();
    assert_eq!(v, json!({"roles": [{"vin": DEMO_VIN, "role": "owner"}]}));

    let last = sb.last_api_request().unwrap();
    assert_eq!(
        (last.origin, last.method.as_str()),
        (USER_LIFECYCLE_ORIGIN, "GET")
    );
    assert_eq!(
        last.path,
        format!("/user-lifecycle/api/provisioning/v1/users/{DEMO_USER_ID}/activevehicles")
    );
    assert_eq!(
        last.header("authorization"),
        Some(format!("Bearer {ccc}").as_str())
    );
    drivers(&l.c, DEMO_VIN, &ccc).await.ok_json();
    let j =
        l.c.send_raw(
            Method::GET,
            &format!("{B2C}/testing/last-api-request"),
            "",
            &[],
            None,
        )
        .await
        .ok_json();
    assert_eq!(
        j["origin"],
        "https://delegated-driver-tls.aion.connectedcar.cloud"
    );
    assert!(j["path"].as_str().unwrap().ends_with("/drivers"));

    // Someone else's car or user: 403; a car nobody has: 404.
    assert_eq!(drivers(&l.c, OTHER_VIN, &ccc).await.status, 403);
    assert_eq!(drivers(&l.c, "LYVXFEDC0KL000000", &ccc).await.status, 404);
    assert_eq!(vehicles(&l.c, OTHER_USER_ID, &ccc).await.status, 403);
    // The other account sees its own.
    let (o, _, theirs) = with_ccc(&sb, OTHER_EMAIL).await;
    assert_eq!(
        vehicles(&o.c, OTHER_USER_ID, &theirs).await.ok_json()["roles"][0]["vin"],
        OTHER_VIN
    );
}

#[tokio::test]
async fn the_vehicle_list_refuses_missing_forged_access_and_expired_tokens() {
    let sb = LynkcoSandbox::spawn().await;
    let (l, tokens, ccc) = with_ccc(&sb, DEMO_EMAIL).await;
    let unauthorized = |r: Resp| {
        assert_eq!(r.status, 401, "{}", r.text);
        assert_eq!(r.json()["code"], 401);
    };
    let bare =
        l.c.send_raw(
            Method::GET,
            &format!("{DRIVERS}/{DEMO_VIN}/drivers"),
            "",
            &[],
            None,
        )
        .await;
    unauthorized(bare);
    // The B2C access token is not a CCC token.
    let access = tokens["access_token"].as_str().unwrap();
    unauthorized(drivers(&l.c, DEMO_VIN, access).await);
    let parts: Vec<&str> = ccc.split('.').collect();
    let mut claims = jwt_payload(&ccc);
    claims["sub"] = json!("someone-else");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );
    unauthorized(drivers(&l.c, DEMO_VIN, &forged).await);
    unauthorized(vehicles(&l.c, DEMO_USER_ID, &format!("{ccc}x")).await);

    sb.advance_clock(CCC_TOKEN_LIFETIME + Duration::from_secs(1));
    unauthorized(drivers(&l.c, DEMO_VIN, &ccc).await);
    unauthorized(vehicles(&l.c, DEMO_USER_ID, &ccc).await);
}

#[tokio::test]
async fn invalidated_ccc_tokens_are_refused_while_a_renewal_still_works() {
    let sb = LynkcoSandbox::spawn().await;
    let (mut l, tokens, ccc) = with_ccc(&sb, DEMO_EMAIL).await;
    assert_eq!(sb.invalidate_api_tokens(), 1);
    assert_eq!(drivers(&l.c, DEMO_VIN, &ccc).await.status, 401);
    assert_eq!(vehicles(&l.c, DEMO_USER_ID, &ccc).await.status, 401);
    // Renewal as the client does it: refresh, then validate-session.
    let renewed = refresh(&mut l.c, tokens["refresh_token"].as_str().unwrap())
        .await
        .ok_json();
    let fresh = validate_session(&l.c, renewed["access_token"].as_str().unwrap())
        .await
        .ok_json()["cccToken"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(drivers(&l.c, DEMO_VIN, &fresh).await.status, 200);

    // Over HTTP, on any of the service's hosts.
    let r =
        l.c.post_json(&format!("{IAM}/testing/invalidate-api-tokens"), json!({}))
            .await;
    assert_eq!(r.ok_json()["invalidated"], 1);
    assert_eq!(drivers(&l.c, DEMO_VIN, &fresh).await.status, 401);
    let again = validate_session(&l.c, renewed["access_token"].as_str().unwrap())
        .await
        .ok_json()["cccToken"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(vehicles(&l.c, DEMO_USER_ID, &again).await.status, 200);

    // Revoking the account ends its CCC tokens too.
    sb.revoke(DEMO_EMAIL);
    assert_eq!(vehicles(&l.c, DEMO_USER_ID, &again).await.status, 401);
}

#[tokio::test]
async fn the_vehicle_list_meets_its_faults() {
    let sb = LynkcoSandbox::spawn().await;
    let (l, _, ccc) = with_ccc(&sb, DEMO_EMAIL).await;
    sb.set_fault_times("drivers", Fault::Unavailable503, 1);
    sb.set_fault_times("active_vehicles", Fault::Unavailable503, 1);
    assert_eq!(drivers(&l.c, DEMO_VIN, &ccc).await.status, 503);
    assert_eq!(vehicles(&l.c, DEMO_USER_ID, &ccc).await.status, 503);
    assert_eq!(drivers(&l.c, DEMO_VIN, &ccc).await.status, 200);
}
