//! Authorization: which topics a client may publish to and subscribe to, from an ACL file in
//! Mosquitto's format, extended with per-client-id sections.
//!
//! ```text
//! # Lines before any `user` or `client` line apply to clients without a user name.
//! topic read public/#
//! # For every client; %u is the user name, %c the client id.
//! pattern readwrite devices/%c/#
//! pattern read users/%u/inbox/#
//! user alice
//! topic readwrite alice/#
//! topic deny alice/secret/#
//! client sensor-7
//! topic write telemetry/7
//! ```
//!
//! Access is `read`, `write`, `readwrite` (the default when left out) or `deny`. Once any rule
//! exists, what no rule grants is denied, and a `deny` rule wins over every grant.
//!
//! Decided once per subscription and once per publishing topic, never per message per
//! subscriber: a SUBSCRIBE filter is granted only if one `read` rule covers every topic it can
//! match and no `deny` rule can match any of them; a filter wider than what the client may
//! read (`#` for a client allowed `a/#`) is refused, as Mosquitto refuses a filter its ACL does
//! not match, so that nothing delivered through it needs a second look. A PUBLISH is allowed if
//! a `write` rule matches its topic and no `deny` rule does.
//!
//! A `%u` or `%c` pattern does not apply to a client whose user name or client id holds `+`,
//! `#` or `/`: substituted, those would widen the rule (a user named `#`).

use std::fmt;
use std::sync::Arc;

use vireo_codec::{ProtocolVersion, ReasonCode, topic_matches};

/// What a rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Subscribe (and receive).
    Read,
    /// Publish.
    Write,
    /// Both.
    ReadWrite,
    /// Neither, whatever other rules grant.
    Deny,
}

impl Access {
    fn reads(self) -> bool {
        matches!(self, Access::Read | Access::ReadWrite)
    }

    fn writes(self) -> bool {
        matches!(self, Access::Write | Access::ReadWrite)
    }
}

/// One rule: an access and a topic filter (possibly with `%u` / `%c`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    access: Access,
    filter: String,
}

/// The whole ACL file, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclFile {
    /// Rules for clients without a user name (lines before any section).
    anonymous: Vec<Rule>,
    /// `pattern` rules, for everyone, substituted per client.
    patterns: Vec<Rule>,
    users: std::collections::HashMap<String, Vec<Rule>>,
    clients: std::collections::HashMap<String, Vec<Rule>>,
    /// Rules in all of the above.
    rules: usize,
}

/// A line of the file that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for AclError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for AclError {}

enum Section {
    Anonymous,
    User(String),
    Client(String),
}

impl AclFile {
    /// Parses the file's text. Blank lines and `#` comments are skipped; anything else that
    /// is not a rule or a section line is an error naming the line.
    pub fn parse(text: &str) -> Result<Self, AclError> {
        let mut acl = AclFile::default();
        let mut section = Section::Anonymous;
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason| AclError {
                line: n + 1,
                reason,
            };
            let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let rest = rest.trim();
            match keyword {
                "user" | "client" => {
                    if rest.is_empty() {
                        return Err(err("a user or client line needs a name"));
                    }
                    section = if keyword == "user" {
                        Section::User(rest.to_owned())
                    } else {
                        Section::Client(rest.to_owned())
                    };
                }
                "topic" | "pattern" => {
                    let rule = parse_rule(rest).map_err(err)?;
                    acl.rules += 1;
                    if keyword == "pattern" {
                        acl.patterns.push(rule);
                    } else {
                        match &section {
                            Section::Anonymous => acl.anonymous.push(rule),
                            Section::User(u) => acl.users.entry(u.clone()).or_default().push(rule),
                            Section::Client(c) => {
                                acl.clients.entry(c.clone()).or_default().push(rule)
                            }
                        }
                    }
                }
                _ => return Err(err("expected `topic`, `pattern`, `user` or `client`")),
            }
        }
        Ok(acl)
    }

    /// Rules in the file.
    pub fn len(&self) -> usize {
        self.rules
    }

    /// Whether the file holds no rule: then it denies nothing (deny-by-default starts with
    /// the first rule).
    pub fn is_empty(&self) -> bool {
        self.rules == 0
    }

    /// What one client's connection consults: the file, shared, and the names its rules are
    /// chosen and substituted by. A connection keeps no copy of the rules, so an ACL of
    /// thousands of rules costs each connection a pointer and its names.
    pub fn for_client(self: &Arc<Self>, username: Option<&str>, client_id: &str) -> ClientAcl {
        ClientAcl {
            file: Arc::clone(self),
            username: username.map(Box::from),
            client_id: client_id.into(),
            last_topic: String::new(),
            last_verdict: None,
        }
    }
}

