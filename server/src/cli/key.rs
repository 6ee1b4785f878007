//! `stepgate key …`: the keyring (issue 20). A rotation puts a new key first in the key file
//! (the old ones kept after it, so everything still opens), then seals every secret again under
//! it, batch by batch while servers keep running; it ends by checking whether anything still
//! needs an older key, so "the old key may be dropped" is looked at, not guessed. Keys from the
//! environment cannot be written here: the command prints a new key and the steps instead.

use std::error::Error;

use engine::base::secrets::{Keyring, SecretKey};
use engine::second_factor::totp_site::TotpSite;
use engine::store::reseal::{SealedKind, SealedReport};
use engine::Engine;

use crate::config::Config;

use super::CliResult;

/// Rows per batch: each batch is one short transaction.
const DEFAULT_BATCH: usize = 200;

#[derive(clap::Subcommand, Debug)]
pub enum KeyCommand {
    /// Put a new key first in the key file (the old ones kept), then seal every secret again
    /// with it, and say whether the old keys may be dropped.
    Rotate {
        /// Rows re-sealed per transaction.
        #[arg(long, default_value_t = DEFAULT_BATCH)]
        batch: usize,
    },
    /// Put a new key first in the key file and re-seal nothing: for servers that read the key
    /// file at start only (a systemd credential copy). Restart them, then run `key reseal`.
    Add,
    /// Seal every secret again under the newest key (what `rotate` does after adding the key;
    /// run it again to finish a rotation that stopped halfway).
    Reseal {
        /// Rows re-sealed per transaction.
        #[arg(long, default_value_t = DEFAULT_BATCH)]
        batch: usize,
    },
    /// Show the keys (by id) and whether anything still needs an older one. Changes nothing.
    Status,
    /// Remove every key but the newest from the key file, only when nothing needs them.
    DropOld,
}

/// What the key commands need of the configuration.
struct Target {
    database_url: String,
    redis_url: Option<String>,
    redis_prefix: String,
    totp_provider_url: String,
    keys: Keyring,
}

impl Target {
    fn of(config: &Config) -> Target {
        Target {
            database_url: config.database_url.clone(),
            redis_url: config.redis_url.clone(),
            redis_prefix: config.redis_prefix.clone(),
            totp_provider_url: config.totp_provider_url.clone(),
            keys: config.key.clone(),
        }
    }

    fn with_keys(&self, keys: Keyring) -> Target {
        Target {
            keys,
            database_url: self.database_url.clone(),
            redis_url: self.redis_url.clone(),
            redis_prefix: self.redis_prefix.clone(),
            totp_provider_url: self.totp_provider_url.clone(),
        }
    }
}

pub async fn run(config: &Config, command: KeyCommand) -> CliResult {
    run_on(&Target::of(config), command).await
}

async fn run_on(config: &Target, command: KeyCommand) -> CliResult {
    match command {
        KeyCommand::Rotate { batch } => match config.keys.file() {
            Some(_) => {
                let ring = add_key(&config.keys)?;
                reseal(&config.with_keys(ring), batch).await
            }
            None => {
                print_environment_steps(&config.keys);
                Ok(())
            }
        },
        KeyCommand::Add => match config.keys.file() {
            Some(_) => {
                add_key(&config.keys)?;
                println!("Nothing is re-sealed yet: restart every server, then run `stepgate key reseal`.");
                Ok(())
            }
            None => {
                print_environment_steps(&config.keys);
                Ok(())
            }
        },
        KeyCommand::Reseal { batch } => reseal(config, batch).await,
        KeyCommand::Status => status(config).await,
        KeyCommand::DropOld => drop_old(config).await,
    }
}

/// A key's id as the sealed values carry it (safe to show: it tells nothing about the key).
fn id_of(key: &SecretKey) -> String {
    engine::base::secrets::hex_id(key)
}

fn ids(ring: &Keyring) -> String {
    ring.keys().iter().map(id_of).collect::<Vec<_>>().join(", ")
}

/// Where the keys come from, for messages.
fn source(ring: &Keyring) -> String {
    match ring.file() {
        Some(path) => format!("the key file {}", path.display()),
        None => "STEPGATE_KEYS / STEPGATE_KEY".into(),
    }
}

/// Writes a new key first into the key file (read again now, so a key added meanwhile is
/// kept), the old ones after it; the ring now.
fn add_key(ring: &Keyring) -> Result<Keyring, Box<dyn Error>> {
    let path = ring.file().expect("called for a key file");
    let current = Keyring::read_file(path)?;
    let rotated = current.with_new_key();
    rotated.write_file().map_err(|e| {
        format!(
            "cannot write the key file {}: {e}. (Under systemd the service reads a copy: rotate /etc/stepgate/secret.key instead, with STEPGATE_KEY_FILE=/etc/stepgate/secret.key stepgate key add, then restart the service and run `stepgate key reseal` the same way.)",
            path.display()
        )
    })?;
    println!(
        "Key {} is now first in {} (it seals from now on); the older key(s) {} are kept after it.",
        id_of(rotated.newest()),
        path.display(),
        ids(&current)
    );
    Ok(rotated)
}

