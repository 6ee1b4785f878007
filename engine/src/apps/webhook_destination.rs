//! Where webhooks may go. A webhook URL is typed by any user, and the server sends to it from
//! inside its owner's network, so without a rule it reaches what strangers must not: the
//! router's admin page, a database on `10.0.0.5`, the cloud metadata service on
//! `169.254.169.254`, and the delivery log would tell a port scanner which ports answer.
//!
//! The rule: the URL's host is resolved and every address it resolves to is judged; loopback,
//! private (RFC 1918, RFC 4193), link-local, carrier-grade NAT (RFC 6598), unspecified,
//! multicast, broadcast, reserved and cloud metadata addresses are refused, unless the admin
//! names them in `STEPGATE_WEBHOOK_ALLOW` (CIDRs and host names, comma or space separated). An
//! IPv6 address that carries an IPv4 one (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible,
//! NAT64 `64:ff9b::/96` and `64:ff9b:1::/48`, 6to4, Teredo) is judged by that IPv4 address too,
//! since that is where it ends up.
//!
//! The delivery then connects to exactly the addresses that were judged ([`Checked::pin`]): a
//! second lookup could answer differently (DNS rebinding). Redirects are never followed
//! (`apps/webhooks.rs`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use async_trait::async_trait;

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    Unspecified,
    Loopback,
    /// RFC 1918, RFC 4193 (`fc00::/7`), and the deprecated site-local `fec0::/10`.
    Private,
    LinkLocal,
    /// Carrier-grade NAT, `100.64.0.0/10` (RFC 6598).
    SharedAddressSpace,
    Multicast,
    Broadcast,
    /// The instance metadata services of cloud hosts (credentials live there).
    CloudMetadata,
    /// Not for hosts on the internet: `240.0.0.0/4`, documentation, benchmarking, IETF
    /// protocol assignments, discard-only.
    Reserved,
}

impl AddressClass {
    /// The class in words, for logs and the delivery log.
    pub fn words(self) -> &'static str {
        match self {
            AddressClass::Unspecified => "an unspecified address",
            AddressClass::Loopback => "a loopback address",
            AddressClass::Private => "a private address",
            AddressClass::LinkLocal => "a link-local address",
            AddressClass::SharedAddressSpace => "a carrier-grade NAT address",
            AddressClass::Multicast => "a multicast address",
            AddressClass::Broadcast => "the broadcast address",
            AddressClass::CloudMetadata => "a cloud metadata address",
            AddressClass::Reserved => "a reserved address",
        }
    }

    /// What the delivery log says of an attempt that was not sent for this class.
    pub fn delivery_words(self) -> &'static str {
        match self {
            AddressClass::Unspecified => "not sent: the host resolves to an unspecified address",
            AddressClass::Loopback => "not sent: the host resolves to a loopback address",
            AddressClass::Private => "not sent: the host resolves to a private address",
            AddressClass::LinkLocal => "not sent: the host resolves to a link-local address",
            AddressClass::SharedAddressSpace => {
                "not sent: the host resolves to a carrier-grade NAT address"
            }
            AddressClass::Multicast => "not sent: the host resolves to a multicast address",
            AddressClass::Broadcast => "not sent: the host resolves to the broadcast address",
            AddressClass::CloudMetadata => {
                "not sent: the host resolves to a cloud metadata address"
            }
            AddressClass::Reserved => "not sent: the host resolves to a reserved address",
        }
    }
}

/// Known instance metadata addresses: AWS, GCP, Azure, OpenStack, Oracle (169.254.169.254),
/// AWS ECS task metadata, AWS IMDS over IPv6, Alibaba Cloud.
const METADATA_V4: [Ipv4Addr; 3] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 170, 2),
    Ipv4Addr::new(100, 100, 100, 200),
];
const METADATA_V6: [Ipv6Addr; 1] = [Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)];

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    };
    u128::from(ip) & mask == u128::from(net) & mask
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddressClass> {
    use AddressClass::*;
    if METADATA_V4.contains(&ip) {
        return Some(CloudMetadata);
    }
    let ranges: [([u8; 4], u32, AddressClass); 16] = [
        ([0, 0, 0, 0], 8, Unspecified),
        ([127, 0, 0, 0], 8, Loopback),
        ([10, 0, 0, 0], 8, Private),
        ([172, 16, 0, 0], 12, Private),
        ([192, 168, 0, 0], 16, Private),
        ([169, 254, 0, 0], 16, LinkLocal),
        ([100, 64, 0, 0], 10, SharedAddressSpace),
        ([224, 0, 0, 0], 4, Multicast),
        ([255, 255, 255, 255], 32, Broadcast),
        ([240, 0, 0, 0], 4, Reserved),
        ([192, 0, 0, 0], 24, Reserved),
        ([192, 0, 2, 0], 24, Reserved),
        ([198, 18, 0, 0], 15, Reserved),
        ([198, 51, 100, 0], 24, Reserved),
        ([203, 0, 113, 0], 24, Reserved),
        ([192, 88, 99, 0], 24, Reserved),
    ];
    ranges
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, class)| *class)
}

