//! A software WebAuthn authenticator for tests: it answers the options webauthn-rs sends to the
//! browser with the JSON a Chromium page's `PublicKeyCredential.toJSON()` would post back, so
//! passkey ceremonies can be driven end to end without a browser.
//!
//! It plays a platform authenticator holding resident ES256 (P-256) credentials with "none"
//! attestation. Its CBOR is written by hand: it only ever needs the few shapes below, and a
//! hand-made encoder keeps the bytes webauthn-rs parses under the test's control.

use std::fmt;

use base64::alphabet::URL_SAFE;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Authenticator-data flag bits (WebAuthn §6.1).
const FLAG_UP: u8 = 0x01;
const FLAG_UV: u8 = 0x04;
const FLAG_BE: u8 = 0x08;
const FLAG_BS: u8 = 0x10;
const FLAG_AT: u8 = 0x40;

/// COSE algorithm ES256 (ECDSA P-256 with SHA-256).
const COSE_ES256: i64 = -7;

/// The SubjectPublicKeyInfo DER prefix of an uncompressed P-256 key (id-ecPublicKey,
/// prime256v1, BIT STRING of 66 bytes): Chromium's `response.publicKey` is this plus the point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Reads the ids servers send: base64url, with or without padding.
const URL_SAFE_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One resident credential the authenticator holds.
#[derive(Clone)]
struct HeldCredential {
    id: Vec<u8>,
    key: SigningKey,
    user_handle: Vec<u8>,
    counter: u32,
    /// Backup eligibility is fixed when a credential is made (a synced passkey stays synced), so
    /// assertions repeat what the attestation said rather than follow `SoftAuthenticator::backup`.
    backup: bool,
}

/// A software passkey authenticator bound to one origin (see the module doc).
#[derive(Clone)]
pub struct SoftAuthenticator {
    /// The page's origin as the browser serialises it into clientDataJSON.
    origin: String,
    /// The RP id: the origin's host.
    rp_id: String,
    credentials: Vec<HeldCredential>,
    /// Whether the user passes verification (UV flag, in both `create` and `get`); default true.
    pub user_verified: bool,
    /// Whether new credentials are synced passkeys (BE|BS flags); default false.
    pub backup: bool,
}

impl fmt::Debug for SoftAuthenticator {
    /// Keys stay out of the output; ids and counters are what a failing test wants to see.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftAuthenticator")
            .field("origin", &self.origin)
            .field("rp_id", &self.rp_id)
            .field("credentials", &self.credentials())
            .field("user_verified", &self.user_verified)
            .field("backup", &self.backup)
            .finish()
    }
}

impl SoftAuthenticator {
    /// An authenticator for pages served from `origin` (e.g. "http://localhost:3000"); the RP id
    /// is its host.
    pub fn new(origin: &str) -> Self {
        let url = url::Url::parse(origin).expect("the origin is a URL");
        let rp_id = url.host_str().expect("the origin has a host").to_string();
        SoftAuthenticator {
            // The serialised origin: no path and no trailing slash, as browsers write it.
            origin: url.origin().ascii_serialization(),
            rp_id,
            credentials: Vec::new(),
            user_verified: true,
            backup: false,
        }
    }

