//! The one table of simulated hosts: each real origin a provider talks to, the variable that
//! says where its double listens, and its default port as an offset from the sandbox's own
//! (`STEPGATE_SANDBOX_ADDR`, default 3100: Librus' api host on 3101, and so on).
//!
//! Everything that starts doubles or points Stepgate at them derives from this table: the
//! sandbox binary, and through `sandbox --print-env` / `sandbox --print-json` the scripts
//! (`scripts/run.sh`, `scripts/lib/serve-release.sh`) and the Playwright config; `loadgen`
//! links it. A new provider's hosts are one line each here, and its demo password one line in
//! [`DEMO_PASSWORDS`] (the at-rest check reads them through `sandbox --print-demo-passwords`).

use crate::{flameconnect, librus, lynkco, xiaomi};

/// One simulated host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Double {
    /// A short name for scripts and tests (`librusApi`).
    pub name: &'static str,
    /// The real origin, as providers name it and as `STEPGATE_UPSTREAMS` maps it.
    pub origin: &'static str,
    /// The variable holding the double's `HOST:PORT`.
    pub addr_var: &'static str,
    /// Default port: the sandbox's port plus this.
    pub port_offset: u16,
}

pub const DOUBLES: [Double; 11] = [
    Double {
        name: "librusApi",
        origin: librus::API_ORIGIN,
        addr_var: "STEPGATE_SANDBOX_LIBRUS_API_ADDR",
        port_offset: 1,
    },
    Double {
        name: "librusSynergia",
        origin: librus::SYNERGIA_ORIGIN,
        addr_var: "STEPGATE_SANDBOX_LIBRUS_SYNERGIA_ADDR",
        port_offset: 2,
    },
    Double {
        name: "xiaomiAccount",
        origin: xiaomi::ACCOUNT_ORIGIN,
        addr_var: "STEPGATE_SANDBOX_XIAOMI_ACCOUNT_ADDR",
        port_offset: 3,
    },
    Double {
        name: "xiaomiSts",
        origin: xiaomi::STS_ORIGIN,
        addr_var: "STEPGATE_SANDBOX_XIAOMI_STS_ADDR",
        port_offset: 4,
    },
    Double {
        name: "lynkcoB2c",
        origin: lynkco::B2C_ORIGIN,
        addr_var: "STEPGATE_SANDBOX_LYNKCO_B2C_ADDR",
        port_offset: 5,
    },
    Double {
        name: "lynkcoIam",
        origin: lynkco::IAM_ORIGIN,
        addr_var: "STEPGATE_SANDBOX_LYNKCO_IAM_ADDR",
        port_offset: 6,
    },
    Double {
        name: "flameconnect",
        origin: flameconnect::ORIGIN,
        addr_var: "STEPGATE_SANDBOX_FLAMECONNECT_ADDR",
        port_offset: 7,
    },
    // The providers' data APIs (what Stepgate's API proxy forwards to).
    Double {
        name: "flameconnectApi",
        origin: flameconnect::API_ORIGIN,
        addr_var: "STEPGATE_SANDBOX_FLAMECONNECT_API_ADDR",
        port_offset: 8,
    },
    Double {
        name: "xiaomiApi",
        origin: xiaomi::API_ORIGIN,
        addr_var: "STEPGATE_SANDBOX_XIAOMI_API_ADDR",
        port_offset: 9,
    },
    Double {
        name: "lynkcoDelegatedDriver",
        origin: lynkco::DELEGATED_DRIVER_ORIGIN,
        addr_var: "STEPGATE_SANDBOX_LYNKCO_DELEGATED_DRIVER_ADDR",
        port_offset: 10,
    },
    Double {
        name: "lynkcoUserLifecycle",
        origin: lynkco::USER_LIFECYCLE_ORIGIN,
        addr_var: "STEPGATE_SANDBOX_LYNKCO_USER_LIFECYCLE_ADDR",
        port_offset: 11,
    },
];

/// Every double's demo password: what the at-rest check looks for in Stepgate's data after
/// the suite (`sandbox --print-demo-passwords`). A new provider's is one line here.
pub const DEMO_PASSWORDS: [&str; 4] = [
    librus::DEMO_PASSWORD,
    xiaomi::DEMO_PASSWORD,
    lynkco::DEMO_PASSWORD,
    flameconnect::DEMO_PASSWORD,
];

/// The sandbox's own address when `STEPGATE_SANDBOX_ADDR` is unset.
pub const DEFAULT_SANDBOX_ADDR: &str = "127.0.0.1:3100";

/// The double of `origin` (an origin this table does not have is a bug in the caller).
pub fn double_of(origin: &str) -> &'static Double {
    DOUBLES
        .iter()
        .find(|d| d.origin == origin)
        .expect("an origin in the table of doubles")
}

