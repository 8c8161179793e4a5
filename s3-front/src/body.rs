//! The decoded request body: plain (with x-amz-content-sha256 verification) or aws-chunked
//! (with chunk signatures and trailing checksums).

use sha2::{Digest, Sha256};

use crate::error::{err, Code, S3Error, S3Result};
use crate::http::RawBody;
use crate::sigv4::{chunk_signature, hex, trailer_signature, Scope};

/// How the payload is framed and checked.
pub enum PayloadMode {
    /// The body is the payload. `sha256`: the hex digest it must have, if signed.
    Plain { sha256: Option<String> },
    /// aws-chunked. `signing`: the scope and seed signature when chunks are signed.
    AwsChunked { signing: Option<(Scope, String)>, trailer: bool },
}

enum Chunk {
    Header,
    Data(u64),
    DataEnd,
    Finished,
}

pub struct Body<'c> {
    raw: RawBody<'c>,
    mode: PayloadMode,
    pending: Vec<u8>,
    pos: usize,
    state: Chunk,
    chunk_sig: String,
    chunk_sig_claim: Option<String>,
    chunk_hasher: Sha256,
    plain_hasher: Option<Sha256>,
    decoded: u64,
    decoded_expected: Option<u64>,
    pub trailers: Vec<(String, String)>,
}

const CHUNK_SIZE_MAX: u64 = 64 << 20;

impl<'c> Body<'c> {
    pub fn new(raw: RawBody<'c>, mode: PayloadMode, decoded_expected: Option<u64>) -> Self {
        let plain_hasher = matches!(&mode, PayloadMode::Plain { sha256: Some(_) }).then(Sha256::new);
        let chunk_sig = match &mode {
            PayloadMode::AwsChunked { signing: Some((_, seed)), .. } => seed.clone(),
            _ => String::new(),
        };
        Self {
            raw,
            mode,
            pending: Vec::new(),
            pos: 0,
            state: Chunk::Header,
            chunk_sig,
            chunk_sig_claim: None,
            chunk_hasher: Sha256::new(),
            plain_hasher,
            decoded: 0,
            decoded_expected,
            trailers: Vec::new(),
        }
    }

