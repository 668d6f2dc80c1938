//! Name resolution that only ever yields public addresses, and yields the same ones to the
//! pre-flight check and to the connection.
//!
//! A name is resolved once and its checked answer kept for [`ANSWER_TTL`]: the connector then
//! dials exactly the addresses that were checked. A DNS server that answers "public" to the check
//! and "private" to the connection (rebinding) therefore never gets its second answer used; and
//! any answer containing one non-public address is refused whole.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cardvault_core::destination::DestinationRules;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

use crate::cache::TtlCache;
use crate::upstream::UpstreamError;

/// How long a checked answer is reused. Short enough to follow a processor's DNS changes.
const ANSWER_TTL: Duration = Duration::from_secs(30);
/// Bound on remembered names, so a caller cycling through names cannot grow memory.
const MAX_CACHED_NAMES: u64 = 4096;

/// Turns a host name into addresses: the system resolver, or a fake in tests.
#[async_trait]
pub trait NameLookup: Send + Sync {
    async fn lookup(&self, host: &str) -> std::io::Result<Vec<IpAddr>>;
}

/// The operating system's resolver (`getaddrinfo`, off the async threads).
pub struct SystemLookup;

#[async_trait]
impl NameLookup for SystemLookup {
    async fn lookup(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
        Ok(tokio::net::lookup_host((host, 0))
            .await?
            .map(|a| a.ip())
            .collect())
    }
}

/// The resolver the upstream client connects through.
pub struct PolicyResolver {
    rules: DestinationRules,
    lookup: Arc<dyn NameLookup>,
    /// Addresses that passed the policy, by lowercased name.
    answers: TtlCache<String, Arc<[IpAddr]>>,
}

impl PolicyResolver {
    pub fn new(rules: DestinationRules, lookup: Arc<dyn NameLookup>) -> Self {
        Self {
            rules,
            lookup,
            answers: TtlCache::new(ANSWER_TTL, MAX_CACHED_NAMES),
        }
    }

    /// Checks a destination's addresses without connecting.
    pub async fn check_url(&self, url: &Url) -> Result<(), UpstreamError> {
        match url.host() {
            Some(Host::Domain(name)) => self.resolve(name).await.map(drop),
            Some(Host::Ipv4(ip)) => self.check_ip(ip.into()),
            Some(Host::Ipv6(ip)) => self.check_ip(ip.into()),
            None => Err(UpstreamError::Unresolvable),
        }
    }

    fn check_ip(&self, ip: IpAddr) -> Result<(), UpstreamError> {
        if self.rules.allows_address(ip) {
            Ok(())
        } else {
            Err(UpstreamError::NonPublicAddress)
        }
    }

    /// The checked addresses of `name`: from the recent answer if there is one, else looked up.
    pub async fn resolve(&self, name: &str) -> Result<Arc<[IpAddr]>, UpstreamError> {
        let key = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(addrs) = self.answers.get(&key) {
            return Ok(addrs);
        }
        let addrs = self
            .lookup
            .lookup(&key)
            .await
            .map_err(|_| UpstreamError::Unresolvable)?;
        if addrs.is_empty() {
            return Err(UpstreamError::Unresolvable);
        }
        // One bad address spoils the answer: a mixed answer is how rebinding attacks start.
        for ip in &addrs {
            self.check_ip(*ip)?;
        }
        let addrs: Arc<[IpAddr]> = addrs.into();
        self.answers.insert(key, addrs.clone());
        Ok(addrs)
    }
}

/// The connector's view: hyper asks for a name, gets only checked addresses (port 0 is replaced
/// by the URL's port by the connector).
pub struct ConnectResolver(pub Arc<PolicyResolver>);

