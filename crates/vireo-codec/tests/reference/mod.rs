//! The topic matcher written from the spec's wording, the oracle `topic_matches` is checked
//! against: by the property tests (`tests/proptest.rs`) and by the `topic_filter` fuzz target
//! (`fuzz/`, which includes this file by path), so both check the same reading of spec 4.7.

/// Reference matcher, straight from the wording of spec 4.7: a filter without `#` matches a topic
/// with as many levels, each equal or `+`; a filter ending in `#` matches a topic whose first
/// levels match the filter's other levels (so the parent level too); a leading wildcard never
/// matches a `$` topic.
pub(crate) fn reference_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let f: Vec<&str> = filter.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    let level_ok = |(fl, tl): (&&str, &&str)| *fl == "+" || fl == tl;
    match f.split_last() {
        Some((&"#", head)) => t.len() >= head.len() && head.iter().zip(&t).all(level_ok),
        _ => f.len() == t.len() && f.iter().zip(&t).all(level_ok),
    }
}
