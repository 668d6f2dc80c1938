//! Where the proxy may send card data: the checks that need no network.
//!
//! [`DestinationRules::check_url`] runs before any I/O; [`is_public`] is applied again by the
//! server's resolver to every address a name resolves to, so the check and the connection use
//! the same addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

/// The operator's settings for outbound destinations.
#[derive(Debug, Clone)]
pub struct DestinationRules {
    /// Local testing only: lets `http://` through.
    pub allow_http: bool,
    /// Local testing only: lets loopback, private and IP-literal destinations (on any port) through.
    pub allow_private: bool,
    /// Ports allowed besides the scheme's default.
    pub allowed_ports: Vec<u16>,
    /// Longest URL accepted, in bytes: the HTTP client cannot send a longer request line anyway,
    /// so it is refused before anything else happens.
    pub max_url_bytes: usize,
}

/// Longer than any processor endpoint needs, far below what an HTTP request line can carry.
pub const DEFAULT_MAX_URL_BYTES: usize = 8 * 1024;

impl Default for DestinationRules {
    fn default() -> Self {
        Self {
            allow_http: false,
            allow_private: false,
            allowed_ports: vec![443],
            max_url_bytes: DEFAULT_MAX_URL_BYTES,
        }
    }
}

/// Why a destination was refused (all map to `Invalid proxy URL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    #[error("the URL does not parse")]
    Malformed,
    #[error("the URL is longer than the limit")]
    TooLong,
    #[error("the scheme is not allowed")]
    Scheme,
    #[error("the URL carries credentials")]
    Userinfo,
    #[error("the port is not allowed")]
    Port,
    #[error("the host is an IP address")]
    IpLiteral,
    #[error("the host is an internal name")]
    InternalName,
    #[error("the host resolves to a non-public address")]
    NonPublicAddress,
}

impl DestinationRules {
    /// Parses and checks a destination URL, once; the returned `Url` is the only form used after.
    ///
    /// # Errors
    /// A [`DestinationError`] naming the first rule the URL breaks.
    pub fn check_url(&self, raw: &str) -> Result<Url, DestinationError> {
        if raw.len() > self.max_url_bytes {
            return Err(DestinationError::TooLong);
        }
        if raw.chars().any(|c| c.is_control() || c == '\\') {
            return Err(DestinationError::Malformed);
        }
        let url = Url::parse(raw).map_err(|_| DestinationError::Malformed)?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            _ => return Err(DestinationError::Scheme),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(DestinationError::Userinfo);
        }
        let host = url.host().ok_or(DestinationError::Malformed)?;
        // 443 is always allowed (an https URL without a port means 443); others only if listed.
        if let Some(port) = url.port()
            && port != 443
            && !self.allow_private
            && !self.allowed_ports.contains(&port)
        {
            return Err(DestinationError::Port);
        }
        match host {
            Host::Ipv4(_) | Host::Ipv6(_) if !self.allow_private => {
                Err(DestinationError::IpLiteral)
            }
            Host::Domain(name) if !is_hostname(name) => Err(DestinationError::Malformed),
            Host::Domain(name) if !self.allow_private && is_internal_name(name) => {
                Err(DestinationError::InternalName)
            }
            _ => Ok(url),
        }
    }

    /// Whether a resolved address may be connected to.
    pub fn allows_address(&self, ip: IpAddr) -> bool {
        self.allow_private || is_public(ip)
    }
}

/// A DNS host name: labels of letters, digits, `-` (and `_`, which some real hosts carry).
/// WHATWG URL parsing lets through characters like `!` that no resolver should be handed.
fn is_hostname(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Suffixes of names that only resolve inside a network (RFC 6761/6762/8375, ICANN's private-use
/// `.internal`, Kubernetes' `.svc`, and common corporate ones).
const INTERNAL_SUFFIXES: [&str; 9] = [
    "localhost",
    "local",
    "internal",
    "localdomain",
    "home.arpa",
    "intranet",
    "lan",
    "corp",
    "svc",
];

/// Names that only mean something inside a network: never a payment processor.
fn is_internal_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if !name.contains('.') {
        return true;
    }
    INTERNAL_SUFFIXES
        .iter()
        .any(|suffix| name == *suffix || name.ends_with(&format!(".{suffix}")))
}

/// One entry of a destination allowlist: a host (`api.stripe.com`) or its subdomains
/// (`*.adyen.com`, which does not match `adyen.com` itself), optionally with a path prefix
/// (`api.stripe.com/v1`, matching `/v1` and `/v1/…` but not `/v10`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    host: HostPattern,
    path_prefix: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    SubdomainsOf(String),
}

/// An allowlist entry that cannot be a host pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid destination pattern {0:?}: expected HOST, *.DOMAIN, optionally followed by /PATH")]
pub struct InvalidAllowRule(pub String);

