//! Which budget an authenticated call draws on (see [`crate::limits::rate`]). The check runs
//! right after the caller is known, before the body is parsed or anything is looked up, so a
//! call over budget changes nothing and costs little.

use crate::limits::rate::Budget;

/// The budget of a call on `route` (the route template, never the concrete path).
pub fn budget_for(route: &str) -> Budget {
    match route {
        "/proxy/transaction" => Budget::Proxy,
        "/detokenize" => Budget::Reveal,
        // Calls a merchant's backend makes per checkout: minting a wax key is one of them, so
        // it shares tokenize's budget rather than the much smaller provisioning one.
        "/tokenize"
        | "/test-tokens"
        | "/tokens/{token}"
        | "/collect/sessions"
        | "/collect/sessions/{id}"
        | "/proxy/delete-cvc-session"
        | "/proxy/delete-cvc-session/"
        | "/proxy/delete-cvc-session/{id}" => Budget::Tokenize,
        // Applications, projects, sub-projects, the audit log, the key check, and any route
        // added later: a forgotten route is limited, never free.
        _ => Budget::Provisioning,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_authenticated_route_draws_on_its_class() {
        for (route, budget) in [
            ("/tokenize", Budget::Tokenize),
            ("/test-tokens", Budget::Tokenize),
            ("/tokens/{token}", Budget::Tokenize),
            ("/proxy/delete-cvc-session/{id}", Budget::Tokenize),
            ("/collect/sessions", Budget::Tokenize),
            ("/collect/sessions/{id}", Budget::Tokenize),
            ("/proxy/transaction", Budget::Proxy),
            ("/detokenize", Budget::Reveal),
            ("/api/applications", Budget::Provisioning),
            ("/api/applications/{id}/roll-key", Budget::Provisioning),
            ("/api/applications/key", Budget::Provisioning),
            ("/api/projects/{id}", Budget::Provisioning),
            ("/internal/provision", Budget::Provisioning),
            ("/audit-logs", Budget::Provisioning),
        ] {
            assert_eq!(budget_for(route), budget, "{route}");
        }
    }
}
