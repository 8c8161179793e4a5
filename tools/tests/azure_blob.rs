//! Ferrite's Azure Blob client (tiering/src/outbound/azure_blob.rs) against Azurite, the real Blob REST API:
//! block uploads that resume, commit with an access tier and metadata, ranged reads,
//! properties, tier changes, listing, deletes; a wrong key is refused, and a stopped service
//! is reported as unavailable after the retries, then works again once it is back.

mod common;

use common::azurite::{Azurite, ACCOUNT, KEY};
use ferrite_tiering::outbound::azure_blob::{block_id, Auth, BlobError, Container};

fn container(azurite: &Azurite, key: &str) -> Container {
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD.decode(key).unwrap();
    Container::new(&common::http(), &azurite.endpoint(), ACCOUNT, "ferrite-tier", Auth::SharedKey(key)).unwrap()
}

#[test]
fn blocks_resume_commit_read_retier_list_and_delete() {
    let mut azurite = Azurite::start();
    let c = container(&azurite, KEY);
    c.create().unwrap();
    c.create().unwrap(); // an existing container is fine
    let data = common::bytes(2 * 1024 * 1024 + 100, 9);
    let blocks: Vec<&[u8]> = data.chunks(1024 * 1024).collect();
    // Two blocks go up, then the "upload" is interrupted; the service keeps them.
    for (i, block) in blocks.iter().enumerate().take(2) {
        c.put_block("objects/a b+c", &block_id(i as u64), block.to_vec()).unwrap();
    }
    let held = c.uncommitted_blocks("objects/a b+c").unwrap();
    assert_eq!(held, vec![(block_id(0), 1 << 20), (block_id(1), 1 << 20)]);
    // Resuming sends only what is missing.
    c.put_block("objects/a b+c", &block_id(2), blocks[2].to_vec()).unwrap();
    let ids: Vec<String> = (0..3).map(block_id).collect();
    let etag = c.commit_blocks("objects/a b+c", &ids, "Cool", &[("ferrite_etag", "abc123")]).unwrap();
    assert!(!etag.is_empty());
    let props = c.properties("objects/a b+c").unwrap();
    assert_eq!(
        (props.size, props.etag.as_str(), props.access_tier.as_deref()),
        (data.len() as u64, etag.as_str(), Some("Cool"))
    );
    assert_eq!(c.get_range("objects/a b+c", 0, 9, None).unwrap(), data[..10]);
    let (from, to) = (1024 * 1024 - 5, 1024 * 1024 + 5);
    assert_eq!(c.get_range("objects/a b+c", from as u64, to as u64, None).unwrap(), data[from..=to]);
    assert_eq!(c.get_range("objects/a b+c", 0, data.len() as u64 - 1, None).unwrap(), data);
    // A read pinned to the committed version: served while it is that version, refused after.
    assert_eq!(c.get_range("objects/a b+c", 0, 9, Some(&etag)).unwrap(), data[..10]);
    assert!(matches!(c.get_range("objects/a b+c", 0, 9, Some("\"0x0\"")), Err(BlobError::Refused(412, _))));
    c.set_tier("objects/a b+c", "Cold").unwrap();
    assert_eq!(c.properties("objects/a b+c").unwrap().access_tier.as_deref(), Some("Cold"));
    c.set_tier("objects/a b+c", "Hot").unwrap();
    assert_eq!(c.properties("objects/a b+c").unwrap().access_tier.as_deref(), Some("Hot"));
    assert_eq!(c.list("objects/", 100).unwrap(), ["objects/a b+c"]);
    assert!(c.list("other/", 100).unwrap().is_empty());
    assert!(c.delete("objects/a b+c").unwrap());
    assert!(!c.delete("objects/a b+c").unwrap(), "a second delete finds nothing");
    assert!(matches!(c.properties("objects/a b+c"), Err(BlobError::NotFound)));

    // A wrong account key is refused, not retried into "unavailable".
    let wrong =
        container(&azurite, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    match wrong.put_block("x", &block_id(0), vec![1]) {
        Err(BlobError::Denied(why)) => {
            assert!(why.contains("AuthorizationFailure") || why.contains("Authentication"), "{why}")
        }
        other => panic!("a wrong key must be denied: {other:?}"),
    }
    // The service stops: calls fail as unavailable after the retries; it comes back, with
    // what it held.
    c.put_block("kept", &block_id(0), vec![5; 10]).unwrap();
    c.commit_blocks("kept", &[block_id(0)], "Hot", &[]).unwrap();
    azurite.stop();
    assert!(matches!(c.properties("kept"), Err(BlobError::Unavailable(_))));
    azurite.restart();
    assert_eq!(c.get_range("kept", 0, 9, None).unwrap(), vec![5; 10]);
}
