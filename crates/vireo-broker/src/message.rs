//! An application message as the broker routes it.

use std::fmt;
use std::time::Instant;

use vireo_codec::{Bytes, Properties, QoS, TopicName};

use crate::SessionId;

/// One published message, shared (behind an `Arc`) by every session it is routed to: topic and
/// payload are the `Bytes` slices the codec cut from the publisher's read buffer.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic name.
    pub topic: TopicName,
    /// Payload.
    pub payload: Bytes,
    /// QoS the publisher sent it with.
    pub qos: QoS,
    /// RETAIN as published.
    pub retain: bool,
    /// v5 properties to forward unchanged and in order (empty for 3.1.1): the publisher's,
    /// less Topic Alias and Message Expiry Interval, which are per hop [MQTT-3.3.2-18].
    pub properties: Properties,
    /// v5 Message Expiry Interval as a deadline: past it the message is not sent
    /// [MQTT-3.3.2-5], and subscribers get what is left of it [MQTT-3.3.2-6].
    pub expires: Option<Instant>,
    /// The session that published it, for No Local [MQTT-3.8.3-3]; `SessionId(0)` for none.
    pub origin: SessionId,
    /// When the broker read it (its worker's loop time): where the latency it reports
    /// (PUBLISH read to frame written) starts.
    pub received: Instant,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("topic", &self.topic)
            .field("qos", &self.qos)
            .field("retain", &self.retain)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

impl Message {
    /// A message with no v5 extras: no properties, no expiry, no origin, received now (for
    /// tests and tools: the broker builds its messages with `protocol::publish::message`,
    /// which takes the loop's time instead of reading the clock).
    pub fn new(topic: TopicName, payload: Bytes, qos: QoS, retain: bool) -> Self {
        Self {
            topic,
            payload,
            qos,
            retain,
            properties: Properties::new(),
            expires: None,
            origin: SessionId(0),
            received: Instant::now(),
        }
    }

    /// Whether it has expired at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }

    /// Seconds of its expiry interval left at `now`, rounded up, for the PUBLISH it goes out
    /// in; `None` if it never expires.
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        let left = self.expires?.saturating_duration_since(now);
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        Some(u32::try_from(secs).unwrap_or(u32::MAX))
    }

    /// Bytes this message pins in memory (topic + payload), for byte limits.
    pub fn weight(&self) -> usize {
        self.topic.len() + self.payload.len()
    }
}
