//! SigV4: the canonical request (method, path, query, headers, signed header list), the
//! Authorization header parser, presigned query parameters, the X-Amz-Date format.
//!
//! Input (structure-aware): a request and an Authorization header of arbitrary strings,
//! verified as they are (nothing may panic); then the same request signed as a client
//! signs it (header and presigned), which the verifier must accept exactly when its time
//! is within the allowed skew and expiry.

#![no_main]

use arbitrary::Arbitrary;
use ferrite_fuzz::chunked::{scope, ACCESS_KEY, AMZ_DATE, DATE, REGION, SECRET_KEY};
use ferrite_s3::sigv4::{
    self, format_amz_date, parse_amz_date, Credentials, SignedRequest, CLOCK_SKEW_SECS_MAX, PRESIGN_EXPIRES_SECS_MAX,
    UNSIGNED_PAYLOAD,
};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    method: &'a str,
    path: &'a str,
    query: Vec<(&'a str, &'a str)>,
    headers: Vec<(&'a str, &'a str)>,
    /// Which of `headers` are signed (indices, modulo their count), besides host and x-amz-date.
    signed: Vec<u8>,
    payload_hash: Option<&'a str>,
    authorization: &'a str,
    /// The server's clock, relative to the request's X-Amz-Date.
    skew_secs: i16,
    expires_secs: u32,
    /// Any time up to the year 9999, for the X-Amz-Date format.
    date_secs: u64,
}

struct Root;

impl Credentials for Root {
    fn secret_for(&self, access_key: &str) -> Option<String> {
        (access_key == ACCESS_KEY).then(|| SECRET_KEY.to_owned())
    }

    fn region(&self) -> &str {
        REGION
    }
}

/// A header name a client can sign: its Authorization header lists it between `;`.
fn signable(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

/// Signed in the Authorization header: accepted when the clock is within the skew.
fn header_round_trip(input: &Input, now: i64) {
    let reserved = ["host", "x-amz-date", "x-amz-content-sha256"];
    let mut headers: Vec<(String, String)> =
        input.headers.iter().map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_owned())).collect();
    if headers.iter().any(|(n, _)| reserved.contains(&n.as_str())) {
        return;
    }
    let mut signed: Vec<String> = vec!["host".into(), "x-amz-date".into()];
    for i in &input.signed {
        if let Some((name, _)) = headers.get(usize::from(*i) % headers.len().max(1)) {
            if !signable(name) {
                return;
            }
            signed.push(name.clone());
        }
    }
    headers.push(("host".into(), "s3.example.com".into()));
    headers.push(("x-amz-date".into(), AMZ_DATE.into()));
    let payload_hash = match input.payload_hash {
        Some(hash) => {
            headers.push(("x-amz-content-sha256".into(), hash.trim().to_owned()));
            signed.push("x-amz-content-sha256".into());
            hash.trim()
        }
        None => UNSIGNED_PAYLOAD,
    };
    signed.sort();
    signed.dedup();
    let signed: Vec<&str> = signed.iter().map(String::as_str).collect();
    let query = owned(&input.query);
    let req = SignedRequest { method: input.method, path: input.path, query: &query, headers: &headers };
    let Ok(signature) = sigv4::sign(&scope(), &req, &signed, payload_hash) else {
        panic!("signing failed although every signed header is present");
    };
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{DATE}/{REGION}/s3/aws4_request, SignedHeaders={}, Signature={signature}",
        signed.join(";")
    );
    let when = parse_amz_date(AMZ_DATE).unwrap_or_default();
    match sigv4::verify_header(&req, &authorization, &Root, now) {
        Ok(auth) => {
            assert!((when - now).abs() <= CLOCK_SKEW_SECS_MAX, "a request outside the clock skew was accepted");
            assert_eq!(auth.payload_hash, payload_hash);
            assert_eq!(auth.signature, signature);
        }
        Err(e) => assert!(
            (when - now).abs() > CLOCK_SKEW_SECS_MAX,
            "a correctly signed request was refused: {:?} {}",
            e.code,
            e.message
        ),
    }
}

/// Signed in the query (a presigned URL): accepted from the skew before X-Amz-Date until
/// it expires.
fn presigned_round_trip(input: &Input, now: i64) {
    if input.query.iter().any(|(k, _)| k.starts_with("X-Amz-")) {
        return;
    }
    let expires = i64::from(input.expires_secs) % PRESIGN_EXPIRES_SECS_MAX + 1;
    let headers = vec![("host".to_owned(), "s3.example.com".to_owned())];
    let mut query = owned(&input.query);
    query.extend(owned(&[
        ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
        ("X-Amz-Credential", &format!("{ACCESS_KEY}/{DATE}/{REGION}/s3/aws4_request")),
        ("X-Amz-Date", AMZ_DATE),
        ("X-Amz-Expires", &expires.to_string()),
        ("X-Amz-SignedHeaders", "host"),
    ]));
    let req = SignedRequest { method: input.method, path: input.path, query: &query, headers: &headers };
    let Ok(signature) = sigv4::sign(&scope(), &req, &["host"], UNSIGNED_PAYLOAD) else {
        panic!("signing failed although host is present");
    };
    query.push(("X-Amz-Signature".into(), signature));
    let req = SignedRequest { method: input.method, path: input.path, query: &query, headers: &headers };
    let when = parse_amz_date(AMZ_DATE).unwrap_or_default();
    let valid = now <= when + expires && when - now <= CLOCK_SKEW_SECS_MAX;
    match sigv4::verify_presigned(&req, &Root, now) {
        Ok(_) => assert!(valid, "an expired or future presigned URL was accepted"),
        Err(e) => assert!(!valid, "a correctly presigned URL was refused: {:?} {}", e.code, e.message),
    }
}

fuzz_target!(|input: Input| {
    let when = parse_amz_date(AMZ_DATE).unwrap_or_default();
    let now = when + i64::from(input.skew_secs);
    // As sent: nothing may panic.
    let headers = owned(&input.headers);
    let query = owned(&input.query);
    let req = SignedRequest { method: input.method, path: input.path, query: &query, headers: &headers };
    let _ = sigv4::verify_header(&req, input.authorization, &Root, now);
    let _ = sigv4::verify_presigned(&req, &Root, now);
    let _ = parse_amz_date(input.authorization);
    header_round_trip(&input, now);
    presigned_round_trip(&input, now);
    // X-Amz-Date: every time until the end of 9999 formats and parses back.
    let secs = (input.date_secs % 253_402_300_800) as i64;
    assert_eq!(parse_amz_date(&format_amz_date(secs)), Some(secs));
});
