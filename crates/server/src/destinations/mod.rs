//! The one gate for outbound calls: may this project's call go to that URL, and with which TLS
//! settings.
//!
//! The pure rules (the URL's shape, which addresses are public, host patterns) live in core
//! (`cardvault_core::destination`). This module holds them parsed once at start, adds each
//! project's own allowlist and TLS profiles (loaded, parsed and opened once per cache period,
//! so a proxy call only looks things up), and resolves names through [`PolicyResolver`], which
//! the upstream client also connects through, so the check and the connection see the same
//! addresses.

mod resolver;
mod tls_profile;
mod url_checks;

use std::sync::Arc;
use std::time::Duration;

use cardvault_core::destination::{
    AllowRule, DestinationError, DestinationRules, InvalidAllowRule,
};
use url::Url;

pub use resolver::{ConnectResolver, NameLookup, PolicyResolver, SystemLookup};
pub use url_checks::UrlChecks;

use crate::cache::TtlCache;
use crate::crypto::{CryptoError, Keyring};
use crate::metrics::DestinationLabel;
use crate::store::{Store, StoreError};
use crate::upstream::{TlsProfile, UpstreamError};

/// Bound on projects whose destination settings are kept.
const MAX_CACHED_PROJECTS: u64 = 10_000;

/// Why a destination is refused. Every one answers `400 Invalid proxy URL`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Url(#[from] DestinationError),
    #[error("the host is not in the server-wide allowlist")]
    NotInServerAllowlist,
    #[error("the host is not in the project's allowlist")]
    NotInProjectAllowlist,
    #[error("an allowlist is required and neither the server nor the project has one")]
    NoAllowlist,
    /// The token was tokenized with `allowed_destinations`, and this is not one of them.
    #[error("the destination is not in the token's allowed_destinations")]
    NotInTokenRule,
}

impl Refusal {
    /// The rule that refused, for the caller's `detail` (names a rule, never the URL).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Url(DestinationError::Malformed) => "proxy_url is not a valid absolute URL",
            Self::Url(DestinationError::TooLong) => "proxy_url is longer than the limit",
            Self::Url(DestinationError::Scheme) => "proxy_url must use https",
            Self::Url(DestinationError::Userinfo) => "proxy_url must not carry credentials",
            Self::Url(DestinationError::Port) => "the port is not allowed (443 and allowed_ports)",
            Self::Url(DestinationError::IpLiteral) => "the host must be a name, not an IP address",
            Self::Url(DestinationError::InternalName) => "the host is an internal name",
            Self::Url(DestinationError::NonPublicAddress) => {
                "the host resolves to a non-public address"
            }
            Self::NotInServerAllowlist => "the host is not in the server-wide allowlist",
            Self::NotInProjectAllowlist => "the host is not in the project's allowlist",
            Self::NoAllowlist => "an allowlist is required and none is set",
            Self::NotInTokenRule => "the destination is not in the token's allowed_destinations",
        }
    }
}

