//! The server's secret keys (32 bytes each) for encrypting secrets at rest. A [`Keyring`] holds
//! one or more, newest first: the newest seals, every one opens (so a rotation is: put a new key
//! first, re-seal, then drop the old). Keys come from the environment (`STEPGATE_KEYS`,
//! `STEPGATE_KEY`) or from a key file, one hex key per line, newest first, `#` comments allowed,
//! created with mode 0600 and one key when missing.

use std::io::Write;
use std::path::{Path, PathBuf};

use rand::RngCore;

pub const KEY_FILE_NAME: &str = "secret.key";

/// Bytes of a key id: what a sealed value carries to name the key that opens it.
pub const KEY_ID_BYTES: usize = 4;

/// What a key's id is derived with.
const KEY_ID_LABEL: &str = "stepgate key id v1";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("STEPGATE_KEY must be 64 hex digits")]
    BadEnvKey,
    #[error("{what}: key {position} is not 64 hex digits")]
    BadKeyInList { what: String, position: usize },
    #[error("{0} must hold 64 hex digits")]
    BadKeyFile(String),
    #[error("{0} holds no key")]
    NoKey(String),
    #[error("key file: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(pub(crate) [u8; 32]);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey(id {})", hex::encode(self.id()))
    }
}

/// A key's id in hex, as commands show it (it tells nothing about the key).
pub fn hex_id(key: &SecretKey) -> String {
    hex::encode(key.id())
}

fn parse_hex_key(text: &str) -> Option<[u8; 32]> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut key).ok()?;
    Some(key)
}

impl SecretKey {
    /// A new random key.
    pub fn generate() -> SecretKey {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        SecretKey(key)
    }

    /// The key from 64 hex digits.
    pub fn from_hex(text: &str) -> Option<SecretKey> {
        parse_hex_key(text).map(SecretKey)
    }

    /// The key as 64 hex digits (for a key file, or to print for the environment).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The id sealed values carry to name this key: derived from it (so it needs no
    /// bookkeeping and tells nothing about the key), short (a ring holds a handful of keys; a
    /// clash only costs a second decryption attempt).
    pub fn id(&self) -> [u8; KEY_ID_BYTES] {
        let derived = self.derive(KEY_ID_LABEL);
        let mut id = [0u8; KEY_ID_BYTES];
        id.copy_from_slice(&derived[..KEY_ID_BYTES]);
        id
    }

    /// A key for one purpose alone, derived from this one (HMAC-SHA256 keyed with it over
    /// `label`, HKDF's expand step with one block): what it signs, the master key's other uses
    /// can neither sign nor open, and it changes when the master key does.
    pub fn derive(&self, label: &str) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        let mut mac =
            Hmac::<sha2::Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(label.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// `env_key` (the value of `STEPGATE_KEY`) wins; otherwise the key file in `data_dir`,
    /// which is created with mode 0600 when it does not exist.
    pub fn load_or_create(env_key: Option<&str>, data_dir: &Path) -> Result<SecretKey, KeyError> {
        if let Some(text) = env_key.filter(|t| !t.trim().is_empty()) {
            return parse_hex_key(text)
                .map(SecretKey)
                .ok_or(KeyError::BadEnvKey);
        }
        Self::load_or_create_file(&data_dir.join(KEY_FILE_NAME))
    }

    /// The newest key in the file at `path`, which is created with mode 0600 when it does not
    /// exist.
    pub fn load_or_create_file(path: &Path) -> Result<SecretKey, KeyError> {
        Ok(Keyring::load_or_create_file(path)?.newest().clone())
    }
}

/// One or more keys, newest first (never empty): the newest seals, each opens what it sealed.
/// `file`: where they were read from, so a running server can read them again when it meets a
/// value sealed with a key it lacks (`None`: the environment or code gave them, and only a
/// restart changes them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyring {
    keys: Vec<SecretKey>,
    file: Option<PathBuf>,
}

impl From<SecretKey> for Keyring {
    fn from(key: SecretKey) -> Keyring {
        Keyring {
            keys: vec![key],
            file: None,
        }
    }
}

impl Keyring {
    /// `keys`, newest first, a repeated key kept once; `None` when there is none.
    pub fn new(keys: Vec<SecretKey>) -> Option<Keyring> {
        let mut unique: Vec<SecretKey> = Vec::with_capacity(keys.len());
        for key in keys {
            if !unique.contains(&key) {
                unique.push(key);
            }
        }
        (!unique.is_empty()).then_some(Keyring {
            keys: unique,
            file: None,
        })
    }

