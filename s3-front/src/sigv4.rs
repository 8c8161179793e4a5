//! AWS Signature Version 4: the Authorization header, presigned URLs, and the per-chunk
//! signatures of aws-chunked streaming uploads.

use ferrite_engine::calendar::{civil_from_days, days_from_civil};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::error::{err, Code, S3Error, S3Result};

type HmacSha256 = Hmac<Sha256>;

pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
pub const STREAMING_SIGNED: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
pub const STREAMING_SIGNED_TRAILER: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER";
pub const STREAMING_UNSIGNED_TRAILER: &str = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";
/// Requests signed further than this from the server's clock are refused.
pub const CLOCK_SKEW_SECS_MAX: i64 = 15 * 60;
/// Presigned URLs may live at most 7 days, as on AWS.
pub const PRESIGN_EXPIRES_SECS_MAX: i64 = 7 * 24 * 3600;
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

pub fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let Ok(mut mac) = HmacSha256::new_from_slice(key) else { unreachable!("HMAC accepts keys of any length") };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// S3's URI encoding: unreserved characters stay, everything else is %XX (upper case).
pub fn uri_encode(input: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(input.len());
    for &b in input.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b'/' if !encode_slash => out.push('/'),
            _ => {
                out.push('%');
                out.push_str(&format!("{b:02X}"));
            }
        }
    }
    out
}

/// What a signature covers, taken from the parsed request.
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// The decoded path ("/bucket/key").
    pub path: &'a str,
    /// Decoded query parameters in request order.
    pub query: &'a [(String, String)],
    /// Lower-case header names with their values.
    pub headers: &'a [(String, String)],
}

impl SignedRequest<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// The credential scope and signing key of one request.
#[derive(Clone)]
pub struct Scope {
    pub access_key: String,
    pub date: String,
    pub region: String,
    pub amz_date: String,
    pub key: [u8; 32],
}

impl Scope {
    pub fn scope_string(&self) -> String {
        format!("{}/{}/s3/aws4_request", self.date, self.region)
    }
}

pub fn signing_key(secret: &str, date: &str, region: &str) -> [u8; 32] {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, b"s3");
    hmac(&k_service, b"aws4_request")
}

fn canonical_request(
    req: &SignedRequest,
    signed_headers: &[&str],
    payload_hash: &str,
    skip_signature_param: bool,
) -> S3Result<String> {
    let mut query: Vec<(String, String)> = req
        .query
        .iter()
        .filter(|(k, _)| !(skip_signature_param && k == "X-Amz-Signature"))
        .map(|(k, v)| (uri_encode(k, true), uri_encode(v, true)))
        .collect();
    query.sort();
    let query = query.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    let mut headers = String::new();
    for name in signed_headers {
        let values: Vec<&str> = req.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect();
        if values.is_empty() {
            return err(Code::SignatureDoesNotMatch, format!("signed header {name} is missing from the request"));
        }
        let joined =
            values.iter().map(|v| v.split_whitespace().collect::<Vec<_>>().join(" ")).collect::<Vec<_>>().join(",");
        headers.push_str(name);
        headers.push(':');
        headers.push_str(&joined);
        headers.push('\n');
    }
    Ok(format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        uri_encode(req.path, false),
        query,
        headers,
        signed_headers.join(";"),
        payload_hash
    ))
}

fn string_to_sign(scope: &Scope, canonical: &str) -> String {
    format!("AWS4-HMAC-SHA256\n{}\n{}\n{}", scope.amz_date, scope.scope_string(), sha256_hex(canonical.as_bytes()))
}

/// Compares two MACs (signatures, digests, tokens) in time that depends on their length
/// only, never on where they first differ: black_box keeps the compiler from turning the fold
/// into an early exit.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y))) == 0
}

/// Parses `YYYYMMDDTHHMMSSZ` into seconds since the epoch.
pub fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, se) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se)
}