/// The IPv4 address an IPv6 one carries and ends up at, if any.
pub fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    let low32 = Ipv4Addr::from(bits as u32);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    // IPv4-compatible (deprecated, `::a.b.c.d`); `::` and `::1` are themselves.
    if bits >> 32 == 0 && bits > 1 {
        return Some(low32);
    }
    // NAT64, the well-known prefix (RFC 6052) and the local-use one (RFC 8215).
    if in_v6(ip, Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96)
        || in_v6(ip, Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48)
    {
        return Some(low32);
    }
    // 6to4 (RFC 3056): 2002:AABB:CCDD::/48 is A.B.C.D.
    if in_v6(ip, Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16) {
        return Some(Ipv4Addr::from((bits >> 80) as u32));
    }
    // Teredo (RFC 4380): the client's address, inverted, in the last 32 bits.
    if in_v6(ip, Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 32) {
        return Some(Ipv4Addr::from(!(bits as u32)));
    }
    None
}

fn classify_v6(ip: Ipv6Addr) -> Option<AddressClass> {
    use AddressClass::*;
    if METADATA_V6.contains(&ip) {
        return Some(CloudMetadata);
    }
    if ip.is_unspecified() {
        return Some(Unspecified);
    }
    if ip.is_loopback() {
        return Some(Loopback);
    }
    if let Some(v4) = embedded_v4(ip) {
        return classify_v4(v4);
    }
    let ranges: [(Ipv6Addr, u32, AddressClass); 6] = [
        (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7, Private),
        (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10, Private),
        (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, LinkLocal),
        (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8, Multicast),
        (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64, Reserved),
        (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32, Reserved),
    ];
    ranges
        .iter()
        .find(|(net, prefix, _)| in_v6(ip, *net, *prefix))
        .map(|(_, _, class)| *class)
}

/// Why webhooks may not go to `ip` (before `STEPGATE_WEBHOOK_ALLOW` is asked), if they may not.
pub fn refused_class(ip: IpAddr) -> Option<AddressClass> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// One `STEPGATE_WEBHOOK_ALLOW` network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    net: IpAddr,
    prefix: u32,
}

impl Cidr {
    fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let net: IpAddr = addr
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
            Some(_) => return None,
            None => max,
        };
        (prefix <= max).then_some(Cidr { net, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => in_v4(ip, net.octets(), self.prefix),
            (IpAddr::V6(net), IpAddr::V6(ip)) => in_v6(ip, net, self.prefix),
            _ => false,
        }
    }
}

/// A host name as compared: lower case, without a final dot.
fn normalise_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn is_host_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// What `STEPGATE_WEBHOOK_ALLOW` lets webhooks reach despite the rule: networks (a bare
/// address is its own /32 or /128) and host names (whatever they resolve to).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookAllow {
    nets: Vec<Cidr>,
    hosts: Vec<String>,
}

