//! Topic names, topic filters and matching (spec 4.7). Pure functions over `&str`.

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;
use bytestring::ByteString;

use crate::DecodeError;

/// A topic name that a PUBLISH may carry: no wildcards [MQTT-3.3.2-2], no U+0000, at most 65,535
/// bytes. Empty only when decoded from a v5 PUBLISH that uses a topic alias.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TopicName(ByteString);

impl TopicName {
    /// Validates and wraps a topic name.
    pub fn new(name: impl Into<ByteString>) -> Result<Self, DecodeError> {
        let name = name.into();
        validate_topic_name(&name)?;
        Ok(Self(name))
    }

    /// The empty topic name of a v5 PUBLISH that names its topic by Topic Alias alone.
    pub fn empty() -> Self {
        Self(ByteString::new())
    }

    /// Decodes a topic-name field read off the wire, with one scan for U+0000 and wildcards
    /// before the UTF-8 check (the hot path of every PUBLISH). `allow_empty`: a v5 PUBLISH may
    /// name its topic by alias alone. Errors come in the order the separate checks give them.
    pub(crate) fn decode(bytes: Bytes, allow_empty: bool) -> Result<Self, DecodeError> {
        let found = scan_topic_bytes(&bytes);
        if found & HAS_NUL != 0 {
            return Err(DecodeError::NullCharacter);
        }
        let name = ByteString::try_from(bytes).map_err(|_| DecodeError::InvalidUtf8)?;
        if name.is_empty() && !allow_empty {
            return Err(DecodeError::EmptyTopic);
        }
        if found & HAS_WILDCARD != 0 {
            return Err(DecodeError::WildcardInTopicName);
        }
        if found & (HAS_CONTROL | HAS_C2) != 0 && control_in(found, &name) {
            return Err(DecodeError::ControlCharacter);
        }
        Ok(Self(name))
    }

    /// A copy that owns its bytes instead of sharing the buffer the name was decoded from, for
    /// storage that outlives that buffer. No re-validation: the name is already valid.
    pub fn detached(&self) -> Self {
        Self(ByteString::from(self.as_str()))
    }

    /// The name as `&str`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The underlying shared buffer.
    pub fn as_byte_string(&self) -> &ByteString {
        &self.0
    }

    /// Unwraps into the shared buffer.
    pub fn into_inner(self) -> ByteString {
        self.0
    }
}

impl Deref for TopicName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<&str> for TopicName {
    type Error = DecodeError;
    fn try_from(s: &str) -> Result<Self, DecodeError> {
        Self::new(ByteString::from(s))
    }
}

/// Checks a topic name: non-empty [MQTT-4.7.3-1], no wildcard [MQTT-3.3.2-2], no U+0000
/// [MQTT-4.7.3-2], at most 65,535 bytes [MQTT-4.7.3-3].
pub fn validate_topic_name(name: &str) -> Result<(), DecodeError> {
    if name.is_empty() {
        return Err(DecodeError::EmptyTopic);
    }
    if name.len() > usize::from(u16::MAX) {
        return Err(DecodeError::Truncated);
    }
    let found = scan_topic_bytes(name.as_bytes());
    if found & HAS_NUL != 0 {
        Err(DecodeError::NullCharacter)
    } else if found & HAS_WILDCARD != 0 {
        Err(DecodeError::WildcardInTopicName)
    } else if control_in(found, name) {
        Err(DecodeError::ControlCharacter)
    } else {
        Ok(())
    }
}

/// [`scan_topic_bytes`] found a U+0000.
const HAS_NUL: u8 = 1;
/// [`scan_topic_bytes`] found a `+` or `#`.
const HAS_WILDCARD: u8 = 2;
/// [`scan_topic_bytes`] found a C0 control character or DEL (U+0001..U+001F, U+007F).
const HAS_CONTROL: u8 = 4;
/// [`scan_topic_bytes`] found a 0xC2 lead byte: the string may hold a C1 control character.
const HAS_C2: u8 = 8;

