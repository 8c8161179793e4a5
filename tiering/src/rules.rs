//! Bucket lifecycle configurations: their model, parsing and validation as AWS does it
//! (PutBucketLifecycleConfiguration refuses what AWS refuses, with AWS's words), and what the
//! rules say about one object now.
//!
//! The configuration is stored as sent (bucket configuration `lifecycle`); each pass parses
//! it again. Versioning does not exist yet, so the noncurrent-version actions and
//! ExpiredObjectDeleteMarker are accepted and have nothing to act on.
//!
//! Days count from the object's last modification. AWS moves the due time to the next
//! midnight UTC; so does Ferrite when a day is 86,400 s. A shorter day (tests) is not rounded.

use ferrite_engine::calendar::days_from_civil;
use ferrite_engine::ObjectMeta;

use crate::error::{Error, Result};
use crate::settings::DAY_MS;
use crate::xml::{self, Node};

/// The bucket configuration item that holds the lifecycle configuration, as sent.
pub const BUCKET_CONFIG: &str = "lifecycle";
const RULES_MAX: usize = 1000;
const ID_BYTES_MAX: usize = 255;
const NOT_WELL_FORMED: &str =
    "The XML you provided was not well-formed or did not validate against our published schema";

#[derive(Debug, Clone, PartialEq)]
pub enum When {
    Days(u32),
    /// Midnight UTC, in ms since the epoch.
    Date(i64),
}

#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub prefix: String,
    pub tags: Vec<(String, String)>,
    pub size_greater_than: Option<u64>,
    pub size_less_than: Option<u64>,
}

/// A transition: when, and to which tier (the rule's StorageClass).
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub when: When,
    pub tier: String,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub enabled: bool,
    pub filter: Filter,
    pub expiration: Option<When>,
    pub transition: Option<Transition>,
    pub abort_incomplete_days: Option<u32>,
}

fn malformed(why: &str) -> Error {
    Error::LifecycleMalformed(format!("{NOT_WELL_FORMED}: {why}"))
}

fn invalid(why: impl Into<String>) -> Error {
    Error::LifecycleInvalid(why.into())
}

/// Parses and validates a LifecycleConfiguration document. `tier_exists` says whether a
/// Transition's StorageClass names a configured tier.
pub fn parse(doc: &[u8], tier_exists: &dyn Fn(&str) -> bool) -> Result<Vec<Rule>> {
    let root = xml::parse(doc).ok_or_else(|| Error::LifecycleMalformed(format!("{NOT_WELL_FORMED}.")))?;
    if root.name != "LifecycleConfiguration" {
        return Err(malformed("the root must be LifecycleConfiguration"));
    }
    let nodes: Vec<&Node> = root.all("Rule").collect();
    if nodes.is_empty() {
        return Err(malformed("at least one Rule is needed"));
    }
    if nodes.len() > RULES_MAX {
        return Err(malformed("at most 1,000 rules"));
    }
    let mut rules: Vec<Rule> = Vec::new();
    for node in nodes {
        let rule = parse_rule(node, tier_exists)?;
        if !rule.id.is_empty() && rules.iter().any(|r| r.id == rule.id) {
            return Err(invalid("Rule ID must be unique. Found same ID for more than one rule"));
        }
        rules.push(rule);
    }
    Ok(rules)
}

