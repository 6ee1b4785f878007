//! Health for load balancers and orchestrators (Keycloak's `/health/live` and `/health/ready`):
//! JSON, no auth, never cached.
//!
//! - `GET /health/live`: the process answers (200). Restart it when this fails.
//! - `GET /health/ready`: this instance can serve: the database answers with every migration
//!   applied, Redis answers (when configured), and it is not shutting down. 503 otherwise, with
//!   each part's state, so a balancer sends requests elsewhere meanwhile.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use engine::Engine;

/// Set when the server starts shutting down: ready turns 503 while requests drain.
#[derive(Clone, Default)]
pub struct ShuttingDown(Arc<AtomicBool>);

impl ShuttingDown {
    pub fn start(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn now(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct HealthState {
    engine: Engine,
    shutting_down: ShuttingDown,
}

pub fn router(engine: Engine, shutting_down: ShuttingDown) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .with_state(HealthState {
            engine,
            shutting_down,
        })
        .layer(tower_http::set_header::SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
}

async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "live"}))
}

async fn ready(State(state): State<HealthState>) -> Response {
    let parts = state.engine.readiness().await;
    let shutting_down = state.shutting_down.now();
    let ready = parts.is_ready() && !shutting_down;
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not_ready" },
        "database": parts.database,
        "migrations": parts.migrations,
        "redis": parts.redis,
        "shutting_down": shutting_down,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use axum::body::Body;
    use axum::http::Request;
    use engine::base::secrets::SecretKey;
    use engine::second_factor::totp_site::TotpSite;
    use tokio::net::{TcpListener, TcpStream};
    use tower::ServiceExt;

    use super::*;

    async fn get(router: &Router, path: &str) -> (StatusCode, serde_json::Value) {
        let request = Request::get(path).body(Body::empty()).unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    async fn engine_at(
        dir: &tempfile::TempDir,
        database_url: String,
        redis_url: Option<String>,
    ) -> Engine {
        let mut config = engine::EngineConfig::new(
            database_url,
            SecretKey::load_or_create(Some(&"05".repeat(32)), dir.path()).unwrap(),
            TotpSite {
                base_url: "http://totp.test".into(),
                issuer: "Stepgate".into(),
            },
        );
        config.redis_url = redis_url;
        config.redis_prefix = format!("test:{}:", engine::flows::flow::FlowId::random());
        Engine::open(config).await.unwrap()
    }

    /// Polls ready until it answers `want` (a pool or a Redis connection comes back on its own,
    /// a moment after its server does).
    async fn ready_turns(router: &Router, want: StatusCode) -> serde_json::Value {
        for _ in 0..100 {
            let (status, body) = get(router, "/health/ready").await;
            if status == want {
                return body;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("/health/ready never answered {want}");
    }

    #[tokio::test]
    async fn live_answers_and_ready_says_each_part_and_turns_503_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let url = engine::store::db::test_database_url(dir.path()).await;
        let engine = engine_at(&dir, url, None).await;
        let shutting_down = ShuttingDown::default();
        let router = router(engine.clone(), shutting_down.clone());
        assert_eq!(
            get(&router, "/health/live").await,
            (StatusCode::OK, serde_json::json!({"status": "live"}))
        );
        let (status, body) = get(&router, "/health/ready").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body,
            serde_json::json!({"status": "ready", "database": "ok", "migrations": "ok",
                "redis": "not_used", "shutting_down": false})
        );

        // A migration this build has but the database lacks (an older schema).
        let newest: i64 = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(engine.pool())
            .await
            .unwrap();
        sqlx::query("UPDATE _sqlx_migrations SET success = FALSE WHERE version = $1")
            .bind(newest)
            .execute(engine.pool())
            .await
            .unwrap();
        let (status, body) = get(&router, "/health/ready").await;
        assert_eq!(
            (status, &body["migrations"]),
            (StatusCode::SERVICE_UNAVAILABLE, &"behind".into())
        );
        sqlx::query("UPDATE _sqlx_migrations SET success = TRUE WHERE version = $1")
            .bind(newest)
            .execute(engine.pool())
            .await
            .unwrap();
        assert_eq!(get(&router, "/health/ready").await.0, StatusCode::OK);

        shutting_down.start();
        let (status, body) = get(&router, "/health/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["shutting_down"], true);
        assert_eq!(
            get(&router, "/health/live").await.0,
            StatusCode::OK,
            "still alive"
        );

        engine.pool().close().await;
        let (_, body) = get(&router, "/health/ready").await;
        assert_eq!(body["database"], "down");
    }

    /// A TCP relay in front of a real server: `stop` cuts every connection and refuses new
    /// ones (the server "stops"), `start` lets them through again.
    struct Relay {
        addr: std::net::SocketAddr,
        open: Arc<AtomicBool>,
        links: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    }

    impl Relay {
        async fn to(target: String) -> Relay {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let open = Arc::new(AtomicBool::new(true));
            let links: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
            let (gate, kept) = (open.clone(), links.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((mut client, _)) = listener.accept().await else {
                        return;
                    };
                    if !gate.load(Ordering::SeqCst) {
                        continue; // dropped: refused
                    }
                    let target = target.clone();
                    kept.lock().unwrap().push(tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(&target).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    }));
                }
            });
            Relay { addr, open, links }
        }

        fn stop(&self) {
            self.open.store(false, Ordering::SeqCst);
            for link in self.links.lock().unwrap().drain(..) {
                link.abort();
            }
        }

        fn start(&self) {
            self.open.store(true, Ordering::SeqCst);
        }
    }

    /// The host:port of a URL, and the URL with them replaced by `addr`.
    fn through(url: &str, addr: std::net::SocketAddr) -> (String, String) {
        let mut parsed = url::Url::parse(url).unwrap();
        let target = format!("{}:{}", parsed.host_str().unwrap(), parsed.port().unwrap());
        parsed.set_port(Some(addr.port())).unwrap();
        parsed.set_host(Some("127.0.0.1")).unwrap();
        (target, parsed.to_string())
    }

    /// Scaled out (Postgres and Redis in the suite's second run): ready turns 503 when either
    /// stops, and 200 again when it is back.
    #[tokio::test]
    async fn ready_follows_postgres_and_redis_going_away_and_coming_back() {
        let (Ok(postgres), Ok(redis)) = (
            std::env::var("STEPGATE_TEST_DATABASE_URL"),
            std::env::var("STEPGATE_TEST_REDIS_URL"),
        ) else {
            eprintln!("skipped: needs STEPGATE_TEST_DATABASE_URL and STEPGATE_TEST_REDIS_URL");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let database = engine::store::db::test_database_url(dir.path()).await;
        let (pg_target, _) = through(&postgres, "127.0.0.1:1".parse().unwrap());
        let pg_relay = Relay::to(pg_target).await;
        let (_, database) = through(&database, pg_relay.addr);
        let (redis_target, _) = through(&redis, "127.0.0.1:1".parse().unwrap());
        let redis_relay = Relay::to(redis_target).await;
        let (_, redis) = through(&redis, redis_relay.addr);
        let engine = engine_at(&dir, database, Some(redis)).await;
        let router = router(engine, ShuttingDown::default());
        let body = ready_turns(&router, StatusCode::OK).await;
        assert_eq!(body["redis"], "ok");

        pg_relay.stop();
        let body = ready_turns(&router, StatusCode::SERVICE_UNAVAILABLE).await;
        assert_eq!(
            (&body["database"], &body["redis"]),
            (&"down".into(), &"ok".into())
        );
        pg_relay.start();
        ready_turns(&router, StatusCode::OK).await;

        redis_relay.stop();
        let body = ready_turns(&router, StatusCode::SERVICE_UNAVAILABLE).await;
        assert_eq!(
            (&body["database"], &body["redis"]),
            (&"ok".into(), &"down".into())
        );
        redis_relay.start();
        ready_turns(&router, StatusCode::OK).await;
    }
}
