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
//!
//! Nothing an upstream sends can hurt the server: every answer is read as a stream that stops
//! at its cap ([`DEFAULT_BODY_LIMIT`] unless the request allows more: `upstream_too_large`), and
//! a redirect is followed only when [`RedirectPolicy`] allows it (https on the real origin, to a
//! host the provider declares, no loop, at most [`MAX_REDIRECTS`] hops: else `bad_redirect`).
//! Each request has its own timeout; a whole step has [`Upstreams::step_deadline`].

use std::sync::Arc;
use std::time::Duration;

use cookie_store::CookieStore;
use reqwest::header::{HeaderMap, HeaderName, COOKIE, LOCATION, SET_COOKIE};
use reqwest::Method;
use url::Url;

use crate::base::metrics;
use crate::ErrorCode;

/// How long one upstream request may take, unless configured otherwise.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How many request timeouts a whole step (all its requests) may take.
const STEP_DEADLINE_FACTOR: u32 = 3;
/// The most of an upstream answer that is read, unless a request allows more.
pub const DEFAULT_BODY_LIMIT: usize = 1 << 20;
/// The most redirects one walk follows (requests' own and pages' "go on" links together).
pub const MAX_REDIRECTS: usize = 10;

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

    /// How long one whole step (every upstream request it makes) may take.
    pub fn step_deadline(&self) -> Duration {
        self.step_timeout * STEP_DEADLINE_FACTOR
    }

    /// A new, empty session for a flow.
    pub fn session(&self) -> HttpSession {
        HttpSession {
            upstreams: self.clone(),
            jar: CookieStore::new(),
            labels: MetricLabels::default(),
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
            labels: MetricLabels::default(),
        })
    }
}

/// Whom a session's requests are counted for (`stepgate_upstream_requests_total`).
struct MetricLabels {
    provider: &'static str,
    step: String,
}

impl Default for MetricLabels {
    /// Requests whose caller did not say (tests, and callers not labelled yet).
    fn default() -> Self {
        MetricLabels {
            provider: "unknown",
            step: "unknown".to_owned(),
        }
    }
}

