//! A bridge's topic rules: which topics cross, in which direction, at which QoS, and how their
//! names change on the way (Mosquitto's `topic pattern [out|in|both] qos local-prefix
//! remote-prefix`).

use vireo_codec::{QoS, has_control_character, topic_matches, validate_topic_filter};

/// Which way a rule forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Local messages are published to the remote broker.
    Out,
    /// The remote broker's messages are published locally.
    In,
    /// Both; loops are prevented by No Local on both connections (see the module docs).
    Both,
}

impl Direction {
    /// Whether local messages cross.
    pub fn out(self) -> bool {
        matches!(self, Direction::Out | Direction::Both)
    }

    /// Whether remote messages cross.
    pub fn inward(self) -> bool {
        matches!(self, Direction::In | Direction::Both)
    }
}

/// One topic rule. The filter on each side is that side's prefix followed by the pattern; a
/// topic crossing over loses the prefix of its side and gains the other's. An empty pattern
/// makes the prefixes whole topic names: the local topic `local_prefix` becomes the remote
/// topic `remote_prefix` (as in Mosquitto).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRule {
    pattern: String,
    direction: Direction,
    qos: QoS,
    local_prefix: String,
    remote_prefix: String,
}

/// Why a rule cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// A prefix with `+`, `#` or a control character.
    #[error("prefix {0:?} must be a topic name (no wildcards)")]
    Prefix(String),
    /// Prefix and pattern do not make a valid filter.
    #[error("filter {0:?} is not a valid topic filter")]
    Filter(String),
    /// An empty pattern and an empty prefix.
    #[error("an empty pattern needs both prefixes (they are then whole topic names)")]
    Empty,
    /// A shared subscription pattern: each side's broker would hand it to one of a group,
    /// which is not what forwarding means.
    #[error("pattern {0:?}: $share filters cannot be bridged")]
    Shared(String),
}

impl TopicRule {
    /// A rule, validated.
    pub fn new(
        pattern: &str,
        direction: Direction,
        qos: QoS,
        local_prefix: &str,
        remote_prefix: &str,
    ) -> Result<Self, RuleError> {
        for prefix in [local_prefix, remote_prefix] {
            if prefix.contains(['+', '#']) || has_control_character(prefix) {
                return Err(RuleError::Prefix(prefix.to_owned()));
            }
        }
        if pattern.is_empty() && (local_prefix.is_empty() || remote_prefix.is_empty()) {
            return Err(RuleError::Empty);
        }
        if pattern.starts_with("$share/") {
            return Err(RuleError::Shared(pattern.to_owned()));
        }
        let rule = Self {
            pattern: pattern.to_owned(),
            direction,
            qos,
            local_prefix: local_prefix.to_owned(),
            remote_prefix: remote_prefix.to_owned(),
        };
        for filter in [rule.local_filter(), rule.remote_filter()] {
            if validate_topic_filter(&filter).is_err() {
                return Err(RuleError::Filter(filter));
            }
        }
        Ok(rule)
    }

    /// Its direction.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// The highest QoS it forwards at.
    pub fn qos(&self) -> QoS {
        self.qos
    }

    /// What the bridge subscribes to locally (for `out` and `both`).
    pub fn local_filter(&self) -> String {
        format!("{}{}", self.local_prefix, self.pattern)
    }

    /// What the bridge subscribes to remotely (for `in` and `both`).
    pub fn remote_filter(&self) -> String {
        format!("{}{}", self.remote_prefix, self.pattern)
    }

    /// The remote name of a local topic this rule forwards out, if it does.
    pub fn to_remote(&self, local_topic: &str) -> Option<String> {
        if !self.direction.out() || !topic_matches(&self.local_filter(), local_topic) {
            return None;
        }
        rename(local_topic, &self.local_prefix, &self.remote_prefix)
    }

    /// The local name of a remote topic this rule forwards in, if it does.
    pub fn to_local(&self, remote_topic: &str) -> Option<String> {
        if !self.direction.inward() || !topic_matches(&self.remote_filter(), remote_topic) {
            return None;
        }
        rename(remote_topic, &self.remote_prefix, &self.local_prefix)
    }
}

