//! Reading the shared SSRF corpus; used by the core's rule test and the server's end-to-end test.
#![allow(dead_code, clippy::expect_used)]

/// Public names whose DNS answers point inside (wildcard-DNS services and the like).
pub const NEEDS_DNS: [&str; 5] = [
    "localtest.me",
    "localh.st",
    "company.127.0.0.1.nip.io",
    "169.254.169.254.nip.io",
    "make-1.2.3.4-rebind-169.254-169.254-rr.1u.ms",
];

pub fn corpus() -> Vec<String> {
    let shared = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/testdata/ssrf-deny-urls.txt"
    );
    // Both crates sit two levels below the workspace root, so one relative path serves both.
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
