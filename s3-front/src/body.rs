//! The decoded request body: plain (with x-amz-content-sha256 verification) or aws-chunked
//! (with chunk signatures and trailing checksums).

use sha2::{Digest, Sha256};

use crate::error::{err, Code, S3Error, S3Result};
use crate::http::RawBody;
use crate::sigv4::{
    chunk_signature, constant_time_eq, hex, trailer_signature, Auth, Scope, STREAMING_SIGNED, STREAMING_SIGNED_TRAILER,
    STREAMING_UNSIGNED_TRAILER, UNSIGNED_PAYLOAD,
};

/// How the payload is framed and checked.
pub enum PayloadMode {
    /// The body is the payload. `sha256`: the hex digest it must have, if signed.
    Plain { sha256: Option<String> },
    /// aws-chunked. `signing`: the scope and seed signature when chunks are signed.
    AwsChunked { signing: Option<(Scope, String)>, trailer: bool },
}

impl PayloadMode {
    /// The framing and check an authenticated request's x-amz-content-sha256 names (for a
    /// presigned URL, the hash it signed: sigv4.rs): a hex SHA-256 is checked against the
    /// body whichever way the request was signed.
    pub fn of(auth: &Auth) -> S3Result<PayloadMode> {
        let signing = || Some((auth.scope.clone(), auth.signature.clone()));
        Ok(match auth.payload_hash.as_str() {
            UNSIGNED_PAYLOAD => PayloadMode::Plain { sha256: None },
            STREAMING_SIGNED => PayloadMode::AwsChunked { signing: signing(), trailer: false },
            STREAMING_SIGNED_TRAILER => PayloadMode::AwsChunked { signing: signing(), trailer: true },
            STREAMING_UNSIGNED_TRAILER => PayloadMode::AwsChunked { signing: None, trailer: true },
            h if is_sha256_hex(h) => PayloadMode::Plain { sha256: Some(h.to_ascii_lowercase()) },
            _ => {
                return err(
                    Code::InvalidArgument,
                    "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-* or a SHA-256 hex digest",
                )
            }
        })
    }

    /// Whether the body is covered by the signature: its SHA-256 signed, or each chunk
    /// signed (the trailers too when there are any).
    pub fn body_signed(&self) -> bool {
        matches!(self, PayloadMode::Plain { sha256: Some(_) } | PayloadMode::AwsChunked { signing: Some(_), .. })
    }
}

/// 64 hex digits: a SHA-256.
pub fn is_sha256_hex(h: &str) -> bool {
    h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())
}

enum Chunk {
    Header,
    Data(u64),
    DataEnd,
    Finished,
}

/// The largest chunk an aws-chunked body may announce (SDKs send 64 KiB to 8 MiB).
const CHUNK_SIZE_MAX: u64 = 64 << 20;
/// A chunk header line with its CRLF: the hex size, any extensions and
/// `;chunk-signature=` with 64 hex digits. SDKs send about 90 bytes; the limit leaves room
/// for extensions (which nothing uses) while bounding what one line can make the decoder
/// hold. Every byte of the line counts, its CRLF too.
pub const CHUNK_HEADER_BYTES_MAX: usize = 4 << 10;
/// One trailer line with its CRLF (`x-amz-checksum-crc64nvme:...`, the trailer signature).
pub const TRAILER_LINE_BYTES_MAX: usize = 1 << 10;
/// The whole trailer section after the final chunk, its closing empty line included: a
/// client cannot keep the decoder reading (or holding) trailer lines without end.
pub const TRAILER_BYTES_MAX: usize = 8 << 10;

pub struct Body<'c> {
    raw: RawBody<'c>,
    mode: PayloadMode,
    /// Received bytes not yet decoded start at `pos`. What lies before `pos` is dropped
    /// whenever more is read (`pull`), so `pending` never holds more than one line (at most
    /// `CHUNK_HEADER_BYTES_MAX`) plus one read from the connection.
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

