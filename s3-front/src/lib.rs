//! Ferrite's S3 front: HTTP/1.1, SigV4, aws-chunked bodies, S3 XML and the S3 operations,
//! on top of the engine and the tier mover.
//!
//! The modules, from the bottom up (each imports only modules listed before it):
//! `error`; `checksum`, `xml`, `sigv4`, `http`, `tls`, `budget`, `md5x`; `limits` (request
//! caps); `metrics` (counters); `kms`; `body`; `encryption` (an object's encryption as
//! stored); `object_stream` (object bodies on their way out); `request` (`Ctx`, `Call`,
//! `Response`: the types every operation shares); `access` (IAM actions and resources);
//! `router` (request → `Endpoint`, inputs validated once); `sse` (a request's encryption);
//! `ops` (the operations, by resource); `server` (the connection loop, on top).

pub mod access;
pub mod body;
pub mod budget;
pub mod checksum;
pub mod encryption;
pub mod error;
pub mod http;
pub mod kms;
pub mod limits;
pub mod md5x;
pub mod metrics;
pub mod object_stream;
pub mod ops;
pub mod request;
pub mod router;
pub mod server;
pub mod sigv4;
pub mod sse;
pub mod tls;
pub mod xml;

pub use monoio_rustls::TlsAcceptor;
pub use request::{Config, Ctx};
pub use server::serve_connection;
