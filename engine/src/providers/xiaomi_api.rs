//! Xiaomi's cloud API (`api.io.mi.com/app/…`) as the API proxy calls it: the session's cookies
//! plus a signature over the request's parameters, made from the `ssecurity` the login gave, as
//! the real clients make it (PiotrMachowski's tokens extractor, micloud):
//!
//! - `_nonce` = base64(8 random bytes ‖ the minute since 1970 as 4 big-endian bytes);
//! - signed nonce = base64(SHA-256(ssecurity bytes ‖ nonce bytes));
//! - `signature` = base64(HMAC-SHA-256(key = signed nonce bytes,
//!   `"{path without /app}&{signed nonce}&{nonce}&k=v&…"`)) over the app's parameters in
//!   the order sent.
//!
//! The app sends its parameters (usually just `data`, a JSON text) as a form; the proxy adds
//! `_nonce` and `signature` after them. Only the proxy ever sees `ssecurity`.

use data_encoding::BASE64;
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderName, COOKIE};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::api::{ApiBase, ProviderApi};
use crate::flows::upstream::UpstreamRequest;
use crate::ErrorCode;

const FORM: &str = "application/x-www-form-urlencoded";

/// The device API, on the China server (no prefix) and the regional ones the app lets people
/// choose.
pub const API: ProviderApi = ProviderApi {
    bases: &[
        ApiBase {
            origin: "https://api.io.mi.com",
            path_prefix: "/app/",
        },
        ApiBase {
            origin: "https://de.api.io.mi.com",
            path_prefix: "/app/",
        },
        ApiBase {
            origin: "https://us.api.io.mi.com",
            path_prefix: "/app/",
        },
        ApiBase {
            origin: "https://sg.api.io.mi.com",
            path_prefix: "/app/",
        },
        ApiBase {
            origin: "https://ru.api.io.mi.com",
            path_prefix: "/app/",
        },
        ApiBase {
            origin: "https://tw.api.io.mi.com",
            path_prefix: "/app/",
        },
        ApiBase {
            origin: "https://in.api.io.mi.com",
            path_prefix: "/app/",
        },
        ApiBase {
            origin: "https://i2.api.io.mi.com",
            path_prefix: "/app/",
        },
    ],
    extra_headers: &["x-xiaomi-protocal-flag-cli"],
};

/// `_nonce` for the minute of `now_millis`, with `random` as its first 8 bytes.
pub fn nonce(random: [u8; 8], now_millis: i64) -> String {
    let minute = u32::try_from(now_millis / 60_000).unwrap_or(u32::MAX);
    let mut bytes = random.to_vec();
    bytes.extend_from_slice(&minute.to_be_bytes());
    BASE64.encode(&bytes)
}

/// The signed nonce: base64(SHA-256(ssecurity ‖ nonce)), both base64 decoded.
pub fn signed_nonce(ssecurity: &str, nonce: &str) -> Result<String, ErrorCode> {
    let secret = BASE64
        .decode(ssecurity.as_bytes())
        .map_err(|_| ErrorCode::NeedsSignIn)?;
    let nonce = BASE64
        .decode(nonce.as_bytes())
        .map_err(|_| ErrorCode::Unknown)?;
    let mut hash = Sha256::new();
    hash.update(&secret);
    hash.update(&nonce);
    Ok(BASE64.encode(&hash.finalize()))
}

/// The `signature` of a request to `path` (the URL's path, `/app/home/device_list`) with the
/// app's `params` in order.
pub fn signature(
    path: &str,
    signed_nonce: &str,
    nonce: &str,
    params: &[(String, String)],
) -> Result<String, ErrorCode> {
    let signed_path = path.replacen("/app", "", 1);
    let mut text = vec![signed_path, signed_nonce.to_owned(), nonce.to_owned()];
    text.extend(params.iter().map(|(k, v)| format!("{k}={v}")));
    let key = BASE64
        .decode(signed_nonce.as_bytes())
        .map_err(|_| ErrorCode::Unknown)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes keys of any length");
    mac.update(text.join("&").as_bytes());
    Ok(BASE64.encode(&mac.finalize().into_bytes()))
}