/// A malformed aws-chunked body: InvalidRequest, and the connection closes (the rest of the
/// body cannot be framed).
fn malformed(message: &'static str) -> S3Error {
    S3Error::new(Code::InvalidRequest, message).closing()
}

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

    /// True while no byte of the body has been read and none is to come (no body at all),
    /// and again once the body was read to its end.
    pub fn raw_done(&self) -> bool {
        self.raw.is_done()
    }

    /// Whether the signature covers the body (`PayloadMode::body_signed`).
    pub fn signed(&self) -> bool {
        self.mode.body_signed()
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
                    if !constant_time_eq(hex(&h.finalize()).as_bytes(), expected.as_bytes()) {
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

    /// Reads more of the raw body into `pending`, first dropping what was decoded: without
    /// that, a client whose every write ends inside a line kept every byte it sent in
    /// memory (300 MB on the wire grew the server by 300 MB).
    async fn pull(&mut self) -> S3Result<()> {
        if self.pos > 0 {
            self.pending.drain(..self.pos);
            self.pos = 0;
        }
        match self.raw.next().await? {
            Some(bytes) if self.pending.is_empty() => {
                // Nothing left over: take the read as it is, without a copy.
                self.pending = bytes;
                Ok(())
            }
            Some(bytes) => {
                self.pending.extend_from_slice(&bytes);
                Ok(())
            }
            None => Err(S3Error::new(Code::IncompleteBody, "the aws-chunked body ended early").closing()),
        }
    }

    /// The next CRLF-terminated line, of at most `limit` bytes counting its CRLF; longer
    /// is refused as soon as `limit` bytes have arrived without a line end. Each received
    /// byte is searched once.
    async fn line(&mut self, limit: usize, too_long: &'static str) -> S3Result<String> {
        let mut searched: usize = 0;
        loop {
            let from = searched.saturating_sub(1);
            if let Some(at) = self.available()[from..].windows(2).position(|w| w == b"\r\n") {
                let end = from + at;
                if end + 2 > limit {
                    return Err(malformed(too_long));
                }
                let line = String::from_utf8_lossy(&self.available()[..end]).into_owned();
                self.pos += end + 2;
                return Ok(line);
            }
            searched = self.available().len();
            if searched >= limit {
                return Err(malformed(too_long));
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
        // Compared in constant time: a signature is a MAC an attacker must not learn byte by byte.
        if !constant_time_eq(expected.as_bytes(), claimed.as_bytes()) {
            return Err(S3Error::new(Code::SignatureDoesNotMatch, "The chunk signature does not match.").closing());
        }
        self.chunk_sig = expected;
        Ok(())
    }

    /// Parses a chunk header line: the chunk's size and the signature it claims.
    fn chunk_header(&self, line: &str) -> S3Result<(u64, Option<String>)> {
        let mut fields = line.split(';');
        let size = fields.next().unwrap_or("").trim();
        // At most 16 hex digits: a longer size cannot fit 64 bits (from_str_radix would say
        // so too, but only after reading them all).
        if size.is_empty() || size.len() > 16 {
            return Err(malformed("malformed aws-chunked chunk size"));
        }
        let Ok(size) = u64::from_str_radix(size, 16) else {
            return Err(malformed("malformed aws-chunked chunk size"));
        };
        if size > CHUNK_SIZE_MAX {
            return Err(malformed("aws-chunked chunk too large"));
        }
        let sig = fields.find_map(|f| f.trim().strip_prefix("chunk-signature=")).map(str::to_owned);
        if self.signing().is_some() && sig.is_none() {
            return Err(S3Error::new(Code::SignatureDoesNotMatch, "missing chunk signature").closing());
        }
        Ok((size, sig))
    }

    async fn next_chunked(&mut self) -> S3Result<Option<Vec<u8>>> {
        loop {
            match self.state {
                Chunk::Finished => return Ok(None),
                Chunk::Header => {
                    let line = self.line(CHUNK_HEADER_BYTES_MAX, "aws-chunked chunk header line too long").await?;
                    let (size, sig) = self.chunk_header(&line)?;
                    self.chunk_sig_claim = sig;
                    if size == 0 {
                        self.finish_chunks().await?;
                        self.state = Chunk::Finished;
                    } else {
                        self.state = Chunk::Data(size);
                    }
                }
                Chunk::Data(left) => return self.chunk_data(left).await.map(Some),
                Chunk::DataEnd => {
                    // Exactly CRLF: the line limit is the CRLF itself.
                    self.line(2, "aws-chunked chunk longer than its size").await?;
                    let claim = self.chunk_sig_claim.take().unwrap_or_default();
                    self.check_chunk_signature(&claim)?;
                    self.state = Chunk::Header;
                }
            }
        }
    }

    /// Up to `left` bytes of the current chunk's data.
    async fn chunk_data(&mut self, left: u64) -> S3Result<Vec<u8>> {
        if self.available().is_empty() {
            self.pull().await?;
        }
        let take = (self.available().len() as u64).min(left) as usize;
        let out = if self.pos == 0 && take == self.pending.len() {
            // The whole read is chunk data: hand it on as it is, without a copy.
            std::mem::take(&mut self.pending)
        } else {
            let out = self.available()[..take].to_vec();
            self.pos += take;
            out
        };
        self.chunk_hasher.update(&out);
        self.decoded += take as u64;
        let left = left - take as u64;
        self.state = if left == 0 { Chunk::DataEnd } else { Chunk::Data(left) };
        Ok(out)
    }

    /// After the final (empty) chunk: its signature, the trailers and their signature, the
    /// decoded length, and the end of the raw body.
    async fn finish_chunks(&mut self) -> S3Result<()> {
        let claim = self.chunk_sig_claim.take().unwrap_or_default();
        self.check_chunk_signature(&claim)?;
        let trailer = matches!(self.mode, PayloadMode::AwsChunked { trailer: true, .. });
        let (trailer_bytes, trailer_sig) = self.read_trailers(trailer).await?;
        if let Some(scope) = self.signing() {
            if trailer {
                let expected = trailer_signature(scope, &self.chunk_sig, &trailer_bytes);
                let claimed = trailer_sig.as_deref().unwrap_or("");
                if !constant_time_eq(expected.as_bytes(), claimed.as_bytes()) {
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
            return Err(malformed("data after the end of the aws-chunked body"));
        }
        Ok(())
    }

    /// The trailer section: lines up to an empty one, each at most `TRAILER_LINE_BYTES_MAX`
    /// and all together at most `TRAILER_BYTES_MAX`. Returns the bytes the trailer signature
    /// covers and the signature claimed; the trailers go to `self.trailers`.
    async fn read_trailers(&mut self, trailer: bool) -> S3Result<(Vec<u8>, Option<String>)> {
        let mut trailer_bytes = Vec::new();
        let mut trailer_sig = None;
        let mut total = 0usize;
        loop {
            let limit = TRAILER_LINE_BYTES_MAX.min(TRAILER_BYTES_MAX - total);
            let line = self.line(limit, "aws-chunked trailer section too long").await?;
            total += line.len() + 2;
            if line.is_empty() {
                return Ok((trailer_bytes, trailer_sig));
            }
            if !trailer {
                return Err(malformed("unexpected data after the final chunk"));
            }
            let Some((name, value)) = line.split_once(':') else {
                return Err(malformed("malformed trailer"));
            };
            let name = name.trim().to_ascii_lowercase();
            if name == "x-amz-trailer-signature" {
                trailer_sig = Some(value.trim().to_owned());
            } else {
                trailer_bytes.extend_from_slice(format!("{name}:{}\n", value.trim()).as_bytes());
                self.trailers.push((name, value.trim().to_owned()));
            }
        }
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

    /// A client thread that sends `wire` to `addr` in pieces of `write_size` (each its own
    /// segment), then shuts its sending side; the server may give up early on a corrupted
    /// request.
    fn send_in_pieces(
        addr: std::net::SocketAddr,
        wire: Vec<u8>,
        write_size: usize,
    ) -> std::thread::JoinHandle<std::net::TcpStream> {
        std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_nodelay(true).unwrap();
            for piece in wire.chunks(write_size.max(1)) {
                if s.write_all(piece).is_err() {
                    break;
                }
            }
            let _ = s.shutdown(std::net::Shutdown::Write);
            s
        })
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
            let client = send_in_pieces(addr, wire, write_size);
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

    /// Sends `wire` over loopback in pieces of `write_size` and decodes it chunk by chunk,
    /// calling `check` on the decoder after each piece of payload it hands out.
    fn decode_watching(
        wire: Vec<u8>,
        mode: PayloadMode,
        write_size: usize,
        mut check: impl FnMut(&Body<'_>),
    ) -> S3Result<Vec<u8>> {
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new().enable_timer().build().unwrap();
        rt.block_on(async move {
            let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let client = send_in_pieces(addr, wire, write_size);
            let (stream, _) = listener.accept().await.unwrap();
            let mut conn = Conn::new(Stream::Plain(stream));
            let req = conn.read_head().await?.expect("a request");
            let raw = RawBody::new(&mut conn, &req)?;
            let mut body = Body::new(raw, mode, None);
            let mut out = Vec::new();
            let result = loop {
                match body.next().await {
                    Ok(Some(chunk)) => {
                        out.extend_from_slice(&chunk);
                        check(&body);
                    }
                    Ok(None) => break Ok(out),
                    Err(e) => break Err(e),
                }
            };
            drop(body);
            drop(conn);
            drop(client.join());
            result
        })
    }

    /// A signed aws-chunked body of one-byte chunks whose header lines carry an extension of
    /// `extension` bytes (the attack of issue 16, item 5), then `tail` after the final chunk:
    /// with `b"\r\n"` a body without trailers, else trailer lines.
    fn long_lines(data: &[u8], extension: usize, tail: &[u8]) -> (Vec<u8>, PayloadMode) {
        let seed = "a".repeat(64);
        let mut prev = seed.clone();
        let mut body = Vec::new();
        let pad = "x".repeat(extension);
        for piece in data.chunks(1).chain(std::iter::once(&[][..])) {
            let sig = chunk_signature(&scope(), &prev, &sha256_hex(piece));
            body.extend_from_slice(format!("{:x};pad={pad};chunk-signature={sig}\r\n", piece.len()).as_bytes());
            body.extend_from_slice(piece);
            if !piece.is_empty() {
                body.extend_from_slice(b"\r\n");
            }
            prev = sig;
        }
        body.extend_from_slice(tail);
        let mut out = format!("PUT /b/k HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        out.extend_from_slice(&body);
        let trailer = tail != b"\r\n";
        (out, PayloadMode::AwsChunked { signing: Some((scope(), seed)), trailer })
    }

    /// Issue 16, item 5: every write ends inside a header line, and the decoder still holds
    /// no more than one line plus one read, however much has gone by (it held all of it).
    #[test]
    fn what_the_decoder_holds_stays_bounded_when_every_write_ends_inside_a_line() {
        let data = crate::sigv4::sha256_hex(b"payload").repeat(40).into_bytes();
        let (wire, mode) = long_lines(&data, CHUNK_HEADER_BYTES_MAX - 200, b"\r\n");
        assert!(wire.len() > 8 << 20, "{} bytes on the wire", wire.len());
        let mut most = 0;
        // 1,000-byte writes: no read can end on a line boundary for long.
        let got = decode_watching(wire, mode, 1000, |body| most = most.max(body.pending.capacity())).unwrap();
        assert_eq!(got, data);
        assert!(most <= DECODER_BYTES_MAX, "the decoder held {most} bytes (bound {DECODER_BYTES_MAX})");
    }

    /// http.rs's read size (READ_CHUNK_BYTES): what one pull appends at most.
    const READ_BYTES: usize = 256 << 10;
    /// The most the decoder's buffer may hold: a line and a read, doubled for the growth of
    /// a Vec.
    const DECODER_BYTES_MAX: usize = 2 * (CHUNK_HEADER_BYTES_MAX + READ_BYTES);

    /// The memory budget reserves per stream what a GET holds (budget.rs); a PUT holds one
    /// block and its frames and up to twice md5x's hold and a read, and the aws-chunked
    /// decoder's buffer comes on top of that: it must still fit, for every layout.
    #[test]
    fn the_decoder_fits_in_what_the_budget_reserves_per_stream() {
        let block = ferrite_engine::format::BLOCK_SIZE_DEFAULT as usize;
        for (data, parity) in [(1, 0), (1, 1), (2, 2), (3, 1), (4, 4), (8, 4), (12, 4)] {
            let frames = (block / data + 4096) * (data + parity);
            let put = block + frames + 2 * (crate::md5x::HOLD_BYTES + READ_BYTES);
            let reserved = crate::budget::bytes_per_stream(block, data, parity);
            assert!(put + DECODER_BYTES_MAX <= reserved, "{data}+{parity}: {put} + {DECODER_BYTES_MAX} > {reserved}");
        }
    }

    #[test]
    fn lines_beyond_their_limits_are_refused() {
        let refused = |wire: Vec<u8>, mode: PayloadMode| {
            let e = decode_watching(wire, mode, 4096, |_| {}).unwrap_err();
            assert!(e.close, "{}", e.message);
            (e.code, e.message)
        };
        let data = b"ab";
        // A chunk header line one byte over (the extension grows the line by one).
        let fits = CHUNK_HEADER_BYTES_MAX - "1;pad=;chunk-signature=\r\n".len() - 64;
        let (wire, mode) = long_lines(data, fits, b"\r\n");
        assert_eq!(decode_watching(wire, mode, 4096, |_| {}).unwrap(), data);
        let (wire, mode) = long_lines(data, fits + 1, b"\r\n");
        assert_eq!(refused(wire, mode), (Code::InvalidRequest, "aws-chunked chunk header line too long".into()));
        // Trailer lines without end, each short: the section as a whole is bounded.
        let endless = b"x-amz-meta-a:b\r\n".repeat(TRAILER_BYTES_MAX);
        let (wire, mode) = long_lines(data, 0, &endless);
        assert_eq!(refused(wire, mode), (Code::InvalidRequest, "aws-chunked trailer section too long".into()));
        // One trailer line too long.
        let long = format!("x-amz-checksum-crc32:{}\r\n\r\n", "A".repeat(TRAILER_LINE_BYTES_MAX));
        let (wire, mode) = long_lines(data, 0, long.as_bytes());
        assert_eq!(refused(wire, mode), (Code::InvalidRequest, "aws-chunked trailer section too long".into()));
        // A chunk size of more than 16 hex digits, and data longer than its chunk.
        let head = "PUT /b/k HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n";
        let unsigned = || PayloadMode::AwsChunked { signing: None, trailer: true };
        let wire = format!("{head}{}\r\n", "0".repeat(17)).into_bytes();
        assert_eq!(refused(wire, unsigned()).0, Code::InvalidRequest);
        let wire = format!("{head}1\r\nabc\r\n0\r\n\r\n").into_bytes();
        assert_eq!(refused(wire, unsigned()), (Code::InvalidRequest, "aws-chunked chunk longer than its size".into()));
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
