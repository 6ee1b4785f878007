//! Encryption of secrets at rest: AES-256-GCM with a random 96-bit nonce, and associated data
//! that binds each ciphertext to its row (a TOTP secret copied onto another user's row does not
//! decrypt there — Authelia's per-row AAD).
//!
//! A sealed value is `"SG" 0x01 ‖ key id (4 bytes) ‖ nonce ‖ ciphertext ‖ tag`: the id names the
//! key of the [`Keyring`] that opens it, so a ring of several keys (a rotation under way) opens
//! each value with one attempt. Values sealed before the ring (`nonce ‖ ciphertext ‖ tag`, no
//! id) still open: every key is tried.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;

use crate::base::secrets::{Keyring, SecretKey, KEY_ID_BYTES};

const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;
/// What a value sealed with a key id starts with (format 1).
const MAGIC: &[u8; 3] = b"SG\x01";
/// Bytes before the nonce: the magic and the key id.
pub const HEADER_BYTES: usize = MAGIC.len() + KEY_ID_BYTES;

/// How often a value naming a key the ring lacks may make it read its key file again (a flood
/// of forged values must not turn into a flood of file reads).
const REREAD_AT_MOST_EVERY: Duration = Duration::from_secs(5);
/// How often sealing looks whether the key file changed, so a running server starts sealing
/// with a key `stepgate key rotate` put first without a restart.
const LOOK_AT_FILE_EVERY: Duration = Duration::from_secs(30);

/// Whether `a` and `b` are equal, compared without an early exit (how many leading bytes
/// match is not told by the time taken): for codes, digests and tags a caller sent.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the secret could not be decrypted (wrong key, or not this row's)")]
pub struct DecryptError;

/// The ring's keys, each with its cipher.
struct Ring {
    keyring: Keyring,
    ciphers: Vec<([u8; KEY_ID_BYTES], Aes256Gcm)>,
}

enum Opened {
    Plain(Vec<u8>),
    /// The value names a key this ring lacks.
    UnknownKey([u8; KEY_ID_BYTES]),
    Refused,
}

fn decrypt(cipher: &Aes256Gcm, sealed: &[u8], associated_data: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_BYTES + TAG_BYTES {
        return None;
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: associated_data,
            },
        )
        .ok()
}

impl Ring {
    fn new(keyring: Keyring) -> Ring {
        let ciphers = keyring
            .keys()
            .iter()
            .map(|key| (key.id(), Aes256Gcm::new(key.as_bytes().into())))
            .collect();
        Ring { keyring, ciphers }
    }

    fn open(&self, sealed: &[u8], associated_data: &[u8]) -> Opened {
        let mut unknown = None;
        if sealed.len() >= HEADER_BYTES + NONCE_BYTES + TAG_BYTES && sealed.starts_with(MAGIC) {
            let id: [u8; KEY_ID_BYTES] = sealed[MAGIC.len()..HEADER_BYTES]
                .try_into()
                .expect("the header holds a whole id");
            let mut named = self.ciphers.iter().filter(|(key_id, _)| *key_id == id);
            let mut any = false;
            for (_, cipher) in named.by_ref() {
                any = true;
                if let Some(plain) = decrypt(cipher, &sealed[HEADER_BYTES..], associated_data) {
                    return Opened::Plain(plain);
                }
            }
            if !any {
                unknown = Some(id);
            }
        }
        // The old format (no id), or by a 2^-24 chance an old value starting like the new:
        // every key is tried on the whole value.
        for (_, cipher) in &self.ciphers {
            if let Some(plain) = decrypt(cipher, sealed, associated_data) {
                return Opened::Plain(plain);
            }
        }
        match unknown {
            Some(id) => Opened::UnknownKey(id),
            None => Opened::Refused,
        }
    }

    fn prefix(&self) -> Vec<u8> {
        [MAGIC.as_slice(), &self.ciphers[0].0].concat()
    }
}

