//! The API proxy: an app's request sent on to its account's provider with the account's
//! credentials put in, so apps need no per-provider code and tokens never reach them.
//!
//! - Only the provider's declared API is reachable ([`ProviderApi`]: origins and the path under
//!   each; `proxy_not_allowed` otherwise), and only the headers it declares go along: the
//!   app's `Cookie` and `Authorization` never do.
//! - The credentials are renewed first when due, as for a credentials read. An upstream `401`
//!   gets one renewal and one retry; a second `401` is `needs_sign_in`.
//! - The answer streams back as it arrives, at most [`ANSWER_LIMIT`] bytes, with the headers
//!   that say what it is ([`ANSWER_HEADERS`]); never `Set-Cookie`.
//! - Each call goes into the account's audit log naming the key; nothing of the request, the
//!   credentials or the answer is logged.

use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::Method;

use crate::accounts::store::ConnectedAccount;
use crate::accounts::upkeep::Upkeep;
use crate::apps::events::{AccountEvent, AccountEvents};
use crate::flows::upstream::{BodyStream, StreamedResponse, UpstreamRequest, Upstreams};
use crate::providers::api::{self, ProviderApi, ANSWER_HEADERS};
use crate::providers::AnyProvider;
use crate::sign_in::users::UserId;
use crate::ErrorCode;

/// The most of an app's request body the proxy takes: it is kept whole, because a retry after
/// a `401` sends it again and Xiaomi's signature covers it.
pub const REQUEST_LIMIT: usize = 1 << 20;
/// The most of an upstream's answer passed on (a longer one is cut short).
pub const ANSWER_LIMIT: usize = 16 << 20;
/// How long one upstream request may take, its answer's body included.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// An app's request, as it came to `/api/v1/accounts/{id}/proxy/{path}`.
#[derive(Debug, Clone)]
pub struct ProxyRequest {
    pub method: Method,
    /// The API origin the app named (`Stepgate-Origin`); the provider's first when `None`.
    pub origin: Option<String>,
    /// The path after `/proxy/`, percent-encoded as sent.
    pub path: String,
    pub query: Option<String>,
    /// The app's headers (names lower case); the proxy keeps the ones the API takes.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The upstream's answer, on its way to the app.
pub struct ProxyAnswer {
    pub status: u16,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: BodyStream,
}

impl std::fmt::Debug for ProxyAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyAnswer")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
pub struct ApiProxy {
    pub(crate) upkeep: Upkeep,
    pub(crate) events: AccountEvents,
    pub(crate) upstreams: Upstreams,
}

impl ApiProxy {
    /// Sends `request` to the provider of account `account_id` of `user_id` for API key
    /// `key_id` (its public part, for the audit log).
    pub async fn forward(
        &self,
        user_id: UserId,
        account_id: i64,
        key_id: &str,
        request: ProxyRequest,
    ) -> Result<ProxyAnswer, ErrorCode> {
        let (account, secrets) = self.upkeep.fresh_account(user_id, account_id).await?;
        let provider = self
            .upkeep
            .providers
            .get(account.provider.as_str())
            .ok_or(ErrorCode::NotFound)?;
        let api = provider.api().ok_or(ErrorCode::ProxyNotAllowed)?;
        let upstream = upstream_request(api, &request)?;
        self.audit(user_id, &account, key_id).await;

        let first = self.send(&*provider, upstream.clone(), &secrets).await?;
        // The account and the status only: a path or query may name the user's own data.
        tracing::debug!(
            account = account_id,
            provider = account.provider,
            status = first.status,
            "proxied an app's request"
        );
        if first.status != 401 {
            return Ok(answer(first));
        }
        // The provider refused credentials Stepgate thought good: renew them once and retry.
        drop(first);
        tracing::info!(
            account = account_id,
            provider = account.provider,
            "the provider refused an account's credentials: renewing them once before a retry"
        );
        let (_, renewed) = self
            .upkeep
            .renewed_after_refusal(user_id, account_id, account.renewed_at)
            .await?;
        let second = self.send(&*provider, upstream, &renewed).await?;
        if second.status == 401 {
            tracing::info!(
                account = account_id,
                provider = account.provider,
                "the provider refused an account's credentials after a renewal"
            );
            return Err(ErrorCode::NeedsSignIn);
        }
        Ok(answer(second))
    }

    async fn send(
        &self,
        provider: &dyn AnyProvider,
        request: UpstreamRequest,
        secrets: &serde_json::Value,
    ) -> Result<StreamedResponse, ErrorCode> {
        let now = self.upkeep.clock.now();
        let request = provider.authorize_api_request(request, secrets, now)?;
        self.upstreams
            .send_streamed(provider.name(), request, UPSTREAM_TIMEOUT)
            .await
    }

