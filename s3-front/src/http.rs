//! A small HTTP/1.1 server layer on httparse: request heads with size and count limits,
//! Content-Length and chunked bodies with strict framing (no request smuggling),
//! `Expect: 100-continue`, keep-alive, timeouts, and a minimum transfer rate for every
//! request body and every response write.

use std::io;
use std::time::{Duration, Instant};

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;

use crate::error::{Code, S3Error, S3Result};

/// The whole request head (request line and headers) must fit in this many bytes.
pub const HEAD_BYTES_MAX: usize = 64 << 10;
pub const HEADERS_COUNT_MAX: usize = 128;
/// A keep-alive connection with no new request for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A client that sends nothing for this long in the middle of a request gets RequestTimeout.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A request body or a response must move at least this many bytes a second of the time
/// the server waits for the client. 4 KiB/s (32 kbit/s) keeps a poor mobile link alive
/// and makes holding a connection (and its memory-budget slot) cost an attacker bandwidth:
/// a body dripped a byte every few seconds is cut within one window.
pub const RATE_MIN_BYTES_PER_SEC_DEFAULT: u64 = 4 << 10;
const READ_CHUNK_BYTES: usize = 256 << 10;
/// A chunk-size line (size and extensions) of an HTTP chunked body, at most.
const LINE_BYTES_MAX: usize = 8 << 10;
/// The trailer section of an HTTP chunked body, every byte on the wire (each line and its
/// CRLF, the final empty line included), at most.
pub const TRAILER_BYTES_MAX: usize = 16 << 10;

/// How long a client may stay silent: between requests (`idle`) and inside one (`read`),
/// and the least it must move while the server waits for it (`rate_min_bytes_per_sec`).
#[derive(Clone, Copy, Debug)]
pub struct ClientTimeouts {
    pub idle: Duration,
    pub read: Duration,
    /// 0: no minimum rate, only `read` per read or write.
    pub rate_min_bytes_per_sec: u64,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        Self { idle: IDLE_TIMEOUT, read: READ_TIMEOUT, rate_min_bytes_per_sec: RATE_MIN_BYTES_PER_SEC_DEFAULT }
    }
}

impl ClientTimeouts {
    /// The bytes a window (`read` of waiting for the client) must move.
    fn window_bytes(&self) -> u64 {
        (self.rate_min_bytes_per_sec as f64 * self.read.as_secs_f64()) as u64
    }
}

/// The minimum transfer rate of one direction of a connection (the request body coming in,
/// the response going out), as a window of waiting time: the server may wait for the
/// client `read` in all before the window's bytes (`read` × the minimum rate) have moved;
/// then a new window starts. Only time spent waiting for the client counts, so a server
/// busy with its drives never cuts an honest client; credit never exceeds one window, so a
/// client that sent a burst cannot then drip for hours. A drip (a byte every few seconds)
/// is cut after one window; a slow but steady link survives any size.
#[derive(Clone, Copy, Debug, Default)]
struct Pace {
    waited: Duration,
    bytes: u64,
}

impl Pace {
    /// How long the next read or write may wait for the client.
    fn allowance(&self, timeouts: &ClientTimeouts) -> Duration {
        timeouts.read.saturating_sub(self.waited)
    }

    fn record(&mut self, timeouts: &ClientTimeouts, waited: Duration, bytes: usize) {
        self.waited += waited;
        self.bytes += bytes as u64;
        if self.bytes >= timeouts.window_bytes() {
            *self = Pace::default();
        }
    }
}

/// How a request's body is framed (RFC 9112 section 6), from its headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
}

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

    async fn write<B: IoBuf + 'static>(&mut self, buf: B) -> monoio::BufResult<usize, B> {
        match self {
            Stream::Plain(s) => s.write(buf).await,
            Stream::Tls(s) => s.write(buf).await,
        }
    }
}