/// The key file behind a ring, and when it was last read or looked at.
struct KeyFile {
    path: PathBuf,
    last_reread: Mutex<Option<Instant>>,
    /// When the file's modification time was last looked at, and what it was then.
    last_look: Mutex<(Instant, Option<SystemTime>)>,
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Seals with the newest key of its [`Keyring`] and opens with whichever key a value names.
/// Cheap to clone: the clones share one ring, which a key file read again replaces for all.
#[derive(Clone)]
pub struct SecretBox {
    ring: Arc<RwLock<Arc<Ring>>>,
    file: Option<Arc<KeyFile>>,
}

impl SecretBox {
    /// A box with one key.
    pub fn new(key: &SecretKey) -> Self {
        Self::with_keyring(Keyring::from(key.clone()))
    }

    /// A box with every key of `keyring`; when it came from a key file, the file is read again
    /// as [`SecretBox::open`] and [`SecretBox::seal`] describe.
    pub fn with_keyring(keyring: Keyring) -> Self {
        let file = keyring.file().map(|path| {
            Arc::new(KeyFile {
                path: path.to_path_buf(),
                last_reread: Mutex::new(None),
                last_look: Mutex::new((Instant::now(), modified(path))),
            })
        });
        Self {
            ring: Arc::new(RwLock::new(Arc::new(Ring::new(keyring)))),
            file,
        }
    }

    fn current(&self) -> Arc<Ring> {
        self.ring.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The keys this box holds now, newest first.
    pub fn keyring(&self) -> Keyring {
        self.current().keyring.clone()
    }

    /// Whether the keys came from a key file (and can be read again without a restart).
    pub fn from_key_file(&self) -> bool {
        self.file.is_some()
    }

    /// Reads the key file again and puts its keys first; keys this box held that the file no
    /// longer lists are kept after them (a running server never loses a key it could open
    /// with). Whether it could.
    fn reread(&self, file: &KeyFile) -> bool {
        let read = match Keyring::read_file(&file.path) {
            Ok(read) => read,
            Err(e) => {
                tracing::error!(error = %e, "the key file could not be read again");
                return false;
            }
        };
        let held = self.current();
        let merged = read.followed_by(held.keyring.keys());
        if merged == held.keyring {
            return true;
        }
        tracing::info!(
            keys = merged.keys().len(),
            "the key file was read again: new values are sealed with its first key"
        );
        *self.ring.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Ring::new(merged));
        true
    }

