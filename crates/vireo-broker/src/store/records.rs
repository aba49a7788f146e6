//! What the broker's state looks like as [`super::Log`] keys and values.
//!
//! Keys start with a byte that names the kind: `r` + topic for a retained message, `s` +
//! client id for a persistent session, and `q` + client id + `0x00` + a tag for the QoS 1/2
//! state of a session (client ids never hold U+0000 [MQTT-1.5.3-2], so the separator is
//! unambiguous): `m` + sequence number (u64 big-endian, so keys sort in message order) for a
//! message it holds, `p` + sequence number for the packet id that message was sent with,
//! `r` + packet id for a QoS 2 delivery awaiting PUBCOMP and `i` + packet id for an inbound
//! QoS 2 id awaiting PUBREL. Values start with a format version, so a later release can read
//! what an earlier one wrote.
//!
//! A message is `[version 1][qos][flags: bit 0 retain][expiry: unix ms u64, 0 for none]
//! [topic len u16][topic][properties len u32][properties][payload]`. Expiry is kept as wall
//! clock time, since an `Instant` means nothing after a restart: a message whose expiry
//! passed while the broker was down is not brought back [MQTT-3.3.2-5].

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vireo_codec::{Bytes, Properties, PropertyContext, QoS, TopicName};

use crate::{Message, SessionId};

/// The first byte of a retained message's key.
pub const RETAINED: u8 = b'r';
/// The first byte of a persistent session's key.
pub const SESSION: u8 = b's';
/// The first byte of a key of a session's QoS 1/2 state.
pub const QUEUE: u8 = b'q';
const VERSION: u8 = 1;

/// A key: the kind's byte, then the name (a topic, a client id).
fn key(kind: u8, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(kind);
    k.extend_from_slice(name.as_bytes());
    k
}

/// The name in a key of `kind`, if it is one.
fn name(kind: u8, key: &[u8]) -> Option<&str> {
    match key.split_first() {
        Some((&k, name)) if k == kind => std::str::from_utf8(name).ok(),
        _ => None,
    }
}

/// The key of `topic`'s retained message.
pub fn retained_key(topic: &str) -> Vec<u8> {
    key(RETAINED, topic)
}

/// The topic of a retained message's key, if it is one.
pub fn retained_topic(k: &[u8]) -> Option<&str> {
    name(RETAINED, k)
}

/// The key of the persistent session of `client_id`.
pub fn session_key(client_id: &str) -> Vec<u8> {
    key(SESSION, client_id)
}

/// The client id of a session's key, if it is one.
pub fn session_client(k: &[u8]) -> Option<&str> {
    name(SESSION, k)
}

/// The prefix every key of `client_id`'s QoS 1/2 state starts with.
pub fn queue_prefix(client_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(client_id.len() + 12);
    push_queue_prefix(client_id, &mut k);
    k
}

fn push_queue_prefix(client_id: &str, k: &mut Vec<u8>) {
    k.push(QUEUE);
    k.extend_from_slice(client_id.as_bytes());
    k.push(0);
}

/// One key of a session's QoS 1/2 state (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueKey {
    /// A message the session holds.
    Message(u64),
    /// The packet id message `seq` was sent with.
    Sent(u64),
    /// A QoS 2 delivery awaiting PUBCOMP, by the order its PUBREC came in (the value is its
    /// packet id, little-endian).
    Owed(u64),
    /// A QoS 2 delivery awaiting PUBCOMP, by packet id: how the first stores kept them (read,
    /// and deleted on PUBCOMP, but no longer written).
    Released(u16),
    /// An inbound QoS 2 id awaiting PUBREL.
    Inbound(u16),
}

impl QueueKey {
    /// The full key, for `client_id`.
    pub fn key(self, client_id: &str) -> Vec<u8> {
        let mut k = Vec::new();
        self.write_key(client_id, &mut k);
        k
    }

    /// [`QueueKey::key`] into `k` (cleared first), so one buffer serves every key.
    pub fn write_key(self, client_id: &str, k: &mut Vec<u8>) {
        k.clear();
        push_queue_prefix(client_id, k);
        let (tag, seq, pid) = match self {
            Self::Message(seq) => (b'm', Some(seq), None),
            Self::Sent(seq) => (b'p', Some(seq), None),
            Self::Owed(order) => (b'o', Some(order), None),
            Self::Released(pid) => (b'r', None, Some(pid)),
            Self::Inbound(pid) => (b'i', None, Some(pid)),
        };
        k.push(tag);
        if let Some(seq) = seq {
            k.extend_from_slice(&seq.to_be_bytes());
        }
        if let Some(pid) = pid {
            k.extend_from_slice(&pid.to_be_bytes());
        }
    }

