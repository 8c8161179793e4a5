//! Format 2's segmented metadata log (issue 21; docs/design/metadata-at-scale.md): each
//! core's log cut into segments, listed by a manifest, so that compaction can replace whole
//! segments and the space of deleted records comes back. Stage 1a builds it up here piece
//! by piece; until the commit loop and start-up use it, wal.rs is the log on the drives.

pub mod manifest;
