//! Topic names, topic filters and matching (spec 4.7). Pure functions over `&str`.

use std::fmt;
use std::ops::Deref;

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

    /// Wraps a name that may be empty (v5 topic alias), checking everything else.
    pub(crate) fn new_allow_empty(name: ByteString) -> Result<Self, DecodeError> {
        if name.is_empty() {
            Ok(Self(name))
        } else {
            Self::new(name)
        }
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
    match memchr::memchr3(b'+', b'#', 0, name.as_bytes()) {
        None => Ok(()),
        Some(i) if name.as_bytes()[i] == 0 => Err(DecodeError::NullCharacter),
        Some(_) => Err(DecodeError::WildcardInTopicName),
    }
}

/// Checks a topic filter: non-empty [MQTT-4.7.3-1], `#` alone in the last level
/// [MQTT-4.7.1-2], `+` alone in its level [MQTT-4.7.1-3], no U+0000 [MQTT-4.7.3-2].
pub fn validate_topic_filter(filter: &str) -> Result<(), DecodeError> {
    if filter.is_empty() {
        return Err(DecodeError::EmptyTopic);
    }
    if filter.len() > usize::from(u16::MAX) {
        return Err(DecodeError::Truncated);
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
    let mut fi = filter.split('/');
    let mut ti = topic.split('/');
    loop {
        match (fi.next(), ti.next()) {
            (Some("#"), _) => return true,
            (Some(fl), Some(tl)) => {
                if fl != "+" && fl != tl {
                    return false;
                }
            }
            (None, None) => return true,
            _ => return false,
        }
    }
}