    /// A key of this kind back as its client id and parts, if it is one.
    pub fn parse(k: &[u8]) -> Option<(&str, Self)> {
        let (&QUEUE, rest) = k.split_first()? else {
            return None;
        };
        let sep = rest.iter().position(|&b| b == 0)?;
        let client = std::str::from_utf8(&rest[..sep]).ok()?;
        let (&tag, id) = rest[sep + 1..].split_first()?;
        let seq = || id.try_into().ok().map(u64::from_be_bytes);
        let pid = || id.try_into().ok().map(u16::from_be_bytes);
        let key = match tag {
            b'm' => Self::Message(seq()?),
            b'p' => Self::Sent(seq()?),
            b'o' => Self::Owed(seq()?),
            b'r' => Self::Released(pid()?),
            b'i' => Self::Inbound(pid()?),
            _ => return None,
        };
        Some((client, key))
    }
}

/// A message a session holds, as a value: `[version 1][qos out][retain out][subscription id
/// u32]` then the message as [`encode_message`] writes it.
pub fn encode_queued(
    qos: QoS,
    retain: bool,
    sub_id: u32,
    msg: &Message,
    clocks: &Clocks,
    v: &mut Vec<u8>,
) {
    let mut m = std::mem::take(v);
    encode_message_into(msg, clocks, &mut m);
    v.clear();
    v.reserve(7 + m.len());
    v.push(VERSION);
    v.push(qos as u8);
    v.push(u8::from(retain));
    v.extend_from_slice(&sub_id.to_le_bytes());
    v.extend_from_slice(&m);
}

/// A message a session holds, back from its value: the QoS and RETAIN it goes out with,
/// its subscription identifier, and the message.
pub fn decode_queued(
    v: &[u8],
    clocks: &Clocks,
) -> Result<(QoS, bool, u32, Arc<Message>), Unusable> {
    let bad = Unusable::Malformed;
    let (head, rest) = v.split_at_checked(7).ok_or(bad)?;
    if head[0] != VERSION {
        return Err(bad);
    }
    let qos = QoS::try_from(head[1]).map_err(|_| bad)?;
    if qos == QoS::AtMostOnce {
        return Err(bad);
    }
    let sub_id = u32::from_le_bytes([head[3], head[4], head[5], head[6]]);
    Ok((qos, head[2] & 1 != 0, sub_id, decode_message(rest, clocks)?))
}

/// A persistent session as stored: what it takes to serve its client again after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Session Expiry Interval in seconds (`u32::MAX`: never).
    pub expiry_secs: u32,
    /// When its client went away (unix ms), or 0 while it was connected: its expiry counts
    /// from then, across a restart.
    pub offline_since_ms: u64,
    /// Its subscriptions, as granted.
    pub subscriptions: Vec<(String, crate::Subscribed)>,
    /// Its client's Will, while one is still to come.
    pub will: Option<StoredWill>,
}

/// A Will kept with its session: its client was connected when the broker went down (it is
/// published, after its delay, as for a connection that closed at the restart), or it was
/// waiting out its Will Delay Interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWill {
    /// Its Will Delay Interval, seconds.
    pub delay_secs: u32,
    /// When it is due (unix ms), or 0: its delay counts from the restart.
    pub due_unix_ms: u64,
    /// The message, as [`encode_message`] writes it.
    pub message: Vec<u8>,
}

/// The format version of session records: 2 added the Will (version 1 records, which have
/// none, are read too).
const SESSION_VERSION: u8 = 2;

impl SessionRecord {
    /// As a value: `[version 2][expiry u32][offline since u64][count u32]` then per
    /// subscription `[filter len u16][filter][qos][flags][subscription id u32]`, then
    /// `[0]` or `[1][will delay u32][due unix ms u64][message len u32][message]`.
    pub fn encode(&self) -> Vec<u8> {
        let subs = self.subscriptions.iter().map(|(f, s)| (f.as_str(), *s));
        encode_session(
            self.expiry_secs,
            self.offline_since_ms,
            subs,
            self.will.as_ref(),
        )
    }