impl WebhookAllow {
    /// Parses `192.168.1.20/32, homeassistant.local fd12::/64` (commas or spaces).
    pub fn parse(text: &str) -> Result<WebhookAllow, String> {
        let mut allow = WebhookAllow::default();
        for entry in text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|e| !e.is_empty())
        {
            if let Some(cidr) = Cidr::parse(entry) {
                allow.nets.push(cidr);
            } else if !entry.contains('/') && is_host_name(&normalise_host(entry)) {
                allow.hosts.push(normalise_host(entry));
            } else {
                return Err(format!(
                    "`{entry}` is neither an address, a CIDR (like 192.168.1.0/24) nor a host name"
                ));
            }
        }
        Ok(allow)
    }

    /// Whether the admin allowed `ip` (or the IPv4 address it carries).
    pub fn allows_address(&self, ip: IpAddr) -> bool {
        let embedded = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.nets
            .iter()
            .any(|net| net.contains(ip) || embedded.is_some_and(|v4| net.contains(v4)))
    }

    /// Whether the admin allowed host name `host`.
    pub fn allows_host(&self, host: &str) -> bool {
        let host = normalise_host(host);
        self.hosts.contains(&host)
    }

    /// `ip`'s refusal under the rule and this allow list, if it is refused.
    pub fn judge(&self, ip: IpAddr) -> Result<(), AddressClass> {
        match refused_class(ip) {
            Some(class) if !self.allows_address(ip) => Err(class),
            _ => Ok(()),
        }
    }
}

/// Looks host names up (the system's resolver; tests give a table).
#[async_trait]
pub trait Resolve: Send + Sync {
    async fn lookup(&self, host: &str, port: u16) -> std::io::Result<Vec<IpAddr>>;
}

/// The system's resolver (`getaddrinfo`, so `/etc/hosts` and mDNS as configured).
pub struct SystemResolver;

#[async_trait]
impl Resolve for SystemResolver {
    async fn lookup(&self, host: &str, port: u16) -> std::io::Result<Vec<IpAddr>> {
        Ok(tokio::net::lookup_host((host, port))
            .await?
            .map(|a| a.ip())
            .collect())
    }
}

/// Why a URL's destination is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The host is (or resolves to) an address of this class.
    Address(AddressClass),
    /// The host name does not resolve.
    NotFound,
    /// The URL has no host (or one reqwest could not reach).
    NoHost,
}

impl Refusal {
    /// What the delivery log says of an attempt not sent for this reason.
    pub fn delivery_words(self) -> &'static str {
        match self {
            Refusal::Address(class) => class.delivery_words(),
            Refusal::NotFound => "not sent: the host name was not found",
            Refusal::NoHost => "not sent: the URL has no host",
        }
    }
}

/// A destination that passed: where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// For a host name: the name and the judged addresses the connection must use (port 0:
    /// the URL's port applies). `None` for an address literal, which needs no lookup.
    pub pin: Option<(String, Vec<SocketAddr>)>,
}

/// The rule, the admin's exceptions and the resolver, together.
#[derive(Clone)]
pub struct Destinations {
    allow: Arc<WebhookAllow>,
    resolver: Arc<dyn Resolve>,
}

impl Destinations {
    pub fn new(allow: WebhookAllow) -> Self {
        Self::with_resolver(allow, Arc::new(SystemResolver))
    }

    pub fn with_resolver(allow: WebhookAllow, resolver: Arc<dyn Resolve>) -> Self {
        Self {
            allow: Arc::new(allow),
            resolver,
        }
    }

    /// Judges where `url` goes: an address literal by itself; a host name by every address it
    /// resolves to now (an allowed host name is not judged, but still pinned).
    pub async fn check(&self, url: &url::Url) -> Result<Checked, Refusal> {
        let name = match url.host() {
            Some(url::Host::Ipv4(v4)) => return self.literal(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => return self.literal(IpAddr::V6(v6)),
            Some(url::Host::Domain(name)) if !name.is_empty() => name,
            _ => return Err(Refusal::NoHost),
        };
        let port = url.port_or_known_default().unwrap_or(80);
        let addresses = self
            .resolver
            .lookup(name.trim_end_matches('.'), port)
            .await
            .unwrap_or_default();
        if addresses.is_empty() {
            return Err(Refusal::NotFound);
        }
        if !self.allow.allows_host(name) {
            for ip in &addresses {
                if let Err(class) = self.allow.judge(*ip) {
                    tracing::info!(%ip, class = class.words(), "refused a webhook destination");
                    return Err(Refusal::Address(class));
                }
            }
        }
        let pinned = addresses.into_iter().map(|ip| SocketAddr::new(ip, 0));
        Ok(Checked {
            pin: Some((name.to_owned(), pinned.collect())),
        })
    }

    fn literal(&self, ip: IpAddr) -> Result<Checked, Refusal> {
        self.allow.judge(ip).map_err(Refusal::Address)?;
        Ok(Checked { pin: None })
    }
}

/// A resolver answering from a table (tests): names not in it are not found.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct TableResolver(
    pub(crate) std::sync::Mutex<std::collections::HashMap<String, Vec<IpAddr>>>,
);