fn print_environment_steps(ring: &Keyring) {
    let new = SecretKey::generate();
    println!("The keys come from the environment (STEPGATE_KEYS or STEPGATE_KEY), which this command cannot change, and running servers read them at start only.");
    println!(
        "A new key (id {}), not in use yet:\n\n  {}\n",
        id_of(&new),
        new.to_hex()
    );
    println!("To rotate to it:");
    println!("  1. With several instances, first add it LAST on every one (STEPGATE_KEYS=<the keys it has now>,{}) and restart them one by one: each then opens what any other seals with it.", id_hint(&new));
    println!("  2. Put it FIRST on every instance (STEPGATE_KEYS={},<the keys it had>) and restart them one by one: new secrets are sealed with it.", id_hint(&new));
    println!("  3. Run `stepgate key reseal` with the same STEPGATE_KEYS: it seals every secret again with the new key and says when the old key(s) ({}) may be dropped.", ids(ring));
    println!(
        "  4. Then keep only the new key (STEPGATE_KEYS={}) and restart.",
        id_hint(&new)
    );
}

/// A placeholder naming a key by id, for printed steps.
fn id_hint(key: &SecretKey) -> String {
    format!("<the new key, id {}>", id_of(key))
}

/// The engine this configuration opens, with `keys`. Opening checks the key (and re-records
/// the check value under the newest key).
async fn open_engine(config: &Target) -> Result<Engine, Box<dyn Error>> {
    let mut engine_config = engine::EngineConfig::new(
        &config.database_url,
        config.keys.clone(),
        TotpSite {
            base_url: config.totp_provider_url.clone(),
            issuer: crate::config::TOTP_ISSUER.to_owned(),
        },
    );
    engine_config.redis_url = config.redis_url.clone();
    engine_config.redis_prefix = config.redis_prefix.clone();
    Ok(Engine::open(engine_config).await?)
}

async fn reseal(config: &Target, batch: usize) -> CliResult {
    let engine = open_engine(config).await?;
    println!(
        "Re-sealing under key {} (from {}), {batch} per batch:",
        id_of(engine.keyring().newest()),
        source(&engine.keyring())
    );
    let mut shown: Option<(SealedKind, u64)> = None;
    let report = engine
        .reseal_all(batch, |kind, count| {
            // One line per batch that changed something; the summary below has every kind.
            if count.resealed > 0 && shown != Some((kind, count.resealed)) {
                println!("  {}: {} re-sealed so far", kind.name(), count.resealed);
                shown = Some((kind, count.resealed));
            }
        })
        .await
        .map_err(|code| {
            format!("the re-seal stopped: {code}; run `stepgate key reseal` to go on")
        })?;
    for (kind, count) in &report.kinds {
        println!("  {}: {} re-sealed", kind.name(), count.resealed);
    }
    tell_what_old_keys_seal(&engine).await?;
    Ok(())
}

async fn status(config: &Target) -> CliResult {
    let engine = open_engine(config).await?;
    let ring = engine.keyring();
    println!(
        "Keys (newest first, from {}): {}",
        source(&ring),
        ids(&ring)
    );
    tell_what_old_keys_seal(&engine).await?;
    Ok(())
}

/// Looks at what the older keys still seal and says so ([`print_verdict`]).
async fn tell_what_old_keys_seal(engine: &Engine) -> Result<SealedReport, String> {
    let check = engine
        .sealed_with_old_keys()
        .await
        .map_err(|code| format!("checking what the old keys still seal failed: {code}"))?;
    print_verdict(engine, &check);
    Ok(check)
}

/// The last line of a rotation: may the old keys go, and if not, what still needs them.
fn print_verdict(engine: &Engine, check: &SealedReport) {
    let ring = engine.keyring();
    let total = check.total();
    if total.unreadable > 0 {
        let kinds: Vec<String> = check
            .kinds
            .iter()
            .filter(|(_, c)| c.unreadable > 0)
            .map(|(kind, c)| format!("{} {}", c.unreadable, kind.name()))
            .collect();
        println!(
            "Note: {} open with no key of the ring (lost before now; keeping or dropping keys changes nothing for them).",
            kinds.join(", ")
        );
    }
    if ring.keys().len() == 1 {
        println!(
            "The ring holds one key ({}): there is no older key to drop.",
            id_of(ring.newest())
        );
        return;
    }
    let old = ids(&Keyring::new(ring.keys()[1..].to_vec()).expect("more than one key"));
    if check.old_keys_unused() {
        println!(
            "Nothing is sealed with the older key(s) {old} any more: they may be dropped (`stepgate key drop-old`, or remove them from {}). Servers that have not read the new key yet (a key file is read again within 30 s; the environment only at restart) could still seal with an older one: run `stepgate key status` once they have.",
            source(&ring)
        );
        return;
    }
    let still: Vec<String> = check
        .kinds
        .iter()
        .filter(|(_, c)| c.under_old_key > 0)
        .map(|(kind, c)| match kind {
            SealedKind::Flows => format!(
                "{} {} (they expire within {} minutes)",
                c.under_old_key,
                kind.name(),
                engine::flows::flow::DEFAULT_FLOW_TTL.as_secs().div_ceil(60)
            ),
            _ => format!("{} {}", c.under_old_key, kind.name()),
        })
        .collect();
    println!(
        "Keep the older key(s) {old}: still sealed with them: {}. These were written during the re-seal by servers that have not read the new key yet; run `stepgate key reseal` again in a minute (or after restarting servers whose keys come from the environment).",
        still.join(", ")
    );
}

