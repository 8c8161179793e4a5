//! Tiering to Azure Blob (issue 6): not built yet.
