//! Undoing a processor's content coding, as the generic client does, so the answer can be
//! scrubbed of echoed card data: `gzip`, `deflate` (zlib) and `br`, each within the response
//! size cap (a small compressed answer can expand without bound).

use std::io::Read;

use bytes::Bytes;
use http::HeaderMap;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH};

use super::UpstreamError;

/// The `accept-encoding` sent with every request: what [`decode`] undoes.
pub const ACCEPTED: &str = "gzip,deflate,br";

/// The body as the processor meant it. A coding named exactly `gzip`, `deflate` or `br` is
/// undone and its `content-encoding` and `content-length` headers dropped; any other body is
/// returned as it came.
///
/// # Errors
/// [`UpstreamError::TooLarge`] past `limit` decoded bytes, [`UpstreamError::Failed`] for a body
/// that is not in the coding it claims.
pub fn decode(headers: &mut HeaderMap, body: Bytes, limit: usize) -> Result<Bytes, UpstreamError> {
    let Some(coding) = headers.get(CONTENT_ENCODING) else {
        return Ok(body);
    };
    let known = matches!(coding.as_bytes(), b"gzip" | b"deflate" | b"br");
    if known && body.is_empty() {
        // An empty answer (a 204, say) under a coding's name: nothing to undo.
        headers.remove(CONTENT_ENCODING);
        headers.remove(CONTENT_LENGTH);
        return Ok(body);
    }
    let decoded = match coding.as_bytes() {
        b"gzip" => read_within(flate2::read::GzDecoder::new(&body[..]), limit)?,
        b"deflate" => read_within(flate2::read::ZlibDecoder::new(&body[..]), limit)?,
        b"br" => read_within(
            brotli_decompressor::Decompressor::new(&body[..], 4096),
            limit,
        )?,
        _ => return Ok(body),
    };
    headers.remove(CONTENT_ENCODING);
    headers.remove(CONTENT_LENGTH);
    Ok(decoded.into())
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
    fn other_codings_and_plain_bodies_pass_unchanged() {
        for coding in ["identity", "zstd", "gzip, br", "GZIP"] {
            let (mut headers, body) = coded(coding, b"as sent");
            assert_eq!(&decode(&mut headers, body, 64).unwrap()[..], b"as sent");
            assert!(headers.get(CONTENT_ENCODING).is_some(), "{coding}");
        }
        let mut none = HeaderMap::new();
        let body = Bytes::from_static(b"plain");
        assert_eq!(decode(&mut none, body, 64).unwrap(), "plain");
    }

    #[test]
    fn an_empty_answer_under_a_codings_name_is_empty() {
        for coding in ["gzip", "deflate", "br"] {
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
