//! Broker URL parsing: `mqtt://host[:port]`, `mqtts://host[:port]`, and MQTT over WebSockets,
//! `ws://host[:port][/path]` and `wss://host[:port][/path]` (for networks that only let HTTPS
//! out). Deliberately narrow: no user info (use `username`/`password`), no query, no fragment,
//! and a path only for WebSockets (where it names the broker's HTTP endpoint, e.g. `/mqtt`), so
//! nothing in the URL is silently ignored.
//!
//! A refused URL may still carry a password (`ssl://user:pw@host`), so no error here quotes the
//! input: [`UrlError`] says what is wrong in words, and a caller that must show the URL shows
//! [`redact`]'s form of it.

use std::fmt;
use std::net::Ipv6Addr;

/// A parsed broker URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// True for `mqtts://` and `wss://`.
    pub tls: bool,
    /// Host name or IP address, without IPv6 brackets.
    pub host: String,
    /// Port (default 1883, 8883 with TLS; 80 for `ws://`, 443 for `wss://`).
    pub port: u16,
    /// For MQTT over WebSockets (`ws://`, `wss://`), the HTTP path of the broker's endpoint
    /// (`/` when the URL has none); `None` for MQTT over TCP.
    pub websocket_path: Option<String>,
}

/// Why a broker URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UrlError(String);

impl BrokerUrl {
    /// Parses `mqtt://host[:port]`, `mqtts://host[:port]`, `ws://host[:port][/path]` or
    /// `wss://host[:port][/path]` (IPv6 as `[addr]`).
    pub fn parse(url: &str) -> Result<BrokerUrl, UrlError> {
        let schemes = [
            ("mqtts://", true, false, 8883),
            ("mqtt://", false, false, 1883),
            ("wss://", true, true, 443),
            ("ws://", false, true, 80),
        ];
        let Some((tls, websocket, default_port, rest)) =
            schemes.iter().find_map(|&(prefix, tls, ws, port)| {
                url.strip_prefix(prefix).map(|r| (tls, ws, port, r))
            })
        else {
            return Err(UrlError(match url.split_once("://") {
                Some((scheme, _)) if is_scheme(scheme) => format!(
                    "scheme {scheme:?} is not supported: use mqtt://, mqtts://, ws:// or wss://"
                ),
                _ => "must start with mqtt://, mqtts://, ws:// or wss://".to_owned(),
            }));
        };
        // The authority ends at the first '/'; before it, '@' would be user info.
        let (rest, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, ""),
        };
        if rest.contains('@') || path.contains('@') {
            return Err(UrlError(
                "user info is not allowed (credentials go in username/password)".into(),
            ));
        }
        if rest.contains(['?', '#']) || path.contains(['?', '#']) {
            return Err(UrlError("a query or fragment is not allowed".into()));
        }
        let websocket_path = if websocket {
            if path.contains(|c: char| c.is_whitespace() || c.is_control()) {
                return Err(UrlError("the path must not contain spaces".into()));
            }
            Some(if path.is_empty() { "/" } else { path }.to_owned())
        } else {
            if !path.is_empty() && path != "/" {
                return Err(UrlError(
                    "only host and port are allowed (a path only with ws:// or wss://)".into(),
                ));
            }
            None
        };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (addr, after) = v6
                .split_once(']')
                .ok_or_else(|| UrlError("unterminated [IPv6] host".into()))?;
            addr.parse::<Ipv6Addr>()
                .map_err(|_| UrlError("the text in [] is not an IPv6 address".into()))?;
            let port = match after.strip_prefix(':') {
                Some(p) => parse_port(p)?,
                None if after.is_empty() => default_port,
                None => return Err(UrlError("unexpected text after ]".into())),
            };
            (addr.to_owned(), port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), parse_port(p)?),
                None => (rest.to_owned(), default_port),
            }
        };
        if host.is_empty() {
            return Err(UrlError("missing host".into()));
        }
        Ok(BrokerUrl {
            tls,
            host,
            port,
            websocket_path,
        })
    }

    /// The scheme it was given with.
    pub fn scheme(&self) -> &'static str {
        match (self.tls, self.websocket_path.is_some()) {
            (false, false) => "mqtt",
            (true, false) => "mqtts",
            (false, true) => "ws",
            (true, true) => "wss",
        }
    }

    /// The host as a socket address string needs it (`[v6]` bracketed).
    pub(crate) fn connect_host(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

fn parse_port(p: &str) -> Result<u16, UrlError> {
    // Not quoted: in `mqtt://user:password` the "port" is the password.
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(UrlError("the port is not a number from 1 to 65535".into())),
        Ok(port) => Ok(port),
    }
}