async fn drop_old(config: &Target) -> CliResult {
    let Some(path) = config.keys.file() else {
        let engine = open_engine(config).await?;
        let check = tell_what_old_keys_seal(&engine).await?;
        if check.old_keys_unused() {
            println!("The keys come from the environment: keep only the first key of STEPGATE_KEYS (id {}) on every instance, and restart.", id_of(config.keys.newest()));
        }
        return Ok(());
    };
    let engine = open_engine(config).await?;
    let check = engine
        .sealed_with_old_keys()
        .await
        .map_err(|code| format!("checking what the old keys still seal failed: {code}"))?;
    let current = Keyring::read_file(path)?;
    if current.keys().len() == 1 {
        println!(
            "{} holds one key ({}): nothing to drop.",
            path.display(),
            id_of(current.newest())
        );
        return Ok(());
    }
    if current.newest() != engine.keyring().newest() {
        return Err(format!(
            "{} changed meanwhile (its first key is no longer {}): run the command again",
            path.display(),
            id_of(engine.keyring().newest())
        )
        .into());
    }
    if !check.old_keys_unused() {
        print_verdict(&engine, &check);
        return Err("nothing was dropped: the older keys are still needed".into());
    }
    current.newest_only().write_file()?;
    println!(
        "Dropped {} from {}; it holds {} alone. Running servers keep the dropped keys in memory until they restart.",
        ids(&Keyring::new(current.keys()[1..].to_vec()).expect("more than one key")),
        path.display(),
        id_of(current.newest())
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `key rotate` on a key file, then `key drop-old`: the file ends with the new key alone,
    /// which opens everything; `drop-old` refuses while an old key is still needed.
    #[tokio::test]
    async fn a_rotation_through_the_key_file_ends_with_the_new_key_alone() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("config").join("secret.key");
        let first = Keyring::load_or_create_file(&key_file).unwrap();
        let target = Target {
            database_url: engine::store::db::sqlite_url_in(dir.path()),
            redis_url: None,
            redis_prefix: engine::DEFAULT_REDIS_PREFIX.into(),
            totp_provider_url: "http://127.0.0.1:3100".into(),
            keys: first.clone(),
        };
        let before = open_engine(&target).await.unwrap();
        let user = before
            .register(
                "key@example.org",
                "password-1-quiet-harbor",
                "password-1-quiet-harbor",
            )
            .await
            .unwrap();
        before
            .two_factor()
            .begin_app_enrollment(user.id, "key@example.org", before.now())
            .await
            .unwrap();
        before.pool().close().await;

        // Dropping before any rotation: one key, nothing to drop.
        run_on(&target, KeyCommand::DropOld).await.unwrap();
        assert_eq!(Keyring::read_file(&key_file).unwrap().keys(), first.keys());

        run_on(&target, KeyCommand::Rotate { batch: 1 })
            .await
            .unwrap();
        let rotated = Keyring::read_file(&key_file).unwrap();
        assert_eq!(rotated.keys().len(), 2);
        assert_eq!(
            &rotated.keys()[1],
            first.newest(),
            "the old key kept after the new"
        );

        // A value sealed with the old key after the re-seal (a server that had not read the
        // new key yet): drop-old refuses, a second re-seal takes it, then drop-old drops.
        let old_first = Keyring::new(vec![first.newest().clone(), rotated.newest().clone()]);
        let late = open_engine(&target.with_keys(old_first.unwrap()))
            .await
            .unwrap();
        late.two_factor()
            .begin_app_enrollment(user.id, "key@example.org", late.now())
            .await
            .unwrap();
        late.pool().close().await;
        let refused = run_on(&target.with_keys(rotated.clone()), KeyCommand::DropOld)
            .await
            .unwrap_err()
            .to_string();
        assert!(refused.contains("still needed"), "{refused}");
        assert_eq!(Keyring::read_file(&key_file).unwrap(), rotated);
        run_on(
            &target.with_keys(rotated.clone()),
            KeyCommand::Reseal { batch: 10 },
        )
        .await
        .unwrap();
        run_on(&target.with_keys(rotated.clone()), KeyCommand::DropOld)
            .await
            .unwrap();
        let last = Keyring::read_file(&key_file).unwrap();
        assert_eq!(last.keys(), &rotated.keys()[..1]);

        let after = open_engine(&target.with_keys(last)).await.unwrap();
        assert_eq!(
            after.sealed_with_old_keys().await.unwrap().total(),
            Default::default(),
            "the new key alone opens everything"
        );
    }
}
