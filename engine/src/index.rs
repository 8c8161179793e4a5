//! One core's index: its objects and uploads in progress, in key order, with what the rest
//! of the engine asks of them (point reads, listings, totals, whether a data file is
//! referenced). Kept up to date by the core's commit loop only after a batch is durable.
//!
//! Today the entries are two ordered maps in RAM. Everything outside this module reaches
//! them through `Index`, so that they can move to disk behind a bounded cache (issue 21,
//! docs/design/metadata-at-scale.md) without touching the callers.
//!
//! Invariant (checked by `debug_check` in debug builds and by the unit tests): `files`
//! counts, for every data file id, the objects and upload parts that reference it, and
//! `bytes` is the sum of the objects' sizes.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use crate::meta::{ObjectMeta, UploadMeta};
use crate::types::{ListItem, ListPage, ListedObject, ObjectKey, UploadKey, UploadSummary};

/// How many objects and bytes a core's index holds.
pub(crate) struct IndexTotals {
    pub objects: u64,
    pub bytes: u64,
}

#[derive(Default)]
pub(crate) struct Index {
    objects: BTreeMap<ObjectKey, ObjectMeta>,
    uploads: BTreeMap<UploadKey, UploadMeta>,
    /// Data file id → how many objects and upload parts reference it.
    files: HashMap<u128, u32>,
    /// Sum of the objects' sizes.
    bytes: u64,
}

fn upload_file_ids(upload: &UploadMeta) -> impl Iterator<Item = u128> + '_ {
    upload.parts.values().map(|p| p.file_id)
}

impl Index {
    pub fn new(objects: BTreeMap<ObjectKey, ObjectMeta>, uploads: BTreeMap<UploadKey, UploadMeta>) -> Index {
        let mut index = Index { objects, uploads, files: HashMap::new(), bytes: 0 };
        let objects_files: Vec<u128> = index.objects.values().flat_map(|m| m.file_ids()).collect();
        let parts: Vec<u128> = index.uploads.values().flat_map(upload_file_ids).collect();
        index.reference(objects_files.into_iter().chain(parts));
        index.bytes = index.objects.values().map(|m| m.size).sum();
        index
    }

    fn reference(&mut self, ids: impl Iterator<Item = u128>) {
        for id in ids {
            *self.files.entry(id).or_insert(0) += 1;
        }
    }

    fn unreference(&mut self, ids: impl Iterator<Item = u128>) {
        for id in ids {
            let count = self.files.get_mut(&id).expect("a referenced data file is counted");
            *count -= 1;
            if *count == 0 {
                self.files.remove(&id);
            }
        }
    }

    pub fn object(&self, key: &ObjectKey) -> Option<&ObjectMeta> {
        self.objects.get(key)
    }

    pub fn upload(&self, key: &UploadKey) -> Option<&UploadMeta> {
        self.uploads.get(key)
    }

    pub fn set_object(&mut self, key: ObjectKey, meta: ObjectMeta) {
        self.reference(meta.file_ids().into_iter());
        self.bytes += meta.size;
        if let Some(old) = self.objects.insert(key, meta) {
            self.forget_object(&old);
        }
    }

    pub fn remove_object(&mut self, key: &ObjectKey) {
        if let Some(old) = self.objects.remove(key) {
            self.forget_object(&old);
        }
    }

    fn forget_object(&mut self, old: &ObjectMeta) {
        self.unreference(old.file_ids().into_iter());
        self.bytes -= old.size;
    }

    pub fn set_upload(&mut self, key: UploadKey, upload: UploadMeta) {
        self.reference(upload_file_ids(&upload));
        if let Some(old) = self.uploads.insert(key, upload) {
            self.unreference(upload_file_ids(&old));
        }
    }

    pub fn remove_upload(&mut self, key: &UploadKey) {
        if let Some(old) = self.uploads.remove(key) {
            self.unreference(upload_file_ids(&old));
        }
    }

    /// Whether an object or an upload part references data file `file_id`.
    pub fn is_referenced(&self, file_id: u128) -> bool {
        self.files.contains_key(&file_id)
    }

    pub fn totals(&self) -> IndexTotals {
        IndexTotals { objects: self.objects.len() as u64, bytes: self.bytes }
    }

    /// The maps themselves, for the snapshot writer.
    pub fn maps(&self) -> (&BTreeMap<ObjectKey, ObjectMeta>, &BTreeMap<UploadKey, UploadMeta>) {
        (&self.objects, &self.uploads)
    }

    /// Up to `limit` objects after `after`, in key order.
    pub fn objects_after(&self, after: Option<&ObjectKey>, limit: usize) -> Vec<(ObjectKey, ObjectMeta)> {
        let lower = after.map_or(Bound::Unbounded, |key| Bound::Excluded(key.clone()));
        self.objects.range((lower, Bound::Unbounded)).take(limit).map(|(k, m)| (k.clone(), m.clone())).collect()
    }

