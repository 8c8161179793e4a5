//! The aws-chunked decoder (`Body`): signed chunks, signed and unsigned trailers,
//! x-amz-decoded-content-length, over Content-Length or HTTP chunked framing, on the
//! server's connection code.
//!
//! Input (structure-aware): either raw body bytes decoded in a chosen mode, or a valid
//! encoding (real chunk and trailer signatures) of arbitrary pieces and trailers, then
//! damaged. An undamaged body must decode to exactly its payload and trailers; a body whose
//! signed bytes changed must not decode to a different payload.

#![no_main]

use arbitrary::Arbitrary;
use ferrite_fuzz::chunked::{apply, aws_chunked, http_chunked, scope, AwsMode, Damage, Name, Value, SEED_SIGNATURE};
use ferrite_fuzz::{piece_bytes, with_connection};
use ferrite_s3::body::{Body, PayloadMode};
use ferrite_s3::error::{Code, S3Error, S3Result};
use ferrite_s3::http::{Conn, RawBody};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Input {
    Raw {
        mode: AwsMode,
        framing: Framing,
        write: u8,
        decoded_len: Option<u64>,
        body: Vec<u8>,
    },
    Built {
        mode: AwsMode,
        framing: Framing,
        write: u8,
        pieces: Vec<Vec<u8>>,
        trailers: Vec<(Name, Value)>,
        /// Added to the true decoded length in x-amz-decoded-content-length.
        decoded_len_error: i8,
        damage: Vec<Damage>,
    },
}

/// How the aws-chunked body travels: with a Content-Length, or inside HTTP chunked
/// framing cut into pieces of this size (clients may do both).
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Framing {
    ContentLength,
    HttpChunked(u8),
}

fn payload_mode(mode: AwsMode) -> PayloadMode {
    let signing = mode.signed().then(|| (scope(), SEED_SIGNATURE.to_owned()));
    PayloadMode::AwsChunked { signing, trailer: mode.trailer() }
}

fn request(framing: Framing, body: &[u8]) -> Vec<u8> {
    let mut wire = b"PUT /bucket/key HTTP/1.1\r\nHost: s3.example.com\r\nContent-Encoding: aws-chunked\r\n".to_vec();
    match framing {
        Framing::ContentLength => {
            wire.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            wire.extend_from_slice(body);
        }
        Framing::HttpChunked(size) => {
            wire.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            let pieces: Vec<Vec<u8>> = body.chunks(usize::from(size).max(1)).map(<[u8]>::to_vec).collect();
            wire.extend_from_slice(&http_chunked(&pieces, None, &[]));
        }
    }
    wire
}

/// The decoded payload and trailers, or the decoder's error.
type Decoded = S3Result<(Vec<u8>, Vec<(String, String)>)>;

async fn decode(conn: &mut Conn, mode: PayloadMode, decoded_len: Option<u64>) -> Decoded {
    let Some(req) = conn.read_head().await? else {
        return Err(S3Error::new(Code::IncompleteBody, "no request"));
    };
    let raw = RawBody::new(conn, &req)?;
    let mut body = Body::new(raw, mode, decoded_len);
    let mut out = Vec::new();
    while let Some(piece) = body.next().await? {
        out.extend_from_slice(&piece);
    }
    assert!(body.raw_done(), "the payload ended before its framing");
    Ok((out, body.trailers.clone()))
}

fn run(mode: AwsMode, framing: Framing, write: u8, decoded_len: Option<u64>, body: &[u8]) -> Decoded {
    let wire = request(framing, body);
    let payload_mode = payload_mode(mode);
    with_connection(&wire, piece_bytes(write, wire.len()), async move |conn: &mut Conn| {
        decode(conn, payload_mode, decoded_len).await
    })
}

fuzz_target!(|input: Input| match input {
    Input::Raw { mode, framing, write, decoded_len, body } => {
        if let Ok((payload, _)) = run(mode, framing, write, decoded_len, &body) {
            assert!(payload.len() <= body.len(), "more payload than body bytes");
            if let Some(n) = decoded_len {
                assert_eq!(payload.len() as u64, n, "x-amz-decoded-content-length not enforced");
            }
        }
    }
    Input::Built { mode, framing, write, pieces, trailers, decoded_len_error, damage } => {
        let (mut body, expected_trailers) = aws_chunked(mode, &pieces, &trailers);
        let expected = pieces.concat();
        let damaged = apply(&mut body, &damage);
        let decoded_len = (expected.len() as u64).checked_add_signed(i64::from(decoded_len_error));
        let decoded = run(mode, framing, write, decoded_len, &body);
        match decoded {
            Ok((payload, got_trailers)) => {
                if let Some(n) = decoded_len {
                    assert_eq!(n, payload.len() as u64, "x-amz-decoded-content-length not enforced");
                }
                if mode.signed() {
                    // Signed chunks: damage may change only what no signature covers
                    // (the case of a hex digit, extensions), never the payload.
                    assert!(payload == expected, "a signed aws-chunked body decoded to another payload");
                }
                if !damaged && mode.trailer() {
                    assert_eq!(got_trailers, expected_trailers, "trailers lost or changed");
                }
                if !damaged {
                    assert!(payload == expected, "a valid aws-chunked body decoded to another payload");
                }
            }
            Err(e) if !damaged && decoded_len_error == 0 => {
                panic!("a valid aws-chunked body was refused: {:?} {}", e.code, e.message)
            }
            Err(_) => {}
        }
    }
});
