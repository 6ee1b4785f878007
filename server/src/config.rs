//! Configuration from the environment (see the README's table).

use std::path::PathBuf;

use engine::base::secrets::{Keyring, KEY_FILE_NAME};

pub const DEMO_EMAIL: &str = "demo@stepgate.test";
pub const DEMO_PASSWORD: &str = "quiet-lantern-ferry";
/// The service name Stepgate's seeds carry at the TOTP provider and in authenticator apps.
pub const TOTP_ISSUER: &str = "Stepgate";

pub struct Config {
    /// `STEPGATE_DATA`: the SQLite file lives here (and the key file did, before it moved to
    /// [`default_key_file`]).
    pub data_dir: PathBuf,
    /// `DATABASE_URL`, else `sqlite://$STEPGATE_DATA/stepgate.db`. `postgres://…` lets
    /// several instances share one database.
    pub database_url: String,
    /// `STEPGATE_REDIS_URL` (optional): pending flows, throttle counters and renewal leases in
    /// Redis rather than in the database.
    pub redis_url: Option<String>,
    /// `STEPGATE_REDIS_PREFIX` (default `stepgate:`): what this Stepgate's Redis keys start with.
    pub redis_prefix: String,
    /// The keys that seal secrets at rest, newest first (see [`load_keys`]). Loaded (and the
    /// key file created) at start-up so a bad key stops the server before it serves.
    pub key: Keyring,
    /// `STEPGATE_TOTP_PROVIDER_URL`: the web TOTP provider (its origin is the only one whose
    /// messages the sign-in page accepts).
    pub totp_provider_url: String,
    /// `STEPGATE_PUBLIC_URL`: how browsers reach Stepgate (for the provider's callback).
    pub public_url: String,
    /// `STEPGATE_PUBLIC_URL` was set (otherwise `public_url` is the listening address, and a
    /// link made for the owner points where their browser reached Stepgate).
    pub public_url_set: bool,
    /// `STEPGATE_DEMO` (default off; `1` or `true` turns it on): create the demo account (never
    /// an admin). Its password is published, so it is for trying Stepgate out only.
    pub demo: bool,
    /// `STEPGATE_TRUST_PROXY` (default off): a proxy in front appends the client's address to
    /// `X-Forwarded-For`; throttling counts that address instead of the proxy's.
    pub trust_proxy: bool,
    /// `STEPGATE_UPSTREAMS`: `REAL_ORIGIN=BASE_URL` pairs pointing third parties at doubles.
    pub upstreams: engine::flows::upstream::UpstreamMap,
    /// `STEPGATE_STEP_TIMEOUT` (seconds, default 10): how long one upstream request may take.
    pub step_timeout: std::time::Duration,
    /// `STEPGATE_ACCOUNT_CHECK_INTERVAL` (seconds, default 60): how often opening the accounts
    /// page checks an account with its provider.
    pub account_check_interval: i64,
    /// `STEPGATE_UPKEEP_INTERVAL` (seconds, default 15): how often the token upkeep looks for
    /// accounts due for renewal.
    pub upkeep_interval: std::time::Duration,
    /// `STEPGATE_UPKEEP_CONCURRENCY` (default 32): how many renewals run at once, half of them
    /// at most for one provider.
    pub upkeep_concurrency: usize,
    /// `STEPGATE_SHUTDOWN_DELAY` (seconds, default 0): on a stop signal, how long
    /// `/health/ready` answers 503 (so a load balancer stops sending requests here) before
    /// the server stops taking new connections and drains.
    pub shutdown_delay: std::time::Duration,
    /// `STEPGATE_REGISTRATION` (`open`, `invite` or `closed`; default `invite`): who may
    /// register once the first account (the admin) exists.
    pub registration: engine::sign_in::registration::RegistrationMode,
    /// `STEPGATE_WEBHOOK_ALLOW` (CIDRs and host names, comma or space separated): internal
    /// addresses webhooks may reach all the same, e.g. `192.168.1.20/32` for Home Assistant.
    pub webhook_allow: engine::apps::webhook_destination::WebhookAllow,
    /// `STEPGATE_SESSION_IDLE` (seconds, default 7200): a session unused this long ends, within
    /// its 12-hour lifetime.
    pub session_idle: i64,
}

