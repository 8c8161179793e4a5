//! Range (GetObject, HeadObject) and x-amz-copy-source-range (UploadPartCopy) against an
//! object size: whatever they accept lies inside the object and is not empty.
//!
//! Input (structure-aware): the header value and the object's size.

#![no_main]

use ferrite_s3::error::Code;
use ferrite_s3::ops::copy::copy_range;
use ferrite_s3::ops::object::parse_range;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u64, bool, &str)| {
    let (size, small, header) = input;
    // Real objects are at most 5 TiB; both ends of u64 are still worth trying.
    let size = if small { size % (5 << 40) } else { size };
    match parse_range(header, size) {
        Ok(Some((start, end))) => assert!(start < end && end <= size, "Range {header:?} of {size}: {start}..{end}"),
        Ok(None) => {}
        Err(e) => assert_eq!(e.code, Code::InvalidRange),
    }
    match copy_range(Some(header), size) {
        Ok((start, end)) => assert!(start < end && end <= size, "copy range {header:?} of {size}: {start}..{end}"),
        // AWS's answers: malformed or last beyond the source, first beyond it.
        Err(e) => assert!(matches!(e.code, Code::InvalidArgument | Code::InvalidRequest), "{:?}", e.code),
    }
});