    /// Seals `plaintext` with the newest key: `"SG" 0x01 ‖ key id ‖ nonce ‖ ciphertext ‖ tag`.
    pub fn seal(&self, plaintext: &[u8], associated_data: &[u8]) -> Vec<u8> {
        self.look_at_key_file();
        let ring = self.current();
        let (id, cipher) = &ring.ciphers[0];
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: associated_data,
                },
            )
            .expect("AES-GCM encryption of a short secret cannot fail");
        [MAGIC.as_slice(), id, &nonce, &sealed].concat()
    }

    /// At most every [`LOOK_AT_FILE_EVERY`]: when the key file changed since, reads it again.
    fn look_at_key_file(&self) {
        let Some(file) = &self.file else { return };
        // Another caller looking already is enough.
        let Ok(mut look) = file.last_look.try_lock() else {
            return;
        };
        if look.0.elapsed() < LOOK_AT_FILE_EVERY {
            return;
        }
        let now_modified = modified(&file.path);
        let changed = now_modified != look.1;
        *look = (Instant::now(), now_modified);
        drop(look);
        if changed {
            self.reread(file);
        }
    }

    /// Opens a value sealed by any key of the ring (or by a key the key file gained since it
    /// was read: a value naming a key the ring lacks makes it read the file again, at most
    /// every few seconds).
    pub fn open(&self, sealed: &[u8], associated_data: &[u8]) -> Result<Vec<u8>, DecryptError> {
        let id = match self.current().open(sealed, associated_data) {
            Opened::Plain(plain) => return Ok(plain),
            Opened::Refused => return Err(DecryptError),
            Opened::UnknownKey(id) => id,
        };
        let Some(file) = &self.file else {
            tracing::error!(
                key_id = %hex::encode(id),
                "a value is sealed with a key this server lacks; its keys come from the environment and are read at start only: add that key to STEPGATE_KEYS (after the newest) and restart"
            );
            return Err(DecryptError);
        };
        let may_reread = {
            let mut last = file.last_reread.lock().unwrap_or_else(|e| e.into_inner());
            let may = last.is_none_or(|at| at.elapsed() >= REREAD_AT_MOST_EVERY);
            if may {
                *last = Some(Instant::now());
            }
            may
        };
        if !may_reread || !self.reread(file) {
            return Err(DecryptError);
        }
        match self.current().open(sealed, associated_data) {
            Opened::Plain(plain) => Ok(plain),
            Opened::UnknownKey(id) => {
                tracing::error!(
                    key_id = %hex::encode(id),
                    file = %file.path.display(),
                    "a value is sealed with a key the key file does not hold (was a key dropped too early, or is another instance's key file newer?)"
                );
                Err(DecryptError)
            }
            Opened::Refused => Err(DecryptError),
        }
    }

    /// `plaintext` sealed as before key ids (`nonce ‖ ciphertext ‖ tag`), with the newest key:
    /// what every database holds from before the keyring.
    #[cfg(test)]
    pub(crate) fn seal_in_old_format(&self, plaintext: &[u8], associated_data: &[u8]) -> Vec<u8> {
        self.seal(plaintext, associated_data)[HEADER_BYTES..].to_vec()
    }

    /// What a value sealed with the newest key starts with.
    pub fn newest_prefix(&self) -> Vec<u8> {
        self.current().prefix()
    }

    /// Whether `sealed` names the newest key (it needs no re-sealing).
    pub fn is_under_newest(&self, sealed: &[u8]) -> bool {
        sealed.starts_with(&self.newest_prefix())
    }

    /// `sealed` opened and sealed again with the newest key; `None` when it is under the
    /// newest key already.
    pub fn reseal(
        &self,
        sealed: &[u8],
        associated_data: &[u8],
    ) -> Result<Option<Vec<u8>>, DecryptError> {
        if self.is_under_newest(sealed) {
            return Ok(None);
        }
        let plain = self.open(sealed, associated_data)?;
        Ok(Some(self.seal(&plain, associated_data)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SecretKey {
        SecretKey([byte; 32])
    }

    fn ring(bytes: &[u8]) -> SecretBox {
        SecretBox::with_keyring(Keyring::new(bytes.iter().map(|b| key(*b)).collect()).unwrap())
    }

    /// What the box sealed before the keyring: `nonce ‖ ciphertext ‖ tag`, no key id.
    fn seal_old_format(key: &SecretKey, plaintext: &[u8], associated_data: &[u8]) -> Vec<u8> {
        let cipher = Aes256Gcm::new(key.as_bytes().into());
        let nonce = [5u8; NONCE_BYTES];
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: associated_data,
                },
            )
            .unwrap();
        [nonce.as_slice(), &sealed].concat()
    }

    #[test]
    fn sealed_secrets_open_with_the_same_key_and_row_only() {
        let sb = SecretBox::new(&key(1));
        let sealed = sb.seal(b"JBSWY3DPEHPK3PXP", b"totp:user:1");
        assert_eq!(
            sb.open(&sealed, b"totp:user:1").unwrap(),
            b"JBSWY3DPEHPK3PXP"
        );
        assert_eq!(sb.open(&sealed, b"totp:user:2"), Err(DecryptError));
        assert_eq!(
            SecretBox::new(&key(2)).open(&sealed, b"totp:user:1"),
            Err(DecryptError)
        );
    }

    #[test]
    fn the_ciphertext_holds_no_plaintext_and_differs_each_time() {
        let sb = SecretBox::new(&key(1));
        let a = sb.seal(b"JBSWY3DPEHPK3PXP", b"row");
        let b = sb.seal(b"JBSWY3DPEHPK3PXP", b"row");
        assert_ne!(a, b);
        assert!(!a.windows(16).any(|w| w == b"JBSWY3DPEHPK3PXP"));
    }

    #[test]
    fn tampering_is_detected() {
        let sb = SecretBox::new(&key(1));
        let mut sealed = sb.seal(b"secret", b"row");
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert_eq!(sb.open(&sealed, b"row"), Err(DecryptError));
        assert_eq!(sb.open(&[1, 2, 3], b"row"), Err(DecryptError));
    }

    #[test]
    fn a_ring_seals_with_its_newest_key_and_opens_with_any() {
        let old = SecretBox::new(&key(1));
        let by_old = old.seal(b"seed", b"row");
        let rotated = ring(&[2, 1]);
        assert_eq!(rotated.open(&by_old, b"row").unwrap(), b"seed");
        let by_new = rotated.seal(b"seed", b"row");
        assert!(by_new.starts_with(MAGIC));
        assert_eq!(&by_new[MAGIC.len()..HEADER_BYTES], key(2).id());
        assert!(rotated.is_under_newest(&by_new) && !rotated.is_under_newest(&by_old));
        assert_eq!(old.open(&by_new, b"row"), Err(DecryptError));
        assert_eq!(ring(&[2]).open(&by_new, b"row").unwrap(), b"seed");

        let resealed = rotated.reseal(&by_old, b"row").unwrap().unwrap();
        assert!(rotated.is_under_newest(&resealed));
        assert_eq!(ring(&[2]).open(&resealed, b"row").unwrap(), b"seed");
        assert_eq!(rotated.reseal(&resealed, b"row"), Ok(None));
        assert_eq!(rotated.reseal(&by_old, b"another row"), Err(DecryptError));
    }

    #[test]
    fn a_value_in_the_format_before_key_ids_opens_with_any_key_of_the_ring() {
        let sealed = seal_old_format(&key(1), b"seed", b"row");
        assert_eq!(ring(&[3, 2, 1]).open(&sealed, b"row").unwrap(), b"seed");
        assert_eq!(ring(&[3, 2]).open(&sealed, b"row"), Err(DecryptError));
        let resealed = ring(&[3, 1]).reseal(&sealed, b"row").unwrap().unwrap();
        assert_eq!(ring(&[3]).open(&resealed, b"row").unwrap(), b"seed");

        // An old value whose random nonce starts like the new format still opens.
        let mut lookalike = seal_old_format(&key(1), b"seed", b"row");
        let cipher = Aes256Gcm::new(key(1).as_bytes().into());
        let mut nonce = [7u8; NONCE_BYTES];
        nonce[..MAGIC.len()].copy_from_slice(MAGIC);
        let body = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: b"seed",
                    aad: b"row",
                },
            )
            .unwrap();
        lookalike.clear();
        lookalike.extend_from_slice(&nonce);
        lookalike.extend_from_slice(&body);
        assert_eq!(ring(&[3, 1]).open(&lookalike, b"row").unwrap(), b"seed");
    }

    #[test]
    fn a_value_naming_a_key_the_ring_lacks_makes_it_read_its_key_file_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let running = SecretBox::with_keyring(Keyring::load_or_create_file(&path).unwrap());
        let before = running.seal(b"seed", b"row");

        // `stepgate key rotate` elsewhere: a new key first in the file, a value sealed with it.
        let rotated = Keyring::read_file(&path).unwrap().with_new_key();
        rotated.write_file().unwrap();
        let by_new = SecretBox::with_keyring(rotated.clone()).seal(b"seed", b"row");

        assert_eq!(running.open(&by_new, b"row").unwrap(), b"seed");
        assert_eq!(running.keyring().keys(), rotated.keys());
        assert!(running.is_under_newest(&running.seal(b"x", b"row")));
        assert_eq!(running.open(&before, b"row").unwrap(), b"seed");

        // A key dropped from the file early stays in a running server's ring.
        rotated.newest_only().write_file().unwrap();
        *running.file.as_ref().unwrap().last_reread.lock().unwrap() = None;
        let by_another = SecretBox::new(&key(9)).seal(b"seed", b"row");
        assert_eq!(running.open(&by_another, b"row"), Err(DecryptError));
        assert_eq!(running.open(&before, b"row").unwrap(), b"seed");

        // Keys from the environment are not read again.
        let given = SecretBox::new(&key(1));
        assert_eq!(given.open(&by_new, b"row"), Err(DecryptError));
        assert!(!given.from_key_file());
    }
}
