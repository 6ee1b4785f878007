//! Talking to third-party services ("upstreams"): one shared HTTP client, one cookie jar per
//! flow, and one map that points real origins at doubles.
//!
//! Provider code names only the real hosts (`https://api.librus.pl`). `STEPGATE_UPSTREAMS`
//! holds whitespace-separated `REAL_ORIGIN=BASE_URL` pairs; a request to a mapped origin
//! connects to the base instead, while the cookie jar, redirects, URL checks and error messages
//! keep the real origin: cookies of two hosts never mix even when both doubles listen on
//! 127.0.0.1. Unset, Stepgate talks to the real hosts.
//!
//! A flow's jar ([`HttpSession`]) is saved into the flow between steps (the engine seals it), so
//! a login goes on after a restart or on another instance. Cookie values go back exactly as the
//! server set them (never quoted). Redirects are never followed by the client: a step that wants
//! a `Location` (or a cookie set on the way) reads it, and [`HttpSession::follow`] walks them by
//! hand when a step wants the end.

use std::sync::Arc;
use std::time::Duration;

use cookie_store::CookieStore;
use reqwest::header::{HeaderMap, HeaderName, COOKIE, LOCATION, SET_COOKIE};
use reqwest::Method;
use url::Url;

use crate::ErrorCode;

/// How long one upstream request may take, unless configured otherwise.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `scheme://host[:port]` of a URL, as the map keys it.
fn origin_of(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// Real origins and the doubles that stand in for them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamMap {
    /// (real origin, base URL) pairs.
    pairs: Vec<(String, Url)>,
}

