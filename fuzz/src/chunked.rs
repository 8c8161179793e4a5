//! Structure-aware bodies: an HTTP chunked or aws-chunked encoding built from `arbitrary`
//! pieces, valid by construction (with real chunk and trailer signatures), then damaged on
//! purpose. A body that was not damaged must decode to exactly its payload and trailers;
//! a damaged one may decode to anything or fail, but never panic or hang.

use arbitrary::{Arbitrary, Unstructured};
use ferrite_s3::sigv4::{chunk_signature, sha256_hex, signing_key, trailer_signature, Scope};

/// The access key, secret, date and region of every signed body.
pub const ACCESS_KEY: &str = "AKIAFUZZ";
pub const SECRET_KEY: &str = "fuzz-secret";
pub const DATE: &str = "20260101";
pub const AMZ_DATE: &str = "20260101T000000Z";
pub const REGION: &str = "us-east-1";

/// The signing scope of every signed body.
pub fn scope() -> Scope {
    Scope {
        access_key: ACCESS_KEY.into(),
        date: DATE.into(),
        region: REGION.into(),
        amz_date: AMZ_DATE.into(),
        key: signing_key(SECRET_KEY, DATE, REGION),
    }
}

/// The seed signature chunk signatures chain from (any 64 hex digits do for the decoder).
pub const SEED_SIGNATURE: &str = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";

/// A trailer or header name: 1 to 24 of `a-z 0-9 -`, as clients send them.
#[derive(Debug, Clone)]
pub struct Name(pub String);

impl<'a> Arbitrary<'a> for Name {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Name(string_of(u, b"abcdefghijklmnopqrstuvwxyz0123456789-", 1..=24)?))
    }
}

/// A trailer value: 0 to 64 of base64's alphabet and `.:_-` (checksums, mostly).
#[derive(Debug, Clone)]
pub struct Value(pub String);

impl<'a> Arbitrary<'a> for Value {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=.:_-";
        Ok(Value(string_of(u, alphabet, 0..=64)?))
    }
}

/// A string of `lengths` characters drawn from `alphabet`.
fn string_of(
    u: &mut Unstructured<'_>,
    alphabet: &[u8],
    lengths: std::ops::RangeInclusive<usize>,
) -> arbitrary::Result<String> {
    let len = u.int_in_range(lengths)?;
    (0..len).map(|_| u.choose(alphabet).map(|b| char::from(*b))).collect()
}

/// Damage done to an encoded body; positions are taken modulo its length.
#[derive(Arbitrary, Debug, Clone)]
pub enum Damage {
    Flip { at: u16, bit: u8 },
    Cut { at: u16 },
    Insert { at: u16, bytes: Vec<u8> },
    Remove { at: u16, len: u8 },
}

/// Applies `damage` in order; false when the bytes did not change.
pub fn apply(wire: &mut Vec<u8>, damage: &[Damage]) -> bool {
    let before = wire.clone();
    for d in damage {
        let at = |pos: u16, len: usize| usize::from(pos) % (len + 1);
        match d {
            Damage::Flip { at: pos, bit } => {
                if !wire.is_empty() {
                    let i = usize::from(*pos) % wire.len();
                    wire[i] ^= 1 << (bit % 8);
                }
            }
            Damage::Cut { at: pos } => {
                let i = at(*pos, wire.len());
                wire.truncate(i);
            }
            Damage::Insert { at: pos, bytes } => {
                let i = at(*pos, wire.len());
                wire.splice(i..i, bytes.iter().copied());
            }
            Damage::Remove { at: pos, len } => {
                let i = at(*pos, wire.len());
                let end = (i + usize::from(*len)).min(wire.len());
                wire.drain(i..end);
            }
        }
    }
    *wire != before
}

/// HTTP chunked transfer coding of `pieces` (empty ones skipped: a zero size ends the body),
/// with optional chunk extensions and trailer fields.
pub fn http_chunked(pieces: &[Vec<u8>], extension: Option<&str>, trailers: &[(Name, Value)]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in pieces.iter().filter(|p| !p.is_empty()) {
        out.extend_from_slice(format!("{:x}", p.len()).as_bytes());
        if let Some(ext) = extension {
            out.extend_from_slice(format!(";{ext}").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n");
    for (n, v) in trailers {
        out.extend_from_slice(format!("{}: {}\r\n", n.0, v.0).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// How an aws-chunked body is signed.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsMode {
    /// STREAMING-AWS4-HMAC-SHA256-PAYLOAD
    Signed,
    /// STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER
    SignedTrailer,
    /// STREAMING-UNSIGNED-PAYLOAD-TRAILER
    UnsignedTrailer,
}

impl AwsMode {
    pub fn signed(self) -> bool {
        !matches!(self, AwsMode::UnsignedTrailer)
    }
    pub fn trailer(self) -> bool {
        !matches!(self, AwsMode::Signed)
    }
}

/// The aws-chunked encoding of `pieces` (empty ones skipped), signed as `mode` says, with
/// `trailers` when the mode has them. Returns the body and the trailers as the decoder
/// reports them (lower-case names, trimmed values).
pub fn aws_chunked(mode: AwsMode, pieces: &[Vec<u8>], trailers: &[(Name, Value)]) -> (Vec<u8>, Vec<(String, String)>) {
    let scope = scope();
    let mut out = Vec::new();
    let mut previous = SEED_SIGNATURE.to_owned();
    let data = pieces.iter().filter(|p| !p.is_empty()).map(Vec::as_slice);
    for p in data.chain(std::iter::once(&[][..])) {
        out.extend_from_slice(format!("{:x}", p.len()).as_bytes());
        if mode.signed() {
            let sig = chunk_signature(&scope, &previous, &sha256_hex(p));
            out.extend_from_slice(format!(";chunk-signature={sig}").as_bytes());
            previous = sig;
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(p);
        if !p.is_empty() {
            out.extend_from_slice(b"\r\n");
        }
    }
    let mut decoded = Vec::new();
    if mode.trailer() {
        let mut signed_bytes = Vec::new();
        for (n, v) in trailers.iter().filter(|(n, _)| n.0 != "x-amz-trailer-signature") {
            out.extend_from_slice(format!("{}:{}\r\n", n.0, v.0).as_bytes());
            signed_bytes.extend_from_slice(format!("{}:{}\n", n.0, v.0).as_bytes());
            decoded.push((n.0.clone(), v.0.clone()));
        }
        if mode.signed() {
            let sig = trailer_signature(&scope, &previous, &signed_bytes);
            out.extend_from_slice(format!("x-amz-trailer-signature:{sig}\r\n").as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
    (out, decoded)
}