/// `YYYYMMDDTHHMMSSZ` for seconds since the epoch (the inverse of `parse_amz_date`).
pub fn format_amz_date(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86400));
    let rem = secs.rem_euclid(86400);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The outcome of authenticating a request.
pub struct Auth {
    pub scope: Scope,
    /// The seed signature for aws-chunked chunk signatures.
    pub signature: String,
    /// x-amz-content-sha256 (or UNSIGNED-PAYLOAD for presigned URLs).
    pub payload_hash: String,
}

/// What a signature is checked against: the secret of an access key, and the region the
/// server answers for (a credential scope naming another is refused, as AWS does).
pub trait Credentials {
    fn secret_for(&self, access_key: &str) -> Option<String>;
    fn region(&self) -> &str;
}

/// Where a request carried its signature: the error for a wrong region differs (AWS answers
/// AuthorizationHeaderMalformed for the header, AuthorizationQueryParametersError for a
/// presigned URL, each naming the region it expects).
#[derive(Clone, Copy)]
enum Carrier {
    Header,
    Query,
}

fn check_region(region: &str, creds: &dyn Credentials, carrier: Carrier) -> S3Result<()> {
    let expected = creds.region();
    if region == expected {
        return Ok(());
    }
    match carrier {
        Carrier::Header => err(
            Code::AuthorizationHeaderMalformed,
            format!("The authorization header is malformed; the region '{region}' is wrong; expecting '{expected}'"),
        ),
        Carrier::Query => err(
            Code::AuthorizationQueryParametersError,
            format!(
                "Error parsing the X-Amz-Credential parameter; the region '{region}' is wrong; expecting '{expected}'"
            ),
        ),
    }
}

fn parse_credential(cred: &str) -> S3Result<(String, String, String)> {
    let parts: Vec<&str> = cred.split('/').collect();
    if parts.len() != 5 || parts[3] != "s3" || parts[4] != "aws4_request" {
        return err(Code::AuthorizationHeaderMalformed, format!("the credential '{cred}' is malformed"));
    }
    Ok((parts[0].to_owned(), parts[1].to_owned(), parts[2].to_owned()))
}

fn make_scope(
    creds: &dyn Credentials,
    access_key: String,
    date: String,
    region: String,
    amz_date: &str,
    now: i64,
) -> S3Result<Scope> {
    let Some(secret) = creds.secret_for(&access_key) else {
        return err(Code::InvalidAccessKeyId, "The AWS Access Key Id you provided does not exist in our records.");
    };
    if !amz_date.starts_with(&date) {
        return err(Code::SignatureDoesNotMatch, "the credential date does not match X-Amz-Date");
    }
    let Some(_) = parse_amz_date(amz_date) else {
        return err(Code::AccessDenied, "X-Amz-Date is not a valid date");
    };
    let _ = now;
    let key = signing_key(&secret, &date, &region);
    Ok(Scope { access_key, date, region, amz_date: amz_date.to_owned(), key })
}

/// Verifies a request signed in its Authorization header.
pub fn verify_header(req: &SignedRequest, authorization: &str, creds: &dyn Credentials, now: i64) -> S3Result<Auth> {
    let Some(rest) = authorization.strip_prefix("AWS4-HMAC-SHA256 ") else {
        return err(Code::AuthorizationHeaderMalformed, "only AWS4-HMAC-SHA256 signatures are supported");
    };
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for field in rest.split(',') {
        let field = field.trim();
        if let Some(v) = field.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = field.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = field.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let (Some(credential), Some(signed), Some(signature)) = (credential, signed, signature) else {
        return err(Code::AuthorizationHeaderMalformed, "the authorization header is malformed");
    };
    let (access_key, date, region) = parse_credential(credential)?;
    check_region(&region, creds, Carrier::Header)?;
    let amz_date = req.header("x-amz-date").unwrap_or_default();
    let Some(when) = parse_amz_date(amz_date) else {
        return err(Code::AccessDenied, "AWS authentication requires a valid Date or x-amz-date header");
    };
    if (when - now).abs() > CLOCK_SKEW_SECS_MAX {
        return err(
            Code::RequestTimeTooSkewed,
            "The difference between the request time and the server's time is too large.",
        );
    }
    let scope = make_scope(creds, access_key, date, region, amz_date, now)?;
    let payload_hash = req.header("x-amz-content-sha256").unwrap_or(UNSIGNED_PAYLOAD).to_owned();
    let signed_headers: Vec<&str> = signed.split(';').collect();
    if !signed_headers.contains(&"host") {
        return err(Code::AuthorizationHeaderMalformed, "the host header must be signed");
    }
    let canonical = canonical_request(req, &signed_headers, &payload_hash, false)?;
    let expected = hex(&hmac(&scope.key, string_to_sign(&scope, &canonical).as_bytes()));
    if !constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
        return Err(S3Error::new(
            Code::SignatureDoesNotMatch,
            "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
        ));
    }
    Ok(Auth { scope, signature: signature.to_owned(), payload_hash })
}

