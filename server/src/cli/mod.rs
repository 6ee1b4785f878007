//! The `stepgate` command line (clap): `serve` is the default; the rest are the operator's
//! tools, each configured from the same environment as the server.

mod backup;
mod check;
mod key;
mod users;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use leptos::prelude::{get_configuration, LeptosOptions};

use crate::config::Config;
use crate::site::{self, SiteSource};

type CliResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

#[derive(Parser, Debug)]
#[command(
    name = "stepgate",
    version,
    about = "Stepgate: a self-hosted sign-in hub for accounts behind multi-step, 2FA-protected logins.",
    long_about = "Stepgate: a self-hosted sign-in hub for accounts behind multi-step, 2FA-protected \
logins.\n\nEvery subcommand reads the same environment as the server (STEPGATE_DATA, DATABASE_URL, \
STEPGATE_KEY_FILE, …; see the README). Without a subcommand, `serve` runs."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the app (the default).
    Serve,
    /// Apply the database migrations this build has, then exit.
    Migrate,
    /// Check the configuration, the database, Redis, the migrations and the key: one line
    /// each, exit status 1 when any is broken.
    Check,
    /// Manage accounts: list, add, disable, enable, reset-2fa, make-admin.
    User {
        #[command(subcommand)]
        command: users::UserCommand,
    },
    /// Make an invite link (for STEPGATE_REGISTRATION=invite).
    Invite(users::InviteArgs),
    /// The master key: rotate it, re-seal every secret under the newest key.
    Key {
        #[command(subcommand)]
        command: key::KeyCommand,
    },
    /// Copy the SQLite database to FILE, consistently, while the server runs (the key is not in
    /// it). On Postgres, prints the pg_dump line to use instead.
    Backup { file: PathBuf },
    /// Put a backup made by `stepgate backup` in place; refuses a file the key cannot open.
    Restore {
        file: PathBuf,
        /// Replace an existing database (it is kept beside, renamed, never deleted).
        #[arg(long)]
        force: bool,
    },
}

impl Cli {
    /// Whether this runs the server (and not one of the operator's commands).
    pub fn is_serve(&self) -> bool {
        matches!(self.command, None | Some(Command::Serve))
    }

    /// The log filter when `RUST_LOG` is unset: the server logs what it does; a command only
    /// what goes wrong (its own lines are its output).
    pub fn default_log_filter(&self) -> &'static str {
        if self.is_serve() {
            "info,sqlx=warn"
        } else {
            "warn,sqlx=error"
        }
    }

    pub async fn run(self) -> CliResult<ExitCode> {
        match self.command.unwrap_or(Command::Serve) {
            Command::Serve => crate::serve::run().await.map(|()| ExitCode::SUCCESS),
            Command::Migrate => migrate().await.map(|()| ExitCode::SUCCESS),
            Command::Check => Ok(check::run().await),
            Command::User { command } => users::run(&load_config()?, command).await.map(done),
            Command::Invite(args) => users::invite(&load_config()?, args).await.map(done),
            Command::Key { command } => key::run(&load_config()?, command).await.map(done),
            Command::Backup { file } => backup::backup(&load_config()?, &file).await.map(done),
            Command::Restore { file, force } => backup::restore(&load_config()?, &file, force)
                .await
                .map(done),
        }
    }
}

fn done(_: ()) -> ExitCode {
    ExitCode::SUCCESS
}

/// The Leptos options (with the site's source and fingerprints resolved) and the configuration.
pub fn load() -> CliResult<(LeptosOptions, SiteSource, Config)> {
    let mut leptos_options = get_configuration(None)?.leptos_options;
    // cargo-leptos passes the name at build time; a plain `cargo build` leaves it empty, and
    // the pages would then link `/pkg/.<hash>.css`.
    if leptos_options.output_name.is_empty() {
        leptos_options.output_name = "stepgate".into();
    }
    let site_source = SiteSource::choose();
    let exe = std::env::current_exe()?;
    let beside_binary = exe
        .parent()
        .map(|dir| dir.join(leptos_options.hash_file.as_ref()))
        .unwrap_or_default();
    let hash_file = site::hash_file(site_source, &beside_binary);
    leptos_options.hash_files = hash_file.is_some();
    if let Some(file) = hash_file {
        leptos_options.hash_file = file.display().to_string().into();
    }
    let config = Config::from_env(leptos_options.site_addr)?;
    Ok((leptos_options, site_source, config))
}

/// The configuration alone (the commands that serve nothing).
fn load_config() -> CliResult<Config> {
    let addr = get_configuration(None)?.leptos_options.site_addr;
    Config::from_env(addr)
}

/// `stepgate migrate`: what the server does at start, alone (a deploy step before rolling
/// instances over; `ExecStartPre=` in the systemd unit).
async fn migrate() -> CliResult {
    let config = load_config()?;
    let pool = engine::store::db::open_without_migrating(&config.database_url).await?;
    let missing = engine::store::readiness::missing_migrations(&pool).await?;
    engine::store::db::migrate(&pool).await?;
    let known = engine::store::readiness::migrations_known(&pool);
    match missing.as_slice() {
        [] => println!("Migrations: the database is current ({known} applied)."),
        [..] => println!(
            "Migrations: applied {} ({}); the database is current ({known} applied).",
            missing.len(),
            missing
                .iter()
                .map(|v| format!("{v:04}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
    Ok(())
}
