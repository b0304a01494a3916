//! Where IM calls go: the documented regional gateways, or a base URL.

use std::fmt;
use std::net::IpAddr;

use url::Url;

/// A documented data-centre gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// The name users write in the Secret's `region` key.
    pub name: &'static str,
    /// Short code from the domain, accepted as an alias.
    pub code: &'static str,
    pub domain: &'static str,
    pub backup_domain: &'static str,
}

/// Every region the IM documentation lists. Mumbai appears on some page
/// versions only; it is kept because a user with an app there has no other.
pub const REGIONS: &[Region] = &[
    Region { name: "china", code: "cn", domain: "console.tim.qq.com", backup_domain: "adminapi.my-imcloud.com" },
    Region {
        name: "singapore",
        code: "sgp",
        domain: "adminapisgp.im.qcloud.com",
        backup_domain: "adminapisgp.my-imcloud.com",
    },
    Region {
        name: "seoul",
        code: "kr",
        domain: "adminapikr.im.qcloud.com",
        backup_domain: "adminapikr.my-imcloud.com",
    },
    Region {
        name: "tokyo",
        code: "jpn",
        domain: "adminapijpn.im.qcloud.com",
        backup_domain: "adminapijpn.my-imcloud.com",
    },
    Region {
        name: "frankfurt",
        code: "ger",
        domain: "adminapiger.im.qcloud.com",
        backup_domain: "adminapiger.my-imcloud.com",
    },
    Region {
        name: "mumbai",
        code: "ind",
        domain: "adminapiind.im.qcloud.com",
        backup_domain: "adminapiind.my-imcloud.com",
    },
    Region {
        name: "silicon-valley",
        code: "usa",
        domain: "adminapiusa.im.qcloud.com",
        backup_domain: "adminapiusa.my-imcloud.com",
    },
    Region {
        name: "jakarta",
        code: "idn",
        domain: "adminapiidn.im.qcloud.com",
        backup_domain: "adminapiidn.my-imcloud.com",
    },
];

/// The region used when a Secret names neither `region` nor `endpoint`.
pub const DEFAULT_REGION: &str = "china";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("unknown region {given:?}; expected one of {known} (append \"-backup\" for the backup domain)")]
    UnknownRegion { given: String, known: String },
    // The endpoint as given is never echoed: a mistaken one may carry a
    // UserSig in its query or a password in its user info. Errors name the
    // scheme and host only.
    #[error("endpoint is not a valid URL: {reason}")]
    InvalidUrl { reason: String },
    #[error("endpoint scheme {scheme:?} is not supported; use https (or http for loopback)")]
    UnsupportedScheme { scheme: String },
    #[error(
        "endpoint http://{host} uses plain http to a non-loopback host; credentials would travel in clear text (allow it explicitly if you must)"
    )]
    InsecureHttp { host: String },
    #[error("endpoint for host {host} must not carry a query, fragment or user info")]
    UnexpectedParts { host: String },
}

/// The base URL every command path is joined onto.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    base: Url,
}

impl Endpoint {
    /// The gateway of a named region (`singapore`, `sgp`, `singapore-backup`...).
    pub fn region(name: &str) -> Result<Self, EndpointError> {
        let wanted = name.trim().to_ascii_lowercase();
        let (wanted, backup) = match wanted.strip_suffix("-backup") {
            Some(stem) => (stem.to_string(), true),
            None => (wanted, false),
        };
        let region = REGIONS
            .iter()
            .find(|r| r.name == wanted || r.code == wanted || r.name.replace('-', "") == wanted)
            .ok_or_else(|| EndpointError::UnknownRegion {
                given: name.to_string(),
                known: REGIONS.iter().map(|r| r.name).collect::<Vec<_>>().join(", "),
            })?;
        let domain = if backup { region.backup_domain } else { region.domain };
        let base = Url::parse(&format!("https://{domain}/"))
            .map_err(|e| EndpointError::InvalidUrl { reason: e.to_string() })?;
        Ok(Self { base })
    }