/// Verifies a presigned URL (X-Amz-* query parameters).
pub fn verify_presigned(req: &SignedRequest, creds: &dyn Credentials, now: i64) -> S3Result<Auth> {
    let q = |name: &str| req.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if q("X-Amz-Algorithm") != Some("AWS4-HMAC-SHA256") {
        return err(Code::AuthorizationHeaderMalformed, "X-Amz-Algorithm must be AWS4-HMAC-SHA256");
    }
    let (Some(credential), Some(amz_date), Some(expires), Some(signed), Some(signature)) =
        (q("X-Amz-Credential"), q("X-Amz-Date"), q("X-Amz-Expires"), q("X-Amz-SignedHeaders"), q("X-Amz-Signature"))
    else {
        return err(Code::AuthorizationHeaderMalformed, "presigned URL is missing a required X-Amz-* parameter");
    };
    let Ok(expires) = expires.parse::<i64>() else {
        return err(Code::AuthorizationHeaderMalformed, "X-Amz-Expires must be a number");
    };
    if !(1..=PRESIGN_EXPIRES_SECS_MAX).contains(&expires) {
        return err(Code::AuthorizationHeaderMalformed, "X-Amz-Expires must be between 1 and 604800 seconds");
    }
    let Some(when) = parse_amz_date(amz_date) else {
        return err(Code::AuthorizationHeaderMalformed, "X-Amz-Date is malformed");
    };
    if now > when + expires {
        return err(Code::AccessDenied, "Request has expired");
    }
    if when - now > CLOCK_SKEW_SECS_MAX {
        return err(
            Code::RequestTimeTooSkewed,
            "The difference between the request time and the server's time is too large.",
        );
    }
    let (access_key, date, region) = parse_credential(credential)?;
    check_region(&region, creds, Carrier::Query)?;
    let scope = make_scope(creds, access_key, date, region, amz_date, now)?;
    let signed_headers: Vec<&str> = signed.split(';').collect();
    let claimed = presigned_payload_hash(req, &signed_headers);
    // AWS's presigned URLs sign UNSIGNED-PAYLOAD in place of the payload's hash; a client that
    // names the hash (MinIO's clients, in X-Amz-Content-Sha256) may sign that instead. Either
    // way the claimed hash is covered by the signature (it is in the query or a signed
    // header), and the body is checked against it (body.rs).
    let matches = |payload: &str| -> S3Result<bool> {
        let canonical = canonical_request(req, &signed_headers, payload, true)?;
        let expected = hex(&hmac(&scope.key, string_to_sign(&scope, &canonical).as_bytes()));
        Ok(constant_time_eq(expected.as_bytes(), signature.as_bytes()))
    };
    let verified = matches(UNSIGNED_PAYLOAD)?
        || match claimed {
            Some(hash) if hash != UNSIGNED_PAYLOAD => matches(hash)?,
            _ => false,
        };
    if !verified {
        return err(
            Code::SignatureDoesNotMatch,
            "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
        );
    }
    let payload_hash = claimed.unwrap_or(UNSIGNED_PAYLOAD).to_owned();
    Ok(Auth { scope, signature: signature.to_owned(), payload_hash })
}

