//! The Librus double driven as the current clients drive the real service.

mod common;

use std::time::Duration;

use common::{assert_real, Client, Resp};
use sandbox::faults::Fault;
use sandbox::librus::*;

const API: &str = "https://api.librus.pl";
const SYN: &str = "https://synergia.librus.pl";

/// Entry at Synergia, then the OAuth Init it redirects to. Returns the login page response.
async fn init(c: &mut Client) -> Resp {
    let entry = c
        .get(&format!("{SYN}/loguj/portalRodzina?v=1700000000"))
        .await;
    assert_eq!(entry.status, 302);
    let to = entry.location();
    assert!(
        to.starts_with(
            "https://api.librus.pl/OAuth/Authorization?client_id=46&response_type=code&scope=mydata&state="
        ),
        "{to}"
    );
    assert!(c.cookie(SYN, STATE_COOKIE).is_some());
    let page = c.get(&to).await;
    assert_eq!(page.status, 200);
    assert!(c.cookie(API, API_SESSION_COOKIE).is_some());
    page
}

async fn login(c: &mut Client, user: &str, pass: &str) -> Resp {
    c.post_form(
        &format!("{API}/OAuth/Authorization?client_id=46"),
        &[("action", "login"), ("login", user), ("pass", pass)],
    )
    .await
}

/// The whole current flow; returns the client with Synergia's cookies.
async fn full_login(sb: &LibrusSandbox, user: &str, pass: &str) -> Client {
    let mut c = Client::new(&sb.upstreams());
    init(&mut c).await;
    let r = login(&mut c, user, pass).await;
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["status"], "ok", "{j}");
    let go_to = j["goTo"].as_str().unwrap().to_owned();
    let hop = c.get(&format!("{API}{go_to}")).await;
    assert_eq!(hop.status, 302);
    assert_real(&hop.location());
    let end = c.follow(hop).await;
    assert_eq!(end.url, format!("{SYN}/uczen/index"));
    assert_eq!(end.status, 200);
    for name in ["DZIENNIKSID", "SDZIENNIKSID", "oauth_token"] {
        assert!(c.cookie(SYN, name).is_some(), "no {name}");
    }
    c
}

