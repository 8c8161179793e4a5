//! The HTTP chunked transfer coding decoder (`RawBody`), on the server's connection code.
//!
//! Input (structure-aware): either raw body bytes after a `Transfer-Encoding: chunked`
//! head, or a valid encoding of arbitrary pieces, extensions and trailers, then damaged.
//! An undamaged body must decode to exactly its payload.

#![no_main]

use arbitrary::Arbitrary;
use ferrite_fuzz::chunked::{apply, http_chunked, Damage, Name, Value};
use ferrite_fuzz::{piece_bytes, with_connection};
use ferrite_s3::error::S3Result;
use ferrite_s3::http::{Conn, RawBody};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Input {
    Raw {
        write: u8,
        body: Vec<u8>,
    },
    Built {
        write: u8,
        pieces: Vec<Vec<u8>>,
        extension: Option<Name>,
        trailers: Vec<(Name, Value)>,
        damage: Vec<Damage>,
    },
}

const HEAD: &[u8] = b"PUT /bucket/key HTTP/1.1\r\nHost: s3.example.com\r\nTransfer-Encoding: chunked\r\n\r\n";

/// Reads the request and its whole body: the payload, or the decoder's error.
async fn decode(conn: &mut Conn) -> S3Result<Vec<u8>> {
    let Some(req) = conn.read_head().await? else {
        return Err(ferrite_s3::error::S3Error::new(ferrite_s3::error::Code::IncompleteBody, "no request"));
    };
    let mut body = RawBody::new(conn, &req)?;
    let mut out = Vec::new();
    while let Some(piece) = body.next().await? {
        assert!(!piece.is_empty(), "an empty piece before the end of the body");
        out.extend_from_slice(&piece);
    }
    assert!(body.is_done(), "the body ended but is not done");
    Ok(out)
}

fuzz_target!(|input: Input| {
    let (write, body, expected) = match input {
        Input::Raw { write, body } => (write, body, None),
        Input::Built { write, pieces, extension, trailers, damage } => {
            let mut body = http_chunked(&pieces, extension.as_ref().map(|n| n.0.as_str()), &trailers);
            let damaged = apply(&mut body, &damage);
            (write, body, (!damaged).then(|| pieces.concat()))
        }
    };
    let mut wire = HEAD.to_vec();
    wire.extend_from_slice(&body);
    let decoded = with_connection(&wire, piece_bytes(write, wire.len()), decode);
    if let Ok(payload) = &decoded {
        assert!(payload.len() <= body.len(), "more payload than body bytes");
    }
    if let Some(expected) = expected {
        match decoded {
            Ok(payload) => assert!(payload == expected, "a valid chunked body decoded to another payload"),
            Err(e) => panic!("a valid chunked body was refused: {:?} {}", e.code, e.message),
        }
    }
});