fn flag(name: &str, default: bool) -> bool {
    match std::env::var(name).as_deref() {
        Ok("0") | Ok("false") | Ok("off") | Ok("no") => false,
        Ok("1") | Ok("true") | Ok("on") | Ok("yes") => true,
        _ => default,
    }
}

/// Creates the data folder (and any missing parent) readable by this user only: it holds the
/// database and the key file. A folder that exists already is left as its owner made it.
pub fn create_data_dir(path: &std::path::Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

/// `text` with the password of every URL in it (`scheme://user:password@host`) replaced by
/// `***`, so an error or log line that quotes a `DATABASE_URL` or `STEPGATE_REDIS_URL` never
/// shows it.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        // The authority ends at the first of these; userinfo is what comes before its last '@'.
        let end = after
            .find(|c: char| {
                matches!(c, '/' | '?' | '#')
                    || c.is_whitespace()
                    || c.is_control()
                    || "`'\"<>".contains(c)
            })
            .unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.split_once(':') {
                    Some((user, _password)) => out.push_str(&format!("{user}:***")),
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// A `tracing` writer that passes every log line through [`redact_urls`] (the formatter
/// writes one event per call).
pub struct RedactingWriter<W>(pub W);

impl<W: std::io::Write> std::io::Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        if text.contains("://") {
            self.0.write_all(redact_urls(&text).as_bytes())?;
        } else {
            self.0.write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Where the key file is when `STEPGATE_KEY_FILE` does not say: outside the data folder, so a
/// copy of that folder (a backup) does not carry the key that opens it. Under systemd the
/// service's configuration folder (`ConfigurationDirectory=`, which systemd makes and keeps
/// for the service, the first of several), else the user's configuration folder
/// (`$XDG_CONFIG_HOME/stepgate`, else `~/.config/stepgate`). `None` when none is known.
pub fn default_key_file(var: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    if let Some(dirs) = set("CONFIGURATION_DIRECTORY") {
        let first = dirs.split(':').next().unwrap_or_default();
        return Some(PathBuf::from(first).join(KEY_FILE_NAME));
    }
    let config_home = set("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| set("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(config_home.join("stepgate").join(KEY_FILE_NAME))
}

/// The keys, newest first: `STEPGATE_KEYS` (several, comma or space separated), else
/// `STEPGATE_KEY` (one), else the key file `STEPGATE_KEY_FILE` (created when missing), else the
/// key file in the data folder where it used to be made (read with a warning saying how to
/// move it), else the one at [`default_key_file`] (created when missing). On Postgres the keys
/// must be given (a variable or a named key file): a key file made per instance would leave
/// each instance with its own key, and another instance's users locked out.
pub fn load_keys(
    data_dir: &std::path::Path,
    database_url: &str,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Keyring, String> {
    let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    match (set("STEPGATE_KEYS"), set("STEPGATE_KEY")) {
        (Some(_), Some(_)) => {
            return Err("set STEPGATE_KEYS or STEPGATE_KEY, not both (STEPGATE_KEYS holds every key, newest first)".into())
        }
        (Some(keys), None) => {
            return Keyring::parse_list(&keys, "STEPGATE_KEYS").map_err(|e| e.to_string())
        }
        (None, Some(key)) => {
            return Keyring::parse_list(&key, "STEPGATE_KEY")
                .ok()
                .filter(|ring| ring.keys().len() == 1)
                .ok_or_else(|| "STEPGATE_KEY must be 64 hex digits (several keys go in STEPGATE_KEYS)".into())
        }
        (None, None) => {}
    }
    if let Some(file) = set("STEPGATE_KEY_FILE") {
        return Keyring::load_or_create_file(std::path::Path::new(&file))
            .map_err(|e| format!("STEPGATE_KEY_FILE: {e}"));
    }
    if engine::store::db::Dialect::of_url(database_url)
        == Some(engine::store::db::Dialect::Postgres)
    {
        return Err("on Postgres every instance must use the same keys: set STEPGATE_KEYS, STEPGATE_KEY or STEPGATE_KEY_FILE (no key file is looked for or made for each instance)".into());
    }
    let default = default_key_file(&var);
    let old_place = data_dir.join(KEY_FILE_NAME);
    if old_place.exists() && !default.as_ref().is_some_and(|d| d.exists()) {
        let keys = Keyring::read_file(&old_place).map_err(|e| e.to_string())?;
        let moved = default
            .as_ref()
            .map(|d| {
                format!(
                    "`mkdir -p -m 700 {} && mv {} {}`",
                    d.parent().unwrap_or(d).display(),
                    old_place.display(),
                    d.display()
                )
            })
            .unwrap_or_else(|| "move it elsewhere and set STEPGATE_KEY_FILE".into());
        tracing::warn!(
            "the key file is in the data folder ({}): a copy of the folder (a backup) then carries the key that opens it. Move it out: {moved} (or set STEPGATE_KEY_FILE to where it goes)",
            old_place.display()
        );
        return Ok(keys);
    }
    let default = default.ok_or("no place for the key file is known (no CONFIGURATION_DIRECTORY, XDG_CONFIG_HOME or HOME): set STEPGATE_KEY_FILE, STEPGATE_KEYS or STEPGATE_KEY")?;
    Keyring::load_or_create_file(&default)
        .map_err(|e| format!("the key file {}: {e}", default.display()))
}

impl Config {
    pub fn from_env(site_addr: std::net::SocketAddr) -> Result<Config, Box<dyn std::error::Error>> {
        let data_dir =
            PathBuf::from(std::env::var("STEPGATE_DATA").unwrap_or_else(|_| "./data".into()));
        create_data_dir(&data_dir)
            .map_err(|e| format!("cannot create the data folder {}: {e}", data_dir.display()))?;
        let database_url = std::env::var("DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| engine::store::db::sqlite_url_in(&data_dir));
        let redis_url = std::env::var("STEPGATE_REDIS_URL")
            .ok()
            .filter(|u| !u.is_empty());
        let redis_prefix = std::env::var("STEPGATE_REDIS_PREFIX")
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| engine::DEFAULT_REDIS_PREFIX.into());
        let key = load_keys(&data_dir, &database_url, |name| std::env::var(name).ok())?;
        let demo = flag("STEPGATE_DEMO", false);
        let trust_proxy = flag("STEPGATE_TRUST_PROXY", false);
        let upstreams = engine::flows::upstream::UpstreamMap::parse(
            &std::env::var("STEPGATE_UPSTREAMS").unwrap_or_default(),
        )
        .map_err(|e| format!("STEPGATE_UPSTREAMS: {e}"))?;
        let step_timeout = match std::env::var("STEPGATE_STEP_TIMEOUT") {
            Ok(text) => std::time::Duration::from_secs(text.parse().map_err(|_| {
                format!("STEPGATE_STEP_TIMEOUT: `{text}` is not a number of seconds")
            })?),
            Err(_) => engine::flows::upstream::DEFAULT_STEP_TIMEOUT,
        };
        let account_check_interval = match std::env::var("STEPGATE_ACCOUNT_CHECK_INTERVAL") {
            Ok(text) => text.parse().map_err(|_| {
                format!("STEPGATE_ACCOUNT_CHECK_INTERVAL: `{text}` is not a number of seconds")
            })?,
            Err(_) => engine::DEFAULT_CHECK_INTERVAL,
        };
        let upkeep_interval = match std::env::var("STEPGATE_UPKEEP_INTERVAL") {
            Ok(text) => std::time::Duration::from_secs(text.parse().map_err(|_| {
                format!("STEPGATE_UPKEEP_INTERVAL: `{text}` is not a number of seconds")
            })?),
            Err(_) => std::time::Duration::from_secs(15),
        };
        let upkeep_concurrency = match std::env::var("STEPGATE_UPKEEP_CONCURRENCY") {
            Ok(text) => text.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                format!("STEPGATE_UPKEEP_CONCURRENCY: `{text}` is not a whole number from 1")
            })?,
            Err(_) => engine::accounts::upkeep::DEFAULT_CONCURRENCY,
        };
        let shutdown_delay = match std::env::var("STEPGATE_SHUTDOWN_DELAY") {
            Ok(text) => std::time::Duration::from_secs(text.parse().map_err(|_| {
                format!("STEPGATE_SHUTDOWN_DELAY: `{text}` is not a number of seconds")
            })?),
            Err(_) => std::time::Duration::ZERO,
        };
        let registration = match std::env::var("STEPGATE_REGISTRATION") {
            Ok(text) if !text.is_empty() => {
                engine::sign_in::registration::RegistrationMode::parse(&text).ok_or_else(|| {
                    format!("STEPGATE_REGISTRATION: `{text}` is not one of open, invite, closed")
                })?
            }
            _ => engine::sign_in::registration::RegistrationMode::default(),
        };
        let webhook_allow = engine::apps::webhook_destination::WebhookAllow::parse(
            &std::env::var("STEPGATE_WEBHOOK_ALLOW").unwrap_or_default(),
        )
        .map_err(|e| format!("STEPGATE_WEBHOOK_ALLOW: {e}"))?;
        let session_idle = match std::env::var("STEPGATE_SESSION_IDLE") {
            Ok(text) if !text.is_empty() => match text.parse::<i64>() {
                Ok(seconds) if seconds >= 60 => seconds,
                _ => {
                    return Err(format!(
                        "STEPGATE_SESSION_IDLE: `{text}` is not a number of seconds of at least 60"
                    )
                    .into())
                }
            },
            _ => engine::sign_in::sessions::DEFAULT_IDLE_SECONDS,
        };
        let totp_provider_url = std::env::var("STEPGATE_TOTP_PROVIDER_URL")
            .unwrap_or_else(|_| "http://127.0.0.1:3100".into())
            .trim_end_matches('/')
            .to_owned();
        let given_public_url = std::env::var("STEPGATE_PUBLIC_URL")
            .ok()
            .filter(|u| !u.is_empty());
        let public_url_set = given_public_url.is_some();
        let public_url = given_public_url
            .unwrap_or_else(|| format!("http://{site_addr}"))
            .trim_end_matches('/')
            .to_owned();
        Ok(Config {
            data_dir,
            database_url,
            redis_url,
            redis_prefix,
            key,
            demo,
            trust_proxy,
            upstreams,
            step_timeout,
            account_check_interval,
            upkeep_interval,
            upkeep_concurrency,
            shutdown_delay,
            registration,
            webhook_allow,
            session_idle,
            totp_provider_url,
            public_url,
            public_url_set,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a test's log subscriber wrote.
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn passwords_in_urls_are_redacted() {
        assert_eq!(
            redact_urls("DATABASE_URL must start with sqlite:// or postgres://, not `mysql://stepgate:hunter2-secret@db:3306/stepgate`"),
            "DATABASE_URL must start with sqlite:// or postgres://, not `mysql://stepgate:***@db:3306/stepgate`"
        );
        assert_eq!(
            redact_urls(
                "redis://:s3cret@127.0.0.1:6379/0 and postgres://u:p%40ss@h/db?sslmode=require"
            ),
            "redis://:***@127.0.0.1:6379/0 and postgres://u:***@h/db?sslmode=require"
        );
        // A password holding '@' or ':' is cut at the last '@' of the authority.
        assert_eq!(
            redact_urls("postgres://u:a@b:c@host/db"),
            "postgres://u:***@host/db"
        );
        for kept in [
            "http://127.0.0.1:3000/login",
            "sqlite:///data/stepgate.db",
            "postgres://stepgate@db/stepgate",
            "no url here",
        ] {
            assert_eq!(redact_urls(kept), kept);
        }
    }

    #[tokio::test]
    async fn a_wrong_scheme_database_url_is_reported_without_its_password() {
        let e = engine::store::db::connect("mysql://stepgate:hunter2-secret@db:3306/stepgate")
            .await
            .expect_err("mysql:// is refused");
        let shown = redact_urls(&e.to_string());
        assert!(
            shown.contains("mysql://stepgate:***@db:3306/stepgate"),
            "{shown}"
        );
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn log_lines_never_carry_a_url_password() {
        use tracing_subscriber::fmt::MakeWriter;

        #[derive(Clone)]
        struct Make(Buffer);
        impl<'a> MakeWriter<'a> for Make {
            type Writer = RedactingWriter<Buffer>;
            fn make_writer(&'a self) -> Self::Writer {
                RedactingWriter(self.0.clone())
            }
        }
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(Make(buffer.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let url = "postgres://stepgate:hunter2-secret@db.internal/stepgate";
            tracing::error!(error = %format!("cannot connect to {url}"), "opening the database failed");
            tracing::warn!(url, "retrying");
        });
        let logged = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert!(
            logged.contains("postgres://stepgate:***@db.internal/stepgate"),
            "{logged}"
        );
        assert!(!logged.contains("hunter2"), "{logged}");
    }

    #[test]
    fn the_data_folder_is_made_for_its_owner_only_and_the_key_file_too() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("new").join("data");
        create_data_dir(&data).unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&dir.path().join("new")), 0o700);
        // Again on an existing folder: fine, and unchanged.
        create_data_dir(&data).unwrap();
        assert_eq!(mode(&data), 0o700);
        let home = dir.path().join("home");
        load_keys(
            &data,
            &engine::store::db::sqlite_url_in(&data),
            vars(vec![("HOME", home.display().to_string())]),
        )
        .unwrap();
        let key_folder = home.join(".config").join("stepgate");
        assert_eq!(mode(&key_folder.join(KEY_FILE_NAME)), 0o600);
        assert_eq!(mode(&key_folder), 0o700);
    }

    /// A lookup of environment variables from `pairs` (the process' own are left alone).
    fn vars(pairs: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
        }
    }

    const POSTGRES: &str = "postgres://stepgate@db.internal/stepgate";

    fn hex_keys(ring: &Keyring) -> Vec<String> {
        ring.keys().iter().map(|k| k.to_hex()).collect()
    }

    #[test]
    fn keys_come_from_the_variables_or_a_named_key_file_and_on_postgres_must_be_given() {
        let dir = tempfile::tempdir().unwrap();
        let home = || ("HOME", dir.path().join("home").display().to_string());
        let refused = load_keys(dir.path(), POSTGRES, vars(vec![home()])).unwrap_err();
        assert!(
            refused.contains("STEPGATE_KEYS, STEPGATE_KEY or STEPGATE_KEY_FILE"),
            "{refused}"
        );
        assert!(
            !dir.path().join("home").exists() && !dir.path().join(KEY_FILE_NAME).exists(),
            "no key file made per instance"
        );

        let key_file = dir.path().join("elsewhere.key");
        let file_var = || vars(vec![("STEPGATE_KEY_FILE", key_file.display().to_string())]);
        let from_file = load_keys(dir.path(), POSTGRES, file_var()).unwrap();
        assert!(key_file.exists(), "created where STEPGATE_KEY_FILE says");
        assert_eq!(from_file.file(), Some(key_file.as_path()));
        let again = load_keys(dir.path(), POSTGRES, file_var()).unwrap();
        assert_eq!(again.keys(), from_file.keys());

        let one = load_keys(
            dir.path(),
            POSTGRES,
            vars(vec![("STEPGATE_KEY", "cd".repeat(32)), home()]),
        )
        .unwrap();
        assert_eq!(hex_keys(&one), ["cd".repeat(32)]);
        assert_eq!(
            one.file(),
            None,
            "keys from the environment are not read again"
        );
        let several = format!(
            "{},{} {}",
            "01".repeat(32),
            "02".repeat(32),
            "03".repeat(32)
        );
        let ring = load_keys(
            dir.path(),
            POSTGRES,
            vars(vec![
                ("STEPGATE_KEYS", several),
                ("STEPGATE_KEY_FILE", key_file.display().to_string()),
            ]),
        )
        .unwrap();
        assert_eq!(
            hex_keys(&ring),
            ["01".repeat(32), "02".repeat(32), "03".repeat(32)],
            "newest first, and the variables win over the key file"
        );
        assert_eq!(ring.newest().to_hex(), "01".repeat(32));

        for (vars_given, expected) in [
            (
                vec![("STEPGATE_KEYS", format!("{} oops", "01".repeat(32)))],
                "STEPGATE_KEYS: key 2 is not 64 hex digits",
            ),
            (
                vec![(
                    "STEPGATE_KEY",
                    format!("{},{}", "01".repeat(32), "02".repeat(32)),
                )],
                "several keys go in STEPGATE_KEYS",
            ),
            (
                vec![
                    ("STEPGATE_KEYS", "01".repeat(32)),
                    ("STEPGATE_KEY", "02".repeat(32)),
                ],
                "not both",
            ),
        ] {
            let refused = load_keys(dir.path(), POSTGRES, vars(vars_given)).unwrap_err();
            assert!(refused.contains(expected), "{refused}");
        }
    }

    #[test]
    fn a_key_file_holds_several_keys_newest_first_with_comments() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("keys");
        std::fs::write(
            &key_file,
            format!(
                "# rotated in May\n{}\n\n{}  # the first key\n",
                "aa".repeat(32),
                "bb".repeat(32)
            ),
        )
        .unwrap();
        let ring = load_keys(
            dir.path(),
            POSTGRES,
            vars(vec![("STEPGATE_KEY_FILE", key_file.display().to_string())]),
        )
        .unwrap();
        assert_eq!(hex_keys(&ring), ["aa".repeat(32), "bb".repeat(32)]);
        std::fs::write(&key_file, "# none yet\n").unwrap();
        let refused = load_keys(
            dir.path(),
            POSTGRES,
            vars(vec![("STEPGATE_KEY_FILE", key_file.display().to_string())]),
        )
        .unwrap_err();
        assert!(refused.contains("holds no key"), "{refused}");
    }

    #[test]
    fn the_default_key_file_is_outside_the_data_folder() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        create_data_dir(&data).unwrap();
        let sqlite = engine::store::db::sqlite_url_in(&data);
        let path = |p: &std::path::Path| p.display().to_string();
        let home = dir.path().join("home");
        let xdg = dir.path().join("xdg");
        let systemd = dir.path().join("etc-stepgate");

        assert_eq!(
            default_key_file(vars(vec![
                ("HOME", path(&home)),
                ("XDG_CONFIG_HOME", path(&xdg)),
                (
                    "CONFIGURATION_DIRECTORY",
                    format!("{}:/etc/other", path(&systemd))
                ),
            ])),
            Some(systemd.join(KEY_FILE_NAME)),
            "systemd's ConfigurationDirectory= first"
        );
        assert_eq!(
            default_key_file(vars(vec![
                ("HOME", path(&home)),
                ("XDG_CONFIG_HOME", path(&xdg))
            ])),
            Some(xdg.join("stepgate").join(KEY_FILE_NAME))
        );
        assert_eq!(default_key_file(vars(vec![])), None);

        let made = load_keys(&data, &sqlite, vars(vec![("HOME", path(&home))])).unwrap();
        let expected = home.join(".config").join("stepgate").join(KEY_FILE_NAME);
        assert_eq!(made.file(), Some(expected.as_path()));
        assert!(
            !data.join(KEY_FILE_NAME).exists(),
            "nothing in the data folder"
        );
        let again = load_keys(&data, &sqlite, vars(vec![("HOME", path(&home))])).unwrap();
        assert_eq!(again.keys(), made.keys());

        // On Postgres the keys must be named: no default place is looked at, none is made.
        assert!(load_keys(&data, POSTGRES, vars(vec![("HOME", path(&home))])).is_err());
        assert!(load_keys(&data, POSTGRES, vars(vec![("XDG_CONFIG_HOME", path(&xdg))])).is_err());
        assert!(!xdg.exists());

        let refused = load_keys(&data, &sqlite, vars(vec![])).unwrap_err();
        assert!(refused.contains("STEPGATE_KEY_FILE"), "{refused}");
    }

    #[test]
    fn a_key_file_in_the_data_folder_is_still_read_with_a_warning_saying_how_to_move_it() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        create_data_dir(&data).unwrap();
        let old = Keyring::load_or_create_file(&data.join(KEY_FILE_NAME)).unwrap();
        let home = dir.path().join("home");
        let env = || vars(vec![("HOME", home.display().to_string())]);
        let sqlite = engine::store::db::sqlite_url_in(&data);

        let (ring, logged) = logged_while(|| load_keys(&data, &sqlite, env()).unwrap());
        assert_eq!(ring.keys(), old.keys());
        let default = home.join(".config").join("stepgate").join(KEY_FILE_NAME);
        assert!(!default.exists(), "no second key made at the default place");
        assert!(
            logged.contains("the key file is in the data folder")
                && logged.contains(&format!("mv {}", data.join(KEY_FILE_NAME).display()))
                && logged.contains(&default.display().to_string()),
            "{logged}"
        );

        // Moved as told: read from the new place, without a warning.
        std::fs::create_dir_all(default.parent().unwrap()).unwrap();
        std::fs::rename(data.join(KEY_FILE_NAME), &default).unwrap();
        let (moved, logged) = logged_while(|| load_keys(&data, &sqlite, env()).unwrap());
        assert_eq!(moved.keys(), old.keys());
        assert!(!logged.contains("data folder"), "{logged}");
    }

    /// What `f` returns, and what it logged.
    fn logged_while<T>(f: impl FnOnce() -> T) -> (T, String) {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let out = tracing::subscriber::with_default(subscriber, f);
        let logged = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        (out, logged)
    }
}
