//! A tiny client that talks to the doubles the way Stepgate does: it names only the real
//! origins, maps them onto the spawned ports (`REAL=BASE` pairs, as `STEPGATE_UPSTREAMS`),
//! keeps one cookie jar per real origin, and never follows redirects by itself. Besides, what
//! the B2C doubles' tests (Lynk & Co, FlameConnect) share: encoding, PKCE, JWTs and the browser
//! pages.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::header::{HeaderMap, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use reqwest::Method;
use serde_json::Value;
use sha2::{Digest, Sha256};

pub struct Client {
    http: reqwest::Client,
    /// (real origin, base URL).
    map: Vec<(String, String)>,
    /// Cookies per real origin.
    jar: HashMap<String, BTreeMap<String, String>>,
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    /// The real URL that was asked for.
    pub url: String,
}

impl Resp {
    pub fn location(&self) -> String {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    /// The body as JSON, with Xiaomi's `&&&START&&&` stripped.
    pub fn json(&self) -> serde_json::Value {
        let text = self.text.strip_prefix("&&&START&&&").unwrap_or(&self.text);
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// The body as JSON, which must come with a 200.
    pub fn ok_json(&self) -> serde_json::Value {
        assert_eq!(self.status, 200, "{}", self.text);
        self.json()
    }

    /// Asserts a token endpoint's refusal: a 400 with `invalid_grant`.
    pub fn assert_invalid_grant(&self) {
        assert_eq!(self.status, 400, "{}", self.text);
        assert_eq!(self.json()["error"], "invalid_grant");
    }

    pub fn set_cookie_names(&self) -> Vec<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split_once('=').map(|(n, _)| n.trim().to_owned()))
            .collect()
    }
}

/// `scheme://host[:port]` of an absolute URL.
pub fn origin(url: &str) -> String {
    let after = url.find("://").map(|i| i + 3).expect("absolute URL");
    let end = url[after..]
        .find(['/', '?'])
        .map(|i| i + after)
        .unwrap_or(url.len());
    url[..end].to_owned()
}

impl Client {
    pub fn new(upstreams: &str) -> Client {
        Self::with_timeout(upstreams, Duration::from_secs(10))
    }

    pub fn with_timeout(upstreams: &str, timeout: Duration) -> Client {
        let map = upstreams
            .split_whitespace()
            .map(|p| {
                let (real, base) = p.split_once('=').expect("REAL=BASE");
                (real.to_owned(), base.trim_end_matches('/').to_owned())
            })
            .collect();
        Client {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(timeout)
                .build()
                .expect("client"),
            map,
            jar: HashMap::new(),
        }
    }

    /// The URL to connect to for a real URL; panics on an unmapped origin (the doubles must
    /// never send us to one).
    pub fn connect_url(&self, real: &str) -> String {
        let o = origin(real);
        let (_, base) = self
            .map
            .iter()
            .find(|(r, _)| *r == o)
            .unwrap_or_else(|| panic!("unmapped origin in {real}"));
        format!("{base}{}", &real[o.len()..])
    }

    pub fn cookie(&self, origin: &str, name: &str) -> Option<String> {
        self.jar.get(origin)?.get(name).cloned()
    }

    pub fn set_cookie(&mut self, origin: &str, name: &str, value: &str) {
        self.jar
            .entry(origin.to_owned())
            .or_default()
            .insert(name.to_owned(), value.to_owned());
    }

    pub fn remove_cookie(&mut self, origin: &str, name: &str) {
        if let Some(j) = self.jar.get_mut(origin) {
            j.remove(name);
        }
    }