fn parse_rule(node: &Node, tier_exists: &dyn Fn(&str) -> bool) -> Result<Rule> {
    let id = node.text_of("ID").unwrap_or("").to_owned();
    if id.len() > ID_BYTES_MAX {
        return Err(invalid("ID length should not exceed allowed limit of 255"));
    }
    let enabled = match node.text_of("Status") {
        Some("Enabled") => true,
        Some("Disabled") => false,
        _ => return Err(malformed("Status must be Enabled or Disabled")),
    };
    let filter = match (node.child("Filter"), node.child("Prefix")) {
        (Some(_), Some(_)) => return Err(malformed("a rule has either Filter or Prefix")),
        (Some(f), None) => parse_filter(f)?,
        (None, Some(p)) => Filter { prefix: p.text.clone(), ..Filter::default() },
        (None, None) => return Err(malformed("a rule needs a Filter")),
    };
    let expiration = parse_expiration(node)?;
    let transition = parse_transition(node, tier_exists)?;
    if let (Some(When::Days(e)), Some(Transition { when: When::Days(t), .. })) = (&expiration, &transition) {
        if e <= t {
            return Err(invalid(
                "'Days' in the Expiration action must be greater than 'Days' in the Transition action",
            ));
        }
    }
    let abort_incomplete_days = match node.child("AbortIncompleteMultipartUpload") {
        Some(a) => Some(positive(a.text_of("DaysAfterInitiation"), "DaysAfterInitiation")?),
        None => None,
    };
    if abort_incomplete_days.is_some() && !filter.tags.is_empty() {
        return Err(invalid("AbortIncompleteMultipartUpload cannot be specified with Tags"));
    }
    let noncurrent =
        node.child("NoncurrentVersionExpiration").is_some() || node.child("NoncurrentVersionTransition").is_some();
    let marker = node.child("Expiration").is_some_and(|e| e.child("ExpiredObjectDeleteMarker").is_some());
    if expiration.is_none() && transition.is_none() && abort_incomplete_days.is_none() && !noncurrent && !marker {
        return Err(invalid("At least one action needs to be specified in a rule"));
    }
    Ok(Rule { id, enabled, filter, expiration, transition, abort_incomplete_days })
}

fn parse_expiration(node: &Node) -> Result<Option<When>> {
    let Some(e) = node.child("Expiration") else { return Ok(None) };
    let when = parse_when(e, "Expiration")?;
    let marker = e.child("ExpiredObjectDeleteMarker").is_some();
    if when.is_none() && !marker {
        return Err(malformed("Expiration needs Days, Date or ExpiredObjectDeleteMarker"));
    }
    if when.is_some() && marker {
        return Err(malformed("ExpiredObjectDeleteMarker cannot be combined with Days or Date"));
    }
    Ok(when)
}

fn parse_transition(node: &Node, tier_exists: &dyn Fn(&str) -> bool) -> Result<Option<Transition>> {
    let transitions: Vec<&Node> = node.all("Transition").collect();
    if transitions.len() > 1 {
        return Err(invalid("Ferrite supports one Transition per rule (one remote tier)"));
    }
    let Some(t) = transitions.first() else { return Ok(None) };
    let when = parse_when(t, "Transition")?.ok_or_else(|| malformed("Transition needs Days or Date"))?;
    let class = t.text_of("StorageClass").unwrap_or("");
    if !tier_exists(class) {
        return Err(Error::UnknownStorageClass(class.to_owned()));
    }
    Ok(Some(Transition { when, tier: class.to_owned() }))
}

fn positive(text: Option<&str>, what: &str) -> Result<u32> {
    match text.map(str::trim).and_then(|t| t.parse::<u32>().ok()) {
        Some(n) if n > 0 => Ok(n),
        _ => Err(invalid(format!("'{what}' must be a positive integer"))),
    }
}

fn parse_when(node: &Node, action: &str) -> Result<Option<When>> {
    match (node.text_of("Days"), node.text_of("Date")) {
        (Some(_), Some(_)) => Err(malformed("Days and Date cannot both be given")),
        (Some(days), None) => Ok(Some(When::Days(positive(Some(days), &format!("Days' for {action} action"))?))),
        (None, Some(date)) => Ok(Some(When::Date(midnight(date)?))),
        (None, None) => Ok(None),
    }
}

