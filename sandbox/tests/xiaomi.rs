//! The Xiaomi double driven as micloud / homebridge-miot / the NuttShell extractor drive the
//! real service.

mod common;

use std::time::Duration;

use common::{assert_real, Client, Resp};
use md5::{Digest, Md5};
use sandbox::faults::Fault;
use sandbox::xiaomi::*;

const ACC: &str = "https://account.xiaomi.com";
const STS: &str = "https://sts.api.io.mi.com";

fn hash(password: &str) -> String {
    hex::encode_upper(Md5::digest(password.as_bytes()))
}

fn client(sb: &XiaomiSandbox) -> Client {
    let mut c = Client::new(&sb.upstreams());
    c.set_cookie(ACC, "sdkVersion", "accountsdk-18.8.15");
    c.set_cookie(ACC, "deviceId", "abcdef");
    c
}

/// Steps 1 and 2; returns the step-2 reply.
async fn password_login(c: &mut Client, user: &str, password_hash: &str) -> Resp {
    let r = c
        .get(&format!("{ACC}/pass/serviceLogin?sid=xiaomiio&_json=true"))
        .await;
    assert_eq!(r.status, 200);
    assert!(r.text.starts_with("&&&START&&&"));
    let j = r.json();
    let sign = j["_sign"].as_str().unwrap().to_owned();
    assert_eq!(j["callback"], STS_CALLBACK);
    c.post_form(
        &format!("{ACC}/pass/serviceLoginAuth2"),
        &[
            ("hash", password_hash),
            ("_json", "true"),
            ("sid", "xiaomiio"),
            ("callback", STS_CALLBACK),
            ("qs", "%3Fsid%3Dxiaomiio%26_json%3Dtrue"),
            ("_sign", &sign),
            ("user", user),
        ],
    )
    .await
}

/// Step 3: the STS URL gives `serviceToken`.
async fn sts(c: &mut Client, url: &str) -> Resp {
    assert!(
        url.starts_with("https://sts.api.io.mi.com/sts?d=wb_"),
        "{url}"
    );
    let r = c.get(url).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.text, "ok");
    assert!(c.cookie(STS, "serviceToken").is_some());
    assert!(c.cookie(STS, "userId").is_some());
    r
}

#[tokio::test]
async fn happy_path_without_2fa_and_sts_url_is_one_time() {
    let sb = XiaomiSandbox::spawn().await;
    let mut c = client(&sb);
    let r = password_login(&mut c, DEMO_USER, &hash(DEMO_PASSWORD)).await;
    assert!(r.text.starts_with("&&&START&&&"));
    let j = r.json();
    assert_eq!(j["code"], 0);
    assert_eq!(j["result"], "ok");
    assert!(j["ssecurity"].as_str().unwrap().len() > 4);
    assert!(j["passToken"].is_string() && j["userId"].is_number() && j["cUserId"].is_string());
    assert!(j["nonce"].is_number());
    let location = j["location"].as_str().unwrap().to_owned();
    for p in [
        "ticket=0",
        "pwd=1",
        "p_ts=",
        "fid=0",
        "p_lm=1",
        "auth=",
        "m=9",
        "_group=DEFAULT",
        "tsl=0",
        "p_ca=0",
        "p_ur=SG",
        "p_idc=Singapore",
        "nonce=",
        "_ssign=",
    ] {
        assert!(location.contains(p), "{p} missing in {location}");
    }
    assert_real(&location);
    sts(&mut c, &location).await;

    // The same STS URL a second time is refused.
    let mut other = client(&sb);
    assert_eq!(other.get(&location).await.status, 403);
    // A forged one too, and one missing parameters.
    let forged = location
        .replace("ticket=0", "ticket=0&x=1")
        .replace("_ssign=", "_ssign=AA");
    assert_eq!(other.get(&forged).await.status, 403);
    assert_eq!(other.get(&format!("{STS}/sts?d=wb_x")).await.status, 400);

    // The account session (passToken) logs in again at serviceLogin.
    let again = c
        .get(&format!("{ACC}/pass/serviceLogin?sid=xiaomiio&_json=true"))
        .await
        .json();
    assert_eq!(again["code"], 0);
    assert!(again["ssecurity"].is_string());
}

