//! Ferrite's S3 front: HTTP/1.1, SigV4, aws-chunked bodies, S3 XML and the S3 operations,
//! on top of the engine.

pub mod admin;
pub mod body;
pub mod budget;
pub mod checksum;
pub mod error;
pub mod http;
pub mod kms;
pub mod md5x;
pub mod metrics;
pub mod ops;
pub mod server;
pub mod sigv4;
pub mod sse;
pub mod tls;
pub mod xml;

pub use monoio_rustls::TlsAcceptor;
pub use server::{serve_connection, Config, Ctx};