/// Where each double listens, given the sandbox's address and a lookup of variables (the
/// process environment, or a test's map): the variable when set, else the sandbox's host at
/// its port plus the double's offset.
pub fn addresses(
    sandbox_addr: &str,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Vec<(&'static Double, String)>, String> {
    let (host, port) = sandbox_addr
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        .ok_or_else(|| format!("`{sandbox_addr}` is not HOST:PORT"))?;
    DOUBLES
        .iter()
        .map(|d| {
            let addr = match var(d.addr_var).filter(|v| !v.is_empty()) {
                Some(addr) => addr,
                None => {
                    let port = port.checked_add(d.port_offset).ok_or_else(|| {
                        format!("port {port} leaves no room for the doubles after it")
                    })?;
                    format!("{host}:{port}")
                }
            };
            Ok((d, addr))
        })
        .collect()
}

/// `STEPGATE_UPSTREAMS` for these addresses: `REAL_ORIGIN=http://ADDR`, space-separated.
pub fn upstreams(addresses: &[(&'static Double, String)]) -> String {
    addresses
        .iter()
        .map(|(d, addr)| format!("{}=http://{addr}", d.origin))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Shell lines (`export NAME='VALUE'`) for every double's variable and `STEPGATE_UPSTREAMS`,
/// for `eval "$(sandbox --print-env)"`. A `STEPGATE_UPSTREAMS` already set is left alone.
pub fn shell_env(addresses: &[(&'static Double, String)], keep_upstreams: bool) -> String {
    let mut lines: Vec<String> = addresses
        .iter()
        .map(|(d, addr)| format!("export {}='{addr}'", d.addr_var))
        .collect();
    if !keep_upstreams {
        lines.push(format!(
            "export STEPGATE_UPSTREAMS='{}'",
            upstreams(addresses)
        ));
    }
    lines.join("\n")
}

/// The table as JSON (`{"librusApi": {"origin", "addrVar", "addr"}, …}`) for the Playwright
/// config.
pub fn json(addresses: &[(&'static Double, String)]) -> serde_json::Value {
    addresses
        .iter()
        .map(|(d, addr)| {
            (
                d.name.to_owned(),
                serde_json::json!({"origin": d.origin, "addrVar": d.addr_var, "addr": addr}),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_passwords_are_distinct_and_long_enough_to_look_for() {
        for (i, a) in DEMO_PASSWORDS.iter().enumerate() {
            assert!(a.len() >= 8, "{a}");
            assert!(!DEMO_PASSWORDS[i + 1..].contains(a), "{a}");
        }
    }

    #[test]
    fn each_double_has_its_own_origin_variable_name_and_port() {
        for (i, a) in DOUBLES.iter().enumerate() {
            assert!(a.origin.starts_with("https://"), "{}", a.origin);
            for b in &DOUBLES[i + 1..] {
                assert_ne!(a.origin, b.origin);
                assert_ne!(a.addr_var, b.addr_var);
                assert_ne!(a.name, b.name);
                assert_ne!(a.port_offset, b.port_offset);
            }
        }
    }

    #[test]
    fn addresses_follow_the_sandbox_port_unless_a_variable_says_otherwise() {
        let set = |name: &str| {
            (name == "STEPGATE_SANDBOX_XIAOMI_STS_ADDR").then(|| "10.0.0.9:9000".to_owned())
        };
        let addresses = addresses("127.0.0.1:3300", set).unwrap();
        assert_eq!(addresses[0].1, "127.0.0.1:3301");
        assert_eq!(addresses[3].1, "10.0.0.9:9000");
        assert_eq!(addresses[6].1, "127.0.0.1:3307");
        assert_eq!(addresses[10].1, "127.0.0.1:3311");
        let upstreams = upstreams(&addresses);
        assert!(upstreams.starts_with("https://api.librus.pl=http://127.0.0.1:3301 "));
        assert!(upstreams.contains("https://sts.api.io.mi.com=http://10.0.0.9:9000"));
        assert_eq!(upstreams.split(' ').count(), DOUBLES.len());
        let env = shell_env(&addresses, false);
        assert!(env.contains("export STEPGATE_SANDBOX_FLAMECONNECT_ADDR='127.0.0.1:3307'"));
        assert!(env.ends_with(&format!("export STEPGATE_UPSTREAMS='{upstreams}'")));
        assert!(!shell_env(&addresses, true).contains("STEPGATE_UPSTREAMS"));
        assert_eq!(
            json(&addresses)["lynkcoB2c"]["addr"],
            serde_json::json!("127.0.0.1:3305")
        );
        assert!(super::addresses("no-port", |_| None).is_err());
        assert!(super::addresses("127.0.0.1:65534", |_| None).is_err());
    }
}