#[tokio::test]
async fn wrong_password_lowercase_hash_bad_sign_and_captcha() {
    let sb = XiaomiSandbox::spawn().await;
    let mut c = client(&sb);
    let j = password_login(&mut c, DEMO_USER, &hash("wrong"))
        .await
        .json();
    assert_eq!(j["code"], ERR_WRONG_PASSWORD);
    assert!(j.get("ssecurity").is_none());
    let lower = hash(DEMO_PASSWORD).to_lowercase();
    let j = password_login(&mut c, DEMO_USER, &lower).await.json();
    assert_eq!(j["code"], ERR_WRONG_PASSWORD);
    let j = password_login(&mut c, CAPTCHA_USER, &hash(DEMO_PASSWORD))
        .await
        .json();
    assert_eq!(j["code"], ERR_CAPTCHA);
    assert!(j["captchaUrl"]
        .as_str()
        .unwrap()
        .starts_with("/pass/getCode"));
    // A _sign that serviceLogin never issued.
    let r = c
        .post_form(
            &format!("{ACC}/pass/serviceLoginAuth2"),
            &[
                ("hash", &hash(DEMO_PASSWORD)),
                ("_json", "true"),
                ("sid", "xiaomiio"),
                ("callback", STS_CALLBACK),
                ("qs", "%3Fsid%3Dxiaomiio%26_json%3Dtrue"),
                ("_sign", "made-up"),
                ("user", DEMO_USER),
            ],
        )
        .await;
    assert_eq!(r.json()["code"], ERR_BAD_REQUEST);
}

