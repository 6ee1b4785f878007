//! Fault injection shared by the simulated hosts.
//!
//! Every step of a simulated login has a name (see `librus::STEPS`, `xiaomi::STEPS`). A fault
//! switched on for a step applies to every request of that step (or to the next `count` ones)
//! until it is switched off. Over HTTP, on each host of a simulator:
//!
//! ```text
//! POST /testing/faults  {"step": "login", "fault": "stall|503|garbage|shape|reset|endless|loopback|loop|http|none", "count": 1}
//! GET  /testing/faults  -> {"steps": [...], "faults": {"login": {"fault": "503", "count": null}}}
//! ```
//!
//! `"step": "all"` applies the fault to every step (`"fault": "none"` clears them all).
//!
//! The last four are what a hostile or broken upstream might send: a body that never ends, a
//! redirect to a loopback address, a redirect to itself, and a redirect to the same place over
//! plain `http://` (the real host's name, not the double's address). The redirects are dressed
//! by each host's layer ([`dress_redirects`]), which knows the real origin it stands for.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

/// How long a stalled step keeps the client waiting before it answers 504.
pub const STALL: Duration = Duration::from_secs(60);

/// What a faulty step does instead of its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Behave normally.
    None,
    /// Answer nothing for [`STALL`] (then 504).
    Stall,
    /// Answer 503 (Librus: its maintenance JSON; Xiaomi: an HTML error page).
    Unavailable503,
    /// Answer 200 with a body that is not JSON (nor the expected redirect).
    Garbage,
    /// Answer 200 with JSON of the wrong shape (`{"unexpected":true}`).
    WrongShape,
    /// Close the connection without answering.
    Reset,
    /// Answer 200 with a body that never ends (as fast as the client reads).
    Endless,
    /// Answer 302 to a loopback address ([`LOOPBACK_TARGET`]).
    LoopbackRedirect,
    /// Answer 302 to the very URL asked for, forever.
    RedirectLoop,
    /// Answer 302 to the same path on the real host over plain `http://`.
    HttpRedirect,
}

/// Where [`Fault::LoopbackRedirect`] points: a local agent's port, as a port scan would try.
pub const LOOPBACK_TARGET: &str = "https://127.0.0.1:8500/v1/agent/self";

impl Fault {
    /// Parses the HTTP switch's names: `none`, `stall`, `503`, `garbage`, `shape`, `reset`.
    pub fn parse(name: &str) -> Option<Fault> {
        Some(match name {
            "none" => Fault::None,
            "stall" => Fault::Stall,
            "503" => Fault::Unavailable503,
            "garbage" => Fault::Garbage,
            "shape" => Fault::WrongShape,
            "reset" => Fault::Reset,
            "endless" => Fault::Endless,
            "loopback" => Fault::LoopbackRedirect,
            "loop" => Fault::RedirectLoop,
            "http" => Fault::HttpRedirect,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::Stall => "stall",
            Fault::Unavailable503 => "503",
            Fault::Garbage => "garbage",
            Fault::WrongShape => "shape",
            Fault::Reset => "reset",
            Fault::Endless => "endless",
            Fault::LoopbackRedirect => "loopback",
            Fault::RedirectLoop => "loop",
            Fault::HttpRedirect => "http",
        }
    }
}

/// How a host dresses its faults.
pub(crate) struct Style {
    /// Body and content type of a 503.
    pub unavailable: (&'static str, &'static str),
    /// Prefix of every JSON body (Xiaomi's account service: `&&&START&&&`).
    pub json_prefix: &'static str,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    fault: Fault,
    /// Requests left before the fault clears itself; `None` = until switched off.
    count: Option<u32>,
}

/// The fault table of one simulator (shared by its hosts).
#[derive(Clone)]
pub struct Faults {
    steps: &'static [&'static str],
    table: Arc<Mutex<BTreeMap<String, Entry>>>,
    /// Added before every answer (milliseconds), as a real service far away would take.
    latency_ms: Arc<std::sync::atomic::AtomicU64>,
    /// Requests waiting out their latency now, and the most there were at once (how many a
    /// client had in flight: the upkeep's bound is tested with it).
    in_flight: Arc<(
        std::sync::atomic::AtomicUsize,
        std::sync::atomic::AtomicUsize,
    )>,
}

