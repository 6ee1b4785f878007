//! Simulated third-party services for the demo and the end-to-end tests, each on its own
//! origin. Today: the web TOTP provider (`totp_provider.rs`).

mod totp_provider;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let addr = std::env::var("STEPGATE_SANDBOX_ADDR").unwrap_or_else(|_| "127.0.0.1:3100".into());
    // The one origin the TOTP provider posts codes to and redirects callbacks to.
    let app_origin =
        std::env::var("STEPGATE_APP_ORIGIN").unwrap_or_else(|_| "http://127.0.0.1:3000".into());
    // Seeds are kept in a JSON file next to Stepgate's data, so the demo survives restarts.
    let seeds_file = std::env::var("STEPGATE_SANDBOX_SEEDS")
        .ok()
        .map(std::path::PathBuf::from);
    let router =
        totp_provider::router(totp_provider::Provider::new(app_origin.clone(), seeds_file));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "Stepgate sandbox (simulated TOTP provider) on http://{addr}, talking to {app_origin}"
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown())
        .await?;
    Ok(())
}

async fn shutdown() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
