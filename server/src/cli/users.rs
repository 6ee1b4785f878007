//! `stepgate user …` and `stepgate invite`: the admin page's acts (`/admin/users`) for the
//! operator at the server's shell, who needs no admin account (holding the database and its key
//! is the authority here). They go through the same engine code as the page
//! (`engine/src/sign_in/admin.rs`) and each act is in the admin log as the command line's.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

use engine::base::clock::SystemClock;
use engine::second_factor::totp_site::TotpSite;
use engine::sign_in::admin::{Admin, OperatorError};
use engine::{Engine, ErrorCode};

use crate::config::Config;

use super::CliResult;

/// Where `user add` reads the new password from when it is set (else standard input).
pub const NEW_PASSWORD_VAR: &str = "STEPGATE_NEW_PASSWORD";

#[derive(clap::Subcommand, Debug)]
pub enum UserCommand {
    /// List every account: email, admin, disabled, second factors, created, last sign-in.
    List,
    /// Add an account. Its password comes from STEPGATE_NEW_PASSWORD, else from standard input
    /// (asked twice, not shown, on a terminal; one line when piped), and must pass the rules a
    /// registration's does.
    Add {
        email: String,
        /// Make the account an admin.
        #[arg(long)]
        admin: bool,
    },
    /// Disable an account: its sessions end now, its API keys are refused, it cannot sign in.
    Disable { email: String },
    /// Enable a disabled account again.
    Enable { email: String },
    /// Remove an account's TOTP seed, passkeys and recovery codes and end its sessions (a lost
    /// authenticator): the password alone signs in until 2FA is set up again.
    #[command(name = "reset-2fa")]
    ResetTwoFactor { email: String },
    /// Make an account an admin.
    MakeAdmin { email: String },
}

#[derive(clap::Args, Debug)]
pub struct InviteArgs {
    /// How many days the invite link works (1 to 90); it works once.
    #[arg(long, value_name = "DAYS", default_value_t = 7)]
    pub days: i64,
}

/// The engine on the configured database (migrated, its key checked), with the hot state in
/// the database: these commands need no Redis.
async fn open_engine(config: &Config) -> Result<Engine, Box<dyn std::error::Error>> {
    let engine_config = engine::EngineConfig::new(
        &config.database_url,
        config.key.clone(),
        TotpSite {
            base_url: config.totp_provider_url.clone(),
            issuer: crate::config::TOTP_ISSUER.to_owned(),
        },
    );
    Ok(Engine::open(engine_config).await?)
}

fn operator(engine: &Engine) -> Admin {
    Admin::new(engine.pool().clone(), Arc::new(SystemClock))
}

/// The operator's refusal as one line (its stable code for scripts in brackets).
fn refused(e: OperatorError) -> Box<dyn std::error::Error> {
    format!("{e} [{}]", e.code()).into()
}

pub async fn run(config: &Config, command: UserCommand) -> CliResult {
    let engine = open_engine(config).await?;
    let admin = operator(&engine);
    match command {
        UserCommand::List => list(&admin).await,
        UserCommand::Add {
            email,
            admin: make_admin,
        } => add(&engine, &admin, &email, make_admin).await,
        UserCommand::Disable { email } => {
            let user = admin.operator_find(&email).await.map_err(refused)?;
            if admin.operator_disable(&email).await.map_err(refused)? {
                println!(
                    "Disabled {}: its sessions ended, its API keys are refused, and it cannot sign in until `stepgate user enable {}`.",
                    user.email, user.email
                );
            } else {
                println!("{} was disabled already: nothing changed.", user.email);
            }
            Ok(())
        }
        UserCommand::Enable { email } => {
            let user = admin.operator_find(&email).await.map_err(refused)?;
            if admin.operator_enable(&email).await.map_err(refused)? {
                println!(
                    "Enabled {}: it may sign in again (its old sessions stay ended).",
                    user.email
                );
            } else {
                println!("{} was not disabled: nothing changed.", user.email);
            }
            Ok(())
        }
        UserCommand::ResetTwoFactor { email } => {
            let user = admin.operator_find(&email).await.map_err(refused)?;
            if admin
                .operator_reset_second_factor(&email)
                .await
                .map_err(refused)?
            {
                println!(
                    "Reset the second factor of {}: its TOTP seed, passkeys and recovery codes are removed and its sessions ended; the password alone signs in until 2FA is set up again.",
                    user.email
                );
            } else {
                println!(
                    "{} has no second factor (no TOTP, no passkey): nothing to reset.",
                    user.email
                );
            }
            Ok(())
        }
        UserCommand::MakeAdmin { email } => {
            let user = admin.operator_find(&email).await.map_err(refused)?;
            if admin.operator_make_admin(&email).await.map_err(refused)? {
                println!("{} is an admin now (/admin/users).", user.email);
            } else {
                println!("{} was an admin already: nothing changed.", user.email);
            }
            Ok(())
        }
    }
}