/// Login of a 2FA account; returns the context and the notificationUrl.
async fn needs_2fa(c: &mut Client, user: &str) -> (String, String) {
    let j = password_login(c, user, &hash(DEMO_PASSWORD)).await.json();
    assert_eq!(j["code"], 0);
    assert_eq!(j["result"], "ok");
    assert!(j.get("ssecurity").is_none());
    let url = j["notificationUrl"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with(
            "https://account.xiaomi.com/fe/service/identity/authStart?sid=xiaomiio&context="
        ),
        "{url}"
    );
    let ctx = url
        .split("context=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_owned();
    (ctx, url)
}

/// identity/list → flag.
async fn identity_list(c: &mut Client, ctx: &str) -> i64 {
    let r = c
        .get(&format!(
            "{ACC}/identity/list?sid=xiaomiio&context={ctx}&_locale=en_US"
        ))
        .await;
    assert!(c.cookie(ACC, "identity_session").is_some());
    r.json()["flag"].as_i64().unwrap()
}

async fn verify(c: &mut Client, api: &str, flag: &str, ticket: &str, trust: &str) -> Resp {
    c.post_form(
        &format!("{ACC}{api}?_dc=1700000000000"),
        &[
            ("_flag", flag),
            ("ticket", ticket),
            ("trust", trust),
            ("_json", "true"),
        ],
    )
    .await
}

/// From the verify answer's `location` to `serviceToken`, by hand (NuttShell).
async fn finish(c: &mut Client, location: &str) {
    assert!(location.starts_with("https://account.xiaomi.com/identity/result/check?"));
    let check = c.get(location).await;
    assert_eq!(check.status, 302);
    let end_url = check.location();
    assert!(end_url.starts_with("https://account.xiaomi.com/pass/serviceLoginAuth2/end?"));
    let mut end = c.get(&end_url).await;
    if end.status == 200 {
        assert!(end.text.contains("Xiaomi Account - Tips"));
        end = c.get(&end_url).await;
    }
    assert_eq!(end.status, 302);
    let pragma: serde_json::Value = serde_json::from_str(
        end.headers
            .get("extension-pragma")
            .unwrap()
            .to_str()
            .unwrap(),
    )
    .unwrap();
    assert!(pragma["ssecurity"].as_str().unwrap().len() > 4);
    assert!(pragma["psecurity"].is_string());
    let sts_url = end.location();
    sts(c, &sts_url).await;
    // The end URL works once.
    assert_eq!(c.get(&end_url).await.status, 400);
    assert_eq!(c.get(&sts_url).await.status, 403);
}

#[tokio::test]
async fn two_fa_by_phone_send_and_verify() {
    let sb = XiaomiSandbox::spawn().await;
    let mut c = client(&sb);
    let (ctx, _) = needs_2fa(&mut c, DEMO_2FA_USER).await;
    assert_eq!(identity_list(&mut c, &ctx).await, 4);
    let sent = c
        .post_form(
            &format!("{ACC}/identity/auth/sendPhoneTicket?_dc=1&sid=xiaomiio&context={ctx}&mask=0&_locale=en_US"),
            &[("retry", "0"), ("icode", ""), ("_json", "true")],
        )
        .await;
    assert_eq!(sent.json()["code"], 0);
    let code = sb.latest_code(DEMO_2FA_USER).unwrap();
    assert_eq!(code.len(), 6);
    assert_eq!(sb.inbox()[0].channel, "sms");
    // The wrong method and a wrong code.
    let r = verify(&mut c, "/identity/auth/verifyEmail", "8", &code, "true").await;
    assert_ne!(r.json()["code"], 0);
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let r = verify(&mut c, "/identity/auth/verifyPhone", "4", wrong, "true").await;
    let j = r.json();
    assert_eq!(j["code"], ERR_WRONG_CODE);
    assert!(j["tips"].is_string());
    // The right one (homebridge sends trust=true).
    let r = verify(&mut c, "/identity/auth/verifyPhone", "4", &code, "true").await;
    let j = r.json();
    assert_eq!(j["code"], 0, "{j}");
    // One-time.
    let again = verify(&mut c, "/identity/auth/verifyPhone", "4", &code, "true").await;
    assert_eq!(again.json()["code"], ERR_WRONG_CODE);
    finish(&mut c, j["location"].as_str().unwrap()).await;
}

#[tokio::test]
async fn two_fa_by_email_with_tips_page_and_trust_false() {
    let sb = XiaomiSandbox::spawn().await;
    let mut c = client(&sb);
    let (ctx, url) = needs_2fa(&mut c, DEMO_EMAIL_2FA_USER).await;
    assert_eq!(c.get(&url).await.status, 200);
    assert_eq!(identity_list(&mut c, &ctx).await, 8);
    // Phone is not this account's method.
    let r = c
        .post_form(
            &format!("{ACC}/identity/auth/sendPhoneTicket"),
            &[("_json", "true")],
        )
        .await;
    assert_ne!(r.json()["code"], 0);
    let r = c
        .post_form(
            &format!("{ACC}/identity/auth/sendEmailTicket?_dc=1&sid=xiaomiio&context={ctx}"),
            &[("retry", "0"), ("icode", ""), ("_json", "true")],
        )
        .await;
    assert_eq!(r.json()["code"], 0);
    let code = sb.latest_code(DEMO_EMAIL_2FA_USER).unwrap();
    assert_eq!(sb.inbox()[0].channel, "email");
    let j = verify(&mut c, "/identity/auth/verifyEmail", "8", &code, "false")
        .await
        .json();
    assert_eq!(j["code"], 0);
    finish(&mut c, j["location"].as_str().unwrap()).await;
}

#[tokio::test]
async fn identity_calls_need_identity_session_and_codes_expire() {
    let sb = XiaomiSandbox::spawn().await;
    let mut c = client(&sb);
    let (ctx, _) = needs_2fa(&mut c, DEMO_2FA_USER).await;
    let r = c
        .post_form(
            &format!("{ACC}/identity/auth/sendPhoneTicket"),
            &[("_json", "true")],
        )
        .await;
    assert_eq!(r.json()["code"], ERR_BAD_REQUEST);
    identity_list(&mut c, &ctx).await;
    c.post_form(
        &format!("{ACC}/identity/auth/sendPhoneTicket"),
        &[("_json", "true")],
    )
    .await;
    let code = sb.latest_code(DEMO_2FA_USER).unwrap();
    sb.advance_clock(CODE_LIFETIME + Duration::from_secs(1));
    let j = verify(&mut c, "/identity/auth/verifyPhone", "4", &code, "true")
        .await
        .json();
    assert_eq!(j["code"], ERR_WRONG_CODE);
    assert!(j["tips"].as_str().unwrap().contains("expired"));
    // Not verified: result/check sends back to authStart.
    let check = c
        .get(&format!(
            "{ACC}/identity/result/check?sid=xiaomiio&context={ctx}"
        ))
        .await;
    assert_eq!(check.status, 302);
    assert!(check.location().contains("/fe/service/identity/authStart"));
}

/// Pulls `name="context" value="…"` or the Authenticated URL out of a page.
fn input_value(html: &str, id_or_name: &str) -> String {
    let at = html.find(id_or_name).expect("field");
    let rest = &html[at..];
    let v = rest.find("value=\"").unwrap() + 7;
    let end = rest[v..].find('"').unwrap();
    rest[v..v + end].replace("&amp;", "&")
}

#[tokio::test]
async fn browser_page_flow_shows_the_authenticated_url() {
    let sb = XiaomiSandbox::spawn().await;
    let mut c = client(&sb);
    let (ctx, url) = needs_2fa(&mut c, DEMO_2FA_USER).await;
    let page = c.get(&url).await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("Send code"));
    assert!(page.text.contains("action=\"/fe/service/identity/send\""));
    let sent = c
        .post_form(
            &format!("{ACC}/fe/service/identity/send"),
            &[("context", &ctx)],
        )
        .await;
    assert_eq!(sent.status, 303);
    assert!(sent.location().starts_with("/fe/service/identity/verify?"));
    let form = c.get(&format!("{ACC}{}", sent.location())).await;
    assert!(form.text.contains("Verification code") && form.text.contains(">Verify<"));
    let inbox = c.get(&format!("{ACC}/inbox.json")).await.json();
    let code = inbox[0]["code"].as_str().unwrap().to_owned();
    assert!(c.get(&format!("{ACC}/inbox")).await.text.contains(&code));
    let bad = c
        .post_form(
            &format!("{ACC}/fe/service/identity/verify"),
            &[("context", &ctx), ("ticket", "12345x")],
        )
        .await;
    assert!(bad.text.contains("role=\"alert\""));
    let done = c
        .post_form(
            &format!("{ACC}/fe/service/identity/verify"),
            &[("context", &ctx), ("ticket", &code)],
        )
        .await;
    assert!(done.text.contains("Authenticated URL"), "{}", done.text);
    let sts_url = input_value(&done.text, "id=\"url\"");
    assert_real(&sts_url);
    let mut engine = client(&sb);
    sts(&mut engine, &sts_url).await;
    assert_eq!(engine.get(&sts_url).await.status, 403);
}

