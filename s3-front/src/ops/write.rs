//! Writing an object's bytes: a request body streamed into the engine, sealed on the way
//! when the object is encrypted, hashed (MD5 for the ETag, the checksum the client asked
//! for) and verified against what the client claimed; and the response headers that
//! report it.

use ferrite_engine::sse::Sealer;
use ferrite_engine::{DataWriter, Finished};

use crate::body::Body;
use crate::checksum::{b64_decode, Algorithm, Hasher};
use crate::encryption::Encryption;
use crate::error::{err, Code, S3Error, S3Result};
use crate::md5x::{CoreBatcher, Md5Stream};
use crate::request::{Call, Ctx, Response};
use crate::sigv4::hex;

/// The writer of an object's bytes, sealing them first when the object is encrypted.
pub struct SealingWriter<'w> {
    writer: &'w mut DataWriter,
    sealer: Option<Sealer>,
    sealed: Vec<u8>,
}

impl<'w> SealingWriter<'w> {
    pub fn new(writer: &'w mut DataWriter, sealer: Option<Sealer>) -> Self {
        SealingWriter { writer, sealer, sealed: Vec::new() }
    }

    pub async fn write(&mut self, plain: &[u8]) -> S3Result<()> {
        match &mut self.sealer {
            Some(sealer) => {
                let n = sealer.push_into(plain, room(&mut self.sealed, sealer.push_bound(plain.len())))?;
                self.writer.write(&self.sealed[..n]).await?;
            }
            None => self.writer.write(plain).await?,
        }
        Ok(())
    }

    /// Seals the last partial package, if any.
    pub async fn finish(mut self) -> S3Result<()> {
        if let Some(sealer) = self.sealer.take() {
            let need = sealer.finish_bound();
            let n = sealer.finish_into(room(&mut self.sealed, need))?;
            self.writer.write(&self.sealed[..n]).await?;
        }
        Ok(())
    }
}

/// `buf`, grown to at least `need` bytes. It only grows: packages are sealed over what it
/// held, so its bytes are zeroed once, not on every write.
fn room(buf: &mut Vec<u8>, need: usize) -> &mut [u8] {
    if buf.len() < need {
        buf.resize(need, 0);
    }
    buf
}

/// The sealer of one stored file of an encrypted object (None for plaintext).
pub fn sealer_for(encryption: Option<&Encryption>, writer: &DataWriter) -> S3Result<Option<Sealer>> {
    match encryption {
        Some(encryption) => Ok(Some(encryption.sealer(writer.file_id())?)),
        None => Ok(None),
    }
}

/// The result of streaming a body into the engine.
pub struct Streamed {
    pub data: Finished,
    pub size: u64,
    pub md5: [u8; 16],
    /// The checksum's algorithm name and base64 value, when the client asked for one.
    pub checksum: Option<(String, String)>,
}

/// Streams the body into `writer`, hashing as it goes, and verifies Content-MD5 and the
/// checksum. On any error the data written so far is discarded.
pub async fn stream_body(
    ctx: &Ctx,
    call: &Call<'_>,
    body: &mut Body<'_>,
    mut writer: DataWriter,
    size_max: u64,
    sealer: Option<Sealer>,
) -> S3Result<Streamed> {
    let _slot = ctx.budget.acquire().await?;
    let result = stream_into(call, body, &mut writer, size_max, sealer, &ctx.md5).await;
    match result {
        Ok((md5, checksum, size)) => match writer.finish().await {
            Ok(data) => Ok(Streamed { data, size, md5, checksum }),
            Err(e) => Err(e.into()),
        },
        Err(e) => {
            writer.discard().await;
            Err(e)
        }
    }
}