/// Looks for the bytes a topic name may not hold (it runs on every PUBLISH). Eight bytes at a
/// time: a word with none of them (the common case) costs a handful of operations, and only
/// a word that may hold one is looked at byte by byte. The byte loop alone cost a fan-in
/// delivery ~7 % of its instructions (callgrind); memchr's SIMD set-up does not pay for topics
/// of a few dozen bytes.
fn scan_topic_bytes(bytes: &[u8]) -> u8 {
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        if let Ok(word) = <[u8; 8]>::try_from(chunk)
            && may_hold_special(u64::from_le_bytes(word))
        {
            return scan_bytes(bytes);
        }
    }
    let rest = chunks.remainder();
    if rest.is_empty() {
        return 0;
    }
    // The tail, padded with a harmless byte.
    let mut word = [b'a'; 8];
    word[..rest.len()].copy_from_slice(rest);
    if may_hold_special(u64::from_le_bytes(word)) {
        scan_bytes(bytes)
    } else {
        0
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether some byte of `w` is below `n` (n <= 0x80): exact for "some", the classic SWAR test.
#[inline]
fn has_less(w: u64, n: u8) -> bool {
    w.wrapping_sub(ONES * u64::from(n)) & !w & HIGHS != 0
}

/// Whether some byte of `w` equals `b`.
#[inline]
fn has_byte(w: u64, b: u8) -> bool {
    has_less(w ^ (ONES * u64::from(b)), 1)
}

/// Whether the word may hold U+0000, a C0 control, DEL, a wildcard or a 0xC2 lead byte.
#[inline]
fn may_hold_special(w: u64) -> bool {
    has_less(w, 0x20)
        | has_byte(w, 0x7F)
        | has_byte(w, b'+')
        | has_byte(w, b'#')
        | has_byte(w, 0xC2)
}

/// The byte-by-byte scan: which kinds of special byte `bytes` holds.
fn scan_bytes(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0, |found, &b| {
        found
            | match b {
                0 => HAS_NUL,
                1..=0x1F | 0x7F => HAS_CONTROL,
                b'+' | b'#' => HAS_WILDCARD,
                0xC2 => HAS_C2,
                _ => 0,
            }
    })
}

/// Whether `s` holds a control character: U+0001..U+001F, U+007F..U+009F. The spec says
/// strings SHOULD NOT hold them and lets a receiver close the connection when they do; Vireo
/// closes, as Mosquitto does, for client ids, user names, topic names and topic filters.
pub fn has_control_character(s: &str) -> bool {
    let bytes = s.as_bytes();
    if bytes.is_ascii() {
        // U+0080..U+009F are never ASCII: a byte test, which the compiler vectorises.
        return bytes.iter().any(|&b| matches!(b, 0x01..=0x1F | 0x7F));
    }
    s.chars()
        .any(|c| matches!(c, '\u{1}'..='\u{1F}' | '\u{7F}'..='\u{9F}'))
}

/// The control-character verdict of a scan: a C2 lead byte needs a closer look.
fn control_in(found: u8, s: &str) -> bool {
    found & HAS_CONTROL != 0 || (found & HAS_C2 != 0 && has_control_character(s))
}