/// The SUBACK code for a filter the ACL does not allow: 0x87 Not authorized (5.0), 0x80
/// Failure (3.1.1, which has one failure code).
pub fn refused_subscribe_code(version: ProtocolVersion) -> ReasonCode {
    if version.is_v5() {
        ReasonCode::NOT_AUTHORIZED
    } else {
        ReasonCode::V3_SUBSCRIBE_FAILURE
    }
}

/// The PUBACK / PUBREC reason for a PUBLISH the ACL does not allow, which is not routed either
/// way: 0x87 Not authorized (5.0); for 3.1.1, which has no way to say no, the ordinary ack,
/// as Mosquitto sends (the QoS 2 exchange then runs to its PUBCOMP).
pub fn refused_publish_reason(version: ProtocolVersion) -> ReasonCode {
    if version.is_v5() {
        ReasonCode::NOT_AUTHORIZED
    } else {
        ReasonCode::SUCCESS
    }
}

fn parse_rule(rest: &str) -> Result<Rule, &'static str> {
    let (access, filter) = match rest.split_once(char::is_whitespace) {
        Some((word, filter)) if access_of(word).is_some() => (access_of(word), filter.trim()),
        _ => (None, rest),
    };
    let access = access.unwrap_or(Access::ReadWrite);
    if filter.is_empty() {
        return Err("a rule needs a topic filter");
    }
    // Checked with the substitutions in place of `%u` / `%c`, which stand for one level's
    // worth of characters.
    let probe = filter.replace("%u", "u").replace("%c", "c");
    if vireo_codec::validate_topic_filter(&probe).is_err() {
        return Err("not a valid topic filter");
    }
    Ok(Rule {
        access,
        filter: filter.to_owned(),
    })
}

fn access_of(word: &str) -> Option<Access> {
    Some(match word {
        "read" => Access::Read,
        "write" => Access::Write,
        "readwrite" => Access::ReadWrite,
        "deny" => Access::Deny,
        _ => return None,
    })
}

/// The rules for one client: what its connection consults, with the verdict on the last
/// topic it published to (publishers mostly repeat a topic), so a long rule list is
/// walked once per topic change, not once per message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAcl {
    file: Arc<AclFile>,
    username: Option<Box<str>>,
    client_id: Box<str>,
    last_topic: String,
    last_verdict: Option<bool>,
}

impl ClientAcl {
    /// Consults `file` from now on (a reloaded ACL), forgetting the cached verdict.
    pub fn set_file(&mut self, file: Arc<AclFile>) {
        self.file = file;
        self.last_verdict = None;
    }

    /// Calls `f` with each rule that applies to this client, substituted, until it returns
    /// `false`: its user's section (or the anonymous one), its client id's, then the patterns.
    /// A `%u` / `%c` pattern is skipped for a name holding `+`, `#` or `/` (it would widen the
    /// rule), and `%u` for a client without a user name.
    fn each_rule(&self, mut f: impl FnMut(Access, &str) -> bool) {
        let file = &*self.file;
        let section = match &self.username {
            Some(u) => file.users.get(&**u).map_or(&[][..], Vec::as_slice),
            None => &file.anonymous,
        };
        let client = file
            .clients
            .get(&*self.client_id)
            .map_or(&[][..], Vec::as_slice);
        for r in section.iter().chain(client) {
            if !f(r.access, &r.filter) {
                return;
            }
        }
        let unsafe_name = |s: &str| s.contains(['+', '#', '/']);
        let mut scratch = String::new();
        for p in &file.patterns {
            let uses_u = p.filter.contains("%u");
            let uses_c = p.filter.contains("%c");
            if !uses_u && !uses_c {
                if !f(p.access, &p.filter) {
                    return;
                }
                continue;
            }
            let user = self.username.as_deref();
            if (uses_u && user.is_none_or(unsafe_name)) || (uses_c && unsafe_name(&self.client_id))
            {
                continue;
            }
            scratch.clear();
            scratch.push_str(&p.filter);
            if uses_u {
                scratch = scratch.replace("%u", user.unwrap_or_default());
            }
            if uses_c {
                scratch = scratch.replace("%c", &self.client_id);
            }
            if !f(p.access, &scratch) {
                return;
            }
        }
    }

