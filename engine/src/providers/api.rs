//! What a provider's own API takes, for the API proxy (`accounts::proxy`): where the proxy may
//! send an app's request (each origin with the path under which its API lives; nothing else is
//! reachable through it), which of the app's headers go along, and how the account's
//! credentials are put in ([`Provider::authorize_api_request`](super::Provider)): a bearer
//! token, session cookies, or a signature over the request.

use reqwest::header::{HeaderName, AUTHORIZATION, COOKIE};
use url::Url;

use crate::flows::upstream::UpstreamRequest;
use crate::ErrorCode;

/// One origin of a provider's API and the path its API lives under there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiBase {
    /// `https://host`, as the provider names it (and `STEPGATE_UPSTREAMS` maps it).
    pub origin: &'static str,
    /// Every proxied path starts with this (`/gateway/api/2.0/`).
    pub path_prefix: &'static str,
}

/// A provider's API, as the proxy may reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderApi {
    /// The API's origins; the first is where a request goes when the app names none.
    pub bases: &'static [ApiBase],
    /// Request headers (lower case) an app may send through besides [`COMMON_REQUEST_HEADERS`]
    /// (FlameConnect's `app_name`, …).
    pub extra_headers: &'static [&'static str],
}

/// Request headers any API may get from an app: what the request is and what answer it wants.
/// Everything else the app sends is dropped — its `Cookie` and `Authorization` above all (they
/// are Stepgate's, not the provider's), and `Host`, hop-by-hop and forwarding headers.
pub const COMMON_REQUEST_HEADERS: [&str; 6] = [
    "accept",
    "accept-language",
    "content-type",
    "if-match",
    "if-none-match",
    "user-agent",
];

/// Answer headers that go back to the app: what the body is and when to ask again. Never
/// `Set-Cookie` (the provider's session stays in Stepgate) nor anything that names how to
/// reach the provider.
pub const ANSWER_HEADERS: [&str; 7] = [
    "content-type",
    "content-language",
    "content-disposition",
    "etag",
    "last-modified",
    "retry-after",
    "www-authenticate",
];

impl ProviderApi {
    /// The upstream URL of an app's request: `path` (after `/proxy/`, percent-encoded as sent)
    /// and `query` on `origin` (the first base when `None`). `proxy_not_allowed` unless the
    /// origin is declared and the path, once its dot segments are resolved, stays under that
    /// origin's prefix.
    pub fn target(
        &self,
        origin: Option<&str>,
        path: &str,
        query: Option<&str>,
    ) -> Result<Url, ErrorCode> {
        let base = match origin {
            None => self.bases.first(),
            Some(origin) => {
                let origin = origin.trim().trim_end_matches('/');
                self.bases
                    .iter()
                    .find(|b| b.origin.eq_ignore_ascii_case(origin))
            }
        }
        .ok_or(ErrorCode::ProxyNotAllowed)?;
        let mut url = super::fixed_url(base.origin);
        // Set as a path (never joined as a reference): `//other.host/…` stays a path here.
        url.set_path(&format!("/{}", path.trim_start_matches('/')));
        url.set_query(query.filter(|q| !q.is_empty()));
        let same_origin = url.origin() == super::fixed_url(base.origin).origin();
        if !same_origin || !url.path().starts_with(base.path_prefix) {
            return Err(ErrorCode::ProxyNotAllowed);
        }
        Ok(url)
    }

    /// Whether an app's request header `name` (lower case) goes upstream.
    pub fn passes_header(&self, name: &str) -> bool {
        COMMON_REQUEST_HEADERS.contains(&name) || self.extra_headers.contains(&name)
    }
}

/// Puts a bearer token in (in place of anything the app sent).
pub fn bearer(request: UpstreamRequest, token: Option<&str>) -> Result<UpstreamRequest, ErrorCode> {
    let token = token.ok_or(ErrorCode::NeedsSignIn)?;
    Ok(request.header(AUTHORIZATION, format!("Bearer {token}")))
}

/// Puts session cookies in: every one of `names` from `secrets`, or `needs_sign_in` when one
/// is missing (the kept session is incomplete).
pub fn cookies(
    request: UpstreamRequest,
    pairs: &[(&str, Option<&str>)],
) -> Result<UpstreamRequest, ErrorCode> {
    let mut header = Vec::new();
    for (name, value) in pairs {
        let value = value.ok_or(ErrorCode::NeedsSignIn)?;
        header.push(format!("{name}={value}"));
    }
    Ok(request.header(COOKIE, header.join("; ")))
}

/// The name of a header an app sent, if it is one the API takes.
pub fn header_name(name: &str) -> Option<HeaderName> {
    HeaderName::from_bytes(name.as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const API: ProviderApi = ProviderApi {
        bases: &[
            ApiBase {
                origin: "https://api.example.test",
                path_prefix: "/v2/",
            },
            ApiBase {
                origin: "https://other.example.test",
                path_prefix: "/data/",
            },
        ],
        extra_headers: &["app_name"],
    };

    #[test]
    fn a_path_goes_to_the_first_origin_unless_another_declared_one_is_named() {
        let url = API.target(None, "v2/me", Some("a=1&b=%2F")).unwrap();
        assert_eq!(url.as_str(), "https://api.example.test/v2/me?a=1&b=%2F");
        let url = API
            .target(Some("https://OTHER.example.test/"), "/data/x", None)
            .unwrap();
        assert_eq!(url.as_str(), "https://other.example.test/data/x");
        assert_eq!(
            API.target(Some("https://evil.example.test"), "v2/me", None),
            Err(ErrorCode::ProxyNotAllowed)
        );
        assert_eq!(
            API.target(Some("http://api.example.test"), "v2/me", None),
            Err(ErrorCode::ProxyNotAllowed),
            "another scheme is another origin"
        );
    }

    #[test]
    fn a_path_cannot_climb_out_of_the_api_or_off_its_host() {
        for path in [
            "v1/me",
            "v2/../admin",
            "v2/%2e%2e/admin",
            "v2/..%2fadmin/..",
            "",
            "v2",
        ] {
            let target = API.target(None, path, None);
            assert!(
                target
                    .as_ref()
                    .map_or(true, |u| u.path().starts_with("/v2/")),
                "{path}: {target:?}"
            );
        }
        assert_eq!(
            API.target(None, "v2/../admin", None),
            Err(ErrorCode::ProxyNotAllowed)
        );
        // A second slash is a path here, never another host.
        assert_eq!(
            API.target(None, "//evil.example.test/v2/x", None),
            Err(ErrorCode::ProxyNotAllowed)
        );
        let url = API.target(None, "v2//evil.example.test/x", None).unwrap();
        assert_eq!(url.host_str(), Some("api.example.test"));
    }

    #[test]
    fn only_declared_headers_pass() {
        assert!(API.passes_header("accept"));
        assert!(API.passes_header("app_name"));
        for dropped in [
            "cookie",
            "authorization",
            "host",
            "x-forwarded-for",
            "connection",
        ] {
            assert!(!API.passes_header(dropped), "{dropped}");
        }
    }
}
