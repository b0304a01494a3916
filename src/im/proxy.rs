//! Which proxy, if any, an IM request goes through.
//!
//! The convention is the one kubectl and other Go tools follow, which users
//! of a Kubernetes operator already know:
//! - `HTTPS_PROXY` (or `https_proxy`) for `https` endpoints: the proxy is
//!   asked to CONNECT, and the UserSig in the query stays inside TLS;
//! - `HTTP_PROXY` (or `http_proxy`) for plain `http` endpoints;
//! - never for a loopback endpoint (`localhost`, 127.0.0.0/8, `::1`): a
//!   local simulator must not send its UserSig in clear text to a proxy;
//! - never for hosts listed in `NO_PROXY` (or `no_proxy`).
//!
//! reqwest's own environment proxy would send loopback requests to
//! `HTTP_PROXY`, so it is replaced by this one.

use reqwest::{NoProxy, Proxy, Url};

/// Always bypass the proxy for these, whatever `NO_PROXY` says.
const LOOPBACK: &str = "localhost,127.0.0.0/8,::1";

/// The proxies set in the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyEnv {
    pub http: Option<Url>,
    pub https: Option<Url>,
    /// `NO_PROXY` with the loopback hosts added.
    pub no_proxy: String,
}

impl ProxyEnv {
    /// Reads `HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY`, upper case first. A
    /// proxy that is not a URL is taken as `host:port` over http, as Go does.
    pub fn read() -> Self {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`ProxyEnv::read`] over any source of variables.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Self {
        // The first non-empty of the two, as Go reads them.
        let set = |name: &str| get(name).filter(|value| !value.trim().is_empty());
        let var = |upper: &str, lower: &str| set(upper).or_else(|| set(lower));
        let proxy = |upper: &str, lower: &str| parse_proxy_url(var(upper, lower)?.trim());
        let user_list = var("NO_PROXY", "no_proxy").unwrap_or_default();
        Self {
            http: proxy("HTTP_PROXY", "http_proxy"),
            https: proxy("HTTPS_PROXY", "https_proxy"),
            no_proxy: [user_list.trim(), LOOPBACK]
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    /// The proxy rules for an HTTP client. (reqwest's `Proxy::custom` would
    /// ignore a `NO_PROXY` list, so each scheme gets its own rule.)
    pub fn rules(&self) -> Vec<Proxy> {
        let rule = |url: &Option<Url>, make: fn(Url) -> reqwest::Result<Proxy>| {
            let proxy = make(url.clone()?).ok()?;
            Some(proxy.no_proxy(NoProxy::from_string(&self.no_proxy)))
        };
        [rule(&self.http, Proxy::http), rule(&self.https, Proxy::https)].into_iter().flatten().collect()
    }
}

fn parse_proxy_url(value: &str) -> Option<Url> {
    if value.is_empty() {
        return None;
    }
    Url::parse(value)
        .ok()
        .filter(|url| url.has_host())
        .or_else(|| Url::parse(&format!("http://{value}")).ok().filter(|url| url.has_host()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    fn env(vars: &[(&str, &str)]) -> ProxyEnv {
        let vars: std::collections::HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ProxyEnv::from_vars(|name| vars.get(name).cloned())
    }

    /// Whatever NO_PROXY says, loopback stays off the proxy; upper case wins.
    /// (Which request takes which proxy is tested through a real proxy in
    /// tests/hostile_input.rs.)
    #[test]
    fn variables_are_read_as_go_reads_them() {
        let none = env(&[]);
        assert!(none.rules().is_empty());
        assert_eq!(none.no_proxy, LOOPBACK);
        let set = env(&[
            ("http_proxy", "lower:1"),
            ("HTTP_PROXY", "upper:2"),
            ("https_proxy", "http://tls:3"),
            ("NO_PROXY", ""),
            ("no_proxy", " corp.example "),
        ]);
        assert_eq!(set.http, Some(url("http://upper:2")));
        assert_eq!(set.https, Some(url("http://tls:3")));
        assert_eq!(set.no_proxy, format!("corp.example,{LOOPBACK}"));
        assert_eq!(set.rules().len(), 2);
    }

    #[test]
    fn proxy_values_parse_as_go_reads_them() {
        assert_eq!(parse_proxy_url("proxy.corp:3128"), Some(url("http://proxy.corp:3128")));
        assert_eq!(parse_proxy_url("http://user:pw@proxy:8080"), Some(url("http://user:pw@proxy:8080")));
        assert_eq!(parse_proxy_url(""), None);
    }
}