pub struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    pos: usize,
    timeouts: ClientTimeouts,
    /// The pace of the request body coming in (reset at each request head).
    read_pace: Pace,
    /// The pace of the responses going out (reset at each response).
    write_pace: Pace,
    /// Bytes of request bodies taken off the wire, framing included (chunk-size lines,
    /// trailers): what a drain counts.
    body_wire_bytes: u64,
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
        let (read_pace, write_pace) = (Pace::default(), Pace::default());
        let buf = Vec::with_capacity(READ_CHUNK_BYTES);
        Self { stream, buf, pos: 0, timeouts, read_pace, write_pace, body_wire_bytes: 0 }
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

    /// Reads more of a request body, waiting no longer than the body's pace allows.
    async fn fill_body(&mut self) -> io::Result<usize> {
        let start = Instant::now();
        let read = self.fill(self.read_pace.allowance(&self.timeouts)).await;
        if let Ok(n) = read {
            self.read_pace.record(&self.timeouts, start.elapsed(), n);
        }
        read
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
                        // The body (if any) starts its own pace.
                        self.read_pace = Pace::default();
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
            // httparse refuses every control character but tab (CR, LF, NUL, DEL ...) in a
            // header value: none can reach stored metadata or a response header.
            Err(httparse::Error::HeaderValue) => Err(S3Error::new(
                Code::InvalidArgument,
                "a header value contains a control character (CR, LF, NUL, DEL ...)",
            )
            .closing()),
            Err(e) => Err(S3Error::new(Code::InvalidRequest, format!("malformed HTTP request: {e}")).closing()),
        }
    }

    /// Starts a response: it gets a fresh pace.
    pub fn start_response(&mut self) {
        self.write_pace = Pace::default();
    }

    /// Writes all of `data`, each write waiting no longer than the response's pace allows:
    /// a client that stops reading (pipelining requests it never reads the answers of, say)
    /// loses its connection once it falls below the minimum rate, and with it whatever the
    /// response held (a memory-budget slot).
    pub async fn write_all<B: IoBuf + 'static>(&mut self, data: B) -> io::Result<()> {
        let len = data.bytes_init();
        let mut data = data;
        let mut written = 0;
        while written < len {
            let start = Instant::now();
            let allowance = self.write_pace.allowance(&self.timeouts);
            let write = monoio::time::timeout(allowance, self.stream.write(data.slice(written..))).await;
            let Ok((result, slice)) = write else {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "the client does not read the response"));
            };
            data = slice.into_inner();
            match result? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => {
                    written += n;
                    self.write_pace.record(&self.timeouts, start.elapsed(), n);
                }
            }
        }
        Ok(())
    }

    /// Up to `max` bytes already received or read now; Err on EOF.
    async fn some_bytes(&mut self, max: usize) -> S3Result<Vec<u8>> {
        if !self.available().is_empty() {
            let take = self.available().len().min(max);
            let out = self.available()[..take].to_vec();
            self.pos += take;
            self.body_wire_bytes += take as u64;
            return Ok(out);
        }
        // Nothing buffered: the socket reads straight into the piece handed out, so body bytes
        // are not copied out of the connection's buffer (a copy of every byte of a large PUT).
        // At most `max` bytes: what follows the body stays in the socket.
        let piece = Vec::with_capacity(max);
        let start = Instant::now();
        let read = monoio::time::timeout(self.read_pace.allowance(&self.timeouts), self.stream.read(piece)).await;
        match read {
            Ok((Ok(0), _)) => Err(S3Error::new(
                Code::IncompleteBody,
                "You did not provide the number of bytes specified by the Content-Length HTTP header.",
            )
            .closing()),
            Ok((Ok(n), mut piece)) => {
                self.read_pace.record(&self.timeouts, start.elapsed(), n);
                self.body_wire_bytes += n as u64;
                // A short read would leave the rest of the allocation held while the piece
                // waits for its MD5 batch. glibc shrinks a block in place, without a copy.
                piece.shrink_to_fit();
                Ok(piece)
            }
            Ok((Err(e), _)) => Err(request_timeout(&e.to_string())),
            Err(_) => Err(request_timeout("the body arrives slower than the minimum rate")),
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
                self.body_wire_bytes += end as u64 + 2;
                return Ok(line);
            }
            if self.available().len() > LINE_BYTES_MAX {
                return Err(S3Error::new(Code::InvalidRequest, "chunk header line too long").closing());
            }
            match self.fill_body().await {
                Ok(0) => {
                    return Err(S3Error::new(Code::IncompleteBody, "connection closed inside a chunked body").closing())
                }
                Ok(_) => {}
                Err(e) => return Err(request_timeout(&format!("reading a chunked body: {e}"))),
            }
        }
    }
}

