//! The types every operation shares, at the bottom of the request layer (they import no
//! operation): the server's settings (`Config`), what each core holds (`Ctx`), the
//! authenticated request an operation reads its headers from (`Call`), and the response it
//! returns (`Response`, whose body may stream an object).

use std::rc::Rc;
use std::sync::Arc;

use ferrite_engine::Engine;

use crate::budget::{Budget, Slot};
use crate::http::{ClientTimeouts, Request};
use crate::kms::Kms;
use crate::md5x::CoreBatcher;
use crate::object_stream::ObjectStream;
use crate::sigv4::{Auth, Credentials};

pub struct Config {
    pub root_user: String,
    pub root_password: String,
    /// Base domain for virtual-host-style addressing (bucket.domain).
    pub domain: Option<String>,
    /// The region requests must be signed for (FERRITE_REGION) and GetBucketLocation names.
    pub region: String,
    /// How long a silent client is kept (FERRITE_CLIENT_TIMEOUT_SECS shortens it for tests).
    pub client_timeouts: ClientTimeouts,
    /// Encrypt every new object (SSE-S3) unless the request or bucket says otherwise.
    pub encrypt_everything: bool,
    /// Accept SSE-C keys over plain HTTP (tests only; AWS refuses them).
    pub sse_c_allow_http: bool,
    /// The bearer token `GET /ferrite/metrics` needs (None: the metrics are public).
    pub metrics_token: Option<String>,
}

impl Credentials for Config {
    fn secret_for(&self, access_key: &str) -> Option<String> {
        (access_key == self.root_user).then(|| self.root_password.clone())
    }

    fn region(&self) -> &str {
        &self.region
    }
}

/// What one core's requests share: the engine, the settings, and the core's own state.
pub struct Ctx {
    pub engine: Engine,
    pub config: Arc<Config>,
    /// This core's share of the memory budget for requests that move object data.
    pub budget: Rc<Budget>,
    /// Where object keys are sealed (None: no KMS configured; SSE-C still works).
    pub kms: Option<Arc<Kms>>,
    /// The tier mover: reads, restores and deletes of transitioned objects, tiers, lifecycle.
    pub mover: ferrite_tiering::Mover,
    /// This core's ETag MD5 batcher (md5x.rs).
    pub md5: CoreBatcher,
}

/// An authenticated request: its head, who signed it, and its id. What it asks for (the
/// bucket, key and query) is its `Endpoint` (router.rs).
pub struct Call<'a> {
    pub req: &'a Request,
    pub auth: Auth,
    pub request_id: &'a str,
}

impl Call<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.req.header(name)
    }
}

pub enum RespBody {
    Empty,
    Bytes(Vec<u8>),
    /// An object body streamed block by block; the slot is held until it is sent.
    Object(ObjectStream, Slot),
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: RespBody,
    /// Content-Length to announce when it differs from the body (HEAD, streamed objects).
    pub content_length: Option<u64>,
}

impl Response {
    pub fn new(status: u16) -> Self {
        Self { status, headers: Vec::new(), body: RespBody::Empty, content_length: None }
    }

    /// A 200 with a body of this content type.
    pub fn with_body(content_type: &str, body: Vec<u8>) -> Self {
        let mut r = Self::new(200);
        r.headers.push(("content-type".into(), content_type.into()));
        r.body = RespBody::Bytes(body);
        r
    }

    pub fn xml(body: Vec<u8>) -> Self {
        Self::with_body("application/xml", body)
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }
}
