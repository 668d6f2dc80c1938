//! The shared SSRF corpus (`shared/testdata/ssrf-deny-urls.txt`, vendored in
//! `crates/core/tests/data/`): URLs the proxy must refuse. The core's rule test and the server's
//! end-to-end test read it through here, so both check the same lines the same way.

/// Public names whose DNS answers point inside (wildcard-DNS services and the like): the rules
/// alone cannot refuse them; the server's resolver check does.
pub const NEEDS_DNS: [&str; 5] = [
    "localtest.me",
    "localh.st",
    "company.127.0.0.1.nip.io",
    "169.254.169.254.nip.io",
    "make-1.2.3.4-rebind-169.254-169.254-rr.1u.ms",
];

/// Every URL of the corpus, without blank lines and comments; the shared copy if it is there,
/// else the vendored one.
pub fn corpus() -> Vec<String> {
    let shared = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/testdata/ssrf-deny-urls.txt"
    );
    // This crate sits two levels below the workspace root, like the core.
    let vendored = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../core/tests/data/ssrf-deny-urls.txt"
    );
    let text = std::fs::read_to_string(shared)
        .or_else(|_| std::fs::read_to_string(vendored))
        .expect("the SSRF corpus");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// The same URL with its scheme replaced by `https`.
pub fn force_https(url: &str) -> String {
    match url.find("://") {
        Some(i) => format!("https{}", &url[i..]),
        None => match url.find(':') {
            Some(i) => format!("https{}", &url[i..]),
            None => format!("https://{url}"),
        },
    }
}