    /// Answers creation options (webauthn-rs's `CreationChallengeResponse` JSON,
    /// `{"publicKey": {...}}`) with a new resident ES256 credential, as
    /// `RegisterPublicKeyCredential` JSON. Panics where a browser would reject the call: another
    /// RP id, no ES256 among the offered algorithms, or an excluded credential already held.
    pub fn create(&mut self, options: &Value) -> Value {
        let options = &options["publicKey"];
        let rp_id = options["rp"]["id"].as_str().expect("publicKey.rp.id");
        assert_eq!(rp_id, self.rp_id, "the options are for another RP id");
        let offers_es256 = options["pubKeyCredParams"]
            .as_array()
            .expect("publicKey.pubKeyCredParams")
            .iter()
            .any(|param| param["alg"].as_i64() == Some(COSE_ES256));
        assert!(offers_es256, "the options do not offer ES256");
        for excluded in options["excludeCredentials"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let id = decode(excluded["id"].as_str().expect("excludeCredentials[].id"));
            assert!(
                self.credentials.iter().all(|held| held.id != id),
                "a credential in excludeCredentials is already held (InvalidStateError)"
            );
        }
        let challenge = options["challenge"].as_str().expect("publicKey.challenge");
        let user_handle = decode(options["user"]["id"].as_str().expect("publicKey.user.id"));

        let credential = HeldCredential {
            id: rand::random::<[u8; 32]>().to_vec(),
            key: SigningKey::random(&mut rand::rngs::OsRng),
            user_handle,
            counter: 0,
            backup: self.backup,
        };
        let point = credential.key.verifying_key().to_encoded_point(false);
        let x = point.x().expect("an uncompressed point has x");
        let y = point.y().expect("an uncompressed point has y");

        // COSE_Key (RFC 9053 §7.1.1), in CTAP2 canonical key order: kty EC2, alg ES256, crv P-256.
        let mut cose_key = cbor_head(5, 5);
        for (label, value) in [(1, 2), (3, COSE_ES256), (-1, 1)] {
            cose_key.extend(cbor_int(label));
            cose_key.extend(cbor_int(value));
        }
        cose_key.extend(cbor_int(-2));
        cose_key.extend(cbor_bytes(x));
        cose_key.extend(cbor_int(-3));
        cose_key.extend(cbor_bytes(y));

        // Authenticator data with attested credential data (WebAuthn §6.5.1): an all-zero AAGUID,
        // as "none" attestation allows, and the counter's first value, 0.
        let flags = FLAG_AT | self.presence_flags(credential.backup);
        let mut auth_data = self.auth_data_head(flags, credential.counter);
        auth_data.extend([0u8; 16]);
        let id_len = u16::try_from(credential.id.len()).expect("a credential id fits in u16");
        auth_data.extend(id_len.to_be_bytes());
        auth_data.extend(&credential.id);
        auth_data.extend(&cose_key);

        // {"fmt": "none", "attStmt": {}, "authData": ...}, keys in CTAP2 canonical order.
        let mut attestation_object = cbor_head(5, 3);
        attestation_object.extend(cbor_text("fmt"));
        attestation_object.extend(cbor_text("none"));
        attestation_object.extend(cbor_text("attStmt"));
        attestation_object.extend(cbor_head(5, 0));
        attestation_object.extend(cbor_text("authData"));
        attestation_object.extend(cbor_bytes(&auth_data));

        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend(point.as_bytes());

        // Chromium answers credProps itself when asked: a resident key was made.
        let mut extension_results = json!({});
        if options["extensions"]["credProps"].as_bool() == Some(true) {
            extension_results["credProps"] = json!({ "rk": true });
        }

        let id = encode(&credential.id);
        let answer = json!({
            "id": id,
            "rawId": id,
            "type": "public-key",
            "response": {
                "clientDataJSON": encode(self.client_data("webauthn.create", challenge).as_bytes()),
                "attestationObject": encode(&attestation_object),
                "authenticatorData": encode(&auth_data),
                "publicKey": encode(&spki),
                "publicKeyAlgorithm": COSE_ES256,
                "transports": ["internal"],
            },
            "clientExtensionResults": extension_results,
            "authenticatorAttachment": "platform",
        });
        self.credentials.push(credential);
        answer
    }