/// The payload hash a presigned request claims: its X-Amz-Content-Sha256 query parameter, or
/// its x-amz-content-sha256 header when that header is signed. An unsigned header is ignored:
/// anyone on the path could have added it.
fn presigned_payload_hash<'r>(req: &'r SignedRequest, signed_headers: &[&str]) -> Option<&'r str> {
    let query = req.query.iter().find(|(k, _)| k == "X-Amz-Content-Sha256").map(|(_, v)| v.as_str());
    let header =
        || signed_headers.contains(&"x-amz-content-sha256").then(|| req.header("x-amz-content-sha256")).flatten();
    query.or_else(header)
}

/// Client side: the signature of a request, for tools that talk to S3 (the load generator).
/// `req.headers` must hold every header named in `signed_headers`.
pub fn sign(scope: &Scope, req: &SignedRequest, signed_headers: &[&str], payload_hash: &str) -> S3Result<String> {
    let canonical = canonical_request(req, signed_headers, payload_hash, false)?;
    Ok(hex(&hmac(&scope.key, string_to_sign(scope, &canonical).as_bytes())))
}

/// The signature of one aws-chunked chunk, chained from the previous signature.
pub fn chunk_signature(scope: &Scope, previous: &str, chunk_sha256_hex: &str) -> String {
    let to_sign = format!(
        "AWS4-HMAC-SHA256-PAYLOAD\n{}\n{}\n{}\n{}\n{}",
        scope.amz_date,
        scope.scope_string(),
        previous,
        EMPTY_SHA256,
        chunk_sha256_hex
    );
    hex(&hmac(&scope.key, to_sign.as_bytes()))
}