impl AllowRule {
    /// # Errors
    /// [`InvalidAllowRule`] for a scheme, a port, a bare `*`, a wildcard not in first place, or
    /// characters no host name has.
    pub fn parse(text: &str) -> Result<Self, InvalidAllowRule> {
        let invalid = || InvalidAllowRule(text.to_owned());
        let text = text.trim();
        let (host, path) = match text.find('/') {
            Some(i) => (&text[..i], Some(&text[i..])),
            None => (text, None),
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let (pattern, name) = match host.strip_prefix("*.") {
            Some(rest) => (HostPattern::SubdomainsOf(rest.to_owned()), rest.to_owned()),
            None => (HostPattern::Exact(host.clone()), host.clone()),
        };
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        // A wildcard needs a registrable-looking domain under it: `*.com` would be "anything".
        let wildcard_too_wide =
            matches!(pattern, HostPattern::SubdomainsOf(_)) && !name.contains('.');
        if wildcard_too_wide || !name.split('.').all(label_ok) {
            return Err(invalid());
        }
        let path_prefix = match path {
            None | Some("/") => None,
            Some(p) if p.chars().any(|c| c.is_whitespace() || c == '?' || c == '#') => {
                return Err(invalid());
            }
            Some(p) => Some(p.trim_end_matches('/').to_owned()),
        };
        Ok(Self {
            host: pattern,
            path_prefix,
        })
    }

    pub fn permits(&self, url: &Url) -> bool {
        let Some(host) = url.host_str() else {
            return false;
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let host_ok = match &self.host {
            HostPattern::Exact(h) => host == *h,
            // At least one label and a dot before the domain: `x.adyen.com`, not `adyen.com`.
            HostPattern::SubdomainsOf(d) => host
                .strip_suffix(d.as_str())
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
        };
        let path_ok = match &self.path_prefix {
            None => true,
            Some(prefix) => {
                let path = url.path();
                path == prefix
                    || path
                        .strip_prefix(prefix.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            }
        };
        host_ok && path_ok
    }
}

impl std::fmt::Display for AllowRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            HostPattern::Exact(h) => f.write_str(h)?,
            HostPattern::SubdomainsOf(d) => write!(f, "*.{d}")?,
        }
        if let Some(p) = &self.path_prefix {
            f.write_str(p)?;
        }
        Ok(())
    }
}

/// True when some rule permits `url`. An empty list permits nothing: whether an empty list
/// applies at all is the caller's decision, never an accidental "allow all".
pub fn allowlist_permits(rules: &[AllowRule], url: &Url) -> bool {
    rules.iter().any(|r| r.permits(url))
}

/// True only for globally routable unicast addresses.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0                                   // "this network"
        || a == 10                             // RFC 1918
        || a == 127                            // loopback
        || (a == 100 && (64..128).contains(&b)) // CGNAT
        || (a == 169 && b == 254)              // link-local, cloud metadata
        || (a == 172 && (16..32).contains(&b)) // RFC 1918
        || (a == 192 && b == 0 && c == 0)      // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)      // TEST-NET-1
        || (a == 192 && b == 88 && c == 99)    // 6to4 relay anycast
        || (a == 192 && b == 168)              // RFC 1918
        || (a == 198 && (b == 18 || b == 19))  // benchmarking
        || (a == 198 && b == 51 && c == 100)   // TEST-NET-2
        || (a == 203 && b == 0 && c == 113)    // TEST-NET-3
        || a >= 224) // multicast, reserved 240/4, broadcast
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if let Some(v4) = embedded_v4(ip) {
        return is_public_v4(v4);
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || (s[0] & 0xfe00) == 0xfc00       // unique local, incl. fd00:ec2::254
        || (s[0] & 0xffc0) == 0xfe80       // link-local
        || (s[0] & 0xffc0) == 0xfec0       // site-local (deprecated)
        || (s[0] & 0xff00) == 0xff00       // multicast
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x3fff && s[1] < 0x1000)  // documentation (RFC 9637)
        || (s[0] == 0x2001 && s[1] < 0x0200)  // IETF protocol assignments, Teredo, benchmarking
        || s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0 // discard-only
        || (s[0] & 0xe000) != 0x2000) // outside global unicast 2000::/3
}

/// The IPv4 address carried inside an IPv6 one: mapped, compatible, NAT64 or 6to4.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let o = ip.octets();
    let tail = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if s[..5] == [0, 0, 0, 0, 0] && (s[5] == 0xffff || (s[5] == 0 && (s[6] != 0 || s[7] > 1))) {
        return Some(tail); // ::ffff:a.b.c.d and ::a.b.c.d
    }
    if s[0] == 0x0064 && s[1] == 0xff9b {
        // The well-known NAT64 prefix 64:ff9b::/96 carries the IPv4 address in its last 32 bits;
        // anything else under 64:ff9b::/32 (the local-use 64:ff9b:1::/48 puts it elsewhere) is
        // treated as the loopback it may translate to: never public.
        return Some(if s[2..6] == [0, 0, 0, 0] {
            tail
        } else {
            Ipv4Addr::LOCALHOST
        });
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5])); // 6to4
    }
    None
}

#[cfg(test)]
mod tests;