    /// Every upload in progress with the object key it belongs to.
    pub fn uploads(&self) -> impl Iterator<Item = (ObjectKey, &UploadMeta)> {
        self.uploads.iter().map(|(k, u)| (k.object(), u))
    }

    /// Whether this index holds an object or an upload in progress of `bucket`.
    pub fn has_data(&self, bucket: &str) -> bool {
        let objects = self.objects.range(ObjectKey::new(bucket, "")..).next().is_some_and(|(k, _)| k.bucket == bucket);
        let uploads =
            self.uploads.range(UploadKey::new(bucket, "", "")..).next().is_some_and(|(k, _)| k.bucket == bucket);
        objects || uploads
    }

    /// Keys and common prefixes of `bucket` in key order after `start_after`, at most
    /// `limit`. Each object reports the value of `report_header`, if asked and present.
    pub fn list(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        start_after: &str,
        limit: usize,
        report_header: Option<&str>,
    ) -> ListPage {
        let delimiter = delimiter.filter(|d| !d.is_empty());
        let mut items = Vec::new();
        let (mut start, mut inclusive) = list_start(prefix, delimiter, start_after);
        loop {
            let lower = ObjectKey::new(bucket, start.clone());
            let lower = if inclusive { Bound::Included(lower) } else { Bound::Excluded(lower) };
            let mut jumped = false;
            for (okey, meta) in self.objects.range((lower, Bound::Unbounded)) {
                if okey.bucket != bucket || !okey.key.starts_with(prefix) {
                    return ListPage { items, truncated: false };
                }
                if items.len() == limit {
                    return ListPage { items, truncated: true };
                }
                let rest = &okey.key[prefix.len()..];
                if let Some(pos) = delimiter.and_then(|d| rest.find(d).map(|p| p + d.len())) {
                    let common = okey.key[..prefix.len() + pos].to_owned();
                    (start, inclusive) = (format!("{common}\u{10FFFF}"), false);
                    items.push(ListItem::Prefix(common));
                    jumped = true;
                    break;
                }
                items.push(ListItem::Object(listed(&okey.key, meta, report_header)));
            }
            if !jumped {
                return ListPage { items, truncated: false };
            }
        }
    }

    /// Uploads of `bucket` under `prefix` after the markers, in (key, upload id) order.
    pub fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
        key_marker: &str,
        upload_id_marker: &str,
        limit: usize,
    ) -> Vec<UploadSummary> {
        let lower = UploadKey::new(bucket, key_marker, upload_id_marker);
        self.uploads
            .range((Bound::Excluded(lower), Bound::Unbounded))
            .take_while(|(k, _)| k.bucket == bucket)
            .filter(|(k, _)| k.key.starts_with(prefix))
            .take(limit)
            .map(|(k, u)| UploadSummary {
                key: k.key.clone(),
                upload_id: k.upload_id.clone(),
                initiated_ms: u.initiated_ms,
            })
            .collect()
    }

    /// Checks the invariant of the module documentation (debug builds; costs a full walk).
    #[cfg(any(test, debug_assertions))]
    pub fn debug_check(&self) {
        let fresh = Index::new(self.objects.clone(), self.uploads.clone());
        assert_eq!(fresh.files, self.files, "data file reference counts drifted");
        assert_eq!(fresh.bytes, self.bytes, "the byte total drifted");
    }
}

/// Where a listing starts and whether that key itself is included. A marker that is itself a
/// rolled-up prefix skips every key under it.
fn list_start(prefix: &str, delimiter: Option<&str>, start_after: &str) -> (String, bool) {
    if let Some(d) = delimiter {
        let rolled_up = !start_after.is_empty()
            && start_after.ends_with(d)
            && start_after.starts_with(prefix)
            && start_after.len() > prefix.len();
        if rolled_up {
            return (format!("{start_after}\u{10FFFF}"), false);
        }
    }
    if start_after > prefix {
        (start_after.to_owned(), false)
    } else {
        (prefix.to_owned(), start_after < prefix)
    }
}

