//! Simulated third-party services for the demo and the end-to-end tests, each host on its own
//! origin: the web TOTP provider, Librus (api + synergia), Xiaomi (account + sts), Lynk & Co
//! (B2C + IAM) and FlameConnect (B2C).

use sandbox::{flameconnect, librus, lynkco, totp_site, xiaomi};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.into())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let addr = env_or("STEPGATE_SANDBOX_ADDR", "127.0.0.1:3100");
    // The one origin the TOTP provider posts codes to and redirects callbacks to.
    let app_origin = env_or("STEPGATE_APP_ORIGIN", "http://127.0.0.1:3000");
    // Seeds are kept in a JSON file next to Stepgate's data, so the demo survives restarts.
    let seeds_file = std::env::var("STEPGATE_SANDBOX_SEEDS")
        .ok()
        .map(std::path::PathBuf::from);
    let router = totp_site::router(totp_site::Provider::new(app_origin.clone(), seeds_file));
    let listener = tokio::net::TcpListener::bind(&addr).await?;

    let librus = librus::LibrusSandbox::spawn_at(
        &env_or("STEPGATE_SANDBOX_LIBRUS_API_ADDR", "127.0.0.1:3101"),
        &env_or("STEPGATE_SANDBOX_LIBRUS_SYNERGIA_ADDR", "127.0.0.1:3102"),
    )
    .await?;
    let xiaomi = xiaomi::XiaomiSandbox::spawn_at(
        &env_or("STEPGATE_SANDBOX_XIAOMI_ACCOUNT_ADDR", "127.0.0.1:3103"),
        &env_or("STEPGATE_SANDBOX_XIAOMI_STS_ADDR", "127.0.0.1:3104"),
    )
    .await?;
    let lynkco = lynkco::LynkcoSandbox::spawn_at(
        &env_or("STEPGATE_SANDBOX_LYNKCO_B2C_ADDR", "127.0.0.1:3105"),
        &env_or("STEPGATE_SANDBOX_LYNKCO_IAM_ADDR", "127.0.0.1:3106"),
    )
    .await?;
    let flameconnect = flameconnect::FlameConnectSandbox::spawn_at(&env_or(
        "STEPGATE_SANDBOX_FLAMECONNECT_ADDR",
        "127.0.0.1:3107",
    ))
    .await?;

    println!(
        "Stepgate sandbox (simulated TOTP provider) on http://{addr}, talking to {app_origin}"
    );
    println!(
        "Librus double: api.librus.pl on http://{}, synergia.librus.pl on http://{}",
        librus.api_addr, librus.synergia_addr
    );
    println!(
        "  demo accounts: {} / {} (goTo 2FA), {} / {} (goTo Grant), login `{}` = captcha",
        librus::DEMO_LOGIN,
        librus::DEMO_PASSWORD,
        librus::DEMO_GRANT_LOGIN,
        librus::DEMO_GRANT_PASSWORD,
        librus::CAPTCHA_LOGIN
    );
    println!(
        "Xiaomi double: account.xiaomi.com on http://{}, sts.api.io.mi.com on http://{}",
        xiaomi.account_addr, xiaomi.sts_addr
    );
    println!(
        "  demo accounts (password {}): {} (no 2FA), {} (2FA by SMS), {} (2FA by email), {} (2FA by SMS, then the confirm-phone page), {} (captcha)",
        xiaomi::DEMO_PASSWORD,
        xiaomi::DEMO_USER,
        xiaomi::DEMO_2FA_USER,
        xiaomi::DEMO_EMAIL_2FA_USER,
        xiaomi::DEMO_CONFIRM_USER,
        xiaomi::CAPTCHA_USER
    );
    println!(
        "  codes sent by SMS/email: http://{}/inbox",
        xiaomi.account_addr
    );
    println!(
        "Lynk & Co double: login.lynkco.com on http://{}, iam-service on http://{}",
        lynkco.b2c_addr, lynkco.iam_addr
    );
    println!(
        "  demo accounts (password {}): {}, {} (SMS code after the password)",
        lynkco::DEMO_PASSWORD,
        lynkco::DEMO_EMAIL,
        lynkco::OTHER_EMAIL
    );
    println!("  codes sent by SMS: http://{}/inbox", lynkco.b2c_addr);
    println!(
        "FlameConnect double: gdhvb2cflameconnect.b2clogin.com on http://{}",
        flameconnect.addr
    );
    println!(
        "  demo accounts (password {}): {}, {}",
        flameconnect::DEMO_PASSWORD,
        flameconnect::DEMO_EMAIL,
        flameconnect::OTHER_EMAIL
    );
    println!(
        "Faults: POST /testing/faults {{\"step\":\"…\",\"fault\":\"stall|503|garbage|shape|reset|endless|loopback|loop|http|none\"}} on any host"
    );
    println!(
        "For Stepgate: STEPGATE_UPSTREAMS=\"{} {} {} {}\"",
        librus.upstreams(),
        xiaomi.upstreams(),
        lynkco.upstreams(),
        flameconnect.upstreams()
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown())
        .await?;
    drop((librus, xiaomi, lynkco, flameconnect));
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
