//! Undoing a processor's content coding, so the answer can be scrubbed of echoed card data:
//! `gzip`, `deflate` (zlib) and `br`, each within the response size cap (a small compressed
//! answer can expand without bound). An answer in any other coding is refused: what the vault
//! cannot read, it cannot scrub.

use std::io::Read;

use bytes::Bytes;
use http::HeaderMap;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH};

use super::UpstreamError;

/// The `accept-encoding` sent with every request: what [`decode`] undoes.
pub const ACCEPTED: &str = "gzip,deflate,br";

/// Why an answer in a coding the vault does not know is refused. The coding is not quoted: the
/// header is the processor's text, and could carry anything.
const UNKNOWN_CODING: &str =
    "the answer is in a content coding the vault cannot undo, so it cannot be scrubbed";

enum Coding {
    Identity,
    Gzip,
    Deflate,
    Brotli,
    Unknown,
}

impl Coding {
    /// Content-coding names are case-insensitive (RFC 9110 §8.4.1).
    fn named(value: &[u8]) -> Self {
        let name = value.trim_ascii();
        if name.eq_ignore_ascii_case(b"identity") {
            Self::Identity
        } else if name.eq_ignore_ascii_case(b"gzip") {
            Self::Gzip
        } else if name.eq_ignore_ascii_case(b"deflate") {
            Self::Deflate
        } else if name.eq_ignore_ascii_case(b"br") {
            Self::Brotli
        } else {
            Self::Unknown
        }
    }
}

/// The body as the processor meant it, its `content-encoding` (and, when decoded, its
/// `content-length`) dropped. A body without a coding is returned as it came.
///
/// # Errors
/// [`UpstreamError::TooLarge`] past `limit` decoded bytes; [`UpstreamError::Failed`] for a body
/// that is not in the coding it claims, or in a coding other than `gzip`, `deflate`, `br` or
/// `identity` (several codings in a row included).
pub fn decode(headers: &mut HeaderMap, body: Bytes, limit: usize) -> Result<Bytes, UpstreamError> {
    let Some(value) = headers.get(CONTENT_ENCODING) else {
        return Ok(body);
    };
    let coding = Coding::named(value.as_bytes());
    let decoded = match coding {
        // An empty answer (a 204, say) under a coding's name: nothing to undo, nothing hidden.
        _ if body.is_empty() => body,
        Coding::Unknown => return Err(UpstreamError::Failed(UNKNOWN_CODING.to_owned())),
        Coding::Identity => {
            headers.remove(CONTENT_ENCODING);
            return Ok(body);
        }
        Coding::Gzip => read_within(flate2::read::GzDecoder::new(&body[..]), limit)?.into(),
        Coding::Deflate => read_within(flate2::read::ZlibDecoder::new(&body[..]), limit)?.into(),
        Coding::Brotli => read_within(
            brotli_decompressor::Decompressor::new(&body[..], 4096),
            limit,
        )?
        .into(),
    };
    headers.remove(CONTENT_ENCODING);
    headers.remove(CONTENT_LENGTH);
    Ok(decoded)
}

fn read_within(decoder: impl Read, limit: usize) -> Result<Vec<u8>, UpstreamError> {
    let mut decoded = Vec::new();
    let bound = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    decoder
        .take(bound)
        .read_to_end(&mut decoded)
        .map_err(|e| UpstreamError::Failed(format!("undecodable answer: {e}")))?;
    if decoded.len() > limit {
        return Err(UpstreamError::TooLarge(limit));
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn coded(coding: &str, body: &[u8]) -> (HeaderMap, Bytes) {
        let compressed = cardvault_testkit::stub::compressed(coding, body);
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_ENCODING, HeaderValue::from_str(coding).unwrap());
        headers.insert(CONTENT_LENGTH, HeaderValue::from(compressed.len()));
        (headers, compressed.into())
    }

    #[test]
    fn gzip_and_deflate_are_undone_and_their_headers_dropped() {
        let body = br#"{"card":"4242424242424242"}"#;
        for coding in ["gzip", "deflate"] {
            let (mut headers, compressed) = coded(coding, body);
            assert_ne!(&compressed[..], body);
            let decoded = decode(&mut headers, compressed, 1024).unwrap();
            assert_eq!(&decoded[..], body, "{coding}");
            assert!(headers.get(CONTENT_ENCODING).is_none(), "{coding}");
            assert!(headers.get(CONTENT_LENGTH).is_none(), "{coding}");
        }
    }

    #[test]
    fn brotli_is_undone_too() {
        let body = br#"{"card":"4242424242424242"}"#;
        let (mut headers, compressed) = coded("br", body);
        assert_ne!(&compressed[..], body);
        assert_eq!(&decode(&mut headers, compressed, 1024).unwrap()[..], body);
    }

    #[test]
    fn an_answer_that_expands_past_the_cap_is_too_large() {
        let (mut headers, compressed) = coded("gzip", &vec![b'a'; 100_000]);
        assert!(compressed.len() < 1_000);
        assert!(matches!(
            decode(&mut headers, compressed, 99_999),
            Err(UpstreamError::TooLarge(99_999))
        ));
        let (mut headers, compressed) = coded("gzip", &vec![b'a'; 100_000]);
        assert_eq!(
            decode(&mut headers, compressed, 100_000).unwrap().len(),
            100_000
        );
    }

    #[test]
    fn coding_names_are_case_insensitive_and_identity_is_no_coding() {
        let body = br#"{"card":"4242424242424242"}"#;
        let (_, compressed) = coded("gzip", body);
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static(" GZip "));
        assert_eq!(&decode(&mut headers, compressed, 1024).unwrap()[..], body);
        let (mut headers, plain) = coded("identity", b"as sent");
        assert_eq!(&decode(&mut headers, plain, 64).unwrap()[..], b"as sent");
        assert!(headers.get(CONTENT_ENCODING).is_none());
        let mut none = HeaderMap::new();
        let body = Bytes::from_static(b"plain");
        assert_eq!(decode(&mut none, body, 64).unwrap(), "plain");
    }

    #[test]
    fn an_answer_in_a_coding_the_vault_cannot_undo_is_refused() {
        for coding in ["zstd", "gzip, br", "compress", "4242424242424242"] {
            let (mut headers, body) = coded(coding, b"\x28\xb5\x2f\xfd as sent");
            let Err(UpstreamError::Failed(why)) = decode(&mut headers, body, 64) else {
                panic!("{coding} was let through");
            };
            assert!(
                !why.contains(coding),
                "the processor's text is quoted: {why}"
            );
        }
    }

    #[test]
    fn an_empty_answer_under_a_codings_name_is_empty() {
        for coding in ["gzip", "deflate", "br", "zstd"] {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_ENCODING, HeaderValue::from_str(coding).unwrap());
            let decoded = decode(&mut headers, Bytes::new(), 64).unwrap();
            assert!(decoded.is_empty(), "{coding}");
            assert!(headers.get(CONTENT_ENCODING).is_none(), "{coding}");
        }
    }

    #[test]
    fn a_body_not_in_its_claimed_coding_fails() {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert!(matches!(
            decode(&mut headers, Bytes::from_static(b"not gzip"), 64),
            Err(UpstreamError::Failed(_))
        ));
    }
}