#[cfg(test)]
impl TableResolver {
    pub(crate) fn set(&self, host: &str, addresses: &[&str]) {
        self.0.lock().unwrap().insert(
            host.to_owned(),
            addresses.iter().map(|a| a.parse().unwrap()).collect(),
        );
    }
}

#[cfg(test)]
#[async_trait]
impl Resolve for TableResolver {
    async fn lookup(&self, host: &str, _port: u16) -> std::io::Result<Vec<IpAddr>> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .get(host)
            .cloned()
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AddressClass::*;

    fn class(text: &str) -> Option<AddressClass> {
        refused_class(text.parse().unwrap())
    }

    /// Each class with an IPv4 literal, its IPv4-mapped IPv6 form, and an IPv6 literal where
    /// IPv6 has the class.
    #[test]
    fn each_address_class_is_refused_as_v4_v6_and_v4_mapped_v6() {
        let cases: &[(AddressClass, &str, Option<&str>)] = &[
            (Loopback, "127.0.0.1", Some("::1")),
            (Loopback, "127.255.0.9", None),
            (Private, "10.0.0.5", Some("fd12:3456::1")),
            (Private, "172.16.0.1", Some("fc00::1")),
            (Private, "172.31.255.254", Some("fec0::1")),
            (Private, "192.168.1.20", None),
            (LinkLocal, "169.254.1.1", Some("fe80::1")),
            (SharedAddressSpace, "100.64.0.1", None),
            (SharedAddressSpace, "100.127.255.254", None),
            (Unspecified, "0.0.0.0", Some("::")),
            (Multicast, "224.0.0.1", Some("ff02::1")),
            (Multicast, "239.255.255.250", Some("ff05::c")),
            (Broadcast, "255.255.255.255", None),
            (CloudMetadata, "169.254.169.254", Some("fd00:ec2::254")),
            (CloudMetadata, "100.100.100.200", None),
            (Reserved, "240.0.0.1", Some("2001:db8::1")),
        ];
        for (expected, v4, v6) in cases {
            assert_eq!(class(v4), Some(*expected), "{v4}");
            let mapped = format!("::ffff:{v4}");
            assert_eq!(class(&mapped), Some(*expected), "{mapped}");
            if let Some(v6) = v6 {
                assert_eq!(class(v6), Some(*expected), "{v6}");
            }
        }
    }

    #[test]
    fn v6_forms_that_carry_a_v4_address_are_judged_by_it() {
        for carried in [
            "::ffff:127.0.0.1",
            "::ffff:7f00:1",
            "::127.0.0.1",                          // IPv4-compatible
            "64:ff9b::7f00:1",                      // NAT64, well-known prefix
            "64:ff9b::10.0.0.5",                    // NAT64 written with the v4 part
            "64:ff9b:1::a9fe:a9fe",                 // NAT64, local-use prefix: 169.254.169.254
            "2002:7f00:1::1",                       // 6to4 of 127.0.0.1
            "2001:0:4136:e378:8000:63bf:f5ff:fffe", // Teredo client 10.0.0.1
        ] {
            assert!(class(carried).is_some(), "{carried} must be refused");
        }
        assert_eq!(class("64:ff9b::a9fe:a9fe"), Some(CloudMetadata));
        assert_eq!(class("2001:0:4136:e378:8000:63bf:f5ff:fffe"), Some(Private));
        // ...and a carried public address is as good as that address.
        assert_eq!(class("64:ff9b::808:808"), None);
        assert_eq!(class("::ffff:8.8.8.8"), None);
    }