#[tokio::test]
async fn code_sent_by_the_page_can_be_verified_by_the_server() {
    // homebridge-miot: the browser page sends, the plugin verifies.
    let sb = XiaomiSandbox::spawn().await;
    let mut c = client(&sb);
    let (ctx, url) = needs_2fa(&mut c, DEMO_2FA_USER).await;
    let mut browser = client(&sb);
    browser.get(&url).await;
    browser
        .post_form(
            &format!("{ACC}/fe/service/identity/send"),
            &[("context", &ctx)],
        )
        .await;
    let code = sb.latest_code(DEMO_2FA_USER).unwrap();
    let flag = identity_list(&mut c, &ctx).await;
    assert_eq!(flag, 4);
    let j = verify(&mut c, "/identity/auth/verifyPhone", "4", &code, "true")
        .await
        .json();
    assert_eq!(j["code"], 0);
    finish(&mut c, j["location"].as_str().unwrap()).await;
}

#[tokio::test]
async fn every_fault_kind_and_the_http_switch() {
    let sb = XiaomiSandbox::spawn().await;
    let mut c = Client::with_timeout(&sb.upstreams(), Duration::from_millis(500));
    let url = format!("{ACC}/pass/serviceLogin?sid=xiaomiio&_json=true");
    sb.set_fault("service_login", Fault::Unavailable503);
    assert_eq!(c.get(&url).await.status, 503);
    sb.set_fault("service_login", Fault::Garbage);
    let r = c.get(&url).await;
    assert_eq!(r.status, 200);
    let body = r.text.strip_prefix("&&&START&&&").unwrap_or(&r.text);
    assert!(serde_json::from_str::<serde_json::Value>(body).is_err());
    sb.set_fault("service_login", Fault::WrongShape);
    let j = c.get(&url).await.json();
    assert!(j.get("_sign").is_none());
    sb.set_fault("service_login", Fault::Stall);
    assert!(c.try_get(&url).await.unwrap_err().is_timeout());
    sb.set_fault("service_login", Fault::Reset);
    // The connection closes before any answer: even `send()` fails.
    let raw = reqwest::Client::new().get(c.connect_url(&url)).send().await;
    let e = raw.unwrap_err();
    assert!(!e.is_timeout() && e.is_request(), "{e:?}");
    sb.clear_faults();
    assert_eq!(c.get(&url).await.status, 200);

    // Over HTTP, on the STS host, for the STS step.
    let r = c
        .post_json(
            &format!("{STS}/testing/faults"),
            serde_json::json!({"step": "sts", "fault": "reset", "count": 1}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(c.try_get(&format!("{STS}/sts?d=x")).await.is_err());
    assert_eq!(c.get(&format!("{STS}/sts?d=x")).await.status, 400);
    let r = c
        .post_json(
            &format!("{ACC}/testing/faults"),
            serde_json::json!({"step": "login", "fault": "bogus"}),
        )
        .await;
    assert_eq!(r.status, 400);
    let list = c.get(&format!("{ACC}/testing/faults")).await.json();
    assert_eq!(list["steps"].as_array().unwrap().len(), STEPS.len());
}

#[tokio::test]
async fn the_confirm_phone_page_comes_between_the_code_and_the_end_and_its_skip_url_goes_on() {
    let sb = XiaomiSandbox::spawn().await;
    let mut c = client(&sb);
    let (ctx, _) = needs_2fa(&mut c, DEMO_CONFIRM_USER).await;
    assert_eq!(identity_list(&mut c, &ctx).await, 4);
    c.post_form(
        &format!("{ACC}/identity/auth/sendPhoneTicket?_dc=1&sid=xiaomiio&context={ctx}&mask=0&_locale=en_US"),
        &[("retry", "0"), ("icode", ""), ("_json", "true")],
    )
    .await;
    let code = sb.latest_code(DEMO_CONFIRM_USER).unwrap();
    let j = verify(&mut c, "/identity/auth/verifyPhone", "4", &code, "false")
        .await
        .json();
    assert_eq!(j["code"], 0, "{j}");
    let check = c.get(j["location"].as_str().unwrap()).await;
    assert_eq!(check.status, 302);
    let page_url = check.location();
    assert!(
        page_url.starts_with("https://account.xiaomi.com/fe/service/identity/confirmPhone?"),
        "{page_url}"
    );
    let skip = url_param(&page_url, "skipUrl");
    assert!(
        skip.starts_with("https://account.xiaomi.com/pass/serviceLoginAuth2/end?"),
        "{skip}"
    );
    // Strict: the end of the login is not reached around the page.
    assert_eq!(c.get(&skip).await.status, 400);
    let page = c.get(&page_url).await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("Confirm your phone number"));
    let end = c.get(&skip).await;
    assert_eq!(end.status, 302, "{}", end.text);
    assert!(end.headers.get("extension-pragma").is_some());
    sts(&mut c, &end.location()).await;
}

fn url_param(url: &str, name: &str) -> String {
    let query = url.split_once('?').unwrap().1;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no {name} in {url}"))
}

// ---------------------------------------------------------------------------------------------
// The Mi Cloud API (`POST /app/home/device_list`), signed as PiotrMachowski's extractor and
// micloud sign it.

const API: &str = "https://api.io.mi.com";
const DEVICE_LIST: &str = "https://api.io.mi.com/app/home/device_list";
const DATA: &str = r#"{"getVirtualModel":false,"getHuamiDevices":0}"#;

/// What a signed-in client keeps for the API.
struct ApiSession {
    c: Client,
    user_id: String,
    service_token: String,
    ssecurity: String,
}

impl ApiSession {
    async fn start(sb: &XiaomiSandbox) -> ApiSession {
        let mut c = client(sb);
        let j = password_login(&mut c, DEMO_USER, &hash(DEMO_PASSWORD))
            .await
            .json();
        sts(&mut c, j["location"].as_str().unwrap()).await;
        ApiSession {
            user_id: c.cookie(STS, "userId").unwrap(),
            service_token: c.cookie(STS, "serviceToken").unwrap(),
            ssecurity: j["ssecurity"].as_str().unwrap().to_owned(),
            c,
        }
    }

    /// The extractor's cookies.
    fn cookie(&self) -> String {
        format!(
            "userId={}; yetAnotherServiceToken={t}; serviceToken={t}; locale=en_GB; timezone=GMT+02:00",
            self.user_id,
            t = self.service_token
        )
    }

    /// `signature`, `_nonce` and `data`, signed with `ssecurity` for the minute of `millis`.
    fn fields(&self, millis: i64) -> Vec<(String, String)> {
        let nonce = api_nonce(millis);
        let signature = sign_api_request(
            "/home/device_list",
            &self.ssecurity,
            &nonce,
            &[("data", DATA)],
        );
        vec![
            ("signature".into(), signature),
            ("_nonce".into(), nonce),
            ("data".into(), DATA.into()),
        ]
    }

    async fn call(&self, cookie: &str, fields: &[(String, String)], in_query: bool) -> Resp {
        let pairs: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let encoded = common::urlencoded(&pairs);
        let (url, body) = if in_query {
            (format!("{DEVICE_LIST}?{encoded}"), None)
        } else {
            (
                DEVICE_LIST.to_owned(),
                Some(("application/x-www-form-urlencoded", encoded)),
            )
        };
        self.c
            .send_raw(
                reqwest::Method::POST,
                &url,
                cookie,
                &[("x-xiaomi-protocal-flag-cli", "PROTOCAL-HTTP2")],
                body,
            )
            .await
    }

    async fn device_list(&self, fields: &[(String, String)]) -> Resp {
        self.call(&self.cookie(), fields, false).await
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn assert_refused(r: &Resp, code: i64, message: &str) {
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(
        r.json(),
        serde_json::json!({"code": code, "message": message})
    );
}

#[tokio::test]
async fn a_signed_device_list_call_passes_in_the_body_or_the_query() {
    let sb = XiaomiSandbox::spawn().await;
    let s = ApiSession::start(&sb).await;
    let r = s.device_list(&s.fields(now_ms())).await.ok_json();
    assert_eq!((&r["code"], &r["message"]), (&0.into(), &"ok".into()));
    let device = &r["result"]["list"][0];
    for key in ["did", "name", "model", "localip"] {
        assert!(device[key].is_string(), "{key}");
    }
    let token = device["token"].as_str().unwrap();
    assert!(token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit()));

    let last = sb.last_api_request().unwrap();
    assert_eq!(
        (last.origin, last.method.as_str(), last.path.as_str()),
        (API_ORIGIN, "POST", "/app/home/device_list")
    );
    assert!(last.body.starts_with("signature="));
    assert!(last.header("cookie").unwrap().contains(&s.service_token));

    // In the query string, as the extractor's `params=` sends them.
    let r = s.call(&s.cookie(), &s.fields(now_ms()), true).await;
    assert_eq!(r.ok_json()["code"], 0);
    let mut c = client(&sb);
    let j = c
        .get(&format!("{API}/testing/last-api-request"))
        .await
        .ok_json();
    assert!(j["path"]
        .as_str()
        .unwrap()
        .starts_with("/app/home/device_list?signature="));
    assert_eq!(j["body"], "");
    // A nonce four minutes old is still in its window.
    let r = s.device_list(&s.fields(now_ms() - 4 * 60_000)).await;
    assert_eq!(r.ok_json()["code"], 0);
}

#[tokio::test]
async fn device_list_refuses_a_missing_forged_or_foreign_service_token_with_auth_err() {
    let sb = XiaomiSandbox::spawn().await;
    let s = ApiSession::start(&sb).await;
    let fields = s.fields(now_ms());
    let auth_err = |r: Resp| assert_refused(&r, API_AUTH_ERR, "auth err");
    auth_err(s.call("", &fields, false).await);
    auth_err(
        s.call(
            &format!("userId={}; serviceToken=AAAA{}", s.user_id, s.service_token),
            &fields,
            false,
        )
        .await,
    );
    // Another user's userId beside the token.
    auth_err(
        s.call(
            &format!("userId=6100000002; serviceToken={}", s.service_token),
            &fields,
            false,
        )
        .await,
    );
    // Revoked.
    sb.revoke(DEMO_USER);
    auth_err(s.device_list(&fields).await);
}

#[tokio::test]
async fn device_list_refuses_a_wrong_signature_a_stale_nonce_and_a_replayed_one() {
    let sb = XiaomiSandbox::spawn().await;
    let s = ApiSession::start(&sb).await;
    let invalid = |r: Resp| assert_refused(&r, API_BAD_SIGNATURE, "invalid signature");

    // Wrong: another ssecurity, other data, no signature, a nonce that is not one.
    let nonce = api_nonce(now_ms());
    let other_ssecurity = "AAECAwQFBgcICQoLDA0ODw==";
    let forged = sign_api_request(
        "/home/device_list",
        other_ssecurity,
        &nonce,
        &[("data", DATA)],
    );
    let with = |signature: &str, nonce: &str, data: &str| {
        vec![
            ("signature".to_owned(), signature.to_owned()),
            ("_nonce".to_owned(), nonce.to_owned()),
            ("data".to_owned(), data.to_owned()),
        ]
    };
    invalid(s.device_list(&with(&forged, &nonce, DATA)).await);
    let mut tampered = s.fields(now_ms());
    tampered[2].1 = r#"{"getVirtualModel":true,"getHuamiDevices":1}"#.into();
    invalid(s.device_list(&tampered).await);
    let mut unsigned = s.fields(now_ms());
    unsigned.remove(0);
    invalid(s.device_list(&unsigned).await);
    let short = "AQIDBAUGBwg=";
    let signed = sign_api_request("/home/device_list", &s.ssecurity, short, &[("data", DATA)]);
    invalid(s.device_list(&with(&signed, short, DATA)).await);

    // Stale: more than five minutes off, either way (correctly signed).
    for off in [-6 * 60_000, 6 * 60_000] {
        let r = s.device_list(&s.fields(now_ms() + off)).await;
        assert_refused(&r, API_BAD_SIGNATURE, "nonce expired");
    }
    // The double's clock moving on does the same to a nonce made now.
    let fields = s.fields(now_ms());
    sb.advance_clock(Duration::from_secs(6 * 60));
    assert_refused(
        &s.device_list(&fields).await,
        API_BAD_SIGNATURE,
        "nonce expired",
    );

    // Replayed: the same call twice.
    let fields = s.fields(now_ms() + 6 * 60_000);
    assert_eq!(s.device_list(&fields).await.ok_json()["code"], 0);
    assert_refused(
        &s.device_list(&fields).await,
        API_BAD_SIGNATURE,
        "nonce replayed",
    );

    // Signed, but `data` is not JSON.
    let nonce = api_nonce(now_ms() + 6 * 60_000);
    let signature = sign_api_request("/home/device_list", &s.ssecurity, &nonce, &[("data", "x")]);
    assert_eq!(
        s.device_list(&with(&signature, &nonce, "x")).await.status,
        400
    );
}

#[tokio::test]
async fn invalidated_service_tokens_get_auth_err_while_the_pass_token_renews_them() {
    let sb = XiaomiSandbox::spawn().await;
    let mut s = ApiSession::start(&sb).await;
    assert_eq!(sb.invalidate_api_tokens(), 1);
    assert_refused(
        &s.device_list(&s.fields(now_ms())).await,
        API_AUTH_ERR,
        "auth err",
    );

    // Renewal as the clients do it: serviceLogin with the passToken, then its STS URL.
    let again =
        s.c.get(&format!("{ACC}/pass/serviceLogin?sid=xiaomiio&_json=true"))
            .await
            .json();
    assert_eq!(again["code"], 0);
    sts(&mut s.c, again["location"].as_str().unwrap()).await;
    let old_ssecurity = std::mem::replace(
        &mut s.ssecurity,
        again["ssecurity"].as_str().unwrap().to_owned(),
    );
    s.service_token = s.c.cookie(STS, "serviceToken").unwrap();
    assert_eq!(
        s.device_list(&s.fields(now_ms())).await.ok_json()["code"],
        0
    );
    // A serviceToken signs with the ssecurity handed out with it, not an older one.
    let nonce = api_nonce(now_ms());
    let signature = sign_api_request(
        "/home/device_list",
        &old_ssecurity,
        &nonce,
        &[("data", DATA)],
    );
    let stale_key = vec![
        ("signature".to_owned(), signature),
        ("_nonce".to_owned(), nonce),
        ("data".to_owned(), DATA.to_owned()),
    ];
    assert_refused(
        &s.device_list(&stale_key).await,
        API_BAD_SIGNATURE,
        "invalid signature",
    );

    // Over HTTP, on any of the service's hosts.
    let r =
        s.c.post_json(
            &format!("{STS}/testing/invalidate-api-tokens"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(r.ok_json()["invalidated"], 1);
    assert_refused(
        &s.device_list(&s.fields(now_ms())).await,
        API_AUTH_ERR,
        "auth err",
    );
}

#[tokio::test]
async fn device_list_meets_its_faults() {
    let sb = XiaomiSandbox::spawn().await;
    let s = ApiSession::start(&sb).await;
    sb.set_fault_times("device_list", Fault::Unavailable503, 1);
    assert_eq!(s.device_list(&s.fields(now_ms())).await.status, 503);
    assert_eq!(
        s.device_list(&s.fields(now_ms())).await.ok_json()["code"],
        0
    );
}
