//! Prometheus metrics on a listener of their own (`STEPGATE_METRICS_ADDR`, e.g.
//! `127.0.0.1:9464`; off when unset): the text format at any path there, never on the app's
//! port. What is counted, and under which names and labels, is `engine/src/base/metrics.rs`;
//! without [`install`] every count is a no-op.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};

pub const ADDR_VAR: &str = "STEPGATE_METRICS_ADDR";

/// How often the accounts-by-status gauge is counted again in the database.
pub const ACCOUNTS_REFRESH: Duration = Duration::from_secs(30);

/// The metrics listener's address, if `STEPGATE_METRICS_ADDR` asks for one.
pub fn addr_from_env() -> Result<Option<SocketAddr>, String> {
    match std::env::var(ADDR_VAR) {
        Err(_) => Ok(None),
        Ok(text) if text.trim().is_empty() => Ok(None),
        Ok(text) => text.trim().parse().map(Some).map_err(|_| {
            format!("{ADDR_VAR} must be an address and port such as 127.0.0.1:9464, not `{text}`")
        }),
    }
}

/// Installs the recorder and starts its listener on `addr` (on the running tokio runtime).
/// Fails when the address cannot be bound, or when called twice.
pub fn install(addr: SocketAddr) -> Result<(), BuildError> {
    let mut builder = PrometheusBuilder::new().with_http_listener(addr);
    for (name, buckets) in engine::base::metrics::HISTOGRAMS {
        builder = builder.set_buckets_for_metric(Matcher::Full((*name).to_owned()), buckets)?;
    }
    builder.install()?;
    engine::base::metrics::describe();
    Ok(())
}

/// Counts an app API request by its matched route template (`/api/v1/accounts/{id}`, never
/// the path with its ids) and status. A `route_layer` of the API router, so that the route is
/// matched when it runs.
pub async fn count_api_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|matched| matched.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    if let Some(route) = route {
        engine::base::metrics::api_request(&route, response.status().as_u16(), started.elapsed());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
    use axum::Router;
    use metrics_exporter_prometheus::PrometheusHandle;
    use tower::ServiceExt;

    /// One recorder for this test binary (a process has one global recorder), rendered by hand.
    fn recorder() -> &'static PrometheusHandle {
        static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
        HANDLE.get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .expect("no other recorder in the server's tests")
        })
    }

    /// The value of the sample line `series` (name and labels, as rendered) in `text`.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
    }

    #[tokio::test]
    async fn api_requests_are_counted_by_route_template_and_status_never_by_raw_path() {
        let handle = recorder();
        let app = Router::new()
            .route("/api/v1/metrics-test/{id}", get(|| async { "ok" }))
            .route(
                "/api/v1/metrics-test/{id}/gone",
                get(|| async { StatusCode::GONE }),
            )
            .route_layer(axum::middleware::from_fn(count_api_requests));
        for path in [
            "/api/v1/metrics-test/41",
            "/api/v1/metrics-test/42",
            "/api/v1/metrics-test/42/gone",
            "/api/v1/unrouted",
        ] {
            let request = Request::builder().uri(path).body(Body::empty()).unwrap();
            app.clone().oneshot(request).await.unwrap();
        }
        let text = handle.render();
        assert_eq!(
            sample(
                &text,
                r#"stepgate_api_requests_total{route="/api/v1/metrics-test/{id}",status="200"}"#
            ),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                r#"stepgate_api_requests_total{route="/api/v1/metrics-test/{id}/gone",status="410"}"#
            ),
            Some(1.0),
            "{text}"
        );
        assert!(
            !text.contains("metrics-test/42"),
            "a raw path leaked: {text}"
        );
        assert!(
            !text.contains("unrouted"),
            "an unmatched path was counted: {text}"
        );
    }

    /// Each `stepgate_…` name in `expr`, a histogram's series (`_bucket`, `_count`, `_sum`) by
    /// the histogram's name.
    fn metric_names(expr: &str) -> Vec<String> {
        let histograms: Vec<&str> = engine::base::metrics::HISTOGRAMS
            .iter()
            .map(|(name, _)| *name)
            .collect();
        let mut names = Vec::new();
        let mut rest = expr;
        while let Some(at) = rest.find("stepgate_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            let name = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| {
                    let base = name.strip_suffix(suffix)?;
                    histograms.contains(&base).then_some(base)
                })
                .unwrap_or(name);
            names.push(name.to_owned());
            rest = &tail[end..];
        }
        names
    }

    #[test]
    fn the_grafana_dashboard_charts_every_metric_and_only_exported_ones() {
        let text = include_str!("../../ops/grafana/stepgate-dashboard.json");
        let dashboard: serde_json::Value =
            serde_json::from_str(text).expect("the dashboard is JSON");
        let variables = dashboard["templating"]["list"].as_array().unwrap();
        assert!(
            variables
                .iter()
                .any(|v| v["type"] == "datasource" && v["name"] == "datasource"),
            "a datasource variable"
        );
        let mut charted = std::collections::BTreeSet::new();
        for panel in dashboard["panels"].as_array().unwrap() {
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{}",
                panel["title"]
            );
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                let names = metric_names(expr);
                assert!(!names.is_empty(), "{expr} names no metric");
                for name in names {
                    assert!(
                        engine::base::metrics::ALL.contains(&name.as_str()),
                        "{name} (in {expr}) is not exported"
                    );
                    charted.insert(name);
                }
            }
        }
        let missing: Vec<_> = engine::base::metrics::ALL
            .iter()
            .filter(|name| !charted.contains(**name))
            .collect();
        assert!(missing.is_empty(), "not charted: {missing:?}");
    }

    #[test]
    fn the_address_comes_from_the_environment_or_is_refused_with_the_reason() {
        // One test owns the variable: tests run in threads of one process.
        std::env::remove_var(ADDR_VAR);
        assert_eq!(addr_from_env(), Ok(None));
        std::env::set_var(ADDR_VAR, "127.0.0.1:9464");
        assert_eq!(addr_from_env(), Ok(Some("127.0.0.1:9464".parse().unwrap())));
        std::env::set_var(ADDR_VAR, "localhost");
        assert!(addr_from_env().unwrap_err().contains(ADDR_VAR));
        std::env::remove_var(ADDR_VAR);
    }
}