/// An ISO 8601 date at midnight UTC ("2026-12-01" or "2026-12-01T00:00:00Z" / ".000Z").
fn midnight(date: &str) -> Result<i64> {
    let date = date.trim();
    let (day, time) = date.split_once('T').unwrap_or((date, "00:00:00Z"));
    if !matches!(time, "00:00:00Z" | "00:00:00.000Z" | "00:00:00+00:00") {
        return Err(invalid("'Date' must be at midnight GMT"));
    }
    let mut parts = day.split('-').map(|p| p.parse::<i64>().ok());
    let (Some(Some(y)), Some(Some(m)), Some(Some(d)), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("'Date' must be an ISO 8601 date"));
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=month_days[(m - 1) as usize]).contains(&d) {
        return Err(invalid("'Date' must be an ISO 8601 date between 1970 and 9999"));
    }
    Ok(days_from_civil(y, m, d) * DAY_MS)
}

fn filter_node(f: &Node, filter: &mut Filter) -> Result<()> {
    for child in &f.children {
        match child.name.as_str() {
            "Prefix" => filter.prefix = child.text.clone(),
            "Tag" => filter.tags.push(parse_tag(child)?),
            "ObjectSizeGreaterThan" => filter.size_greater_than = Some(size(child)?),
            "ObjectSizeLessThan" => filter.size_less_than = Some(size(child)?),
            "And" => return Err(malformed("And cannot hold And")),
            other => return Err(malformed(&format!("unknown filter element {other}"))),
        }
    }
    Ok(())
}

fn parse_filter(f: &Node) -> Result<Filter> {
    let mut filter = Filter::default();
    match f.children.as_slice() {
        [] => {}
        [and] if and.name == "And" => {
            filter_node(and, &mut filter)?;
            let conditions = filter.tags.len()
                + usize::from(!filter.prefix.is_empty())
                + usize::from(filter.size_greater_than.is_some())
                + usize::from(filter.size_less_than.is_some());
            if conditions < 2 && filter.tags.len() < 2 {
                return Err(malformed("And needs at least two conditions"));
            }
        }
        [_] => filter_node(f, &mut filter)?,
        _ => return Err(malformed("a Filter holds one condition; combine them with And")),
    }
    if let (Some(gt), Some(lt)) = (filter.size_greater_than, filter.size_less_than) {
        if gt >= lt {
            return Err(invalid("ObjectSizeGreaterThan must be less than ObjectSizeLessThan"));
        }
    }
    Ok(filter)
}

fn parse_tag(node: &Node) -> Result<(String, String)> {
    match (node.text_of("Key"), node.text_of("Value")) {
        (Some(k), v) if !k.is_empty() => Ok((k.to_owned(), v.unwrap_or("").to_owned())),
        _ => Err(malformed("a Tag needs a Key")),
    }
}

fn size(node: &Node) -> Result<u64> {
    node.text.trim().parse().map_err(|_| invalid(format!("{} must be a whole number of bytes", node.name)))
}

/// Whether a stored configuration names `tier` in a Transition.
pub fn names_tier(doc: &str, tier: &str) -> bool {
    parse(doc.as_bytes(), &|_| true)
        .is_ok_and(|rules| rules.iter().any(|r| r.transition.as_ref().is_some_and(|t| t.tier == tier)))
}

// ----- evaluation -----

impl Filter {
    fn matches(&self, key: &str, size: u64, tags: &[(String, String)]) -> bool {
        key.starts_with(&self.prefix)
            && self.tags.iter().all(|t| tags.contains(t))
            && self.size_greater_than.is_none_or(|gt| size > gt)
            && self.size_less_than.is_none_or(|lt| size < lt)
    }
}

/// When `when` falls due for an object modified at `mtime_ms`.
pub fn due_ms(when: &When, mtime_ms: i64, day_ms: i64) -> i64 {
    match when {
        When::Date(ms) => *ms,
        When::Days(days) => {
            // Saturating: Days (up to u32::MAX) times a configured day length must not wrap.
            let due = mtime_ms.saturating_add(i64::from(*days).saturating_mul(day_ms));
            if day_ms == DAY_MS {
                due.div_euclid(DAY_MS) * DAY_MS + if due.rem_euclid(DAY_MS) == 0 { 0 } else { DAY_MS }
            } else {
                due
            }
        }
    }
}