/// A request to an upstream, addressed by its real URL.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    method: Method,
    url: Url,
    headers: Vec<(HeaderName, String)>,
    /// The content type (none: the body goes without one) and the bytes.
    body: Option<(Option<String>, Vec<u8>)>,
    /// The most of the answer's body that is read.
    limit: usize,
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
            limit: DEFAULT_BODY_LIMIT,
        }
    }

    /// Allows this one answer to be larger than [`DEFAULT_BODY_LIMIT`] (a provider that knows
    /// one of its answers is big says so here).
    pub fn limit(mut self, bytes: usize) -> Self {
        self.limit = bytes.max(DEFAULT_BODY_LIMIT);
        self
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
        self.body = Some((
            Some("application/x-www-form-urlencoded".to_owned()),
            body.into_bytes(),
        ));
        self
    }

    /// A JSON body.
    pub fn json(mut self, value: &serde_json::Value) -> Self {
        self.body = Some((
            Some("application/json".to_owned()),
            value.to_string().into_bytes(),
        ));
        self
    }

    /// A body as an app sent it (the API proxy), with its own content type if it had one.
    pub fn raw_body(mut self, content_type: Option<String>, bytes: Vec<u8>) -> Self {
        self.body = Some((content_type, bytes));
        self
    }

    /// The same request to another URL.
    pub fn with_url(mut self, url: Url) -> Self {
        self.url = url;
        self
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The body's content type and bytes, if it has a body.
    pub fn body(&self) -> Option<(Option<&str>, &[u8])> {
        self.body
            .as_ref()
            .map(|(content_type, bytes)| (content_type.as_deref(), bytes.as_slice()))
    }

    /// Whether a header of this name is set (names compare without case).
    pub fn has_header(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(n, _)| n.as_str().eq_ignore_ascii_case(name))
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

    /// The body as JSON; an answer out of shape is `upstream_out_of_shape` (the reason goes to
    /// the log).
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ErrorCode> {
        serde_json::from_slice(&self.body).map_err(|e| {
            tracing::warn!(url = %loggable(&self.url), status = self.status, error = %e, "an upstream answer was out of shape");
            ErrorCode::UpstreamOutOfShape
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
    labels: MetricLabels,
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

    /// The same session, its requests counted as `provider`'s step `step` (a step name of the
    /// provider's, or `start`, `check`, `renew`: bounded, never from a request).
    pub fn labelled(mut self, provider: &'static str, step: &str) -> Self {
        self.labels = MetricLabels {
            provider,
            step: step.to_owned(),
        };
        self
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
        let started = std::time::Instant::now();
        let answer = self.send_unmeasured(request).await;
        metrics::upstream_request(
            self.labels.provider,
            &self.labels.step,
            answer.as_ref().map(|a| a.status).map_err(|code| *code),
            started.elapsed(),
        );
        answer
    }

    async fn send_unmeasured(
        &mut self,
        request: UpstreamRequest,
    ) -> Result<UpstreamResponse, ErrorCode> {
        let cookies: Vec<String> = self
            .jar
            .get_request_values(&request.url)
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        let cookie = (!cookies.is_empty()).then(|| cookies.join("; "));
        let (url, limit) = (request.url.clone(), request.limit);
        let response = self
            .upstreams
            .dispatch(request, self.upstreams.step_timeout, cookie)
            .await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        for value in headers.get_all(SET_COOKIE) {
            if let Ok(text) = value.to_str() {
                // Stored under the real URL: the double's address never reaches the jar.
                let _ = self.jar.parse(text, &url);
            }
        }
        let body = read_capped(response, &url, limit).await?;
        Ok(UpstreamResponse {
            status,
            headers,
            body,
            url,
        })
    }

    /// Sends a GET and walks its redirects by hand (cookies collected on the way) as `policy`
    /// allows, until an answer that is not a redirect or a `Location` that `stop` accepts (a
    /// custom-scheme ending such as `msauth://…?code=`, which is never fetched).
    pub async fn follow(
        &mut self,
        first: UpstreamRequest,
        policy: &RedirectPolicy,
        stop: impl Fn(&Url) -> bool,
    ) -> Result<Followed, ErrorCode> {
        self.follow_observing(first, policy, stop, |_| {}).await
    }

    /// [`HttpSession::follow`], showing `observe` every answer on the way (a header that only
    /// a hop carries, such as Xiaomi's `extension-pragma`).
    pub async fn follow_observing(
        &mut self,
        first: UpstreamRequest,
        policy: &RedirectPolicy,
        stop: impl Fn(&Url) -> bool,
        mut observe: impl FnMut(&UpstreamResponse),
    ) -> Result<Followed, ErrorCode> {
        let mut walk = policy.walk(first.url());
        let mut response = self.send(first).await?;
        loop {
            observe(&response);
            if !response.is_redirect() {
                return Ok(Followed::Answer(response));
            }
            let Some(next) = self.redirect_target(&response) else {
                tracing::warn!(url = %loggable(&response.url), "an upstream redirect has no usable Location");
                return Err(ErrorCode::BadRedirect);
            };
            if stop(&next) {
                return Ok(Followed::Stopped(next));
            }
            walk.step(&next)?;
            response = self.send(UpstreamRequest::get(next)).await?;
        }
    }

    /// Where a redirect goes, as a real URL: its `Location` resolved against the real URL it
    /// answered for, and a double's own base URL turned back into the real origin it stands
    /// for (so it is judged as the real service's address, not the double's `http://`).
    pub fn redirect_target(&self, response: &UpstreamResponse) -> Option<Url> {
        let next = response.location()?;
        Some(self.map().real_url(&next))
    }
}

/// An upstream's answer whose body is still to be read: the API proxy streams it on to the app
/// ([`Upstreams::send_streamed`]).
pub struct StreamedResponse {
    pub status: u16,
    pub headers: HeaderMap,
    url: Url,
    response: reqwest::Response,
    limit: usize,
}

/// A body read piece by piece.
pub type BodyStream = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send>,
>;

impl StreamedResponse {
    /// The body as a stream that fails (and so cuts the answer short) past the request's cap:
    /// a body that says it is longer was refused before this.
    pub fn into_body(self) -> BodyStream {
        let StreamedResponse {
            url,
            response,
            limit,
            ..
        } = self;
        let state = (response, url, 0usize);
        // Fused: a layer on the way (compression) may poll again after the end.
        Box::pin(futures_util::StreamExt::fuse(futures_util::stream::unfold(
            Some(state),
            move |state| async move {
                let (mut response, url, read) = state?;
                match response.chunk().await {
                    Ok(Some(chunk)) if read + chunk.len() > limit => {
                        tracing::warn!(url = %loggable(&url), limit, "a proxied answer was over its size cap; it was cut short");
                        Some((Err(std::io::Error::other("upstream_too_large")), None))
                    }
                    Ok(Some(chunk)) => {
                        let read = read + chunk.len();
                        Some((Ok(chunk), Some((response, url, read))))
                    }
                    Ok(None) => None,
                    Err(e) => Some((
                        Err(std::io::Error::other(transport_error(&url, &e).as_str())),
                        None,
                    )),
                }
            },
        )))
    }
}

impl Upstreams {
    /// Sends one request of `provider`'s API (the proxy; counted as its step `api_proxy`) with
    /// no cookie jar (the caller put in every header it needs) and no redirect followed, within
    /// `timeout` (the answer's whole body included), and gives the answer with its body unread.
    /// A body that says it is over the request's cap is refused at once (`upstream_too_large`).
    pub async fn send_streamed(
        &self,
        provider: &'static str,
        request: UpstreamRequest,
        timeout: Duration,
    ) -> Result<StreamedResponse, ErrorCode> {
        let (url, limit) = (request.url.clone(), request.limit);
        // Timed to the answer's head: its body streams on to the app at the app's pace.
        let started = std::time::Instant::now();
        let response = self.dispatch(request, timeout, None).await;
        metrics::upstream_request(
            provider,
            "api_proxy",
            response
                .as_ref()
                .map(|r| r.status().as_u16())
                .map_err(|c| *c),
            started.elapsed(),
        );
        let response = response?;
        if response
            .content_length()
            .is_some_and(|length| length > limit as u64)
        {
            tracing::warn!(url = %loggable(&url), limit, "a proxied answer said it was over its size cap");
            return Err(ErrorCode::UpstreamTooLarge);
        }
        Ok(StreamedResponse {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            url,
            response,
            limit,
        })
    }

    /// Sends `request` to where the map points its origin (with `cookie` as its `Cookie`
    /// header, if any), within `timeout`; transport failures become `timeout` or
    /// `cannot_connect`. The answer's body is left unread.
    async fn dispatch(
        &self,
        request: UpstreamRequest,
        timeout: Duration,
        cookie: Option<String>,
    ) -> Result<reqwest::Response, ErrorCode> {
        let target = self.map.connect_url(&request.url);
        let mut builder = self
            .client
            .request(request.method.clone(), target.as_str())
            .timeout(timeout);
        if let Some(cookie) = cookie {
            builder = builder.header(COOKIE, cookie);
        }
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        if let Some((content_type, body)) = request.body {
            if let Some(content_type) = content_type {
                builder = builder.header(reqwest::header::CONTENT_TYPE, content_type);
            }
            builder = builder.body(body);
        }
        builder
            .send()
            .await
            .map_err(|e| transport_error(&request.url, &e))
    }
}

/// The hosts a provider declares: redirects (and "go on" links a page names) are followed
/// only over https, only to these hosts, at most [`MAX_REDIRECTS`] hops, never in a circle.
#[derive(Debug, Clone, Copy)]
pub struct RedirectPolicy {
    hosts: &'static [&'static str],
}

impl RedirectPolicy {
    pub const fn new(hosts: &'static [&'static str]) -> Self {
        RedirectPolicy { hosts }
    }

    /// A walk of redirects starting at `first`.
    pub fn walk(&self, first: &Url) -> RedirectWalk {
        RedirectWalk {
            policy: *self,
            seen: vec![first.clone()],
        }
    }

    /// Whether the policy allows going to `next` (any hop count): why not, in the log.
    pub fn check(&self, next: &Url) -> Result<(), ErrorCode> {
        let refuse = |why: &str| {
            tracing::warn!(to = %loggable(next), why, "an upstream redirect was refused");
            Err(ErrorCode::BadRedirect)
        };
        if next.scheme() != "https" {
            return refuse("not over https");
        }
        match next.host() {
            Some(url::Host::Domain(name)) if !is_local_name(name) => {
                if self.hosts.iter().any(|h| h.eq_ignore_ascii_case(name)) {
                    Ok(())
                } else {
                    refuse("to a host the provider does not declare")
                }
            }
            Some(_) => refuse("to an address (loopback, private or any literal) or a local name"),
            None => refuse("to no host"),
        }
    }
}

/// `localhost` and its subdomains (RFC 6761): never an upstream's host.
fn is_local_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// One walk of redirects under a [`RedirectPolicy`]: counts the hops and remembers where it
/// has been.
pub struct RedirectWalk {
    policy: RedirectPolicy,
    seen: Vec<Url>,
}

impl RedirectWalk {
    /// Allows one more hop to `next`, or says why not (`bad_redirect`).
    pub fn step(&mut self, next: &Url) -> Result<(), ErrorCode> {
        self.policy.check(next)?;
        if self.seen.contains(next) {
            tracing::warn!(to = %loggable(next), "an upstream redirect goes round in a circle");
            return Err(ErrorCode::BadRedirect);
        }
        if self.seen.len() > MAX_REDIRECTS {
            tracing::warn!(to = %loggable(next), "too many upstream redirects");
            return Err(ErrorCode::BadRedirect);
        }
        self.seen.push(next.clone());
        Ok(())
    }

    /// Goes to `next` again on purpose (a page that must be asked twice, such as Xiaomi's
    /// "Tips"): counted as a hop, but no circle.
    pub fn again(&mut self, next: &Url) -> Result<(), ErrorCode> {
        self.policy.check(next)?;
        if self.seen.len() > MAX_REDIRECTS {
            tracing::warn!(to = %loggable(next), "too many upstream redirects");
            return Err(ErrorCode::BadRedirect);
        }
        self.seen.push(next.clone());
        Ok(())
    }
}

/// Reads an answer's body as a stream, at most `limit` bytes: a longer one (or one that says it
/// is longer) is `upstream_too_large`, and nothing past the cap is kept or read.
async fn read_capped(
    mut response: reqwest::Response,
    url: &Url,
    limit: usize,
) -> Result<Vec<u8>, ErrorCode> {
    let too_large = || {
        tracing::warn!(url = %loggable(url), limit, "an upstream answer was over its size cap");
        ErrorCode::UpstreamTooLarge
    };
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(url, &e))?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Where [`HttpSession::follow`] ended.
#[derive(Debug)]
pub enum Followed {
    /// An answer that is not a redirect.
    Answer(UpstreamResponse),
    /// A `Location` the caller asked to stop at: not fetched.
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

    const BOTH: RedirectPolicy = RedirectPolicy::new(&["a.example.test", "b.example.test"]);

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
            .follow(UpstreamRequest::get(a.join("set").unwrap()), &BOTH, |_| {
                false
            })
            .await
            .unwrap()
        else {
            panic!("the landing page answers");
        };
        assert_eq!(end.url.as_str(), "https://b.example.test/landing");
        assert_eq!(end.text(), "", "a's cookie is not sent to b");
        let stopped = session
            .follow(UpstreamRequest::get(a.join("set").unwrap()), &BOTH, |u| {
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

    /// A host whose answers misbehave: an endless body, a body that says it is too long, a
    /// body of a given size, and redirects of every kind a policy must judge.
    async fn misbehaving() -> (Upstreams, Url, String) {
        use axum::body::Body;
        use axum::extract::{Path, Query};
        fn redirect(to: &str) -> Response {
            Response::builder()
                .status(302)
                .header(LOCATION, to)
                .body(Body::empty())
                .unwrap()
        }
        let router = Router::new()
            .route(
                "/endless",
                get(|| async { sandbox::faults::endless_body() }),
            )
            .route(
                "/bytes/{n}",
                get(|Path(n): Path<usize>| async move { vec![b'y'; n] }),
            )
            .route(
                "/to",
                get(
                    |Query(q): Query<std::collections::HashMap<String, String>>| async move {
                        redirect(&q["url"])
                    },
                ),
            )
            .route("/loop", get(|| async { redirect("/loop") }))
            .route(
                "/hops/{n}",
                get(|Path(n): Path<usize>| async move {
                    if n == 0 {
                        "arrived".into_response()
                    } else {
                        redirect(&format!("/hops/{}", n - 1))
                    }
                }),
            );
        let base = serve(router).await;
        let map = UpstreamMap::parse(&format!("https://bad.example.test={base}")).unwrap();
        (
            Upstreams::new(map, Duration::from_secs(5)),
            url("https://bad.example.test/"),
            base,
        )
    }

    const BAD: RedirectPolicy = RedirectPolicy::new(&["bad.example.test"]);

    /// This process's resident memory, from /proc/self/status (Linux), in KiB.
    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[tokio::test]
    async fn an_endless_body_stops_at_the_cap_in_words_and_memory_stays_small() {
        let (upstreams, bad, _) = misbehaving().await;
        // Growth, not the total: other tests share this process. Read whole, 20 endless
        // bodies would take gigabytes within the request timeout.
        let before = rss_kib();
        let started = std::time::Instant::now();
        for _ in 0..20 {
            let mut session = upstreams.session();
            let answer = session
                .send(UpstreamRequest::get(bad.join("endless").unwrap()))
                .await;
            assert_eq!(answer.unwrap_err(), ErrorCode::UpstreamTooLarge);
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let grown = rss_kib().saturating_sub(before);
        assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");
        assert!(!ErrorCode::UpstreamTooLarge.message().contains("our side"));
    }

    #[tokio::test]
    async fn a_body_at_the_cap_is_read_one_over_it_is_refused_unless_the_request_allows_more() {
        let (upstreams, bad, _) = misbehaving().await;
        let mut session = upstreams.session();
        let at = bad.join(&format!("bytes/{DEFAULT_BODY_LIMIT}")).unwrap();
        let over = bad
            .join(&format!("bytes/{}", DEFAULT_BODY_LIMIT + 1))
            .unwrap();
        let read = session.send(UpstreamRequest::get(at)).await.unwrap();
        assert_eq!(read.body.len(), DEFAULT_BODY_LIMIT);
        let refused = session.send(UpstreamRequest::get(over.clone())).await;
        assert_eq!(refused.unwrap_err(), ErrorCode::UpstreamTooLarge);
        let allowed = session
            .send(UpstreamRequest::get(over).limit(2 * DEFAULT_BODY_LIMIT))
            .await
            .unwrap();
        assert_eq!(allowed.body.len(), DEFAULT_BODY_LIMIT + 1);
    }

    async fn follow_to(upstreams: &Upstreams, start: Url) -> Result<Followed, ErrorCode> {
        upstreams
            .session()
            .follow(UpstreamRequest::get(start), &BAD, |u| u.scheme() == "app")
            .await
    }

    fn to(bad: &Url, location: &str) -> Url {
        let mut start = bad.join("to").unwrap();
        start.query_pairs_mut().append_pair("url", location);
        start
    }

    #[tokio::test]
    async fn redirects_go_only_over_https_to_declared_hosts_never_round_in_circles() {
        let (upstreams, bad, base) = misbehaving().await;
        for refused in [
            "http://bad.example.test/hops/0",
            "https://127.0.0.1:8500/",
            "https://[::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://10.0.0.5/",
            "https://169.254.169.254/latest/meta-data/",
            "https://localhost/admin",
            "https://other.example.test/",
            "ftp://bad.example.test/x",
        ] {
            let answer = follow_to(&upstreams, to(&bad, refused)).await;
            assert_eq!(answer.unwrap_err(), ErrorCode::BadRedirect, "{refused}");
        }
        // A loop is refused at its first repeat, well before the hop limit.
        let looped = follow_to(&upstreams, bad.join("loop").unwrap()).await;
        assert_eq!(looped.unwrap_err(), ErrorCode::BadRedirect);
        // Ten hops are followed; eleven are too many.
        let ten = follow_to(&upstreams, bad.join("hops/10").unwrap()).await;
        assert!(matches!(ten, Ok(Followed::Answer(a)) if a.text() == "arrived"));
        let eleven = follow_to(&upstreams, bad.join("hops/11").unwrap()).await;
        assert_eq!(eleven.unwrap_err(), ErrorCode::BadRedirect);
        // A double naming its own base URL (`http://127.0.0.1:…`) is judged as the real origin
        // it stands for: https on a declared host.
        let own = follow_to(&upstreams, to(&bad, &format!("{base}/hops/0"))).await;
        assert!(
            matches!(own, Ok(Followed::Answer(a)) if a.url.as_str() == "https://bad.example.test/hops/0")
        );
        // A custom scheme the caller stops at is never fetched.
        let stopped = follow_to(&upstreams, to(&bad, "app://done?code=1")).await;
        assert!(matches!(stopped, Ok(Followed::Stopped(u)) if u.as_str() == "app://done?code=1"));
        for code in [ErrorCode::BadRedirect, ErrorCode::UpstreamTooLarge] {
            assert_ne!(code.http_status(), 500);
            assert!(code.message().contains("provider"), "{code}");
        }
    }
}