/// `stepgate invite`: a single-use invite link, shown this once (only its digest is kept).
pub async fn invite(config: &Config, args: InviteArgs) -> CliResult {
    let engine = open_engine(config).await?;
    let invite = operator(&engine)
        .operator_create_invite(args.days)
        .await
        .map_err(refused)?;
    println!("{}", invite.link(&config.public_url));
    println!(
        "Works once, until {}. It is shown this once: only its digest is kept.",
        engine::dates::utc_minute(invite.expires_at)
    );
    if !config.public_url_set {
        println!("STEPGATE_PUBLIC_URL is not set: the link names the listening address; set it to how browsers reach Stepgate.");
    }
    use engine::sign_in::registration::RegistrationMode;
    match config.registration {
        RegistrationMode::Invite => {}
        RegistrationMode::Open => println!(
            "STEPGATE_REGISTRATION is open: anyone may register, with or without an invite."
        ),
        RegistrationMode::Closed => println!(
            "STEPGATE_REGISTRATION is closed: the link works only where registration is `invite`."
        ),
    }
    Ok(())
}

async fn list(admin: &Admin) -> CliResult {
    let rows = admin.operator_accounts().await.map_err(refused)?;
    if rows.is_empty() {
        println!("No accounts yet.");
        return Ok(());
    }
    let when = |at: Option<i64>| at.map(engine::dates::utc_minute).unwrap_or("never".into());
    let table: Vec<[String; 7]> = rows
        .iter()
        .map(|row| {
            [
                row.email.clone(),
                if row.is_admin { "yes" } else { "no" }.into(),
                row.disabled_at
                    .map(engine::dates::utc_minute)
                    .unwrap_or("no".into()),
                row.second_factors.to_string(),
                row.live_sessions.to_string(),
                engine::dates::utc_minute(row.created_at),
                when(row.last_sign_in_at),
            ]
        })
        .collect();
    let header = [
        "EMAIL",
        "ADMIN",
        "DISABLED",
        "2FA",
        "SESSIONS",
        "CREATED",
        "LAST SIGN-IN",
    ];
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            table
                .iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in &table {
        line(row.iter().map(String::as_str).collect());
    }
    println!(
        "{} accounts. 2FA counts TOTP seeds and passkeys; SESSIONS those live now.",
        rows.len()
    );
    Ok(())
}

async fn add(engine: &Engine, admin: &Admin, email: &str, make_admin: bool) -> CliResult {
    let password = new_password(email)?;
    let user = match engine.register(email, &password, &password).await {
        Ok(user) => user,
        Err(ErrorCode::EmailTaken) => {
            return Err(format!(
                "an account with the email {} exists already [email_taken]",
                email.trim()
            )
            .into())
        }
        Err(code @ ErrorCode::PasswordTooWeak) => {
            let advice = engine::sign_in::password_policy::advice_for(email, &password)
                .map(|a| format!(" {a}"))
                .unwrap_or_default();
            return Err(format!("{}{advice} [{}]", code.message(), code.as_str()).into());
        }
        Err(code) => return Err(format!("{} [{}]", code.message(), code.as_str()).into()),
    };
    admin
        .operator_account_added(&user, make_admin)
        .await
        .map_err(refused)?;
    println!(
        "Added {}{}.",
        user.email,
        if make_admin { " as an admin" } else { "" }
    );
    if !make_admin && !engine.has_admin().await.map_err(|c| c.message())? {
        println!("There is no admin yet: the next account to register on the web becomes the admin. `stepgate user make-admin {}` makes this one the admin instead.", user.email);
    }
    Ok(())
}

/// The new password: `STEPGATE_NEW_PASSWORD`, else standard input (asked twice without echo
/// on a terminal, one line when piped).
fn new_password(email: &str) -> Result<String, Box<dyn std::error::Error>> {
    if let Ok(password) = std::env::var(NEW_PASSWORD_VAR) {
        return Ok(password);
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        let password = line.trim_end_matches(['\r', '\n']).to_owned();
        if password.is_empty() {
            return Err(format!(
                "no password: set {NEW_PASSWORD_VAR} or write it on standard input"
            )
            .into());
        }
        return Ok(password);
    }
    let first = read_hidden(&format!("Password for {}: ", email.trim()))?;
    let again = read_hidden("The same password again: ")?;
    if first != again {
        return Err("the two passwords differ: nothing was added".into());
    }
    Ok(first)
}

/// One line from the terminal with echo off (restored after, also when reading fails).
#[cfg(unix)]
fn read_hidden(prompt: &str) -> std::io::Result<String> {
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let fd = libc::STDIN_FILENO;
    // SAFETY: a zeroed termios is a valid value to fill; tcgetattr writes it whole or fails.
    let mut original: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd is standard input, checked to be a terminal; the pointer is to a local.
    if unsafe { libc::tcgetattr(fd, &mut original) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut hidden = original;
    hidden.c_lflag &= !libc::ECHO;
    hidden.c_lflag |= libc::ECHONL;
    // SAFETY: as above; `hidden` is `original` with echo off.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &hidden) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    // SAFETY: restores the settings read above.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &original) };
    read?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

#[cfg(not(unix))]
fn read_hidden(prompt: &str) -> std::io::Result<String> {
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}