    #[test]
    fn public_addresses_pass() {
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.215.14",
            "172.32.0.1",
            "100.128.0.1",
            "169.255.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001:82b::200e",
        ] {
            assert_eq!(class(public), None, "{public}");
        }
    }

    #[test]
    fn the_allow_list_takes_cidrs_addresses_and_host_names() {
        let allow =
            WebhookAllow::parse("192.168.1.20/32, 10.1.0.0/16  homeassistant.local,fd12::/16")
                .unwrap();
        let ip = |t: &str| t.parse::<IpAddr>().unwrap();
        assert_eq!(allow.judge(ip("192.168.1.20")), Ok(()));
        assert_eq!(allow.judge(ip("::ffff:192.168.1.20")), Ok(()));
        assert_eq!(allow.judge(ip("192.168.1.21")), Err(Private));
        assert_eq!(allow.judge(ip("10.1.200.3")), Ok(()));
        assert_eq!(allow.judge(ip("10.2.0.1")), Err(Private));
        assert_eq!(allow.judge(ip("fd12:1::1")), Ok(()));
        assert_eq!(allow.judge(ip("169.254.169.254")), Err(CloudMetadata));
        assert!(allow.allows_host("HomeAssistant.local."));
        assert!(!allow.allows_host("other.local"));
        let bare = WebhookAllow::parse("127.0.0.1").unwrap();
        assert_eq!(bare.judge(ip("127.0.0.1")), Ok(()));
        assert_eq!(bare.judge(ip("127.0.0.2")), Err(Loopback));
        assert_eq!(WebhookAllow::parse(" , ").unwrap(), WebhookAllow::default());
        for bad in [
            "10.0.0.0/33",
            "10.0.0.0/",
            "::1/129",
            "not a/host",
            "-bad-.example",
        ] {
            assert!(WebhookAllow::parse(bad).is_err(), "{bad}");
        }
    }

    fn url(text: &str) -> url::Url {
        url::Url::parse(text).unwrap()
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused() {
        // `localhost` comes from /etc/hosts (127.0.0.1 and perhaps ::1): no network needed.
        let none = Destinations::new(WebhookAllow::default());
        assert_eq!(
            none.check(&url("http://localhost:8123/api/webhook/x"))
                .await,
            Err(Refusal::Address(Loopback))
        );
        assert_eq!(
            none.check(&url("http://127.0.0.1:9/")).await,
            Err(Refusal::Address(Loopback))
        );
        assert_eq!(
            none.check(&url("http://[::ffff:127.0.0.1]:9/")).await,
            Err(Refusal::Address(Loopback))
        );
        // WHATWG URL parsing turns other spellings of 127.0.0.1 into it first.
        assert_eq!(
            none.check(&url("http://0x7f.1/")).await,
            Err(Refusal::Address(Loopback))
        );
        assert_eq!(
            none.check(&url("http://2130706433/")).await,
            Err(Refusal::Address(Loopback))
        );
    }

    #[tokio::test]
    async fn every_address_of_a_name_is_judged_and_the_checked_ones_are_pinned() {
        let table = Arc::new(TableResolver::default());
        table.set("hooks.example", &["93.184.215.14"]);
        table.set("split.example", &["93.184.215.14", "10.0.0.5"]);
        table.set("homeassistant.local", &["192.168.1.20"]);
        table.set("nas.example", &["192.168.1.30"]);
        let allow = WebhookAllow::parse("homeassistant.local 192.168.1.30/32").unwrap();
        let destinations = Destinations::with_resolver(allow, table.clone());
        assert_eq!(
            destinations
                .check(&url("https://hooks.example/h"))
                .await
                .unwrap()
                .pin,
            Some((
                "hooks.example".to_owned(),
                vec!["93.184.215.14:0".parse().unwrap()]
            ))
        );
        assert_eq!(
            destinations.check(&url("https://split.example/h")).await,
            Err(Refusal::Address(Private)),
            "one refused address refuses the name"
        );
        assert_eq!(
            destinations.check(&url("https://missing.example/h")).await,
            Err(Refusal::NotFound)
        );
        // Allowed by name, and by address.
        assert!(destinations
            .check(&url("http://homeassistant.local:8123/api/webhook/x"))
            .await
            .is_ok());
        assert!(destinations
            .check(&url("http://nas.example/hook"))
            .await
            .is_ok());
        assert!(destinations
            .check(&url("http://192.168.1.30/hook"))
            .await
            .is_ok());
        assert_eq!(
            destinations.check(&url("http://192.168.1.31/hook")).await,
            Err(Refusal::Address(Private))
        );
        // The name now resolves elsewhere: refused.
        table.set("hooks.example", &["169.254.169.254"]);
        assert_eq!(
            destinations.check(&url("https://hooks.example/h")).await,
            Err(Refusal::Address(CloudMetadata))
        );
    }
}