impl Faults {
    pub(crate) fn new(steps: &'static [&'static str]) -> Self {
        Self {
            steps,
            table: Arc::default(),
            latency_ms: Arc::default(),
            in_flight: Arc::default(),
        }
    }

    /// The most requests that were waiting out their latency at once since the last call
    /// (counted only while a latency is set); resets the count.
    pub fn take_max_in_flight(&self) -> usize {
        self.in_flight
            .1
            .swap(0, std::sync::atomic::Ordering::SeqCst)
    }

    /// Every answer of this double waits `latency` first (benchmarks against a realistic
    /// round trip; zero by default).
    pub fn set_latency(&self, latency: std::time::Duration) {
        self.latency_ms.store(
            latency.as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// The step names this simulator knows.
    pub fn steps(&self) -> &'static [&'static str] {
        self.steps
    }

    /// Switches `fault` on for `step` (or for every step with `"all"`) until switched off, or
    /// for the next `count` requests of that step. Errors on an unknown step.
    pub fn set(&self, step: &str, fault: Fault, count: Option<u32>) -> Result<(), String> {
        let mut table = self.table.lock().expect("fault table");
        let steps: Vec<&str> = if step == "all" {
            self.steps.to_vec()
        } else if self.steps.contains(&step) {
            vec![step]
        } else {
            return Err(format!(
                "unknown step `{step}`; known: all, {}",
                self.steps.join(", ")
            ));
        };
        for s in steps {
            if fault == Fault::None || count == Some(0) {
                table.remove(s);
            } else {
                table.insert(s.to_owned(), Entry { fault, count });
            }
        }
        Ok(())
    }

    /// Switches every fault off.
    pub fn clear(&self) {
        self.table.lock().expect("fault table").clear();
    }

    /// The fault a request of `step` meets now (consuming one of its `count`).
    fn take(&self, step: &str) -> Fault {
        let mut table = self.table.lock().expect("fault table");
        let Some(entry) = table.get_mut(step) else {
            return Fault::None;
        };
        let fault = entry.fault;
        if let Some(n) = entry.count.as_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                table.remove(step);
            }
        }
        fault
    }

    /// `Some(response)` when a fault is on for `step`: the handler answers that instead.
    pub(crate) async fn check(&self, step: &str, style: &Style) -> Option<Response> {
        let latency = self.latency_ms.load(std::sync::atomic::Ordering::Relaxed);
        if latency > 0 {
            use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
            /// Counts down when the request ends, also when its client gave up on it.
            struct Waiting<'a>(&'a AtomicUsize);
            impl Drop for Waiting<'_> {
                fn drop(&mut self) {
                    self.0.fetch_sub(1, SeqCst);
                }
            }
            let (now, most) = &*self.in_flight;
            most.fetch_max(now.fetch_add(1, SeqCst) + 1, SeqCst);
            let _waiting = Waiting(now);
            tokio::time::sleep(std::time::Duration::from_millis(latency)).await;
        }
        let fault = self.take(step);
        match fault {
            Fault::None => None,
            Fault::Stall => {
                tokio::time::sleep(STALL).await;
                Some((StatusCode::GATEWAY_TIMEOUT, "stalled").into_response())
            }
            Fault::Unavailable503 => Some(
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::CONTENT_TYPE, style.unavailable.1)],
                    style.unavailable.0,
                )
                    .into_response(),
            ),
            Fault::Garbage => Some(
                (
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    format!(
                        "{}<html><body><p>Proxy error: upstream returned \u{fffd}\u{fffd}</p>",
                        style.json_prefix
                    ),
                )
                    .into_response(),
            ),
            Fault::WrongShape => Some(
                (
                    [(header::CONTENT_TYPE, "application/json;charset=UTF-8")],
                    format!("{}{{\"unexpected\":true}}", style.json_prefix),
                )
                    .into_response(),
            ),
            Fault::Reset => Some(reset()),
            Fault::Endless => Some(endless_body()),
            Fault::LoopbackRedirect | Fault::RedirectLoop | Fault::HttpRedirect => {
                let mut r = StatusCode::FOUND.into_response();
                r.extensions_mut().insert(RedirectFault(fault));
                Some(r)
            }
        }
    }

    fn snapshot(&self) -> serde_json::Value {
        let table = self.table.lock().expect("fault table");
        let faults: serde_json::Map<String, serde_json::Value> = table
            .iter()
            .map(|(k, e)| {
                (
                    k.clone(),
                    json!({"fault": e.fault.name(), "count": e.count}),
                )
            })
            .collect();
        json!({ "steps": self.steps, "faults": faults })
    }
}

/// A body that never ends: 64 KiB chunks for as long as the client reads.
pub fn endless_body() -> Response {
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    let stream =
        futures_util::stream::repeat_with(move || Ok::<Bytes, std::io::Error>(chunk.clone()));
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Marks a redirect fault's answer; [`dress_redirects`] gives it its `Location`.
#[derive(Debug, Clone, Copy)]
struct RedirectFault(Fault);

/// The layer of a host standing for `origin` (`https://login.lynkco.com`): a redirect fault's
/// answer gets its `Location`, named with the real origin as the real service would.
pub(crate) async fn dress_redirects(
    origin: &'static str,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let asked = request
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let mut response = next.run(request).await;
    let Some(RedirectFault(fault)) = response.extensions().get::<RedirectFault>().copied() else {
        return response;
    };
    let location = match fault {
        Fault::LoopbackRedirect => LOOPBACK_TARGET.to_owned(),
        Fault::RedirectLoop => format!("{origin}{asked}"),
        _ => format!(
            "http://{}{asked}",
            origin.split_once("://").map_or(origin, |(_, host)| host)
        ),
    };
    if let Ok(value) = header::HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// A response whose body fails before its first byte: hyper then drops the connection without
/// writing the head, so the client sees the connection closed with no answer.
fn reset() -> Response {
    let stream = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "sandbox fault: reset",
        ))
    });
    Response::new(Body::from_stream(stream))
}

#[derive(Deserialize)]
struct SetFault {
    step: String,
    fault: String,
    #[serde(default)]
    count: Option<u32>,
}

async fn set_http(State(faults): State<Faults>, Json(req): Json<SetFault>) -> Response {
    let Some(fault) = Fault::parse(&req.fault) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "fault must be one of stall, 503, garbage, shape, reset, endless, loopback, loop, http, none"})),
        )
            .into_response();
    };
    match faults.set(&req.step, fault, req.count) {
        Ok(()) => Json(faults.snapshot()).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, Json(json!({ "error": e }))).into_response(),
    }
}

/// `GET`/`POST /testing/faults`, and `GET /testing/issued` (every secret handed out, so tests
/// can look for them where they must not be), merged into every host's router.
pub(crate) fn routes(faults: Faults) -> Router {
    Router::new()
        .route(
            "/testing/faults",
            get(|State(f): State<Faults>| async move { Json(f.snapshot()) }).post(set_http),
        )
        .route(
            "/testing/issued",
            get(|| async { Json(crate::util::issued_secrets()) }),
        )
        .with_state(faults)
}