impl Resolve for ConnectResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = self.0.clone();
        Box::pin(async move {
            let addrs = resolver.resolve(name.as_str()).await?;
            let addrs: Vec<SocketAddr> = addrs.iter().map(|ip| SocketAddr::new(*ip, 0)).collect();
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Answers from a script: the n-th lookup gets the n-th answer (the last one repeats).
    struct Scripted {
        answers: Vec<Vec<IpAddr>>,
        calls: AtomicUsize,
    }

    impl Scripted {
        fn new(answers: &[&[&str]]) -> Arc<Self> {
            let answers = answers
                .iter()
                .map(|a| a.iter().map(|ip| ip.parse().unwrap()).collect())
                .collect();
            Arc::new(Self {
                answers,
                calls: AtomicUsize::new(0),
            })
        }
    }

    #[async_trait]
    impl NameLookup for Scripted {
        async fn lookup(&self, _host: &str) -> std::io::Result<Vec<IpAddr>> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(self.answers[n.min(self.answers.len() - 1)].clone())
        }
    }

    fn resolver(lookup: Arc<dyn NameLookup>) -> Arc<PolicyResolver> {
        Arc::new(PolicyResolver::new(DestinationRules::default(), lookup))
    }

    async fn connect_addrs(
        resolver: &Arc<PolicyResolver>,
        name: &str,
    ) -> Result<Vec<IpAddr>, String> {
        let name: Name = name.parse().unwrap();
        match ConnectResolver(resolver.clone()).resolve(name).await {
            Ok(addrs) => Ok(addrs.map(|a| a.ip()).collect()),
            Err(e) => Err(e.to_string()),
        }
    }

    #[tokio::test]
    async fn private_answers_are_refused() {
        for answer in [
            &["10.0.0.5"][..],
            &["127.0.0.1"],
            &["169.254.169.254"],
            &["::1"],
            &["fd00:ec2::254"],
            &["::ffff:10.1.1.1"],
        ] {
            let r = resolver(Scripted::new(&[answer]));
            let url = Url::parse("https://pay.example.com/x").unwrap();
            assert!(
                matches!(
                    r.check_url(&url).await,
                    Err(UpstreamError::NonPublicAddress)
                ),
                "{answer:?}"
            );
            assert!(
                connect_addrs(&r, "pay.example.com").await.is_err(),
                "{answer:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_mixed_answer_is_refused_whole() {
        let r = resolver(Scripted::new(&[&["93.184.216.34", "127.0.0.1"]]));
        let url = Url::parse("https://pay.example.com/x").unwrap();
        assert!(matches!(
            r.check_url(&url).await,
            Err(UpstreamError::NonPublicAddress)
        ));
        assert!(connect_addrs(&r, "pay.example.com").await.is_err());
    }

    #[tokio::test]
    async fn rebinding_cannot_win_the_check_and_connect_see_the_same_addresses() {
        let dns = Scripted::new(&[&["93.184.216.34"], &["127.0.0.1"]]);
        let r = resolver(dns.clone());
        let url = Url::parse("https://pay.example.com/x").unwrap();
        r.check_url(&url).await.unwrap();
        // The connection reuses the checked answer: the second, private answer is never asked for.
        let dialed = connect_addrs(&r, "pay.example.com").await.unwrap();
        assert_eq!(dialed, vec!["93.184.216.34".parse::<IpAddr>().unwrap()]);
        assert_eq!(dns.calls.load(Ordering::SeqCst), 1);
        // Had the check's answer expired, the new answer would be checked again and refused.
        let fresh = resolver(Scripted::new(&[&["127.0.0.1"]]));
        assert!(connect_addrs(&fresh, "pay.example.com").await.is_err());
    }

    #[tokio::test]
    async fn unresolvable_names_fail_closed() {
        struct Failing;
        #[async_trait]
        impl NameLookup for Failing {
            async fn lookup(&self, _host: &str) -> std::io::Result<Vec<IpAddr>> {
                Err(std::io::Error::other("no such host"))
            }
        }
        let r = resolver(Arc::new(Failing));
        let url = Url::parse("https://nope.example.com/").unwrap();
        assert!(matches!(
            r.check_url(&url).await,
            Err(UpstreamError::Unresolvable)
        ));
        let empty = resolver(Scripted::new(&[&[]]));
        assert!(matches!(
            empty.check_url(&url).await,
            Err(UpstreamError::Unresolvable)
        ));
    }
}
