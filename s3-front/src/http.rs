//! A small HTTP/1.1 server layer on httparse: request heads with size and count limits,
//! Content-Length and chunked bodies, `Expect: 100-continue`, keep-alive and timeouts.

use std::io;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use crate::error::{err, Code, S3Error, S3Result};

/// The whole request head (request line and headers) must fit in this many bytes.
pub const HEAD_BYTES_MAX: usize = 64 << 10;
pub const HEADERS_COUNT_MAX: usize = 128;
/// A keep-alive connection with no new request for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A client that sends nothing for this long in the middle of a request gets RequestTimeout.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
const READ_CHUNK_BYTES: usize = 256 << 10;

/// How long a client may stay silent: between requests (`idle`) and inside one (`read`).
#[derive(Clone, Copy, Debug)]
pub struct ClientTimeouts {
    pub idle: Duration,
    pub read: Duration,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        Self { idle: IDLE_TIMEOUT, read: READ_TIMEOUT }
    }
}
const LINE_BYTES_MAX: usize = 8 << 10;

pub struct Request {
    pub method: String,
    /// The path as sent, still percent-encoded, without the query.
    pub raw_path: String,
    pub raw_query: String,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub keep_alive: bool,
    /// Arrived over TLS (set by the connection loop).
    pub secure: bool,
    /// The client's address, when the socket knows it (set by the connection loop).
    pub peer: Option<std::net::IpAddr>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A client connection: plain TCP or TLS over TCP.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<monoio_rustls::ServerTlsStream<TcpStream>>),
}

impl Stream {
    async fn read<B: IoBufMut>(&mut self, buf: B) -> monoio::BufResult<usize, B> {
        match self {
            Stream::Plain(s) => s.read(buf).await,
            Stream::Tls(s) => s.read(buf).await,
        }
    }

    async fn write_all<B: monoio::buf::IoBuf + 'static>(&mut self, buf: B) -> io::Result<()> {
        let res = match self {
            Stream::Plain(s) => s.write_all(buf).await.0,
            Stream::Tls(s) => s.write_all(buf).await.0,
        };
        res.map(drop)
    }
}

pub struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    pos: usize,
    timeouts: ClientTimeouts,
}

enum RawState {
    Length(u64),
    /// HTTP chunked transfer coding: bytes left in the current chunk; None before a size line.
    Chunked(Option<u64>),
    Done,
}

impl Conn {
    pub fn new(stream: Stream) -> Self {
        Self::with_timeouts(stream, ClientTimeouts::default())
    }

    pub fn with_timeouts(stream: Stream, timeouts: ClientTimeouts) -> Self {
        Self { stream, buf: Vec::with_capacity(READ_CHUNK_BYTES), pos: 0, timeouts }
    }