fn listed(key: &str, meta: &ObjectMeta, report_header: Option<&str>) -> ListedObject {
    let reported_header =
        report_header.and_then(|name| meta.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()));
    ListedObject {
        key: key.to_owned(),
        size: meta.size,
        etag: meta.etag.clone(),
        mtime_ms: meta.mtime_ms,
        reported_header,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{DataLoc, PartMeta};
    use proptest::prelude::*;

    fn index_with(keys: &[String]) -> Index {
        let meta = ObjectMeta::for_tests(1);
        let mut objects = BTreeMap::new();
        for k in keys {
            objects.insert(ObjectKey::new("b", k.clone()), meta.clone());
        }
        // A neighbouring bucket must never leak into listings of "b".
        objects.insert(ObjectKey::new("c", "a"), meta.clone());
        Index::new(objects, BTreeMap::new())
    }

    /// The S3 listing semantics, written the obvious way.
    fn model(keys: &[String], prefix: &str, delimiter: Option<&str>, start_after: &str) -> Vec<String> {
        let mut sorted: Vec<&String> = keys.iter().collect();
        sorted.sort();
        sorted.dedup();
        let mut out: Vec<String> = Vec::new();
        for key in sorted {
            if !key.starts_with(prefix) {
                continue;
            }
            let name = match delimiter.and_then(|d| key[prefix.len()..].find(d).map(|i| (i, d))) {
                Some((i, d)) => key[..prefix.len() + i + d.len()].to_owned(),
                None => key.clone(),
            };
            if name.as_str() <= start_after || out.last() == Some(&name) {
                continue;
            }
            out.push(name);
        }
        out
    }

    fn names(page: &ListPage) -> Vec<String> {
        page.items.iter().map(|i| i.name().to_owned()).collect()
    }

    proptest! {
        #[test]
        fn listing_pages_match_the_model(
            keys in proptest::collection::vec("[ab/]{1,5}", 0..40),
            prefix in "[ab/]{0,2}",
            use_delimiter in any::<bool>(),
            limit in 1usize..6,
        ) {
            let delimiter = use_delimiter.then_some("/");
            let index = index_with(&keys);
            let expected = model(&keys, &prefix, delimiter, "");
            // Page through with the last name as the marker, as the S3 layer does.
            let mut got = Vec::new();
            let mut marker = String::new();
            for _ in 0..100 {
                let page = index.list("b", &prefix, delimiter, &marker, limit, None);
                prop_assert!(page.items.len() <= limit);
                got.extend(names(&page));
                if !page.truncated {
                    break;
                }
                marker = got.last().cloned().unwrap_or_default();
            }
            prop_assert_eq!(got, expected);
        }
    }

    #[test]
    fn listings_report_the_header_they_are_asked_for() {
        let mut index = index_with(&["k".into()]);
        if let Some(meta) = index.objects.values_mut().next() {
            meta.headers.push(("x-class".into(), "COLD".into()));
        }
        let reported = |header| match &index.list("b", "", None, "", 10, header).items[0] {
            ListItem::Object(object) => object.reported_header.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(reported(Some("x-class")), Some("COLD".into()));
        assert_eq!(reported(Some("x-other")), None);
        assert_eq!(reported(None), None);
    }

    /// An object of `size` bytes in data files `ids` (none: inline).
    fn object_in(size: u64, ids: &[u128]) -> ObjectMeta {
        let parts = ids.iter().map(|&file_id| crate::meta::PartLoc { file_id, size }).collect();
        let data = if ids.is_empty() {
            DataLoc::Inline { wal: 0, rec_off: 0, rec_len: 0, data_off: 0, data_len: size as u32 }
        } else {
            DataLoc::Parts(parts)
        };
        ObjectMeta { data, ..ObjectMeta::for_tests(size) }
    }

    fn upload_of(ids: &[u128]) -> UploadMeta {
        let part = |(n, &file_id): (usize, &u128)| {
            (n as u32 + 1, PartMeta { file_id, size: 1, etag: "e".into(), mtime_ms: 0, checksum: None })
        };
        UploadMeta {
            initiated_ms: 0,
            headers: vec![],
            checksum_algorithm: None,
            parts: ids.iter().enumerate().map(part).collect(),
        }
    }

    proptest! {
        /// Reference counts and the byte total follow every change as a full recount would,
        /// including files shared by several objects and parts, and replaced entries.
        #[test]
        fn file_references_and_totals_follow_every_change(
            ops in proptest::collection::vec((0u8..5, 0u8..4, proptest::collection::vec(0u128..6, 0..3), 0u64..100), 0..60),
        ) {
            let mut index = Index::default();
            for (op, key, ids, size) in ops {
                let okey = ObjectKey::new("b", format!("k{key}"));
                let ukey = UploadKey::new("b", format!("k{key}"), "u");
                match op {
                    0 | 1 => index.set_object(okey, object_in(size, &ids)),
                    2 => index.remove_object(&okey),
                    3 => index.set_upload(ukey, upload_of(&ids)),
                    _ => index.remove_upload(&ukey),
                }
                index.debug_check();
                for id in 0u128..6 {
                    let used = index.objects.values().any(|m| m.file_ids().contains(&id))
                        || index.uploads.values().any(|u| u.parts.values().any(|p| p.file_id == id));
                    prop_assert_eq!(index.is_referenced(id), used);
                }
                let bytes: u64 = index.objects.values().map(|m| m.size).sum();
                prop_assert_eq!(index.totals().bytes, bytes);
            }
        }
    }
}
