//! Tiering: moving cold objects to a remote tier (Azure Blob) and serving them from there.
//!
//! - `outbound`: Ferrite's own small HTTP/1.1 client (also used by the KMS backends);
//! - `azure`: an Azure Blob container over its REST API with Shared Key or SAS auth.

pub mod azure;
pub mod outbound;