/// A URL scheme per RFC 3986 (letter, then letters, digits, `+`, `-`, `.`), and short: only
/// then is it safe and useful to name it in an error.
fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= 16
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// `url` as it may be shown in errors, logs and `Debug` output: everything up to the last `@`
/// after the scheme (user info, password) becomes `***`, and so does a port that is not a
/// number (`mqtt://user:password` without a host puts the password there), together with
/// whatever follows it. Malformed input gets the same treatment; without a recognisable scheme
/// everything before the last `@` is masked. A WebSocket path after a numeric port is kept.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) if is_scheme(scheme) => (Some(scheme), rest),
        _ => (None, url),
    };
    let (masked, rest) = match rest.rfind('@') {
        Some(at) => ("***@", &rest[at + 1..]),
        None => ("", rest),
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, ""),
    };
    let rest = match authority.rsplit_once(':') {
        Some((host, port))
            if !host.ends_with(':')
                && !port.contains(']')
                && !port.chars().all(|c| c.is_ascii_digit()) =>
        {
            // The "port" may be a password, and a path after it the rest of one.
            format!("{masked}{host}:***")
        }
        _ => format!("{masked}{authority}{path}"),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{rest}"),
        None => rest,
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}:{}{}",
            self.scheme(),
            self.connect_host(),
            self.port,
            self.websocket_path.as_deref().unwrap_or("")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_the_scheme_default_port() {
        let u = BrokerUrl::parse("mqtt://broker.example").expect("valid");
        assert_eq!(
            (u.tls, u.host.as_str(), u.port),
            (false, "broker.example", 1883)
        );
        let u = BrokerUrl::parse("mqtts://broker.example/").expect("valid");
        assert_eq!((u.tls, u.port), (true, 8883));
    }

    #[test]
    fn explicit_ports_and_ipv6_hosts_parse() {
        let u = BrokerUrl::parse("mqtt://127.0.0.1:1884").expect("valid");
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 1884));
        let u = BrokerUrl::parse("mqtts://[::1]:8884").expect("valid");
        assert_eq!((u.host.as_str(), u.port), ("::1", 8884));
        assert_eq!(u.to_string(), "mqtts://[::1]:8884");
    }

    #[test]
    fn websocket_urls_get_their_default_ports_and_keep_their_path() {
        let u = BrokerUrl::parse("wss://broker.example/mqtt").expect("valid");
        assert_eq!(
            (u.tls, u.port, u.websocket_path.as_deref()),
            (true, 443, Some("/mqtt"))
        );
        assert_eq!(u.to_string(), "wss://broker.example:443/mqtt");
        let u = BrokerUrl::parse("ws://127.0.0.1:8080").expect("valid");
        assert_eq!(
            (u.tls, u.port, u.websocket_path.as_deref()),
            (false, 8080, Some("/"))
        );
        assert_eq!(u.to_string(), "ws://127.0.0.1:8080/");
        let u = BrokerUrl::parse("wss://[::1]:9443/a/b").expect("valid");
        assert_eq!(u.to_string(), "wss://[::1]:9443/a/b");
        let u = BrokerUrl::parse("mqtts://broker:8883").expect("valid");
        assert_eq!(u.websocket_path, None);
    }

    #[test]
    fn websocket_urls_with_credentials_queries_or_spaces_are_refused() {
        for bad in [
            "wss://user:pw@h/mqtt",
            "wss://h/mqtt?x=1",
            "ws://h/mq tt",
            "wss://h/p@x",
            "wss:///mqtt",
        ] {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn urls_with_other_schemes_credentials_paths_or_bad_ports_are_refused() {
        for bad in [
            "tcp://h:1883",
            "mqtt://user:pw@h",
            "mqtt://h/topic",
            "mqtt://h:0",
            "mqtt://h:70000",
            "mqtt://",
            "mqtt://[::1",
            "mqtt://[nope]:1",
        ] {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    /// URLs an operator could plausibly write with a password in them, valid or not.
    const SECRET_URLS: [&str; 8] = [
        "mqtt://user:s3cret@broker:1883",
        "ssl://user:s3cret@broker:8883",
        "mqtts://user:s3cret@[::1]:8883",
        "mqtt://user:s3cret",
        "mqtt://user:s3cret/",
        "ssl:/user:s3cret@broker",
        "user:s3cret@broker:1883",
        "tcp://s3cret@@broker",
    ];

    #[test]
    fn url_errors_never_repeat_a_password() {
        for url in SECRET_URLS {
            let err = BrokerUrl::parse(url).expect_err(url);
            for shown in [err.to_string(), format!("{err:?}")] {
                assert!(!shown.contains("s3cret"), "{url} -> {shown}");
            }
        }
        let err = BrokerUrl::parse("ssl://user:s3cret@broker:8883").expect_err("ssl");
        assert!(err.to_string().contains("\"ssl\""), "{err}");
    }

    #[test]
    fn redaction_hides_user_info_and_keeps_the_rest() {
        for url in SECRET_URLS {
            let shown = redact(url);
            assert!(!shown.contains("s3cret"), "{url} -> {shown}");
        }
        assert_eq!(
            redact("ssl://user:s3cret@broker:8883"),
            "ssl://***@broker:8883"
        );
        assert_eq!(redact("mqtt://broker:1883"), "mqtt://broker:1883");
        assert_eq!(redact("mqtts://[::1]:8883/"), "mqtts://[::1]:8883/");
        assert_eq!(redact("mqtt://[::1]"), "mqtt://[::1]");
        assert_eq!(
            redact("wss://u:s3cret@broker:443/mqtt"),
            "wss://***@broker:443/mqtt"
        );
        assert_eq!(redact("wss://u:s3/cret"), "wss://u:***");
    }

    #[test]
    fn a_parsed_url_displays_without_user_info() {
        // Parsing refuses user info, so Display and Debug cannot carry a password.
        let u = BrokerUrl::parse("mqtts://broker:8883").expect("valid");
        assert_eq!(u.to_string(), "mqtts://broker:8883");
        assert!(BrokerUrl::parse("mqtts://user:s3cret@broker:8883").is_err());
    }
}
