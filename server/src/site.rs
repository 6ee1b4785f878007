//! The built site (`target/site`: the islands' wasm and JS, the stylesheet, the page scripts)
//! carried inside the binary, so `stepgate serve` runs from any folder. `cargo leptos build
//! --precompress` leaves a `.br` and a `.gz` twin beside each file; the one the browser's
//! `Accept-Encoding` allows is served as it is, never compressed again per request.
//!
//! `LEPTOS_SITE_ROOT` in the environment (cargo-leptos sets it for `cargo leptos watch`) serves
//! the folder from disk instead, for development.

use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;

#[derive(rust_embed::Embed)]
#[folder = "../target/site"]
// A checkout where the site was never built (`cargo test` before `cargo leptos build`) still
// compiles; such a binary serves the site from disk.
#[allow_missing = true]
struct Site;

/// The fingerprints (`js: …`, `wasm: …`, `css: …`) of the embedded files, from build.rs.
const EMBEDDED_HASHES: &str = env!("STEPGATE_SITE_HASHES");

/// Where the site's files come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteSource {
    Embedded,
    Disk,
}

impl SiteSource {
    /// Embedded, unless `LEPTOS_SITE_ROOT` names a folder to use or this build has no site.
    pub fn choose() -> SiteSource {
        let override_set = std::env::var_os("LEPTOS_SITE_ROOT").is_some_and(|v| !v.is_empty());
        if override_set || Site::iter().next().is_none() {
            SiteSource::Disk
        } else {
            SiteSource::Embedded
        }
    }
}

/// The hash file Leptos reads to name the fingerprinted files: `hash.txt` beside the binary
/// when there is one (the build folder, or a package that installs it); otherwise, for an
/// embedded site, the build's fingerprints written once to a file of this process (Leptos reads
/// them from a file, and an absolute name replaces the binary's folder in its lookup).
pub fn hash_file(source: SiteSource, beside_binary: &Path) -> Option<PathBuf> {
    if beside_binary.exists() {
        return Some(beside_binary.to_path_buf());
    }
    if source != SiteSource::Embedded || EMBEDDED_HASHES.is_empty() {
        return None;
    }
    let dir = std::env::var_os("RUNTIME_DIRECTORY")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let file = dir.join(format!("stepgate-site-hashes-{}.txt", std::process::id()));
    let text = EMBEDDED_HASHES.replace(';', "\n") + "\n";
    std::fs::write(&file, text).ok()?;
    Some(file)
}

/// The embedded file at `path` (a request path), in the encoding `headers` accept best; `None`
/// when there is no such file (the app's 404 page answers then).
pub fn respond(method: &Method, path: &str, headers: &HeaderMap) -> Option<Response> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    let name = path.strip_prefix('/')?;
    if name.is_empty() || name.ends_with('/') {
        return None;
    }
    let original = Site::get(name)?;
    let accepted = AcceptedEncodings::from(headers);
    let (file, encoding) = [("br", accepted.br), ("gzip", accepted.gzip)]
        .into_iter()
        .filter(|(_, ok)| *ok)
        .find_map(|(encoding, _)| {
            let twin = format!("{name}.{}", if encoding == "br" { "br" } else { "gz" });
            Site::get(&twin).map(|file| (file, Some(encoding)))
        })
        .unwrap_or((original.clone(), None));
    let etag = format!(
        "\"{}{}\"",
        hex::encode(&file.metadata.sha256_hash()[..12]),
        encoding.map(|e| format!("-{e}")).unwrap_or_default()
    );
    let mut response = if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        Response::builder()
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
    } else {
        let length = file.data.len();
        let body = if method == Method::HEAD {
            Body::empty()
        } else {
            Body::from(file.data)
        };
        Response::builder()
            .header(header::CONTENT_LENGTH, length)
            .body(body)
    }
    .ok()?;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(original.metadata.mimetype()).ok()?,
    );
    headers.insert(header::ETAG, HeaderValue::from_str(&etag).ok()?);
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if let Some(encoding) = encoding {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
    }
    Some(response)
}

