//! The shared SSRF corpus (`shared/testdata/ssrf-deny-urls.txt`, vendored in `tests/data/`):
//! every line, as written and with its scheme forced to `https`, is refused by the destination
//! rules before any DNS lookup — except host names whose refusal depends on what they resolve
//! to, which are listed in `cardvault_testkit::ssrf_corpus::NEEDS_DNS` and refused by the
//! server's resolver check (tested there).

use cardvault_core::destination::DestinationRules;
use cardvault_testkit::ssrf_corpus::{NEEDS_DNS, corpus, force_https};

#[test]
fn every_corpus_url_is_refused_before_dns() {
    let rules = DestinationRules::default();
    let corpus = corpus();
    assert!(corpus.len() >= 300, "the corpus shrank to {}", corpus.len());
    let mut needed_dns = std::collections::BTreeSet::new();
    for line in &corpus {
        for url in [line.clone(), force_https(line)] {
            if let Ok(parsed) = rules.check_url(&url) {
                let host = parsed.host_str().unwrap_or_default().to_owned();
                assert!(
                    NEEDS_DNS.contains(&host.as_str()),
                    "{url} passed the rules with host {host:?}"
                );
                assert!(
                    matches!(parsed.host(), Some(url::Host::Domain(_))),
                    "{url}: an IP literal passed the rules"
                );
                needed_dns.insert(host);
            }
        }
    }
    assert_eq!(needed_dns.len(), NEEDS_DNS.len(), "{needed_dns:?}");
}