    /// Keys written as hex, separated by commas, spaces or new lines (`STEPGATE_KEYS`); `what`
    /// names the source in errors.
    pub fn parse_list(text: &str, what: &str) -> Result<Keyring, KeyError> {
        let keys = text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|part| !part.is_empty())
            .enumerate()
            .map(|(n, part)| {
                SecretKey::from_hex(part).ok_or_else(|| KeyError::BadKeyInList {
                    what: what.into(),
                    position: n + 1,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Keyring::new(keys).ok_or_else(|| KeyError::NoKey(what.into()))
    }

    /// The keys in the key file at `path`: one per line, newest first; blank lines and `#`
    /// comments (whole lines or after a key) are skipped.
    pub fn read_file(path: &Path) -> Result<Keyring, KeyError> {
        let text = std::fs::read_to_string(path)?;
        let shown = path.display().to_string();
        let keys = text
            .lines()
            .map(|line| line.split('#').next().unwrap_or_default().trim())
            .filter(|line| !line.is_empty())
            .map(|line| {
                SecretKey::from_hex(line).ok_or_else(|| KeyError::BadKeyFile(shown.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut ring = Keyring::new(keys).ok_or(KeyError::NoKey(shown))?;
        ring.file = Some(path.to_path_buf());
        Ok(ring)
    }

    /// [`Keyring::read_file`], or when there is no file yet, a new one with one new key (mode
    /// 0600, its folder made for its owner only when missing).
    pub fn load_or_create_file(path: &Path) -> Result<Keyring, KeyError> {
        match Self::read_file(path) {
            Err(KeyError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    let mut builder = std::fs::DirBuilder::new();
                    builder.recursive(true);
                    #[cfg(unix)]
                    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
                    builder.create(parent)?;
                }
                let mut ring = Keyring::from(SecretKey::generate());
                ring.file = Some(path.to_path_buf());
                // Written whole under another name, then linked into place: a server starting
                // at the same moment reads a whole key or none, and of two makers one wins.
                let temporary = ring.write_temporary()?;
                let linked = std::fs::hard_link(&temporary, path);
                let _ = std::fs::remove_file(&temporary);
                match linked {
                    Ok(()) => Ok(ring),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Self::read_file(path)
                    }
                    Err(e) => Err(e.into()),
                }
            }
            other => other,
        }
    }

    /// The key new values are sealed with.
    pub fn newest(&self) -> &SecretKey {
        &self.keys[0]
    }

    /// Every key, newest first.
    pub fn keys(&self) -> &[SecretKey] {
        &self.keys
    }

    /// The key file the keys were read from, if they were.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The keys read again from their file (`None`: they did not come from one).
    pub fn reread(&self) -> Option<Result<Keyring, KeyError>> {
        self.file.as_deref().map(Keyring::read_file)
    }

    /// This ring with a new random key first (the old ones kept after it).
    pub fn with_new_key(&self) -> Keyring {
        let mut keys = vec![SecretKey::generate()];
        keys.extend(self.keys.iter().cloned());
        Keyring {
            keys,
            file: self.file.clone(),
        }
    }

    /// This ring with `others` after its own keys (those it holds already left out).
    pub fn followed_by(&self, others: &[SecretKey]) -> Keyring {
        let mut keys = self.keys.clone();
        for key in others {
            if !keys.contains(key) {
                keys.push(key.clone());
            }
        }
        Keyring {
            keys,
            file: self.file.clone(),
        }
    }

    /// This ring with its newest key alone.
    pub fn newest_only(&self) -> Keyring {
        Keyring {
            keys: vec![self.newest().clone()],
            file: self.file.clone(),
        }
    }

    /// Writes the ring to its key file, replacing it at once (a temporary file in the same
    /// folder, synced, then renamed over it): a crash leaves the old file or the new, never half
    /// of one, and never a ring without the key that sealed the data.
    pub fn write_file(&self) -> Result<(), KeyError> {
        let path = self.file_path()?;
        let temporary = self.write_temporary()?;
        if let Err(e) = std::fs::rename(&temporary, path) {
            let _ = std::fs::remove_file(&temporary);
            return Err(e.into());
        }
        // The rename itself lasts once the folder is synced too.
        if let Ok(folder) = std::fs::File::open(folder_of(path)) {
            let _ = folder.sync_all();
        }
        Ok(())
    }

    fn file_path(&self) -> Result<&Path, KeyError> {
        self.file
            .as_deref()
            .ok_or_else(|| KeyError::NoKey("a keyring without a key file".into()))
    }

    /// The ring written (mode 0600, synced) to a new file next to its key file.
    fn write_temporary(&self) -> Result<PathBuf, KeyError> {
        let path = self.file_path()?;
        let mut text = String::from(
            "# Stepgate's keys, newest first: the first seals, every one opens. Drop a key only\n\
             # when `stepgate key reseal` says nothing uses it any more.\n",
        );
        for key in &self.keys {
            text.push_str(&key.to_hex());
            text.push('\n');
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| KEY_FILE_NAME.into());
        let temporary = folder_of(path).join(format!(
            ".{name}.{}.{}.tmp",
            std::process::id(),
            hex::encode(SecretKey::generate().id())
        ));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let written = (|| {
            let mut file = options.open(&temporary)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temporary);
            return Err(e.into());
        }
        Ok(temporary)
    }
}

/// The folder a file is in (`.` for a bare name).
fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_file_is_created_once_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = SecretKey::load_or_create(None, dir.path()).unwrap();
        let again = SecretKey::load_or_create(None, dir.path()).unwrap();
        assert_eq!(first.0, again.0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE_NAME))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn derived_keys_differ_by_label_and_by_master_key() {
        let key = SecretKey([1; 32]);
        assert_eq!(key.derive("a"), key.derive("a"));
        assert_ne!(key.derive("a"), key.derive("b"));
        assert_ne!(key.derive("a"), SecretKey([2; 32]).derive("a"));
        assert_ne!(&key.derive("a"), key.as_bytes());
        assert_ne!(key.id(), SecretKey([2; 32]).id());
        assert_ne!(key.id()[..], key.as_bytes()[..KEY_ID_BYTES]);
    }

    #[test]
    fn the_environment_key_wins_and_must_be_well_formed() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::load_or_create(Some(&"ab".repeat(32)), dir.path()).unwrap();
        assert_eq!(key.0, [0xab; 32]);
        assert!(!dir.path().join(KEY_FILE_NAME).exists());
        assert!(matches!(
            SecretKey::load_or_create(Some("short"), dir.path()),
            Err(KeyError::BadEnvKey)
        ));
    }

    #[test]
    fn a_key_list_is_newest_first_and_every_entry_must_be_a_key() {
        let text = format!(
            "{}, {}\n{}",
            "aa".repeat(32),
            "bb".repeat(32),
            "aa".repeat(32)
        );
        let ring = Keyring::parse_list(&text, "STEPGATE_KEYS").unwrap();
        assert_eq!(
            ring.keys(),
            [SecretKey([0xaa; 32]), SecretKey([0xbb; 32])],
            "newest first, a repeated key kept once"
        );
        assert_eq!(ring.file(), None);
        let bad = Keyring::parse_list(&format!("{} nope", "aa".repeat(32)), "STEPGATE_KEYS")
            .unwrap_err()
            .to_string();
        assert_eq!(bad, "STEPGATE_KEYS: key 2 is not 64 hex digits");
        assert!(matches!(
            Keyring::parse_list(" , ", "STEPGATE_KEYS"),
            Err(KeyError::NoKey(_))
        ));
    }

    #[test]
    fn a_key_file_holds_several_keys_with_comments_and_is_rewritten_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conf").join("secret.key");
        let made = Keyring::load_or_create_file(&path).unwrap();
        assert_eq!(made.keys().len(), 1);
        assert_eq!(made.file(), Some(path.as_path()));

        let rotated = made.with_new_key();
        rotated.write_file().unwrap();
        let read = Keyring::read_file(&path).unwrap();
        assert_eq!(read, rotated);
        assert_eq!(
            read.keys()[1],
            *made.newest(),
            "the old key is kept after the new"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(path.parent().unwrap()), 0o700);
        }
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left: {leftovers:?}");

        std::fs::write(
            &path,
            format!(
                "# new\n{}  # since May\n\n{}\n",
                "cc".repeat(32),
                "dd".repeat(32)
            ),
        )
        .unwrap();
        let commented = Keyring::read_file(&path).unwrap();
        assert_eq!(
            commented.keys(),
            [SecretKey([0xcc; 32]), SecretKey([0xdd; 32])]
        );
        std::fs::write(&path, "# nothing\n").unwrap();
        assert!(matches!(Keyring::read_file(&path), Err(KeyError::NoKey(_))));
        std::fs::write(&path, "not a key\n").unwrap();
        assert!(matches!(
            Keyring::read_file(&path),
            Err(KeyError::BadKeyFile(_))
        ));
    }
}