/// Which of the precompressed encodings a request accepts (`q=0` refuses one).
#[derive(Debug, Default, PartialEq, Eq)]
struct AcceptedEncodings {
    br: bool,
    gzip: bool,
}

impl From<&HeaderMap> for AcceptedEncodings {
    fn from(headers: &HeaderMap) -> Self {
        let mut accepted = AcceptedEncodings::default();
        for value in headers.get_all(header::ACCEPT_ENCODING) {
            let Ok(value) = value.to_str() else { continue };
            for item in value.split(',') {
                let mut parts = item.split(';').map(str::trim);
                let coding = parts.next().unwrap_or_default().to_ascii_lowercase();
                let refused = parts.any(|p| {
                    p.strip_prefix("q=")
                        .and_then(|q| q.parse::<f32>().ok())
                        .is_some_and(|q| q == 0.0)
                });
                match coding.as_str() {
                    "br" => accepted.br = !refused,
                    "gzip" => accepted.gzip = !refused,
                    "*" if !refused => {
                        accepted.br = true;
                        accepted.gzip = true;
                    }
                    _ => {}
                }
            }
        }
        accepted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> AcceptedEncodings {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).unwrap(),
        );
        AcceptedEncodings::from(&headers)
    }

    #[test]
    fn accept_encoding_is_read_with_its_refusals() {
        assert_eq!(
            accept("gzip, deflate, br, zstd"),
            AcceptedEncodings {
                br: true,
                gzip: true
            }
        );
        assert_eq!(
            accept("gzip"),
            AcceptedEncodings {
                br: false,
                gzip: true
            }
        );
        assert_eq!(
            accept("br;q=0, gzip;q=0.5"),
            AcceptedEncodings {
                br: false,
                gzip: true
            }
        );
        assert_eq!(accept("identity"), AcceptedEncodings::default());
        assert_eq!(
            accept("*"),
            AcceptedEncodings {
                br: true,
                gzip: true
            }
        );
        assert_eq!(
            AcceptedEncodings::from(&HeaderMap::new()),
            AcceptedEncodings::default()
        );
    }

    /// With a built site, each file comes back in the encoding asked for. A build made before
    /// the site (`cargo test` on a fresh clone runs before `cargo leptos build`) answers nothing
    /// from the binary and serves from disk; end2end/tests/single-binary.spec.ts covers the
    /// embedded site of the release build.
    #[test]
    fn embedded_files_come_in_the_encoding_asked_for() {
        let Some(name) = Site::iter().find(|n| n.ends_with(".wasm")) else {
            assert_eq!(SiteSource::choose(), SiteSource::Disk);
            assert!(respond(&Method::GET, "/pkg/stepgate.wasm", &HeaderMap::new()).is_none());
            assert!(respond(&Method::GET, "/forms.js", &HeaderMap::new()).is_none());
            return;
        };
        let path = format!("/{name}");
        let mut headers = HeaderMap::new();
        let plain = respond(&Method::GET, &path, &headers).unwrap();
        assert_eq!(plain.headers()[header::CONTENT_TYPE], "application/wasm");
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip, br"),
        );
        let br = respond(&Method::GET, &path, &headers).unwrap();
        assert_eq!(br.headers()[header::CONTENT_ENCODING], "br");
        assert_eq!(br.headers()[header::CONTENT_TYPE], "application/wasm");
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        let gz = respond(&Method::GET, &path, &headers).unwrap();
        assert_eq!(gz.headers()[header::CONTENT_ENCODING], "gzip");
        assert_ne!(gz.headers()[header::ETAG], br.headers()[header::ETAG]);
        let etag = gz.headers()[header::ETAG].clone();
        headers.insert(header::IF_NONE_MATCH, etag);
        let again = respond(&Method::GET, &path, &headers).unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert!(respond(&Method::POST, &path, &HeaderMap::new()).is_none());
        assert!(respond(&Method::GET, "/no-such-file.js", &HeaderMap::new()).is_none());
        assert!(respond(&Method::GET, "/pkg/", &HeaderMap::new()).is_none());
    }
}