#[derive(Debug, PartialEq)]
pub enum Action {
    Expire,
    /// To the tier named.
    Transition(String),
}

/// What the rules say about one object now (expiration wins over transition).
pub fn action_for(rules: &[Rule], key: &str, meta: &ObjectMeta, now_ms: i64, day_ms: i64) -> Option<Action> {
    let live = rules.iter().filter(|r| r.enabled && r.filter.matches(key, meta.size, &meta.tags));
    let mut transition = None;
    for rule in live {
        if let Some(when) = &rule.expiration {
            if due_ms(when, meta.mtime_ms, day_ms) <= now_ms {
                return Some(Action::Expire);
            }
        }
        if let Some(t) = &rule.transition {
            if due_ms(&t.when, meta.mtime_ms, day_ms) <= now_ms {
                transition = Some(Action::Transition(t.tier.clone()));
            }
        }
    }
    transition
}

/// Whether an upload of `key` begun at `initiated_ms` is due to be aborted by a rule.
pub fn abort_due(rules: &[Rule], key: &str, initiated_ms: i64, now_ms: i64, day_ms: i64) -> bool {
    rules.iter().filter(|r| r.enabled).any(|r| {
        r.abort_incomplete_days.is_some_and(|days| {
            key.starts_with(&r.filter.prefix)
                && initiated_ms.saturating_add(i64::from(days).saturating_mul(day_ms)) <= now_ms
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrite_engine::DataLoc;

    fn rules(xml: &str) -> Result<Vec<Rule>> {
        parse(xml.as_bytes(), &|t| t == "COLD")
    }

    fn doc(rule: &str) -> String {
        format!("<LifecycleConfiguration><Rule>{rule}</Rule></LifecycleConfiguration>")
    }

    /// The S3 code each error becomes (s3-front's mapping).
    fn kind(e: Error) -> &'static str {
        match e {
            Error::LifecycleMalformed(_) => "MalformedXML",
            Error::LifecycleInvalid(_) => "InvalidArgument",
            Error::UnknownStorageClass(_) => "InvalidStorageClass",
            _ => "other",
        }
    }

    #[test]
    fn valid_rules_parse_and_bad_ones_get_aws_errors() {
        let r = rules(&doc(
            "<ID>a</ID><Status>Enabled</Status><Filter><And><Prefix>logs/</Prefix><Tag><Key>t</Key><Value>v</Value></Tag></And></Filter>\
             <Transition><Days>30</Days><StorageClass>COLD</StorageClass></Transition><Expiration><Days>365</Days></Expiration>",
        ))
        .unwrap();
        assert_eq!(r[0].filter.prefix, "logs/");
        assert_eq!(r[0].filter.tags, [("t".to_owned(), "v".to_owned())]);
        assert_eq!(r[0].transition, Some(Transition { when: When::Days(30), tier: "COLD".to_owned() }));
        let r = rules(&doc(
            "<Status>Enabled</Status><Prefix>x</Prefix><Expiration><Date>2026-12-01T00:00:00Z</Date></Expiration>",
        ))
        .unwrap();
        assert_eq!(r[0].expiration, Some(When::Date(days_from_civil(2026, 12, 1) * DAY_MS)));
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        for date in ["999999999-01-01", "2026-02-30", "2026-13-01", "1969-12-31", "2026-1"] {
            let xml = doc(&format!("<Status>Enabled</Status><Filter/><Expiration><Date>{date}</Date></Expiration>"));
            assert_eq!(kind(rules(&xml).unwrap_err()), "InvalidArgument", "{date}");
        }
        let code = |xml: &str| kind(rules(xml).unwrap_err());
        assert_eq!(code("<Other/>"), "MalformedXML");
        assert_eq!(code("<a><b></a>"), "MalformedXML");
        assert_eq!(code("<LifecycleConfiguration></LifecycleConfiguration>"), "MalformedXML");
        assert_eq!(code(&doc("<Status>On</Status><Filter/><Expiration><Days>1</Days></Expiration>")), "MalformedXML");
        assert_eq!(
            code(&doc("<Status>Enabled</Status><Filter/><Expiration><Days>0</Days></Expiration>")),
            "InvalidArgument"
        );
        assert_eq!(code(&doc("<Status>Enabled</Status><Filter/>")), "InvalidArgument");
        assert_eq!(
            code(&doc("<Status>Enabled</Status><Filter/><Expiration><Date>2026-12-01T10:00:00Z</Date></Expiration>")),
            "InvalidArgument"
        );
        assert_eq!(
            code(&doc("<Status>Enabled</Status><Filter/><Transition><Days>1</Days><StorageClass>GLACIER</StorageClass></Transition>")),
            "InvalidStorageClass"
        );
        assert_eq!(
            code(&doc(
                "<Status>Enabled</Status><Filter/><Transition><Days>10</Days><StorageClass>COLD</StorageClass></Transition><Expiration><Days>5</Days></Expiration>"
            )),
            "InvalidArgument"
        );
        assert_eq!(
            code(&doc("<Status>Enabled</Status><Filter><Prefix>a</Prefix><Tag><Key>k</Key></Tag></Filter><Expiration><Days>1</Days></Expiration>")),
            "MalformedXML"
        );
        let dup = "<LifecycleConfiguration><Rule><ID>x</ID><Status>Enabled</Status><Filter/><Expiration><Days>1</Days></Expiration></Rule>\
                   <Rule><ID>x</ID><Status>Enabled</Status><Filter/><Expiration><Days>2</Days></Expiration></Rule></LifecycleConfiguration>";
        assert_eq!(code(dup), "InvalidArgument");
    }

    #[test]
    fn actions_fall_due_by_days_dates_filters_and_midnight() {
        let r = rules(&doc(
            "<Status>Enabled</Status><Filter><And><Prefix>p/</Prefix><ObjectSizeGreaterThan>10</ObjectSizeGreaterThan></And></Filter>\
             <Transition><Days>1</Days><StorageClass>COLD</StorageClass></Transition><Expiration><Days>3</Days></Expiration>",
        ))
        .unwrap();
        let meta = |size: u64, mtime_ms: i64| ObjectMeta {
            size,
            etag: String::new(),
            mtime_ms,
            headers: Vec::new(),
            checksum: None,
            tags: Vec::new(),
            part_sizes: Vec::new(),
            data: DataLoc::Parts(Vec::new()),
        };
        let day = 1000;
        assert_eq!(action_for(&r, "p/a", &meta(11, 0), 999, day), None);
        assert_eq!(action_for(&r, "p/a", &meta(11, 0), 1000, day), Some(Action::Transition("COLD".into())));
        assert_eq!(action_for(&r, "p/a", &meta(11, 0), 3000, day), Some(Action::Expire));
        assert_eq!(action_for(&r, "q/a", &meta(11, 0), 3000, day), None, "prefix");
        assert_eq!(action_for(&r, "p/a", &meta(10, 0), 3000, day), None, "size");
        // Real days: due at the midnight after mtime + 1 day.
        let noon = 5 * DAY_MS + DAY_MS / 2;
        assert_eq!(due_ms(&When::Days(1), noon, DAY_MS), 7 * DAY_MS);
        assert_eq!(due_ms(&When::Days(1), 5 * DAY_MS, DAY_MS), 6 * DAY_MS);
    }

    #[test]
    fn uploads_are_aborted_by_enabled_rules_with_a_matching_prefix() {
        let r = rules(&doc(
            "<Status>Enabled</Status><Prefix>tmp/</Prefix><AbortIncompleteMultipartUpload><DaysAfterInitiation>2</DaysAfterInitiation></AbortIncompleteMultipartUpload>",
        ))
        .unwrap();
        assert!(!abort_due(&r, "tmp/a", 0, 1999, 1000));
        assert!(abort_due(&r, "tmp/a", 0, 2000, 1000));
        assert!(!abort_due(&r, "other/a", 0, 5000, 1000));
    }
}
