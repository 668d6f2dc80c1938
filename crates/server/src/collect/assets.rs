//! The browser files, compiled into the binary from `crates/server/assets/collect/v1/` as
//! written there (no build step): what the vault serves is exactly what the repository holds,
//! so the SDK's published integrity hash can be checked against the file.

/// What a file is, which decides the headers it is served with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A page that runs inside a frame on the merchant's page (CSP `frame-ancestors`).
    Frame,
    /// The SDK, loaded by the merchant's page from another origin (CORS, for SRI).
    Sdk,
    /// A script or style sheet the frames load from their own origin.
    Support,
}

pub struct Asset {
    pub name: &'static str,
    pub body: &'static [u8],
    pub content_type: &'static str,
    pub kind: Kind,
}

macro_rules! asset {
    ($name:literal, $content_type:expr, $kind:expr) => {
        Asset {
            name: $name,
            body: include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/assets/collect/v1/",
                $name
            )),
            content_type: $content_type,
            kind: $kind,
        }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

static ASSETS: [Asset; 10] = [
    asset!("cardvault.js", JS, Kind::Sdk),
    asset!("card-number.html", HTML, Kind::Frame),
    asset!("expiration-date.html", HTML, Kind::Frame),
    asset!("cvv.html", HTML, Kind::Frame),
    asset!("account-number.html", HTML, Kind::Frame),
    asset!("routing-number.html", HTML, Kind::Frame),
    asset!("tokenizer.html", HTML, Kind::Frame),
    asset!("element.js", JS, Kind::Support),
    asset!("tokenizer.js", JS, Kind::Support),
    asset!("element.css", CSS, Kind::Support),
];

/// The file served as `/collect/v1/{name}`, if there is one.
pub fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_found_by_its_name_and_nothing_else_is() {
        for asset in &ASSETS {
            assert!(std::ptr::eq(find(asset.name).unwrap(), asset));
            assert!(!asset.body.is_empty(), "{} is empty", asset.name);
        }
        for other in [
            "",
            "../Cargo.toml",
            "cardvault.js/",
            "README.md",
            "CARDVAULT.JS",
        ] {
            assert!(find(other).is_none(), "{other}");
        }
    }
}