#[tokio::test]
async fn happy_path_current_flow_then_token_info_user_info_and_refresh() {
    let sb = LibrusSandbox::spawn().await;
    let mut c = Client::new(&sb.upstreams());
    assert_eq!(c.get(&format!("{API}/")).await.status, 200);
    init(&mut c).await;
    let r = login(&mut c, DEMO_LOGIN, DEMO_PASSWORD).await;
    let j = r.json();
    assert_eq!(j["goTo"], "/OAuth/Authorization/2FA?client_id=46");
    let two_fa = c
        .get(&format!("{API}/OAuth/Authorization/2FA?client_id=46"))
        .await;
    assert_eq!(two_fa.status, 302);
    assert_eq!(
        two_fa.location(),
        "https://api.librus.pl/OAuth/Authorization/PerformLogin?client_id=46"
    );
    let perform = c.get(&two_fa.location()).await;
    assert_eq!(perform.status, 302);
    let callback = perform.location();
    assert!(
        callback.starts_with("https://synergia.librus.pl/loguj/portalRodzina?code="),
        "{callback}"
    );
    assert!(callback.contains("&state="));
    let landed = c.get(&callback).await;
    assert_eq!(landed.status, 302);
    assert_real(&landed.location());

    let info = c
        .get(&format!("{SYN}/gateway/api/2.0/Auth/TokenInfo"))
        .await;
    assert_eq!(info.status, 200);
    let id = info.json()["UserIdentifier"].as_str().unwrap().to_owned();
    // Not activated yet.
    assert_eq!(
        c.get(&format!("{SYN}/gateway/api/2.0/Me")).await.status,
        403
    );
    let user = c
        .get(&format!("{SYN}/gateway/api/2.0/Auth/UserInfo/{id}"))
        .await;
    assert_eq!(user.status, 200);
    assert_eq!(user.json()["User"]["Id"], id.as_str());
    assert_eq!(
        c.get(&format!("{SYN}/gateway/api/2.0/Me")).await.status,
        200
    );

    // Refresh: a new oauth_token replaces the old one.
    let old = c.cookie(SYN, "oauth_token").unwrap();
    let r = c.get(&format!("{SYN}/refreshToken")).await;
    assert_eq!(r.status, 200);
    let new = c.cookie(SYN, "oauth_token").unwrap();
    assert_ne!(old, new);
    c.set_cookie(SYN, "oauth_token", &old);
    assert_eq!(
        c.get(&format!("{SYN}/gateway/api/2.0/Auth/TokenInfo"))
            .await
            .status,
        403
    );
    c.set_cookie(SYN, "oauth_token", &new);
    assert_eq!(
        c.get(&format!("{SYN}/gateway/api/2.0/Auth/TokenInfo"))
            .await
            .status,
        200
    );
    // Tokens expire; refresh brings access back.
    sb.advance_clock(TOKEN_LIFETIME + Duration::from_secs(1));
    assert_eq!(
        c.get(&format!("{SYN}/gateway/api/2.0/Auth/TokenInfo"))
            .await
            .status,
        403
    );
    assert_eq!(c.get(&format!("{SYN}/refreshToken")).await.status, 200);
    assert_eq!(
        c.get(&format!("{SYN}/gateway/api/2.0/Auth/TokenInfo"))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn grant_account_and_multipart_login_and_skip_interstitial() {
    let sb = LibrusSandbox::spawn().await;
    full_login(&sb, DEMO_GRANT_LOGIN, DEMO_GRANT_PASSWORD).await;

    // Mati365: multipart login, POST 2FA skip, then Grant.
    let mut c = Client::new(&sb.upstreams());
    init(&mut c).await;
    let r = c
        .post_multipart(
            &format!("{API}/OAuth/Authorization?client_id=46"),
            &[
                ("action", "login"),
                ("login", DEMO_LOGIN),
                ("pass", DEMO_PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.json()["status"], "ok");
    let skip = c
        .post_form(
            &format!("{API}/OAuth/Authorization/2FA?client_id=46"),
            &[("action", "requiredActions"), ("skip", "true")],
        )
        .await;
    assert_eq!(
        skip.json()["goTo"],
        "/OAuth/Authorization/Grant?client_id=46"
    );
    let grant = c
        .get(&format!("{API}/OAuth/Authorization/Grant?client_id=46"))
        .await;
    c.follow(grant).await;
    assert!(c.cookie(SYN, "oauth_token").is_some());
}

#[tokio::test]
async fn wrong_password_and_captcha() {
    let sb = LibrusSandbox::spawn().await;
    let mut c = Client::new(&sb.upstreams());
    init(&mut c).await;
    let j = login(&mut c, DEMO_LOGIN, "nope").await.json();
    assert_eq!(j["status"], "error");
    assert_eq!(j["errors"][0]["message"], BAD_CREDENTIALS_MESSAGE);
    let j = login(&mut c, CAPTCHA_LOGIN, "whatever").await.json();
    assert_eq!(j["status"], "error");
    assert_eq!(j["message"], CAPTCHA_MESSAGE);
    // A failed attempt leads nowhere.
    let r = c
        .get(&format!("{API}/OAuth/Authorization/2FA?client_id=46"))
        .await;
    assert_eq!(r.status, 400);
    // The session still works for a correct login afterwards.
    assert_eq!(
        login(&mut c, DEMO_LOGIN, DEMO_PASSWORD).await.json()["status"],
        "ok"
    );
}

#[tokio::test]
async fn login_needs_the_oauth_session() {
    let sb = LibrusSandbox::spawn().await;
    let mut c = Client::new(&sb.upstreams());
    let r = login(&mut c, DEMO_LOGIN, DEMO_PASSWORD).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_request");
}

#[tokio::test]
async fn a_second_oauth_init_invalidates_the_session() {
    let sb = LibrusSandbox::spawn().await;
    let mut c = Client::new(&sb.upstreams());
    let page = init(&mut c).await;
    let _ = page;
    // Init again in the same session.
    let again = c
        .get(&format!(
            "{API}/OAuth/Authorization?client_id=46&response_type=code&scope=mydata"
        ))
        .await;
    assert_eq!(again.status, 200);
    let r = login(&mut c, DEMO_LOGIN, DEMO_PASSWORD).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_request");

    // Also after a successful login.
    let mut c = Client::new(&sb.upstreams());
    init(&mut c).await;
    assert_eq!(
        login(&mut c, DEMO_LOGIN, DEMO_PASSWORD).await.json()["status"],
        "ok"
    );
    c.get(&format!(
        "{API}/OAuth/Authorization?client_id=46&response_type=code&scope=mydata"
    ))
    .await;
    let r = c
        .get(&format!("{API}/OAuth/Authorization/2FA?client_id=46"))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_request");
}

#[tokio::test]
async fn codes_are_one_time_and_bound_to_state() {
    let sb = LibrusSandbox::spawn().await;
    let mut c = Client::new(&sb.upstreams());
    init(&mut c).await;
    login(&mut c, DEMO_LOGIN, DEMO_PASSWORD).await;
    let perform = c
        .get(&format!(
            "{API}/OAuth/Authorization/PerformLogin?client_id=46"
        ))
        .await;
    let callback = perform.location();
    let state_cookie = c.cookie(SYN, STATE_COOKIE).unwrap();
    assert_eq!(c.get(&callback).await.status, 302);
    // Reuse, even with the state cookie back in place.
    c.set_cookie(SYN, STATE_COOKIE, &state_cookie);
    let again = c.get(&callback).await;
    assert_eq!(again.status, 400);
    assert!(again.set_cookie_names().is_empty());

    // A code presented with another state is refused.
    let mut c = Client::new(&sb.upstreams());
    init(&mut c).await;
    login(&mut c, DEMO_LOGIN, DEMO_PASSWORD).await;
    let perform = c
        .get(&format!("{API}/OAuth/Authorization/Grant?client_id=46"))
        .await;
    let loc = perform.location();
    let forged = format!("{}&state=forged", loc.split("&state=").next().unwrap());
    assert_eq!(c.get(&forged).await.status, 400);
    assert!(c.cookie(SYN, "DZIENNIKSID").is_none());
}

#[tokio::test]
async fn classic_flow_from_api_gets_no_oauth_token() {
    let sb = LibrusSandbox::spawn().await;
    let mut c = Client::new(&sb.upstreams());
    let page = c
        .get(&format!(
            "{API}/OAuth/Authorization?client_id=46&response_type=code&scope=mydata"
        ))
        .await;
    assert_eq!(page.status, 200);
    login(&mut c, DEMO_LOGIN, DEMO_PASSWORD).await;
    let grant = c
        .get(&format!("{API}/OAuth/Authorization/Grant?client_id=46"))
        .await;
    assert!(!grant.location().contains("state="));
    c.follow(grant).await;
    assert!(c.cookie(SYN, "DZIENNIKSID").is_some());
    assert!(c.cookie(SYN, "oauth_token").is_none());
    let info = c
        .get(&format!("{SYN}/gateway/api/2.0/Auth/TokenInfo"))
        .await;
    assert_eq!(info.status, 403);
    assert_eq!(info.json()["Message"], "Brak dostępu");
}

#[tokio::test]
async fn token_info_without_oauth_token_is_refused() {
    let sb = LibrusSandbox::spawn().await;
    let mut c = full_login(&sb, DEMO_LOGIN, DEMO_PASSWORD).await;
    c.remove_cookie(SYN, "oauth_token");
    let info = c
        .get(&format!("{SYN}/gateway/api/2.0/Auth/TokenInfo"))
        .await;
    assert_eq!(info.status, 403);
    assert_eq!(info.json()["Message"], "Brak dostępu");
    // And with no cookies at all.
    let mut bare = Client::new(&sb.upstreams());
    assert_eq!(
        bare.get(&format!("{SYN}/gateway/api/2.0/Auth/TokenInfo"))
            .await
            .status,
        403
    );
    assert_eq!(bare.get(&format!("{SYN}/refreshToken")).await.status, 401);
}

#[tokio::test]
async fn user_info_of_someone_else_is_refused() {
    let sb = LibrusSandbox::spawn().await;
    let mut c = full_login(&sb, DEMO_LOGIN, DEMO_PASSWORD).await;
    let r = c
        .get(&format!("{SYN}/gateway/api/2.0/Auth/UserInfo/7654321u"))
        .await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn maintenance_and_every_fault_kind() {
    let sb = LibrusSandbox::spawn().await;
    let mut c = Client::with_timeout(&sb.upstreams(), Duration::from_millis(500));
    sb.set_maintenance(true);
    let r = c.get(&format!("{API}/")).await;
    assert_eq!(r.status, 503);
    assert!(r.json()["Message"][0]["description"].is_string());
    sb.set_maintenance(false);
    assert_eq!(c.get(&format!("{API}/")).await.status, 200);

    let entry = format!("{SYN}/loguj/portalRodzina");
    sb.set_fault("entry", Fault::Garbage);
    let r = c.get(&entry).await;
    assert_eq!(r.status, 200);
    assert!(serde_json::from_str::<serde_json::Value>(&r.text).is_err());
    sb.set_fault("entry", Fault::WrongShape);
    assert_eq!(c.get(&entry).await.json()["unexpected"], true);
    sb.set_fault("entry", Fault::Unavailable503);
    assert_eq!(c.get(&entry).await.status, 503);
    sb.set_fault("entry", Fault::Reset);
    let e = c.try_get(&entry).await.unwrap_err();
    assert!(!e.is_timeout(), "{e:?}");
    sb.set_fault("entry", Fault::Stall);
    let e = c.try_get(&entry).await.unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
    sb.set_fault("entry", Fault::None);
    assert_eq!(c.get(&entry).await.status, 302);

    // A counted fault clears itself.
    sb.set_fault_times("root", Fault::Unavailable503, 1);
    assert_eq!(c.get(&format!("{API}/")).await.status, 503);
    assert_eq!(c.get(&format!("{API}/")).await.status, 200);
}

#[tokio::test]
async fn faults_switch_over_http_on_either_host() {
    let sb = LibrusSandbox::spawn().await;
    let mut c = Client::new(&sb.upstreams());
    let r = c
        .post_json(
            &format!("{SYN}/testing/faults"),
            serde_json::json!({"step": "login", "fault": "503"}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["faults"]["login"]["fault"], "503");
    init(&mut c).await;
    assert_eq!(login(&mut c, DEMO_LOGIN, DEMO_PASSWORD).await.status, 503);
    let r = c
        .post_json(
            &format!("{API}/testing/faults"),
            serde_json::json!({"step": "all", "fault": "none"}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(login(&mut c, DEMO_LOGIN, DEMO_PASSWORD).await.status, 200);
    let bad = c
        .post_json(
            &format!("{API}/testing/faults"),
            serde_json::json!({"step": "nope", "fault": "503"}),
        )
        .await;
    assert_eq!(bad.status, 400);
}

// ---------------------------------------------------------------------------------------------
// The gateway's data endpoints (Me, Grades), as an app reads them with the session's cookies.

const ME: &str = "https://synergia.librus.pl/gateway/api/2.0/Me";
const GRADES: &str = "https://synergia.librus.pl/gateway/api/2.0/Grades";

/// A full login, then TokenInfo and UserInfo (which activate the API access).
async fn activated(sb: &LibrusSandbox, user: &str, pass: &str) -> Client {
    let mut c = full_login(sb, user, pass).await;
    let info = c
        .get(&format!("{SYN}/gateway/api/2.0/Auth/TokenInfo"))
        .await
        .ok_json();
    let id = info["UserIdentifier"].as_str().unwrap().to_owned();
    c.get(&format!("{SYN}/gateway/api/2.0/Auth/UserInfo/{id}"))
        .await
        .ok_json();
    c
}

/// The three cookies of `c`'s session as one header, with `name` replaced by `value` (or left
/// out when `value` is empty).
fn cookies_with(c: &Client, name: &str, value: &str) -> String {
    ["DZIENNIKSID", "SDZIENNIKSID", "oauth_token"]
        .iter()
        .filter_map(|n| {
            let v = if *n == name {
                value.to_owned()
            } else {
                c.cookie(SYN, n).unwrap()
            };
            (!v.is_empty()).then(|| format!("{n}={v}"))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn assert_token_expired(r: &Resp) {
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(
        r.json(),
        serde_json::json!({"Status": "Error", "Code": "TokenIsExpired", "Message": "Access token is expired"})
    );
}

#[tokio::test]
async fn me_and_grades_answer_an_activated_session() {
    let sb = LibrusSandbox::spawn().await;
    let mut c = activated(&sb, DEMO_LOGIN, DEMO_PASSWORD).await;
    let me = c.get(ME).await.ok_json();
    let account = &me["Me"]["Account"];
    assert_eq!(account["Login"], DEMO_LOGIN);
    assert_eq!(account["UserId"], 1234567);
    assert_eq!(account["IsPremium"], false);
    assert!(account["Id"].is_u64());
    assert_eq!(
        (&account["FirstName"], &account["LastName"]),
        (
            &me["Me"]["User"]["FirstName"],
            &me["Me"]["User"]["LastName"]
        )
    );
    let grades = c.get(GRADES).await.ok_json();
    assert!(!grades["Grades"].as_array().unwrap().is_empty());
    assert_real(&grades.to_string());

    // The last data request is kept (the login's Auth/… calls are not data requests).
    let last = sb.last_api_request().unwrap();
    assert_eq!(
        (last.origin, last.method.as_str(), last.path.as_str()),
        (SYNERGIA_ORIGIN, "GET", "/gateway/api/2.0/Grades")
    );
    assert!(last.header("cookie").unwrap().contains("oauth_token="));
    c.get(&format!("{SYN}/gateway/api/2.0/Auth/TokenInfo"))
        .await
        .ok_json();
    let j = c
        .get(&format!("{API}/testing/last-api-request"))
        .await
        .ok_json();
    assert_eq!(j["path"], "/gateway/api/2.0/Grades");
    assert_eq!(j["method"], "GET");
}

#[tokio::test]
async fn the_gateway_refuses_a_missing_wrong_or_mixed_cookie_with_token_is_expired() {
    let sb = LibrusSandbox::spawn().await;
    let c = activated(&sb, DEMO_LOGIN, DEMO_PASSWORD).await;
    let other = activated(&sb, DEMO_GRANT_LOGIN, DEMO_GRANT_PASSWORD).await;
    let get = |cookie: String| {
        let c = &c;
        async move {
            c.send_raw(reqwest::Method::GET, ME, &cookie, &[], None)
                .await
        }
    };
    assert_eq!(get(cookies_with(&c, "", "")).await.status, 200);
    for name in ["DZIENNIKSID", "SDZIENNIKSID", "oauth_token"] {
        assert_token_expired(&get(cookies_with(&c, name, "")).await);
        assert_token_expired(&get(cookies_with(&c, name, "0123456789abcdef")).await);
        // The other session's value: the three must belong together.
        let theirs = other.cookie(SYN, name).unwrap();
        assert_token_expired(&get(cookies_with(&c, name, &theirs)).await);
    }
    assert_token_expired(&get(String::new()).await);
}

#[tokio::test]
async fn an_expired_oauth_token_is_refused_until_refresh_token_renews_it() {
    let sb = LibrusSandbox::spawn().await;
    let mut c = activated(&sb, DEMO_LOGIN, DEMO_PASSWORD).await;
    sb.advance_clock(TOKEN_LIFETIME + Duration::from_secs(1));
    assert_token_expired(&c.get(ME).await);
    assert_token_expired(&c.get(GRADES).await);
    c.get(&format!("{SYN}/refreshToken")).await.ok_json();
    assert_eq!(c.get(ME).await.status, 200);
    // Revocation ends the session itself.
    sb.revoke(DEMO_LOGIN);
    assert_token_expired(&c.get(ME).await);
}

#[tokio::test]
async fn invalidated_tokens_are_refused_by_the_data_endpoints_while_refresh_still_works() {
    let sb = LibrusSandbox::spawn().await;
    let mut c = activated(&sb, DEMO_LOGIN, DEMO_PASSWORD).await;
    assert_eq!(sb.invalidate_api_tokens(), 1);
    assert_token_expired(&c.get(ME).await);
    assert_token_expired(&c.get(GRADES).await);
    // The login's own calls still work.
    assert_eq!(
        c.get(&format!("{SYN}/gateway/api/2.0/Auth/TokenInfo"))
            .await
            .status,
        200
    );
    c.get(&format!("{SYN}/refreshToken")).await.ok_json();
    assert_eq!(c.get(ME).await.status, 200);

    // Over HTTP, on either host.
    let r = c
        .post_json(
            &format!("{API}/testing/invalidate-api-tokens"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(r.ok_json()["invalidated"], 1);
    assert_token_expired(&c.get(ME).await);
    c.get(&format!("{SYN}/refreshToken")).await.ok_json();
    assert_eq!(c.get(GRADES).await.status, 200);
}

#[tokio::test]
async fn grades_meet_their_faults() {
    let sb = LibrusSandbox::spawn().await;
    let mut c = activated(&sb, DEMO_LOGIN, DEMO_PASSWORD).await;
    sb.set_fault_times("grades", Fault::Unavailable503, 1);
    assert_eq!(c.get(GRADES).await.status, 503);
    assert_eq!(c.get(GRADES).await.status, 200);
}
