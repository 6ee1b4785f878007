//! Stepgate in one binary: `stepgate serve` (the default) runs the server; the other
//! subcommands (server/src/cli/) are the operator's tools. Configuration comes from the
//! environment (README's table) for every subcommand alike.

mod api_errors;
mod api_v1;
mod cli;
mod config;
mod health;
mod metrics;
mod request_log;
mod same_origin;
mod security_headers;
mod serve;
mod site;
mod totp_callback;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Before logging starts: `--help` and a mistyped subcommand answer at once.
    let cli = cli::Cli::parse();
    let format = match request_log::LogFormat::from_env() {
        Ok(format) => format,
        Err(e) => {
            eprintln!("Error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| cli.default_log_filter().into());
    // No log line shows a URL's password (a DATABASE_URL quoted in an error, say). The server
    // logs to stdout (the journal, `docker logs`); a command's log goes to stderr, apart from
    // the lines that are its answer.
    let to_stdout = cli.is_serve();
    let writer = move || {
        config::RedactingWriter(if to_stdout {
            Box::new(std::io::stdout()) as Box<dyn std::io::Write>
        } else {
            Box::new(std::io::stderr())
        })
    };
    match format {
        request_log::LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer)
            .init(),
        request_log::LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(writer)
            .init(),
    }
    match cli.run().await {
        Ok(code) => code,
        Err(e) => {
            // Nor does an error that stops the server or a command.
            // A refusal the engine reports as a configuration error (a wrong key) reads as the
            // sentence itself, without sqlx's "error with configuration: " in front.
            let text = e.to_string();
            let text = text
                .strip_prefix("error with configuration: ")
                .unwrap_or(&text);
            eprintln!("Error: {}", config::redact_urls(text));
            std::process::ExitCode::FAILURE
        }
    }
}