impl UpstreamMap {
    /// Parses `REAL_ORIGIN=BASE_URL` pairs separated by whitespace.
    pub fn parse(spec: &str) -> Result<UpstreamMap, String> {
        let mut pairs = Vec::new();
        for pair in spec.split_whitespace() {
            let (real, base) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}` is not REAL_ORIGIN=BASE_URL"))?;
            let real = Url::parse(real).map_err(|e| format!("`{real}`: {e}"))?;
            if real.path() != "/" || real.query().is_some() {
                return Err(format!("`{real}` must be an origin (no path)"));
            }
            let base = Url::parse(base).map_err(|e| format!("`{base}`: {e}"))?;
            if !matches!(base.scheme(), "http" | "https") {
                return Err(format!("`{base}` must be an http(s) URL"));
            }
            pairs.push((origin_of(&real), base));
        }
        Ok(UpstreamMap { pairs })
    }

    fn base_for(&self, real: &Url) -> Option<&Url> {
        let origin = origin_of(real);
        self.pairs
            .iter()
            .find(|(o, _)| *o == origin)
            .map(|(_, b)| b)
    }

    /// Where a request for `real` actually goes (the same URL when the origin is not mapped).
    pub fn connect_url(&self, real: &Url) -> Url {
        let Some(base) = self.base_for(real) else {
            return real.clone();
        };
        let mut url = base.clone();
        let prefix = base.path().trim_end_matches('/');
        url.set_path(&format!("{prefix}{}", real.path()));
        url.set_query(real.query());
        url.set_fragment(real.fragment());
        url
    }

    /// The URL to show a browser for `real`: browsers reach the double too.
    pub fn browser_url(&self, real: &Url) -> Url {
        self.connect_url(real)
    }

    /// The real URL for one a user pasted: on a real origin it is itself; on a mapped base it is
    /// turned back into the real origin it stands for.
    pub fn real_url(&self, seen: &Url) -> Url {
        let seen_origin = origin_of(seen);
        for (real, base) in &self.pairs {
            let prefix = base.path().trim_end_matches('/');
            if origin_of(base) == seen_origin && seen.path().starts_with(prefix) {
                if let Ok(mut url) = Url::parse(real) {
                    url.set_path(&seen.path()[prefix.len()..]);
                    url.set_query(seen.query());
                    url.set_fragment(seen.fragment());
                    return url;
                }
            }
        }
        seen.clone()
    }
}

/// The shared client and the map: one per engine.
#[derive(Clone)]
pub struct Upstreams {
    client: reqwest::Client,
    map: Arc<UpstreamMap>,
    step_timeout: Duration,
}

impl Upstreams {
    pub fn new(map: UpstreamMap, step_timeout: Duration) -> Upstreams {
        let client = reqwest::Client::builder()
            // Redirects are walked by hand (cookies on the way, custom-scheme endings).
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .expect("a TLS backend is built in");
        Upstreams {
            client,
            map: Arc::new(map),
            step_timeout,
        }
    }

    pub fn map(&self) -> &UpstreamMap {
        &self.map
    }

    /// A new, empty session for a flow.
    pub fn session(&self) -> HttpSession {
        HttpSession {
            upstreams: self.clone(),
            jar: CookieStore::new(),
        }
    }

    /// A flow's session as [`HttpSession::save`] left it.
    pub fn restore(&self, saved: &str) -> Result<HttpSession, ErrorCode> {
        let jar = cookie_store::serde::json::load_all(saved.as_bytes()).map_err(|e| {
            tracing::error!(error = %e, "a saved upstream cookie jar did not load");
            ErrorCode::Unknown
        })?;
        Ok(HttpSession {
            upstreams: self.clone(),
            jar,
        })
    }
}

/// A request to an upstream, addressed by its real URL.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    method: Method,
    url: Url,
    headers: Vec<(HeaderName, String)>,
    body: Option<(&'static str, Vec<u8>)>,
}

impl UpstreamRequest {
    pub fn get(url: Url) -> Self {
        Self::new(Method::GET, url)
    }

    pub fn post(url: Url) -> Self {
        Self::new(Method::POST, url)
    }

    pub fn new(method: Method, url: Url) -> Self {
        UpstreamRequest {
            method,
            url,
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// An `application/x-www-form-urlencoded` body.
    pub fn form(mut self, fields: &[(&str, &str)]) -> Self {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        self.body = Some(("application/x-www-form-urlencoded", body.into_bytes()));
        self
    }

    /// A JSON body.
    pub fn json(mut self, value: &serde_json::Value) -> Self {
        self.body = Some(("application/json", value.to_string().into_bytes()));
        self
    }

    pub fn url(&self) -> &Url {
        &self.url
    }
}

/// An upstream's answer; `url` is the real URL it answered for.
#[derive(Debug, Clone)]
pub struct UpstreamResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub url: Url,
}

impl UpstreamResponse {
    /// The `Location` header resolved against the real URL (a custom scheme is kept as is).
    pub fn location(&self) -> Option<Url> {
        let value = self.headers.get(LOCATION)?.to_str().ok()?;
        self.url.join(value).ok()
    }

    pub fn is_redirect(&self) -> bool {
        (300..400).contains(&self.status) && self.headers.contains_key(LOCATION)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; an answer out of shape is `unknown` (the reason goes to the log).
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ErrorCode> {
        serde_json::from_slice(&self.body).map_err(|e| {
            tracing::warn!(url = %loggable(&self.url), status = self.status, error = %e, "an upstream answer was out of shape");
            ErrorCode::Unknown
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One flow's conversation with its upstreams: the shared client plus the flow's cookie jar.
pub struct HttpSession {
    upstreams: Upstreams,
    jar: CookieStore,
}

impl HttpSession {
    /// The jar as text, to be sealed into the flow (session cookies included: they are the
    /// login's state).
    pub fn save(&self) -> Result<String, ErrorCode> {
        let mut out = Vec::new();
        cookie_store::serde::json::save_incl_expired_and_nonpersistent(&self.jar, &mut out)
            .map_err(|e| {
                tracing::error!(error = %e, "saving an upstream cookie jar failed");
                ErrorCode::Unknown
            })?;
        String::from_utf8(out).map_err(|_| ErrorCode::Unknown)
    }

    pub fn map(&self) -> &UpstreamMap {
        self.upstreams.map()
    }

    /// The value of cookie `name` the jar would send to `url`.
    pub fn cookie(&self, url: &Url, name: &str) -> Option<String> {
        self.jar
            .get_request_values(url)
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_owned())
    }

    /// Puts a cookie in the jar as if `url` had set it (clients that send their own cookies).
    pub fn set_cookie(&mut self, url: &Url, name: &str, value: &str) {
        let _ = self.jar.parse(&format!("{name}={value}; Path=/"), url);
    }

    /// Sends one request (no redirect followed). Transport failures become `timeout` or
    /// `cannot_connect`; what the answer means is the provider's business.
    pub async fn send(&mut self, request: UpstreamRequest) -> Result<UpstreamResponse, ErrorCode> {
        let target = self.upstreams.map.connect_url(&request.url);
        let mut builder = self
            .upstreams
            .client
            .request(request.method.clone(), target.as_str())
            .timeout(self.upstreams.step_timeout);
        let cookies: Vec<String> = self
            .jar
            .get_request_values(&request.url)
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        if !cookies.is_empty() {
            builder = builder.header(COOKIE, cookies.join("; "));
        }
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        if let Some((content_type, body)) = request.body {
            builder = builder
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body);
        }
        let response = builder
            .send()
            .await
            .map_err(|e| transport_error(&request.url, &e))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        for value in headers.get_all(SET_COOKIE) {
            if let Ok(text) = value.to_str() {
                // Stored under the real URL: the double's address never reaches the jar.
                let _ = self.jar.parse(text, &request.url);
            }
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| transport_error(&request.url, &e))?
            .to_vec();
        Ok(UpstreamResponse {
            status,
            headers,
            body,
            url: request.url,
        })
    }

    /// Sends a GET and walks its redirects by hand (cookies collected on the way), at most
    /// `max_hops`, until an answer that is not a redirect or a `Location` that `stop` accepts
    /// (a custom-scheme ending such as `msauth://…?code=`, which is never fetched).
    pub async fn follow(
        &mut self,
        first: UpstreamRequest,
        max_hops: usize,
        stop: impl Fn(&Url) -> bool,
    ) -> Result<Followed, ErrorCode> {
        let mut response = self.send(first).await?;
        for _ in 0..max_hops {
            if !response.is_redirect() {
                return Ok(Followed::Answer(response));
            }
            let Some(next) = response.location() else {
                return Ok(Followed::Answer(response));
            };
            if stop(&next) || !matches!(next.scheme(), "http" | "https") {
                return Ok(Followed::Stopped(next));
            }
            response = self.send(UpstreamRequest::get(next)).await?;
        }
        tracing::warn!(url = %loggable(&response.url), "too many upstream redirects");
        Err(ErrorCode::Unknown)
    }
}

/// Where [`HttpSession::follow`] ended.
#[derive(Debug)]
pub enum Followed {
    /// An answer that is not a redirect.
    Answer(UpstreamResponse),
    /// A `Location` the caller asked to stop at (or one that is not http(s)): not fetched.
    Stopped(Url),
}

/// Origin and path only: some upstream URLs carry one-time secrets in their query (Xiaomi's
/// STS `auth`, `_ssign`), which must never reach the log.
fn loggable(url: &Url) -> String {
    format!("{}{}", url.origin().ascii_serialization(), url.path())
}

fn transport_error(url: &Url, error: &reqwest::Error) -> ErrorCode {
    let url = loggable(url);
    if error.is_timeout() {
        tracing::warn!(%url, "an upstream took too long");
        ErrorCode::Timeout
    } else {
        // reqwest's error text names the URL it tried (the double's, with the query): not logged.
        tracing::warn!(%url, connect = error.is_connect(), "an upstream could not be reached");
        ErrorCode::CannotConnect
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::Request;
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use axum::Router;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn the_map_sends_real_origins_to_their_doubles_and_back() {
        let map = UpstreamMap::parse(
            "https://api.librus.pl=http://127.0.0.1:3101 \n https://account.xiaomi.com=http://127.0.0.1:3102/xiaomi",
        )
        .unwrap();
        assert_eq!(
            map.connect_url(&url(
                "https://api.librus.pl/OAuth/Authorization?client_id=46"
            )),
            url("http://127.0.0.1:3101/OAuth/Authorization?client_id=46")
        );
        assert_eq!(
            map.connect_url(&url(
                "https://account.xiaomi.com/pass/serviceLogin?sid=xiaomiio"
            )),
            url("http://127.0.0.1:3102/xiaomi/pass/serviceLogin?sid=xiaomiio")
        );
        // Unmapped origins are left alone.
        assert_eq!(
            map.connect_url(&url("https://synergia.librus.pl/x")),
            url("https://synergia.librus.pl/x")
        );
        // A pasted URL on the double is read as the real one.
        assert_eq!(
            map.real_url(&url("http://127.0.0.1:3102/xiaomi/sts?d=1")),
            url("https://account.xiaomi.com/sts?d=1")
        );
        assert_eq!(
            map.real_url(&url("https://account.xiaomi.com/sts?d=1")),
            url("https://account.xiaomi.com/sts?d=1")
        );
    }

    #[test]
    fn a_bad_map_is_refused_with_the_reason() {
        assert!(UpstreamMap::parse("https://api.librus.pl").is_err());
        assert!(UpstreamMap::parse("https://api.librus.pl/path=http://x").is_err());
        assert!(UpstreamMap::parse("https://api.librus.pl=ftp://x").is_err());
        assert_eq!(UpstreamMap::parse("").unwrap(), UpstreamMap::default());
    }

    /// Serves `router` on a free port; returns its base URL.
    async fn serve(router: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        format!("http://{addr}")
    }

    fn echo_cookies(request: Request) -> String {
        request
            .headers()
            .get(COOKIE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    }

    async fn two_hosts() -> (Upstreams, Url, Url) {
        let host = || {
            Router::new()
                .route(
                    "/set",
                    get(|| async {
                        Response::builder()
                            .header(SET_COOKIE, "sid=a+b/c==; Path=/; HttpOnly")
                            .header(LOCATION, "https://b.example.test/landing")
                            .status(302)
                            .body(axum::body::Body::empty())
                            .unwrap()
                    }),
                )
                .route("/landing", get(|r: Request| async move { echo_cookies(r) }))
                .route("/echo", get(|r: Request| async move { echo_cookies(r) }))
                .route(
                    "/slow",
                    get(|| async {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        "late".into_response()
                    }),
                )
        };
        let a = serve(host()).await;
        let b = serve(host()).await;
        let map = UpstreamMap::parse(&format!(
            "https://a.example.test={a} https://b.example.test={b}"
        ))
        .unwrap();
        (
            Upstreams::new(map, Duration::from_millis(500)),
            url("https://a.example.test/"),
            url("https://b.example.test/"),
        )
    }

    #[tokio::test]
    async fn cookies_stay_with_their_real_origin_and_go_back_unquoted() {
        let (upstreams, a, b) = two_hosts().await;
        let mut session = upstreams.session();
        let set = session
            .send(UpstreamRequest::get(a.join("set").unwrap()))
            .await
            .unwrap();
        assert_eq!(set.status, 302);
        assert_eq!(set.location().unwrap(), b.join("landing").unwrap());
        let echoed = session
            .send(UpstreamRequest::get(a.join("echo").unwrap()))
            .await
            .unwrap();
        assert_eq!(echoed.text(), "sid=a+b/c==");
        // Both doubles are on 127.0.0.1: the jar still keeps b's cookies apart from a's.
        let other = session
            .send(UpstreamRequest::get(b.join("echo").unwrap()))
            .await
            .unwrap();
        assert_eq!(other.text(), "");
    }

    #[tokio::test]
    async fn a_saved_session_keeps_its_session_cookies() {
        let (upstreams, a, _) = two_hosts().await;
        let mut session = upstreams.session();
        session
            .send(UpstreamRequest::get(a.join("set").unwrap()))
            .await
            .unwrap();
        let saved = session.save().unwrap();
        let mut restored = upstreams.restore(&saved).unwrap();
        let echoed = restored
            .send(UpstreamRequest::get(a.join("echo").unwrap()))
            .await
            .unwrap();
        assert_eq!(echoed.text(), "sid=a+b/c==");
    }

    #[tokio::test]
    async fn redirects_are_walked_by_hand_across_hosts() {
        let (upstreams, a, _) = two_hosts().await;
        let mut session = upstreams.session();
        let Followed::Answer(end) = session
            .follow(UpstreamRequest::get(a.join("set").unwrap()), 5, |_| false)
            .await
            .unwrap()
        else {
            panic!("the landing page answers");
        };
        assert_eq!(end.url.as_str(), "https://b.example.test/landing");
        assert_eq!(end.text(), "", "a's cookie is not sent to b");
        let stopped = session
            .follow(UpstreamRequest::get(a.join("set").unwrap()), 5, |u| {
                u.host_str() == Some("b.example.test")
            })
            .await
            .unwrap();
        assert!(matches!(stopped, Followed::Stopped(u) if u.path() == "/landing"));
    }

    #[tokio::test]
    async fn a_stalled_upstream_is_a_timeout_and_a_closed_port_cannot_connect() {
        let (upstreams, a, _) = two_hosts().await;
        let mut session = upstreams.session();
        let slow = session
            .send(UpstreamRequest::get(a.join("slow").unwrap()))
            .await;
        assert_eq!(slow.unwrap_err(), ErrorCode::Timeout);

        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let map = UpstreamMap::parse(&format!(
            "https://gone.example.test=http://127.0.0.1:{port}"
        ))
        .unwrap();
        let mut session = Upstreams::new(map, Duration::from_secs(2)).session();
        let refused = session
            .send(UpstreamRequest::get(url("https://gone.example.test/")))
            .await;
        assert_eq!(refused.unwrap_err(), ErrorCode::CannotConnect);
    }
}