/// `topic` with its prefix `from` replaced by `to`. A `#` pattern also matches the level above
/// it (`a/#` matches `a`), whose name is the prefix without its trailing `/`: it maps to the
/// other prefix without its own. `None` when the result is not a usable topic name (an empty
/// one), which the caller drops.
fn rename(topic: &str, from: &str, to: &str) -> Option<String> {
    let renamed = match topic.strip_prefix(from) {
        Some(rest) => format!("{to}{rest}"),
        None if from.strip_suffix('/') == Some(topic) => to.strip_suffix('/').unwrap_or(to).into(),
        None => return None,
    };
    (!renamed.is_empty() && vireo_codec::validate_topic_name(&renamed).is_ok()).then_some(renamed)
}

/// The first rule that forwards `local_topic` out, and its remote name.
pub fn route_out(rules: &[TopicRule], local_topic: &str) -> Option<(usize, String)> {
    rules
        .iter()
        .enumerate()
        .find_map(|(i, r)| r.to_remote(local_topic).map(|t| (i, t)))
}

/// The first rule that forwards `remote_topic` in, and its local name.
pub fn route_in(rules: &[TopicRule], remote_topic: &str) -> Option<(usize, String)> {
    rules
        .iter()
        .enumerate()
        .find_map(|(i, r)| r.to_local(remote_topic).map(|t| (i, t)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rule(p: &str, d: Direction, l: &str, r: &str) -> TopicRule {
        TopicRule::new(p, d, QoS::AtLeastOnce, l, r).unwrap()
    }

    #[test]
    fn prefixes_are_swapped_on_the_way() {
        let r = rule("sensors/#", Direction::Both, "site/", "fleet/site1/");
        assert_eq!(r.local_filter(), "site/sensors/#");
        assert_eq!(r.remote_filter(), "fleet/site1/sensors/#");
        assert_eq!(
            r.to_remote("site/sensors/t1").as_deref(),
            Some("fleet/site1/sensors/t1")
        );
        assert_eq!(
            r.to_local("fleet/site1/sensors/t1").as_deref(),
            Some("site/sensors/t1")
        );
        assert_eq!(r.to_remote("other/t1"), None);
    }

    #[test]
    fn direction_decides_what_crosses() {
        let out = rule("a/#", Direction::Out, "", "");
        assert!(out.to_remote("a/b").is_some());
        assert!(out.to_local("a/b").is_none());
        let inward = rule("a/#", Direction::In, "", "");
        assert!(inward.to_remote("a/b").is_none());
        assert!(inward.to_local("a/b").is_some());
    }

    #[test]
    fn an_empty_pattern_maps_one_topic_to_another() {
        let r = rule("", Direction::Out, "local/state", "remote/state");
        assert_eq!(r.to_remote("local/state").as_deref(), Some("remote/state"));
        assert_eq!(r.to_remote("local/state/x"), None);
        assert_eq!(
            TopicRule::new("", Direction::Out, QoS::AtMostOnce, "", "x"),
            Err(RuleError::Empty)
        );
    }

    #[test]
    fn the_parent_level_of_a_hash_maps_to_the_other_prefix() {
        let r = rule("#", Direction::Out, "a/", "b/");
        assert_eq!(r.to_remote("a").as_deref(), Some("b"));
        assert_eq!(r.to_remote("a/x/y").as_deref(), Some("b/x/y"));
        // Without a remote prefix the parent level has no name there: dropped.
        let bare = rule("#", Direction::Out, "a/", "");
        assert_eq!(bare.to_remote("a"), None);
        assert_eq!(bare.to_remote("a/x").as_deref(), Some("x"));
    }

    #[test]
    fn bad_rules_are_refused() {
        let q = QoS::AtMostOnce;
        assert!(matches!(
            TopicRule::new("#", Direction::Out, q, "a/+/", ""),
            Err(RuleError::Prefix(_))
        ));
        assert!(matches!(
            TopicRule::new("a/#/b", Direction::Out, q, "", ""),
            Err(RuleError::Filter(_))
        ));
        assert!(matches!(
            TopicRule::new("$share/g/a", Direction::In, q, "", ""),
            Err(RuleError::Shared(_))
        ));
    }

    #[test]
    fn the_first_matching_rule_wins() {
        let rules = [
            rule("a/b", Direction::Out, "", "first/"),
            rule("a/#", Direction::Both, "", "second/"),
        ];
        assert_eq!(route_out(&rules, "a/b"), Some((0, "first/a/b".into())));
        assert_eq!(route_out(&rules, "a/c"), Some((1, "second/a/c".into())));
        assert_eq!(route_in(&rules, "second/a/b"), Some((1, "a/b".into())));
        assert_eq!(route_in(&rules, "first/a/b"), None);
    }
}
