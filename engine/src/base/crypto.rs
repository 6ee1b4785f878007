//! Encryption of secrets at rest: AES-256-GCM with a random 96-bit nonce, and associated data
//! that binds each ciphertext to its row (a TOTP secret copied onto another user's row does not
//! decrypt there — Authelia's per-row AAD).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;

use crate::base::secrets::SecretKey;

const NONCE_BYTES: usize = 12;

/// Whether `a` and `b` are equal, compared without an early exit (how many leading bytes
/// match is not told by the time taken): for codes, digests and tags a caller sent.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the secret could not be decrypted (wrong key, or not this row's)")]
pub struct DecryptError;

#[derive(Clone)]
pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl SecretBox {
    pub fn new(key: &SecretKey) -> Self {
        Self {
            cipher: Aes256Gcm::new(key.as_bytes().into()),
        }
    }

    /// `nonce ‖ ciphertext ‖ tag`.
    pub fn seal(&self, plaintext: &[u8], associated_data: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: associated_data,
                },
            )
            .expect("AES-GCM encryption of a short secret cannot fail");
        [nonce.as_slice(), &sealed].concat()
    }

    pub fn open(&self, sealed: &[u8], associated_data: &[u8]) -> Result<Vec<u8>, DecryptError> {
        if sealed.len() < NONCE_BYTES {
            return Err(DecryptError);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: associated_data,
                },
            )
            .map_err(|_| DecryptError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SecretKey {
        SecretKey([byte; 32])
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
}
