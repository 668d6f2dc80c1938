//! The rules on a destination URL's shape, with the URLs that passed them remembered: a
//! merchant calls the same few processor endpoints over and over, and reading a URL by the
//! WHATWG rules was most of a proxy call's destination check (docs/benchmarks.md, issue 17's
//! thirty-second step). The rules never change while the process runs, so a URL that passed
//! once passes again; a URL that failed is checked again each time it comes (nothing a caller
//! sends can fill the cache with refusals). A URL that could carry a card number is never kept.

use std::time::Duration;

use cardvault_core::destination::{DestinationError, DestinationRules};
use url::Url;

use crate::cache::TtlCache;

/// URLs kept at most.
const KEPT_URLS: u64 = 256;
/// A longer URL is checked each time: the processors' endpoints are short.
const MAX_KEPT_URL_BYTES: usize = 256;
/// As many digits as a card number's shortest: a URL with that many (outside an address and
/// a port) is never kept, so a card number a caller put in it (by mistake) is not held past
/// the call.
const CARD_NUMBER_DIGITS: usize = 12;

pub struct UrlChecks {
    rules: DestinationRules,
    passed: TtlCache<String, Url>,
}

impl UrlChecks {
    /// Passed URLs are kept for `ttl` (0: not kept, as every cache of the vault).
    pub fn new(rules: DestinationRules, ttl: Duration) -> Self {
        Self {
            rules,
            passed: TtlCache::new(ttl, KEPT_URLS),
        }
    }

    /// [`DestinationRules::check_url`], answered from the kept URLs when `raw` passed before.
    ///
    /// # Errors
    /// The rules' [`DestinationError`].
    pub fn check(&self, raw: &str) -> Result<Url, DestinationError> {
        if let Some(url) = self.passed.get(raw) {
            return Ok(url);
        }
        let url = self.rules.check_url(raw)?;
        if may_keep(raw, &url) {
            self.passed.insert(raw.to_owned(), url.clone());
        }
        Ok(url)
    }
}

/// Short, and without a card number's worth of digits in its host name, path, query and
/// fragment (an address and a port are no card data).
fn may_keep(raw: &str, url: &Url) -> bool {
    let digits = |text: &str| text.bytes().filter(u8::is_ascii_digit).count();
    let in_name = match url.host() {
        Some(url::Host::Domain(name)) => digits(name),
        _ => 0,
    };
    raw.len() <= MAX_KEPT_URL_BYTES
        && in_name + digits(&url[url::Position::BeforePath..]) < CARD_NUMBER_DIGITS
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use cardvault_core::destination::{DestinationError, DestinationRules};

    use super::UrlChecks;

    const KEPT: Duration = Duration::from_secs(60);

    #[test]
    fn a_url_is_answered_as_the_rules_answer_it_the_first_time_and_after() {
        let checks = UrlChecks::new(DestinationRules::default(), KEPT);
        let rules = DestinationRules::default();
        for raw in [
            "https://api.stripe.com/v1/payment_intents",
            "https://api.stripe.com/v1/payment_intents",
            "https://API.Stripe.com:443/v1/payment_intents?expand[]=x",
            "http://api.stripe.com/v1/charges",
            "https://127.0.0.1/v1/charges",
            "https://localhost/v1/charges",
            "https://user:pw@api.stripe.com/",
            "https://api.stripe.com:8443/",
            "not a url",
        ] {
            for _ in 0..2 {
                assert_eq!(checks.check(raw), rules.check_url(raw), "{raw}");
            }
        }
    }

    #[test]
    fn only_urls_that_passed_are_kept_and_none_with_a_card_numbers_worth_of_digits() {
        let checks = UrlChecks::new(DestinationRules::default(), KEPT);
        checks.check("https://api.stripe.com/v1/charges").unwrap();
        assert!(
            checks
                .passed
                .get("https://api.stripe.com/v1/charges")
                .is_some()
        );

        assert_eq!(
            checks.check("http://api.stripe.com/v1/charges"),
            Err(DestinationError::Scheme)
        );
        assert!(
            checks
                .passed
                .get("http://api.stripe.com/v1/charges")
                .is_none()
        );

        for raw in [
            "https://api.stripe.com/v1/cards/4242424242424242",
            "https://api.stripe.com/v1/charges?card=4242-4242-4242-4242",
            "https://api.stripe.com/v1/charges#4242 4242 4242 4242",
            "https://4242424242424242.example.com/v1/charges",
        ] {
            checks.check(raw).unwrap();
            assert!(checks.passed.get(raw).is_none(), "{raw}");
        }
        // An address and a port hold digits that are no card number.
        let private = UrlChecks::new(
            DestinationRules {
                allow_private: true,
                ..DestinationRules::default()
            },
            KEPT,
        );
        private.check("https://127.0.0.1:40123/v1/charges").unwrap();
        assert!(
            private
                .passed
                .get("https://127.0.0.1:40123/v1/charges")
                .is_some()
        );
        let long = format!("https://api.stripe.com/{}", "a".repeat(300));
        checks.check(&long).unwrap();
        assert!(checks.passed.get(long.as_str()).is_none());
    }

    #[test]
    fn nothing_is_kept_when_the_caches_are_off() {
        let checks = UrlChecks::new(DestinationRules::default(), Duration::ZERO);
        checks.check("https://api.stripe.com/v1/charges").unwrap();
        assert!(
            checks
                .passed
                .get("https://api.stripe.com/v1/charges")
                .is_none()
        );
        assert!(checks.check("https://api.stripe.com/v1/charges").is_ok());
    }
}