    pub async fn try_send(
        &mut self,
        method: Method,
        url: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Resp, reqwest::Error> {
        let o = origin(url);
        let mut req = self.http.request(method, self.connect_url(url));
        if let Some(jar) = self.jar.get(&o).filter(|j| !j.is_empty()) {
            let header: Vec<String> = jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req = req.header(COOKIE, header.join("; "));
        }
        if let Some((ct, bytes)) = body {
            req = req.header(CONTENT_TYPE, ct).body(bytes);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await?;
        for v in headers.get_all(SET_COOKIE).iter() {
            let v = v.to_str().unwrap_or_default();
            let pair = v.split(';').next().unwrap_or_default();
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            let expired = v.to_ascii_lowercase().contains("max-age=0");
            let jar = self.jar.entry(o.clone()).or_default();
            if expired {
                jar.remove(name.trim());
            } else {
                jar.insert(name.trim().to_owned(), value.trim().to_owned());
            }
        }
        Ok(Resp {
            status,
            headers,
            text,
            url: url.to_owned(),
        })
    }

    /// A request with exactly the given cookie header and extra headers, outside the jar (no
    /// redirects followed).
    pub async fn send_raw(
        &self,
        method: Method,
        url: &str,
        cookie: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, String)>,
    ) -> Resp {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let mut req = http.request(method, self.connect_url(url));
        if !cookie.is_empty() {
            req = req.header(COOKIE, cookie);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some((ct, b)) = body {
            req = req.header(CONTENT_TYPE, ct).body(b);
        }
        let r = req.send().await.expect("send");
        let (status, headers) = (r.status().as_u16(), r.headers().clone());
        Resp {
            status,
            headers,
            text: r.text().await.unwrap(),
            url: url.to_owned(),
        }
    }

    /// Asserts that the double at `origin` lists each of `secrets` as handed out (for the leak
    /// checks).
    pub async fn assert_issued(&mut self, origin: &str, secrets: &[&str]) {
        let issued = self.get(&format!("{origin}/testing/issued")).await.json();
        for secret in secrets {
            assert!(issued.as_array().unwrap().iter().any(|v| v == secret));
        }
    }

    pub async fn try_get(&mut self, url: &str) -> Result<Resp, reqwest::Error> {
        self.try_send(Method::GET, url, None).await
    }

    pub async fn get(&mut self, url: &str) -> Resp {
        self.try_get(url).await.expect("GET")
    }

    /// The real URL a `Location` names: resolved against the real URL asked for, and a double's
    /// base turned back into its real origin.
    pub fn real_location(&self, asked: &str, location: &str) -> String {
        if location.starts_with('/') {
            return format!("{}{location}", origin(asked));
        }
        for (real, base) in &self.map {
            if let Some(rest) = location.strip_prefix(base.as_str()) {
                if rest.is_empty() || rest.starts_with(['/', '?']) {
                    return format!("{real}{rest}");
                }
            }
        }
        location.to_owned()
    }

    /// A GET past B2C's routing hops (a redirect to the same path on the same real origin, as
    /// real clients follow), answering the first answer that is not one.
    pub async fn get_routed(&mut self, url: &str) -> Resp {
        let path = |u: &str| {
            let rest = &u[origin(u).len()..];
            rest.split(['?', '#']).next().unwrap_or_default().to_owned()
        };
        let mut asked = url.to_owned();
        for _ in 0..3 {
            let r = self.get(&asked).await;
            if !(300..400).contains(&r.status) || r.location().is_empty() {
                return r;
            }
            let next = self.real_location(&asked, &r.location());
            if origin(&next) != origin(&asked) || path(&next) != path(&asked) {
                return r;
            }
            asked = next;
        }
        panic!("more than 3 routing hops from {url}");
    }

    pub async fn post_form(&mut self, url: &str, fields: &[(&str, &str)]) -> Resp {
        self.try_post_form(url, fields).await.expect("POST")
    }

    pub async fn try_post_form(
        &mut self,
        url: &str,
        fields: &[(&str, &str)],
    ) -> Result<Resp, reqwest::Error> {
        let body = urlencoded(fields);
        self.try_send(
            Method::POST,
            url,
            Some(("application/x-www-form-urlencoded", body.into_bytes())),
        )
        .await
    }

    pub async fn post_multipart(&mut self, url: &str, fields: &[(&str, &str)]) -> Resp {
        let boundary = "----stepgateBoundary7MA4YWxkTrZu0gW";
        let mut body = String::new();
        for (k, v) in fields {
            body.push_str(&format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
            ));
        }
        body.push_str(&format!("--{boundary}--\r\n"));
        self.try_send(
            Method::POST,
            url,
            Some((
                &format!("multipart/form-data; boundary={boundary}"),
                body.into_bytes(),
            )),
        )
        .await
        .expect("POST")
    }

    pub async fn post_json(&mut self, url: &str, json: serde_json::Value) -> Resp {
        self.try_send(
            Method::POST,
            url,
            Some(("application/json", json.to_string().into_bytes())),
        )
        .await
        .expect("POST")
    }

    /// Follows redirects by hand (absolute, real-origin `Location`s only), at most 10.
    pub async fn follow(&mut self, mut resp: Resp) -> Resp {
        for _ in 0..10 {
            if !(300..400).contains(&resp.status) {
                return resp;
            }
            let next = resp.location();
            assert!(
                next.starts_with("https://"),
                "Location must name a real https origin: {next}"
            );
            resp = self.get(&next).await;
        }
        panic!("too many redirects");
    }
}

/// Asserts that `value` names no local address.
pub fn assert_real(value: &str) {
    assert!(
        !value.contains("127.0.0.1") && !value.contains("localhost"),
        "a double leaked its own address: {value}"
    );
}

/// `application/x-www-form-urlencoded` `fields`.
pub fn urlencoded(fields: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish()
}

/// `s` encoded for a query.
pub fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The S256 PKCE challenge of `verifier`.
pub fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// A JWT's claims (its signature unchecked).
pub fn jwt_payload(token: &str) -> Value {
    let body = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).expect("base64url")).expect("JSON")
}

/// Asserts that a B2C browser page is the sign-in form: email, password, Sign in.
pub fn assert_sign_in_form(page: &str) {
    for label in [
        r#"<label for="email">Email</label>"#,
        r#"<label for="password">Password</label>"#,
        r#"<button type="submit">Sign in</button>"#,
    ] {
        assert!(page.contains(label), "{label}");
    }
}

/// The Redirect URL a B2C browser page shows to paste into Stepgate (asserting the page is the
/// one that shows it, and that it names no local address).
pub fn shown_redirect_url(page: &str) -> String {
    assert!(page.contains(r#"<label for="redirect-url">Redirect URL</label>"#));
    assert!(page.contains("paste it into Stepgate"));
    let value = page.split(r#"readonly value=""#).nth(1).unwrap();
    let url = value[..value.find('"').unwrap()].replace("&amp;", "&");
    assert_real(&url);
    url
}