    pub fn into_raw(self) -> RawBody<'c> {
        self.raw
    }

    pub fn raw_done(&self) -> bool {
        self.raw.is_done()
    }

    pub async fn drain(&mut self, limit: u64) -> bool {
        self.raw.drain(limit).await
    }

    /// The next piece of payload, or None when the body is complete and verified.
    pub async fn next(&mut self) -> S3Result<Option<Vec<u8>>> {
        match self.mode {
            PayloadMode::Plain { .. } => self.next_plain().await,
            PayloadMode::AwsChunked { .. } => self.next_chunked().await,
        }
    }

    async fn next_plain(&mut self) -> S3Result<Option<Vec<u8>>> {
        match self.raw.next().await? {
            Some(bytes) => {
                if let Some(h) = &mut self.plain_hasher {
                    h.update(&bytes);
                }
                self.decoded += bytes.len() as u64;
                Ok(Some(bytes))
            }
            None => {
                if let (Some(h), PayloadMode::Plain { sha256: Some(expected) }) = (self.plain_hasher.take(), &self.mode)
                {
                    if hex(&h.finalize()) != *expected {
                        return err(
                            Code::XAmzContentSHA256Mismatch,
                            "The provided 'x-amz-content-sha256' header does not match what was computed.",
                        );
                    }
                }
                Ok(None)
            }
        }
    }

    fn available(&self) -> &[u8] {
        &self.pending[self.pos..]
    }

    async fn pull(&mut self) -> S3Result<()> {
        if self.pos == self.pending.len() {
            self.pending.clear();
            self.pos = 0;
        }
        match self.raw.next().await? {
            Some(bytes) => {
                self.pending.extend_from_slice(&bytes);
                Ok(())
            }
            None => Err(S3Error::new(Code::IncompleteBody, "the aws-chunked body ended early").closing()),
        }
    }

    async fn line(&mut self) -> S3Result<String> {
        loop {
            if let Some(end) = self.available().windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.available()[..end]).into_owned();
                self.pos += end + 2;
                return Ok(line);
            }
            if self.available().len() > 8192 {
                return Err(S3Error::new(Code::InvalidRequest, "aws-chunked header line too long").closing());
            }
            self.pull().await?;
        }
    }

    fn signing(&self) -> Option<&Scope> {
        match &self.mode {
            PayloadMode::AwsChunked { signing: Some((scope, _)), .. } => Some(scope),
            _ => None,
        }
    }

    fn check_chunk_signature(&mut self, claimed: &str) -> S3Result<()> {
        let digest = hex(&std::mem::take(&mut self.chunk_hasher).finalize());
        let Some(scope) = self.signing() else { return Ok(()) };
        let expected = chunk_signature(scope, &self.chunk_sig, &digest);
        if expected != claimed {
            return Err(S3Error::new(Code::SignatureDoesNotMatch, "The chunk signature does not match.").closing());
        }
        self.chunk_sig = expected;
        Ok(())
    }

    async fn next_chunked(&mut self) -> S3Result<Option<Vec<u8>>> {
        loop {
            match self.state {
                Chunk::Finished => return Ok(None),
                Chunk::Header => {
                    let line = self.line().await?;
                    let mut fields = line.split(';');
                    let size = fields.next().unwrap_or("").trim();
                    let Ok(size) = u64::from_str_radix(size, 16) else {
                        return Err(S3Error::new(Code::InvalidRequest, "malformed aws-chunked chunk size").closing());
                    };
                    if size > CHUNK_SIZE_MAX {
                        return Err(S3Error::new(Code::InvalidRequest, "aws-chunked chunk too large").closing());
                    }
                    let sig = fields.find_map(|f| f.trim().strip_prefix("chunk-signature=")).map(str::to_owned);
                    if self.signing().is_some() && sig.is_none() {
                        return Err(S3Error::new(Code::SignatureDoesNotMatch, "missing chunk signature").closing());
                    }
                    self.chunk_sig_claim = sig;
                    if size == 0 {
                        self.finish_chunks().await?;
                        self.state = Chunk::Finished;
                    } else {
                        self.state = Chunk::Data(size);
                    }
                }
                Chunk::Data(left) => {
                    if self.available().is_empty() {
                        self.pull().await?;
                    }
                    let take = (self.available().len() as u64).min(left) as usize;
                    let out = self.available()[..take].to_vec();
                    self.pos += take;
                    self.chunk_hasher.update(&out);
                    self.decoded += take as u64;
                    let left = left - take as u64;
                    self.state = if left == 0 { Chunk::DataEnd } else { Chunk::Data(left) };
                    return Ok(Some(out));
                }
                Chunk::DataEnd => {
                    if !self.line().await?.is_empty() {
                        return Err(
                            S3Error::new(Code::InvalidRequest, "aws-chunked chunk longer than its size").closing()
                        );
                    }
                    let claim = self.chunk_sig_claim.take().unwrap_or_default();
                    self.check_chunk_signature(&claim)?;
                    self.state = Chunk::Header;
                }
            }
        }
    }

    async fn finish_chunks(&mut self) -> S3Result<()> {
        let claim = self.chunk_sig_claim.take().unwrap_or_default();
        self.check_chunk_signature(&claim)?;
        let trailer = matches!(self.mode, PayloadMode::AwsChunked { trailer: true, .. });
        let mut trailer_bytes = Vec::new();
        let mut trailer_sig = None;
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                break;
            }
            if !trailer {
                return Err(S3Error::new(Code::InvalidRequest, "unexpected data after the final chunk").closing());
            }
            let Some((name, value)) = line.split_once(':') else {
                return Err(S3Error::new(Code::InvalidRequest, "malformed trailer").closing());
            };
            let name = name.trim().to_ascii_lowercase();
            if name == "x-amz-trailer-signature" {
                trailer_sig = Some(value.trim().to_owned());
            } else {
                trailer_bytes.extend_from_slice(format!("{name}:{}\n", value.trim()).as_bytes());
                self.trailers.push((name, value.trim().to_owned()));
            }
        }
        if let Some(scope) = self.signing() {
            if trailer {
                let expected = trailer_signature(scope, &self.chunk_sig, &trailer_bytes);
                if trailer_sig.as_deref() != Some(expected.as_str()) {
                    return Err(
                        S3Error::new(Code::SignatureDoesNotMatch, "The trailer signature does not match.").closing()
                    );
                }
            }
        }
        if let Some(expected) = self.decoded_expected {
            if expected != self.decoded {
                return err(Code::IncompleteBody, "x-amz-decoded-content-length does not match the payload");
            }
        }
        // The raw body must end here too.
        if !self.available().is_empty() || self.raw.next().await?.is_some() {
            return Err(S3Error::new(Code::InvalidRequest, "data after the end of the aws-chunked body").closing());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use proptest::prelude::*;

    use super::*;
    use crate::http::{Conn, Stream};
    use crate::sigv4::{sha256_hex, signing_key};

    #[derive(Clone, Copy, Debug)]
    enum Wire {
        Plain,
        HttpChunked,
        AwsSigned,
        AwsUnsignedTrailer,
    }

    fn scope() -> Scope {
        Scope {
            access_key: "AK".into(),
            date: "20260101".into(),
            region: "us-east-1".into(),
            amz_date: "20260101T000000Z".into(),
            key: signing_key("secret", "20260101", "us-east-1"),
        }
    }

    /// The request as a client sends it, plus the decoding mode the server would choose.
    fn encode(wire: Wire, data: &[u8], chunk: usize) -> (Vec<u8>, PayloadMode) {
        let pieces: Vec<&[u8]> = data.chunks(chunk.max(1)).collect();
        let mut body = Vec::new();
        let mode = match wire {
            Wire::Plain => {
                body.extend_from_slice(data);
                PayloadMode::Plain { sha256: Some(sha256_hex(data)) }
            }
            Wire::HttpChunked => {
                for p in &pieces {
                    body.extend_from_slice(format!("{:x}\r\n", p.len()).as_bytes());
                    body.extend_from_slice(p);
                    body.extend_from_slice(b"\r\n");
                }
                body.extend_from_slice(b"0\r\n\r\n");
                PayloadMode::Plain { sha256: None }
            }
            Wire::AwsSigned => {
                let seed = "a".repeat(64);
                let mut prev = seed.clone();
                for p in pieces.iter().copied().chain(std::iter::once(&[][..])) {
                    let sig = chunk_signature(&scope(), &prev, &sha256_hex(p));
                    body.extend_from_slice(format!("{:x};chunk-signature={sig}\r\n", p.len()).as_bytes());
                    body.extend_from_slice(p);
                    body.extend_from_slice(b"\r\n");
                    prev = sig;
                }
                PayloadMode::AwsChunked { signing: Some((scope(), seed)), trailer: false }
            }
            Wire::AwsUnsignedTrailer => {
                for p in &pieces {
                    body.extend_from_slice(format!("{:x}\r\n", p.len()).as_bytes());
                    body.extend_from_slice(p);
                    body.extend_from_slice(b"\r\n");
                }
                body.extend_from_slice(b"0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n");
                PayloadMode::AwsChunked { signing: None, trailer: true }
            }
        };
        let framing = match wire {
            Wire::HttpChunked => "Transfer-Encoding: chunked".to_owned(),
            _ => format!("Content-Length: {}", body.len()),
        };
        let mut out = format!("PUT /b/k HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\n").into_bytes();
        out.extend_from_slice(&body);
        (out, mode)
    }

    /// The payload and the trailers the server decoded.
    type Decoded = (Vec<u8>, Vec<(String, String)>);

    /// Sends `wire` over loopback in pieces of `write_size` and decodes it with the server's
    /// HTTP and body layers.
    fn decode(wire: Vec<u8>, mode: PayloadMode, write_size: usize, decoded_len: u64) -> S3Result<Decoded> {
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new().enable_timer().build().unwrap();
        rt.block_on(async move {
            let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let client = std::thread::spawn(move || {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                for piece in wire.chunks(write_size.max(1)) {
                    // The server may give up early on a corrupted request.
                    if s.write_all(piece).is_err() {
                        break;
                    }
                }
                let _ = s.shutdown(std::net::Shutdown::Write);
                s
            });
            let (stream, _) = listener.accept().await.unwrap();
            let mut conn = Conn::new(Stream::Plain(stream));
            let req = conn.read_head().await?.expect("a request");
            let raw = RawBody::new(&mut conn, &req)?;
            let mut body = Body::new(raw, mode, Some(decoded_len));
            let mut out = Vec::new();
            while let Some(chunk) = body.next().await? {
                out.extend_from_slice(&chunk);
            }
            let trailers = body.trailers.clone();
            drop(client.join());
            Ok((out, trailers))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        #[test]
        fn every_framing_decodes_to_the_payload(
            data in proptest::collection::vec(any::<u8>(), 0..200_000),
            chunk in 1usize..70_000,
            write_size in 1usize..100_000,
            wire in prop_oneof![Just(Wire::Plain), Just(Wire::HttpChunked), Just(Wire::AwsSigned), Just(Wire::AwsUnsignedTrailer)],
        ) {
            let (bytes, mode) = encode(wire, &data, chunk);
            let (got, trailers) = decode(bytes, mode, write_size, data.len() as u64).unwrap();
            prop_assert_eq!(got, data);
            if matches!(wire, Wire::AwsUnsignedTrailer) {
                prop_assert_eq!(trailers, vec![("x-amz-checksum-crc32".to_owned(), "AAAAAA==".to_owned())]);
            }
        }

        #[test]
        fn a_flipped_byte_is_an_error_never_a_wrong_payload(
            data in proptest::collection::vec(any::<u8>(), 1..50_000),
            chunk in 1usize..20_000,
            flip in any::<prop::sample::Index>(),
            wire in prop_oneof![Just(Wire::Plain), Just(Wire::AwsSigned)],
        ) {
            let (mut bytes, mode) = encode(wire, &data, chunk);
            let head_len = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            let at = head_len + flip.index(bytes.len() - head_len);
            bytes[at] ^= 0x20;
            match (wire, decode(bytes, mode, 4096, data.len() as u64)) {
                (Wire::Plain, result) => prop_assert!(result.is_err(), "a corrupted plain body was accepted"),
                // Flipping the case of a hex digit is harmless; anything else must fail.
                (_, Ok((got, _))) => prop_assert_eq!(got, data),
                (_, Err(_)) => {}
            }
        }
    }
}
