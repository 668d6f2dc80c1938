use super::*;

fn strict() -> DestinationRules {
    DestinationRules::default()
}

#[test]
fn accepts_ordinary_processor_urls() {
    for url in [
        "https://api.stripe.com/v1/charges",
        "https://checkout-test.adyen.com:443/v71/payments?x=1",
        "https://API.Stripe.com./v1",
    ] {
        assert!(strict().check_url(url).is_ok(), "{url}");
    }
}

#[test]
fn refuses_what_the_policy_forbids() {
    let cases = [
        ("http://api.stripe.com/", DestinationError::Scheme),
        ("ftp://api.stripe.com/", DestinationError::Scheme),
        (
            "https://user:pw@api.stripe.com/",
            DestinationError::Userinfo,
        ),
        ("https://api.stripe.com:8443/", DestinationError::Port),
        ("https://127.0.0.1/", DestinationError::IpLiteral),
        ("https://0x7f000001/", DestinationError::IpLiteral),
        ("https://2130706433/", DestinationError::IpLiteral),
        ("https://[::1]/", DestinationError::IpLiteral),
        ("https://localhost/", DestinationError::InternalName),
        ("https://foo.localhost/", DestinationError::InternalName),
        (
            "https://metadata.google.internal/",
            DestinationError::InternalName,
        ),
        ("https://printer.local/", DestinationError::InternalName),
        ("https://intranet/", DestinationError::InternalName),
        ("not a url", DestinationError::Malformed),
        ("", DestinationError::Malformed),
        (
            "https://api.stripe.com\\@127.0.0.1/",
            DestinationError::Malformed,
        ),
    ];
    for (url, expected) in cases {
        assert_eq!(strict().check_url(url).err(), Some(expected), "{url}");
    }
}

#[test]
fn local_testing_relaxations_are_explicit() {
    let relaxed = DestinationRules {
        allow_http: true,
        allow_private: true,
        allowed_ports: vec![443],
        ..DestinationRules::default()
    };
    assert!(relaxed.check_url("http://127.0.0.1:8080/x").is_ok());
    assert!(relaxed.check_url("https://localhost:9443/").is_ok());
    assert!(relaxed.allows_address("127.0.0.1".parse().unwrap()));
    assert!(!strict().allows_address("127.0.0.1".parse().unwrap()));
}

#[test]
fn classifies_addresses() {
    for private in [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "240.0.0.1",
        "192.0.2.1",
        "198.18.0.1",
        "::1",
        "::",
        "fe80::1",
        "fd00:ec2::254",
        "fc00::1",
        "fec0::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::127.0.0.1",
        "64:ff9b::a00:1",
        "2002:7f00:1::",
        "2001:db8::1",
    ] {
        assert!(
            !is_public(private.parse().unwrap()),
            "{private} must not be public"
        );
    }
    for public in [
        "8.8.8.8",
        "1.1.1.1",
        "54.187.174.169",
        "2606:4700::1111",
        "::ffff:8.8.8.8",
        "2002:808:808::",
    ] {
        assert!(is_public(public.parse().unwrap()), "{public} is public");
    }
}

#[test]
fn allow_rules_match_hosts_subdomains_and_path_prefixes() {
    let url = |u: &str| Url::parse(u).unwrap();
    let stripe = AllowRule::parse("api.stripe.com").unwrap();
    let adyen = AllowRule::parse("*.adyen.com").unwrap();
    let charges = AllowRule::parse("API.stripe.com./v1/charges/").unwrap();
    assert_eq!(charges.to_string(), "api.stripe.com/v1/charges");
    assert!(stripe.permits(&url("https://api.stripe.com/v1/charges")));
    assert!(stripe.permits(&url("https://API.STRIPE.COM./x")));
    for lookalike in [
        "https://api.stripe.com.evil.test/",
        "https://evil-api.stripe.com/",
        "https://stripe.com/",
        "https://xapi.stripe.com/",
        "https://api.stripe.co/",
    ] {
        assert!(!stripe.permits(&url(lookalike)), "{lookalike}");
    }
    assert!(adyen.permits(&url("https://checkout-test.adyen.com/v71/payments")));
    assert!(adyen.permits(&url("https://a.b.adyen.com/")));
    assert!(!adyen.permits(&url("https://adyen.com/")));
    assert!(!adyen.permits(&url("https://evil-adyen.com/")));
    assert!(!adyen.permits(&url("https://adyen.com.evil.test/")));
    assert!(charges.permits(&url("https://api.stripe.com/v1/charges")));
    assert!(charges.permits(&url("https://api.stripe.com/v1/charges/ch_1/capture")));
    assert!(!charges.permits(&url("https://api.stripe.com/v1/chargesx")));
    assert!(!charges.permits(&url("https://api.stripe.com/v1/customers")));
    assert!(!charges.permits(&url("https://api.stripe.com/v1/charges/../customers")));
    assert!(!allowlist_permits(&[], &url("https://api.stripe.com/")));
    // Single-label hosts can be named exactly (a local gateway with the testing relaxations).
    assert!(
        AllowRule::parse("localhost")
            .unwrap()
            .permits(&url("https://localhost:9443/x"))
    );
    assert!(allowlist_permits(
        &[adyen, stripe],
        &url("https://api.stripe.com/")
    ));
    for bad in [
        "*",
        "*.com",
        "https://api.stripe.com",
        "api.stripe.com:443",
        "a*.stripe.com",
        "*.localhost",
        "",
        "api.stripe.com/v1?x",
        "a b.com",
    ] {
        assert!(AllowRule::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn local_use_nat64_is_never_public() {
    for ip in [
        "64:ff9b:1:a00:0:100:808:808",
        "64:ff9b:1::808:808",
        "64:ff9b:0:1::808:808",
    ] {
        assert!(!is_public(ip.parse().unwrap()), "{ip}");
    }
    assert!(
        is_public("64:ff9b::808:808".parse().unwrap()),
        "well-known prefix, public IPv4"
    );
}

#[test]
fn port_443_stays_allowed_when_others_are_added() {
    let rules = DestinationRules {
        allowed_ports: vec![8443],
        ..DestinationRules::default()
    };
    assert!(rules.check_url("https://api.stripe.com/v1").is_ok());
    assert!(rules.check_url("https://api.stripe.com:443/v1").is_ok());
    assert!(rules.check_url("https://api.stripe.com:8443/v1").is_ok());
    assert_eq!(
        rules.check_url("https://api.stripe.com:9443/v1").err(),
        Some(DestinationError::Port)
    );
}

#[test]
fn urls_over_the_length_limit_are_refused_before_parsing() {
    let rules = DestinationRules {
        max_url_bytes: 64,
        ..DestinationRules::default()
    };
    let base = "https://api.processor.example/v1/charges?x=";
    let at_limit = format!("{base}{}", "a".repeat(64 - base.len()));
    assert!(rules.check_url(&at_limit).is_ok());
    assert_eq!(
        rules.check_url(&format!("{at_limit}a")),
        Err(DestinationError::TooLong)
    );
    let long = format!("{base}{}", "a".repeat(70_000));
    assert_eq!(strict().check_url(&long), Err(DestinationError::TooLong));
}