/// Checks a topic filter: non-empty [MQTT-4.7.3-1], `#` alone in the last level
/// [MQTT-4.7.1-2], `+` alone in its level [MQTT-4.7.1-3], no U+0000 [MQTT-4.7.3-2], no control
/// character (see [`has_control_character`]).
pub fn validate_topic_filter(filter: &str) -> Result<(), DecodeError> {
    if filter.is_empty() {
        return Err(DecodeError::EmptyTopic);
    }
    if filter.len() > usize::from(u16::MAX) {
        return Err(DecodeError::Truncated);
    }
    if has_control_character(filter) {
        return Err(DecodeError::ControlCharacter);
    }
    if memchr::memchr3(b'+', b'#', 0, filter.as_bytes()).is_none() {
        // No wildcard and no NUL: nothing below can fail (most filters; one SUBSCRIBE of
        // 100,000 of them spent a third of its time splitting them into levels).
        return Ok(());
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.as_bytes().contains(&0) {
            return Err(DecodeError::NullCharacter);
        }
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(DecodeError::InvalidMultiLevelWildcard);
        }
        if level.contains('+') && level != "+" {
            return Err(DecodeError::InvalidSingleLevelWildcard);
        }
    }
    Ok(())
}

/// Whether a filter has a wildcard level.
pub fn has_wildcard(filter: &str) -> bool {
    memchr::memchr2(b'+', b'#', filter.as_bytes()).is_some()
}

/// A v5 shared subscription `$share/{group}/{filter}`: its group and the filter it shares.
/// Returns `Ok(None)` for an ordinary filter.
pub fn parse_shared(filter: &str) -> Result<Option<(&str, &str)>, DecodeError> {
    let Some(rest) = filter.strip_prefix("$share/") else {
        return Ok(None);
    };
    let (group, inner) = rest
        .split_once('/')
        .ok_or(DecodeError::InvalidSharedSubscription)?;
    if group.is_empty() || group.contains(['+', '#']) || inner.is_empty() {
        return Err(DecodeError::InvalidSharedSubscription);
    }
    validate_topic_filter(inner)?;
    Ok(Some((group, inner)))
}

/// Whether `topic` matches `filter` (spec 4.7): `+` matches one whole level, `#` the parent level
/// and any number below it, and a filter starting with a wildcard never matches a topic starting
/// with `$` [MQTT-4.7.2-1]. Bytes are compared exactly [MQTT-4.7.3-4]. Both arguments are assumed
/// valid.
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    let (f, t) = (filter.as_bytes(), topic.as_bytes());
    if t.first() == Some(&b'$') && matches!(f.first(), Some(b'+' | b'#')) {
        return false;
    }
    // One pass over both, level by level, without splitting or calling out to compare: `i` and
    // `j` are at the start of a level of the filter and of the topic.
    let (mut i, mut j) = (0, 0);
    loop {
        if is_level(f, i, b'#') {
            return true;
        }
        if is_level(f, i, b'+') {
            i += 1;
            while j < t.len() && t[j] != b'/' {
                j += 1;
            }
        } else {
            while i < f.len() && f[i] != b'/' {
                if t.get(j) != Some(&f[i]) {
                    return false;
                }
                i += 1;
                j += 1;
            }
            if j < t.len() && t[j] != b'/' {
                return false;
            }
        }
        // Both at the end of a level: at a `/` or at the end of the string.
        match (i < f.len(), j < t.len()) {
            (true, true) => (i, j) = (i + 1, j + 1),
            (false, false) => return true,
            // The topic ended: `a/#` still matches `a`, its parent level.
            (true, false) => return is_level(f, i + 1, b'#'),
            (false, true) => return false,
        }
    }
}

/// Whether the level starting at `at` in `s` is the single character `c`.
fn is_level(s: &[u8], at: usize, c: u8) -> bool {
    s.get(at) == Some(&c) && matches!(s.get(at + 1), None | Some(b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word-at-a-time scan finds exactly what the byte loop finds: every byte value, at
    /// every position of topics of every length around the word size.
    #[test]
    fn word_scan_matches_byte_scan() {
        for len in 1..=20 {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut topic = vec![b'a'; len];
                    topic[at] = b;
                    assert_eq!(
                        scan_topic_bytes(&topic),
                        scan_bytes(&topic),
                        "byte {b:#04x} at {at} of {len}"
                    );
                }
            }
        }
        assert_eq!(scan_topic_bytes(b""), 0);
    }
}
