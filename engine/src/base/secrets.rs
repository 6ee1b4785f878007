//! The server's secret key (32 bytes) for encrypting secrets at rest: from `STEPGATE_KEY`
//! (64 hex digits) or from the key file in the data folder, created on first run.

use std::io::Write;
use std::path::Path;

use rand::RngCore;

pub const KEY_FILE_NAME: &str = "secret.key";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("STEPGATE_KEY must be 64 hex digits")]
    BadEnvKey,
    #[error("{0} must hold 64 hex digits")]
    BadKeyFile(String),
    #[error("key file: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Clone)]
pub struct SecretKey(pub(crate) [u8; 32]);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

fn parse_hex_key(text: &str) -> Option<[u8; 32]> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut key).ok()?;
    Some(key)
}

impl SecretKey {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
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

    /// The key in the file at `path` (`STEPGATE_KEY_FILE`), which is created with mode 0600
    /// when it does not exist.
    pub fn load_or_create_file(path: &Path) -> Result<SecretKey, KeyError> {
        let path = path.to_path_buf();
        match std::fs::read_to_string(&path) {
            Ok(text) => parse_hex_key(&text)
                .map(SecretKey)
                .ok_or_else(|| KeyError::BadKeyFile(path.display().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut key);
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(&path)?;
                writeln!(file, "{}", hex::encode(key))?;
                Ok(SecretKey(key))
            }
            Err(e) => Err(e.into()),
        }
    }
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
}