    /// Answers request options (webauthn-rs's `RequestChallengeResponse` JSON) with an assertion,
    /// as `PublicKeyCredential` JSON: the first held credential listed in allowCredentials, or,
    /// when that list is empty (discoverable sign-in), the first held credential. Its counter
    /// goes up by one first. None when no held credential matches.
    pub fn get(&mut self, options: &Value) -> Option<Value> {
        let options = &options["publicKey"];
        // rpId may be left out, and then it is the origin's host (WebAuthn §5.1.4.1 step 8).
        if let Some(rp_id) = options["rpId"].as_str() {
            assert_eq!(rp_id, self.rp_id, "the options are for another RP id");
        }
        let challenge = options["challenge"].as_str().expect("publicKey.challenge");
        let allowed: Vec<Vec<u8>> = options["allowCredentials"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|allowed| decode(allowed["id"].as_str().expect("allowCredentials[].id")))
            .collect();
        let index = if allowed.is_empty() {
            if self.credentials.is_empty() {
                return None;
            }
            0
        } else {
            allowed
                .iter()
                .find_map(|id| self.credentials.iter().position(|held| &held.id == id))?
        };

        let client_data = self.client_data("webauthn.get", challenge);
        let flags = self.presence_flags(self.credentials[index].backup);
        let credential = &mut self.credentials[index];
        credential.counter = credential.counter.wrapping_add(1);
        let counter = credential.counter;
        let credential = &self.credentials[index];
        let auth_data = self.auth_data_head(flags, counter);

        // WebAuthn §6.3.3 step 11: the signature covers authData || SHA-256(clientDataJSON).
        let mut signed = auth_data.clone();
        signed.extend(Sha256::digest(client_data.as_bytes()));
        let signature: Signature = credential.key.sign(&signed);

        let id = encode(&credential.id);
        Some(json!({
            "id": id,
            "rawId": id,
            "type": "public-key",
            "response": {
                "clientDataJSON": encode(client_data.as_bytes()),
                "authenticatorData": encode(&auth_data),
                "signature": encode(signature.to_der().as_bytes()),
                "userHandle": encode(&credential.user_handle),
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        }))
    }

    /// The held credentials' ids (base64url) and counters, for tests.
    pub fn credentials(&self) -> Vec<(String, u32)> {
        self.credentials
            .iter()
            .map(|held| (encode(&held.id), held.counter))
            .collect()
    }

    /// The held credentials' private keys (32-byte P-256 scalars, big-endian), so a test can
    /// check that none of them reaches the server's storage.
    pub fn private_keys(&self) -> Vec<Vec<u8>> {
        self.credentials
            .iter()
            .map(|held| held.key.to_bytes().to_vec())
            .collect()
    }

    /// Sets a held credential's counter (to play a cloned authenticator whose counter went back).
    /// Panics when the credential is not held: the test would otherwise check nothing.
    pub fn set_counter(&mut self, credential_id: &str, counter: u32) {
        let id = decode(credential_id);
        let held = self
            .credentials
            .iter_mut()
            .find(|held| held.id == id)
            .unwrap_or_else(|| panic!("no held credential {credential_id}"));
        held.counter = counter;
    }

    /// UP always (the test is the user's touch), UV when the user passes verification, BE|BS for
    /// a synced credential.
    fn presence_flags(&self, backup: bool) -> u8 {
        let mut flags = FLAG_UP;
        if self.user_verified {
            flags |= FLAG_UV;
        }
        if backup {
            flags |= FLAG_BE | FLAG_BS;
        }
        flags
    }

    /// rpIdHash || flags || signCount (big-endian), the 37 bytes every authenticator data starts with.
    fn auth_data_head(&self, flags: u8, counter: u32) -> Vec<u8> {
        let mut data = Sha256::digest(self.rp_id.as_bytes()).to_vec();
        data.push(flags);
        data.extend(counter.to_be_bytes());
        data
    }

    /// clientDataJSON with its members in the order browsers write them (the bytes are hashed, so
    /// they are written out by hand rather than left to a map's order).
    fn client_data(&self, kind: &str, challenge: &str) -> String {
        format!(
            r#"{{"type":{},"challenge":{},"origin":{},"crossOrigin":false}}"#,
            Value::from(kind),
            Value::from(challenge),
            Value::from(self.origin.as_str()),
        )
    }
}

/// base64url without padding, as `toJSON()` writes binary fields.
fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn decode(text: &str) -> Vec<u8> {
    URL_SAFE_ANY_PADDING
        .decode(text)
        .unwrap_or_else(|err| panic!("not base64url ({err}): {text}"))
}

/// A CBOR head (RFC 8949 §3): major type and argument, in the shortest form (canonical CBOR, as
/// CTAP2 requires): inline below 24, then 1, 2 or 4 bytes after 24, 25 or 26.
fn cbor_head(major: u8, argument: u64) -> Vec<u8> {
    let major = major << 5;
    if argument < 24 {
        vec![major | argument as u8]
    } else if let Ok(byte) = u8::try_from(argument) {
        vec![major | 24, byte]
    } else if let Ok(short) = u16::try_from(argument) {
        let mut head = vec![major | 25];
        head.extend(short.to_be_bytes());
        head
    } else if let Ok(word) = u32::try_from(argument) {
        let mut head = vec![major | 26];
        head.extend(word.to_be_bytes());
        head
    } else {
        let mut head = vec![major | 27];
        head.extend(argument.to_be_bytes());
        head
    }
}

/// An integer: major type 0, or 1 holding -1 - n for negatives.
fn cbor_int(value: i64) -> Vec<u8> {
    if value >= 0 {
        cbor_head(0, value.unsigned_abs())
    } else {
        cbor_head(1, (-1 - value).unsigned_abs())
    }
}

/// A byte string (major type 2).
fn cbor_bytes(bytes: &[u8]) -> Vec<u8> {
    let mut out = cbor_head(2, bytes.len() as u64);
    out.extend(bytes);
    out
}

/// A text string (major type 3).
fn cbor_text(text: &str) -> Vec<u8> {
    let mut out = cbor_head(3, text.len() as u64);
    out.extend(text.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use webauthn_rs::prelude::*;

    const ORIGIN: &str = "http://localhost:3000";

    fn webauthn() -> Webauthn {
        WebauthnBuilder::new("localhost", &Url::parse(ORIGIN).unwrap())
            .unwrap()
            .build()
            .unwrap()
    }

    /// Registers a new passkey for a new user: its user id, the passkey and the authenticator.
    fn register(webauthn: &Webauthn, authenticator: &mut SoftAuthenticator) -> (Uuid, Passkey) {
        let user = Uuid::new_v4();
        let (ccr, state) = webauthn
            .start_passkey_registration(user, "a@example.org", "a@example.org", None)
            .unwrap();
        let answer = authenticator.create(&serde_json::to_value(&ccr).unwrap());
        let credential: RegisterPublicKeyCredential = serde_json::from_value(answer).unwrap();
        let passkey = webauthn
            .finish_passkey_registration(&credential, &state)
            .unwrap();
        (user, passkey)
    }

    /// One sign-in with `passkey` (the server's copy); the authenticator answers it.
    fn authenticate(
        webauthn: &Webauthn,
        authenticator: &mut SoftAuthenticator,
        passkey: &Passkey,
    ) -> WebauthnResult<AuthenticationResult> {
        let (rcr, state) = webauthn
            .start_passkey_authentication(std::slice::from_ref(passkey))
            .unwrap();
        let answer = authenticator
            .get(&serde_json::to_value(&rcr).unwrap())
            .expect("the authenticator holds the passkey");
        let credential: PublicKeyCredential = serde_json::from_value(answer).unwrap();
        webauthn.finish_passkey_authentication(&credential, &state)
    }

    #[test]
    fn cbor_heads_take_the_shortest_form() {
        assert_eq!(cbor_head(2, 23), vec![0x57]);
        assert_eq!(cbor_head(2, 24), vec![0x58, 24]);
        assert_eq!(cbor_head(2, 255), vec![0x58, 0xff]);
        assert_eq!(cbor_head(2, 256), vec![0x59, 0x01, 0x00]);
        assert_eq!(cbor_head(2, 65_536), vec![0x5a, 0x00, 0x01, 0x00, 0x00]);
        assert_eq!(cbor_int(-7), vec![0x26]);
        assert_eq!(cbor_int(-1), vec![0x20]);
        assert_eq!(cbor_int(-25), vec![0x38, 24]);
        assert_eq!(cbor_text("fmt"), b"\x63fmt".to_vec());
    }

    #[test]
    fn registers_and_signs_in_with_a_rising_counter() {
        let webauthn = webauthn();
        let mut authenticator = SoftAuthenticator::new(ORIGIN);
        let (_, mut passkey) = register(&webauthn, &mut authenticator);
        let id = URL_SAFE_NO_PAD.encode(passkey.cred_id());
        assert_eq!(authenticator.credentials(), vec![(id.clone(), 0)]);

        let first = authenticate(&webauthn, &mut authenticator, &passkey).unwrap();
        assert_eq!(first.counter(), 1);
        assert!(first.user_verified());
        assert!(!first.backup_eligible());
        assert_eq!(passkey.update_credential(&first), Some(true));

        let second = authenticate(&webauthn, &mut authenticator, &passkey).unwrap();
        assert_eq!(second.counter(), 2);
        assert_eq!(passkey.update_credential(&second), Some(true));
        assert_eq!(authenticator.credentials(), vec![(id.clone(), 2)]);

        // A clone whose counter went back: its next signature carries 1, not above the stored 2.
        authenticator.set_counter(&id, 0);
        let err = authenticate(&webauthn, &mut authenticator, &passkey).unwrap_err();
        assert!(
            matches!(err, WebauthnError::CredentialPossibleCompromise),
            "{err:?}"
        );
        assert_eq!(authenticator.credentials(), vec![(id, 1)]);
    }

    #[test]
    fn answers_a_discoverable_sign_in_with_the_user_handle() {
        let webauthn = webauthn();
        let mut authenticator = SoftAuthenticator::new(ORIGIN);
        let (user, passkey) = register(&webauthn, &mut authenticator);

        let (rcr, state) = webauthn.start_discoverable_authentication().unwrap();
        let options = serde_json::to_value(&rcr).unwrap();
        assert_eq!(options["mediation"], "conditional");
        let answer = authenticator.get(&options).unwrap();
        let credential: PublicKeyCredential = serde_json::from_value(answer).unwrap();
        let (identified, cred_id) = webauthn
            .identify_discoverable_authentication(&credential)
            .unwrap();
        assert_eq!(identified, user);
        assert_eq!(cred_id, passkey.cred_id().as_slice());
        let result = webauthn
            .finish_discoverable_authentication_v2(&credential, state, &passkey)
            .unwrap();
        assert_eq!(result.counter(), 1);
    }

    #[test]
    fn an_unverified_user_does_not_sign_in() {
        let webauthn = webauthn();
        let mut authenticator = SoftAuthenticator::new(ORIGIN);
        let (_, passkey) = register(&webauthn, &mut authenticator);
        authenticator.user_verified = false;
        let err = authenticate(&webauthn, &mut authenticator, &passkey).unwrap_err();
        assert!(matches!(err, WebauthnError::UserNotVerified), "{err:?}");
    }

    #[test]
    fn an_unverified_user_does_not_register() {
        let webauthn = webauthn();
        let mut authenticator = SoftAuthenticator::new(ORIGIN);
        authenticator.user_verified = false;
        let (ccr, state) = webauthn
            .start_passkey_registration(Uuid::new_v4(), "a@example.org", "a@example.org", None)
            .unwrap();
        let answer = authenticator.create(&serde_json::to_value(&ccr).unwrap());
        let credential: RegisterPublicKeyCredential = serde_json::from_value(answer).unwrap();
        let err = webauthn
            .finish_passkey_registration(&credential, &state)
            .unwrap_err();
        assert!(matches!(err, WebauthnError::UserNotVerified), "{err:?}");
    }

    #[test]
    fn a_synced_passkey_keeps_its_backup_flags() {
        let webauthn = webauthn();
        let mut authenticator = SoftAuthenticator::new(ORIGIN);
        authenticator.backup = true;
        let (_, passkey) = register(&webauthn, &mut authenticator);
        let result = authenticate(&webauthn, &mut authenticator, &passkey).unwrap();
        assert!(result.backup_eligible());
        assert!(result.backup_state());
    }

    #[test]
    fn picks_the_listed_credential_and_none_for_strangers() {
        let webauthn = webauthn();
        let mut authenticator = SoftAuthenticator::new(ORIGIN);
        let (_, first) = register(&webauthn, &mut authenticator);
        let (_, second) = register(&webauthn, &mut authenticator);

        // Only the second is listed, so the second answers although the first was made first.
        let result = authenticate(&webauthn, &mut authenticator, &second).unwrap();
        assert_eq!(result.cred_id(), second.cred_id());
        assert_eq!(
            authenticator.credentials(),
            vec![
                (URL_SAFE_NO_PAD.encode(first.cred_id()), 0),
                (URL_SAFE_NO_PAD.encode(second.cred_id()), 1),
            ]
        );

        // Another authenticator holds neither.
        let (rcr, _) = webauthn.start_passkey_authentication(&[first]).unwrap();
        let mut stranger = SoftAuthenticator::new(ORIGIN);
        assert!(stranger.get(&serde_json::to_value(&rcr).unwrap()).is_none());
        let (rcr, _) = webauthn.start_discoverable_authentication().unwrap();
        assert!(stranger.get(&serde_json::to_value(&rcr).unwrap()).is_none());
    }

    #[test]
    fn the_json_has_the_shape_chromium_posts() {
        let webauthn = webauthn();
        let mut authenticator = SoftAuthenticator::new(ORIGIN);
        let (ccr, _) = webauthn
            .start_passkey_registration(Uuid::new_v4(), "a@example.org", "a@example.org", None)
            .unwrap();
        let options = serde_json::to_value(&ccr).unwrap();
        let answer = authenticator.create(&options);
        assert_eq!(answer["type"], "public-key");
        assert_eq!(answer["id"], answer["rawId"]);
        assert_eq!(answer["authenticatorAttachment"], "platform");
        let client_data = URL_SAFE_NO_PAD
            .decode(answer["response"]["clientDataJSON"].as_str().unwrap())
            .unwrap();
        let expected = format!(
            r#"{{"type":"webauthn.create","challenge":"{}","origin":"http://localhost:3000","crossOrigin":false}}"#,
            options["publicKey"]["challenge"].as_str().unwrap()
        );
        assert_eq!(String::from_utf8(client_data).unwrap(), expected);
        for field in ["id", "rawId"] {
            assert!(!answer[field].as_str().unwrap().contains('='));
        }
    }

    #[test]
    #[should_panic(expected = "excludeCredentials")]
    fn refuses_an_excluded_credential() {
        let webauthn = webauthn();
        let mut authenticator = SoftAuthenticator::new(ORIGIN);
        let (user, passkey) = register(&webauthn, &mut authenticator);
        let (ccr, _) = webauthn
            .start_passkey_registration(
                user,
                "a@example.org",
                "a@example.org",
                Some(vec![passkey.cred_id().clone()]),
            )
            .unwrap();
        authenticator.create(&serde_json::to_value(&ccr).unwrap());
    }

    #[test]
    #[should_panic(expected = "another RP id")]
    fn refuses_another_rp_id() {
        let webauthn = webauthn();
        let mut authenticator = SoftAuthenticator::new("http://127.0.0.1:3000");
        let (ccr, _) = webauthn
            .start_passkey_registration(Uuid::new_v4(), "a@example.org", "a@example.org", None)
            .unwrap();
        authenticator.create(&serde_json::to_value(&ccr).unwrap());
    }
}