    async fn audit(&self, user_id: UserId, account: &ConnectedAccount, key_id: &str) {
        let event = AccountEvent::ApiProxied {
            key_id: key_id.to_owned(),
        };
        self.events.account_event(user_id, account, event).await;
    }
}

/// The upstream request of an app's request: its target on a declared origin, the headers the
/// API takes, and the body as sent (with its content type).
fn upstream_request(
    api: &ProviderApi,
    request: &ProxyRequest,
) -> Result<UpstreamRequest, ErrorCode> {
    let url = api.target(
        request.origin.as_deref(),
        &request.path,
        request.query.as_deref(),
    )?;
    let mut upstream = UpstreamRequest::new(request.method.clone(), url).limit(ANSWER_LIMIT);
    let mut content_type = None;
    for (name, value) in &request.headers {
        let name = name.to_ascii_lowercase();
        if name == "content-type" {
            content_type = Some(value.clone());
        } else if api.passes_header(&name) {
            if let Some(name) = api::header_name(&name) {
                upstream = upstream.header(name, value.clone());
            }
        }
    }
    if !request.body.is_empty() || content_type.is_some() {
        upstream = upstream.raw_body(content_type, request.body.clone());
    }
    Ok(upstream)
}

/// What goes back to the app: the status, the headers that say what the body is, the body.
fn answer(response: StreamedResponse) -> ProxyAnswer {
    let headers = response
        .headers
        .iter()
        .filter(|(name, _)| ANSWER_HEADERS.contains(&name.as_str()))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    ProxyAnswer {
        status: response.status,
        headers,
        body: response.into_body(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use sandbox::api::ApiRequest;

    use super::*;
    use crate::accounts::store::AccountStatus;
    use crate::flows::runner::Progress;
    use crate::test_support::{connected, ProviderSetup};

    fn call(method: Method, path: &str) -> ProxyRequest {
        ProxyRequest {
            method,
            origin: None,
            path: path.to_owned(),
            query: None,
            // What an app might send along: Stepgate's key and its own cookie must not go on.
            headers: vec![
                ("authorization".into(), "Bearer sgk_app_key".into()),
                ("cookie".into(), "stepgate_session=app".into()),
                ("accept".into(), "application/json".into()),
                ("x-forwarded-for".into(), "10.0.0.1".into()),
            ],
            body: Vec::new(),
        }
    }

    async fn text_of(answer: ProxyAnswer) -> (u16, String) {
        use futures_util::StreamExt;
        let status = answer.status;
        let chunks: Vec<_> = answer.body.collect().await;
        let bytes: Vec<u8> = chunks
            .into_iter()
            .flat_map(|c| c.unwrap().to_vec())
            .collect();
        (status, String::from_utf8(bytes).unwrap())
    }

    /// What reached the provider carries none of the app's own credentials.
    fn assert_nothing_of_the_apps(seen: &ApiRequest) {
        let text = format!("{seen:?}");
        assert!(!text.contains("sgk_app_key"), "{text}");
        assert!(!text.contains("stepgate_session"), "{text}");
        assert!(seen.header("x-forwarded-for").is_none(), "{text}");
        assert_eq!(seen.header("accept"), Some("application/json"));
    }

    /// Log lines written while a test runs (this thread's), to look for secrets in.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn start() -> (Captured, tracing::subscriber::DefaultGuard) {
            let captured = Captured::default();
            let writer = captured.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_env_filter("engine=trace,sandbox=trace")
                .with_writer(move || writer.clone())
                .finish();
            (captured, tracing::subscriber::set_default(subscriber))
        }

        fn assert_free_of(&self, secrets: &serde_json::Value) {
            let log = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
            assert!(!log.is_empty(), "the capture sees the engine's log");
            let object = secrets.as_object().unwrap();
            for (name, value) in object {
                let Some(value) = value.as_str().filter(|v| v.len() >= 8) else {
                    continue;
                };
                assert!(!log.contains(value), "{name} in the log");
            }
        }
    }

    /// Forwards `request` for the owner's `account` as API key `sgk_test`.
    async fn forward<D>(
        s: &ProviderSetup<D>,
        account: i64,
        request: ProxyRequest,
    ) -> Result<ProxyAnswer, ErrorCode> {
        s.engine
            .proxy_api_request(s.user_id, account, "sgk_test", request)
            .await
    }

    /// The audit log of `account` names the key and holds none of `secrets`.
    async fn assert_audited<D>(s: &ProviderSetup<D>, account: i64, secrets: &serde_json::Value) {
        let log = s.engine.audit_log(s.user_id, account).await.unwrap();
        let proxied = log.iter().find(|e| e.event == "api_proxy").unwrap();
        assert_eq!(proxied.api_key.as_deref(), Some("sgk_test"));
        let raw: Vec<String> = sqlx::query_scalar(
            "SELECT event || ' ' || COALESCE(code, '') || ' ' || COALESCE(api_key, '') FROM account_audit",
        )
        .fetch_all(s.engine.pool())
        .await
        .unwrap();
        for (name, value) in secrets.as_object().unwrap() {
            if let Some(value) = value.as_str().filter(|v| v.len() >= 8) {
                assert!(raw.iter().all(|row| !row.contains(value)), "{name}");
            }
        }
    }

    #[tokio::test]
    async fn flameconnect_gets_its_bearer_token_and_a_refused_one_is_renewed_once() {
        use sandbox::flameconnect::{self as double, FlameConnectSandbox};
        let (log, _guard) = Captured::start();
        let s = ProviderSetup::new("flameconnect", FlameConnectSandbox::spawn().await).await;
        let account = connected(
            s.start(&[
                ("email", double::DEMO_EMAIL),
                ("password", double::DEMO_PASSWORD),
            ])
            .await,
        )
        .id;
        let kept = s.stored_secrets(account).await;
        let mut request = call(Method::GET, "api/Fires/GetFires");
        request
            .headers
            .push(("app_name".into(), "FlameConnect".into()));
        let (status, body) = text_of(forward(&s, account, request.clone()).await.unwrap()).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("FireId"), "{body}");
        let seen = s.sandbox.last_api_request().unwrap();
        assert_eq!(
            seen.header("authorization"),
            Some(format!("Bearer {}", kept["access_token"].as_str().unwrap()).as_str())
        );
        assert_eq!(seen.header("app_name"), Some("FlameConnect"));
        assert_nothing_of_the_apps(&seen);

        // The API refuses the token while a refresh still works: one renewal, one retry.
        let refreshes = s.sandbox.refreshes();
        s.sandbox.invalidate_api_tokens();
        let (status, _) = text_of(forward(&s, account, request.clone()).await.unwrap()).await;
        assert_eq!(status, 200);
        assert_eq!(s.sandbox.refreshes(), refreshes + 1);
        let renewed = s.stored_secrets(account).await;
        assert_ne!(renewed["access_token"], kept["access_token"]);

        // Another origin is never reached.
        let mut elsewhere = request.clone();
        elsewhere.origin = Some("https://gdhvb2cflameconnect.b2clogin.com".into());
        assert_eq!(
            forward(&s, account, elsewhere).await.unwrap_err(),
            ErrorCode::ProxyNotAllowed
        );

        // Refused and not renewable: needs sign-in, and marked so.
        s.sandbox.revoke(double::DEMO_EMAIL);
        assert_eq!(
            forward(&s, account, request).await.unwrap_err(),
            ErrorCode::NeedsSignIn
        );
        assert_eq!(s.stored(account).await.status, AccountStatus::NeedsSignIn);
        assert_audited(&s, account, &kept).await;
        log.assert_free_of(&kept);
        log.assert_free_of(&renewed);
    }

