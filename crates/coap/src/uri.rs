//! `coap://` and `coaps://` URIs of the targets the gateway talks to (observe targets, later
//! LwM2M servers). A `coaps://` target is reached through the DTLS endpoint.

use crate::error::CoapError;

/// A parsed `coap[s]://host[:port]/path?query` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoapUri {
    /// `coaps://`: over DTLS.
    pub secure: bool,
    /// Host name or IP literal (without brackets).
    pub host: String,
    /// Port (5683 by default, 5684 for `coaps://`).
    pub port: u16,
    /// Path segments, percent-decoded.
    pub path: Vec<String>,
    /// Query items, percent-decoded.
    pub query: Vec<String>,
}

fn percent_decode(s: &str, uri: &str) -> Result<String, CoapError> {
    let bad = |reason| CoapError::InvalidUri {
        uri: uri.to_owned(),
        reason,
    };
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .ok_or(bad("truncated percent-encoding"))?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad("bad percent-encoding"))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad("bad percent-encoding"))?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad("path is not UTF-8"))
}

/// Parses a `coap://` or `coaps://` URI (RFC 7252 §6.1, §6.2).
pub fn parse_uri(uri: &str) -> Result<CoapUri, CoapError> {
    let bad = |reason| CoapError::InvalidUri {
        uri: uri.to_owned(),
        reason,
    };
    let (secure, rest) = match (uri.strip_prefix("coap://"), uri.strip_prefix("coaps://")) {
        (Some(rest), _) => (false, rest),
        (_, Some(rest)) => (true, rest),
        _ => return Err(bad("scheme must be coap:// or coaps://")),
    };
    let default_port = if secure { 5684 } else { 5683 };
    if rest.contains('#') {
        return Err(bad("fragments are not allowed"));
    }
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(split);
    let (host, port) = if let Some(r) = authority.strip_prefix('[') {
        let end = r.find(']').ok_or(bad("unterminated IPv6 literal"))?;
        let host = &r[..end];
        let after = &r[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad("bad port"))?,
            None if after.is_empty() => default_port,
            None => return Err(bad("junk after IPv6 literal")),
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| bad("bad port"))?),
            None => (authority, default_port),
        }
    };
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (tail, None),
    };
    let path = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s, uri))
        .collect::<Result<Vec<_>, _>>()?;
    let query = query
        .map(|q| {
            q.split('&')
                .filter(|s| !s.is_empty())
                .map(|s| percent_decode(s, uri))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?
        .unwrap_or_default();
    Ok(CoapUri {
        secure,
        host: host.to_owned(),
        port,
        path,
        query,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_with_ipv6_port_path_and_query_parses() {
        let u = parse_uri("coap://[::1]:5690/sensors/t%20a?ticks&x=1").expect("parse");
        assert_eq!(u.host, "::1");
        assert_eq!(u.port, 5690);
        assert_eq!(u.path, vec!["sensors", "t a"]);
        assert_eq!(u.query, vec!["ticks", "x=1"]);
        let u = parse_uri("coap://sensor.local/temp").expect("parse");
        assert_eq!((u.host.as_str(), u.port), ("sensor.local", 5683));
        assert!(parse_uri("http://x/").is_err());
        assert!(parse_uri("coap://:80/").is_err());
        let s = parse_uri("coaps://sensor.local/temp").expect("parse");
        assert!(s.secure && s.port == 5684);
        assert!(!parse_uri("coap://sensor.local/temp").expect("parse").secure);
        assert!(parse_uri("http://sensor.local/temp").is_err());
        assert!(parse_uri("coap://[::1/").is_err());
    }
}
