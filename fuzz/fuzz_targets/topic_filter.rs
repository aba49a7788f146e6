//! Topic filter validation and matching on arbitrary strings.
//!
//! Invariants, beyond "no panic" (both functions must survive invalid input too):
//! - on a valid filter and a valid topic name, `topic_matches` agrees with a reference matcher
//!   written from the wording of spec 4.7;
//! - a valid topic name is a valid filter that matches itself;
//! - a filter without wildcards matches exactly the identical topic;
//! - `#` matches every topic that does not start with `$`, never one that does;
//! - a shared subscription's inner filter is itself valid.
//!
//! Run: `cargo +nightly fuzz run topic_filter` from `fuzz/`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vireo_codec::{
    has_wildcard, parse_shared, topic_matches, validate_topic_filter, validate_topic_name,
};

// The same spec-worded matcher the property tests use.
#[path = "../../crates/vireo-codec/tests/reference/mod.rs"]
mod reference;
use reference::reference_matches;

fuzz_target!(|input: (&str, &str)| {
    let (filter, topic) = input;
    // Never panic, whatever the input.
    let _ = topic_matches(filter, topic);
    let _ = topic_matches(topic, filter);
    let filter_ok = validate_topic_filter(filter).is_ok();
    let topic_ok = validate_topic_name(topic).is_ok();

    if filter_ok && topic_ok {
        assert_eq!(
            topic_matches(filter, topic),
            reference_matches(filter, topic),
            "filter {filter:?} topic {topic:?}"
        );
        if !has_wildcard(filter) {
            assert_eq!(topic_matches(filter, topic), filter == topic);
        }
        assert_eq!(topic_matches("#", topic), !topic.starts_with('$'));
    }
    if topic_ok {
        assert!(
            validate_topic_filter(topic).is_ok(),
            "a topic name is a filter"
        );
        assert!(topic_matches(topic, topic), "{topic:?} matches itself");
    }
    if let Ok(Some((group, inner))) = parse_shared(filter) {
        assert!(!group.is_empty() && !group.contains(['+', '#', '/']));
        assert!(validate_topic_filter(inner).is_ok());
    }
});