    /// Whether the client may publish to `topic`.
    #[inline]
    pub fn may_publish(&mut self, topic: &str) -> bool {
        if let Some(v) = self.last_verdict
            && self.last_topic == topic
        {
            return v;
        }
        let v = self.check_publish(topic);
        self.last_topic.clear();
        self.last_topic.push_str(topic);
        self.last_verdict = Some(v);
        v
    }

    /// [`ClientAcl::may_publish`] without the cache.
    pub fn check_publish(&self, topic: &str) -> bool {
        if self.file.is_empty() {
            return true;
        }
        let (mut granted, mut denied) = (false, false);
        self.each_rule(|access, filter| {
            if topic_matches(filter, topic) {
                denied = access == Access::Deny;
                granted |= access.writes();
            }
            !denied
        });
        granted && !denied
    }

    /// Whether the client may subscribe to `filter` (the filter a `$share` group shares, for
    /// a shared subscription): every topic it can match is readable.
    pub fn may_subscribe(&self, filter: &str) -> bool {
        if self.file.is_empty() {
            return true;
        }
        let (mut granted, mut denied) = (false, false);
        self.each_rule(|access, rule| {
            if access == Access::Deny {
                denied = intersects(rule, filter);
            } else if access.reads() && covers(rule, filter) {
                granted = true;
            }
            !denied
        });
        granted && !denied
    }
}

