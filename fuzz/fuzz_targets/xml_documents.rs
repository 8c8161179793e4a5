//! Every XML document Ferrite reads from a request: CompleteMultipartUpload, Delete,
//! Tagging, CreateBucketConfiguration, ServerSideEncryptionConfiguration, RestoreRequest
//! (s3-front's parser, xml.rs) and LifecycleConfiguration (tiering's parser and rules, with
//! the rules evaluated). Bucket policies do not exist yet.
//!
//! Input: the document. Every reader gets it; the two XML parsers (s3-front and tiering)
//! must agree on it; and a DeleteObjects key written by the response writer's `escape`
//! reads back as the same key.

#![no_main]

use ferrite_engine::{DataLoc, ObjectMeta};
use ferrite_s3::ops::bucket::check_create_bucket_configuration;
use ferrite_s3::ops::multipart::listed_parts;
use ferrite_s3::ops::object::{parse_delete, parse_restore_days};
use ferrite_s3::ops::tagging::parse_tagging;
use ferrite_s3::{sse, xml};
use ferrite_tiering::rules::{self, Rule};
use ferrite_tiering::settings::DAY_MS;
use libfuzzer_sys::fuzz_target;

/// The same tree from both parsers.
fn same_tree(a: &xml::Node, b: &ferrite_tiering::xml::Node) -> bool {
    a.name == b.name
        && a.text == b.text
        && a.children.len() == b.children.len()
        && a.children.iter().zip(&b.children).all(|(a, b)| same_tree(a, b))
}

/// Each rule evaluated for objects it matches and does not, at the epoch, now and far off.
fn evaluate(rules: &[Rule]) {
    for rule in rules {
        let key = format!("{}k", rule.filter.prefix);
        for (size, mtime_ms, now_ms) in
            [(0, 0, 0), (1 << 20, 1_767_225_600_000, 1_800_000_000_000), (u64::MAX, 253_402_300_799_000, i64::MAX / 2)]
        {
            let meta = ObjectMeta {
                size,
                etag: String::new(),
                mtime_ms,
                headers: Vec::new(),
                checksum: None,
                tags: rule.filter.tags.clone(),
                part_sizes: Vec::new(),
                data: DataLoc::Parts(Vec::new()),
            };
            for day_ms in [DAY_MS, 1000] {
                let _ = rules::action_for(rules, &key, &meta, now_ms, day_ms);
                let _ = rules::abort_due(rules, &key, mtime_ms, now_ms, day_ms);
            }
        }
    }
}

/// XML's whitespace, which the parsers trim from the ends of a text.
fn xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// A key written into a Delete document as the response writer escapes text reads back
/// unchanged (the parsers trim XML whitespace from the ends of a text; XML has no
/// control characters).
fn escaped_key_round_trip(data: &[u8]) {
    let Ok(key) = std::str::from_utf8(data) else { return };
    if key.chars().any(|c| c.is_control() && !xml_space(c)) {
        return;
    }
    let doc = format!("<Delete><Object><Key>{}</Key></Object></Delete>", xml::escape(key));
    match parse_delete(doc.as_bytes()) {
        Ok((false, keys)) => assert_eq!(keys, [key.trim_matches(xml_space)], "a key changed on its way through XML"),
        Ok((true, _)) => panic!("a Delete document without Quiet read as quiet"),
        Err(e) => panic!("an escaped key was refused: {:?} {}", e.code, e.message),
    }
}

fuzz_target!(|data: &[u8]| {
    let front = xml::parse(data);
    let tiering = ferrite_tiering::xml::parse(data);
    match (&front, &tiering) {
        (Ok(a), Some(b)) => assert!(same_tree(a, b), "the two XML parsers read different trees"),
        (Err(_), None) => {}
        _ => panic!("one XML parser accepted what the other refused: {:?} / {:?}", front.is_ok(), tiering.is_some()),
    }
    if let Ok(parts) = listed_parts(data) {
        assert!(!parts.is_empty() && parts.windows(2).all(|w| w[0].0 < w[1].0), "parts not ascending");
    }
    if let Ok((_, keys)) = parse_delete(data) {
        assert!((1..=1000).contains(&keys.len()), "{} keys", keys.len());
    }
    let _ = parse_tagging(data);
    let _ = check_create_bucket_configuration(data);
    let _ = sse::parse_bucket_config(data);
    if let Ok(days) = parse_restore_days(data) {
        assert!(days > 0);
    }
    if let Ok(rules) = rules::parse(data, &|tier| tier == "COLD") {
        assert!(!rules.is_empty() && rules.len() <= 1000);
        evaluate(&rules);
    }
    if let Ok(doc) = std::str::from_utf8(data) {
        let _ = rules::names_tier(doc, "COLD");
    }
    escaped_key_round_trip(data);
});