    /// Back from a value.
    pub fn decode(v: &[u8]) -> Result<Self, Unusable> {
        let bad = Unusable::Malformed;
        let mut r = v;
        let mut take = |n: usize| -> Result<&[u8], Unusable> {
            let (head, rest) = r.split_at_checked(n).ok_or(bad)?;
            r = rest;
            Ok(head)
        };
        let version = take(1)?[0];
        if version != VERSION && version != SESSION_VERSION {
            return Err(bad);
        }
        let u32_at = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap_or([0; 4]));
        let expiry_secs = u32_at(take(4)?);
        let offline_since_ms = u64::from_le_bytes(take(8)?.try_into().map_err(|_| bad)?);
        let count = u32_at(take(4)?) as usize;
        let mut subscriptions = Vec::with_capacity(count.min(4096));
        for _ in 0..count {
            let len = take(2)?;
            let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
            let filter = std::str::from_utf8(take(len)?).map_err(|_| bad)?.to_owned();
            let qos = QoS::try_from(take(1)?[0]).map_err(|_| bad)?;
            let flags = take(1)?[0];
            let sub_id = u32_at(take(4)?);
            subscriptions.push((filter, crate::Subscribed { qos, flags, sub_id }));
        }
        let will = match version {
            VERSION => None,
            _ => match take(1)?[0] {
                0 => None,
                1 => {
                    let delay_secs = u32_at(take(4)?);
                    let due_unix_ms = u64::from_le_bytes(take(8)?.try_into().map_err(|_| bad)?);
                    let len = u32_at(take(4)?) as usize;
                    let message = take(len)?.to_vec();
                    Some(StoredWill {
                        delay_secs,
                        due_unix_ms,
                        message,
                    })
                }
                _ => return Err(bad),
            },
        };
        if !r.is_empty() {
            return Err(bad);
        }
        Ok(Self {
            expiry_secs,
            offline_since_ms,
            subscriptions,
            will,
        })
    }

    /// How long it has left at `now`: `None` forever, `Some(ZERO)` expired.
    pub fn remaining(&self, clocks: &Clocks) -> Option<Duration> {
        if self.expiry_secs == u32::MAX {
            return None;
        }
        let total = Duration::from_secs(u64::from(self.expiry_secs));
        if self.offline_since_ms == 0 {
            return Some(total); // stored while connected: offline from the restart on
        }
        let since = UNIX_EPOCH + Duration::from_millis(self.offline_since_ms);
        let gone = clocks.wall.duration_since(since).unwrap_or(Duration::ZERO);
        Some(total.saturating_sub(gone))
    }
}

/// A session's record (see [`SessionRecord::encode`]) straight from its parts, so a broker
/// writing one does not first copy every filter into a [`SessionRecord`].
pub fn encode_session<'a>(
    expiry_secs: u32,
    offline_since_ms: u64,
    subscriptions: impl Iterator<Item = (&'a str, crate::Subscribed)>,
    will: Option<&StoredWill>,
) -> Vec<u8> {
    let mut v = Vec::with_capacity(18 + subscriptions.size_hint().0 * 24);
    v.push(SESSION_VERSION);
    v.extend_from_slice(&expiry_secs.to_le_bytes());
    v.extend_from_slice(&offline_since_ms.to_le_bytes());
    let count_at = v.len();
    v.extend_from_slice(&[0; 4]);
    let mut count = 0u32;
    for (filter, sub) in subscriptions {
        count += 1;
        v.extend_from_slice(&(filter.len() as u16).to_le_bytes());
        v.extend_from_slice(filter.as_bytes());
        v.push(sub.qos as u8);
        v.push(sub.flags);
        v.extend_from_slice(&sub.sub_id.to_le_bytes());
    }
    v[count_at..count_at + 4].copy_from_slice(&count.to_le_bytes());
    match will {
        None => v.push(0),
        Some(w) => {
            v.push(1);
            v.extend_from_slice(&w.delay_secs.to_le_bytes());
            v.extend_from_slice(&w.due_unix_ms.to_le_bytes());
            v.extend_from_slice(&(w.message.len() as u32).to_le_bytes());
            v.extend_from_slice(&w.message);
        }
    }
    v
}

/// Unix milliseconds of a wall-clock time (at least 1, so 0 can mean none).
pub fn unix_ms(wall: SystemTime) -> u64 {
    let ms = wall.duration_since(UNIX_EPOCH).map_or(1, |d| d.as_millis());
    u64::try_from(ms).unwrap_or(u64::MAX).max(1)
}

/// Two clocks read at one moment: an `Instant` deadline becomes a wall-clock one and back.
#[derive(Debug, Clone, Copy)]
pub struct Clocks {
    /// The loop's time.
    pub now: Instant,
    /// The wall clock at the same moment.
    pub wall: SystemTime,
}