/// The app's request signed and with the session's cookies: its form parameters (the body's,
/// or the query's when it has no form body) followed by `_nonce` and `signature`, sent as a
/// form. A parameter of those two names from the app is dropped (Stepgate signs, not the app).
pub fn sign(
    request: UpstreamRequest,
    secrets: &Value,
    now_millis: i64,
) -> Result<UpstreamRequest, ErrorCode> {
    let text = |name: &str| {
        secrets
            .get(name)
            .and_then(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .or_else(|| v.as_i64().map(|n| n.to_string()))
            })
            .ok_or(ErrorCode::NeedsSignIn)
    };
    let (ssecurity, service_token, user_id) =
        (text("ssecurity")?, text("serviceToken")?, text("userId")?);
    let form_body = request
        .body()
        .filter(|(content_type, _)| content_type.is_some_and(|t| t.starts_with(FORM)))
        .map(|(_, bytes)| bytes.to_vec());
    let mut params: Vec<(String, String)> = match &form_body {
        Some(bytes) => url::form_urlencoded::parse(bytes).into_owned().collect(),
        None => request.url().query_pairs().into_owned().collect(),
    };
    params.retain(|(k, _)| k != "_nonce" && k != "signature");
    let mut random = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut random);
    let nonce = nonce(random, now_millis);
    let signed = signed_nonce(&ssecurity, &nonce)?;
    let signature = signature(request.url().path(), &signed, &nonce, &params)?;
    params.push(("_nonce".to_owned(), nonce));
    params.push(("signature".to_owned(), signature));
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&params)
        .finish();
    let mut url = request.url().clone();
    if form_body.is_none() {
        // The parameters moved into the signed form.
        url.set_query(None);
    }
    Ok(request
        .with_url(url)
        .header(
            COOKIE,
            format!("userId={user_id}; serviceToken={service_token}; yetAnotherServiceToken={service_token}; locale=en_GB"),
        )
        .header(
            HeaderName::from_static("x-xiaomi-protocal-flag-cli"),
            "PROTOCAL-HTTP2",
        )
        .raw_body(Some(FORM.to_owned()), body.into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values the extractor's own code (`generate_nonce`, `signed_nonce`,
    /// `generate_signature` with `url.replace("/app", "")`) gives for these inputs, run in
    /// Python: ssecurity of 16 zero bytes, nonce of 8 zero bytes in minute 29,000,000.
    #[test]
    fn a_signature_is_made_as_the_real_clients_make_it() {
        let nonce = nonce([0; 8], 29_000_000 * 60_000);
        assert_eq!(nonce, "AAAAAAAAAAABuoFA");
        let signed = signed_nonce(&BASE64.encode(&[0u8; 16]), &nonce).unwrap();
        assert_eq!(signed, "U0CFtsslPfOnn/NkTExcSjj25qS2cFngm1vV49t7NMA=");
        let params = vec![("data".to_owned(), "{\"getVirtualModel\":false}".to_owned())];
        assert_eq!(
            signature("/app/home/device_list", &signed, &nonce, &params).unwrap(),
            "6Rft5iC3UqLSLiCbQWPDmoiRJz43Fo9ERo8yhM6SShM="
        );
    }

    #[test]
    fn the_apps_own_nonce_and_signature_are_replaced() {
        let url = url::Url::parse("https://api.io.mi.com/app/home/device_list").unwrap();
        let request = UpstreamRequest::post(url).raw_body(
            Some(FORM.to_owned()),
            b"data=%7B%7D&signature=forged&_nonce=old".to_vec(),
        );
        let secrets = serde_json::json!({
            "ssecurity": BASE64.encode(&[7u8; 16]), "serviceToken": "st", "userId": 42
        });
        let signed = sign(request, &secrets, 1_800_000_000_000).unwrap();
        let (_, body) = signed.body().unwrap();
        let params: Vec<(String, String)> =
            url::form_urlencoded::parse(body).into_owned().collect();
        let names: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["data", "_nonce", "signature"]);
        assert_ne!(params[2].1, "forged");
        assert!(signed.has_header("cookie"));
        assert!(sign(
            UpstreamRequest::post(url::Url::parse("https://api.io.mi.com/app/x").unwrap()),
            &serde_json::json!({"serviceToken": "st", "userId": 1}),
            0
        )
        .is_err_and(|e| e == ErrorCode::NeedsSignIn));
    }
}