/// The signature over the trailing headers of a signed streaming upload.
pub fn trailer_signature(scope: &Scope, previous: &str, trailer_bytes: &[u8]) -> String {
    let to_sign = format!(
        "AWS4-HMAC-SHA256-TRAILER\n{}\n{}\n{}\n{}",
        scope.amz_date,
        scope.scope_string(),
        previous,
        sha256_hex(trailer_bytes)
    );
    hex(&hmac(&scope.key, to_sign.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct One;
    impl Credentials for One {
        fn secret_for(&self, access_key: &str) -> Option<String> {
            (access_key == "AKIAIOSFODNN7EXAMPLE").then(|| "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_owned())
        }
        fn region(&self) -> &str {
            "us-east-1"
        }
    }

    /// The same user on a server in another region.
    struct Elsewhere;
    impl Credentials for Elsewhere {
        fn secret_for(&self, access_key: &str) -> Option<String> {
            One.secret_for(access_key)
        }
        fn region(&self) -> &str {
            "eu-west-1"
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    /// The headers of the "GET Object" example of the AWS SigV4 documentation for S3.
    fn documented_get_headers() -> Vec<(String, String)> {
        headers(&[
            ("host", "examplebucket.s3.amazonaws.com"),
            ("range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", "20130524T000000Z"),
        ])
    }

    /// The "GET Object" example of the AWS SigV4 documentation for S3.
    #[test]
    fn aws_documented_get_object_example() {
        let h = documented_get_headers();
        let req = SignedRequest { method: "GET", path: "/test.txt", query: &[], headers: &h };
        let auth = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41";
        let now = parse_amz_date("20130524T000100Z").unwrap();
        assert!(verify_header(&req, auth, &One, now).is_ok());
        let tampered = auth.replace("f0e8", "f0e9");
        assert_eq!(verify_header(&req, &tampered, &One, now).err().unwrap().code, Code::SignatureDoesNotMatch);
        let late = now + 3600;
        assert_eq!(verify_header(&req, auth, &One, late).err().unwrap().code, Code::RequestTimeTooSkewed);
    }

    /// The presigned URL example of the AWS documentation.
    #[test]
    fn aws_documented_presigned_example() {
        let h = headers(&[("host", "examplebucket.s3.amazonaws.com")]);
        let q: Vec<(String, String)> = [
            ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
            ("X-Amz-Credential", "AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request"),
            ("X-Amz-Date", "20130524T000000Z"),
            ("X-Amz-Expires", "86400"),
            ("X-Amz-SignedHeaders", "host"),
            ("X-Amz-Signature", "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let req = SignedRequest { method: "GET", path: "/test.txt", query: &q, headers: &h };
        let now = parse_amz_date("20130524T010000Z").unwrap();
        assert!(verify_presigned(&req, &One, now).is_ok());
        let expired = parse_amz_date("20130526T000000Z").unwrap();
        assert_eq!(verify_presigned(&req, &One, expired).err().unwrap().code, Code::AccessDenied);
    }

    /// The streaming upload example of the AWS documentation: seed and first chunk signature.
    #[test]
    fn aws_documented_chunk_signature() {
        let key = signing_key("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "20130524", "us-east-1");
        let scope = Scope {
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            date: "20130524".into(),
            region: "us-east-1".into(),
            amz_date: "20130524T000000Z".into(),
            key,
        };
        let seed = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";
        let chunk = vec![b'a'; 65536];
        assert_eq!(
            chunk_signature(&scope, seed, &sha256_hex(&chunk)),
            "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"
        );
    }

    #[test]
    fn client_signer_produces_what_the_verifier_accepts() {
        let h = documented_get_headers();
        let req = SignedRequest { method: "GET", path: "/test.txt", query: &[], headers: &h };
        let scope = Scope {
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            date: "20130524".into(),
            region: "us-east-1".into(),
            amz_date: "20130524T000000Z".into(),
            key: signing_key("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "20130524", "us-east-1"),
        };
        let signed = ["host", "range", "x-amz-content-sha256", "x-amz-date"];
        let sig = sign(&scope, &req, &signed, EMPTY_SHA256).unwrap();
        assert_eq!(sig, "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    }

    /// Issue 16, item 9: a signature for another region is refused, naming the right one.
    #[test]
    fn a_credential_scope_for_another_region_is_refused() {
        let h = documented_get_headers();
        let req = SignedRequest { method: "GET", path: "/test.txt", query: &[], headers: &h };
        let auth = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41";
        let now = parse_amz_date("20130524T000100Z").unwrap();
        let e = verify_header(&req, auth, &Elsewhere, now).err().unwrap();
        assert_eq!(e.code, Code::AuthorizationHeaderMalformed);
        assert_eq!(
            e.message,
            "The authorization header is malformed; the region 'us-east-1' is wrong; expecting 'eu-west-1'"
        );
        let (q, h) = presigned_put(&[], None, UNSIGNED_PAYLOAD);
        let req = SignedRequest { method: "PUT", path: "/test.txt", query: &q, headers: &h };
        let e = verify_presigned(&req, &Elsewhere, example_now()).err().unwrap();
        assert_eq!(e.code, Code::AuthorizationQueryParametersError);
        assert!(e.message.ends_with("the region 'us-east-1' is wrong; expecting 'eu-west-1'"), "{}", e.message);
    }

    fn example_scope() -> Scope {
        Scope {
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            date: "20130524".into(),
            region: "us-east-1".into(),
            amz_date: "20130524T000000Z".into(),
            key: signing_key("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "20130524", "us-east-1"),
        }
    }

    fn example_now() -> i64 {
        parse_amz_date("20130524T000100Z").unwrap()
    }

    /// Name-value pairs: a query or headers.
    type Pairs = Vec<(String, String)>;

    /// A presigned PUT: extra query parameters, an x-amz-content-sha256 header (signed or
    /// not), and the payload hash its canonical request holds. Returns its query and headers.
    fn presigned_put(extra: &[(&str, &str)], header: Option<(&str, bool)>, canonical_payload: &str) -> (Pairs, Pairs) {
        let mut h = headers(&[("host", "examplebucket.s3.amazonaws.com")]);
        let mut signed = vec!["host"];
        if let Some((value, is_signed)) = header {
            h.push(("x-amz-content-sha256".into(), value.into()));
            if is_signed {
                signed.push("x-amz-content-sha256");
            }
        }
        let mut q: Vec<(String, String)> = [
            ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
            ("X-Amz-Credential", "AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request"),
            ("X-Amz-Date", "20130524T000000Z"),
            ("X-Amz-Expires", "86400"),
        ]
        .iter()
        .chain(extra)
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        q.push(("X-Amz-SignedHeaders".into(), signed.join(";")));
        let req = SignedRequest { method: "PUT", path: "/test.txt", query: &q, headers: &h };
        let sig = sign(&example_scope(), &req, &signed, canonical_payload).unwrap();
        q.push(("X-Amz-Signature".into(), sig));
        (q, h)
    }

    /// Issue 16, item 8: the payload hash a presigned URL signs is what the body is held to.
    #[test]
    fn a_presigned_url_reports_the_payload_hash_it_signed() {
        let hash = sha256_hex(b"the body");
        let verify = |(q, h): (Pairs, Pairs)| {
            let req = SignedRequest { method: "PUT", path: "/test.txt", query: &q, headers: &h };
            verify_presigned(&req, &One, example_now()).map(|a| a.payload_hash)
        };
        let in_query = [("X-Amz-Content-Sha256", hash.as_str())];
        // In the query, signed as AWS signs presigned URLs (UNSIGNED-PAYLOAD) or as MinIO's
        // clients do (the hash itself): either way the hash is covered and reported.
        assert_eq!(verify(presigned_put(&in_query, None, UNSIGNED_PAYLOAD)).unwrap(), hash);
        assert_eq!(verify(presigned_put(&in_query, None, &hash)).unwrap(), hash);
        // As a signed header, with either canonical payload.
        assert_eq!(verify(presigned_put(&[], Some((&hash, true)), UNSIGNED_PAYLOAD)).unwrap(), hash);
        assert_eq!(verify(presigned_put(&[], Some((&hash, true)), &hash)).unwrap(), hash);
        // An unsigned header is not the signer's: ignored.
        assert_eq!(verify(presigned_put(&[], Some((&hash, false)), UNSIGNED_PAYLOAD)).unwrap(), UNSIGNED_PAYLOAD);
        assert_eq!(verify(presigned_put(&[], None, UNSIGNED_PAYLOAD)).unwrap(), UNSIGNED_PAYLOAD);
        // A hash changed after signing breaks the signature.
        let (mut q, h) = presigned_put(&in_query, None, UNSIGNED_PAYLOAD);
        q.iter_mut().filter(|(k, _)| k == "X-Amz-Content-Sha256").for_each(|(_, v)| *v = sha256_hex(b"other"));
        assert_eq!(verify((q, h)).unwrap_err().code, Code::SignatureDoesNotMatch);
        // Signed over one hash, claiming another: refused too.
        let other = sha256_hex(b"other");
        assert_eq!(verify(presigned_put(&in_query, None, &other)).unwrap_err().code, Code::SignatureDoesNotMatch);
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn uri_encoding_and_dates() {
        assert_eq!(uri_encode("a b/c~d*", false), "a%20b/c~d%2A");
        assert_eq!(uri_encode("a/b", true), "a%2Fb");
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20000301T000000Z"), Some(951868800));
        assert_eq!(parse_amz_date("garbage"), None);
        for secs in [0, 951_868_800, 1_700_000_000, 4_102_444_799] {
            assert_eq!(parse_amz_date(&format_amz_date(secs)), Some(secs));
        }
        assert_eq!(parse_amz_date("20001301T000000Z"), None);
    }
}
