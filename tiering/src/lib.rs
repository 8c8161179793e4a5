//! Tiering: moving cold objects to a remote tier (Azure Blob) and serving them from there.
//!
//! - `outbound`: Ferrite's own small HTTP/1.1 client (also used by the KMS backends);
//! - `azure`: an Azure Blob container over its REST API with Shared Key, SAS or Entra ID auth;
//! - `entra`: bearer tokens from Microsoft Entra ID (also used by the Key Vault KMS).

pub mod azure;
pub mod entra;
pub mod outbound;
