//! A token's own rule on where its data may be sent (`allowed_destinations`), chosen when it was
//! tokenized. It is sealed with the card, inside the same ciphertext, so whoever can edit the
//! database cannot widen it: a changed rule is a changed ciphertext, which no longer opens.

use cardvault_core::destination::{AllowRule, InvalidAllowRule};
use url::Url;

/// Patterns a token may carry at most: a token goes to a handful of processors, and the rule
/// is sealed into every copy of the token's data.
pub const MAX_PATTERNS: usize = 32;
/// Longest pattern accepted, in bytes (a host and a path prefix).
pub const MAX_PATTERN_BYTES: usize = 512;

/// The destinations a token may be proxied to, in the pattern language of project allowlists.
///
/// Invariant: never empty (an empty rule would read as "anywhere" to a careless check, and as
/// "nowhere" to a careful one; neither is what a caller means, so it is refused at input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedDestinations(Vec<AllowRule>);

/// Why a submitted rule was refused; each is `400 Invalid value for allowed_destinations`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidAllowedDestinations {
    NotAList,
    Empty,
    TooLarge,
    Pattern,
}

impl InvalidAllowedDestinations {
    /// The reason, for the caller's `detail` (a `&'static str`, so the limits are spelled out;
    /// a unit test holds them to [`MAX_PATTERNS`] and [`MAX_PATTERN_BYTES`]).
    pub fn reason(self) -> &'static str {
        match self {
            Self::NotAList => {
                "allowed_destinations must be a list of destination patterns (strings)"
            }
            Self::Empty => "allowed_destinations must name at least one destination",
            Self::TooLarge => {
                "allowed_destinations names at most 32 destinations of at most 512 characters"
            }
            Self::Pattern => {
                "each allowed destination must be HOST or *.DOMAIN, optionally followed by /PATH (no scheme or port)"
            }
        }
    }
}

impl AllowedDestinations {
    /// Parses the patterns a caller submitted.
    ///
    /// # Errors
    /// [`InvalidAllowedDestinations`] for an empty or oversized list or a pattern that does
    /// not parse.
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<Self, InvalidAllowedDestinations> {
        if patterns.is_empty() {
            return Err(InvalidAllowedDestinations::Empty);
        }
        if patterns.len() > MAX_PATTERNS
            || patterns
                .iter()
                .any(|p| p.as_ref().len() > MAX_PATTERN_BYTES)
        {
            return Err(InvalidAllowedDestinations::TooLarge);
        }
        patterns
            .iter()
            .map(|p| AllowRule::parse(p.as_ref()))
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
            .map_err(|_| InvalidAllowedDestinations::Pattern)
    }

    /// Rebuilds the rule from its sealed form (patterns as [`Self::patterns`] wrote them).
    ///
    /// # Errors
    /// The pattern that no longer parses; the caller treats the token's data as corrupt.
    pub fn from_sealed(patterns: &[String]) -> Result<Self, InvalidAllowRule> {
        if patterns.is_empty() {
            return Err(InvalidAllowRule(String::new()));
        }
        patterns
            .iter()
            .map(|p| AllowRule::parse(p))
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Whether some pattern permits `url`.
    pub fn permits(&self, url: &Url) -> bool {
        cardvault_core::destination::allowlist_permits(&self.0, url)
    }

    /// The patterns in their normalized form (lower-case host, no trailing dot or slash): what
    /// is sealed and what is shown.
    pub fn patterns(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_use_the_allowlist_language_and_are_normalized() {
        let rule = AllowedDestinations::parse(&["API.Stripe.com.", "*.adyen.com/pal/"]).unwrap();
        assert_eq!(rule.patterns(), ["api.stripe.com", "*.adyen.com/pal"]);
        let permits = |u: &str| rule.permits(&Url::parse(u).unwrap());
        assert!(permits("https://api.stripe.com/v1/charges"));
        assert!(permits(
            "https://checkout-test.adyen.com/pal/servlet/Payment"
        ));
        assert!(!permits("https://checkout-test.adyen.com/checkout/v71"));
        assert!(!permits("https://api.stripe.com.evil.test/"));
        assert!(!permits("https://adyen.com/pal/"));
        assert_eq!(
            AllowedDestinations::from_sealed(&rule.patterns()).unwrap(),
            rule
        );
    }

    #[test]
    fn bad_rules_are_refused() {
        let none: [&str; 0] = [];
        assert_eq!(
            AllowedDestinations::parse(&none),
            Err(InvalidAllowedDestinations::Empty)
        );
        for bad in [
            "https://api.stripe.com",
            "api.stripe.com:443",
            "*",
            "*.com",
            "a b",
        ] {
            assert_eq!(
                AllowedDestinations::parse(&[bad]),
                Err(InvalidAllowedDestinations::Pattern),
                "{bad}"
            );
        }
        let many = vec!["api.stripe.com"; MAX_PATTERNS + 1];
        assert_eq!(
            AllowedDestinations::parse(&many),
            Err(InvalidAllowedDestinations::TooLarge)
        );
        assert!(AllowedDestinations::from_sealed(&[]).is_err());
        let too_large = InvalidAllowedDestinations::TooLarge.reason();
        assert!(too_large.contains(&format!("at most {MAX_PATTERNS} destinations")));
        assert!(too_large.contains(&format!("at most {MAX_PATTERN_BYTES} characters")));
    }
}