    #[tokio::test]
    async fn librus_gets_the_synergia_cookies_and_a_refused_session_is_renewed_once() {
        use sandbox::librus::{self as double, LibrusSandbox};
        let (log, _guard) = Captured::start();
        let s = ProviderSetup::new("librus", LibrusSandbox::spawn().await).await;
        let account = connected(
            s.start(&[
                ("login", double::DEMO_LOGIN),
                ("password", double::DEMO_PASSWORD),
            ])
            .await,
        )
        .id;
        let kept = s.stored_secrets(account).await;
        let request = call(Method::GET, "gateway/api/2.0/Me");
        let (status, body) = text_of(forward(&s, account, request.clone()).await.unwrap()).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(double::DEMO_LOGIN), "{body}");
        let seen = s.sandbox.last_api_request().unwrap();
        let cookies = seen.header("cookie").unwrap();
        for name in crate::providers::librus::SESSION_COOKIES {
            let value = kept[name].as_str().unwrap();
            assert!(
                cookies.contains(&format!("{name}={value}")),
                "{name}: {cookies}"
            );
        }
        assert!(seen.header("authorization").is_none());
        assert_nothing_of_the_apps(&seen);

        s.sandbox.invalidate_api_tokens();
        let (status, _) = text_of(forward(&s, account, request.clone()).await.unwrap()).await;
        assert_eq!(status, 200);
        let renewed = s.stored_secrets(account).await;
        assert_ne!(renewed, kept, "renewed before the retry");