    fn available(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Reads more bytes from the socket; Ok(0) at end of stream.
    async fn fill(&mut self, timeout: Duration) -> io::Result<usize> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > self.buf.capacity() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if self.buf.capacity() - self.buf.len() < READ_CHUNK_BYTES / 4 {
            self.buf.reserve(READ_CHUNK_BYTES);
        }
        let buf = std::mem::take(&mut self.buf);
        let len = buf.len();
        let cap = buf.capacity();
        let read = monoio::time::timeout(timeout, self.stream.read(buf.slice_mut(len..cap))).await;
        match read {
            Ok((res, slice)) => {
                self.buf = slice.into_inner();
                res
            }
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "read timed out")),
        }
    }

    /// Reads the next request head. Ok(None) when the client closed an idle connection.
    /// Once its first byte arrived, the whole head must arrive within the read timeout: a
    /// client dripping a byte at a time cannot hold the connection open (slowloris).
    pub async fn read_head(&mut self) -> S3Result<Option<Request>> {
        let mut deadline: Option<std::time::Instant> = None;
        // Bytes of the buffered head already searched for its end (each byte is searched once),
        // and the length at the last full parse: a partial head is parsed again only when it
        // has doubled, so malformed input is refused early and dripping costs linear time.
        let mut searched: usize = 0;
        let mut parsed_at = 0;
        loop {
            if !self.available().is_empty() {
                deadline.get_or_insert_with(|| std::time::Instant::now() + self.timeouts.read);
                let from = searched.saturating_sub(3);
                let complete = self.available()[from..].windows(4).any(|w| w == b"\r\n\r\n");
                searched = self.available().len();
                if complete || self.available().len() >= HEAD_BYTES_MAX || searched >= parsed_at * 2 {
                    parsed_at = searched;
                    if let Some(req) = self.parse_head()? {
                        return Ok(Some(req));
                    }
                }
                if self.available().len() >= HEAD_BYTES_MAX {
                    return Err(head_too_large());
                }
            }
            let timeout = match deadline {
                None => self.timeouts.idle,
                Some(deadline) => deadline.saturating_duration_since(std::time::Instant::now()),
            };
            match self.fill(timeout).await {
                Ok(0) if self.available().is_empty() => return Ok(None),
                Ok(0) => {
                    return Err(S3Error::new(Code::IncompleteBody, "connection closed inside a request head").closing())
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut && self.available().is_empty() => return Ok(None),
                Err(e) => return Err(S3Error::new(Code::RequestTimeout, format!("reading request: {e}")).closing()),
            }
        }
    }

    /// Parses the buffered head; None while it is incomplete.
    fn parse_head(&mut self) -> S3Result<Option<Request>> {
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(self.available()) {
            Ok(httparse::Status::Complete(used)) => {
                if used > HEAD_BYTES_MAX {
                    return Err(head_too_large());
                }
                let req = to_request(&parsed)?;
                self.pos += used;
                Ok(Some(req))
            }
            Ok(httparse::Status::Partial) => Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                Err(S3Error::new(Code::RequestHeaderSectionTooLarge, "too many request headers").closing())
            }
            Err(e) => Err(S3Error::new(Code::InvalidRequest, format!("malformed HTTP request: {e}")).closing()),
        }
    }

    pub async fn write_all<B: monoio::buf::IoBuf + 'static>(&mut self, data: B) -> io::Result<()> {
        self.stream.write_all(data).await
    }

    /// Up to `max` bytes already received or read now; Err on EOF.
    async fn some_bytes(&mut self, max: usize) -> S3Result<Vec<u8>> {
        if !self.available().is_empty() {
            let take = self.available().len().min(max);
            let out = self.available()[..take].to_vec();
            self.pos += take;
            return Ok(out);
        }
        // Nothing buffered: the socket reads straight into the piece handed out, so body bytes
        // are not copied out of the connection's buffer (a copy of every byte of a large PUT).
        // At most `max` bytes: what follows the body stays in the socket.
        let piece = Vec::with_capacity(max);
        let read = monoio::time::timeout(self.timeouts.read, self.stream.read(piece)).await;
        match read {
            Ok((Ok(0), _)) => Err(S3Error::new(Code::IncompleteBody, "You did not provide the number of bytes specified by the Content-Length HTTP header.").closing()),
            Ok((Ok(_), mut piece)) => {
                // A short read would leave the rest of the allocation held while the piece
                // waits for its MD5 batch. glibc shrinks a block in place, without a copy.
                piece.shrink_to_fit();
                Ok(piece)
            }
            Ok((Err(e), _)) => Err(S3Error::new(Code::RequestTimeout, format!("Your socket connection to the server was not read from or written to within the timeout period: {e}")).closing()),
            Err(_) => Err(S3Error::new(Code::RequestTimeout, "Your socket connection to the server was not read from or written to within the timeout period: read timed out").closing()),
        }
    }

    async fn line(&mut self) -> S3Result<String> {
        loop {
            if let Some(end) = self.available().windows(2).position(|w| w == b"\r\n") {
                if end > LINE_BYTES_MAX {
                    return Err(S3Error::new(Code::InvalidRequest, "chunk header line too long").closing());
                }
                let line = String::from_utf8_lossy(&self.available()[..end]).into_owned();
                self.pos += end + 2;
                return Ok(line);
            }
            if self.available().len() > LINE_BYTES_MAX {
                return Err(S3Error::new(Code::InvalidRequest, "chunk header line too long").closing());
            }
            match self.fill(self.timeouts.read).await {
                Ok(0) => {
                    return Err(S3Error::new(Code::IncompleteBody, "connection closed inside a chunked body").closing())
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(S3Error::new(Code::RequestTimeout, format!("reading chunked body: {e}")).closing())
                }
            }
        }
    }
}

fn head_too_large() -> S3Error {
    S3Error::new(Code::RequestHeaderSectionTooLarge, "Your request header section exceeds the maximum allowed size.")
        .closing()
}