/// Whether every topic `inner` can match is matched by `outer`.
fn covers(outer: &str, inner: &str) -> bool {
    if inner.starts_with('$') && outer.starts_with(['+', '#']) {
        return false; // `outer` cannot match `inner`'s `$` topics [MQTT-4.7.2-1]
    }
    let mut o = outer.split('/');
    let mut i = inner.split('/');
    loop {
        match (o.next(), i.next()) {
            (Some("#"), _) => return true,
            (_, Some("#")) => return false,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b && b != "+" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether some topic is matched by both filters.
fn intersects(a: &str, b: &str) -> bool {
    // A `$` topic is matched only by filters naming its first level.
    let dollar = |f: &str| f.starts_with('$');
    let wild_first = |f: &str| f.starts_with(['+', '#']);
    if (dollar(a) && wild_first(b)) || (dollar(b) && wild_first(a)) {
        return false;
    }
    let mut x = a.split('/');
    let mut y = b.split('/');
    loop {
        match (x.next(), y.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(p), Some(q)) if p == q => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const FILE: &str = "\
# anonymous
topic read public/#

pattern readwrite devices/%c/#
pattern read inbox/%u/#
user alice
topic alice/#
topic deny alice/secret/#
user admin
topic readwrite #
client sensor-7
topic write telemetry/7
";

    fn acl() -> Arc<AclFile> {
        Arc::new(AclFile::parse(FILE).unwrap())
    }

    #[test]
    fn parses_sections_and_counts_rules() {
        let a = acl();
        assert_eq!(a.len(), 7);
        assert_eq!(
            a.users["alice"][0].access,
            Access::ReadWrite,
            "default access"
        );
        assert_eq!(a.users["alice"][1].access, Access::Deny);
    }

    #[test]
    fn bad_lines_are_named() {
        let e = AclFile::parse("topic read a\nfoo bar\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(
            AclFile::parse("topic read a/#/b").is_err(),
            "invalid filter"
        );
        assert!(AclFile::parse("user").is_err());
        assert!(AclFile::parse("topic read").is_ok(), "a topic named `read`");
        assert!(AclFile::parse("topic deny").is_ok());
    }

    #[test]
    fn users_get_their_section_and_the_patterns() {
        let mut alice = acl().for_client(Some("alice"), "phone");
        assert!(alice.may_publish("alice/x"));
        assert!(alice.may_subscribe("alice/x/+"));
        assert!(!alice.may_subscribe("alice/+/y"), "reaches alice/secret/y");
        assert!(!alice.may_publish("alice/secret/key"), "deny wins");
        assert!(
            !alice.may_subscribe("alice/#"),
            "the filter reaches alice/secret"
        );
        assert!(alice.may_subscribe("inbox/alice/#"), "%u");
        assert!(!alice.may_publish("inbox/alice/1"), "a read pattern");
        assert!(alice.may_publish("devices/phone/state"), "%c");
        assert!(
            !alice.may_publish("public/x"),
            "anonymous rules are not hers"
        );
        assert!(!alice.may_subscribe("#"), "deny by default");
    }

    #[test]
    fn anonymous_clients_get_the_top_rules() {
        let mut anon = acl().for_client(None, "c1");
        assert!(anon.may_subscribe("public/#"));
        assert!(anon.may_subscribe("public/a/+"));
        assert!(!anon.may_publish("public/a"), "read only");
        assert!(
            !anon.may_subscribe("inbox/+/#"),
            "no user name: no %u pattern"
        );
        assert!(anon.may_publish("devices/c1/x"));
    }

    #[test]
    fn an_empty_file_denies_nothing_and_a_new_file_replaces_the_cache() {
        let empty = Arc::new(AclFile::parse("# no rules yet\n").unwrap());
        let mut c = empty.for_client(None, "c");
        assert!(c.may_publish("any/topic") && c.may_subscribe("#"));
        c.set_file(acl());
        assert!(
            !c.may_publish("any/topic"),
            "the cached verdict went with the old file"
        );
        assert!(c.may_subscribe("public/#"));
    }

    #[test]
    fn the_cached_verdict_follows_the_topic() {
        let mut alice = acl().for_client(Some("alice"), "phone");
        for _ in 0..2 {
            assert!(alice.may_publish("alice/x"));
            assert!(!alice.may_publish("alice/secret/x"));
            assert!(!alice.may_publish("bob/x"));
        }
    }

    #[test]
    fn client_sections_match_the_client_id() {
        let mut s = acl().for_client(Some("bob"), "sensor-7");
        assert!(s.may_publish("telemetry/7"));
        assert!(!s.may_publish("telemetry/8"));
    }

    #[test]
    fn names_with_wildcards_or_slashes_get_no_pattern() {
        for id in ["#", "+", "a/b"] {
            let mut c = acl().for_client(Some(id), id);
            assert!(!c.may_publish("devices/x/y"), "{id}");
            assert!(!c.may_subscribe("inbox/#"), "{id}");
            assert!(!c.may_subscribe("devices/#"), "{id}");
        }
    }

    #[test]
    fn wider_filters_than_the_grant_are_refused() {
        let admin = acl().for_client(Some("admin"), "x");
        assert!(admin.may_subscribe("#"));
        assert!(admin.may_subscribe("a/+/b"));
        assert!(!admin.may_subscribe("$SYS/#"), "# does not reach $ topics");
        let alice = acl().for_client(Some("alice"), "x");
        assert!(!alice.may_subscribe("+/x"), "reaches bob/x");
    }

    #[test]
    fn filter_algebra() {
        assert!(covers("a/#", "a/+/c"));
        assert!(covers("a/+", "a/b"));
        assert!(!covers("a/b", "a/+"));
        assert!(!covers("a/+", "a/#"));
        assert!(covers("#", "x/#"));
        assert!(!covers("#", "$SYS/x"));
        assert!(covers("$SYS/#", "$SYS/x"));
        assert!(intersects("a/#", "+/b"));
        assert!(intersects("a/+/c", "a/b/+"));
        assert!(!intersects("a/b", "a/c"));
        assert!(!intersects("#", "$SYS/x"));
        assert!(intersects("a/#", "a"));
        assert!(!intersects("a/b/c", "a/b"));
    }
}
