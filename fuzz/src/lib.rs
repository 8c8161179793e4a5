//! Shared support of Ferrite's fuzz targets (`fuzz_targets/`): a loopback connection that
//! feeds a target's bytes to the S3 front's real HTTP layer (`Conn`, `RawBody`, `Body`),
//! cut into pieces the way a slow or hostile client sends them.
//!
//! The HTTP layer reads from a monoio `TcpStream`, so the harness gives it one: a
//! thread-local runtime (epoll driver, timers on) and a listening socket on 127.0.0.1, set
//! up once; each input gets a fresh connection. The client side writes the next piece only
//! when the server side has read everything before it and waits for more, so a head or a
//! chunk line cut at any byte really arrives in two reads. Connections are closed with a
//! reset (linger 0), which leaves no TIME_WAIT socket behind: a run makes millions.

use std::cell::RefCell;
use std::future::Future;
use std::io::Write;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use ferrite_s3::http::{Conn, Stream};

pub mod chunked;

/// At most this many separate writes per input: each costs a trip through the runtime.
const PIECES_MAX: usize = 64;

type Runtime = monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>>;

struct Harness {
    runtime: Runtime,
    listener: TcpListener,
}

impl Harness {
    fn new() -> Self {
        // SAFETY: setting a signal's disposition to "ignore" is async-signal-safe, and no
        // other thread exists yet. libFuzzer's main, unlike Rust's, leaves SIGPIPE fatal; a
        // server write to a closed connection must be an error, as it is in the server.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
        let runtime = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("a monoio runtime with the epoll driver");
        let listener = TcpListener::bind("127.0.0.1:0").expect("a listening socket on 127.0.0.1");
        Self { runtime, listener }
    }
}

thread_local! {
    static HARNESS: RefCell<Option<Harness>> = const { RefCell::new(None) };
}

/// The client side of a harness connection: writes `wire` piece by piece, then shuts its
/// write side down (the server then reads end of stream).
struct Feeder<'w> {
    client: TcpStream,
    wire: &'w [u8],
    piece_bytes: usize,
    shut: bool,
}

impl Feeder<'_> {
    /// Sends the next piece (as much of it as the socket takes), or the end of the stream.
    fn feed(&mut self) {
        if self.wire.is_empty() {
            if !self.shut {
                self.shut = true;
                let _ = self.client.shutdown(Shutdown::Write);
            }
            return;
        }
        let take = self.piece_bytes.min(self.wire.len());
        match self.client.write(&self.wire[..take]) {
            Ok(n) => self.wire = &self.wire[n..],
            // The socket's buffers are full: the rest goes after the server's next read.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            // The server reset the connection: nothing more can be sent.
            Err(_) => self.wire = &[],
        }
    }
}

/// The piece size for `wire` chosen by `selector` (0: the whole input at once), so that an
/// input never takes more than `PIECES_MAX` writes.
pub fn piece_bytes(selector: u8, wire_len: usize) -> usize {
    let fewest = wire_len.div_ceil(PIECES_MAX).max(1);
    match selector {
        0 => wire_len.max(1),
        n => usize::from(n).max(fewest),
    }
}

/// Runs `serve` on the server side of a fresh loopback connection whose client sends `wire`
/// in pieces of `piece_bytes`, then closes. Returns what `serve` returned.
pub fn with_connection<T>(wire: &[u8], piece_bytes: usize, serve: impl AsyncFnOnce(&mut Conn) -> T) -> T {
    HARNESS.with_borrow_mut(|harness| {
        let harness = harness.get_or_insert_with(Harness::new);
        let addr = harness.listener.local_addr().expect("the listener's address");
        let client = TcpStream::connect(addr).expect("a loopback connection");
        let (server, _) = harness.listener.accept().expect("the loopback connection accepted");
        let _ = client.set_nodelay(true);
        // A reset on close instead of FIN: no TIME_WAIT socket per input.
        let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
        client.set_nonblocking(true).expect("a non-blocking client socket");
        server.set_nonblocking(true).expect("a non-blocking server socket");
        let mut feeder = Feeder { client, wire, piece_bytes: piece_bytes.max(1), shut: false };
        harness.runtime.block_on(async move {
            let stream = monoio::net::TcpStream::from_std(server).expect("the server socket registered");
            let mut conn = Conn::new(Stream::Plain(stream));
            feeder.feed();
            let result = drive(serve(&mut conn), &mut feeder).await;
            // The client first: its reset means the server socket leaves no TIME_WAIT either.
            drop(feeder);
            drop(conn);
            result
        })
    })
}

/// Polls `serve`; each time it waits (for bytes), the client sends its next piece. Nothing
/// else wakes this task: the server socket's readiness does, once the piece has arrived.
async fn drive<T>(serve: impl Future<Output = T>, feeder: &mut Feeder<'_>) -> T {
    let mut serve = pin!(serve);
    std::future::poll_fn(move |cx| match serve.as_mut().poll(cx) {
        Poll::Ready(out) => Poll::Ready(out),
        Poll::Pending => {
            feeder.feed();
            Poll::Pending
        }
    })
    .await
}

/// The first byte of `data` (a selector; 0 for an empty input) and the rest.
pub fn split_first(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((first, rest)) => (*first, rest),
        None => (0, data),
    }
}
