//! `stepgate serve`: opens the engine, starts the background work (purging, webhook delivery,
//! token upkeep) and serves the Leptos app, its server functions, the app API and health.

use std::net::SocketAddr;
use std::time::Duration;

use app::{shell, App};
use axum::Router;
use engine::second_factor::totp_site::TotpSite;
use engine::Engine;
use leptos::prelude::*;
use leptos_axum::{generate_route_list, LeptosRoutes};

use crate::site::SiteSource;
use crate::{
    api_errors, api_v1, config, health, metrics, request_log, same_origin, security_headers, site,
    totp_callback,
};

pub async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let (leptos_options, site_source, config) = crate::cli::load()?;
    let hashed_assets = leptos_options.hash_files;
    let addr = leptos_options.site_addr;

    let mut engine_config = engine::EngineConfig::new(
        &config.database_url,
        config.key.clone(),
        TotpSite {
            base_url: config.totp_provider_url.clone(),
            issuer: config::TOTP_ISSUER.to_owned(),
        },
    );
    engine_config.upstreams = config.upstreams.clone();
    engine_config.step_timeout = config.step_timeout;
    engine_config.account_check_interval = config.account_check_interval;
    engine_config.redis_url = config.redis_url.clone();
    engine_config.redis_prefix = config.redis_prefix.clone();
    engine_config.webhook_allow = config.webhook_allow.clone();
    engine_config.session_idle = config.session_idle;
    engine_config.public_url = Some(config.public_url.clone());
    engine_config.upkeep_limits =
        engine::accounts::upkeep::UpkeepLimits::new(config.upkeep_concurrency);
    let engine = Engine::open(engine_config).await?;
    // Prometheus metrics on a port of their own, when asked for (metrics.rs).
    if let Some(metrics_addr) = metrics::addr_from_env()? {
        metrics::install(metrics_addr)?;
        engine::accounts::status_counts::spawn_refresher(
            engine.pool().clone(),
            metrics::ACCOUNTS_REFRESH,
        );
        println!("Metrics on http://{metrics_addr}/metrics");
    }
    let settings = app::session::ServerSettings {
        public_url: config.public_url.clone(),
        public_url_set: config.public_url_set,
        trust_proxy: config.trust_proxy,
        registration: config.registration,
    };
    if config.demo {
        let created = engine
            .ensure_user(config::DEMO_EMAIL, config::DEMO_PASSWORD)
            .await?;
        let note = if created { "created" } else { "present" };
        println!(
            "Demo account ({note}, not an admin): {} / {}",
            config::DEMO_EMAIL,
            config::DEMO_PASSWORD
        );
    }
    println!(
        "Registration: {}{}",
        config.registration.as_str(),
        if engine.has_admin().await? {
            ""
        } else {
            " (no admin yet: the next account to register is the admin)"
        }
    );
    tokio::spawn(purge_expired_every_minute(engine.clone()));
    // Webhooks are sent within a second of their event, retries when due (engine/src/apps/webhooks.rs).
    engine.spawn_webhook_delivery(Duration::from_secs(1));
    // Connected accounts are renewed before their tokens expire (engine/src/accounts/upkeep.rs).
    engine.spawn_upkeep(config.upkeep_interval);
    // The apps' credential reads are counted in memory and written every second
    // (engine/src/apps/read_counts.rs), and once more below when the server stops.
    engine.spawn_read_count_flusher(engine::apps::read_counts::FLUSH_EVERY);

    let routes = generate_route_list(App);
    let shutting_down = health::ShuttingDown::default();
    let app = Router::new()
        .route(
            totp_callback::PATH,
            axum::routing::get({
                let engine = engine.clone();
                let stylesheet = stylesheet_href(&leptos_options);
                move |headers, query| {
                    let (engine, stylesheet) = (engine.clone(), stylesheet.clone());
                    async move { totp_callback::handle(engine, &stylesheet, headers, query).await }
                }
            }),
        )
        .leptos_routes_with_context(
            &leptos_options,
            routes,
            {
                let (engine, settings) = (engine.clone(), settings.clone());
                move || {
                    provide_context(engine.clone());
                    provide_context(settings.clone());
                }
            },
            {
                let options = leptos_options.clone();
                move || shell(options.clone())
            },
        )
        // The site's files (embedded, or from LEPTOS_SITE_ROOT), else the app's 404 page.
        .fallback({
            let files_and_errors = leptos_axum::file_and_error_handler(shell);
            move |uri: axum::http::Uri,
                  state: axum::extract::State<LeptosOptions>,
                  request: axum::extract::Request| {
                let embedded = match site_source {
                    SiteSource::Embedded => {
                        site::respond(request.method(), uri.path(), request.headers())
                    }
                    SiteSource::Disk => None,
                };
                async move {
                    match embedded {
                        Some(response) => response,
                        None => files_and_errors(uri, state, request).await,
                    }
                }
            }
        })
        .with_state(leptos_options)
        // The app API: GET-only with a bearer key, so the same-origin check lets it through;
        // its answers already carry their real statuses.
        .merge(
            api_v1::router(engine.clone())
                .route_layer(axum::middleware::from_fn(metrics::count_api_requests)),
        )
        .merge(health::router(engine.clone(), shutting_down.clone()))
        .layer(axum::middleware::from_fn(api_errors::honest_statuses))
        .layer(axum::middleware::from_fn(
            same_origin::refuse_cross_site_posts,
        ))
        .layer(axum::middleware::from_fn_with_state(
            security_headers::HeaderPolicy { hashed_assets },
            security_headers::add,
        ))
        // gzip or brotli, as the browser asks: the .wasm shrinks to about a third.
        .layer(tower_http::compression::CompressionLayer::new())
        // Outermost: every answer (refusals of the layers above included) gets its id and line.
        .layer(axum::middleware::from_fn(request_log::tag));

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "Stepgate listening on http://{addr}, open {} (data in {})",
        config.public_url,
        config.data_dir.display()
    );
    if !engine.passkeys_available() {
        println!(
            "Passkeys are off: STEPGATE_PUBLIC_URL ({}) must name a host, not an IP address",
            config.public_url
        );
    }
    // The peer address feeds first-factor throttling (per client address).
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown_signal().await;
        // Not ready from now on; a balancer polling /health/ready moves away meanwhile.
        shutting_down.start();
        tokio::time::sleep(config.shutdown_delay).await;
    })
    .await?;
    // Every request has been answered: the reads they counted go to the database.
    match engine.flush_read_counts().await {
        Ok(reads) => tracing::info!(reads, "read counts written at shutdown"),
        Err(code) => tracing::error!(%code, "read counts could not be written at shutdown"),
    }
    Ok(())
}

/// The stylesheet's URL, with its fingerprint when the build wrote one (pages outside the
/// Leptos app link it too).
fn stylesheet_href(options: &LeptosOptions) -> String {
    let name = &options.output_name;
    // Resolved as Leptos does: beside the binary, or the absolute name crate::cli::load chose.
    let fingerprint = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join(options.hash_file.as_ref())))
        .filter(|_| options.hash_files)
        .and_then(|file| std::fs::read_to_string(file).ok())
        .and_then(|hashes| {
            hashes
                .lines()
                .find_map(|l| l.strip_prefix("css:").map(|h| h.trim().to_owned()))
        });
    match fingerprint {
        Some(hash) => format!("/{}/{name}.{hash}.css", options.site_pkg_dir),
        None => format!("/{}/{name}.css", options.site_pkg_dir),
    }
}

async fn purge_expired_every_minute(engine: Engine) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        if let Err(code) = engine.purge_expired().await {
            tracing::warn!(%code, "purging expired flows and sessions failed");
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