fn to_request(parsed: &httparse::Request) -> S3Result<Request> {
    let method = parsed.method.unwrap_or("").to_owned();
    let target = parsed.path.unwrap_or("/");
    let (raw_path, raw_query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), q.to_owned()),
        None => (target.to_owned(), String::new()),
    };
    let mut headers = Vec::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let Ok(value) = std::str::from_utf8(h.value) else {
            return Err(S3Error::new(Code::InvalidArgument, format!("header {} is not valid UTF-8", h.name)).closing());
        };
        headers.push((h.name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let connection = headers.iter().find(|(n, _)| n == "connection").map(|(_, v)| v.to_ascii_lowercase());
    let keep_alive = match parsed.version {
        Some(0) => connection.as_deref() == Some("keep-alive"),
        _ => connection.as_deref() != Some("close"),
    };
    Ok(Request { method, raw_path, raw_query, headers, keep_alive, secure: false, peer: None })
}

/// The request body as sent on the wire (Content-Length or chunked transfer coding).
pub struct RawBody<'c> {
    conn: &'c mut Conn,
    state: RawState,
    continue_pending: bool,
}

impl<'c> RawBody<'c> {
    pub fn new(conn: &'c mut Conn, req: &Request) -> S3Result<Self> {
        let chunked = req.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        let state = if chunked {
            RawState::Chunked(None)
        } else {
            match req.header("content-length") {
                Some(v) => match v.parse::<u64>() {
                    Ok(n) if n > 0 => RawState::Length(n),
                    Ok(_) => RawState::Done,
                    Err(_) => {
                        return err(Code::InvalidArgument, "Content-Length is not a number").map_err(S3Error::closing)
                    }
                },
                None => RawState::Done,
            }
        };
        // Answer `Expect: 100-continue` even for empty bodies: some clients (botocore before
        // 1.43.77, bundled in awscli 1.46) misread the next response on the connection if the
        // final status comes without the interim one.
        let continue_pending = req.header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        Ok(Self { conn, state, continue_pending })
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, RawState::Done)
    }

    /// The next piece of the body, or None at its end.
    pub async fn next(&mut self) -> S3Result<Option<Vec<u8>>> {
        if self.continue_pending {
            self.continue_pending = false;
            self.conn
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec())
                .await
                .map_err(|e| S3Error::new(Code::InternalError, e.to_string()).closing())?;
        }
        loop {
            match self.state {
                RawState::Done => return Ok(None),
                RawState::Length(left) => {
                    let bytes = self.conn.some_bytes(left.min(READ_CHUNK_BYTES as u64) as usize).await?;
                    let left = left - bytes.len() as u64;
                    self.state = if left == 0 { RawState::Done } else { RawState::Length(left) };
                    return Ok(Some(bytes));
                }
                RawState::Chunked(None) => {
                    let line = self.conn.line().await?;
                    let size = line.split(';').next().unwrap_or("").trim();
                    let Ok(size) = u64::from_str_radix(size, 16) else {
                        return Err(S3Error::new(Code::InvalidRequest, "malformed chunk size").closing());
                    };
                    if size == 0 {
                        // Trailer section: lines until an empty one.
                        while !self.conn.line().await?.is_empty() {}
                        self.state = RawState::Done;
                    } else {
                        self.state = RawState::Chunked(Some(size));
                    }
                }
                RawState::Chunked(Some(left)) => {
                    let bytes = self.conn.some_bytes(left.min(READ_CHUNK_BYTES as u64) as usize).await?;
                    let left = left - bytes.len() as u64;
                    if left == 0 {
                        if !self.conn.line().await?.is_empty() {
                            return Err(S3Error::new(Code::InvalidRequest, "chunk data longer than its size").closing());
                        }
                        self.state = RawState::Chunked(None);
                    } else {
                        self.state = RawState::Chunked(Some(left));
                    }
                    return Ok(Some(bytes));
                }
            }
        }
    }

    /// Reads and drops the rest of the body if it is small; false if the connection must close.
    pub async fn drain(&mut self, limit: u64) -> bool {
        if self.continue_pending {
            // The client is waiting for permission and has sent nothing: keep the connection
            // only if there is no body to come at all.
            return self.is_done();
        }
        if matches!(self.state, RawState::Length(left) if left > limit) {
            // Too much left to read for a connection worth keeping: answer and close.
            return false;
        }
        let mut seen = 0u64;
        while !self.is_done() {
            match self.next().await {
                Ok(Some(bytes)) => {
                    seen += bytes.len() as u64;
                    if seen > limit {
                        return false;
                    }
                }
                Ok(None) => break,
                Err(_) => return false,
            }
        }
        true
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        412 => "Precondition Failed",
        416 => "Requested Range Not Satisfiable",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}