/// Returns the MD5, the checksum and the size of the plaintext. With a sealer, what reaches
/// the writer is the sealed packages (encryption.rs), in the same pass over each chunk.
async fn stream_into(
    call: &Call<'_>,
    body: &mut Body<'_>,
    writer: &mut DataWriter,
    size_max: u64,
    sealer: Option<Sealer>,
    md5_batcher: &CoreBatcher,
) -> S3Result<([u8; 16], Option<(String, String)>, u64)> {
    let content_md5 = content_md5(call)?;
    let wanted = requested_checksum(call)?;
    let mut hasher = wanted.as_ref().map(|(a, _)| Hasher::new(*a));
    // Hashed with this core's other bodies (md5x.rs); the chunk goes to it once written.
    let mut md5 = Md5Stream::new(md5_batcher);
    let mut size = 0u64;
    let mut out = SealingWriter::new(writer, sealer);
    while let Some(chunk) = body.next().await? {
        if let Some(h) = &mut hasher {
            h.update(&chunk);
        }
        if size + chunk.len() as u64 > size_max {
            return Err(too_large().closing());
        }
        size += chunk.len() as u64;
        out.write(&chunk).await?;
        md5.update(chunk);
    }
    out.finish().await?;
    let md5 = md5.finish();
    if content_md5.is_some_and(|expected| expected != md5) {
        return err(Code::BadDigest, "The Content-MD5 you specified did not match what we received.");
    }
    let checksum = match (wanted, hasher) {
        (Some((algorithm, header_value)), Some(h)) => Some(verified_checksum(algorithm, header_value, h, body)?),
        _ => None,
    };
    Ok((md5, checksum, size))
}

pub fn too_large() -> S3Error {
    S3Error::new(Code::EntityTooLarge, "Your proposed upload exceeds the maximum allowed object size.")
}

/// The Content-MD5 header, decoded.
fn content_md5(call: &Call) -> S3Result<Option<Vec<u8>>> {
    match call.header("content-md5") {
        Some(v) => Ok(Some(
            b64_decode(v)
                .filter(|d| d.len() == 16)
                .ok_or_else(|| S3Error::new(Code::InvalidDigest, "The Content-MD5 you specified was invalid."))?,
        )),
        None => Ok(None),
    }
}

/// The computed checksum, after comparing it with the one the client sent (as a header or,
/// when the header only named the algorithm, as a trailer).
fn verified_checksum(
    algorithm: Algorithm,
    header_value: Option<String>,
    hasher: Hasher,
    body: &Body<'_>,
) -> S3Result<(String, String)> {
    let computed = hasher.finish_base64();
    let claimed =
        header_value.or_else(|| body.trailers.iter().find(|(n, _)| *n == algorithm.header()).map(|(_, v)| v.clone()));
    if claimed.is_some_and(|c| c.trim() != computed) {
        return err(
            Code::BadDigest,
            format!("The {} you specified did not match the calculated checksum.", algorithm.name()),
        );
    }
    Ok((algorithm.name().to_owned(), computed))
}

/// The checksum a request asks for: its algorithm and, when sent as a header, its value.
fn requested_checksum(call: &Call) -> S3Result<Option<(Algorithm, Option<String>)>> {
    for algorithm in Algorithm::ALL {
        if let Some(value) = call.header(algorithm.header()) {
            return Ok(Some((algorithm, Some(value.to_owned()))));
        }
    }
    let named = call.header("x-amz-trailer").or(call.header("x-amz-sdk-checksum-algorithm"));
    match named {
        Some(name) => {
            let name = name.trim().trim_start_matches("x-amz-checksum-");
            match Algorithm::parse(name) {
                Some(a) => Ok(Some((a, None))),
                None => err(Code::InvalidRequest, format!("unsupported checksum algorithm {name}")),
            }
        }
        None => Ok(None),
    }
}

/// Adds the stored checksum's header (`x-amz-checksum-crc32: ...`).
pub fn with_checksum_header(resp: Response, checksum: &Option<(String, String)>) -> Response {
    match checksum {
        Some((algorithm, value)) => match Algorithm::parse(algorithm) {
            Some(a) => resp.header(a.header(), value.clone()),
            None => resp,
        },
        None => resp,
    }
}

/// The ETag of an object or part: its MD5, or for SSE-KMS / SSE-C an opaque value
/// (`Encryption::etag`).
pub fn etag_of(encryption: Option<&Encryption>, md5: &[u8; 16]) -> String {
    match encryption {
        Some(encryption) => encryption.etag(md5),
        None => hex(md5),
    }
}

/// Adds the SSE response headers of an encrypted object.
pub fn with_sse_headers(mut resp: Response, encryption: Option<&Encryption>) -> Response {
    if let Some(encryption) = encryption {
        encryption.add_response_headers(&mut resp.headers);
    }
    resp
}