        // Outside the gateway (Synergia's pages) is not the API.
        assert_eq!(
            forward(&s, account, call(Method::GET, "refreshToken"))
                .await
                .unwrap_err(),
            ErrorCode::ProxyNotAllowed
        );
        assert_eq!(
            forward(
                &s,
                account,
                call(Method::GET, "gateway/api/2.0/../../refreshToken")
            )
            .await
            .unwrap_err(),
            ErrorCode::ProxyNotAllowed
        );
        assert_audited(&s, account, &kept).await;
        log.assert_free_of(&kept);
        log.assert_free_of(&renewed);
    }

    #[tokio::test]
    async fn lynkco_gets_its_ccc_token_on_both_connected_car_origins() {
        use sandbox::lynkco::{self as double, LynkcoSandbox};
        let (log, _guard) = Captured::start();
        let s = ProviderSetup::new("lynkco", LynkcoSandbox::spawn().await).await;
        let flow = match s
            .start(&[
                ("email", double::DEMO_EMAIL),
                ("password", double::DEMO_PASSWORD),
                ("vin", double::DEMO_VIN),
            ])
            .await
        {
            Ok(Progress::Next(view)) => view,
            other => panic!("the code step expected, got {other:?}"),
        };
        let code = s.sandbox.latest_code(double::DEMO_EMAIL).unwrap();
        let account = connected(s.submit(&flow, &[("code", &code)]).await).id;
        let kept = s.stored_secrets(account).await;

        let mut drivers = call(
            Method::GET,
            &format!(
                "delegated-driver/api/delegateddriver/v1/vehicle/{}/drivers",
                double::DEMO_VIN
            ),
        );
        drivers.origin = Some("https://delegated-driver-tls.aion.connectedcar.cloud".into());
        let (status, body) = text_of(forward(&s, account, drivers).await.unwrap()).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(double::DEMO_USER_ID), "{body}");
        let vehicles = call(
            Method::GET,
            &format!(
                "user-lifecycle/api/provisioning/v1/users/{}/activevehicles",
                double::DEMO_USER_ID
            ),
        );
        let (status, body) = text_of(forward(&s, account, vehicles.clone()).await.unwrap()).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(double::DEMO_VIN), "{body}");
        let seen = s.sandbox.last_api_request().unwrap();
        assert_eq!(
            seen.header("authorization"),
            Some(format!("Bearer {}", kept["ccc_token"].as_str().unwrap()).as_str()),
            "the CCC token, not the B2C access token"
        );
        assert_nothing_of_the_apps(&seen);

        let refreshes = s.sandbox.refreshes();
        s.sandbox.invalidate_api_tokens();
        let (status, _) = text_of(forward(&s, account, vehicles).await.unwrap()).await;
        assert_eq!(status, 200);
        assert_eq!(s.sandbox.refreshes(), refreshes + 1);
        let renewed = s.stored_secrets(account).await;
        assert_audited(&s, account, &kept).await;
        log.assert_free_of(&kept);
        log.assert_free_of(&renewed);
    }

    #[tokio::test]
    async fn xiaomi_requests_are_signed_with_ssecurity_and_renewed_once_when_refused() {
        use sandbox::xiaomi::{self as double, XiaomiSandbox};
        let (log, _guard) = Captured::start();
        let s = ProviderSetup::new("xiaomi", XiaomiSandbox::spawn().await).await;
        let account = connected(
            s.start(&[
                ("username", double::DEMO_USER),
                ("password", double::DEMO_PASSWORD),
            ])
            .await,
        )
        .id;
        let kept = s.stored_secrets(account).await;
        let mut request = call(Method::POST, "app/home/device_list");
        request.headers.push((
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        ));
        request.body =
            b"data=%7B%22getVirtualModel%22%3Afalse%2C%22getHuamiDevices%22%3A0%7D".to_vec();
        let (status, body) = text_of(forward(&s, account, request.clone()).await.unwrap()).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"code\":0"), "{body}");
        let seen = s.sandbox.last_api_request().unwrap();
        assert!(seen.body.contains("signature="), "{}", seen.body);
        let cookies = seen.header("cookie").unwrap();
        assert!(cookies.contains(&format!(
            "serviceToken={}",
            kept["serviceToken"].as_str().unwrap()
        )));
        assert!(
            !format!("{seen:?}").contains(kept["ssecurity"].as_str().unwrap()),
            "ssecurity signs; it is never sent"
        );
        assert_nothing_of_the_apps(&seen);

        // A regional server the app names is declared too; a host of Xiaomi's that is not an
        // API is not.
        let mut account_host = request.clone();
        account_host.origin = Some("https://account.xiaomi.com".into());
        assert_eq!(
            forward(&s, account, account_host).await.unwrap_err(),
            ErrorCode::ProxyNotAllowed
        );

        s.sandbox.invalidate_api_tokens();
        let (status, body) = text_of(forward(&s, account, request).await.unwrap()).await;
        assert_eq!(status, 200, "{body}");
        let renewed = s.stored_secrets(account).await;
        assert_ne!(renewed["serviceToken"], kept["serviceToken"]);
        assert_audited(&s, account, &kept).await;
        log.assert_free_of(&kept);
        log.assert_free_of(&renewed);
    }
}