/// Whether a header value can go into a response head as it is: no control character but
/// tab (a CR or LF would end the header early and let the value inject headers, or a whole
/// response; NUL and the other C0 controls and DEL have no place there either). Written to
/// vectorize (no early exit): it runs on every header of every response.
pub fn header_value_is_safe(value: &str) -> bool {
    !value.bytes().fold(false, |bad, b| bad | ((b < 0x20) & (b != b'\t')) | (b == 0x7f))
}

/// AWS's answer to a client too slow or silent inside a request.
fn request_timeout(detail: &str) -> S3Error {
    S3Error::new(
        Code::RequestTimeout,
        format!(
            "Your socket connection to the server was not read from or written to within the timeout period: {detail}"
        ),
    )
    .closing()
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
        let state = match framing(req)? {
            Framing::Chunked => RawState::Chunked(None),
            Framing::Length(n) if n > 0 => RawState::Length(n),
            Framing::Length(_) | Framing::None => RawState::Done,
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
                        self.skip_trailers().await?;
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

    /// Reads the trailer section (lines until an empty one), every byte counted.
    async fn skip_trailers(&mut self) -> S3Result<()> {
        let mut wire = 0;
        loop {
            let line = self.conn.line().await?;
            wire += line.len() + 2;
            if wire > TRAILER_BYTES_MAX {
                let message = format!("the trailer section exceeds {TRAILER_BYTES_MAX} bytes");
                return Err(S3Error::new(Code::RequestHeaderSectionTooLarge, message).closing());
            }
            if line.is_empty() {
                return Ok(());
            }
        }
    }

    /// Reads and drops the rest of the body if it is small; false if the connection must
    /// close. Every byte on the wire counts toward `limit`, chunk-size lines and trailers too.
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
        let start = self.conn.body_wire_bytes;
        while !self.is_done() {
            match self.next().await {
                Ok(Some(_)) if self.conn.body_wire_bytes - start > limit => return false,
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return false,
            }
        }
        true
    }
}

/// The body's framing, refusing whatever two parties could read differently (request
/// smuggling behind a proxy or load balancer): a Transfer-Encoding other than exactly
/// `chunked` (501 NotImplemented, as AWS answers it), Transfer-Encoding together with
/// Content-Length, more than one Content-Length (even if equal: a proxy in front may have
/// picked the other one) or one that is not all digits (400). Each closes the connection.
pub fn framing(req: &Request) -> S3Result<Framing> {
    let (mut length, mut lengths, mut codings) = (None, 0, 0);
    let mut chunked = false;
    for (name, value) in &req.headers {
        if name == "content-length" {
            lengths += 1;
            length = Some(value.as_str());
        } else if name == "transfer-encoding" {
            codings += 1;
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    let bad = |message: &str| Err(S3Error::new(Code::InvalidRequest, message).closing());
    if codings > 0 && lengths > 0 {
        return bad("Transfer-Encoding and Content-Length together");
    }
    if codings > 1 || (codings == 1 && !chunked) {
        let message = "A header you provided implies functionality that is not implemented: Transfer-Encoding";
        return Err(S3Error::new(Code::NotImplemented, message).closing());
    }
    if chunked {
        return Ok(Framing::Chunked);
    }
    if lengths > 1 {
        return bad("more than one Content-Length header");
    }
    match length {
        None => Ok(Framing::None),
        Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => match v.parse::<u64>() {
            Ok(n) => Ok(Framing::Length(n)),
            Err(_) => bad("Content-Length is too large"),
        },
        Some(_) => bad("Content-Length is not a number"),
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
