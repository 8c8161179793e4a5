//! The decoded request body: plain (with x-amz-content-sha256 verification) or aws-chunked
//! (with chunk signatures and trailing checksums).

use sha2::{Digest, Sha256};

use crate::error::{err, Code, S3Error, S3Result};
use crate::http::RawBody;
use crate::sigv4::{chunk_signature, hex, trailer_signature, Scope};

pub enum Mode {
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
    mode: Mode,
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
    pub fn new(raw: RawBody<'c>, mode: Mode, decoded_expected: Option<u64>) -> Self {
        let plain_hasher = matches!(&mode, Mode::Plain { sha256: Some(_) }).then(Sha256::new);
        let chunk_sig = match &mode {
            Mode::AwsChunked { signing: Some((_, seed)), .. } => seed.clone(),
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
            Mode::Plain { .. } => self.next_plain().await,
            Mode::AwsChunked { .. } => self.next_chunked().await,
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
                if let (Some(h), Mode::Plain { sha256: Some(expected) }) = (self.plain_hasher.take(), &self.mode) {
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
            Mode::AwsChunked { signing: Some((scope, _)), .. } => Some(scope),
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
        let trailer = matches!(self.mode, Mode::AwsChunked { trailer: true, .. });
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