impl Clocks {
    /// Both clocks, now.
    pub fn read() -> Self {
        Self {
            now: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    fn unix_ms(&self, at: Instant) -> u64 {
        let wall = match at.checked_duration_since(self.now) {
            Some(ahead) => self.wall + ahead,
            None => self.wall - self.now.duration_since(at),
        };
        unix_ms(wall)
    }

    fn instant(&self, unix_ms: u64) -> Option<Instant> {
        let wall = UNIX_EPOCH + Duration::from_millis(unix_ms);
        let left = wall.duration_since(self.wall).ok()?;
        (!left.is_zero()).then(|| self.now + left)
    }
}

/// A message as a value.
pub fn encode_message(msg: &Message, clocks: &Clocks) -> Vec<u8> {
    let mut v = Vec::new();
    encode_message_into(msg, clocks, &mut v);
    v
}

/// [`encode_message`] into `v` (cleared first), so one buffer serves every message.
pub fn encode_message_into(msg: &Message, clocks: &Clocks, v: &mut Vec<u8>) {
    let props = msg.properties.as_bytes();
    v.clear();
    v.reserve(17 + msg.topic.len() + props.len() + msg.payload.len());
    v.push(VERSION);
    v.push(msg.qos as u8);
    v.push(u8::from(msg.retain));
    let expiry = msg.expires.map_or(0, |e| clocks.unix_ms(e));
    v.extend_from_slice(&expiry.to_le_bytes());
    // A topic is at most 65,535 bytes (the codec's limit) and properties fit a packet.
    v.extend_from_slice(&(msg.topic.len() as u16).to_le_bytes());
    v.extend_from_slice(msg.topic.as_bytes());
    v.extend_from_slice(&(props.len() as u32).to_le_bytes());
    v.extend_from_slice(props);
    v.extend_from_slice(&msg.payload);
}

/// Why a stored message is not brought back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    /// Its Message Expiry Interval ran out while it was stored.
    #[error("expired")]
    Expired,
    /// Not a value this version wrote (the CRC checked, so: a newer format, or a bug).
    #[error("not a message record")]
    Malformed,
}

/// A value back as a message, as of `clocks`.
pub fn decode_message(v: &[u8], clocks: &Clocks) -> Result<Arc<Message>, Unusable> {
    let bad = Unusable::Malformed;
    let (&version, rest) = v.split_first().ok_or(bad)?;
    if version != VERSION || rest.len() < 12 {
        return Err(bad);
    }
    let qos = QoS::try_from(rest[0]).map_err(|_| bad)?;
    let retain = rest[1] & 1 != 0;
    let expiry = u64::from_le_bytes(rest[2..10].try_into().map_err(|_| bad)?);
    let topic_len = usize::from(u16::from_le_bytes([rest[10], rest[11]]));
    let rest = &rest[12..];
    let topic = rest.get(..topic_len).ok_or(bad)?;
    let rest = &rest[topic_len..];
    let props_len = rest
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(bad)? as usize;
    let props = rest.get(4..4 + props_len).ok_or(bad)?;
    let payload = &rest[4 + props_len..];
    let expires = match expiry {
        0 => None,
        ms => Some(clocks.instant(ms).ok_or(Unusable::Expired)?),
    };
    let topic = std::str::from_utf8(topic).map_err(|_| bad)?;
    let properties = Properties::from_block(props, PropertyContext::Publish).map_err(|_| bad)?;
    Ok(Arc::new(Message {
        topic: TopicName::new(topic).map_err(|_| bad)?,
        payload: Bytes::copy_from_slice(payload),
        qos,
        retain,
        properties,
        expires,
        origin: SessionId(0),
        received: clocks.now,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use vireo_codec::Property;

    #[test]
    fn a_message_comes_back_as_it_went_in() {
        let clocks = Clocks::read();
        let mut m = Message::new(
            TopicName::new("a/b").unwrap(),
            Bytes::from_static(b"payload"),
            QoS::AtLeastOnce,
            true,
        );
        m.properties = vec![
            Property::ContentType("text/plain".into()),
            Property::UserProperty("k".into(), "v".into()),
        ]
        .into();
        m.expires = Some(clocks.now + Duration::from_secs(100));
        let v = encode_message(&m, &clocks);
        let later = Clocks {
            now: clocks.now + Duration::from_secs(40),
            wall: clocks.wall + Duration::from_secs(40),
        };
        let back = decode_message(&v, &later).unwrap();
        assert_eq!(
            (&*back.topic, &back.payload[..], back.qos, back.retain),
            ("a/b", &b"payload"[..], QoS::AtLeastOnce, true)
        );
        assert_eq!(back.properties, m.properties);
        // [MQTT-3.3.2-6] what is left of its expiry, counted in wall-clock time.
        assert_eq!(back.remaining_expiry(later.now), Some(60));
        let much_later = Clocks {
            now: clocks.now,
            wall: clocks.wall + Duration::from_secs(101),
        };
        assert_eq!(
            decode_message(&v, &much_later).unwrap_err(),
            Unusable::Expired
        );
    }

    #[test]
    fn a_session_comes_back_as_it_went_in_and_expires_in_wall_clock_time() {
        let clocks = Clocks::read();
        let rec = SessionRecord {
            expiry_secs: 60,
            offline_since_ms: unix_ms(clocks.wall),
            subscriptions: vec![
                ("a/+".into(), crate::Subscribed::qos(QoS::AtLeastOnce)),
                (
                    "$share/g/b".into(),
                    crate::Subscribed {
                        qos: QoS::ExactlyOnce,
                        flags: 3,
                        sub_id: 77,
                    },
                ),
            ],
            will: Some(StoredWill {
                delay_secs: 30,
                due_unix_ms: 0,
                message: encode_message(
                    &Message::new(
                        TopicName::new("gone").unwrap(),
                        Bytes::from_static(b"bye"),
                        QoS::AtLeastOnce,
                        false,
                    ),
                    &clocks,
                ),
            }),
        };
        let v = rec.encode();
        assert_eq!(SessionRecord::decode(&v).unwrap(), rec);
        for cut in 0..v.len() {
            assert!(SessionRecord::decode(&v[..cut]).is_err());
        }
        let later = Clocks {
            now: clocks.now,
            wall: clocks.wall + Duration::from_secs(45),
        };
        let left = rec.remaining(&later).unwrap();
        assert!(
            left <= Duration::from_secs(15) && left > Duration::from_secs(14),
            "{left:?}"
        );
        // Without a Will, and as version 1 (before Wills were kept) wrote it.
        let no_will = SessionRecord {
            will: None,
            ..rec.clone()
        };
        assert_eq!(SessionRecord::decode(&no_will.encode()).unwrap(), no_will);
        let mut v1 = no_will.encode();
        v1[0] = 1;
        v1.pop();
        assert_eq!(SessionRecord::decode(&v1).unwrap(), no_will);
        let never = SessionRecord {
            expiry_secs: u32::MAX,
            ..rec
        };
        assert_eq!(never.remaining(&later), None);
        assert_eq!(session_client(&session_key("c1")), Some("c1"));
    }

    #[test]
    fn queue_keys_and_values_come_back_as_they_went_in() {
        for key in [
            QueueKey::Message(0),
            QueueKey::Message(u64::MAX),
            QueueKey::Sent(7),
            QueueKey::Released(1),
            QueueKey::Owed(3),
            QueueKey::Inbound(65535),
        ] {
            let k = key.key("client/é");
            assert_eq!(QueueKey::parse(&k), Some(("client/é", key)));
            assert!(k.starts_with(&queue_prefix("client/é")));
        }
        assert!(QueueKey::Message(1).key("a") < QueueKey::Message(2).key("a"));
        assert_eq!(QueueKey::parse(&session_key("c")), None);
        assert_eq!(QueueKey::parse(b"qc\0x"), None);
        assert_eq!(
            QueueKey::parse(b"qc\0m123"),
            None,
            "a short sequence number"
        );

        let clocks = Clocks::read();
        let msg = Message::new(
            TopicName::try_from("a/b").unwrap(),
            Bytes::from_static(b"payload"),
            QoS::ExactlyOnce,
            true,
        );
        let mut v = Vec::new();
        encode_queued(QoS::AtLeastOnce, true, 42, &msg, &clocks, &mut v);
        let (qos, retain, sub_id, back) = decode_queued(&v, &clocks).unwrap();
        assert_eq!((qos, retain, sub_id), (QoS::AtLeastOnce, true, 42));
        assert_eq!((&*back.topic, &back.payload[..]), ("a/b", &b"payload"[..]));
        for cut in 0..v.len() {
            let _ = decode_queued(&v[..cut], &clocks); // never a panic
        }
        v[1] = 0;
        assert_eq!(decode_queued(&v, &clocks).err(), Some(Unusable::Malformed));
    }

    #[test]
    fn a_value_that_is_not_a_message_is_refused_not_a_panic() {
        let clocks = Clocks::read();
        let m = Message::new(
            TopicName::new("t").unwrap(),
            Bytes::new(),
            QoS::AtMostOnce,
            true,
        );
        let v = encode_message(&m, &clocks);
        for cut in 0..v.len() {
            let _ = decode_message(&v[..cut], &clocks);
        }
        assert_eq!(
            decode_message(&[9], &clocks).unwrap_err(),
            Unusable::Malformed
        );
        assert_eq!(retained_topic(&retained_key("x/y")), Some("x/y"));
        assert_eq!(retained_topic(b"s-other"), None);
    }
}