    /// A base URL such as `https://adminapisgp.im.qcloud.com` or
    /// `http://127.0.0.1:8080/v4` (a trailing `/v4` is accepted, as some
    /// clients configure it that way). Plain http is refused for anything
    /// but loopback unless `allow_insecure_http`.
    pub fn parse(given: &str, allow_insecure_http: bool) -> Result<Self, EndpointError> {
        let mut base = Url::parse(given.trim()).map_err(|e| EndpointError::InvalidUrl { reason: e.to_string() })?;
        let host = base.host_str().unwrap_or_default().to_string();
        if base.query().is_some()
            || base.fragment().is_some()
            || !base.username().is_empty()
            || base.password().is_some()
        {
            return Err(EndpointError::UnexpectedParts { host });
        }
        match base.scheme() {
            "https" => {}
            "http" if allow_insecure_http || is_loopback(&base) => {}
            "http" => {
                return Err(EndpointError::InsecureHttp { host });
            }
            _ => {
                return Err(EndpointError::UnsupportedScheme { scheme: base.scheme().to_string() });
            }
        }
        let path = base.path().trim_end_matches('/');
        let path = path.strip_suffix("/v4").unwrap_or(path).to_string();
        base.set_path(&format!("{path}/"));
        Ok(Self { base })
    }

    /// The full URL of `v4/<service>/<command>`, without query.
    pub fn command_url(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        let joined = format!("{}v4/{path}", url.path());
        url.set_path(&joined);
        url
    }

    pub fn is_plain_http(&self) -> bool {
        self.base.scheme() == "http"
    }
}

/// Safe to log: a base URL carries no credentials (they go in each call's query).
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.base.as_str().trim_end_matches('/'))
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({self})")
    }
}

/// True for `localhost` and loopback addresses: hosts that never leave this
/// machine. Exactly `localhost`: not `localhost.` nor names under it, which
/// a resolver may send anywhere (and which NO_PROXY matching would not
/// exempt from a proxy).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(name)) => name.trim_end_matches('.').eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNBAN: &str = "group_open_http_svc/unban_group_member";

    #[test]
    fn every_region_resolves_by_name_and_code_to_https() {
        for region in REGIONS {
            let by_name = Endpoint::region(region.name).unwrap();
            assert_eq!(by_name, Endpoint::region(region.code).unwrap());
            assert_eq!(by_name.command_url(UNBAN).as_str(), format!("https://{}/v4/{UNBAN}", region.domain));
            let backup = Endpoint::region(&format!("{}-backup", region.name)).unwrap();
            assert!(backup.to_string().contains(region.backup_domain));
        }
    }

    #[test]
    fn unknown_region_names_the_choices() {
        let error = Endpoint::region("mars").unwrap_err().to_string();
        assert!(error.contains("mars") && error.contains("singapore"), "{error}");
    }

    #[test]
    fn base_urls_with_or_without_v4_give_the_same_command_url() {
        for given in
            ["http://127.0.0.1:8080", "http://127.0.0.1:8080/", "http://127.0.0.1:8080/v4", "http://127.0.0.1:8080/v4/"]
        {
            let endpoint = Endpoint::parse(given, false).unwrap();
            assert_eq!(endpoint.command_url(UNBAN).as_str(), format!("http://127.0.0.1:8080/v4/{UNBAN}"));
        }
        let prefixed = Endpoint::parse("https://gw.example/im/v4", false).unwrap();
        assert_eq!(prefixed.command_url(UNBAN).as_str(), format!("https://gw.example/im/v4/{UNBAN}"));
    }

    /// A mistaken endpoint may carry a UserSig or a password: no error
    /// may repeat it.
    #[test]
    fn errors_never_echo_the_endpoint_as_given() {
        for given in [
            "https://gw.example/v4?usersig=eJyrSECRET",
            "https://admin:SECRET@gw.example/",
            "http://10.0.0.1/?usersig=SECRET",
            "ftp://SECRET@gw.example/",
            "SECRET not a url",
        ] {
            let error = Endpoint::parse(given, false).unwrap_err().to_string();
            assert!(!error.contains("SECRET"), "{given} -> {error}");
        }
    }

    #[test]
    fn plain_http_is_only_accepted_for_loopback_unless_allowed() {
        assert!(Endpoint::parse("http://localhost:1", false).is_ok());
        assert!(Endpoint::parse("http://[::1]:1", false).is_ok());
        assert!(matches!(Endpoint::parse("http://10.0.0.1:1", false), Err(EndpointError::InsecureHttp { .. })));
        assert!(Endpoint::parse("http://10.0.0.1:1", true).is_ok());
        assert!(matches!(Endpoint::parse("ftp://x", false), Err(EndpointError::UnsupportedScheme { .. })));
        assert!(matches!(Endpoint::parse("https://x/?usersig=1", false), Err(EndpointError::UnexpectedParts { .. })));
        assert!(matches!(Endpoint::parse("not a url", false), Err(EndpointError::InvalidUrl { .. })));
    }
}
