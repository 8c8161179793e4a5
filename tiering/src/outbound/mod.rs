//! Ferrite's clients of other services, all blocking, all over one HTTP client:
//!
//! - `http`: the HTTP client (ureq over rustls/aws-lc-rs) and its CA settings;
//! - `entra`: Entra ID sign-in (client secret, workload identity, managed identity);
//! - `azure_blob`: an Azure Blob container (Shared Key, SAS or Entra ID);
//! - `key_vault`: Azure Key Vault's wrapKey/unwrapKey;
//! - `vault`: OpenBao/Vault transit;
//! - `kms`: how the two KMS clients fail.
//!
//! Imports go one way: `http` <- `entra` <- `azure_blob`, `key_vault`; `http` <- `vault`;
//! `kms` <- `key_vault`, `vault`.

pub mod azure_blob;
pub mod entra;
pub mod http;
pub mod key_vault;
pub mod kms;
pub mod vault;
