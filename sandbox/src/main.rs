//! Simulated third-party services for the demo and the end-to-end tests, each host on its own
//! origin: the web TOTP provider, Librus (api + synergia), Xiaomi (account + sts + API), Lynk &
//! Co (B2C + IAM + delegated-driver + user-lifecycle) and FlameConnect (B2C + API).
//!
//! `sandbox --print-env` prints, instead of serving, shell `export` lines for every double's
//! address and `STEPGATE_UPSTREAMS` (for `eval`); `sandbox --print-json` the same as JSON. Both
//! follow `STEPGATE_SANDBOX_ADDR` and any address variable already set (`doubles.rs`).
//! `sandbox --print-demo-passwords` prints the doubles' demo passwords as a JSON array.

use sandbox::doubles::{self, Double};
use sandbox::{flameconnect, librus, lynkco, totp_site, xiaomi};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.into())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = env_or("STEPGATE_SANDBOX_ADDR", doubles::DEFAULT_SANDBOX_ADDR);
    let addresses = doubles::addresses(&addr, |name| std::env::var(name).ok())
        .map_err(|e| format!("STEPGATE_SANDBOX_ADDR: {e}"))?;
    match std::env::args().nth(1).as_deref() {
        None => {}
        Some("--print-env") => {
            let keep = std::env::var("STEPGATE_UPSTREAMS").is_ok_and(|u| !u.is_empty());
            println!("{}", doubles::shell_env(&addresses, keep));
            return Ok(());
        }
        Some("--print-json") => {
            println!("{}", doubles::json(&addresses));
            return Ok(());
        }
        Some("--print-demo-passwords") => {
            println!("{}", serde_json::json!(doubles::DEMO_PASSWORDS));
            return Ok(());
        }
        Some(other) => {
            return Err(format!(
            "unknown argument `{other}` (try --print-env, --print-json or --print-demo-passwords)"
        )
            .into())
        }
    }
    let at = |origin: &str| {
        let double: &Double = doubles::double_of(origin);
        addresses
            .iter()
            .find(|(d, _)| *d == double)
            .map(|(_, a)| a.clone())
            .expect("every double has an address")
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    // The one origin the TOTP provider posts codes to and redirects callbacks to.
    let app_origin = env_or("STEPGATE_APP_ORIGIN", "http://127.0.0.1:3000");
    // Seeds are kept in a JSON file next to Stepgate's data, so the demo survives restarts.
    let seeds_file = std::env::var("STEPGATE_SANDBOX_SEEDS")
        .ok()
        .map(std::path::PathBuf::from);
    let router = totp_site::router(totp_site::Provider::new(app_origin.clone(), seeds_file));
    let listener = tokio::net::TcpListener::bind(&addr).await?;

    let librus =
        librus::LibrusSandbox::spawn_at(&at(librus::API_ORIGIN), &at(librus::SYNERGIA_ORIGIN))
            .await?;
    let xiaomi = xiaomi::XiaomiSandbox::spawn_at(
        &at(xiaomi::ACCOUNT_ORIGIN),
        &at(xiaomi::STS_ORIGIN),
        &at(xiaomi::API_ORIGIN),
    )
    .await?;
    let lynkco = lynkco::LynkcoSandbox::spawn_at(
        &at(lynkco::B2C_ORIGIN),
        &at(lynkco::IAM_ORIGIN),
        &at(lynkco::DELEGATED_DRIVER_ORIGIN),
        &at(lynkco::USER_LIFECYCLE_ORIGIN),
    )
    .await?;
    let flameconnect = flameconnect::FlameConnectSandbox::spawn_at(
        &at(flameconnect::ORIGIN),
        &at(flameconnect::API_ORIGIN),
    )
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
        "Xiaomi double: account.xiaomi.com on http://{}, sts.api.io.mi.com on http://{}, api.io.mi.com on http://{}",
        xiaomi.account_addr, xiaomi.sts_addr, xiaomi.api_addr
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
        "Lynk & Co double: login.lynkco.com on http://{}, iam-service on http://{}, delegated-driver on http://{}, user-lifecycle on http://{}",
        lynkco.b2c_addr, lynkco.iam_addr, lynkco.delegated_driver_addr, lynkco.user_lifecycle_addr
    );
    println!(
        "  demo accounts (password {}): {}, {} (SMS code after the password)",
        lynkco::DEMO_PASSWORD,
        lynkco::DEMO_EMAIL,
        lynkco::OTHER_EMAIL
    );
    println!("  codes sent by SMS: http://{}/inbox", lynkco.b2c_addr);
    println!(
        "FlameConnect double: gdhvb2cflameconnect.b2clogin.com on http://{}, mobileapi.gdhv-iot.com on http://{}",
        flameconnect.addr, flameconnect.api_addr
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
        "Data APIs: POST /testing/invalidate-api-tokens, GET /testing/last-api-request on any host of a provider"
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