/// A project's destination settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored rule that no longer parses fails the call: dropping it could empty the list,
    /// and an empty list would permit everything.
    #[error("a stored allowlist rule does not parse")]
    StoredRule(#[source] InvalidAllowRule),
    #[error("a stored TLS client key cannot be opened")]
    TlsKey(#[source] CryptoError),
}

/// A project's outbound settings, parsed and opened.
pub struct ProjectDestinations {
    allow: Vec<AllowRule>,
    /// The metrics label of each `allow` rule, in the same order.
    allow_labels: Vec<DestinationLabel>,
    /// TLS profiles with their host pattern, exact hosts before wildcards.
    tls: Vec<(AllowRule, Arc<TlsProfile>)>,
}

impl ProjectDestinations {
    /// The TLS profile whose host pattern matches `url`, if the project has one.
    pub fn tls_for(&self, url: &Url) -> Option<Arc<TlsProfile>> {
        self.tls
            .iter()
            .find(|(rule, _)| rule.permits(url))
            .map(|(_, profile)| profile.clone())
    }
}

/// The settings the gate starts with.
pub struct DestinationSettings {
    pub rules: DestinationRules,
    /// Server-wide allowlist; empty when the operator set none.
    pub allowlist: Vec<AllowRule>,
    pub require_allowlist: bool,
    /// How long a project's settings are kept (0: not kept).
    pub cache_ttl: Duration,
    pub lookup: Arc<dyn NameLookup>,
}

pub struct Destinations {
    urls: UrlChecks,
    allowlist: Vec<AllowRule>,
    /// The metrics label of each `allowlist` rule, in the same order.
    allowlist_labels: Vec<DestinationLabel>,
    require_allowlist: bool,
    resolver: Arc<PolicyResolver>,
    projects: TtlCache<String, Arc<ProjectDestinations>>,
    store: Arc<dyn Store>,
    keyring: Arc<Keyring>,
}

impl Destinations {
    pub fn new(
        settings: DestinationSettings,
        store: Arc<dyn Store>,
        keyring: Arc<Keyring>,
    ) -> Self {
        let resolver = Arc::new(PolicyResolver::new(settings.rules.clone(), settings.lookup));
        let allowlist_labels = settings
            .allowlist
            .iter()
            .map(DestinationLabel::server_rule)
            .collect();
        Self {
            urls: UrlChecks::new(settings.rules, settings.cache_ttl),
            allowlist_labels,
            allowlist: settings.allowlist,
            require_allowlist: settings.require_allowlist,
            resolver,
            projects: TtlCache::new(settings.cache_ttl, MAX_CACHED_PROJECTS),
            store,
            keyring,
        }
    }

    /// The rules on a URL's shape, for parsing requests (no I/O).
    pub fn urls(&self) -> &UrlChecks {
        &self.urls
    }

    /// The resolver every outbound connection goes through.
    pub fn resolver(&self) -> Arc<PolicyResolver> {
        self.resolver.clone()
    }

    /// The project's settings, from the cache or loaded (and opened) now.
    ///
    /// # Errors
    /// [`LoadError`] when the database fails or a stored setting no longer opens.
    /// Drops this instance's cached settings of the project (after it changed them); other
    /// instances see the change within the cache period.
    pub fn forget(&self, project_id: &str) {
        self.projects.remove(project_id);
    }

    pub async fn project(&self, project_id: &str) -> Result<Arc<ProjectDestinations>, LoadError> {
        if let Some(found) = self.projects.get(project_id) {
            return Ok(found);
        }
        let allow = self
            .store
            .destination_rules(project_id)
            .await?
            .iter()
            .map(|rule| AllowRule::parse(rule))
            .collect::<Result<Vec<_>, _>>()
            .map_err(LoadError::StoredRule)?;
        let mut stored = self.store.destination_tls(project_id).await?;
        // Exact hosts before wildcards.
        stored.sort_by_key(|t| t.host.starts_with("*."));
        let mut tls = Vec::with_capacity(stored.len());
        for stored in stored {
            let rule = AllowRule::parse(&stored.host).map_err(LoadError::StoredRule)?;
            let profile =
                tls_profile::open(&self.keyring, project_id, stored).map_err(LoadError::TlsKey)?;
            tls.push((rule, Arc::new(profile)));
        }
        let allow_labels = allow.iter().map(DestinationLabel::project_rule).collect();
        let found = Arc::new(ProjectDestinations {
            allow,
            allow_labels,
            tls,
        });
        self.projects.insert(project_id.to_owned(), found.clone());
        Ok(found)
    }

    /// The server-wide list, when set, and the project's own list, when it has one, must both
    /// permit the destination. With `require_allowlist`, having neither list permits nothing.
    /// Returns the metrics label of the destination: the server-wide rule that matched, else
    /// the project's, else `other`.
    ///
    /// # Errors
    /// The [`Refusal`] naming the list that refused.
    pub fn permit(
        &self,
        project: &ProjectDestinations,
        url: &Url,
    ) -> Result<DestinationLabel, Refusal> {
        let server = matching(&self.allowlist, &self.allowlist_labels, url);
        if !self.allowlist.is_empty() && server.is_none() {
            return Err(Refusal::NotInServerAllowlist);
        }
        let own = matching(&project.allow, &project.allow_labels, url);
        if !project.allow.is_empty() && own.is_none() {
            return Err(Refusal::NotInProjectAllowlist);
        }
        if self.require_allowlist && self.allowlist.is_empty() && project.allow.is_empty() {
            return Err(Refusal::NoAllowlist);
        }
        Ok(server
            .or(own)
            .cloned()
            .unwrap_or_else(DestinationLabel::other))
    }

    /// Resolves the destination and checks every address, without connecting, so a refused
    /// destination fails before a CVC session is taken. The connection resolves through the
    /// same checked answer, so an answer that changes in between cannot slip through.
    ///
    /// # Errors
    /// [`UpstreamError::NonPublicAddress`] or [`UpstreamError::Unresolvable`].
    pub async fn check_addresses(&self, url: &Url) -> Result<(), UpstreamError> {
        self.resolver.check_url(url).await
    }
}

/// The label of the first rule of `rules` that permits `url`, if one does.
fn matching<'a>(
    rules: &[AllowRule],
    labels: &'a [DestinationLabel],
    url: &Url,
) -> Option<&'a DestinationLabel> {
    rules
        .iter()
        .zip(labels)
        .find(|(rule, _)| rule.permits(url))
        .map(|(_, label)| label)
}
